//! The diagnosis: which failure family and mode an event belongs to.
//!
//! Reason *numbers* differ between kernels and come from the running kernel's
//! format file; the reason *names* are the kernel's stable vocabulary, and are
//! what is mapped here, through the catalogue.

use crate::families::catalogue;

/// A failure mode and the family it belongs to (design.md's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub family: &'static str,
    pub mode: &'static str,
}

const fn m(family: &'static str, mode: &'static str) -> Mode {
    Mode { family, mode }
}

pub const NO_LISTENER: Mode = m("reset", "no_listener");
pub const RESET_OTHER: Mode = m("reset", "reset_other");
pub const TW_RECYCLE: Mode = m("tw_recycle", "tw_recycle");
pub const ACCEPT_QUEUE_FULL: Mode = m("queue_full", "accept_queue_full");
pub const SYN_QUEUE_FULL: Mode = m("queue_full", "syn_queue_full");
pub const RCVBUF_FULL: Mode = m("queue_full", "rcvbuf_full");
pub const BACKLOG_FULL: Mode = m("queue_full", "backlog_full");
pub const QDISC_FULL: Mode = m("queue_full", "qdisc_full");
pub const CPU_BACKLOG_FULL: Mode = m("queue_full", "cpu_backlog_full");
pub const NIC_RING_FULL: Mode = m("queue_full", "nic_ring_full");
pub const CONNTRACK_TABLE_FULL: Mode = m("queue_full", "conntrack_table_full");
pub const CONNTRACK_INSERT_FAILED: Mode = m("conntrack", "conntrack_insert_failed");
pub const NETFILTER_DROP: Mode = m("netfilter", "netfilter_drop");
pub const NETFILTER_RULE_BLOAT: Mode = m("netfilter", "netfilter_rule_bloat");
pub const OOM_STALL: Mode = m("oom_stall", "oom_stall");
/// An OOM kill with no stall seen: a memory cgroup at its own limit.
pub const OOM_KILL: Mode = m("oom_stall", "oom_kill");
pub const UNREACHABLE: Mode = m("unreachable", "unreachable");
pub const OTHER: Mode = m("other", "other");

/// The mode of a drop whose kernel gave a reason name (the catalogue's
/// reason lists).
pub fn drop_reason(reason: &str) -> Mode {
    catalogue::by_reason(reason).map_or(OTHER, |e| e.mode)
}

/// The mode of a drop on a kernel without reasons (before 5.17), from the
/// function the drop happened in. Only unambiguous places are named.
pub fn drop_location(function: &str) -> Mode {
    catalogue::by_location(function).map_or(OTHER, |e| e.mode)
}

/// The mode of a RST this host sent, from its reason (6.10+) where known,
/// or from the reset kprobe having seen no socket (before 6.10).
pub fn reset_sent(reason: Option<&str>, no_socket: bool) -> Mode {
    match reason {
        Some("NO_SOCKET") => NO_LISTENER,
        None if no_socket => NO_LISTENER,
        Some("TCP_RFC7323_PAWS") => TW_RECYCLE,
        _ => RESET_OTHER,
    }
}

/// TCP_SYN_SENT in include/net/tcp_states.h (stable ABI).
pub const TCP_SYN_SENT: i64 = 2;

/// The mode of a RST this host received: in answer to its own SYN, the peer
/// had nothing listening (the client's view of a closed port).
pub fn reset_received(state: Option<i64>) -> Mode {
    match state {
        Some(TCP_SYN_SENT) => NO_LISTENER,
        _ => RESET_OTHER,
    }
}

/// The mode of a socket error, by the errno the application saw: a
/// refused connection is a closed port's, a reset the reset family's, and
/// an unreachable host or network its own mode; the rest (ETIMEDOUT above
/// all) are `other` until a cause on their flow, or an OOM stall, claims
/// them.
pub fn socket_error(errno: i64) -> Mode {
    match errno {
        111 => NO_LISTENER,             // ECONNREFUSED
        104 => RESET_OTHER,             // ECONNRESET
        101 | 112 | 113 => UNREACHABLE, // ENETUNREACH, EHOSTDOWN, EHOSTUNREACH
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_design_modes() {
        assert_eq!(drop_reason("NO_SOCKET"), NO_LISTENER);
        assert_eq!(drop_reason("TCP_RFC7323_PAWS").mode, "tw_recycle");
        assert_eq!(drop_reason("TCP_LISTEN_OVERFLOW").mode, "accept_queue_full");
        assert_eq!(drop_reason("SOCKET_RCVBUFF").family, "queue_full");
        assert_eq!(drop_reason("NETFILTER_DROP").mode, "netfilter_drop");
        assert_eq!(drop_reason("SOMETHING_NEW_IN_7_2"), OTHER);
        assert_eq!(drop_location("nf_hook_slow"), NETFILTER_DROP);
        assert_eq!(drop_location("tcp_v4_rcv"), OTHER);
        assert_eq!(reset_sent(Some("NO_SOCKET"), false), NO_LISTENER);
        assert_eq!(reset_sent(None, true), NO_LISTENER);
        assert_eq!(reset_sent(Some("TCP_ABORT_ON_DATA"), true), RESET_OTHER);
        assert_eq!(reset_sent(None, false), RESET_OTHER);
        assert_eq!(reset_received(Some(TCP_SYN_SENT)), NO_LISTENER);
        assert_eq!(reset_received(Some(1)), RESET_OTHER);
        assert_eq!(reset_received(None), RESET_OTHER);
        assert_eq!(drop_reason("NEIGH_FAILED"), UNREACHABLE);
        assert_eq!(drop_reason("IP_OUTNOROUTES"), UNREACHABLE);
        assert_eq!(socket_error(111), NO_LISTENER);
        assert_eq!(socket_error(104), RESET_OTHER);
        assert_eq!(socket_error(113), UNREACHABLE);
        assert_eq!(socket_error(101), UNREACHABLE);
        assert_eq!(socket_error(112), UNREACHABLE);
        assert_eq!(socket_error(110), OTHER);
    }
}
