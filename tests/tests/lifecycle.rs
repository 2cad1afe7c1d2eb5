//! The daemon's life outside the happy path: signals, missing privilege,
//! a closed stdout, a missing journald socket.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netprobe_tests::{kernel, netprobe_bin, patience, require_root, Daemon};

const NOBODY: u32 = 65534;

#[test]
fn sigint_and_sigterm_detach_and_exit_zero() {
    if !require_root("sigint_and_sigterm_detach_and_exit_zero") {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut d = Daemon::start(&["--output", "json"], &[]);
        d.wait_ready();
        // The programs it attached, as the kernel lists its descriptors.
        let programs = kernel::bpf_programs_of(d.pid());
        let attached = d
            .seen
            .iter()
            .filter(|v| v["kind"] == "probe" && v["status"] == "attached")
            .count();
        assert!(
            programs.len() >= attached,
            "{attached} probes attached but the daemon holds {programs:?}"
        );
        assert!(programs.iter().all(|&id| kernel::bpf_program_exists(id)));
        let t = Instant::now();
        let st = d.stop_with(sig, patience(Duration::from_secs(5)));
        assert_eq!(st.code(), Some(0), "signal {sig}: {st}");
        eprintln!("signal {sig}: exited in {:?}", t.elapsed());
        // Detached: the kernel frees a program once nothing holds it (no
        // link, no descriptor), after an RCU grace period.
        let deadline = Instant::now() + patience(Duration::from_secs(2));
        let mut left: Vec<u32> = programs.clone();
        while !left.is_empty() && Instant::now() < deadline {
            left.retain(|&id| kernel::bpf_program_exists(id));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            left.is_empty(),
            "signal {sig}: programs {left:?} of {programs:?} still loaded after exit"
        );
    }
}

#[test]
fn without_privilege_check_and_run_say_what_is_missing() {
    if !require_root("without_privilege_check_and_run_say_what_is_missing") {
        return;
    }
    let out = Command::new(netprobe_bin())
        .arg("check")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "check without privilege must fail: {text}"
    );
    assert!(text.contains("CAP_BPF") && text.contains("root"), "{text}");
    assert!(!text.contains("panicked"), "{text}");

    let out = Command::new(netprobe_bin())
        .args(["run", "--output", "json"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rec: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(rec["kind"], "error");
    assert!(
        rec["message"].as_str().unwrap().contains("CAP_PERFMON"),
        "{rec}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_BPF"));
}

#[test]
fn check_reports_probes_as_root() {
    if !require_root("check_reports_probes_as_root") {
        return;
    }
    let out = Command::new(netprobe_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Their tracepoints exist on every kernel netprobe supports (4.15+).
    for (probe, tracepoint) in [
        ("drop", "skb:kfree_skb"),
        ("reset_sent", "tcp:tcp_send_reset"),
        ("reset_received", "tcp:tcp_receive_reset"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("probe       {probe} ")))
            .unwrap_or_else(|| panic!("no line for probe {probe}: {text}"));
        assert_eq!(kernel::lacks_tracepoint(tracepoint), None);
        let status = line.split_whitespace().nth(2);
        assert_eq!(status, Some("attached"), "{line}");
        assert!(line.contains(&format!("tracepoint {tracepoint}")), "{line}");
    }
    assert!(text.contains("privileges  ok"));
    assert!(text.contains("net.ipv4.tcp_timestamps"));
}

#[test]
fn missing_journald_socket_falls_back_to_json_with_one_error() {
    if !require_root("missing_journald_socket_falls_back_to_json_with_one_error") {
        return;
    }
    let mut d = Daemon::start(
        &["--output", "journald"],
        &[("NETPROBE_JOURNAL_SOCKET", "/nonexistent/journal/socket")],
    );
    d.wait_ready();
    let st = d.stop_with(libc::SIGTERM, patience(Duration::from_secs(5)));
    assert_eq!(st.code(), Some(0));
    std::thread::sleep(Duration::from_millis(100));
    let errs = d.stderr.lock().unwrap().clone();
    let journald_errors: Vec<_> = errs.iter().filter(|l| l.contains("journald")).collect();
    assert_eq!(journald_errors.len(), 1, "{errs:?}");
    assert!(
        journald_errors[0].contains("JSON lines to stdout"),
        "{errs:?}"
    );
}

#[test]
fn closed_stdout_gives_one_error_line_and_a_fallback() {
    if !require_root("closed_stdout_gives_one_error_line_and_a_fallback") {
        return;
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(netprobe_bin())
        .args(["run", "--output", "json"])
        .env("NETPROBE_JOURNAL_SOCKET", "/nonexistent/journal/socket")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Wait (bounded) for the ready record to reach the stderr fallback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains(" ready ") && Instant::now() < deadline {
        let n = stderr.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // SAFETY: signal our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    stderr.read_to_string(&mut text).unwrap();
    assert_eq!(st.code(), Some(0), "{text}");
    assert_eq!(text.matches("output to stdout failed").count(), 1, "{text}");
    assert!(text.contains("writing to stderr instead"), "{text}");
    assert!(text.contains(" ready "), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
