//! The flow of a packet, from the network and transport header bytes the
//! kernel program copied out of the skb. Wire formats, so no per-kernel data.

use std::net::IpAddr;

use netprobe_common::headers::{self, view, IpProto, Ipv4Hdr, Ipv6Hdr, TcpHdr};

pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;
pub const IPPROTO_SCTP: u8 = IpProto::Sctp as u8;
pub const IPPROTO_UDPLITE: u8 = IpProto::UdpLite as u8;

/// A packet's addresses and ports, in the direction the packet travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub saddr: IpAddr,
    pub sport: Option<u16>,
    pub daddr: IpAddr,
    pub dport: Option<u16>,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: Option<u8>,
}

impl Flow {
    pub fn is_v6(&self) -> bool {
        self.saddr.is_ipv6()
    }

    pub fn reversed(&self) -> Flow {
        Flow {
            saddr: self.daddr,
            sport: self.dport,
            daddr: self.saddr,
            dport: self.sport,
            ..*self
        }
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        IPPROTO_SCTP => "sctp".into(),
        IPPROTO_UDPLITE => "udplite".into(),
        n => format!("ip-proto-{n}"),
    }
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Names the set TCP flags, e.g. `SYN` or `ACK|RST`.
pub fn tcp_flags_name(flags: u8) -> String {
    const NAMES: [(u8, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

/// The TCP timestamp option (TSval, TSecr) of a segment: `transport` is its
/// header's first 20 bytes, `options` the bytes after them (as many as the
/// data offset says are options are read; malformed options give `None`).
pub fn tcp_timestamp(transport: &[u8], options: &[u8]) -> Option<(u32, u32)> {
    let doff = view::<TcpHdr>(transport)?.doff() as usize;
    let len = doff.checked_sub(5)? * 4;
    let opts = options.get(..len)?;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let l = *opts.get(i + 1)? as usize;
                if l < 2 {
                    return None;
                }
                if kind == 8 && l == 10 {
                    let b = opts.get(i + 2..i + 10)?;
                    return Some((
                        u32::from_be_bytes(b[..4].try_into().ok()?),
                        u32::from_be_bytes(b[4..].try_into().ok()?),
                    ));
                }
                i += l;
            }
        }
    }
    None
}

/// Decodes the flow. `net` starts at the network header, `transport` at the
/// transport header; `nh`/`th` are the skb's header offsets (0xffff: unset),
/// used to tell whether `transport` really follows this network header.
pub fn parse(net: Option<&[u8]>, transport: Option<&[u8]>, nh: u16, th: u16) -> Option<Flow> {
    let net = net?;
    let (proto, saddr, daddr, hdr_len) = match headers::ip_version(net) {
        4 => {
            let ip = view::<Ipv4Hdr>(net)?;
            let ihl = usize::from(ip.ihl());
            if ihl < Ipv4Hdr::LEN {
                return None;
            }
            (
                ip.proto,
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ihl,
            )
        }
        6 => {
            let ip = view::<Ipv6Hdr>(net)?;
            (
                ip.next_hdr,
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                Ipv6Hdr::LEN,
            )
        }
        _ => return None,
    };
    let mut flow = Flow {
        proto,
        saddr,
        sport: None,
        daddr,
        dport: None,
        tcp_flags: None,
    };
    if !headers::has_ports(proto) {
        return Some(flow);
    }
    // The transport header as the skb records it, if it lies past this
    // network header; otherwise, straight after the network header when
    // that is inside what was copied.
    let l4: Option<&[u8]> = match transport {
        Some(t) if nh != 0xffff && th != 0xffff && th as usize >= nh as usize + hdr_len => Some(t),
        _ => net.get(hdr_len..),
    };
    if let Some((sport, dport)) = l4.and_then(headers::ports) {
        (flow.sport, flow.dport) = (Some(sport), Some(dport));
        if proto == IPPROTO_TCP {
            flow.tcp_flags = l4.and_then(view::<TcpHdr>).map(headers::tcp_flags);
        }
    }
    Some(flow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn tcp_timestamps_from_options() {
        // A Linux SYN's header and options: MSS, SACK-permitted, timestamps,
        // NOP, window scale (data offset 10 words).
        let mut th = [0u8; 20];
        th[12] = 10 << 4;
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut buf = [0u8; 40];
        buf[..20].copy_from_slice(&opts);
        assert_eq!(tcp_timestamp(&th, &buf), Some((12345, 0)));
        // The data offset bounds what is read: 4 option bytes hold none.
        th[12] = 6 << 4;
        assert_eq!(tcp_timestamp(&th, &buf), None);
        // No options, a zero-length option, a truncated one.
        th[12] = 5 << 4;
        assert_eq!(tcp_timestamp(&th, &buf), None);
        th[12] = 10 << 4;
        assert_eq!(tcp_timestamp(&th, &[1, 9, 0, 0]), None);
        assert_eq!(tcp_timestamp(&th, &[8, 10, 0, 0]), None);
        assert_eq!(tcp_timestamp(&[0; 5], &buf), None);
    }

    /// IPv4 + TCP SYN 127.0.0.2:40000 -> 127.0.0.1:9, as on the wire.
    fn v4_syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 2, 127, 0, 0, 1,
        ];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&9u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn ipv4_tcp_from_transport_header() {
        let p = v4_syn();
        let f = parse(Some(&p[..40]), Some(&p[20..40]), 100, 120).unwrap();
        assert_eq!(f.saddr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(f.daddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((f.sport, f.dport), (Some(40000), Some(9)));
        assert_eq!(f.tcp_flags.map(tcp_flags_name).as_deref(), Some("SYN"));
        assert_eq!(
            endpoint(f.reversed().saddr, f.reversed().sport),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn ipv4_without_transport_header_uses_bytes_after_ihl() {
        let p = v4_syn();
        // Transport offset unset, or not past the network header: fall back.
        let f = parse(Some(&p[..40]), Some(&[0xee; 20]), 100, 0xffff).unwrap();
        assert_eq!((f.sport, f.dport), (Some(40000), Some(9)));
        let f = parse(Some(&p[..40]), Some(&[0xee; 20]), 100, 100).unwrap();
        assert_eq!((f.sport, f.dport), (Some(40000), Some(9)));
    }

    #[test]
    fn ipv6_udp() {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        let udp = [0x00, 0x35, 0x30, 0x39, 0, 8, 0, 0];
        let f = parse(Some(&p), Some(&udp), 14, 54).unwrap();
        assert!(f.is_v6());
        assert_eq!(proto_name(f.proto), "udp");
        assert_eq!((f.sport, f.dport), (Some(53), Some(12345)));
        assert_eq!(endpoint(f.saddr, f.sport), "[fd00::1]:53");
        assert_eq!(f.tcp_flags, None);
    }

    #[test]
    fn junk_is_none_not_a_panic() {
        assert_eq!(parse(None, None, 0, 0), None);
        assert_eq!(parse(Some(&[]), None, 0, 0), None);
        assert_eq!(parse(Some(&[0x45; 10]), None, 0, 0), None);
        assert_eq!(parse(Some(&[0x41; 40]), None, 0, 0), None);
        assert_eq!(parse(Some(&[0x60; 39]), None, 0, 0), None);
        assert_eq!(parse(Some(&[0x00; 40]), None, 0, 0), None);
        // ICMP: addresses, no ports.
        let mut p = v4_syn();
        p[9] = 1;
        let f = parse(Some(&p[..40]), None, 0, 0xffff).unwrap();
        assert_eq!(f.sport, None);
        for b in 0..=255u8 {
            let _ = parse(Some(&[b; 40]), Some(&[b; 20]), b as u16, 0);
        }
    }
}
