//! Failures made to happen for real, shared by the tests that diagnose them
//! through probes and through counters alone. Each runs in the caller's
//! (throwaway) network namespace and keeps what must live on.

use std::{net::SocketAddr, os::fd::OwnedFd, time::Duration};

use crate::{socket2_free as sock, Resident};

/// The namespace's value of a `/proc/net/netstat` or `snmp` counter
/// (`TcpExt.ListenOverflows`, `Udp.RcvbufErrors`).
pub fn counter(name: &str) -> u64 {
    let mut text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    text.push_str(&std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default());
    netprobe::kernel::netns::parse_pairs(&text)
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no {name} in /proc/net/netstat or snmp"))
}

/// Waits (bounded) until `counter(name)` exceeds `than`; returns it.
fn counter_above(name: &str, than: u64, within: Duration) -> u64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = counter(name);
        if now > than || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An accept queue that overflows: a listener on `ip` with backlog 1 that
/// never accepts. With TCP_DEFER_ACCEPT the handshakes complete on the
/// clients' side while the server waits for data, so the accept queue
/// overflows when the data arrives (the handshake's last step is dropped);
/// a client connecting after that has its SYN dropped. Returns the
/// listener's address and port, a resident process (netprobe finds the
/// namespace through it) and what must stay open.
pub fn accept_queue_overflow(ip: &str) -> (String, u16, Resident, Vec<OwnedFd>) {
    let resident = Resident::here();
    let any: SocketAddr = format!("{ip}:0").parse().unwrap();
    let (l, at) = sock::deferred_listener(any, 1);
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut connected = 0;
    for _ in 0..4 {
        let c = sock::for_addr(&at, libc::SOCK_STREAM);
        sock::set_nonblocking(&c);
        let _ = sock::connect(&c, at);
        // Kernels differ in which of these handshakes complete (SYN
        // cookies, the accept queue at SYN time): send on those that did.
        if sock::wait_connected(&c, 1000) {
            connected += 1;
            keep.push(c);
        }
    }
    assert!(connected >= 3, "only {connected} of 4 clients connected");
    let before = counter("TcpExt.ListenOverflows");
    // Now the data: the deferred handshakes complete on the server and
    // overflow the accept queue.
    for c in &keep {
        let _ = sock::send(c, b"hello");
    }
    let after = counter_above("TcpExt.ListenOverflows", before, Duration::from_secs(2));
    assert!(after > before, "the accept queue did not overflow");
    let late = sock::for_addr(&at, libc::SOCK_STREAM);
    sock::set_nonblocking(&late);
    let _ = sock::connect(&late, at);
    keep.push(late);
    counter_above("TcpExt.ListenOverflows", after, Duration::from_secs(2));
    // The listener lives on (never accepting) while netprobe looks.
    keep.push(l);
    (at.ip().to_string(), at.port(), resident, keep)
}

/// A UDP socket with a 4 KiB receive buffer that is never read, sent 64
/// datagrams of 1000 bytes: those beyond the buffer are dropped. Returns
/// its port, the socket, and the kernel's own count of the drops
/// (`Udp.RcvbufErrors` of this new namespace).
pub fn udp_receive_buffer_overflow() -> (u16, OwnedFd, u64) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let r = sock::for_addr(&any, libc::SOCK_DGRAM);
    sock::set_int(&r, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
    sock::bind(&r, any);
    let at = sock::local_addr(&r);
    let s = sock::for_addr(&any, libc::SOCK_DGRAM);
    for _ in 0..64 {
        sock::send_to(&s, &[0u8; 1000], at).expect("sendto");
    }
    let drops = counter("Udp.RcvbufErrors");
    assert!(drops > 0, "no datagram was dropped");
    (at.port(), r, drops)
}
