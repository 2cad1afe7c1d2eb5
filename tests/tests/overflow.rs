//! A ring buffer driven past its capacity: every event the kernel made is
//! either written (at once, or folded into an incident, or counted in the
//! kernel as a repeat) or counted as lost.
//! Alone in its test executable, so no other test's events mix in.

use std::{
    net::SocketAddr,
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

/// The closed port the bursts connect to.
const CLOSED_PORT: u16 = 2000;

/// What one burst under the daemon showed.
struct Burst {
    /// Events about the port: written, or folded into incidents.
    delivered: u64,
    /// Records written about the port (incidents excluded).
    records: u64,
    /// All events, by the daemon's own summary.
    total: u64,
    lost: u64,
    /// Repeats counted in the kernel (the summary's).
    kernel_repeats: u64,
    secs: f64,
}

/// Runs the daemon with `args`, makes `n` refused connections, stops it.
fn burst(ns: &Netns, args: &[&str], n: u32) -> Burst {
    // Nothing listens in the fresh namespace. A service's port, below the
    // clients' ephemeral ones: their refusals are one flow (the lower port).
    let port = CLOSED_PORT;
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
    let about = |v: &&Value| v["mode"].is_string() && (v["dport"] == port || v["sport"] == port);
    Burst {
        delivered: events_about(&d.seen, port),
        records: d
            .seen
            .iter()
            .filter(about)
            .filter(|v| v["kind"] != "incident")
            .count() as u64,
        total: summary["count"].as_u64().unwrap(),
        lost: lost_records,
        kernel_repeats: summary["evidence"]["kernel_repeats"].as_u64().unwrap(),
        secs: took.as_secs_f64(),
    }
}

#[test]
fn a_ring_buffer_past_capacity_counts_every_lost_event() {
    if !require_root("a_ring_buffer_past_capacity_counts_every_lost_event") {
        return;
    }
    let ns = Netns::new();
    // How many events one refused connection makes on this kernel (drop,
    // RST sent, RST received, socket error: which exist depends on it),
    // each a record of its own.
    const CAL: u32 = 50;
    let cal = burst(&ns, &["--every-event"], CAL);
    assert_eq!(cal.lost, 0, "no loss with the default ring buffer");
    assert_eq!(
        cal.kernel_repeats, 0,
        "--every-event counts nothing in the kernel"
    );
    assert_eq!(cal.records, cal.delivered, "--every-event folds nothing");
    assert_eq!(
        cal.delivered % u64::from(CAL),
        0,
        "{} events for {CAL} connections",
        cal.delivered
    );
    let per = cal.delivered / u64::from(CAL);
    assert!(per >= 1, "no event for a refused connection");

    // Every event through the smallest ring buffer (a page), in a burst.
    const N: u32 = 4000;
    let made = u64::from(N) * per;
    let b = burst(&ns, &["--ring-buffer", "4096", "--every-event"], N);
    eprintln!(
        "every event: {N} refused connections in {:.2} s, {per} event(s) each: {made} events; \
         {} written ({} events of any kind), {} counted lost",
        b.secs, b.delivered, b.total, b.lost
    );
    assert!(b.lost > 0, "a page-sized ring buffer did not overflow");
    accounted(&b, made);

    // The same burst and buffer with repeats counted in the kernel: only
    // the first of each per CPU and kind crosses it (then one each 10 s).
    let b = burst(&ns, &["--ring-buffer", "4096"], N);
    eprintln!(
        "aggregated: {N} refused connections in {:.2} s: {} records, {} written or folded, \
         {} counted in the kernel, {} lost",
        b.secs, b.records, b.delivered, b.kernel_repeats, b.lost
    );
    assert!(b.kernel_repeats > 0, "no repeat was counted in the kernel");
    accounted(&b, made);

    // With the default buffer nothing is lost, and the kernel's counts
    // make up the rest exactly.
    let b = burst(&ns, &[], N);
    eprintln!(
        "aggregated, default buffer: {} records, {} written or folded, {} counted in the kernel",
        b.records, b.delivered, b.kernel_repeats
    );
    assert_eq!(
        (b.lost, b.delivered),
        (0, made),
        "every event accounted for"
    );
    assert!(
        b.records * 10 < made,
        "{} of {made} events crossed the ring buffer as records",
        b.records
    );
}

/// Every event of the burst is written, folded or counted lost.
fn accounted(b: &Burst, made: u64) {
    assert!(b.delivered <= made, "{} > {made}", b.delivered);
    // Every event not written is counted (a few more lost may be other
    // processes' events on this host in the same moments).
    assert!(
        b.delivered + b.lost >= made,
        "{} event(s) vanished: made {made}, written {}, lost {}",
        made - b.delivered - b.lost,
        b.delivered,
        b.lost
    );
    let extra = b.total + b.lost - made;
    assert!(
        extra <= made / 100 + 50,
        "{extra} more events counted lost than the burst could make"
    );
}
