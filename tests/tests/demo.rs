//! `netprobe demo`, as a newcomer runs it: every failure it provokes must
//! come back diagnosed, and the run ends with a report.

use std::process::Command;

use netprobe_tests::{cannot_show, netprobe_bin, require_root};

/// The scenario's block of the demo's output (from its header line to the
/// blank line after it).
fn block<'a>(out: &'a str, mode: &str) -> &'a str {
    let start = out
        .find(&format!("\n{mode}: "))
        .unwrap_or_else(|| panic!("no {mode} scenario in:\n{out}"));
    let rest = &out[start + 1..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

#[test]
fn demo_diagnoses_what_it_provokes() {
    if !require_root("demo_diagnoses_what_it_provokes") {
        return;
    }
    let out = Command::new(netprobe_bin())
        .arg("demo")
        .output()
        .expect("run netprobe demo");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exit status {}", out.status);
    for (mode, says) in [
        ("no_listener", "NO_SOCKET"),
        ("rcvbuf_full", "receive buffer"),
        ("accept_queue_full", "accept queue full"),
        ("syn_queue_full", "SYN queue full"),
        ("netfilter_drop", "by netfilter"),
        ("oom_stall", "the OOM killer chose pid"),
    ] {
        let b = block(&text, mode);
        assert!(
            b.contains("\n  netprobe: ") && b.contains("\n  advice: "),
            "{mode} not diagnosed:\n{b}"
        );
        // No reasons before 5.17: the closed port is named by the reset
        // kprobe ("no socket").
        assert!(
            b.contains(says) || (mode == "no_listener" && b.contains("no socket")),
            "{b}"
        );
    }
    // Named by their drop reasons (5.17+); before, the PAWS drop is freed
    // inside TCP and the qdisc's through kfree_skb_list.
    let mut unseen = Vec::new();
    for (mode, says) in [
        ("tw_recycle", "its TCP timestamp is older"),
        ("qdisc_full", "transmit queue (qdisc)"),
    ] {
        let b = block(&text, mode);
        if b.contains("not seen on this kernel") {
            unseen.push(mode);
        } else {
            assert!(b.contains(says), "{b}");
        }
    }
    if !unseen.is_empty() {
        cannot_show(
            "demo_diagnoses_what_it_provokes",
            &format!(
                "{}: no drop reasons before 5.17 (the other scenarios were diagnosed)",
                unseen.join(", ")
            ),
        );
    }
    assert!(text.contains("\nnetprobe report: "), "{text}");
    assert!(text.contains("\nrcvbuf_full: "), "{text}");
    assert!(
        text.contains("\ntimeline (events per hour, UTC):\n"),
        "{text}"
    );
}
