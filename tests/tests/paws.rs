//! Timestamp rejection (PAWS), the mechanism behind the tw_recycle/NAT
//! incident: on an established connection in a throwaway namespace, a
//! segment is forged with the client's addresses and sequence numbers but a
//! TCP timestamp older than the one the server last saw. The kernel drops
//! it; netprobe must name it `tw_recycle`, with the flow (from the drop
//! reason, 5.17+) and from the namespace's PAWSEstab counter (every kernel).

use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use netprobe_tests::{
    has_flow, rawtcp, require_root, socket2_free as sock, Daemon, Netns, Resident,
};

#[test]
fn old_timestamp_is_rejected_as_paws() {
    if !require_root("old_timestamp_is_rejected_as_paws") {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let (client, server, stale, _resident, _keep) = ns.run(|| {
        let resident = Resident::here();
        let sniff = rawtcp::Sniffer::on_loopback();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = match l.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let c = sock::tcp_v4();
        sock::bind(&c, "127.0.0.2:0".parse().unwrap());
        sock::connect(&c, SocketAddr::V4(server)).expect("connect");
        let client = match sock::local_addr(&c) {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let (mut s, _) = l.accept().unwrap();
        // One real data segment, so the server's remembered timestamp is the
        // client's latest, and we learn the sequence numbers from it.
        sock::send(&c, b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        let seen = sniff
            .wait(Duration::from_secs(2), |g| {
                g.src == client && g.dst == server && g.flags & 0x08 != 0
            })
            .expect("the client's data segment on lo");
        let (tsval, tsecr) = seen.ts.expect("timestamps are on (tcp_timestamps=1)");
        let forged = rawtcp::forge(
            client,
            server,
            seen.seq.wrapping_add(5),
            seen.ack,
            (tsval.wrapping_sub(100_000), tsecr),
            b"stale",
        );
        rawtcp::inject(&forged, *server.ip()).expect("inject the forged segment");
        std::thread::sleep(Duration::from_millis(200));
        (
            SocketAddr::V4(client),
            SocketAddr::V4(server),
            tsval.wrapping_sub(100_000),
            resident,
            (l, c, s),
        )
    });
    let reasons = d.drop_reasons();
    if reasons {
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
    } else {
        eprintln!("paws: this kernel gives no drop reasons and frees PAWS drops in tcp_drop (inlined): counters only");
    }
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
