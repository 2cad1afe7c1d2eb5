//! A firewall rule that drops: an nftables rule in a throwaway namespace
//! drops SYNs to a listening port, and netprobe must name a netfilter drop
//! with the flow (reason NETFILTER_DROP from 5.17, the drop location
//! nf_hook_slow before).

use std::{
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use netprobe_tests::{has_flow, kernel, nft, require_root, socket2_free as sock, Daemon, Netns};

fn nftables_drop(client_ip: &'static str, server_ip: &'static str) {
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (client, server, _keep) = ns.run(move || {
        let l = TcpListener::bind(format!("{server_ip}:0")).unwrap();
        let server = l.local_addr().unwrap();
        nft(&format!(
            "table inet netprobe_test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {} drop\n  }}\n}}\n",
            server.port()
        ))
        .expect("install the drop rule");
        let c = sock::for_addr(&server, libc::SOCK_STREAM);
        sock::bind(&c, format!("{client_ip}:0").parse::<SocketAddr>().unwrap());
        sock::set_nonblocking(&c);
        let _ = sock::connect(&c, server);
        // Without the rule, loopback would connect at once; the dropped
        // SYN's retransmission is a second away.
        assert!(!sock::wait_connected(&c, 200), "the SYN was not dropped");
        (sock::local_addr(&c), server, (l, c))
    });
    let drop = d.wait_for("netfilter drop", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && has_flow(v, &client, &server)
    });
    eprintln!("drop: {drop}");
    assert_eq!(drop["family"], "netfilter", "{drop}");
    assert_eq!(drop["mode"], "netfilter_drop", "{drop}");
    assert_eq!(drop["tcp_flags"], "SYN");
    match kernel::lacks_drop_reasons() {
        None => assert_eq!(drop["reason"], "NETFILTER_DROP", "{drop}"),
        Some(_) => assert!(
            drop["location"]
                .as_str()
                .unwrap()
                .starts_with("nf_hook_slow"),
            "{drop}"
        ),
    }
    assert!(drop["advice"]
        .as_str()
        .unwrap()
        .contains("nft list ruleset"));
    d.stop_cleanly();
}

#[test]
fn nftables_drop_rule() {
    if require_root("nftables_drop_rule") {
        nftables_drop("127.0.0.2", "127.0.0.1");
    }
}

#[test]
fn nftables_drop_rule_ipv6() {
    if require_root("nftables_drop_rule_ipv6") {
        nftables_drop("[::1]", "[::1]");
    }
}
