//! `netprobe demo`, as a newcomer runs it: every failure it provokes must
//! come back diagnosed, and the run ends with a report.

use std::process::Command;

use netprobe_tests::{cannot_show, kernel, netprobe_bin, require_root};

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
        ("oom_kill", "the OOM killer chose pid"),
    ] {
        let b = block(&text, mode);
        assert!(
            b.contains("\n  netprobe: ") && b.contains("\n  advice: "),
            "{mode} not diagnosed:\n{b}"
        );
        // Before 6.10 a RST has no reason: the reset kprobe names the closed
        // port ("no socket"), and its record may come first.
        let resets_without_reason = kernel::format("tcp:tcp_send_reset")
            .is_none_or(|f| !kernel::format_has_field(&f, "reason"));
        assert!(
            b.contains(says)
                || (mode == "no_listener" && resets_without_reason && b.contains("(no socket)")),
            "{b}"
        );
    }
    // Named by their drop reasons (before them, the PAWS drop is freed
    // inside TCP and the qdisc's through kfree_skb_list, where no probe of
    // the kernel tells them apart), and the unreachable host by the socket
    // error tracepoint (5.14+).
    let mut unseen = Vec::new();
    for (mode, says, excuse) in [
        (
            "unreachable",
            "the host is unreachable: a netfilter rule rejected",
            kernel::lacks_tracepoint("sock:inet_sk_error_report"),
        ),
        (
            "tw_recycle",
            "its TCP timestamp is older",
            kernel::lacks_drop_reason("TCP_RFC7323_PAWS"),
        ),
        (
            "qdisc_full",
            "transmit queue (qdisc)",
            kernel::lacks_drop_reason("QDISC_DROP"),
        ),
    ] {
        let b = block(&text, mode);
        match excuse {
            None => assert!(
                b.contains(says),
                "{mode} must be diagnosed on this kernel: {b}"
            ),
            Some(fact) => {
                assert!(b.contains("not seen on this kernel"), "{b}");
                unseen.push(format!("{mode} ({fact})"));
            }
        }
    }
    if !unseen.is_empty() {
        cannot_show(
            "demo_diagnoses_what_it_provokes",
            &format!(
                "not diagnosed as their mode: {} (the other scenarios were)",
                unseen.join("; ")
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
