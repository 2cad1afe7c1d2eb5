//! A SYN flood from spoofed sources (issue 17, outcome 1): no flow repeats,
//! so folding per flow cannot help. Past its churn limit a CPU folds new
//! flows per service in the kernel: the storm must cross the ring buffer as
//! a few records, every event still counted against the kernel's own
//! counter, and the incident must name a sample of the sources and estimate
//! how many were distinct. The negative: a handful of new flows at a calm
//! pace stays per flow, and nothing claims a storm of sources.

use std::{net::Ipv4Addr, time::Duration};

use netprobe_tests::{
    check_unless, kernel, patience, provoke, rawtcp, require_root, Daemon, Netns,
};
use serde_json::Value;

/// Sends one SYN to 127.0.0.1:`port` from each of `n` distinct sources in
/// 127.1.0.0/16 and up, `gap` apart; returns the RSTs the kernel counted.
fn spoofed_syns(ns: &Netns, port: u16, n: u32, gap: Duration) -> u64 {
    spoofed_syns_counting(ns, port, n, gap, "Tcp.OutRsts")
}

/// The same, returning how far the kernel's counter `counted` moved.
fn spoofed_syns_counting(
    ns: &Netns,
    port: u16,
    n: u32,
    gap: Duration,
    counted: &'static str,
) -> u64 {
    ns.run(move || {
        let inject = rawtcp::Injector::new().expect("a raw socket");
        let before = provoke::counter(counted);
        for i in 0..n {
            let src = [127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let sport = 10000 + (i % 50000) as u16;
            let p = rawtcp::syn((src, sport), ([127, 0, 0, 1], port), i);
            inject
                .send(&p, Ipv4Addr::LOCALHOST)
                .expect("a spoofed SYN sent");
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        // The last SYNs may still wait in the CPU's backlog for softirq
        // work (ksoftirqd, late under emulation): read until all n are
        // counted, or the count stops moving for half a second.
        let deadline = std::time::Instant::now() + patience(Duration::from_secs(5));
        let (mut last, mut still) = (provoke::counter(counted) - before, 0);
        while last < u64::from(n) && still < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = provoke::counter(counted) - before;
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        last
    })
}

/// Packets the CPUs' backlogs dropped (netdev_max_backlog), all CPUs: the
/// second column of /proc/net/softnet_stat.
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .expect("/proc/net/softnet_stat")
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// The RSTs sent from `port`: (written records, incidents' repeats).
fn resets_sent(all: &[Value], port: u16) -> (Vec<&Value>, u64) {
    let about = |v: &&Value| v["sport"] == port;
    let written: Vec<&Value> = all
        .iter()
        .filter(about)
        .filter(|v| v["kind"] == "reset_sent")
        .collect();
    let repeats = all
        .iter()
        .filter(about)
        .filter(|v| v["kind"] == "incident" && v["event"] == "reset_sent")
        .map(|v| v["count"].as_u64().unwrap() - 1)
        .sum();
    (written, repeats)
}

/// Keeps reading records for `secs` seconds, ten times that under
/// emulation (a TCG guest runs the daemon that much slower).
fn settle(d: &mut Daemon, secs: u64) {
    d.collect(patience(Duration::from_secs(secs)), |_| false);
}

fn losses(all: &[Value]) -> Vec<&Value> {
    all.iter().filter(|v| v["kind"] == "lost").collect()
}

fn lost(all: &[Value]) -> u64 {
    all.iter()
        .filter(|v| v["kind"] == "lost")
        .map(|v| v["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Both in one test, one after the other: a flood anywhere on the node
/// makes a CPU fold new flows per service (that is the point), so the calm
/// trickle must not run beside it.
#[test]
fn spoofed_syn_floods_fold_per_service_and_a_calm_trickle_stays_per_flow() {
    if !require_root("spoofed_syn_floods_fold_per_service_and_a_calm_trickle_stays_per_flow") {
        return;
    }
    a_few_new_flows_at_a_calm_pace_stay_per_flow();
    a_spoofed_syn_flood_folds_per_service_and_names_its_sources();
    a_spoofed_syn_flood_at_a_full_listener_is_counted_per_listener();
    a_port_scan_folds_per_peer_and_names_its_ports();
}

/// One source's SYNs to 20,000 closed ports: new services come too fast to
/// count each, so the kernel counts them per peer, and the incident names
/// ports it tried and estimates how many.
fn a_port_scan_folds_per_peer_and_names_its_ports() {
    const PORTS: std::ops::Range<u16> = 20_000..40_000;
    let mut d = Daemon::json();
    let ns = Netns::new();
    let rsts = ns.run(|| {
        let inject = rawtcp::Injector::new().expect("a raw socket");
        let before = provoke::counter("Tcp.OutRsts");
        for port in PORTS {
            let p = rawtcp::syn(([127, 9, 9, 9], 55555), ([127, 0, 0, 1], port), 1);
            inject.send(&p, Ipv4Addr::LOCALHOST).expect("a SYN sent");
        }
        provoke::counter("Tcp.OutRsts") - before
    });
    let n = u64::from(PORTS.end - PORTS.start);
    assert_eq!(rsts, n, "each SYN answered by a RST");
    settle(&mut d, 1);
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(10), |_| true);
    assert_eq!(lost(&all), 0, "{:?}", losses(&all));
    let scanner = |v: &&Value| v["daddr"] == "127.9.9.9" && v["saddr"] == "127.0.0.1";
    // Every RST counted, written or folded (some per service before the
    // services churned: they name the scanner as a source).
    let inode = ns.inode();
    let resets: u64 = all
        .iter()
        .filter(|v| v["netns"] == inode)
        .map(|v| match (v["kind"].as_str(), v["event"].as_str()) {
            (Some("reset_sent"), _) => 1,
            (Some("incident"), Some("reset_sent")) => v["count"].as_u64().unwrap() - 1,
            _ => 0,
        })
        .sum();
    assert_eq!(resets, rsts);
    let summary = all.iter().find(|v| v["kind"] == "summary").unwrap();
    assert!(
        summary["evidence"]["per_peer_records"].as_u64() > Some(0),
        "{summary}"
    );
    let incident = all
        .iter()
        .filter(scanner)
        .find(|v| v["kind"] == "incident" && v["event"] == "reset_sent")
        .expect("the scanner's incident");
    let distinct = incident["evidence"]["distinct_ports"]
        .as_u64()
        .unwrap_or_else(|| panic!("no distinct_ports: {incident}"));
    let ratio = distinct as f64 / n as f64;
    assert!((0.5..=2.0).contains(&ratio), "{incident}");
    for p in incident["evidence"]["ports"].as_array().unwrap() {
        let p: u16 = p.as_str().unwrap().parse().unwrap();
        assert!(PORTS.contains(&p), "{p} was not tried: {incident}");
    }
    // Records written per peer name no port.
    for v in all
        .iter()
        .filter(scanner)
        .filter(|v| v["evidence"]["per_peer"] == true)
    {
        assert!(v.get("sport").is_none() && v.get("dport").is_none(), "{v}");
    }
}

/// The same flood at a listener whose accept queue is full: each SYN is
/// dropped (ListenOverflows). Only the conn_request kprobe sees those
/// SYNs one by one; every kernel's counters name the listener.
fn a_spoofed_syn_flood_at_a_full_listener_is_counted_per_listener() {
    const TEST: &str = "spoofed_syn_floods_fold_per_service_and_a_calm_trickle_stays_per_flow";
    const SYNS: u32 = 20_000;
    let mut d = Daemon::json();
    let ns = Netns::new();
    // Every overflow of the test, the provoking clients' (and their SYNs'
    // retries) included.
    let all_before = ns.run(|| provoke::counter("TcpExt.ListenOverflows"));
    let (listener, port, _resident, _keep) = ns.run(|| provoke::accept_queue_overflow("127.0.0.1"));
    let backlog_before = backlog_drops();
    let overflows =
        spoofed_syns_counting(&ns, port, SYNS, Duration::ZERO, "TcpExt.ListenOverflows");
    // A SYN the CPU's backlog had no room for never reaches the listener
    // (netdev_max_backlog; seen under emulation): it is accounted there.
    let backlog = backlog_drops() - backlog_before;
    assert!(
        overflows + backlog >= u64::from(SYNS),
        "{overflows} overflows and {backlog} backlog drops for {SYNS} SYNs at a full accept queue"
    );
    d.wait_for("the overflows counted", Duration::from_secs(10), |v| {
        v["kind"] == "listen_overflow" && v["evidence"]["source"] == "counters" && v["port"] == port
    });
    // The counters are sampled once a second: a round or two more sees the
    // whole flood (its deltas fold into the incident written at exit).
    settle(&mut d, 3);
    let all_overflows = ns.run(|| provoke::counter("TcpExt.ListenOverflows")) - all_before;
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(10), |_| true);
    // The counters name the listener, and count every overflow: the first
    // sample's record, then the incident the later samples fold into
    // (deltas summed, the first's included).
    let counted: Vec<&Value> = all
        .iter()
        .filter(|v| {
            v["evidence"]["source"] == "counters"
                && v["mode"] == "accept_queue_full"
                && v["port"] == port
        })
        .collect();
    for v in &counted {
        assert_eq!(v["addr"], listener.as_str(), "{v}");
    }
    let most = counted
        .iter()
        .filter_map(|v| v["evidence"]["ListenOverflows"].as_u64())
        .max();
    assert!(
        most >= Some(u64::from(SYNS)),
        "{most:?} overflows counted for {SYNS} SYNs: {counted:?}"
    );
    let syn_stage = kernel::lacks_kprobe_on("tcp_conn_request");
    check_unless(
        TEST,
        "the spoofed SYNs at a full listener, one by one",
        syn_stage,
        || {
            let about = |v: &&Value| {
                v["port"] == port
                    && v["evidence"]["stage"] == "SYN"
                    && v["evidence"]["source"] != "counters"
            };
            let events: u64 = all
                .iter()
                .filter(about)
                .map(|v| match v["kind"].as_str() {
                    Some("incident") => v["count"].as_u64().unwrap() - 1,
                    _ => 1,
                })
                .sum();
            assert!(
                (u64::from(SYNS)..=all_overflows).contains(&events),
                "{events} SYN-stage overflows seen, {all_overflows} counted by the kernel \
                 ({overflows} during the flood)"
            );
            let incident = all
                .iter()
                .filter(about)
                .find(|v| v["kind"] == "incident")
                .expect("the listener's incident");
            let distinct = incident["evidence"]["distinct_sources"]
                .as_u64()
                .unwrap_or(0);
            let ratio = distinct as f64 / f64::from(SYNS);
            assert!((0.5..=2.0).contains(&ratio), "{incident}");
        },
    );
}

fn a_spoofed_syn_flood_folds_per_service_and_names_its_sources() {
    const PORT: u16 = 7071;
    const SYNS: u32 = 40_000;
    let mut d = Daemon::json();
    let ns = Netns::new();
    let rsts = spoofed_syns(&ns, PORT, SYNS, Duration::ZERO);
    assert_eq!(rsts, u64::from(SYNS), "each spoofed SYN answered by a RST");
    d.wait_for("the flood's first RST", Duration::from_secs(10), |v| {
        v["kind"] == "reset_sent" && v["sport"] == PORT
    });
    // Records still queued at exit are lost with the repeats counted for
    // them (and said so): let the daemon drain first.
    settle(&mut d, 1);
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(10), |_| true);
    // Folding starts past 50 new flows per CPU in 100 ms of real time. A
    // TCG guest starved by its neighbours can run the flood slower than
    // that, and then the per-flow records overflow the ring buffer (seen
    // once on 6.1: 114,494 lost). The losses are counted; the rest of this
    // phase needs a flood that folded, so there it says why it stops.
    if netprobe_tests::emulated() && lost(&all) > 0 {
        netprobe_tests::not_run_here(
            "spoofed_syn_floods_fold_per_service_and_a_calm_trickle_stays_per_flow",
            &format!(
                "the 40,000-SYN flood ran too slowly under emulation to fold (per-service \
                 folding needs 50 new flows per CPU in 100 ms): {} events lost, counted; \
                 its checks are left to the host and to guests that ran it at speed",
                lost(&all)
            ),
        );
        return;
    }
    assert_eq!(
        lost(&all),
        0,
        "nothing lost at this size: {:?}",
        losses(&all)
    );
    let (written, repeats) = resets_sent(&all, PORT);
    // Every RST the kernel counted, written or folded.
    assert_eq!(written.len() as u64 + repeats, rsts);
    // Few crossed the ring buffer: the first new flows per CPU (the churn
    // limit, 50 each 100 ms), then about one per service and CPU. Each
    // SYN is three events: the SYN dropped, the RST sent, and the RST
    // dropped at its (local, spoofed) destination.
    let summary = all
        .iter()
        .find(|v| v["kind"] == "summary")
        .expect("a summary");
    let in_kernel = summary["evidence"]["kernel_repeats"].as_u64().unwrap();
    assert!(
        summary["evidence"]["per_service_records"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        in_kernel >= 3 * u64::from(SYNS) - 3000,
        "only {in_kernel} of {} events counted in the kernel: {summary}",
        3 * SYNS
    );
    // A record written per service leaves the peer out of the flow and
    // names it as a source instead (most fold into the service's incident
    // before they are written).
    for v in written
        .iter()
        .filter(|v| v["evidence"]["per_service"] == true)
    {
        assert!(v.get("daddr").is_none() && v.get("dport").is_none(), "{v}");
        assert_eq!(v["saddr"], "127.0.0.1", "{v}");
    }
    // The incident: the sources it names were sent, and its estimate of how
    // many were distinct is within a factor of two of the truth.
    let incident = all
        .iter()
        .find(|v| v["kind"] == "incident" && v["event"] == "reset_sent" && v["sport"] == PORT)
        .expect("the RSTs' incident");
    let distinct = incident["evidence"]["distinct_sources"]
        .as_u64()
        .unwrap_or_else(|| panic!("no distinct_sources: {incident}"));
    let ratio = distinct as f64 / f64::from(SYNS);
    assert!(
        (0.5..=2.0).contains(&ratio),
        "{distinct} distinct sources estimated for {SYNS}: {incident}"
    );
    let named = incident["evidence"]["sources"].as_array().unwrap();
    assert!(!named.is_empty() && named.len() <= 8, "{incident}");
    for s in named {
        let a: Ipv4Addr = s.as_str().unwrap().parse().unwrap();
        let o = a.octets();
        let i = (u32::from(o[1]) - 1) << 16 | u32::from(o[2]) << 8 | u32::from(o[3]);
        assert!(o[0] == 127 && o[1] >= 1 && i < SYNS, "{a} was not sent");
    }
    assert!(
        incident["message"]
            .as_str()
            .unwrap()
            .contains(&format!("from about {distinct} distinct sources")),
        "{incident}"
    );
}

fn a_few_new_flows_at_a_calm_pace_stay_per_flow() {
    const PORT: u16 = 7072;
    const SYNS: u32 = 20;
    let mut d = Daemon::json();
    let ns = Netns::new();
    // 20 in 400 ms: under the churn limit of 50 new flows per 100 ms.
    let rsts = spoofed_syns(&ns, PORT, SYNS, Duration::from_millis(20));
    assert_eq!(rsts, u64::from(SYNS));
    settle(&mut d, 1);
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(10), |_| true);
    let (written, repeats) = resets_sent(&all, PORT);
    assert_eq!(written.len() as u64 + repeats, rsts);
    let summary = all.iter().find(|v| v["kind"] == "summary").unwrap();
    assert_eq!(summary["evidence"]["per_service_records"], 0, "{summary}");
    assert_eq!(summary["evidence"]["per_peer_records"], 0, "{summary}");
    // Each crossed on its own, naming its flow in full.
    for v in all.iter().filter(|v| v["sport"] == PORT) {
        assert!(
            v["evidence"].get("per_service").is_none()
                && v["evidence"].get("distinct_sources").is_none()
                && v["evidence"].get("sources").is_none(),
            "per-service folding of a calm trickle: {v}"
        );
        if v["kind"] != "incident" {
            assert!(v["daddr"].as_str().unwrap().starts_with("127.1."), "{v}");
        }
    }
}
