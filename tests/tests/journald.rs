//! journald output, checked against a real systemd-journald (started here
//! when none runs) and read back with `journalctl -o json`.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command, Stdio},
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
        let child = Command::new(bin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
            "journal never showed the entries for {matches:?}; got {entries:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
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
    assert_eq!(drop["NETPROBE_REASON"], "NO_SOCKET");
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
}
