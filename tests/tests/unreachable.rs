//! "No route to host", the symptom of seed 004, with its cause named:
//! - a netfilter REJECT rule answering a SYN with an ICMP host-unreachable:
//!   the rule's drop of the SYN, and the client's EHOSTUNREACH named
//!   `unreachable` with the rule as its cause;
//! - a neighbour that never answers, on a veth pair between two throwaway
//!   namespaces: the SYN dropped when ARP gives up (NEIGH_FAILED where the
//!   kernel names reasons), and the client's EHOSTUNREACH named
//!   `unreachable`, caused by the neighbour.

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use netprobe_tests::{
    check_unless, has_flow, kernel, nft, require_root, run_ok, socket2_free as sock, Daemon, Netns,
    Resident,
};
use serde_json::Value;

/// Connects from `client` to `server` and returns the error connect gave.
fn connect_error(client: SocketAddr, server: SocketAddr) -> (SocketAddr, std::io::Error) {
    let c = sock::for_addr(&server, libc::SOCK_STREAM);
    sock::bind(&c, client);
    let err = sock::connect(&c, server).expect_err("the connection must fail");
    (sock::local_addr(&c), err)
}

/// The client's socket error: `unreachable`, EHOSTUNREACH, with `cause`.
fn check_error(v: &Value, cause: &str) {
    assert_eq!(v["reason"], "EHOSTUNREACH", "{v}");
    assert_eq!(v["family"], "unreachable", "{v}");
    assert_eq!(v["mode"], "unreachable", "{v}");
    assert_eq!(v["evidence"]["cause"], cause, "{v}");
    assert!(
        v["advice"]
            .as_str()
            .is_some_and(|a| a.contains("ip route get")),
        "{v}"
    );
}

#[test]
fn a_reject_rule_makes_the_host_unreachable() {
    const NAME: &str = "a_reject_rule_makes_the_host_unreachable";
    if !require_root(NAME) {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (client, server, err) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        nft(&format!(
            "table ip netprobe_reject {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {} reject with icmp type host-unreachable\n  }}\n}}\n",
            server.port()
        ))
        .expect("the REJECT rule");
        let (client, err) = connect_error("127.0.0.2:0".parse().unwrap(), server);
        (client, server, err)
    });
    assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
    // The rule's drop of the SYN.
    let drop = d.wait_for("the rejected SYN", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && has_flow(v, &client, &server)
    });
    eprintln!("drop: {drop}");
    assert_eq!(drop["mode"], "netfilter_drop", "{drop}");
    assert_eq!(drop["tcp_flags"], "SYN", "{drop}");
    // The application's error, caused by the rule.
    let no_errors = kernel::lacks_tracepoint("sock:inet_sk_error_report");
    d.assert_attached_unless("socket_error", &no_errors);
    check_unless(NAME, "the EHOSTUNREACH record", no_errors, || {
        let e = d.wait_for("EHOSTUNREACH", Duration::from_secs(10), |v| {
            v["kind"] == "socket_error" && has_flow(v, &client, &server)
        });
        eprintln!("socket_error: {e}");
        check_error(&e, "netfilter_drop");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("a netfilter rule rejected its packets"),
            "{e}"
        );
    });
    d.stop_cleanly();
}

#[test]
fn a_neighbour_that_never_answers_makes_the_host_unreachable() {
    const NAME: &str = "a_neighbour_that_never_answers_makes_the_host_unreachable";
    if !require_root(NAME) {
        return;
    }
    let mut d = Daemon::json();
    let (a, b) = (Netns::new(), Netns::new());
    let peer = b.run(Resident::here);
    let peer_pid = peer.pid().to_string();
    let t = Instant::now();
    let (client, server, err, _keep) = a.run(move || {
        let resident = Resident::here();
        for args in [
            &[
                "link", "add", "npva", "type", "veth", "peer", "name", "npvb", "netns", &peer_pid,
            ][..],
            &["addr", "add", "10.98.0.1/24", "dev", "npva"],
            &["link", "set", "npva", "up"],
        ] {
            run_ok("ip", args).expect("a veth pair between the namespaces");
        }
        // Give up on the neighbour after one unanswered ARP request, 100 ms.
        for (knob, value) in [
            ("mcast_solicit", "1"),
            ("ucast_solicit", "0"),
            ("app_solicit", "0"),
            ("retrans_time_ms", "100"),
        ] {
            std::fs::write(format!("/proc/sys/net/ipv4/neigh/npva/{knob}"), value)
                .unwrap_or_else(|e| panic!("neigh {knob}: {e}"));
        }
        // 10.98.0.9 is on the link, and nobody has it.
        let server: SocketAddr = "10.98.0.9:8080".parse().unwrap();
        let (client, err) = connect_error("10.98.0.1:0".parse().unwrap(), server);
        (client, server, err, resident)
    });
    eprintln!("connect failed after {:?}: {err}", t.elapsed());
    assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
    drop(peer);
    // The SYN, dropped when the neighbour failed: named by its reason where
    // the kernel gives one.
    let reason = kernel::lacks_drop_reason("NEIGH_FAILED");
    let mut cause = "none_seen";
    check_unless(
        NAME,
        "the SYN dropped for the neighbour",
        reason.clone(),
        || {
            let drop = d.wait_for(
                "the SYN the neighbour never took",
                Duration::from_secs(10),
                |v| v["kind"] == "drop" && has_flow(v, &client, &server),
            );
            eprintln!("drop: {drop}");
            assert_eq!(drop["reason"], "NEIGH_FAILED", "{drop}");
            assert_eq!(drop["mode"], "unreachable", "{drop}");
        },
    );
    if reason.is_none() {
        cause = "unreachable";
    }
    let no_errors = kernel::lacks_tracepoint("sock:inet_sk_error_report");
    check_unless(NAME, "the EHOSTUNREACH record", no_errors, || {
        let e = d.wait_for("EHOSTUNREACH", Duration::from_secs(10), |v| {
            v["kind"] == "socket_error" && has_flow(v, &client, &server)
        });
        eprintln!("socket_error: {e}");
        check_error(&e, cause);
        if cause == "unreachable" {
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("the neighbour never answered (NEIGH_FAILED)"),
                "{e}"
            );
        }
    });
    d.stop_cleanly();
}
