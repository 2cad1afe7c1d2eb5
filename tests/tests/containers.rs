//! A real container, run by podman with runc in a network namespace of its
//! own (`--network none`), connects to a closed port three times: every
//! record of it (the drop, the RST sent, the RST received, the socket
//! error) carries the container's namespace and its id, found through its
//! cgroup (`/libpod_parent/libpod-<id>` here, podman's cgroupfs manager).
//! On this project's machine crun refuses the hybrid cgroups, so runc;
//! podman's default open-files limit is above the machine's hard limit.
//! The guests have no container runtime: there the test does not run.

use std::time::Duration;

use netprobe_tests::{
    kernel, not_run_here,
    podman::{busybox_image, netns_of, podman, Container, BUSYBOX, MACHINE_FLAGS},
    require_root, Daemon,
};
use serde_json::Value;

#[test]
fn a_podman_containers_refused_connections_name_the_container() {
    const NAME: &str = "a_podman_containers_refused_connections_name_the_container";
    if !require_root(NAME) {
        return;
    }
    if std::env::var_os("NETPROBE_GUEST").is_some() {
        not_run_here(
            NAME,
            "the kernel matrix's guests have no container runtime; the host row runs it",
        );
        return;
    }
    busybox_image();
    let mut d = Daemon::json();
    let mut args = vec!["run", "-d", "--network", "none"];
    args.extend(MACHINE_FLAGS);
    args.extend([
        BUSYBOX,
        "sh",
        "-c",
        "for i in 1 2 3; do nc 127.0.0.1 9; done; sleep 30",
    ]);
    let id = podman(&args);
    let _container = Container(id.clone());
    assert_eq!(id.len(), 64, "a container id: {id}");
    let netns = netns_of(&id);
    let about = |v: &Value| v["dport"] == 9 || v["sport"] == 9;
    let mut kinds = vec!["drop", "reset_sent", "reset_received"];
    if kernel::lacks_tracepoint("sock:inet_sk_error_report").is_none() {
        kinds.push("socket_error");
    }
    for kind in kinds {
        let r = d.wait_for(kind, Duration::from_secs(15), |v| {
            v["kind"] == kind && about(v)
        });
        eprintln!("{kind}: {r}");
        assert_eq!(r["netns"], netns, "{r}");
        assert_eq!(r["container"], id.as_str(), "{r}");
        assert_eq!(r["mode"], "no_listener", "{r}");
    }
    d.stop_cleanly();
}
