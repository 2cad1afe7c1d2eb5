//! TCP timestamp (PAWS) rejections, the tw_recycle family: the PAWS
//! counters of each namespace, and the NAT clocks the PAWS drops show.
//! Counter-derived (the drops themselves come through the drop family).

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const TW_RECYCLE: Mode = m("tw_recycle", "tw_recycle");

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[Entry {
    mode: TW_RECYCLE,
    severity: Severity::Warning,
    title: "TCP timestamp (PAWS) rejection",
    meaning: "A segment carried a TCP timestamp older than the last one the kernel saw on its \
                  connection or from its peer, and was dropped (PAWS, RFC 7323). Behind NAT many \
                  clients share one address with different timestamp clocks; with \
                  net.ipv4.tcp_tw_recycle=1 (kernels before 4.12) their SYNs are dropped \
                  silently, and the clients only see connect timeouts.",
    detection: "Drop reasons TCP_RFC7323_PAWS, _PAWS_ACK, _TW_PAWS and _TSECR (5.17+); the \
                    PAWSPassive, PAWSActive, PAWSEstab and PAWSTimewait counters of each network \
                    namespace, with tcp_timestamps and tcp_tw_recycle.",
    advice: "Set net.ipv4.tcp_tw_recycle=0 where it exists (4.11 and older). Look for NAT or a \
                 load balancer in front of this host that mixes clients with different timestamp \
                 clocks; turning TCP timestamps off on those clients is the last resort.",
    reasons: &[
        "TCP_RFC7323_PAWS",
        "TCP_RFC7323_PAWS_ACK",
        "TCP_RFC7323_TW_PAWS",
        "TCP_RFC7323_TSECR",
    ],
    locations: &[],
    counters: &["PAWSPassive", "PAWSActive", "PAWSEstab", "PAWSTimewait"],
}];
