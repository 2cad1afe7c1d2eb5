//! A real systemd-journald for the tests (the running one, or one started
//! for a test) and reading entries back with `journalctl -o json`.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::patience;

/// The systemd-journald executable.
pub fn journald_bin() -> &'static str {
    [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-journald is not installed (package systemd); `cargo xtask setup` installs it")
}

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A journald to write to: the running one, or one started for this test
/// and stopped after it.
pub struct Journald(Option<Child>);

impl Journald {
    pub fn ensure() -> Journald {
        let alive = || {
            UnixDatagram::unbound()
                .and_then(|s| s.connect(SOCKET))
                .is_ok()
        };
        if alive() {
            return Journald(None);
        }
        let bin = journald_bin();
        let log = std::fs::File::create(JOURNALD_LOG).expect("create the journald log");
        let child = Command::new(bin)
            // Its own messages to stderr (our log), not to kmsg.
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdout(log.try_clone().expect("dup the journald log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-journald");
        let deadline = Instant::now() + patience(Duration::from_secs(10));
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
pub const JOURNALD_LOG: &str = "/tmp/netprobe-test-journald.log";

/// What to look at when the journal does not show an entry: journald's own
/// messages (if this test started it) and the newest entries unfiltered.
pub fn journal_diagnostics() -> String {
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
pub fn journal_wait(matches: &[String], pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + patience(Duration::from_secs(15));
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
