//! A real container, run by podman with runc in a network namespace of its
//! own (`--network none`), connects to a closed port three times: every
//! record of it (the drop, the RST sent, the RST received, the socket
//! error) carries the container's namespace and its id, found through its
//! cgroup (`/libpod_parent/libpod-<id>` here, podman's cgroupfs manager).
//! On this project's machine crun refuses the hybrid cgroups, so runc;
//! podman's default open-files limit is above the machine's hard limit.
//! The guests have no container runtime: there the test does not run.

use std::{process::Command, time::Duration};

use netprobe_tests::{kernel, not_run_here, require_root, Daemon};
use serde_json::Value;

const IMAGE: &str = "localhost/netprobe-test-busybox:1";

/// `podman ARGS`, its stdout, failing the test with its stderr.
fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman ({e}): `cargo xtask setup` installs it"));
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image holding only a static busybox (no registry: imported from a
/// root file system tarball).
fn image() {
    let dir = std::env::temp_dir().join(format!("netprobe-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a static busybox (`cargo xtask setup` installs busybox-static)");
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "nc", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    let tar = dir.with_extension("tar");
    let st = Command::new("tar")
        .args([
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tar of the root file system");
    podman(&["import", tar.to_str().unwrap(), IMAGE]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&tar);
}

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
    }
}

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
    image();
    let mut d = Daemon::json();
    let id = podman(&[
        "--runtime",
        "runc",
        "run",
        "-d",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:20000",
        "--ulimit",
        "nproc=1024:1024",
        IMAGE,
        "sh",
        "-c",
        "for i in 1 2 3; do nc 127.0.0.1 9; done; sleep 30",
    ]);
    let _container = Container(id.clone());
    assert_eq!(id.len(), 64, "a container id: {id}");
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &id]);
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse::<u64>()
        .unwrap();
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
