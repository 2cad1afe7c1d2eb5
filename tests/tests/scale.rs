//! A crowded node: more network namespaces than one sampling round reads
//! within its budget. netprobe samples them in turn (the ones waiting
//! longest first) and says how often each comes round; a counter's rise in
//! one of them is reported when its turn comes, as the delta since its last
//! sample: late, never lost.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netprobe_tests::{rawtcp, require_root, Daemon, Netns, Resident};

/// Empty namespaces bound under /run/netns (`ip netns add`, as runtimes
/// bind their pods'), removed on drop.
struct Crowd(Vec<String>);

fn ip_batch(lines: &[String]) {
    let mut ip = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip (iproute2)");
    ip.stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success(), "ip -batch failed");
}

impl Crowd {
    fn new(n: usize) -> Crowd {
        let names: Vec<String> = (0..n)
            .map(|i| format!("netprobe-test-{}-crowd-{i}", std::process::id()))
            .collect();
        let crowd = Crowd(names);
        ip_batch(
            &crowd
                .0
                .iter()
                .map(|n| format!("netns add {n}"))
                .collect::<Vec<_>>(),
        );
        crowd
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        ip_batch(
            &self
                .0
                .iter()
                .map(|n| format!("netns del {n}"))
                .collect::<Vec<_>>(),
        );
    }
}

/// "N network namespaces: M sampled a second within B ms, so each every C
/// s or so": C.
fn cycle_of(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("so each every ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_crowded_node_samples_namespaces_in_turn_and_loses_no_rise() {
    if !require_root("a_crowded_node_samples_namespaces_in_turn_and_loses_no_rise") {
        return;
    }
    // The namespace of the failure is there from the start, like the
    // crowd: its turn comes with theirs, not first as a new one's would.
    let ns = Netns::new();
    let inode = ns.inode();
    let _resident = ns.run(Resident::here);
    let crowd = Crowd::new(200);
    let mut d = Daemon::json();
    // A round cannot read them all, and netprobe says how often each
    // comes round (bounded wait: the line comes with the first such round).
    let deadline = Instant::now() + Duration::from_secs(60);
    let cycle = loop {
        if let Some(c) = d.stderr_lines().iter().find_map(|l| cycle_of(l)) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no word of a sampling cycle with {} namespaces; stderr: {:?}",
            crowd.0.len(),
            d.stderr_lines()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("each namespace sampled every {cycle} s or so");
    assert!(cycle >= 2, "{cycle}: every namespace read every round");
    // A PAWS rejection (a segment with an old timestamp) in that namespace:
    // its counter rises once, and netprobe reports it from counters when
    // the namespace's turn comes.
    let stale = ns.run(|| rawtcp::stale_timestamp().expect("a segment with an old timestamp"));
    let seen = Instant::now();
    let wait = Duration::from_secs(2 * cycle + 10);
    let tw = d.wait_for("PAWS named from counters, in turn", wait, |v| {
        v["mode"] == "tw_recycle" && v["evidence"]["source"] == "counters" && v["netns"] == inode
    });
    eprintln!(
        "after {:.1} s: {tw} (server {})",
        seen.elapsed().as_secs_f64(),
        stale.server
    );
    assert!(tw["evidence"]["PAWSEstab"].as_u64().unwrap() >= 1, "{tw}");
    drop(crowd);
}

#[test]
fn cycle_lines_parse() {
    assert_eq!(
        cycle_of(
            "2026-12-01T07:10:42Z  INFO netprobe::pipeline::counters: 1001 network namespaces: \
             116 sampled a second within 8 ms, so each every 9 s or so (counter rises ...)"
        ),
        Some(9)
    );
    assert_eq!(cycle_of("ready"), None);
}
