//! A service that is down on a port above the clients' ephemeral range
//! (scenario 6 of issue 15): every refused connection's client port is the
//! lower one, so "the lower port" is the wrong guess. netprobe must take the
//! service from what the kernel says (the SYN's destination, the RST's
//! sender, the refused socket's peer): the storm folds into a few records,
//! `netprobe report` names 127.0.0.1:61000 as the only target, and its
//! totals reconcile exactly with the daemon's `summary` and with the
//! kernel's own counters, repeats counted in the kernel included.

use std::{io::Write, process::Command, time::Duration};

use netprobe_tests::{
    kernel, netprobe_bin, provoke, require_root, socket2_free as sock, Daemon, Netns,
};
use serde_json::Value;

/// Above the default ephemeral range (32768-60999).
const SERVICE: u16 = 61000;
const CONNECTIONS: u64 = 2000;

#[test]
fn a_service_above_the_ephemeral_range_folds_and_reports_as_one() {
    if !require_root("a_service_above_the_ephemeral_range_folds_and_reports_as_one") {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (resets, fails) = ns.run(|| {
        let server = format!("127.0.0.1:{SERVICE}").parse().unwrap();
        let (rsts, fails) = (
            provoke::counter("Tcp.OutRsts"),
            provoke::counter("Tcp.AttemptFails"),
        );
        for _ in 0..CONNECTIONS {
            let c = sock::tcp_v4();
            let e = sock::connect(&c, server).expect_err("the port is closed");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        (
            provoke::counter("Tcp.OutRsts") - rsts,
            provoke::counter("Tcp.AttemptFails") - fails,
        )
    });
    assert_eq!((resets, fails), (CONNECTIONS, CONNECTIONS));
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(10), |_| true);
    let about = |v: &Value| v["dport"] == SERVICE || v["sport"] == SERVICE;
    let events: Vec<&Value> = all
        .iter()
        .filter(|v| about(v) && v["kind"] != "incident")
        .collect();
    // Folded: each kind's first event in full, the rest in its incident.
    assert!(
        events.len() <= 8,
        "{} records written for {CONNECTIONS} refused connections: {:?}",
        events.len(),
        &events[..events.len().min(8)]
    );
    for v in &events {
        assert_eq!(v["mode"], "no_listener", "{v}");
        assert_eq!(
            (&v["addr"], &v["port"]),
            (&"127.0.0.1".into(), &SERVICE.into()),
            "{v}"
        );
    }
    // The kernel's counts, record by record: each RST sent and received,
    // written or folded (repeats counted in the kernel included).
    let count_of = |kind: &str| -> u64 {
        all.iter()
            .filter(|v| about(v))
            .map(|v| match v["kind"].as_str() {
                Some(k) if k == kind => v["count"].as_u64().unwrap_or(1),
                Some("incident") if v["event"] == kind => v["count"].as_u64().unwrap() - 1,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(
        count_of("reset_sent"),
        resets,
        "RSTs sent, by the kernel's OutRsts"
    );
    assert_eq!(
        count_of("reset_received"),
        fails,
        "RSTs received, by AttemptFails"
    );
    assert_eq!(count_of("drop"), resets, "each SYN dropped (NO_SOCKET)");
    let mut expected = 3 * CONNECTIONS;
    if kernel::lacks_tracepoint("sock:inet_sk_error_report").is_none() {
        assert_eq!(count_of("socket_error"), fails, "each ECONNREFUSED");
        expected += CONNECTIONS;
    }
    // The morning report of the same records: one target, the totals of
    // the summary (the whole host's), and the storm's within them.
    let summary = all
        .iter()
        .find(|v| v["kind"] == "summary")
        .expect("a summary record");
    let log = std::env::temp_dir().join(format!("netprobe-service-{}.jsonl", std::process::id()));
    let mut f = std::fs::File::create(&log).unwrap();
    for v in &all {
        writeln!(f, "{v}").unwrap();
    }
    drop(f);
    let out = Command::new(netprobe_bin())
        .args(["report", log.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&log);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    let block = &text[text.find("\nno_listener: ").expect("a no_listener block") + 1..];
    let block = &block[..block.find("\n\n").unwrap_or(block.len())];
    let reported: u64 = block
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(
        Some(reported),
        summary["evidence"]["no_listener"].as_u64(),
        "the report and the summary: {summary}"
    );
    assert_eq!(
        reported, expected,
        "the storm's events, all of them no_listener"
    );
    let targets: Vec<&str> = block
        .lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("e.g."))
        .collect();
    assert_eq!(targets.len(), 1, "one target: {block}");
    assert!(
        targets[0].ends_with(&format!("socket 127.0.0.1:{SERVICE}")),
        "{block}"
    );
    assert!(
        targets[0].trim_start().starts_with(&format!("{expected} ")),
        "{block}"
    );
}
