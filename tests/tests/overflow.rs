//! A ring buffer driven past its capacity: every event the kernel made is
//! either written (at once, or folded into an incident) or counted as lost.
//! Alone in its test executable, so no other test's events mix in.

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use netprobe_tests::{require_root, socket2_free, Daemon, Netns};
use serde_json::Value;

/// Refused connections from 127.0.0.2 to a closed port of 127.0.0.1 in
/// `ns`, as fast as this thread can make them.
fn refuse(ns: &Netns, port: u16, n: u32) -> Duration {
    ns.run(move || {
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Instant::now();
        for _ in 0..n {
            let s = socket2_free::tcp_v4();
            socket2_free::bind(&s, "127.0.0.2:0".parse().unwrap());
            let e = socket2_free::connect(&s, server).expect_err("the port is closed");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        t.elapsed()
    })
}

/// Events about `port` in the records: written ones, and repeats folded
/// into incidents.
fn events_about(seen: &[Value], port: u16) -> u64 {
    seen.iter()
        .filter(|v| v["mode"].is_string() && (v["dport"] == port || v["sport"] == port))
        .map(|v| match v["kind"].as_str() {
            Some("incident") => v["count"].as_u64().unwrap() - 1,
            _ => 1,
        })
        .sum()
}

fn lost(seen: &[Value]) -> u64 {
    seen.iter()
        .filter(|v| v["kind"] == "lost")
        .map(|v| v["count"].as_u64().unwrap())
        .sum()
}

/// Runs the daemon with `args`, makes `n` refused connections, stops it;
/// returns (events about the port, all events by the daemon's own summary,
/// events lost, seconds the burst took).
fn burst(ns: &Netns, args: &[&str], n: u32) -> (u64, u64, u64, f64) {
    let port = ns.run(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let mut all = vec!["--output", "json", "--incident-window", "3600"];
    all.extend_from_slice(args);
    let mut d = Daemon::start(&all, &[]);
    d.wait_ready();
    let took = refuse(ns, port, n);
    // Let the daemon drain, then stop: incidents are flushed at exit.
    d.collect(Duration::from_secs(2), |_| false);
    d.stop_cleanly();
    d.collect(Duration::from_secs(1), |_| false);
    let summary = d.wait_for("summary", Duration::from_secs(1), |v| {
        v["kind"] == "summary" && v["evidence"]["uptime_s"].is_u64()
    });
    let lost_records = lost(&d.seen);
    assert_eq!(
        summary["evidence"]["lost"].as_u64().unwrap(),
        lost_records,
        "the summary counts the lost records: {summary}"
    );
    (
        events_about(&d.seen, port),
        summary["count"].as_u64().unwrap(),
        lost_records,
        took.as_secs_f64(),
    )
}

#[test]
fn a_ring_buffer_past_capacity_counts_every_lost_event() {
    if !require_root("a_ring_buffer_past_capacity_counts_every_lost_event") {
        return;
    }
    let ns = Netns::new();
    // How many events one refused connection makes on this kernel (drop,
    // RST sent, RST received, socket error: which exist depends on it).
    const CAL: u32 = 50;
    let (events, _, lost_cal, _) = burst(&ns, &[], CAL);
    assert_eq!(lost_cal, 0, "no loss with the default ring buffer");
    assert_eq!(
        events % u64::from(CAL),
        0,
        "{events} events for {CAL} connections"
    );
    let per = events / u64::from(CAL);
    assert!(per >= 1, "no event for a refused connection");

    // The smallest ring buffer (a page), and a burst.
    const N: u32 = 4000;
    let (delivered, total, lost, secs) = burst(&ns, &["--ring-buffer", "4096"], N);
    let made = u64::from(N) * per;
    eprintln!(
        "{N} refused connections in {secs:.2} s, {per} event(s) each: {made} events; \
         {delivered} written or folded ({total} events of any kind), {lost} counted lost"
    );
    assert!(lost > 0, "a page-sized ring buffer did not overflow");
    assert!(delivered <= made, "{delivered} > {made}");
    // Every event not written is counted (a few more lost may be other
    // processes' events on this host in the same moments).
    assert!(
        delivered + lost >= made,
        "{} event(s) vanished: made {made}, written {delivered}, lost {lost}",
        made - delivered - lost
    );
    let extra = total + lost - made;
    assert!(
        extra <= made / 100 + 50,
        "{extra} more events counted lost than the burst could make"
    );
}
