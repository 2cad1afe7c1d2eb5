//! netprobe's own image (`cargo xtask dist`'s archive; the host run makes
//! one of the static binary under test, `NETPROBE_IMAGE_ARCHIVE`), loaded
//! with `podman load` and run with the DaemonSet's container settings, read
//! from deploy/kubernetes/daemonset.yaml: its command and arguments, host
//! PID, every capability dropped but the manifest's list, a read-only root,
//! no_new_privs, the tracefs, cgroup and netns mounts read-only, and the
//! runtime's default seccomp profile. Inside it the probes attach as they do
//! on the host, records reach stdout, `/metrics` answers, and another
//! container's refused connections are attributed to that container.
//! The guests have no container runtime: there the test does not run.

use std::{path::Path, process::Command, thread, time::Duration, time::Instant};

use netprobe_tests::{
    netprobe_bin, not_run_here,
    podman::{busybox_image, netns_of, podman, Container, BUSYBOX, MACHINE_FLAGS},
    require_root,
};
use serde_json::Value;

/// Built in, so the guests' copy of this test reads it too.
const MANIFEST: &str = include_str!("../../deploy/kubernetes/daemonset.yaml");

/// What the manifest's netprobe container asks for.
#[derive(Debug, Default)]
struct Spec {
    command: Vec<String>,
    args: Vec<String>,
    caps: Vec<String>,
    /// (host path, container path, read-only)
    mounts: Vec<(String, String, bool)>,
    host_pid: bool,
    read_only_root: bool,
    no_new_privs: bool,
    seccomp_default: bool,
}

fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.trim()
        .trim_start_matches("- ")
        .strip_prefix(key)?
        .strip_prefix(':')
        .map(str::trim)
}

/// A small reader of the manifest's few fields: enough for this file,
/// strict about finding each one.
fn spec(text: &str) -> Spec {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().starts_with('#'))
        .collect();
    let mut s = Spec::default();
    let mut mount_names = Vec::new();
    let mut host_paths = std::collections::BTreeMap::new();
    let mut volume = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(v) = value_of(line, "command") {
            s.command = serde_json::from_str(v).expect("command: a flow sequence of strings");
        }
        if let Some(v) = value_of(line, "args") {
            s.args = serde_json::from_str(v).expect("args: a flow sequence of strings");
        }
        if value_of(line, "add") == Some("") {
            s.caps = lines[i + 1..]
                .iter()
                .map_while(|l| l.trim().strip_prefix("- "))
                .map(str::to_string)
                .collect();
        }
        s.host_pid |= value_of(line, "hostPID") == Some("true");
        s.read_only_root |= value_of(line, "readOnlyRootFilesystem") == Some("true");
        s.no_new_privs |= value_of(line, "allowPrivilegeEscalation") == Some("false");
        s.seccomp_default |= value_of(line, "type") == Some("RuntimeDefault");
        // volumeMounts: `- name:` then `mountPath:` and `readOnly:`;
        // volumes: `- name:` then `hostPath:` `path:`.
        if let Some(name) = value_of(line, "name") {
            volume = Some(name.to_string());
        }
        if let (Some(path), Some(name)) = (value_of(line, "mountPath"), &volume) {
            let ro = lines
                .get(i + 1)
                .and_then(|l| value_of(l, "readOnly"))
                .is_some_and(|v| v == "true");
            mount_names.push((name.clone(), path.to_string(), ro));
        }
        if let (Some(path), Some(name)) = (value_of(line, "path"), &volume) {
            host_paths.insert(name.clone(), path.to_string());
        }
    }
    for (name, path, ro) in mount_names {
        let host = host_paths
            .get(&name)
            .unwrap_or_else(|| panic!("volume {name} has no hostPath"))
            .clone();
        s.mounts.push((host, path, ro));
    }
    s
}

/// The probes `netprobe check` says attach on this host.
fn attached_on_host() -> Vec<String> {
    let out = Command::new(netprobe_bin()).arg("check").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("probe")).then_some(())?;
            let name = w.next()?;
            (w.next() == Some("attached")).then(|| name.to_string())
        })
        .collect()
}

/// The container's stdout so far, as records.
fn records(id: &str) -> Vec<Value> {
    let out = Command::new("podman").args(["logs", id]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_record(id: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = records(id).into_iter().find(&pred) {
            return r;
        }
        if start.elapsed() > limit {
            let err = Command::new("podman").args(["logs", id]).output().unwrap();
            panic!(
                "no {what} record within {limit:?}; the container's stderr: {}",
                String::from_utf8_lossy(&err.stderr)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_manifest_is_read() {
    let s = spec(MANIFEST);
    assert_eq!(s.command, ["/usr/local/bin/netprobe"], "{s:?}");
    assert_eq!(s.args[0], "run", "{s:?}");
    assert!(s.caps.iter().any(|c| c == "BPF"), "{s:?}");
    assert!(s.host_pid && s.read_only_root && s.no_new_privs && s.seccomp_default);
    assert!(
        s.mounts.contains(&(
            "/sys/kernel/tracing".into(),
            "/sys/kernel/tracing".into(),
            true
        )),
        "{s:?}"
    );
}

#[test]
fn the_image_runs_under_podman_with_the_daemonsets_settings() {
    const NAME: &str = "the_image_runs_under_podman_with_the_daemonsets_settings";
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
    let archive = std::env::var("NETPROBE_IMAGE_ARCHIVE")
        .expect("NETPROBE_IMAGE_ARCHIVE: the image archive to load (`cargo xtask test` makes one)");
    let loaded = podman(&["load", "-i", &archive]);
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load named no image: {loaded}"))
        .trim()
        .to_string();
    assert!(image.contains("netprobe:"), "{image}");
    let s = spec(MANIFEST);
    // /var/log/pods is a kubelet's; a node without one gets an empty
    // directory in its place.
    let empty = std::env::temp_dir().join(format!("netprobe-pods-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let mut args: Vec<String> = ["run", "-d", "--network", "none", "--cap-drop", "ALL"]
        .map(String::from)
        .to_vec();
    args.extend(MACHINE_FLAGS.map(String::from));
    for c in &s.caps {
        args.extend(["--cap-add".into(), c.clone()]);
    }
    if s.host_pid {
        args.extend(["--pid".into(), "host".into()]);
    }
    if s.read_only_root {
        args.push("--read-only".into());
    }
    if s.no_new_privs {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    assert!(s.seccomp_default, "the manifest asks for RuntimeDefault");
    for (host, path, ro) in &s.mounts {
        let host = if Path::new(host).exists() {
            host.clone()
        } else {
            empty.display().to_string()
        };
        let opts = if *ro { ":ro" } else { "" };
        args.extend(["-v".into(), format!("{host}:{path}{opts}")]);
    }
    args.extend(["-e".into(), "NODE_NAME=test-node".into()]);
    args.extend(["--entrypoint".into(), s.command[0].clone()]);
    args.push(image.clone());
    args.extend(s.args.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = podman(&refs);
    let _netprobe = Container(id.clone());
    let ready = wait_record(&id, "ready", Duration::from_secs(30), |v| {
        v["kind"] == "ready"
    });
    eprintln!("ready: {ready}");
    let probes: Vec<Value> = records(&id)
        .into_iter()
        .filter(|v| v["kind"] == "probe")
        .collect();
    let mut inside: Vec<String> = probes
        .iter()
        .filter(|p| p["status"] == "attached")
        .filter_map(|p| p["probe"].as_str().map(str::to_string))
        .collect();
    inside.sort();
    let mut host = attached_on_host();
    host.sort();
    assert!(!host.is_empty(), "netprobe check attaches nothing here");
    assert_eq!(
        inside, host,
        "probes attached in the container and on the host"
    );
    assert_eq!(ready["attached"], host.len(), "{ready}");

    // /metrics, from the container's own network namespace.
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &id]);
    let metrics = Command::new("nsenter")
        .args(["-t", &pid, "-n", "curl", "-sS", "--max-time", "5"])
        .arg("http://127.0.0.1:9464/metrics")
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        body.lines().any(|l| l == "netprobe_ready 1"),
        "/metrics: {body} {}",
        String::from_utf8_lossy(&metrics.stderr)
    );

    // Another container's refused connections name that container.
    busybox_image();
    let mut other = vec!["run", "-d", "--network", "none"];
    other.extend(MACHINE_FLAGS);
    other.extend([
        BUSYBOX,
        "sh",
        "-c",
        "for i in 1 2 3; do nc 127.0.0.1 9; done; sleep 30",
    ]);
    let victim = podman(&other);
    let _victim = Container(victim.clone());
    let netns = netns_of(&victim);
    let r = wait_record(&id, "reset_sent", Duration::from_secs(20), |v| {
        v["kind"] == "reset_sent" && v["container"] == victim.as_str()
    });
    eprintln!("reset_sent: {r}");
    assert_eq!(r["netns"], netns, "{r}");
    assert_eq!(r["mode"], "no_listener", "{r}");
    let _ = std::fs::remove_dir_all(&empty);
}
