//! Full queues, made to happen in throwaway network namespaces: a listener
//! whose accept queue overflows, a SYN queue, a UDP socket nobody reads, a
//! TCP receiver that never reads, and a device queue (qdisc) that overflows.

use std::{net::SocketAddr, thread, time::Duration};

use netprobe_tests::{
    cannot_show, check_unless, kernel, provoke, require_root, run_ok, socket2_free as sock, Daemon,
    Netns, Resident,
};
use serde_json::Value;

/// A listener with backlog 1 that never accepts. With TCP_DEFER_ACCEPT the
/// handshakes complete on the clients' side while the server waits for
/// data, so the accept queue overflows when the data arrives: the kernel
/// drops it (the handshake's last step; reason TCP_LISTEN_OVERFLOW on 2025
/// kernels, the syn_recv_sock kprobe elsewhere). A client connecting after
/// that has its SYN dropped (the conn_request kprobe; no tracepoint shows
/// it).
fn accept_queue(test: &str, ip: &'static str) {
    let mut d = Daemon::json();
    // The SYN dropped at a full accept queue shows only through the
    // conn_request kprobe.
    let syn_stage = kernel::lacks_kprobe_on("tcp_conn_request");
    d.assert_attached_unless("listen_overflow", &syn_stage);
    let ns = Netns::new();
    let (listener, port, _resident, _keep) = ns.run(move || provoke::accept_queue_overflow(ip));
    let over = d.wait_for("accept queue overflow", Duration::from_secs(10), |v| {
        v["mode"] == "accept_queue_full" && v["port"] == port
    });
    eprintln!("overflow: {over}");
    assert_eq!(over["kind"], "listen_overflow", "{over}");
    assert_eq!(over["family"], "queue_full");
    assert_eq!(over["addr"], listener.as_str(), "{over}");
    assert_eq!(over["evidence"]["accept_queue_max"], 1, "{over}");
    assert!(
        over["evidence"]["accept_queue"].as_u64().unwrap() >= 2,
        "{over}"
    );
    assert_eq!(
        over["dport"], port,
        "the dropped segment went to the listener"
    );
    let advice = over["advice"].as_str().unwrap();
    assert!(advice.contains("listen() backlog (1)") && advice.contains(&port.to_string()));
    check_unless(test, "the SYN dropped at the full queue", syn_stage, || {
        let syn = d.wait_for(
            "SYN dropped at a full accept queue",
            Duration::from_secs(10),
            |v| {
                v["kind"] == "listen_overflow"
                    && v["port"] == port
                    && v["evidence"]["stage"] == "SYN"
            },
        );
        eprintln!("SYN stage: {syn}");
        assert_eq!(syn["tcp_flags"], "SYN");
    });
    // Every kernel: the namespace's ListenOverflows counter moved, and
    // sock_diag names the listener whose queue is full.
    let counted = d.wait_for(
        "counted accept queue overflow",
        Duration::from_secs(10),
        |v| {
            v["kind"] == "listen_overflow"
                && v["evidence"]["source"] == "counters"
                && v["port"] == port
        },
    );
    eprintln!("counted: {counted}");
    assert!(counted["evidence"]["ListenOverflows"].as_u64().unwrap() >= 1);
    assert_eq!(counted["evidence"]["accept_queue_max"], 1);
    assert_eq!(counted["addr"], listener.as_str());
    assert!(counted["netns"].as_u64().is_some());
    d.stop_cleanly();
}

#[test]
fn accept_queue_full_ipv4() {
    if require_root("accept_queue_full_ipv4") {
        accept_queue("accept_queue_full_ipv4", "127.0.0.1");
    }
}

#[test]
fn accept_queue_full_ipv6() {
    if require_root("accept_queue_full_ipv6") {
        accept_queue("accept_queue_full_ipv6", "[::1]");
    }
}

/// A UDP socket with a small receive buffer that is never read: datagrams
/// beyond the buffer are dropped (SOCKET_RCVBUFF, or in udp_queue_rcv_one_skb
/// before 5.17).
#[test]
fn udp_receive_buffer_full() {
    const NAME: &str = "udp_receive_buffer_full";
    if !require_root(NAME) {
        return;
    }
    let mut d = Daemon::json_with_window(1);
    let ns = Netns::new();
    let (port, _keep, kernel_drops) = ns.run(provoke::udp_receive_buffer_overflow);
    let drop = d.wait_for("receive buffer drop", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && v["proto"] == "udp" && v["dport"] == port
    });
    eprintln!("drop: {drop}");
    assert_eq!(drop["family"], "queue_full", "{drop}");
    assert_eq!(drop["mode"], "rcvbuf_full", "{drop}");
    match kernel::lacks_drop_reasons() {
        None => assert_eq!(drop["reason"], "SOCKET_RCVBUFF", "{drop}"),
        // Before 5.17 the location names it (udp_queue_rcv_one_skb on
        // 5.10, where __udp_queue_rcv_skb is inlined).
        Some(_) => assert!(
            drop["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("udp_queue_rcv_one_skb+")
                    || l.starts_with("__udp_queue_rcv_skb+")),
            "{drop}"
        ),
    }
    assert!(drop["message"].as_str().unwrap().contains("receive buffer"));
    // The packet's namespace, read through its device (BTF offsets).
    assert_eq!(drop["netns"], ns.inode(), "{drop}");
    // 6.11+: the receiving socket comes with the drop (`rx_sk`).
    let rx_sk = kernel::format("skb:kfree_skb")
        .filter(|f| !kernel::format_has_field(f, "rx_sk"))
        .map(|_| {
            format!(
                "Linux {}'s skb:kfree_skb has no `rx_sk` field (6.11+)",
                kernel::release()
            )
        });
    check_unless(NAME, "the receiving socket's figures", rx_sk, || {
        assert_eq!(drop["port"], port);
        let e = &drop["evidence"];
        assert!(e["rcvbuf"].as_u64().unwrap() > 0, "{drop}");
        assert!(e["rmem_alloc"].as_u64().unwrap() > 0, "{drop}");
    });
    // The other datagrams that overflowed fold into one incident when the
    // 1 s window closes: its count, its span, the diagnosis and advice.
    let incident = d.wait_for("the incident", Duration::from_secs(10), |v| {
        v["kind"] == "incident" && v["proto"] == "udp" && v["dport"] == port
    });
    eprintln!("incident: {incident}");
    assert_eq!(incident["mode"], "rcvbuf_full", "{incident}");
    // The kind it folds, and a count that includes the first drop.
    assert_eq!(incident["event"], "drop", "{incident}");
    assert_eq!(incident["severity"], "warning", "{incident}");
    assert!(incident["count"].as_u64().unwrap() > 1, "{incident}");
    // Every drop counted: the first event and its repeats, whether their
    // records were built or only counted (identical drops).
    assert_eq!(
        incident["count"].as_u64(),
        Some(kernel_drops),
        "the kernel counted {kernel_drops} RcvbufErrors: {incident}"
    );
    assert_eq!(incident["first"], drop["ts"], "{incident}");
    assert!(incident["last"].as_str().unwrap() >= incident["first"].as_str().unwrap());
    assert!(
        incident["advice"].as_str().unwrap().contains("SO_RCVBUF"),
        "{incident}"
    );
    let written: Vec<Value> = d.collect(Duration::from_millis(300), |v| {
        v["kind"] == "drop" && v["dport"] == port
    });
    assert_eq!(
        written.len(),
        1,
        "repeats are folded, not written: {written:?}"
    );
    d.stop_cleanly();
}

/// A device queue that overflows: a token bucket (tbf) on the namespace's
/// loopback lets 8 kbit/s through and holds at most 3000 bytes, so a burst
/// of datagrams overflows it and the qdisc drops the rest before any socket
/// sees them.
#[test]
fn qdisc_full() {
    if !require_root("qdisc_full") {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (port, _keep) = ns.run(|| {
        run_ok(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8kbit", "burst", "1600",
                "limit", "3000",
            ],
        )
        .expect("a tbf qdisc on the namespace's loopback (iproute2's tc, sch_tbf)");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let r = sock::for_addr(&any, libc::SOCK_DGRAM);
        sock::bind(&r, any);
        let at = sock::local_addr(&r);
        let s = sock::for_addr(&any, libc::SOCK_DGRAM);
        for _ in 0..32 {
            // The qdisc's drops come back as ENOBUFS (or not at all).
            let _ = sock::send_to(&s, &[0u8; 1000], at);
        }
        (at.port(), r)
    });
    let drop = d.wait_for("qdisc drop", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && v["proto"] == "udp" && v["dport"] == port
    });
    eprintln!("drop: {drop}");
    if let Some(fact) = kernel::lacks_drop_reasons() {
        // Before 5.17 the qdisc's drops are freed through kfree_skb_list,
        // which other frees share: the location names nothing certain.
        assert!(!d.drop_reasons(), "netprobe claims drop reasons: {fact}");
        assert!(
            drop["location"]
                .as_str()
                .unwrap()
                .starts_with("kfree_skb_list"),
            "{drop}"
        );
        cannot_show(
            "qdisc_full",
            &format!(
                "the qdisc_full diagnosis not checked: {fact}, and the qdisc's drops are freed \
                 through kfree_skb_list, which other frees share (seen as drops with their \
                 flow, mode other)"
            ),
        );
        d.stop_cleanly();
        return;
    }
    assert_eq!(drop["family"], "queue_full", "{drop}");
    assert_eq!(drop["mode"], "qdisc_full", "{drop}");
    assert!(
        drop["reason"].as_str().unwrap().starts_with("QDISC"),
        "{drop}"
    );
    assert!(
        drop["message"].as_str().unwrap().contains("queue (qdisc)"),
        "{drop}"
    );
    d.stop_cleanly();
}

/// A listener whose SYN queue fills: TCP_DEFER_ACCEPT keeps completed
/// handshakes in the SYN queue, so with backlog 2 the third client's SYN
/// finds it full. With tcp_syncookies=0 in the namespace the SYN is dropped
/// (TCPReqQFullDrop); with 1 it is answered with a cookie
/// (TCPReqQFullDoCookies). No tracepoint shows either; netprobe names them
/// from the namespace's counters and finds the listener through sock_diag.
fn syn_queue(ip: &'static str, syncookies: u8) {
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (listener, port, _resident, _keep) = ns.run(move || {
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", syncookies.to_string())
            .expect("tcp_syncookies in the netns");
        // A process in the namespace, as a pod has, so netprobe finds it.
        let resident = Resident::here();
        let any: SocketAddr = format!("{ip}:0").parse().unwrap();
        let (l, at) = sock::deferred_listener(any, 2);
        let mut keep = vec![l];
        for _ in 0..4 {
            let c = sock::for_addr(&at, libc::SOCK_STREAM);
            sock::set_nonblocking(&c);
            let _ = sock::connect(&c, at);
            keep.push(c);
            thread::sleep(Duration::from_millis(50));
        }
        (at.ip().to_string(), at.port(), resident, keep)
    });
    let r = d.wait_for("syn_queue_full", Duration::from_secs(10), |v| {
        v["kind"] == "syn_queue_full" && v["port"] == port
    });
    eprintln!("syn_queue_full: {r}");
    assert_eq!(r["mode"], "syn_queue_full");
    assert_eq!(r["family"], "queue_full");
    assert_eq!(r["addr"], listener.as_str());
    let e = &r["evidence"];
    let counter = if syncookies == 0 {
        "TCPReqQFullDrop"
    } else {
        "TCPReqQFullDoCookies"
    };
    assert!(e[counter].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(e["tcp_syncookies"], syncookies, "{r}");
    assert_eq!(e["syn_queue_max"], 2, "{r}");
    assert!(e["syn_queue"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(e["source"], "counters");
    assert!(r["netns"].as_u64().is_some());
    let message = r["message"].as_str().unwrap();
    if syncookies == 0 {
        assert!(
            message.contains("dropped") && message.contains("(tcp_syncookies=0)"),
            "{r}"
        );
    } else {
        assert!(message.contains("answered with SYN cookies"), "{r}");
    }
    d.stop_cleanly();
}

#[test]
fn syn_queue_full_without_syncookies() {
    if require_root("syn_queue_full_without_syncookies") {
        syn_queue("127.0.0.1", 0);
    }
}

#[test]
fn syn_queue_full_without_syncookies_ipv6() {
    if require_root("syn_queue_full_without_syncookies_ipv6") {
        syn_queue("[::1]", 0);
    }
}

#[test]
fn syn_queue_full_with_syncookies() {
    if require_root("syn_queue_full_with_syncookies") {
        syn_queue("127.0.0.1", 1);
    }
}

/// A TCP receiver that never reads and shrinks its receive buffer after the
/// handshake (below the window it already advertised), and a sender of many
/// one-byte segments: their overhead fills the buffer before the window
/// closes, and the kernel drops data (TCPRcvQDrop; a drop with a reason on
/// 5.17+, inside the inlined tcp_drop on 5.10).
#[test]
fn tcp_receiver_never_reads() {
    const NAME: &str = "tcp_receiver_never_reads";
    if !require_root(NAME) {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (port, _resident, _keep) = ns.run(|| {
        let resident = Resident::here();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = sock::for_addr(&any, libc::SOCK_STREAM);
        sock::bind(&l, any);
        sock::listen(&l, 4);
        let at = sock::local_addr(&l);
        let c = sock::for_addr(&at, libc::SOCK_STREAM);
        sock::set_int(&c, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        sock::connect(&c, at).expect("connect");
        let r = sock::accept(&l);
        sock::set_int(&r, libc::SOL_SOCKET, libc::SO_RCVBUF, 1024);
        sock::set_nonblocking(&c);
        // One-byte writes until the namespace's TCPRcvQDrop counter moves
        // (bounded: three seconds).
        let rcvq_drops = || provoke::counter("TcpExt.TCPRcvQDrop");
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut sent = 0u64;
        while rcvq_drops() == 0 && std::time::Instant::now() < until {
            for _ in 0..64 {
                match sock::send(&c, b"x") {
                    Ok(_) => sent += 1,
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        assert!(
            rcvq_drops() > 0,
            "no TCPRcvQDrop after {sent} one-byte writes"
        );
        (at.port(), resident, (l, c, r))
    });
    let counted = d.wait_for("TCPRcvQDrop", Duration::from_secs(10), |v| {
        v["mode"] == "rcvbuf_full"
            && v["evidence"]["source"] == "counters"
            && v["evidence"]["TCPRcvQDrop"].as_u64().is_some()
    });
    eprintln!("counted: {counted}");
    assert_eq!(counted["family"], "queue_full");
    let excuse = kernel::lacks_tcp_drop_visibility();
    check_unless(NAME, "the receive-queue drop record", excuse, || {
        let drop = d.wait_for("receive queue drop", Duration::from_secs(10), |v| {
            v["kind"] == "drop" && v["mode"] == "rcvbuf_full" && v["dport"] == port
        });
        eprintln!("drop: {drop}");
        assert_eq!(drop["proto"], "tcp");
    });
    d.stop_cleanly();
}

/// The same listener overflowing sample after sample: its counter records
/// fold into one incident, whose count is the samples folded and whose
/// ListenOverflows is their sum, the namespace's whole count.
#[test]
fn counter_records_of_one_listener_fold_into_one_incident() {
    if !require_root("counter_records_of_one_listener_fold_into_one_incident") {
        return;
    }
    let mut d = Daemon::json_with_window(30);
    let ns = Netns::new();
    let (port, total, _keep) = ns.run(|| {
        let resident = Resident::here();
        let (l, at) = sock::deferred_listener("127.0.0.1:0".parse().unwrap(), 1);
        let mut keep = vec![l];
        // Three rounds, each in a sample of its own (the counters are read
        // once a second): clients whose data overflows the queue again.
        for round in 0..3 {
            let before = provoke::counter("TcpExt.ListenOverflows");
            for _ in 0..3 {
                let c = sock::for_addr(&at, libc::SOCK_STREAM);
                sock::set_nonblocking(&c);
                let _ = sock::connect(&c, at);
                if sock::wait_connected(&c, 1000) {
                    let _ = sock::send(&c, b"hello");
                }
                keep.push(c);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while provoke::counter("TcpExt.ListenOverflows") == before
                && std::time::Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(10));
            }
            assert!(
                provoke::counter("TcpExt.ListenOverflows") > before,
                "round {round}: no overflow"
            );
            thread::sleep(Duration::from_millis(1300));
        }
        (
            at.port(),
            provoke::counter("TcpExt.ListenOverflows"),
            (resident, keep),
        )
    });
    let counted = |v: &Value| {
        v["kind"] == "listen_overflow" && v["evidence"]["source"] == "counters" && v["port"] == port
    };
    d.wait_for("the first counter record", Duration::from_secs(10), counted);
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(5), |_| true);
    let written: Vec<&Value> = all.iter().filter(|v| counted(v)).collect();
    assert_eq!(written.len(), 1, "one record, the rest folded: {written:?}");
    // Kprobe events of the same listener fold apart from the counters'.
    let incident = all
        .iter()
        .find(|v| {
            v["kind"] == "incident"
                && v["event"] == "listen_overflow"
                && v["port"] == port
                && v["evidence"]["source"] == "counters"
        })
        .unwrap_or_else(|| panic!("no incident of the listener's counters: {all:?}"));
    eprintln!("first: {}\nincident: {incident}", written[0]);
    assert!(incident["count"].as_u64().unwrap() >= 2, "{incident}");
    // The deltas summed: more than the first sample's, and no more than
    // the namespace counted in all (the first sample may start after the
    // first overflows, and the last ones may come after the last sample).
    let summed = incident["evidence"]["ListenOverflows"].as_u64().unwrap();
    let first = written[0]["evidence"]["ListenOverflows"].as_u64().unwrap();
    assert!(
        summed > first && summed <= total,
        "first {first}, summed {summed}, the namespace counted {total}"
    );
}
