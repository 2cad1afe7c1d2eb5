//! The probe-log build (netprobe's `probe-log` feature: aya-log in the
//! kernel programs): its programs load wherever the plain build's do, on
//! every kernel of the matrix (5.10's verifier included), and their lines
//! reach the daemon's diagnostics.

use std::{path::PathBuf, process::Command, time::Duration};

use netprobe_tests::{
    connect_to_closed_port, netprobe_bin, not_run_here, patience, require_root, Daemon, Netns,
};

/// `netprobe check`'s probe lines: each probe, attached or skipped and why.
fn probe_lines(bin: &std::path::Path) -> Vec<String> {
    let out = Command::new(bin).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("netprobe can run"),
        "{}: {text}",
        bin.display()
    );
    text.lines()
        .filter(|l| l.starts_with("  probe       "))
        .map(str::to_string)
        .collect()
}

#[test]
fn probe_log_programs_load_where_the_plain_ones_do_and_speak() {
    const NAME: &str = "probe_log_programs_load_where_the_plain_ones_do_and_speak";
    if !require_root(NAME) {
        return;
    }
    let Some(bin) = std::env::var_os("NETPROBE_PROBE_LOG_BIN").map(PathBuf::from) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "NETPROBE_PROBE_LOG_BIN is unset: cargo xtask test builds the probe-log netprobe and sets it"
        );
        not_run_here(
            NAME,
            "NETPROBE_PROBE_LOG_BIN is unset (cargo xtask test builds and sets it)",
        );
        return;
    };
    // The same probes attach, or are skipped for the same reasons.
    let logged = probe_lines(&bin);
    assert_eq!(logged, probe_lines(&netprobe_bin()));
    assert!(
        logged.iter().any(|l| l.contains(" attached ")),
        "{logged:?}"
    );
    let check = Command::new(&bin).arg("check").output().unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("probe log   on"));

    // A drop at a closed port: the drop program says so through aya-log.
    let mut d = Daemon::start_bin(
        &bin,
        &["--output", "json", "--log-level", "warn,netprobe=debug"],
    );
    d.wait_ready();
    let ns = Netns::new();
    let (_, server) = ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"));
    d.wait_for("closed port", patience(Duration::from_secs(10)), |v| {
        v["kind"] == "drop" && (v["dport"] == server.port() || v["sport"] == server.port())
    });
    d.stop_cleanly();
    let deadline = std::time::Instant::now() + patience(Duration::from_secs(5));
    let said = |lines: &[String]| {
        lines.iter().any(|l| {
            l.contains("netprobe::drop") && l.contains("kfree_skb: reporting the drop of skb")
        })
    };
    while !said(&d.stderr_lines()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(said(&d.stderr_lines()), "{:?}", d.stderr_lines());
}
