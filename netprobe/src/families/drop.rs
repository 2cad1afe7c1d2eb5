//! Drops: `skb:kfree_skb` (and `tcp_drop` on kernels that still have it),
//! netprobe-ebpf/src/drop.rs. Its own modes are the drops no other family
//! claims: netfilter rules, qdisc and NIC queues; the rest map through the
//! catalogue's reason and location lists to their family's mode.

use crate::families::listen::accept_queue_advice;
use crate::kernel::kallsyms::Kallsyms;
use crate::pipeline::packet::endpoint;
use crate::pipeline::record::flow_text;
use crate::pipeline::record::Record;

use crate::kernel::probes::{BtfPart, KprobeSpec, Need, ProbeSpec, TracepointSpec};
use crate::pipeline::decode::{
    field_uint, headers, reason, sock, tcp_ts, DecodeError, KernelEvent, Layouts, Reason, Sock,
};
use crate::pipeline::packet::Flow;
use netprobe_common::{kind, pkt, Event};

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

/// The drop probe: the tracepoint, and `tcp_drop` where it frees without it.
pub const DROP: ProbeSpec = ProbeSpec {
    name: "drop",
    tracepoint: Some(TracepointSpec {
        program: "kfree_skb",
        category: "skb",
        name: "kfree_skb",
    }),
    kprobe: Some(KprobeSpec {
        targets: &[("tcp_drop", "tcp_drop")],
        covers: "TCP's own drops (tcp_drop frees without the tracepoint)",
        only_without_reason: true,
        needs_sock: false,
        without: None,
        module: None,
    }),
    needs: &[
        Need::Btf(BtfPart::Skb, "flows unknown"),
        Need::Field(
            "reason",
            "this kernel gives no drop reasons (before 5.17): classified by drop location",
        ),
    ],
};

pub const QDISC_FULL: Mode = m("queue_full", "qdisc_full");
pub const NIC_RING_FULL: Mode = m("queue_full", "nic_ring_full");
pub const NETFILTER_DROP: Mode = m("netfilter", "netfilter_drop");

/// The mode of a drop whose kernel gave a reason name (the catalogue's
/// reason lists).
pub fn drop_reason(reason: &str) -> Mode {
    super::catalogue::by_reason(reason).map_or(super::OTHER, |e| e.mode)
}

/// The mode of a drop on a kernel without reasons (before 5.17), from the
/// function the drop happened in. Only unambiguous places are named.
pub fn drop_location(function: &str) -> Mode {
    super::catalogue::by_location(function).map_or(super::OTHER, |e| e.mode)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub reason: Option<Reason>,
    /// Kernel text address where the skb was freed.
    pub location: u64,
    pub flow: Option<Flow>,
    /// What another probe saw happen to this skb just before its drop.
    pub mark: Option<DropMark>,
    /// A TCP segment's timestamp option: (TSval, TSecr).
    pub tcp_ts: Option<(u32, u32)>,
    /// Seen by the `tcp_drop` kprobe rather than the tracepoint.
    pub tcp_drop: bool,
    /// The receiving socket (6.11+: kfree_skb's `rx_sk`), when there was one.
    pub sock: Option<Sock>,
}

/// What another probe saw happen to a dropped skb just before its drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropMark {
    /// A RST was sent for it without a socket (kernels without reasons:
    /// the reset kprobe saw it, so this is the NO_SOCKET drop).
    NoSocketRst,
    /// Conntrack could not allocate an entry for it (`__nf_conntrack_alloc`
    /// failed: the table is full).
    ConntrackFull,
    /// Conntrack could not insert its new entry (`__nf_conntrack_confirm`
    /// returned NF_DROP).
    ConntrackInsertFailed,
}

impl DropMark {
    /// From the drop program's flags; a conntrack verdict is the more
    /// specific when (impossibly) both are set.
    pub fn from_flags(flags: u32) -> Option<DropMark> {
        if flags & pkt::CONNTRACK_FULL != 0 {
            Some(DropMark::ConntrackFull)
        } else if flags & pkt::CONNTRACK_INSERT_FAILED != 0 {
            Some(DropMark::ConntrackInsertFailed)
        } else if flags & pkt::AFTER_NO_SOCKET_RST != 0 {
            Some(DropMark::NoSocketRst)
        } else {
            None
        }
    }
}

/// The kinds of record this family's programs write.
pub const KINDS: &[u32] = &[kind::KFREE_SKB, kind::KPROBE_TCP_DROP];

/// A drop: the tracepoint's record, or the `tcp_drop` kprobe's (its caller
/// as the location).
pub fn decode(e: &Event, raw: &[u8], layouts: &Layouts) -> Result<KernelEvent, DecodeError> {
    if e.kind == kind::KPROBE_TCP_DROP {
        return Ok(KernelEvent::Drop(DropEvent {
            reason: None,
            location: raw
                .get(..8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))),
            flow: headers(e),
            mark: None,
            tcp_ts: tcp_ts(e),
            tcp_drop: true,
            sock: sock(e),
        }));
    }
    let fmt = layouts
        .kfree_skb
        .as_ref()
        .ok_or(DecodeError::NoLayout("skb:kfree_skb"))?;
    Ok(KernelEvent::Drop(DropEvent {
        reason: reason(fmt, raw),
        location: field_uint(fmt, raw, "location").unwrap_or(0),
        flow: headers(e),
        mark: DropMark::from_flags(e.pkt_flags),
        tcp_ts: tcp_ts(e),
        tcp_drop: false,
        sock: sock(e),
    }))
}

/// The local socket a dropped packet was for: the kernel's receiving socket
/// where it gave one, else the packet's destination.
pub fn receiver(e: &DropEvent) -> Option<String> {
    match (&e.sock, &e.flow) {
        (Some(s), _) => Some(endpoint(s.addr, Some(s.port))),
        (None, Some(f)) => Some(endpoint(f.daddr, f.dport)),
        (None, None) => None,
    }
}

pub fn drop_record(e: &DropEvent, ksyms: &Kallsyms) -> Record {
    let location = ksyms.lookup(e.location);
    let mode = match (e.mark, &e.reason, location) {
        // Conntrack's own verdict beats the generic NETFILTER_DROP reason.
        (Some(DropMark::ConntrackFull), _, _) => crate::families::conntrack::CONNTRACK_TABLE_FULL,
        (Some(DropMark::ConntrackInsertFailed), _, _) => {
            crate::families::conntrack::CONNTRACK_INSERT_FAILED
        }
        (_, Some(reason), _) => drop_reason(&reason.label()),
        (Some(DropMark::NoSocketRst), None, _) => crate::families::reset::NO_LISTENER,
        (None, None, Some((func, _))) => drop_location(func),
        (None, None, None) => crate::families::OTHER,
    };
    let mut r = Record {
        kind: "drop",
        ..Record::default()
    };
    r.set_mode(mode);
    r.reason = e.reason.as_ref().map(|x| x.label());
    r.location = Some(Kallsyms::render(location, e.location));
    if let (Some((tsval, tsecr)), "tw_recycle") = (e.tcp_ts, mode.mode) {
        r.evidence("tsval", tsval);
        r.evidence("tsecr", tsecr);
    }
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    if let Some(s) = &e.sock {
        r.set_sock(s);
        match mode {
            crate::families::listen::ACCEPT_QUEUE_FULL => {
                r.evidence("accept_queue", s.accept_queue);
                r.evidence("accept_queue_max", s.accept_queue_max);
            }
            crate::families::buffers::RCVBUF_FULL | crate::families::buffers::BACKLOG_FULL => {
                r.evidence("rmem_alloc", s.rmem_alloc);
                r.evidence("rcvbuf", s.rcvbuf);
            }
            _ => {}
        }
    }
    let what = match (&e.flow, &r.tcp_flags) {
        (Some(f), Some(flags)) => format!("{} ({flags})", flow_text(f)),
        (Some(f), None) => flow_text(f),
        (None, _) => "a packet (flow unknown)".to_string(),
    };
    let why = match (&r.reason, e.mark) {
        (Some(reason), _) => reason.clone(),
        (None, Some(DropMark::NoSocketRst)) => {
            "no socket: the kernel answered it with a RST".into()
        }
        (None, Some(_)) => "no reason given by this kernel".into(),
        (None, None) if e.tcp_drop => "tcp_drop, no reason given by this kernel".into(),
        (None, None) => "no reason given by this kernel".into(),
    };
    let at = r.location.clone().unwrap_or_default();
    r.message = match (mode.mode, &e.flow) {
        ("no_listener", Some(f)) => {
            let dst = endpoint(f.daddr, f.dport);
            r.advice = Some(format!(
                "Nothing listens on {dst}: check that the service behind this port is running and \
                 bound to this address, and that clients use the right port."
            ));
            format!("dropped {what}: no socket listens on {dst} ({why} at {at})")
        }
        ("accept_queue_full", _) => {
            // A listener's record (design.md: kind listen_overflow).
            r.kind = "listen_overflow";
            let listener = receiver(e).unwrap_or_else(|| "a listening socket".into());
            let queue = e
                .sock
                .map(|s| {
                    format!(
                        " ({} waiting for accept(), backlog {})",
                        s.accept_queue, s.accept_queue_max
                    )
                })
                .unwrap_or_default();
            r.advice = Some(accept_queue_advice(
                &listener,
                e.sock.map(|s| s.accept_queue_max),
            ));
            format!("accept queue full on {listener}{queue}: dropped {what} ({why} at {at})")
        }
        ("rcvbuf_full", _) => {
            let owner = receiver(e).unwrap_or_else(|| "a socket".into());
            let fill = e
                .sock
                .map(|s| format!(" ({} of {} bytes)", s.rmem_alloc, s.rcvbuf))
                .unwrap_or_default();
            r.advice = Some(format!(
                "The application owning {owner} does not read fast enough: make it read faster, \
                 or give it a larger receive buffer (SO_RCVBUF; the kernel caps it at \
                 net.core.rmem_max)."
            ));
            format!("dropped {what}: the receive buffer of {owner} is full{fill} ({why} at {at})")
        }
        ("conntrack_table_full", _) => {
            r.kind = "conntrack";
            format!(
                "dropped {what}: conntrack table full, no entry could be made for it \
                 (__nf_conntrack_alloc failed; {why} at {at})"
            )
        }
        ("conntrack_insert_failed", _) => {
            r.kind = "conntrack";
            format!(
                "dropped {what}: conntrack could not insert its new entry \
                 (__nf_conntrack_confirm: a clash it could not resolve or a hash chain too long; \
                 {why} at {at})"
            )
        }
        ("qdisc_full", _) => {
            format!("dropped {what}: a device's transmit queue (qdisc) was full ({why} at {at})")
        }
        ("netfilter_drop", _) => {
            format!("dropped {what} by netfilter ({why} at {at})")
        }
        ("tw_recycle", _) => {
            format!(
                "dropped {what}: its TCP timestamp is older than the connection's ({why} at {at})"
            )
        }
        _ => format!("dropped {what}: {why} at {at}"),
    };
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: QDISC_FULL,
        severity: Severity::Warning,
        title: "device queue (qdisc) full",
        meaning: "A network device's transmit queue discipline was full or over its limit, so it \
                  dropped the packet before it left the host.",
        detection: "Drop reasons QDISC_DROP, QDISC_OVERLIMIT, QDISC_CONGESTED and the fq and cake \
                    limits (5.19+).",
        advice: "See which qdisc drops with `tc -s qdisc show` (dropped, overlimits) in the \
                 namespace where the packet was, and raise its limit, or its rate if it shapes \
                 traffic.",
        reasons: &[
            "QDISC_DROP",
            "QDISC_OVERLIMIT",
            "QDISC_CONGESTED",
            "CAKE_FLOOD",
            "FQ_BAND_LIMIT",
            "FQ_HORIZON_LIMIT",
            "FQ_FLOW_LIMIT",
        ],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: NIC_RING_FULL,
        severity: Severity::Warning,
        title: "NIC ring full",
        meaning: "A device's hardware or virtual ring was full, so the packet was dropped.",
        detection: "Drop reason FULL_RING.",
        advice: "Enlarge the device's rings (`ethtool -G`), and check that its interrupts are \
                 spread over CPUs.",
        reasons: &["FULL_RING"],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: NETFILTER_DROP,
        severity: Severity::Warning,
        title: "netfilter drop",
        meaning: "A netfilter hook dropped the packet: an nftables or iptables rule, or \
                  conntrack where the kernel could not tell which.",
        detection: "Drop reason NETFILTER_DROP; drops in nf_hook_slow, nft_do_chain or \
                    ipt_do_table on older kernels. Where the conntrack kprobes run, conntrack's \
                    own drops are named conntrack_table_full or conntrack_insert_failed instead.",
        advice:
            "Look for DROP rules matching this flow with `nft list ruleset` or `iptables-save` \
                 in the namespace where the packet was; if none matches, check conntrack \
                 (`conntrack -S`: drop, insert_failed).",
        reasons: &["NETFILTER_DROP"],
        locations: &[
            "nf_hook_slow",
            "nft_do_chain",
            "ipt_do_table",
            "ip6t_do_table",
        ],
        counters: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{reset::NO_LISTENER, symptoms::UNREACHABLE, OTHER};

    #[test]
    fn reasons_and_locations_map_to_design_modes() {
        assert_eq!(drop_reason("NO_SOCKET"), NO_LISTENER);
        assert_eq!(drop_reason("TCP_RFC7323_PAWS").mode, "tw_recycle");
        assert_eq!(drop_reason("TCP_LISTEN_OVERFLOW").mode, "accept_queue_full");
        assert_eq!(drop_reason("SOCKET_RCVBUFF").family, "queue_full");
        assert_eq!(drop_reason("NETFILTER_DROP").mode, "netfilter_drop");
        assert_eq!(drop_reason("SOMETHING_NEW_IN_7_2"), OTHER);
        assert_eq!(drop_reason("NEIGH_FAILED"), UNREACHABLE);
        assert_eq!(drop_reason("IP_OUTNOROUTES"), UNREACHABLE);
        assert_eq!(drop_location("nf_hook_slow"), NETFILTER_DROP);
        assert_eq!(drop_location("tcp_v4_rcv"), OTHER);
    }
}
