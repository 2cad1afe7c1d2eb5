//! Full receive buffers and socket backlogs, from each namespace's
//! TcpExt and Udp counters. Counter-derived (their drops come through the
//! drop family).

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const RCVBUF_FULL: Mode = m("queue_full", "rcvbuf_full");
pub const BACKLOG_FULL: Mode = m("queue_full", "backlog_full");

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: RCVBUF_FULL,
        severity: Severity::Warning,
        title: "socket receive buffer full",
        meaning: "A socket's receive buffer was full (or TCP memory was short), so arriving data \
                  was dropped: the application does not read fast enough, or its buffer is too \
                  small for the rate.",
        detection:
            "Drop reasons SOCKET_RCVBUFF, PROTO_MEM, TCP_ZEROWINDOW and TCP_OFO_QUEUE_PRUNE \
                    (with the socket's buffer figures on 6.11+); drops in the UDP queueing \
                    functions on older kernels; the TCPRcvQDrop, TCPZeroWindowDrop and UDP \
                    RcvbufErrors counters.",
        advice: "Find the socket with `ss -tunm` (large Recv-Q, rb near its limit), make its \
                 application read faster, or raise its SO_RCVBUF (capped by net.core.rmem_max; \
                 net.ipv4.tcp_rmem for TCP).",
        reasons: &[
            "SOCKET_RCVBUFF",
            "PROTO_MEM",
            "TCP_ZEROWINDOW",
            "TCP_OFO_QUEUE_PRUNE",
        ],
        locations: &[
            "__udp_queue_rcv_skb",
            "__udp6_queue_rcv_skb",
            "udp_queue_rcv_one_skb",
            "udpv6_queue_rcv_one_skb",
        ],
        counters: &["TCPRcvQDrop", "TCPZeroWindowDrop", "RcvbufErrors"],
    },
    Entry {
        mode: BACKLOG_FULL,
        severity: Severity::Warning,
        title: "socket backlog full",
        meaning: "Segments arrived while the application held its socket, and the socket's \
                  backlog (bounded by its receive buffer) was full, so they were dropped.",
        detection: "Drop reason SOCKET_BACKLOG; the TCPBacklogDrop counter.",
        advice: "The application holds its socket too long or its buffer is small for the rate: \
                 raise SO_RCVBUF (net.ipv4.tcp_rmem), and look for long work done while the \
                 socket is locked.",
        reasons: &["SOCKET_BACKLOG"],
        locations: &[],
        counters: &["TCPBacklogDrop"],
    },
];
