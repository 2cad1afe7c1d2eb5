//! Which end of an event's flow is the service, from what the kernel says
//! of the event, never from which port is lower: a SYN's destination, the
//! sender of a RST (this host's socket, or the closed port a SYN found), the
//! peer a connecting socket was refused by or could not reach. Folding,
//! incident keys, `report` and the metrics all use it; the kernel's
//! aggregation key follows the same rules (netprobe-ebpf's agg.rs), so that
//! a service that is down folds at any port, inside the client's ephemeral
//! range too.

use std::net::IpAddr;

use crate::{
    pipeline::decode::{Decoded, KernelEvent},
    pipeline::packet::Flow,
    pipeline::record::Record,
};

/// The end of a flow that is the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Src,
    Dst,
    /// Nothing says: the lower port stands in (a guess, kept for what the
    /// kernel does not tell).
    Lower,
}

/// TCP flags SYN and ACK.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// errno values whose socket was connecting to a peer that refused it or
/// could not be reached: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH,
/// EHOSTDOWN.
pub const CONNECTING_ERRORS: [i64; 4] = [111, 113, 101, 112];

/// TCP_SYN_SENT.
const SYN_SENT: i64 = 2;

/// The service side of `d`'s flow.
pub fn side(d: &Decoded) -> Side {
    match &d.event {
        // A connection request goes to the service.
        KernelEvent::Drop(e) => match e.flow.and_then(|f| f.tcp_flags) {
            Some(flags) if flags & (SYN | ACK) == SYN => Side::Dst,
            _ => Side::Lower,
        },
        // The segment a full listener dropped went to it.
        KernelEvent::ListenOverflow(_) => Side::Dst,
        // A RST's sender is this host's socket, or the closed port a
        // segment found (flows are in the RST's direction).
        KernelEvent::ResetSent(_) => Side::Src,
        // A RST in answer to this host's SYN comes from the service.
        KernelEvent::ResetReceived(e) if e.state == Some(SYN_SENT) => Side::Src,
        // A connecting socket's peer (flows are local -> remote).
        KernelEvent::SocketError(e)
            if e.errno
                .is_some_and(|n| CONNECTING_ERRORS.contains(&n.abs()))
                || e.state == Some(SYN_SENT) =>
        {
            Side::Dst
        }
        _ => Side::Lower,
    }
}

/// The service's address and port, when the kernel said which it is.
pub fn endpoint(f: &Flow, side: Side) -> Option<(IpAddr, u16)> {
    match side {
        Side::Src => Some((f.saddr, f.sport?)),
        Side::Dst => Some((f.daddr, f.dport?)),
        Side::Lower => None,
    }
}

/// A flow without the client's port: the service's, as `side` says, else
/// the lower one's.
pub fn without_client_port(f: Flow, side: Side) -> Flow {
    match (side, f.sport, f.dport) {
        (Side::Src, ..) => Flow { dport: None, ..f },
        (Side::Dst, ..) => Flow { sport: None, ..f },
        (Side::Lower, Some(s), Some(d)) if s > d => Flow { sport: None, ..f },
        (Side::Lower, Some(s), Some(d)) if d > s => Flow { dport: None, ..f },
        _ => f,
    }
}

/// The end of a flow that is not the service: where a per-service record
/// found its source. With nothing said, the end with the higher port.
fn peer_is_src(f: &Flow, side: Side) -> bool {
    match side {
        Side::Src => false,
        Side::Dst => true,
        Side::Lower => matches!((f.sport, f.dport), (Some(s), Some(d)) if s > d),
    }
}

/// A flow as a per-service key has it (the kernel's `per_service_key`):
/// neither address, and not the client's port.
pub fn per_service(f: Flow, side: Side) -> Flow {
    let none = |a: IpAddr| match a {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let f = without_client_port(f, side);
    Flow {
        saddr: none(f.saddr),
        daddr: none(f.daddr),
        ..f
    }
}

/// A flow as a per-peer key has it (the kernel's `per_peer_key`): its
/// addresses, no ports.
pub fn per_peer(f: Flow) -> Flow {
    Flow {
        sport: None,
        dport: None,
        ..f
    }
}

/// Makes `rec` (built from the flow `f`) the record of a peer that tries
/// many services (a scan): the ports and the listener leave the record and
/// the service's port starts the sample of `ports`.
pub fn mark_per_peer(rec: &mut Record, f: &Flow, side: Side) {
    let port = endpoint(f, side)
        .map(|(_, p)| p)
        .or(match (f.sport, f.dport) {
            (Some(s), Some(d)) => Some(s.min(d)),
            (s, d) => s.or(d),
        });
    (rec.sport, rec.dport, rec.addr, rec.port) = (None, None, None, None);
    rec.evidence("per_peer", true);
    if let Some(port) = port {
        rec.evidence("ports", vec![port.to_string()]);
    }
    rec.message
        .push_str(" (one of many new services this peer tried: counted per peer)");
}

/// Makes `rec` (built from the flow `f`) the record of a service whose
/// flows do not repeat: the peer's address and port leave the flow and its
/// address starts the sample of `sources`.
pub fn mark_per_service(rec: &mut Record, f: &Flow, side: Side) {
    let (peer, peer_port) = if peer_is_src(f, side) {
        (rec.saddr.take(), rec.sport.take())
    } else {
        (rec.daddr.take(), rec.dport.take())
    };
    // "No socket listens on" the peer (a RST dropped at a spoofed source).
    if rec.addr.is_some() && (&rec.addr, rec.port) == (&peer, peer_port) {
        (rec.addr, rec.port) = (None, None);
    }
    rec.evidence("per_service", true);
    if let Some(peer) = peer {
        rec.evidence("sources", vec![peer]);
    }
    rec.message
        .push_str(" (one of many new flows to this service: counted per service)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{drop::DropEvent, reset::ResetEvent, symptoms::SocketEvent};

    fn flow(sport: u16, dport: u16, flags: Option<u8>) -> Flow {
        Flow {
            proto: 6,
            saddr: "127.0.0.2".parse().unwrap(),
            sport: Some(sport),
            daddr: "127.0.0.1".parse().unwrap(),
            dport: Some(dport),
            tcp_flags: flags,
        }
    }

    fn decoded(event: KernelEvent) -> Decoded {
        Decoded {
            ts_ns: 1,
            pid: 1,
            comm: Vec::new(),
            netns: None,
            fold: Default::default(),
            event,
        }
    }

    #[test]
    fn the_service_is_what_the_kernel_says_not_the_lower_port() {
        // A SYN to 57415 from 32768: the service is the higher port.
        let syn = decoded(KernelEvent::Drop(DropEvent {
            flow: Some(flow(32768, 57415, Some(SYN))),
            ..DropEvent::default()
        }));
        assert_eq!(side(&syn), Side::Dst);
        let KernelEvent::Drop(e) = &syn.event else {
            panic!()
        };
        let f = e.flow.unwrap();
        assert_eq!(endpoint(&f, Side::Dst).unwrap().1, 57415);
        assert_eq!(without_client_port(f, Side::Dst).dport, Some(57415));
        assert_eq!(without_client_port(f, Side::Dst).sport, None);
        // A SYN-ACK or any other segment: not told.
        let synack = decoded(KernelEvent::Drop(DropEvent {
            flow: Some(flow(57415, 32768, Some(SYN | ACK))),
            ..DropEvent::default()
        }));
        assert_eq!(side(&synack), Side::Lower);
        // The RST a closed port sends: from the service.
        let rst = decoded(KernelEvent::ResetSent(ResetEvent {
            flow: Some(flow(57415, 32768, None)),
            no_socket: true,
            ..ResetEvent::default()
        }));
        assert_eq!(side(&rst), Side::Src);
        // Refused: the RST a connecting socket receives, and its error.
        let refused = decoded(KernelEvent::ResetReceived(ResetEvent {
            flow: Some(flow(57415, 32768, None)),
            state: Some(SYN_SENT),
            ..ResetEvent::default()
        }));
        assert_eq!(side(&refused), Side::Src);
        let reset = decoded(KernelEvent::ResetReceived(ResetEvent {
            flow: Some(flow(57415, 32768, None)),
            state: Some(1),
            ..ResetEvent::default()
        }));
        assert_eq!(side(&reset), Side::Lower);
        let err = decoded(KernelEvent::SocketError(SocketEvent {
            flow: Some(flow(32768, 57415, None)),
            state: None,
            errno: Some(-111),
        }));
        assert_eq!(side(&err), Side::Dst);
        let timeout = decoded(KernelEvent::SocketError(SocketEvent {
            flow: Some(flow(32768, 57415, None)),
            state: None,
            errno: Some(-110),
        }));
        assert_eq!(side(&timeout), Side::Lower);
        // The guess keeps the lower port.
        let f = flow(32768, 57415, None);
        assert_eq!(without_client_port(f, Side::Lower).sport, Some(32768));
        assert_eq!(endpoint(&f, Side::Lower), None);
    }

    /// A RST record from the closed port 127.0.0.1:8081 to `peer`.
    fn rst_to(peer: &str, port: u16) -> (Flow, Record) {
        let f = Flow {
            proto: 6,
            saddr: "127.0.0.1".parse().unwrap(),
            sport: Some(8081),
            daddr: peer.parse().unwrap(),
            dport: Some(port),
            tcp_flags: Some(0x14),
        };
        let mut r = Record::default();
        r.set_flow(&f);
        (r.addr, r.port) = (Some("127.0.0.1".into()), Some(8081));
        (f, r)
    }

    #[test]
    fn per_service_keys_and_records_leave_the_peer_out() {
        use crate::pipeline::decode::Fold;
        use crate::pipeline::incident::RepeatKey;
        let sent = |peer: &str, fold| Decoded {
            fold,
            ..decoded(KernelEvent::ResetSent(ResetEvent {
                flow: Some(rst_to(peer, 40000).0),
                ..ResetEvent::default()
            }))
        };
        // Two sources: one key per service, two per flow.
        let key = |peer, fold| RepeatKey::of(&sent(peer, fold), false);
        assert_eq!(
            key("127.1.2.3", Fold::Service),
            key("127.4.5.6", Fold::Service)
        );
        assert_ne!(key("127.1.2.3", Fold::Flow), key("127.4.5.6", Fold::Flow));
        // The record names the service, and the peer as a source.
        let (f, mut r) = rst_to("127.1.2.3", 40000);
        mark_per_service(&mut r, &f, Side::Src);
        assert_eq!(
            (r.saddr.as_deref(), r.sport),
            (Some("127.0.0.1"), Some(8081))
        );
        assert_eq!((r.daddr.as_deref(), r.dport), (None, None));
        assert_eq!((r.addr.as_deref(), r.port), (Some("127.0.0.1"), Some(8081)));
        let ev = r.evidence.as_ref().unwrap();
        assert_eq!(ev["per_service"], true);
        assert_eq!(ev["sources"], serde_json::json!(["127.1.2.3"]));
        // A RST dropped at its spoofed destination: "no socket listens on"
        // the peer, which leaves the record too.
        let (f, mut r) = rst_to("127.1.2.3", 40000);
        (r.addr, r.port) = (Some("127.1.2.3".into()), Some(40000));
        mark_per_service(&mut r, &f, Side::Lower);
        assert_eq!((r.addr, r.port, r.daddr), (None, None, None));
        // A peer on the listener's own address is not the listener.
        let (f, mut r) = rst_to("127.0.0.1", 40000);
        mark_per_service(&mut r, &f, Side::Src);
        assert_eq!((r.addr.as_deref(), r.port), (Some("127.0.0.1"), Some(8081)));
    }

    #[test]
    fn per_peer_keys_and_records_leave_the_ports_out() {
        use crate::pipeline::decode::Fold;
        use crate::pipeline::incident::RepeatKey;
        let sent = |port: u16, fold| Decoded {
            fold,
            ..decoded(KernelEvent::ResetSent(ResetEvent {
                flow: Some(Flow {
                    sport: Some(port),
                    ..rst_to("127.9.9.9", 55555).0
                }),
                ..ResetEvent::default()
            }))
        };
        let key = |port, fold| RepeatKey::of(&sent(port, fold), false);
        assert_eq!(key(2000, Fold::Peer), key(2001, Fold::Peer));
        assert_ne!(key(2000, Fold::Service), key(2001, Fold::Service));
        let (f, mut r) = rst_to("127.9.9.9", 55555);
        mark_per_peer(&mut r, &f, Side::Src);
        assert_eq!((r.sport, r.dport, r.addr, r.port), (None, None, None, None));
        assert_eq!(
            (r.saddr.as_deref(), r.daddr.as_deref()),
            (Some("127.0.0.1"), Some("127.9.9.9"))
        );
        let ev = r.evidence.as_ref().unwrap();
        assert_eq!(ev["per_peer"], true);
        assert_eq!(ev["ports"], serde_json::json!(["8081"]));
    }
}
