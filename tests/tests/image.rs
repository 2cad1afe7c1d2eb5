//! netprobe's own image (`cargo xtask dist`'s archive; the host run makes
//! one of the static binary under test, `NETPROBE_IMAGE_ARCHIVE`), loaded
//! into podman (`podman load`) and into containerd (`ctr images import`),
//! and run by each with runc and the DaemonSet's container settings, read
//! from deploy/kubernetes/daemonset.yaml: its command and arguments, host
//! PID, every capability dropped but the manifest's list, a read-only root,
//! no_new_privs, the tracefs, cgroup and netns mounts read-only, and the
//! runtime's default seccomp profile. Inside it the probes attach as they do
//! on the host, records reach stdout, `/metrics` answers, and another
//! container's refused connections are attributed to that container.
//! The guests have no container runtime: there the tests do not run.
//!
//! Capabilities this machine's root does not hold itself (its bounding set,
//! read from /proc/self/status) cannot be granted by any runtime here; they
//! are left out of the run and named on stderr.

use std::{path::Path, process::Command, thread, time::Duration, time::Instant};

use netprobe_tests::{
    containerd::Containerd,
    journal::{journal_wait, Journald, SOCKET},
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

/// The capability numbers of `CAP_NAME`s, as capabilities(7) numbers them.
const CAP_NUMBERS: &[(&str, u32)] = &[
    ("DAC_READ_SEARCH", 2),
    ("NET_ADMIN", 12),
    ("SYS_PTRACE", 19),
    ("SYS_ADMIN", 21),
    ("SYS_RESOURCE", 24),
    ("SYSLOG", 34),
    ("PERFMON", 38),
    ("BPF", 39),
];

/// The manifest's capabilities this machine's root holds in its bounding
/// set (only those can be granted here), and those it does not.
fn grantable(caps: &[String]) -> (Vec<String>, Vec<String>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    caps.iter().cloned().partition(|c| {
        let bit = CAP_NUMBERS
            .iter()
            .find(|(n, _)| n == c)
            .unwrap_or_else(|| panic!("capability {c}: add its number to CAP_NUMBERS"))
            .1;
        bounding & (1 << bit) != 0
    })
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

/// The records in a container's output so far.
fn records_in(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The podman container's stdout so far, as records.
fn records(id: &str) -> Vec<Value> {
    let out = Command::new("podman").args(["logs", id]).output().unwrap();
    records_in(&String::from_utf8_lossy(&out.stdout))
}

/// Waits for a record `pred` accepts in what `output` returns (stdout, and
/// anything else to show on failure).
fn wait_in(
    output: impl Fn() -> (String, String),
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (out, err) = output();
        if let Some(r) = records_in(&out).into_iter().find(&pred) {
            return r;
        }
        if start.elapsed() > limit {
            panic!("no {what} record within {limit:?}; the container's output: {out}\n{err}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn wait_record(id: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let podman_logs = || {
        let o = Command::new("podman").args(["logs", id]).output().unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    wait_in(podman_logs, what, limit, pred)
}

/// The probes attached inside, by the container's probe records, against
/// those `netprobe check` attaches on the host; and the ready record's count.
fn assert_probes_as_on_the_host(records: &[Value], ready: &Value) {
    let mut inside: Vec<String> = records
        .iter()
        .filter(|v| v["kind"] == "probe" && v["status"] == "attached")
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
}

/// `/metrics` from inside the network namespace of process `pid` (its
/// loopback brought up first, as a pod's is).
fn assert_metrics_answer(pid: &str) {
    // busybox's ip (the setup installs busybox-static).
    let lo = Command::new("nsenter")
        .args(["-t", pid, "-n", "busybox", "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(lo.success(), "bringing up the container's loopback");
    // A thread of ours in the container's network namespace fetches it.
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let body = thread::spawn(move || {
        use std::{
            io::{Read, Write},
            os::fd::AsRawFd,
        };
        // SAFETY: setns on a namespace descriptor we hold; it moves only
        // this thread, which ends after the fetch.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let mut c = std::net::TcpStream::connect("127.0.0.1:9464").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        reply
    })
    .join()
    .unwrap();
    assert!(
        body.lines().any(|l| l == "netprobe_ready 1"),
        "/metrics: {body}"
    );
}

const VICTIM_SCRIPT: &str =
    "busybox ip link set lo up 2>/dev/null; for i in 1 2 3; do nc 127.0.0.1 9; done; sleep 30";

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

/// Where a manifest mount comes from here: the host path, or, for one a
/// node of this kind lacks (/var/log/pods is a kubelet's), an empty
/// directory in its place (one for every run, left for the next).
fn mount_source(host: &str) -> String {
    if Path::new(host).exists() {
        return host.to_string();
    }
    let empty = std::env::temp_dir().join("netprobe-test-no-pod-logs");
    std::fs::create_dir_all(&empty).unwrap();
    empty.display().to_string()
}

/// The test's preconditions: root, the host (not a guest), and the image
/// archive `cargo xtask test` makes. None when the test does not run here.
fn image_archive(name: &str) -> Option<String> {
    if !require_root(name) {
        return None;
    }
    if std::env::var_os("NETPROBE_GUEST").is_some() {
        not_run_here(
            name,
            "the kernel matrix's guests have no container runtime; the host row runs it",
        );
        return None;
    }
    Some(
        std::env::var("NETPROBE_IMAGE_ARCHIVE").expect(
            "NETPROBE_IMAGE_ARCHIVE: the image archive to load (`cargo xtask test` makes one)",
        ),
    )
}

/// The image `podman load` or `docker load` says it loaded: netprobe's.
fn loaded_image(runtime: &str, said: &str) -> String {
    let image = said
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("{runtime} load named no image: {said}"))
        .trim()
        .to_string();
    assert!(image.contains("netprobe:"), "{image}");
    image
}

/// netprobe's image, loaded into podman: its name.
fn podman_load(archive: &str) -> String {
    loaded_image("podman", &podman(&["load", "-i", archive]))
}

/// `run` arguments for netprobe's image with the manifest's settings, in
/// the flags podman and docker share; `volumes` (`-v` values) besides its
/// mounts, and `args` instead of the manifest's arguments when given.
fn run_args(
    image: &str,
    volumes: &[String],
    args: Option<&[&str]>,
    unknown_caps: &[&str],
) -> Vec<String> {
    let s = spec(MANIFEST);
    let mut run: Vec<String> = ["run", "-d", "--network", "none", "--cap-drop", "ALL"]
        .map(String::from)
        .to_vec();
    run.extend(MACHINE_FLAGS.map(String::from));
    let (caps, withheld) = grantable(&s.caps);
    if !withheld.is_empty() {
        eprintln!("not in this machine's bounding set, so left out: {withheld:?}");
    }
    for c in caps.iter().filter(|c| !unknown_caps.contains(&c.as_str())) {
        run.extend(["--cap-add".into(), c.clone()]);
    }
    assert!(s.host_pid && s.read_only_root && s.no_new_privs);
    run.extend(["--pid".into(), "host".into(), "--read-only".into()]);
    run.extend(["--security-opt".into(), "no-new-privileges".into()]);
    // The runtime's default seccomp profile is its RuntimeDefault.
    assert!(s.seccomp_default, "the manifest asks for RuntimeDefault");
    for (host, path, ro) in &s.mounts {
        let host = mount_source(host);
        let opts = if *ro { ":ro" } else { "" };
        run.extend(["-v".into(), format!("{host}:{path}{opts}")]);
    }
    for v in volumes {
        run.extend(["-v".into(), v.clone()]);
    }
    run.extend(["-e".into(), "NODE_NAME=test-node".into()]);
    run.extend(["--entrypoint".into(), s.command[0].clone()]);
    run.push(image.to_string());
    match args {
        Some(a) => run.extend(a.iter().map(|a| a.to_string())),
        None => run.extend(s.args.iter().cloned()),
    }
    run
}

/// Starts netprobe's image under podman (see [`run_args`]).
fn podman_run_netprobe(image: &str, volumes: &[String], args: Option<&[&str]>) -> Container {
    let run = run_args(image, volumes, args, &[]);
    let refs: Vec<&str> = run.iter().map(String::as_str).collect();
    Container(podman(&refs))
}

/// A busybox container connecting to a closed port in its own namespace:
/// the container and its network namespace.
fn podman_victim() -> (Container, u64) {
    busybox_image();
    let mut other = vec!["run", "-d", "--network", "none"];
    other.extend(MACHINE_FLAGS);
    other.extend([BUSYBOX, "sh", "-c", VICTIM_SCRIPT]);
    let victim = Container(podman(&other));
    let netns = netns_of(&victim.0);
    (victim, netns)
}

#[test]
fn the_image_runs_under_podman_with_the_daemonsets_settings() {
    let Some(archive) = image_archive("the_image_runs_under_podman_with_the_daemonsets_settings")
    else {
        return;
    };
    let image = podman_load(&archive);
    let netprobe = podman_run_netprobe(&image, &[], None);
    let id = netprobe.0.clone();
    let ready = wait_record(&id, "ready", Duration::from_secs(30), |v| {
        v["kind"] == "ready"
    });
    eprintln!("ready: {ready}");
    assert_probes_as_on_the_host(&records(&id), &ready);
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &id]);
    assert_metrics_answer(&pid);

    // Another container's refused connections name that container.
    let (victim, netns) = podman_victim();
    let r = wait_record(&id, "reset_sent", Duration::from_secs(20), |v| {
        v["kind"] == "reset_sent" && v["container"] == victim.0.as_str()
    });
    eprintln!("reset_sent: {r}");
    assert_eq!(r["netns"], netns, "{r}");
    assert_eq!(r["mode"], "no_listener", "{r}");
}

/// The journald option: the host's journal socket mounted into the
/// container and `--output journald`; the records land in the host's
/// journal (a real systemd-journald) with the same fields as outside.
#[test]
fn the_image_writes_to_the_hosts_journal() {
    let Some(archive) = image_archive("the_image_writes_to_the_hosts_journal") else {
        return;
    };
    let _journald = Journald::ensure();
    let image = podman_load(&archive);
    let socket = format!("{SOCKET}:{SOCKET}");
    let netprobe = podman_run_netprobe(&image, &[socket], Some(&["run", "--output", "journald"]));
    let pid = format!(
        "_PID={}",
        podman(&["inspect", "--format", "{{.State.Pid}}", &netprobe.0])
    );
    let ready = journal_wait(&[pid.clone(), "NETPROBE_KIND=ready".into()], |e| {
        !e.is_empty()
    });
    assert_eq!(ready[0]["SYSLOG_IDENTIFIER"], "netprobe", "{}", ready[0]);
    let (victim, netns) = podman_victim();
    let entries = journal_wait(
        &[
            pid,
            "NETPROBE_KIND=reset_sent".into(),
            format!("NETPROBE_CONTAINER={}", victim.0),
        ],
        |e| !e.is_empty(),
    );
    let rst = &entries[0];
    eprintln!("{rst}");
    assert_eq!(rst["NETPROBE_NETNS"], netns.to_string(), "{rst}");
    assert_eq!(rst["NETPROBE_MODE"], "no_listener", "{rst}");
    assert_eq!(rst["NETPROBE_SPORT"], "9", "{rst}");
    // Events are logged at info (design.md), whatever their severity.
    assert_eq!(rst["PRIORITY"], "6", "{rst}");
    assert_eq!(rst["NETPROBE_SEVERITY"], "warning", "{rst}");
    assert!(rst.get("NETPROBE_ADVICE").is_some(), "{rst}");
}

/// A pod UID and container id, as the kubelet's cgroupfs driver lays out a
/// container's cgroup (`/kubepods/besteffort/pod<uid>/<id>`), which is how
/// netprobe names containers on a node.
fn kubelet_cgroup(uid: &str, id: &str) -> String {
    format!("/kubepods/besteffort/pod{uid}/{id}")
}

#[test]
fn the_image_runs_under_containerd_with_the_daemonsets_settings() {
    let Some(archive) =
        image_archive("the_image_runs_under_containerd_with_the_daemonsets_settings")
    else {
        return;
    };
    let s = spec(MANIFEST);
    let mut ctd = Containerd::start();
    let image = ctd.import(Path::new(&archive));
    assert!(image.contains("netprobe:"), "{image}");
    // ctr's flags for the manifest's settings. Its default spec holds
    // runc's default capabilities: each is dropped by name.
    let (caps, withheld) = grantable(&s.caps);
    if !withheld.is_empty() {
        eprintln!("not in this machine's bounding set, so left out: {withheld:?}");
    }
    let mut flags: Vec<String> = Vec::new();
    for c in [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ] {
        flags.extend(["--cap-drop".into(), format!("CAP_{c}")]);
    }
    for c in &caps {
        flags.extend(["--cap-add".into(), format!("CAP_{c}")]);
    }
    assert!(s.read_only_root && s.seccomp_default && s.host_pid && s.no_new_privs);
    // containerd's default seccomp profile, a read-only root.
    flags.extend(["--seccomp".into(), "--read-only".into()]);
    for (host, path, ro) in &s.mounts {
        let host = mount_source(host);
        let opts = if *ro { "rbind:ro" } else { "rbind" };
        flags.extend([
            "--mount".into(),
            format!("type=bind,src={host},dst={path},options={opts}"),
        ]);
    }
    flags.extend(["--env".into(), "NODE_NAME=test-node".into()]);
    let id = "a".repeat(64);
    let mut command = s.command.clone();
    command.extend(s.args.iter().cloned());
    let mut oci = ctd.spec(&flags, &image, &id, &command);
    // What ctr has no flag for, done as the kubelet's CRI plugin does it:
    // hostPID leaves the PID namespace out; the cgroup is the kubelet's.
    // ctr's spec already sets noNewPrivileges (its --allow-new-privs turns
    // it off), as allowPrivilegeEscalation: false asks.
    assert_eq!(oci["process"]["noNewPrivileges"], true, "{oci}");
    assert!(
        oci["linux"]["seccomp"].is_object(),
        "containerd's seccomp profile"
    );
    assert_eq!(oci["root"]["readonly"], true);
    let namespaces = oci["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "pid");
    assert!(namespaces.iter().any(|n| n["type"] == "network"));
    oci["linux"]["cgroupsPath"] =
        kubelet_cgroup("11111111-2222-3333-4444-555555555555", &id).into();
    let rootfs = ctd.rootfs(&image, "netprobe-rootfs");
    oci["root"]["path"] = rootfs.display().to_string().into();
    let log = ctd.dir.join("netprobe.log");
    let daemon_log = ctd.dir.join("containerd.log");
    ctd.run_spec(&oci, &id, &log);
    let output = || {
        (
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&daemon_log).unwrap_or_default(),
        )
    };
    let ready = wait_in(output, "ready", Duration::from_secs(30), |v| {
        v["kind"] == "ready"
    });
    eprintln!("ready: {ready}");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_new_privs set")),
        "{ready}"
    );
    assert_probes_as_on_the_host(&records_in(&output().0), &ready);
    assert_metrics_answer(&ctd.pid(&id).to_string());

    // Another container, in a pod's cgroup: its refused connections name
    // the container and the pod.
    let busybox_archive = ctd.dir.join("busybox.tar");
    busybox_image();
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        busybox_archive.to_str().unwrap(),
        BUSYBOX,
    ]);
    let busybox = ctd.import(&busybox_archive);
    let victim = "b".repeat(64);
    let uid = "66666666-7777-8888-9999-000000000000";
    let cgroup = kubelet_cgroup(uid, &victim);
    ctd.run(
        &["--cap-add", "CAP_NET_ADMIN", "--cgroup", &cgroup],
        &busybox,
        &victim,
        &["sh", "-c", VICTIM_SCRIPT],
    );
    let netns = std::fs::read_link(format!("/proc/{}/ns/net", ctd.pid(&victim)))
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse::<u64>()
        .unwrap();
    let r = wait_in(output, "reset_sent", Duration::from_secs(20), |v| {
        v["kind"] == "reset_sent" && v["container"] == victim.as_str()
    });
    eprintln!("reset_sent: {r}");
    assert_eq!(r["netns"], netns, "{r}");
    // No kubelet log directory here: the pod is named by its UID.
    assert_eq!(r["pod"], uid, "{r}");
    assert_eq!(r["mode"], "no_listener", "{r}");
}

/// A dockerd of the test's own (Debian's docker.io): its data, state and
/// socket in a temporary directory, no iptables rules and no bridge, so
/// it changes nothing else on the machine. Stopped when dropped.
struct Dockerd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    host: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = std::env::temp_dir().join(format!("netprobe-dockerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--host", &host])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (`cargo xtask setup` installs docker.io)");
        let d = Dockerd { child, dir, host };
        let deadline = Instant::now() + netprobe_tests::patience(Duration::from_secs(30));
        while d.try_docker(&["version"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer: {}",
                std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn try_docker(&self, args: &[&str]) -> Result<(String, String), String> {
        let out = Command::new("docker")
            .args(["--host", &self.host])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        );
        if out.status.success() {
            Ok((o, e))
        } else {
            Err(e)
        }
    }

    fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args)
            .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
            .0
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok((ids, _)) = self.try_docker(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.try_docker(&["rm", "-f", id]);
            }
        }
        // SAFETY: a plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `docker load` takes the same archive, and the image runs under Docker
/// with the manifest's settings (Docker's default seccomp profile): its
/// probes attach as on the host, its records reach `docker logs`, and
/// `/metrics` answers.
#[test]
fn the_image_runs_under_docker_with_the_daemonsets_settings() {
    let Some(archive) = image_archive("the_image_runs_under_docker_with_the_daemonsets_settings")
    else {
        return;
    };
    let d = Dockerd::start();
    let image = loaded_image("docker", &d.docker(&["load", "-i", &archive]));
    // Docker names it as tagged, without a registry.
    assert!(image.starts_with("netprobe:"), "{image}");
    // The same flags as podman's run, this machine's limits included, less
    // the capabilities Docker 20.10 does not know ("invalid CapAdd: unknown
    // capability: CAP_BPF"): CAP_SYS_ADMIN, which the manifest adds too,
    // allows bpf() and perf_event_open() without them.
    let run = run_args(&image, &[], None, &["BPF", "PERFMON"]);
    let refs: Vec<&str> = run.iter().map(String::as_str).collect();
    let id = d.docker(&refs);
    let logs = || {
        d.try_docker(&["logs", &id])
            .unwrap_or_else(|e| (String::new(), e))
    };
    let ready = wait_in(logs, "ready", Duration::from_secs(30), |v| {
        v["kind"] == "ready"
    });
    eprintln!("ready: {ready}");
    assert_probes_as_on_the_host(&records_in(&logs().0), &ready);
    let pid = d.docker(&["inspect", "--format", "{{.State.Pid}}", &id]);
    assert_metrics_answer(&pid);
}
