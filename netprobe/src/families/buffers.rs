//! Full receive buffers and socket backlogs, from each namespace's
//! TcpExt and Udp counters. Counter-derived (their drops come through the
//! drop family).

use crate::families::Counters;

use crate::kernel::netns::Snapshot;
use crate::pipeline::counters::{counter_record, evidence, listing, moved_of};
use crate::pipeline::record::Record;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const RCVBUF_FULL: Mode = m("queue_full", "rcvbuf_full");
pub const BACKLOG_FULL: Mode = m("queue_full", "backlog_full");

/// The receive-buffer drop counters (`BUFFERS`'s kernel names).
pub const COUNTERS: Counters = Counters {
    triggers: &[
        "TcpExt.TCPRcvQDrop",
        "TcpExt.TCPZeroWindowDrop",
        "TcpExt.TCPBacklogDrop",
        "Udp.RcvbufErrors",
        "Udp6.RcvbufErrors",
    ],
    evidence: &[],
    read: from_counters,
};

/// The receive-buffer drop counters that moved.
pub fn from_counters(netns: u64, prev: &Snapshot, cur: &Snapshot, out: &mut Vec<Record>) {
    let moved = moved_of(&BUFFERS, prev, cur);
    if !moved.is_empty() {
        out.push(buffer_record(netns, &moved));
    }
}

/// Receive-side buffer drops, and their names in records.
pub const BUFFERS: [(&str, &str); 5] = [
    ("TcpExt.TCPRcvQDrop", "TCPRcvQDrop"),
    // Segments beyond a zero window: the receiver's buffer is full.
    ("TcpExt.TCPZeroWindowDrop", "TCPZeroWindowDrop"),
    ("TcpExt.TCPBacklogDrop", "TCPBacklogDrop"),
    ("Udp.RcvbufErrors", "UdpRcvbufErrors"),
    ("Udp6.RcvbufErrors", "Udp6RcvbufErrors"),
];

/// Segments and datagrams dropped because a socket's receive buffer (or
/// its backlog while the owner held it) was full.
pub fn buffer_record(netns: u64, moved: &[(&'static str, u64)]) -> Record {
    let backlog_only = moved.iter().all(|(n, _)| *n == "TCPBacklogDrop");
    let mode = if backlog_only {
        BACKLOG_FULL
    } else {
        RCVBUF_FULL
    };
    let mut r = counter_record("drop", Some(netns), mode);
    for &(name, d) in moved {
        evidence(&mut r, &[(name, d.into())]);
    }
    let (total, what) = listing(moved);
    r.message = format!(
        "{total} packet(s) dropped at full socket receive buffers in netns {netns}: {what}"
    );
    r
}

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
