//! journald output, checked against a real systemd-journald (started here
//! when none runs) and read back with `journalctl -o json`.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use netprobe_tests::{
    connect_to_closed_port,
    journal::{journal_diagnostics, journal_wait, journald_bin, Journald, JOURNALD_LOG},
    kernel, patience, require_root, Daemon, Netns,
};

#[test]
fn closed_port_records_reach_journald_with_fields() {
    if !require_root("closed_port_records_reach_journald_with_fields") {
        return;
    }
    let _journald = Journald::ensure();
    // The report covers this test's records only: other tests write to
    // the same journal (the image's journald test, for one).
    let since = netprobe::pipeline::timefmt::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128,
    );
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
    match kernel::lacks_drop_reasons() {
        None => assert_eq!(drop["NETPROBE_REASON"], "NO_SOCKET", "{drop}"),
        Some(_) => assert!(drop.get("NETPROBE_REASON").is_none(), "{drop}"),
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
        d.stop_with(libc::SIGTERM, patience(Duration::from_secs(5)))
            .code(),
        Some(0)
    );
    // The morning summary, read back from the journal.
    let out = Command::new(netprobe_tests::netprobe_bin())
        .args(["report", "--since", &since])
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

/// A journald of its own (a journal namespace, `systemd-journald NAME`),
/// so the test can stop and restart it without touching the node's.
struct NamespacedJournald {
    name: String,
    child: Option<Child>,
}

impl NamespacedJournald {
    fn socket(&self) -> String {
        format!("/run/systemd/journal.{}/socket", self.name)
    }

    fn start(name: &str) -> NamespacedJournald {
        let mut j = NamespacedJournald {
            name: name.into(),
            child: None,
        };
        j.restart();
        j
    }

    fn restart(&mut self) {
        let bin = journald_bin();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(JOURNALD_LOG)
            .expect("open the journald log");
        let before = std::fs::metadata(self.socket())
            .and_then(|m| m.modified())
            .ok();
        self.child = Some(
            Command::new(bin)
                .arg(&self.name)
                .env("SYSTEMD_LOG_TARGET", "console")
                .stdout(log.try_clone().expect("dup the journald log"))
                .stderr(log)
                .spawn()
                .expect("start systemd-journald"),
        );
        // Up when its socket is a new one and takes a datagram.
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        loop {
            let fresh = std::fs::metadata(self.socket())
                .and_then(|m| m.modified())
                .ok();
            let alive = UnixDatagram::unbound()
                .and_then(|s| s.connect(self.socket()))
                .is_ok();
            if alive && fresh != before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "systemd-journald {} did not open {}: {}",
                self.name,
                self.socket(),
                journal_diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn arg(&self) -> String {
        format!("--namespace={}", self.name)
    }
}

impl Drop for NamespacedJournald {
    fn drop(&mut self) {
        self.stop();
        // Its journal files: /var/log/journal/MACHINE.NAME or /run/log/journal/MACHINE.NAME.
        for dir in ["/var/log/journal", "/run/log/journal"] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .ends_with(&format!(".{}", self.name))
                    {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }
}

#[test]
fn records_written_while_journald_restarts_are_delivered() {
    if !require_root("records_written_while_journald_restarts_are_delivered") {
        return;
    }
    let mut journald = NamespacedJournald::start(&format!("netprobe-test-{}", std::process::id()));
    let socket = journald.socket();
    let mut d = Daemon::start(
        &["--output", "journald"],
        &[("NETPROBE_JOURNAL_SOCKET", socket.as_str())],
    );
    let pid = format!("_PID={}", d.pid());
    let ns_arg = journald.arg();
    journal_wait(
        &[ns_arg.clone(), pid.clone(), "NETPROBE_KIND=ready".into()],
        |e| !e.is_empty(),
    );
    let ns = Netns::new();
    let closed_port = |ns: &Netns| {
        ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"))
            .1
    };
    let before = closed_port(&ns);
    journal_wait(
        &[
            ns_arg.clone(),
            pid.clone(),
            format!("NETPROBE_DPORT={}", before.port()),
        ],
        |e| !e.is_empty(),
    );

    // journald goes away (as when log rotation restarts it); records are
    // written meanwhile: five different closed ports, five flows.
    journald.stop();
    let away: Vec<u16> = (0..5).map(|_| closed_port(&ns).port()).collect();
    // Let the daemon write them while journald is down.
    thread::sleep(Duration::from_secs(1));
    journald.restart();
    let after = closed_port(&ns);

    for port in away.iter().chain([&after.port()]) {
        let e = journal_wait(
            &[
                ns_arg.clone(),
                pid.clone(),
                format!("NETPROBE_DPORT={port}"),
            ],
            |e| e.iter().any(|v| v["NETPROBE_MODE"] == "no_listener"),
        );
        assert_eq!(e[0]["SYSLOG_IDENTIFIER"], "netprobe");
    }
    assert_eq!(
        d.stop_with(libc::SIGTERM, patience(Duration::from_secs(5)))
            .code(),
        Some(0)
    );
    let summary = journal_wait(
        &[ns_arg.clone(), pid.clone(), "NETPROBE_KIND=summary".into()],
        |e| !e.is_empty(),
    );
    eprintln!("{}", summary[0]["MESSAGE"]);
    // Nothing lost, and the outage was said once on stderr.
    let lost = Command::new("journalctl")
        .args([
            ns_arg.as_str(),
            pid.as_str(),
            "NETPROBE_KIND=lost",
            "-o",
            "json",
            "--no-pager",
        ])
        .output()
        .expect("run journalctl");
    assert!(
        lost.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&lost.stdout)
    );
    thread::sleep(Duration::from_millis(100));
    let errs = d.stderr.lock().unwrap().clone();
    eprintln!("stderr: {errs:?}");
    assert_eq!(
        errs.iter()
            .filter(|l| l.contains("journald is unreachable"))
            .count(),
        1,
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|l| l.contains("journald is reachable again")),
        "{errs:?}"
    );
    // The daemon wrote nothing to its fallback (stdout) meanwhile.
    assert!(d.seen.is_empty(), "{:?}", d.seen);

    // A record larger than any datagram goes through a sealed memfd, and
    // the real journald takes it whole.
    let mut sink = netprobe::output::sink::journald::Journald::connect(Path::new(&socket))
        .expect("connect to the test journald");
    let big = format!("big {} end", "x".repeat(300_000));
    let mut rec = netprobe::pipeline::record::Record::new("error", big.clone());
    rec.detail = Some(format!("memfd-{}", std::process::id()));
    netprobe::output::sink::Sink::write(&mut sink, &rec).expect("write a 300 kB record");
    let got = journal_wait(
        &[
            ns_arg.clone(),
            format!("NETPROBE_DETAIL=memfd-{}", std::process::id()),
        ],
        |e| !e.is_empty(),
    );
    assert_eq!(got[0]["MESSAGE"].as_str().map(str::len), Some(big.len()));
}
