//! journald output, checked against a real systemd-journald (started here
//! when none runs) and read back with `journalctl -o json`.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use netprobe_tests::{connect_to_closed_port, require_root, Daemon, Netns};
use serde_json::Value;

const SOCKET: &str = "/run/systemd/journal/socket";

/// A journald to write to: the running one, or one started for this test
/// and stopped after it.
struct Journald(Option<Child>);

impl Journald {
    fn ensure() -> Journald {
        let alive = || {
            UnixDatagram::unbound()
                .and_then(|s| s.connect(SOCKET))
                .is_ok()
        };
        if alive() {
            return Journald(None);
        }
        let bin = [
            "/lib/systemd/systemd-journald",
            "/usr/lib/systemd/systemd-journald",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "systemd-journald is not installed (package systemd); `cargo xtask setup` installs it",
        );
        let log = std::fs::File::create(JOURNALD_LOG).expect("create the journald log");
        let child = Command::new(bin)
            // Its own messages to stderr (our log), not to kmsg.
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdout(log.try_clone().expect("dup the journald log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-journald");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !alive() {
            assert!(
                Instant::now() < deadline,
                "systemd-journald did not open {SOCKET}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Journald(Some(child))
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where a journald this test started writes its own messages.
const JOURNALD_LOG: &str = "/tmp/netprobe-test-journald.log";

/// What to look at when the journal does not show an entry: journald's own
/// messages (if this test started it) and the newest entries unfiltered.
fn journal_diagnostics() -> String {
    let own = std::fs::read_to_string(JOURNALD_LOG).unwrap_or_default();
    let newest = Command::new("journalctl")
        .args(["-o", "short", "--no-pager", "-n", "5"])
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_else(|e| e.to_string());
    format!("journald said:\n{own}\nnewest journal entries:\n{newest}")
}

/// Entries matching journalctl `matches`, polled until `pred` holds for one.
fn journal_wait(matches: &[String], pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("journalctl")
            .args(["-o", "json", "--no-pager", "--all"])
            .args(matches)
            .output()
            .expect("run journalctl");
        let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if pred(&entries) {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "journal never showed the entries for {matches:?}; got {entries:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            journal_diagnostics()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn closed_port_records_reach_journald_with_fields() {
    if !require_root("closed_port_records_reach_journald_with_fields") {
        return;
    }
    let _journald = Journald::ensure();
    let d = Daemon::start(&["--output", "journald"], &[]);
    let pid = format!("_PID={}", d.pid());
    journal_wait(&[pid.clone(), "NETPROBE_KIND=ready".into()], |e| {
        !e.is_empty()
    });

    let ns = Netns::new();
    let (client, server) = ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"));
    let entries = journal_wait(
        &[pid.clone(), format!("NETPROBE_DPORT={}", server.port())],
        |e| e.iter().any(|v| v["NETPROBE_KIND"] == "drop"),
    );
    let drop = entries
        .iter()
        .find(|v| v["NETPROBE_KIND"] == "drop")
        .unwrap();
    assert_eq!(drop["SYSLOG_IDENTIFIER"], "netprobe");
    assert_eq!(drop["PRIORITY"], "6");
    // Kernels before 5.17 give no reason (the mode still says it).
    if let Some(reason) = drop.get("NETPROBE_REASON") {
        assert_eq!(reason, "NO_SOCKET");
    }
    assert_eq!(drop["NETPROBE_FAMILY"], "reset");
    assert_eq!(drop["NETPROBE_MODE"], "no_listener");
    assert_eq!(drop["NETPROBE_SADDR"], "127.0.0.2");
    assert_eq!(drop["NETPROBE_SPORT"], client.port().to_string());
    assert_eq!(drop["NETPROBE_DADDR"], "127.0.0.1");
    assert!(
        drop["MESSAGE"]
            .as_str()
            .unwrap()
            .contains("no socket listens"),
        "{drop}"
    );
    assert!(drop.get("NETPROBE_ADVICE").is_some());

    let rst = journal_wait(
        &[
            pid,
            format!("NETPROBE_SPORT={}", server.port()),
            "NETPROBE_KIND=reset_sent".into(),
        ],
        |e| !e.is_empty(),
    );
    assert_eq!(rst[0]["NETPROBE_DPORT"], client.port().to_string());
    let mut d = d;
    assert_eq!(
        d.stop_with(libc::SIGTERM, Duration::from_secs(5)).code(),
        Some(0)
    );
    // The morning summary, read back from the journal.
    let out = Command::new(netprobe_tests::netprobe_bin())
        .args(["report", "--since", "10m"])
        .output()
        .expect("run netprobe report");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(report.starts_with("netprobe report: "), "{report}");
    let closed = report
        .find("\nno_listener: ")
        .map(|at| &report[at..])
        .unwrap_or_else(|| panic!("no no_listener section:\n{report}"));
    assert!(
        closed.contains(&format!("127.0.0.1:{}", server.port())),
        "the closed port is among the worst targets:\n{report}"
    );
}
