//! A healthy workload makes no records. Short connections that close
//! cleanly are the commonest traffic there is; each destroyed socket frees
//! what its queues still hold (the last FIN) in `sk_stream_kill_queues`,
//! with drop reason QUEUE_PURGE from 6.4, which is not a failure and must
//! not be reported. Before 5.17 (no drop reasons) the drop program knows
//! the purge by its location (the function's addresses, from kallsyms).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use netprobe_tests::{connect_to_closed_port, patience, require_root, Daemon, Netns};

#[test]
fn clean_short_connections_make_no_records() {
    if !require_root("clean_short_connections_make_no_records") {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let port = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = l.local_addr().unwrap().port();
        // The server's thread is created in the namespace too.
        let server = thread::spawn(move || {
            for _ in 0..100 {
                let (mut c, _) = l.accept().expect("accept");
                let mut b = [0u8; 1];
                c.read_exact(&mut b).expect("request");
                c.write_all(b"y").expect("response");
            }
        });
        for _ in 0..100 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"x").expect("request");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("response and close");
            assert_eq!(rest, b"y");
        }
        server.join().unwrap();
        port
    });
    // The daemon sees this namespace: a refused connection is reported.
    let (_, closed) = ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"));
    d.wait_for(
        "the control's refused connection",
        patience(Duration::from_secs(10)),
        |v| v["kind"] == "drop" && v["dport"] == closed.port(),
    );
    let about: Vec<_> = d
        .collect(Duration::from_millis(500), |_| true)
        .into_iter()
        .filter(|v| {
            [&v["sport"], &v["dport"], &v["port"]]
                .iter()
                .any(|p| **p == port)
        })
        .collect();
    assert!(
        about.is_empty(),
        "100 clean connections to port {port} made records: {about:?}"
    );
    d.stop_cleanly();
}
