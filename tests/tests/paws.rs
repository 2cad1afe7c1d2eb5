//! Timestamp rejection (PAWS), the mechanism behind the tw_recycle/NAT
//! incident: on an established connection in a throwaway namespace, a
//! segment is forged with the client's addresses and sequence numbers but a
//! TCP timestamp older than the one the server last saw. The kernel drops
//! it; netprobe must name it `tw_recycle`, with the flow (from the drop
//! reason, 5.17+) and from the namespace's PAWSEstab counter (every kernel).

use std::{net::SocketAddr, time::Duration};

use netprobe_tests::{
    check_unless, has_flow, kernel, rawtcp, require_root, Daemon, Netns, Resident,
};

#[test]
fn old_timestamp_is_rejected_as_paws() {
    const NAME: &str = "old_timestamp_is_rejected_as_paws";
    if !require_root(NAME) {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (paws, _resident) = ns.run(|| {
        let resident = Resident::here();
        let paws = rawtcp::stale_timestamp().expect("a segment with an old timestamp");
        (paws, resident)
    });
    let (client, server, stale) = (
        SocketAddr::V4(paws.client),
        SocketAddr::V4(paws.server),
        paws.tsval,
    );
    // The drop record needs the reason (6.0+): before it the segment is
    // freed inside TCP where no probe of this kernel sees it.
    let excuse = kernel::lacks_drop_reason("TCP_RFC7323_PAWS");
    assert_eq!(
        d.drop_reasons(),
        kernel::lacks_drop_reasons().is_none(),
        "netprobe's drop probe disagrees with the kernel's kfree_skb format on drop reasons"
    );
    check_unless(NAME, "the PAWS drop record", excuse, || {
        let drop = d.wait_for("PAWS drop", Duration::from_secs(10), |v| {
            v["kind"] == "drop" && has_flow(v, &client, &server)
        });
        eprintln!("drop: {drop}");
        assert!(
            drop["reason"]
                .as_str()
                .unwrap()
                .starts_with("TCP_RFC7323_PAWS"),
            "{drop}"
        );
        assert_eq!(drop["family"], "tw_recycle");
        assert_eq!(drop["mode"], "tw_recycle");
        assert!(drop["message"]
            .as_str()
            .unwrap()
            .contains("older than the connection's"));
        assert!(drop["advice"].as_str().unwrap().contains("NAT"));
        // The rejected segment's own timestamp, read from its TCP options,
        // and one clock behind its address.
        let e = &drop["evidence"];
        assert_eq!(e["tsval"], stale, "{drop}");
        assert_eq!(e["timestamp_clocks"], 1, "{drop}");
    });
    let counted = d.wait_for("PAWS counted", Duration::from_secs(10), |v| {
        v["mode"] == "tw_recycle" && v["evidence"]["source"] == "counters"
    });
    eprintln!("counted: {counted}");
    assert!(
        counted["evidence"]["PAWSEstab"].as_u64().unwrap() >= 1,
        "{counted}"
    );
    assert_eq!(counted["evidence"]["tcp_timestamps"], 1);
    assert!(counted["netns"].as_u64().is_some());
    d.stop_cleanly();
}
