//! A conntrack table at its limit. `nf_conntrack_max` is one global value
//! (read-only inside namespaces), so this test lowers it only inside the
//! kernel matrix's throwaway VMs (NETPROBE_GUEST=1); on a host it says why
//! it is ignored (with that reason). In a namespace where an nftables rule makes conntrack
//! track, TCP connections fill the table; the next SYN is dropped for want
//! of an entry, and netprobe must say so from the namespace's conntrack
//! counters.

use std::{net::TcpListener, time::Duration};

use netprobe_tests::{nft, require_root, socket2_free as sock, Daemon, Netns, Resident};

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

#[test]
#[ignore = "lowers the global nf_conntrack_max: runs only in the kernel matrix's VMs"]
fn conntrack_table_full() {
    if !require_root("conntrack_table_full") {
        return;
    }
    assert!(
        std::env::var_os("NETPROBE_GUEST").is_some(),
        "refusing to lower this host's global nf_conntrack_max: this test runs in the kernel matrix's VMs (cargo xtask vm)"
    );
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (_resident, _keep) = ns.run(|| {
        let resident = Resident::here();
        nft("table inet netprobe_ct {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    ct state new accept\n  }\n}\n")
            .expect("nft: a rule that makes conntrack track");
        (resident, ())
    });
    let old = std::fs::read_to_string(MAX).expect("nf_conntrack is loaded in the guest");
    std::fs::write(MAX, "4").expect("lower nf_conntrack_max");
    let _keep = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let mut keep = Vec::new();
        let mut refused = 0;
        // Established connections are assured: early drop cannot evict them.
        for _ in 0..8 {
            let c = sock::tcp_v4();
            sock::set_nonblocking(&c);
            let _ = sock::connect(&c, at);
            if !sock::wait_connected(&c, 500) {
                refused += 1;
            }
            keep.push(c);
        }
        assert!(refused > 0, "every connection got a conntrack entry");
        (l, keep)
    });
    let full = d.wait_for("conntrack table full", Duration::from_secs(10), |v| {
        v["mode"] == "conntrack_table_full"
    });
    std::fs::write(MAX, old.trim()).expect("restore nf_conntrack_max");
    eprintln!("conntrack: {full}");
    assert_eq!(full["kind"], "conntrack");
    assert_eq!(full["family"], "queue_full");
    let e = &full["evidence"];
    assert!(e["drop"].as_u64().unwrap() >= 1, "{full}");
    assert_eq!(e["nf_conntrack_max"], 4, "{full}");
    assert!(full["netns"].as_u64().is_some());
    // The dropped SYN itself, as a netfilter drop.
    let drop = d.wait_for("the dropped SYN", Duration::from_secs(10), |v| {
        v["kind"] == "drop" && v["mode"] == "netfilter_drop" && v["tcp_flags"] == "SYN"
    });
    eprintln!("drop: {drop}");
    d.stop_cleanly();
}
