//! Resets from closed ports: the simplest failure, end to end through the
//! kernel. A connection to a port nobody listens on, in a throwaway network
//! namespace, must yield a `reset_sent` record and a `drop` record with reason
//! NO_SOCKET, mode `no_listener`, and the right 4-tuple.

use std::time::Duration;

use netprobe_tests::{connect_to_closed_port, has_flow, require_root, Daemon, Netns};

fn closed_port(client_ip: &'static str, server_ip: &'static str) {
    let mut d = Daemon::start(&["--output", "json"], &[]);
    let took = d.wait_ready();
    eprintln!("netprobe ready {took:?} after exec");
    for p in d.seen.iter().filter(|v| v["kind"] == "probe") {
        eprintln!("probe: {p}");
    }
    let ns = Netns::new();
    let (client, server) = ns.run(move || connect_to_closed_port(client_ip, server_ip));

    let rst = d.wait_for("reset_sent", Duration::from_secs(10), |v| {
        v["kind"] == "reset_sent" && has_flow(v, &server, &client)
    });
    assert_eq!(rst["proto"], "tcp");
    assert_eq!(rst["family"], "reset");
    if rst.get("reason").is_some() {
        // Kernels from 6.10 say why the RST was sent.
        assert_eq!(rst["reason"], "NO_SOCKET");
        assert_eq!(rst["mode"], "no_listener");
    }
    let drop = d.wait_for("drop NO_SOCKET", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && has_flow(v, &client, &server)
    });
    // Before 5.17 kernels give no reason; the matrix covers those through
    // the drop location (issue 3). This host must name it.
    assert_eq!(drop["reason"], "NO_SOCKET", "{drop}");
    assert_eq!(drop["family"], "reset");
    assert_eq!(drop["mode"], "no_listener");
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
    let st = d.stop_with(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
}

#[test]
fn closed_port_ipv4() {
    if require_root("closed_port_ipv4") {
        closed_port("127.0.0.2", "127.0.0.1");
    }
}

#[test]
fn closed_port_ipv6() {
    if require_root("closed_port_ipv6") {
        closed_port("::1", "::1");
    }
}
