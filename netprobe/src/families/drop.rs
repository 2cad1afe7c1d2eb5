//! Drops: `skb:kfree_skb` (and `tcp_drop` on kernels that still have it),
//! netprobe-ebpf/src/drop.rs. Its own modes are the drops no other family
//! claims: netfilter rules, qdisc and NIC queues; the rest map through the
//! catalogue's reason and location lists to their family's mode.

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
