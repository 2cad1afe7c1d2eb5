//! Watching and forging TCP segments on loopback (IPv4), for failures that
//! need a segment no socket would send: one with an old TCP timestamp
//! (`netprobe demo` and the integration tests).

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// What a captured segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// TSval and TSecr, when the segment carries the timestamp option.
    pub ts: Option<(u32, u32)>,
}

/// Parses an IPv4 packet carrying TCP.
pub fn parse(p: &[u8]) -> Option<Segment> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = (p[0] & 0xf) as usize * 4;
    let t = p.get(ihl..)?;
    if t.len() < 20 {
        return None;
    }
    let doff = (t[12] >> 4) as usize * 4;
    let opts = t.get(20..doff)?;
    let mut ts = None;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 {
                    break;
                }
                if kind == 8 && len == 10 {
                    let o = opts.get(i + 2..i + 10)?;
                    ts = Some((
                        u32::from_be_bytes(o[..4].try_into().ok()?),
                        u32::from_be_bytes(o[4..].try_into().ok()?),
                    ));
                }
                i += len;
            }
        }
    }
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Some(Segment {
        src: SocketAddrV4::new(ip(&p[12..16]), u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddrV4::new(ip(&p[16..20]), u16::from_be_bytes([t[2], t[3]])),
        seq: u32::from_be_bytes(t[4..8].try_into().ok()?),
        ack: u32::from_be_bytes(t[8..12].try_into().ok()?),
        flags: t[13],
        ts,
    })
}

use netprobe_common::headers::checksum;
/// A SYN from any source: for the spoofed-source tests and storms.
pub use netprobe_common::headers::syn;

/// An IPv4 TCP segment (ACK|PSH with `payload`) carrying the timestamp
/// option `ts`, with correct checksums.
pub fn forge(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    ts: (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(32 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[8 << 4, 0x18]); // 32-byte header; ACK|PSH
    tcp.extend_from_slice(&1024u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    tcp.extend_from_slice(&[1, 1, 8, 10]);
    tcp.extend_from_slice(&ts.0.to_be_bytes());
    tcp.extend_from_slice(&ts.1.to_be_bytes());
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let c = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let total = 20 + tcp.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    [ip, tcp].concat()
}

/// A packet socket on `lo` of the caller's namespace (IPv4 packets).
pub struct Sniffer(OwnedFd);

impl Sniffer {
    pub fn on_loopback() -> io::Result<Sniffer> {
        let proto = (libc::ETH_P_IP as u16).to_be() as i32;
        // SAFETY: socket(2); owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if fd < 0 {
            return Err(io::Error::other(format!(
                "packet socket: {}",
                io::Error::last_os_error()
            )));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        // SAFETY: a zeroed sockaddr_ll with family, protocol, ifindex.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::other(format!(
                "bind packet socket: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Sniffer(fd))
    }

    /// The first segment matching `pred` within `timeout`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Segment) -> bool) -> Option<Segment> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd; then a recv into our buffer.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } != 1 {
                return None;
            }
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return None;
            }
            if let Some(s) = parse(&buf[..n as usize]).filter(|s| pred(s)) {
                return Some(s);
            }
        }
        None
    }
}

pub use netprobe_common::inject::Injector;

/// Sends a whole IPv4 packet through a new raw socket.
pub fn inject(packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
    Injector::new()?.send(packet, dst)
}

/// A connection on loopback (127.0.0.2 -> 127.0.0.1) whose server has just
/// received a forged segment carrying a TCP timestamp 100 000 ticks older
/// than the client's last: the kernel rejects it (PAWS). Run inside a
/// namespace; keep `keep` until netprobe has seen it.
pub struct StaleTimestamp {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    /// The forged segment's TSval.
    pub tsval: u32,
    pub keep: Vec<Box<dyn Send>>,
}

pub fn stale_timestamp() -> io::Result<StaleTimestamp> {
    use std::io::{Read, Write};
    let sniff = Sniffer::on_loopback()?;
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let server = match l.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        _ => return Err(io::Error::other("an IPv6 listener on 127.0.0.1")),
    };
    // A client bound to 127.0.0.2: std cannot bind before connecting.
    let c = crate::kernel::sandbox::tcp_from(Ipv4Addr::new(127, 0, 0, 2), server)?;
    let client = match c.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        _ => return Err(io::Error::other("an IPv6 client")),
    };
    let (mut s, _) = l.accept()?;
    // One real data segment: the server's remembered timestamp is the
    // client's latest, and the sequence numbers come from it.
    (&c).write_all(b"hello")?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf)?;
    let seen = sniff
        .wait(Duration::from_secs(2), |g| {
            g.src == client && g.dst == server && g.flags & 0x08 != 0
        })
        .ok_or_else(|| io::Error::other("the client's data segment never showed on lo"))?;
    let (tsval, tsecr) = seen
        .ts
        .ok_or_else(|| io::Error::other("no TCP timestamps (net.ipv4.tcp_timestamps=0)"))?;
    let stale = tsval.wrapping_sub(100_000);
    let forged = forge(
        client,
        server,
        seen.seq.wrapping_add(5),
        seen.ack,
        (stale, tsecr),
        b"stale",
    );
    inject(&forged, *server.ip())?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(StaleTimestamp {
        client,
        server,
        tsval: stale,
        keep: vec![Box::new(l), Box::new(c), Box::new(s)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_segments_parse_back_with_valid_checksums() {
        let src: SocketAddrV4 = "127.0.0.2:40000".parse().unwrap();
        let dst: SocketAddrV4 = "127.0.0.1:9".parse().unwrap();
        let p = forge(src, dst, 7, 9, (100, 200), b"x");
        let s = parse(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.seq, s.ack, s.flags, s.ts),
            (src, dst, 7, 9, 0x18, Some((100, 200)))
        );
        // A correct checksum sums (with itself) to zero.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let mut pseudo = [127, 0, 0, 2, 127, 0, 0, 1, 0, 6, 0, 0];
        pseudo[10..].copy_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
        assert_eq!(parse(&p[..25]), None);
    }
}
