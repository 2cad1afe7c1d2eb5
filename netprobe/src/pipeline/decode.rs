//! From a ring-buffer record to a typed kernel event, using the running
//! kernel's tracepoint layouts (`format` files).

use crate::families;
use crate::families::drop::DropEvent;
use crate::families::listen::ListenEvent;
use crate::families::oom::OomEvent;
use crate::families::reset::ResetEvent;
use crate::families::symptoms::SocketEvent;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netprobe_common::{pkt, Event, SockInfo};

use crate::{
    kernel::tracefs::{Field, Format},
    pipeline::packet::{self, Flow},
};

/// The formats of the tracepoints the programs copy, as found at start.
#[derive(Debug, Default, Clone)]
pub struct Layouts {
    pub kfree_skb: Option<Format>,
    pub send_reset: Option<Format>,
    pub receive_reset: Option<Format>,
    pub oom: Option<Format>,
    pub retransmit: Option<Format>,
    pub sk_error: Option<Format>,
}

/// A kernel reason code with the running kernel's name for it, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub value: u64,
    pub name: Option<String>,
}

impl Reason {
    /// The kernel's name, or the number when this kernel's format file does
    /// not name it (a newer kernel, or a subsystem reason).
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.value.to_string())
    }
}

/// A socket as the programs read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sock {
    /// Local address and port.
    pub addr: IpAddr,
    pub port: u16,
    pub state: i64,
    /// Accept queue: connections waiting for accept(), and the listen() backlog.
    pub accept_queue: u32,
    pub accept_queue_max: u32,
    /// Receive buffer: bytes queued (sk_rmem_alloc) and the limit (sk_rcvbuf).
    pub rmem_alloc: u32,
    pub rcvbuf: u32,
}

impl Sock {
    fn from_info(i: &SockInfo) -> Option<Sock> {
        let addr = match i.family as u64 {
            AF_INET => IpAddr::V4(Ipv4Addr::new(i.addr[0], i.addr[1], i.addr[2], i.addr[3])),
            AF_INET6 => IpAddr::V6(Ipv6Addr::from(i.addr)),
            _ => return None,
        };
        Some(Sock {
            addr,
            port: i.port,
            state: i.state as i64,
            accept_queue: i.ack_backlog,
            accept_queue_max: i.max_ack_backlog,
            rmem_alloc: i.rmem_alloc,
            rcvbuf: i.rcvbuf,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Drop(DropEvent),
    ResetSent(ResetEvent),
    ResetReceived(ResetEvent),
    ListenOverflow(ListenEvent),
    Oom(OomEvent),
    Retransmit(SocketEvent),
    SocketError(SocketEvent),
}

/// How a family turns its records into events.
pub type Decoder = fn(&Event, &[u8], &Layouts) -> Result<KernelEvent, DecodeError>;

/// A decoded record with the context every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub ts_ns: u64,
    pub pid: u32,
    pub comm: Vec<u8>,
    /// The packet's network namespace (inode), where the hook had an skb
    /// with a device and BTF gave the offsets.
    pub netns: Option<u64>,
    pub event: KernelEvent,
    /// What the kernel counts as this record's repeats
    /// (`Event::agg_fold`).
    pub fold: Fold,
}

/// What in-kernel aggregation counts as a record's repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fold {
    /// The same flow's events.
    #[default]
    Flow,
    /// Other flows to the same service, for the same reason: new flows
    /// came too fast to count each.
    Service,
    /// Other services of the same peer (a scan): new services came too
    /// fast as well.
    Peer,
}

impl Fold {
    fn of(e: &Event) -> Fold {
        match e.agg_fold {
            netprobe_common::agg::FOLD_SERVICE => Fold::Service,
            netprobe_common::agg::FOLD_PEER => Fold::Peer,
            _ => Fold::Flow,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short(usize),
    UnknownKind(u32),
    NoLayout(&'static str),
    NoSocket(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short(n) => write!(f, "record of {n} bytes is too short"),
            DecodeError::UnknownKind(k) => write!(f, "record of unknown kind {k}"),
            DecodeError::NoLayout(t) => write!(f, "record from {t}, whose format was not loaded"),
            DecodeError::NoSocket(t) => write!(f, "{t} record without its socket"),
        }
    }
}

fn uint(raw: &[u8], f: &Field) -> Option<u64> {
    let b = raw.get(f.offset..f.offset + f.size)?;
    Some(match f.size {
        1 => b[0] as u64,
        2 => u16::from_ne_bytes(b.try_into().ok()?) as u64,
        4 => u32::from_ne_bytes(b.try_into().ok()?) as u64,
        8 => u64::from_ne_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

pub(crate) fn field_uint(fmt: &Format, raw: &[u8], name: &str) -> Option<u64> {
    uint(raw, fmt.field(name)?)
}

pub(crate) fn field_bytes<'a>(fmt: &Format, raw: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let f = fmt.field(name)?;
    raw.get(f.offset..f.offset + f.size)
}

pub(crate) fn reason(fmt: &Format, raw: &[u8]) -> Option<Reason> {
    let value = field_uint(fmt, raw, "reason")?;
    Some(Reason {
        value,
        name: fmt.symbol("reason", value).map(str::to_string),
    })
}

/// Reads the `Event` out of ring-buffer bytes (no alignment assumed).
pub fn read_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<Event>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: Event is repr(C) plain data, every bit pattern is valid, and the
    // length was checked; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}

/// A record, decoded by the family whose programs write its kind.
pub fn decode(e: &Event, layouts: &Layouts) -> Result<Decoded, DecodeError> {
    let raw = &e.raw[..(e.raw_len as usize).min(e.raw.len())];
    let decoder = families::FAMILIES
        .iter()
        .find(|f| f.kinds.contains(&e.kind))
        .and_then(|f| f.decode)
        .ok_or(DecodeError::UnknownKind(e.kind))?;
    let event = decoder(e, raw, layouts)?;
    let comm_len = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    Ok(Decoded {
        ts_ns: e.ts_ns,
        pid: (e.pid_tgid >> 32) as u32,
        comm: e.comm[..comm_len].to_vec(),
        netns: (e.netns != 0).then_some(u64::from(e.netns)),
        event,
        fold: Fold::of(e),
    })
}

/// The socket the program read, if any.
pub(crate) fn sock(e: &Event) -> Option<Sock> {
    (e.pkt_flags & pkt::SOCK != 0)
        .then(|| Sock::from_info(&e.sock))
        .flatten()
}

/// A `__data_loc` string: the field holds `len << 16 | offset` into the
/// record; the string ends at its NUL.
pub(crate) fn data_loc_str(fmt: &Format, raw: &[u8], name: &str) -> Option<Vec<u8>> {
    let loc = field_uint(fmt, raw, name)?;
    let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
    let b = raw.get(off..off.checked_add(len)?.min(raw.len()))?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Some(b[..end].to_vec())
}

/// The flow of the packet headers the program copied, if any.
pub(crate) fn headers(e: &Event) -> Option<Flow> {
    let net = (e.pkt_flags & pkt::NET != 0).then_some(&e.net[..]);
    let transport = (e.pkt_flags & pkt::TRANSPORT != 0).then_some(&e.transport[..]);
    packet::parse(net, transport, e.network_header, e.transport_header)
}

/// The TCP timestamp option of the event's segment, when it has one.
pub(crate) fn tcp_ts(e: &Event) -> Option<(u32, u32)> {
    let copied = pkt::TRANSPORT | pkt::TCP_OPTIONS;
    if e.pkt_flags & copied != copied || headers(e)?.proto != packet::IPPROTO_TCP {
        return None;
    }
    packet::tcp_timestamp(&e.transport, &e.tcp_options)
}

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// A `struct sockaddr_in`/`sockaddr_in6` as the 6.10+ reset tracepoints store it.
pub(crate) fn sockaddr(b: &[u8]) -> Option<(IpAddr, u16)> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as u64;
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        AF_INET => Some((
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(4..8)?).ok()?)),
            port,
        )),
        AF_INET6 => Some((
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(8..24)?).ok()?)),
            port,
        )),
        _ => None,
    }
}

/// The socket's addresses in the pre-6.10 layout: `sport`, `dport` (host
/// order), `saddr`/`daddr` (4 bytes), `saddr_v6`/`daddr_v6`, and from 5.13
/// `family`. Without `family`, an IPv4 socket shows as a v4-mapped v6 address.
pub(crate) fn split_addrs(fmt: &Format, raw: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16)> {
    let sport = field_uint(fmt, raw, "sport")? as u16;
    let dport = field_uint(fmt, raw, "dport")? as u16;
    let s6 = Ipv6Addr::from(<[u8; 16]>::try_from(field_bytes(fmt, raw, "saddr_v6")?).ok()?);
    let d6 = Ipv6Addr::from(<[u8; 16]>::try_from(field_bytes(fmt, raw, "daddr_v6")?).ok()?);
    let v4 = match field_uint(fmt, raw, "family") {
        Some(f) => f == AF_INET,
        None => s6.to_ipv4_mapped().is_some() || s6.is_unspecified(),
    };
    if v4 {
        let s = Ipv4Addr::from(<[u8; 4]>::try_from(field_bytes(fmt, raw, "saddr")?).ok()?);
        let d = Ipv4Addr::from(<[u8; 4]>::try_from(field_bytes(fmt, raw, "daddr")?).ok()?);
        Some((IpAddr::V4(s), sport, IpAddr::V4(d), dport))
    } else {
        Some((IpAddr::V6(s6), sport, IpAddr::V6(d6), dport))
    }
}

/// The kernel's TCP state names (include/net/tcp_states.h, stable ABI).
pub fn tcp_state_name(state: i64) -> Option<&'static str> {
    const NAMES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    usize::try_from(state)
        .ok()
        .and_then(|i| NAMES.get(i))
        .filter(|n| !n.is_empty())
        .copied()
}

/// The layouts of a kernel kept under `testdata/kernels/<kernel>/`.
#[cfg(test)]
pub(crate) fn test_layouts(kernel: &str) -> Layouts {
    use crate::kernel::tracefs::read_format;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/kernels")
        .join(kernel);
    Layouts {
        kfree_skb: read_format(&root, "skb", "kfree_skb").ok(),
        send_reset: read_format(&root, "tcp", "tcp_send_reset").ok(),
        receive_reset: read_format(&root, "tcp", "tcp_receive_reset").ok(),
        oom: read_format(&root, "oom", "mark_victim").ok(),
        retransmit: read_format(&root, "tcp", "tcp_retransmit_skb").ok(),
        sk_error: read_format(&root, "sock", "inet_sk_error_report").ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{drop::DropMark, listen::ListenStage};
    use crate::pipeline::packet::IPPROTO_TCP;
    use netprobe_common::kind;
    use test_layouts as layouts;

    fn blank(kind: u32) -> Event {
        // SAFETY: Event is plain data.
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.kind = kind;
        e.raw_len = e.raw.len() as u32;
        e.pid_tgid = 42 << 32 | 43;
        e.comm[..4].copy_from_slice(b"curl");
        e
    }

    fn put(e: &mut Event, fmt: &Format, field: &str, bytes: &[u8]) {
        let f = fmt.field(field).unwrap();
        e.raw[f.offset..f.offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn kfree_skb_reason_named_from_each_kernel() {
        for kernel in ["6.1", "6.18"] {
            let l = layouts(kernel);
            let fmt = l.kfree_skb.as_ref().unwrap();
            let no_socket = fmt.symbol_value("reason", "NO_SOCKET").unwrap() as u32;
            let mut e = blank(kind::KFREE_SKB);
            put(&mut e, fmt, "reason", &no_socket.to_ne_bytes());
            put(
                &mut e,
                fmt,
                "location",
                &0xffff_ffff_8100_0010u64.to_ne_bytes(),
            );
            let d = decode(&e, &l).unwrap();
            assert_eq!((d.pid, d.comm.as_slice()), (42, &b"curl"[..]));
            let KernelEvent::Drop(drop) = d.event else {
                panic!("not a drop")
            };
            assert_eq!(drop.reason.unwrap().label(), "NO_SOCKET", "kernel {kernel}");
            assert_eq!(drop.location, 0xffff_ffff_8100_0010);
            assert_eq!(drop.flow, None);
            // A number this kernel does not name is shown as the number.
            put(&mut e, fmt, "reason", &0x0003_0002u32.to_ne_bytes());
            let KernelEvent::Drop(drop) = decode(&e, &l).unwrap().event else {
                panic!()
            };
            assert_eq!(drop.reason.unwrap().label(), "196610");
        }
    }

    #[test]
    fn kfree_skb_without_reason_on_5_10() {
        let l = layouts("5.10");
        let e = blank(kind::KFREE_SKB);
        let KernelEvent::Drop(drop) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!(drop.reason, None);
    }

    /// A SYN 127.0.0.2:40000 -> 127.0.0.1:9 as the programs copy it.
    fn with_syn(mut e: Event) -> Event {
        let ip = [
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 2, 127, 0, 0, 1,
        ];
        let mut tcp = [0u8; 20];
        tcp[..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        e.net[..20].copy_from_slice(&ip);
        e.net[20..40].copy_from_slice(&tcp);
        e.transport = tcp;
        (e.network_header, e.transport_header) = (100, 120);
        e.pkt_flags = pkt::NET | pkt::TRANSPORT;
        e
    }

    #[test]
    fn reset_kprobe_reverses_the_answered_segment() {
        let l = Layouts::default();
        let mut e = with_syn(blank(kind::KPROBE_SEND_RESET));
        e.raw_len = 0;
        e.pkt_flags |= pkt::NO_SOCKET;
        let KernelEvent::ResetSent(r) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        let f = r.flow.unwrap();
        assert_eq!((f.sport, f.dport), (Some(9), Some(40000)));
        assert_eq!(f.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(f.tcp_flags, None);
        assert!(r.no_socket);
        assert_eq!((r.state, r.reason), (None, None));
        // With a socket (a TIME_WAIT one, say), its state and no mark.
        e.pkt_flags &= !pkt::NO_SOCKET;
        e.sk_state = 6;
        let KernelEvent::ResetSent(r) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!((r.state, r.no_socket), (Some(6), false));
    }

    #[test]
    fn drops_marked_by_the_reset_kprobe_and_tcp_drop() {
        let l = layouts("5.10");
        let mut e = with_syn(blank(kind::KFREE_SKB));
        e.pkt_flags |= pkt::AFTER_NO_SOCKET_RST;
        let KernelEvent::Drop(d) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert!(d.mark == Some(DropMark::NoSocketRst) && !d.tcp_drop);
        assert_eq!(d.flow.unwrap().dport, Some(9));
        for (flag, mark) in [
            (pkt::CONNTRACK_FULL, DropMark::ConntrackFull),
            (
                pkt::CONNTRACK_INSERT_FAILED,
                DropMark::ConntrackInsertFailed,
            ),
        ] {
            let mut e = with_syn(blank(kind::KFREE_SKB));
            e.pkt_flags |= flag;
            let KernelEvent::Drop(d) = decode(&e, &layouts("6.1")).unwrap().event else {
                panic!()
            };
            assert_eq!(d.mark, Some(mark));
            assert_eq!(d.flow.unwrap().dport, Some(9));
        }
        let mut e = with_syn(blank(kind::KPROBE_TCP_DROP));
        e.raw[..8].copy_from_slice(&0xffff_ffff_81a0_0100u64.to_ne_bytes());
        e.raw_len = 8;
        let KernelEvent::Drop(d) = decode(&e, &Layouts::default()).unwrap().event else {
            panic!()
        };
        assert!(d.tcp_drop && d.mark.is_none());
        assert_eq!(d.location, 0xffff_ffff_81a0_0100);
        assert_eq!(d.reason, None);
        // A short record gives location 0, not a panic.
        e.raw_len = 3;
        let KernelEvent::Drop(d) = decode(&e, &Layouts::default()).unwrap().event else {
            panic!()
        };
        assert_eq!(d.location, 0);
    }

    #[test]
    fn send_reset_sockaddr_layout_6_18() {
        let l = layouts("6.18");
        let fmt = l.send_reset.as_ref().unwrap();
        let mut e = blank(kind::TCP_SEND_RESET);
        let mut sa = [0u8; 28];
        sa[..2].copy_from_slice(&2u16.to_ne_bytes());
        sa[2..4].copy_from_slice(&9u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
        put(&mut e, fmt, "saddr", &sa);
        sa[2..4].copy_from_slice(&40000u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[127, 0, 0, 2]);
        put(&mut e, fmt, "daddr", &sa);
        put(&mut e, fmt, "reason", &1u32.to_ne_bytes());
        let KernelEvent::ResetSent(r) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        let f = r.flow.unwrap();
        assert_eq!(packet::endpoint(f.saddr, f.sport), "127.0.0.1:9");
        assert_eq!(packet::endpoint(f.daddr, f.dport), "127.0.0.2:40000");
        assert_eq!(r.reason.unwrap().name.as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.state, Some(0));
    }

    #[test]
    fn receive_reset_is_reversed_and_old_layout_decodes() {
        for kernel in ["5.10", "6.1", "6.18"] {
            let l = layouts(kernel);
            let fmt = l.receive_reset.as_ref().unwrap();
            let mut e = blank(kind::TCP_RECEIVE_RESET);
            put(&mut e, fmt, "sport", &40000u16.to_ne_bytes());
            put(&mut e, fmt, "dport", &9u16.to_ne_bytes());
            put(&mut e, fmt, "saddr", &[10, 0, 0, 2]);
            put(&mut e, fmt, "daddr", &[10, 0, 0, 1]);
            let mut mapped = [0u8; 16];
            mapped[10] = 0xff;
            mapped[11] = 0xff;
            mapped[12..].copy_from_slice(&[10, 0, 0, 2]);
            put(&mut e, fmt, "saddr_v6", &mapped);
            if fmt.field("family").is_some() {
                put(&mut e, fmt, "family", &2u16.to_ne_bytes());
            }
            let KernelEvent::ResetReceived(r) = decode(&e, &l).unwrap().event else {
                panic!()
            };
            let f = r.flow.unwrap();
            // The socket is 10.0.0.2:40000; the RST came from its peer.
            assert_eq!(
                packet::endpoint(f.saddr, f.sport),
                "10.0.0.1:9",
                "kernel {kernel}"
            );
            assert_eq!(packet::endpoint(f.daddr, f.dport), "10.0.0.2:40000");
        }
    }

    #[test]
    fn bad_records_are_errors() {
        assert_eq!(read_event(&[0; 8]).err(), Some(DecodeError::Short(8)));
        let l = Layouts::default();
        assert_eq!(
            decode(&blank(99), &l).err(),
            Some(DecodeError::UnknownKind(99))
        );
        assert!(decode(&blank(kind::KFREE_SKB), &l).is_err());
        let mut e = blank(kind::TCP_SEND_RESET);
        e.raw_len = 9999;
        let _ = decode(&e, &layouts("6.18"));
        assert_eq!(tcp_state_name(10), Some("LISTEN"));
        assert_eq!(tcp_state_name(-1), None);
        assert_eq!(tcp_state_name(0), None);
    }

    #[test]
    fn oom_victim_from_each_kernels_layout() {
        // 6.18: pid, comm (a __data_loc string after the fixed part), memory.
        let l = layouts("6.18");
        let fmt = l.oom.as_ref().unwrap();
        let mut e = blank(kind::OOM_MARK_VICTIM);
        put(&mut e, fmt, "pid", &4242i32.to_ne_bytes());
        let loc: u32 = 5 << 16 | 72;
        put(&mut e, fmt, "comm", &loc.to_ne_bytes());
        e.raw[72..77].copy_from_slice(b"java\0");
        put(&mut e, fmt, "anon_rss", &30720u64.to_ne_bytes());
        put(&mut e, fmt, "total_vm", &99999u64.to_ne_bytes());
        put(&mut e, fmt, "oom_score_adj", &(-100i16).to_ne_bytes());
        let KernelEvent::Oom(o) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!(o.pid, 4242);
        assert_eq!(o.comm.as_deref(), Some(&b"java"[..]));
        assert_eq!((o.anon_rss_kb, o.total_vm_kb), (Some(30720), Some(99999)));
        assert_eq!(o.oom_score_adj, Some(-100));
        // A string pointing past what was copied is absent, not a panic.
        put(&mut e, fmt, "comm", &(16u32 << 16 | 120).to_ne_bytes());
        e.raw_len = 100;
        let KernelEvent::Oom(o) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!(o.comm, None);
        // 5.10: the pid alone.
        let l = layouts("5.10");
        let mut e = blank(kind::OOM_MARK_VICTIM);
        put(&mut e, l.oom.as_ref().unwrap(), "pid", &77i32.to_ne_bytes());
        let KernelEvent::Oom(o) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!((o.pid, o.comm, o.anon_rss_kb), (77, None, None));
    }

    #[test]
    fn listen_overflow_needs_its_listener() {
        let mut e = with_syn(blank(kind::KPROBE_LISTEN_OVERFLOW));
        e.raw[0] = netprobe_common::LISTEN_AT_SYN;
        e.raw_len = 1;
        assert_eq!(
            decode(&e, &Layouts::default()),
            Err(DecodeError::NoSocket("listen overflow"))
        );
        e.pkt_flags |= pkt::SOCK;
        e.sock = SockInfo {
            family: 2,
            port: 9,
            state: 10,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ack_backlog: 2,
            max_ack_backlog: 1,
            ..SockInfo::default()
        };
        let KernelEvent::ListenOverflow(x) = decode(&e, &Layouts::default()).unwrap().event else {
            panic!()
        };
        assert_eq!(x.stage, ListenStage::Syn);
        assert_eq!(x.sock.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (x.sock.port, x.sock.accept_queue, x.sock.accept_queue_max),
            (9, 2, 1)
        );
        assert_eq!(x.flow.unwrap().sport, Some(40000));
        // An unknown family is no socket.
        e.sock.family = 99;
        assert!(decode(&e, &Layouts::default()).is_err());
    }

    #[test]
    fn retransmits_and_socket_errors_from_real_layouts() {
        let l = layouts("6.18");
        let fmt = l.retransmit.as_ref().unwrap();
        let mut e = blank(kind::TCP_RETRANSMIT);
        put(&mut e, fmt, "sport", &40000u16.to_ne_bytes());
        put(&mut e, fmt, "dport", &9u16.to_ne_bytes());
        put(&mut e, fmt, "family", &2u16.to_ne_bytes());
        put(&mut e, fmt, "saddr", &[127, 0, 0, 2]);
        put(&mut e, fmt, "daddr", &[127, 0, 0, 1]);
        put(&mut e, fmt, "state", &1i32.to_ne_bytes());
        let KernelEvent::Retransmit(r) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        let f = r.flow.unwrap();
        assert_eq!(
            (f.sport, f.dport, f.proto),
            (Some(40000), Some(9), IPPROTO_TCP)
        );
        assert_eq!(f.saddr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.state, Some(1));
        let fmt = l.sk_error.as_ref().unwrap();
        let mut e = blank(kind::SK_ERROR_REPORT);
        put(&mut e, fmt, "error", &110i32.to_ne_bytes());
        put(&mut e, fmt, "protocol", &6u16.to_ne_bytes());
        put(&mut e, fmt, "family", &10u16.to_ne_bytes());
        put(&mut e, fmt, "sport", &5u16.to_ne_bytes());
        put(
            &mut e,
            fmt,
            "saddr_v6",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        let KernelEvent::SocketError(r) = decode(&e, &l).unwrap().event else {
            panic!()
        };
        assert_eq!(r.errno, Some(110));
        assert_eq!(r.flow.unwrap().saddr, "::1".parse::<IpAddr>().unwrap());
        // Kernels without the tracepoint (5.10) have no layout for it.
        assert!(decode(&e, &layouts("5.10")).is_err());
    }
}
