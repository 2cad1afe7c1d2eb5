//! Counters-only mode on a real kernel that refuses eBPF: the daemon runs
//! under a seccomp filter that makes `bpf()` fail with EPERM, so no probe
//! loads. It must say so, keep running, and still name what the procfs
//! counters show: a PAWS (old timestamp) rejection, an accept queue that
//! overflows and a receive buffer that overflows, each in a throwaway
//! namespace.

use std::{net::SocketAddr, time::Duration};

use netprobe_tests::{provoke, rawtcp, require_root, Daemon, Netns, Resident};

#[test]
fn without_bpf_counters_name_paws_accept_queue_and_receive_buffer() {
    if !require_root("without_bpf_counters_name_paws_accept_queue_and_receive_buffer") {
        return;
    }
    let mut d = Daemon::start_without_bpf(&["--output", "json"]);
    let ready = d.wait_ready_any();
    assert_eq!(ready["attached"], 0, "{ready}");
    assert!(ready["skipped"].as_u64().unwrap() > 0, "{ready}");
    for p in d.seen.iter().filter(|v| v["kind"] == "probe") {
        assert_eq!(p["status"], "skipped", "{p}");
    }
    let mode = d.wait_for("the counters-only notice", Duration::from_secs(5), |v| {
        v["kind"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("counters-only mode"))
    });
    eprintln!("{mode}");

    let ns = Netns::new();
    let inode = ns.inode();
    // A PAWS rejection: a segment whose timestamp is older than the one
    // the connection last saw.
    let (paws, listener, port, udp_port, udp_drops, _keep) = ns.run(|| {
        let resident = Resident::here();
        let paws = rawtcp::stale_timestamp().expect("a segment with an old timestamp");
        let (listener, port, resident2, fds) = provoke::accept_queue_overflow("127.0.0.1");
        let (udp_port, udp, udp_drops) = provoke::udp_receive_buffer_overflow();
        (
            paws,
            listener,
            port,
            udp_port,
            udp_drops,
            (resident, resident2, fds, udp),
        )
    });
    let server = SocketAddr::V4(paws.server);
    eprintln!(
        "PAWS on {server}, accept queue {listener}:{port}, UDP :{udp_port} ({udp_drops} drops)"
    );

    let counted =
        |v: &serde_json::Value| v["evidence"]["source"] == "counters" && v["netns"] == inode;
    let tw = d.wait_for("PAWS named from counters", Duration::from_secs(10), |v| {
        v["mode"] == "tw_recycle" && counted(v)
    });
    eprintln!("tw_recycle: {tw}");
    assert!(tw["evidence"]["PAWSEstab"].as_u64().unwrap() >= 1, "{tw}");
    assert!(tw["advice"].as_str().is_some_and(|a| !a.is_empty()), "{tw}");

    let over = d.wait_for(
        "accept queue overflow named from counters",
        Duration::from_secs(10),
        |v| v["kind"] == "listen_overflow" && counted(v) && v["port"] == port,
    );
    eprintln!("listen_overflow: {over}");
    assert_eq!(over["mode"], "accept_queue_full", "{over}");
    assert_eq!(over["addr"], listener.as_str(), "{over}");
    assert!(
        over["evidence"]["ListenOverflows"].as_u64().unwrap() >= 1,
        "{over}"
    );
    assert_eq!(over["evidence"]["accept_queue_max"], 1, "{over}");

    let rcvbuf = d.wait_for(
        "receive buffer overflow named from counters",
        Duration::from_secs(10),
        |v| v["mode"] == "rcvbuf_full" && counted(v),
    );
    eprintln!("rcvbuf_full: {rcvbuf}");
    assert_eq!(rcvbuf["family"], "queue_full", "{rcvbuf}");
    assert_eq!(
        rcvbuf["evidence"]["UdpRcvbufErrors"].as_u64(),
        Some(udp_drops),
        "the kernel counted {udp_drops}: {rcvbuf}"
    );
    // No kernel event reached it: every record about a failure came from
    // counters.
    let housekeeping = ["probe", "ready", "error", "config", "summary", "lost"];
    let from_events: Vec<_> = d
        .seen
        .iter()
        .filter(|v| !housekeeping.contains(&v["kind"].as_str().unwrap_or("")))
        .filter(|v| v["evidence"]["source"] != "counters")
        .collect();
    assert!(
        from_events.is_empty(),
        "records from kernel events without eBPF: {from_events:?}"
    );
    d.stop_cleanly();
}
