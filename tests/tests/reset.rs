//! Resets from closed ports: the simplest failure, end to end through the
//! kernel. A connection to a port nobody listens on, in a throwaway network
//! namespace, must yield a `reset_sent` record and a `drop` record with mode
//! `no_listener` and the right 4-tuple, through whichever hook the running
//! kernel offers (the tracepoint's reason from 6.10, the reset kprobe
//! before; the drop reason from 5.17, the kprobe's mark before).

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    time::Duration,
};

use netprobe_tests::{
    check_unless, connect_to_closed_port, has_flow, kernel, require_root, Daemon, Netns,
};

fn closed_port(test: &str, client_ip: &'static str, server_ip: &'static str) {
    let mut d = Daemon::start(&["--output", "json"], &[]);
    let took = d.wait_ready();
    eprintln!("netprobe ready {took:?} after exec");
    for p in d.seen.iter().filter(|v| v["kind"] == "probe") {
        eprintln!("probe: {p}");
    }
    let reasons = kernel::lacks_drop_reasons().is_none();
    assert_eq!(
        d.drop_reasons(),
        reasons,
        "netprobe and kfree_skb's format disagree"
    );
    let ns = Netns::new();
    let (client, server) = ns.run(move || connect_to_closed_port(client_ip, server_ip));

    let rst = d.wait_for("reset_sent", Duration::from_secs(10), |v| {
        v["kind"] == "reset_sent" && has_flow(v, &server, &client)
    });
    eprintln!("reset_sent: {rst}");
    assert_eq!(rst["proto"], "tcp");
    assert_eq!(rst["family"], "reset");
    assert_eq!(rst["mode"], "no_listener", "{rst}");
    let reset_reasons = kernel::format("tcp:tcp_send_reset")
        .is_some_and(|f| kernel::format_has_field(&f, "reason"));
    if reset_reasons {
        // Kernels from 6.10 say why the RST was sent.
        assert_eq!(rst["reason"], "NO_SOCKET", "{rst}");
    } else {
        // Before 6.10, the kprobe on tcp_v{4,6}_send_reset saw no socket.
        assert!(
            d.probe("reset_sent")["hook"]
                .as_str()
                .unwrap()
                .contains("kprobe tcp_v"),
            "{rst}"
        );
        assert!(rst["message"].as_str().unwrap().contains("(no socket)"));
    }
    let drop = d.wait_for("drop of the SYN", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && has_flow(v, &client, &server)
    });
    eprintln!("drop: {drop}");
    if reasons {
        assert_eq!(drop["reason"], "NO_SOCKET", "{drop}");
    } else {
        // 5.10: no reason; the reset kprobe marked this very skb.
        assert!(drop.get("reason").is_none(), "{drop}");
        assert!(drop["message"]
            .as_str()
            .unwrap()
            .contains("no socket: the kernel answered it with a RST"));
    }
    assert_eq!(drop["family"], "reset");
    assert_eq!(drop["mode"], "no_listener", "{drop}");
    assert_eq!(drop["proto"], "tcp");
    assert_eq!(drop["tcp_flags"], "SYN");
    assert!(
        drop["location"].as_str().unwrap().starts_with("tcp_v"),
        "{drop}"
    );
    assert!(drop["message"]
        .as_str()
        .unwrap()
        .contains(&server.port().to_string()));
    assert!(drop["advice"].as_str().is_some_and(|a| !a.is_empty()));
    // The client's side: the RST answered its SYN, so the connection was
    // refused because nothing listens.
    let refused = d.wait_for("reset_received", Duration::from_secs(10), |v| {
        v["kind"] == "reset_received" && has_flow(v, &server, &client)
    });
    assert_eq!(refused["state"], "SYN_SENT", "{refused}");
    assert_eq!(refused["mode"], "no_listener", "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
    // Every record of it names the namespace it happened in: the packet's
    // device's (drop), the socket's (resets), the flow's (socket error).
    let inode = ns.inode();
    for r in [&rst, &drop, &refused] {
        assert_eq!(r["netns"], inode, "{r}");
    }
    // The application's ECONNREFUSED: a closed port too, not `other`.
    let no_errors = kernel::lacks_tracepoint("sock:inet_sk_error_report");
    d.assert_attached_unless("socket_error", &no_errors);
    check_unless(test, "the ECONNREFUSED record", no_errors, || {
        let err = d.wait_for("ECONNREFUSED", Duration::from_secs(10), |v| {
            v["kind"] == "socket_error" && has_flow(v, &client, &server)
        });
        assert_eq!(err["reason"], "ECONNREFUSED", "{err}");
        assert_eq!(err["mode"], "no_listener", "{err}");
        assert_eq!(err["netns"], inode, "{err}");
    });
    d.stop_cleanly();
}

#[test]
fn closed_port_ipv4() {
    if require_root("closed_port_ipv4") {
        closed_port("closed_port_ipv4", "127.0.0.2", "127.0.0.1");
    }
}

#[test]
fn closed_port_ipv6() {
    if require_root("closed_port_ipv6") {
        closed_port("closed_port_ipv6", "::1", "::1");
    }
}

/// A kernel without BTF (simulated by pointing netprobe at a missing BTF
/// file): the tracepoint probes still attach, each says what it lost, and
/// the reset records still name the flow from the tracepoint's own fields.
#[test]
fn without_btf_tracepoints_still_run() {
    if !require_root("without_btf_tracepoints_still_run") {
        return;
    }
    let mut d = Daemon::start(
        &["--output", "json"],
        &[("NETPROBE_KERNEL_BTF", "/nonexistent/vmlinux")],
    );
    d.wait_ready();
    for name in ["drop", "reset_sent", "reset_received"] {
        let p = d.probe(name);
        eprintln!("probe: {p}");
        assert_eq!(p["status"], "attached", "{p}");
        assert!(
            p["hook"].as_str().unwrap().starts_with("tracepoint "),
            "{p}"
        );
    }
    let drop = d.probe("drop")["detail"].as_str().unwrap().to_string();
    assert!(drop.contains("flows unknown") && drop.contains("/nonexistent/vmlinux"));
    let rcv = d.probe("reset_received")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rcv.contains("socket state unknown"), "{rcv}");
    let ns = Netns::new();
    let (client, server) = ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"));
    let refused = d.wait_for("reset_received", Duration::from_secs(10), |v| {
        v["kind"] == "reset_received" && has_flow(v, &server, &client)
    });
    // Without the socket's state a refusal cannot be told from a reset.
    assert_eq!(refused["mode"], "reset_other", "{refused}");
    d.stop_cleanly();
}

/// An application closes a connection with unread data: the kernel aborts
/// it with a RST from a full socket (tcp_send_active_reset). On kernels
/// where the reset kprobes run beside the tracepoint (before 6.10), the
/// tracepoint must still report it, and exactly once.
#[test]
fn close_with_unread_data_is_one_reset() {
    if !require_root("close_with_unread_data_is_one_reset") {
        return;
    }
    let mut d = Daemon::json_with_window(1);
    let ns = Netns::new();
    let (client, server) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"never read").unwrap();
        // The data has arrived (peek waits for it, reading nothing) before
        // the server closes without reading it.
        s.peek(&mut [0u8; 1]).unwrap();
        drop(s);
        (c.local_addr().unwrap(), l.local_addr().unwrap())
    });
    let rst = d.wait_for("reset_sent", Duration::from_secs(10), |v| {
        v["kind"] == "reset_sent" && has_flow(v, &server, &client)
    });
    eprintln!("reset_sent: {rst}");
    assert_eq!(rst["mode"], "reset_other", "{rst}");
    // A second report of the RST would fold into an incident, which the
    // stop writes out: there must be none.
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(5), |v| {
        (v["kind"] == "reset_sent" || v["kind"] == "incident") && has_flow(v, &server, &client)
    });
    assert_eq!(all.len(), 1, "the RST was reported more than once: {all:?}");
}
