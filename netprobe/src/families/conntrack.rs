//! Conntrack: the insert-race and full-table kprobes
//! (netprobe-ebpf/src/conntrack.rs) and each namespace's
//! stat/nf_conntrack counters.

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};
use crate::kernel::probes::{KprobeSpec, ProbeSpec};

/// Conntrack's own drops (kprobes on the module, followed as it loads).
pub const CONNTRACK: ProbeSpec = ProbeSpec {
    name: "conntrack",
    tracepoint: None,
    kprobe: Some(KprobeSpec {
        targets: &[
            ("ct_in", "nf_conntrack_in"),
            ("ct_alloc_ret", "__nf_conntrack_alloc"),
            ("ct_confirm", "__nf_conntrack_confirm"),
            ("ct_confirm_ret", "__nf_conntrack_confirm"),
        ],
        covers: "conntrack's own drops (table full, insert failed) told apart from rule drops",
        only_without_reason: false,
        needs_sock: false,
        without: Some(
            "conntrack drops show as netfilter drops, and the conntrack counters (drop, \
             insert_failed) name them per namespace",
        ),
        module: Some("nf_conntrack"),
    }),
    needs: &[],
};

pub const CONNTRACK_TABLE_FULL: Mode = m("queue_full", "conntrack_table_full");
pub const CONNTRACK_INSERT_FAILED: Mode = m("conntrack", "conntrack_insert_failed");

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: CONNTRACK_TABLE_FULL,
        severity: Severity::Warning,
        title: "conntrack table full",
        meaning: "The connection-tracking table was at net.netfilter.nf_conntrack_max and no \
                  entry could be evicted, so packets of new flows were dropped (\"nf_conntrack: \
                  table full, dropping packet\").",
        detection:
            "Kretprobe on __nf_conntrack_alloc failing, which marks the dropped packet (its \
                    record names the flow); the conntrack `drop` counter per namespace, with \
                    nf_conntrack_count and nf_conntrack_max.",
        advice: "Raise net.netfilter.nf_conntrack_max (and nf_conntrack_buckets), or shorten the \
                 timeouts that keep idle entries (nf_conntrack_tcp_timeout_established, \
                 nf_conntrack_udp_timeout); find what opens so many flows with `conntrack -L`.",
        reasons: &[],
        locations: &[],
        counters: &["drop"],
    },
    Entry {
        mode: CONNTRACK_INSERT_FAILED,
        severity: Severity::Warning,
        title: "conntrack insert failed",
        meaning: "Conntrack could not insert a new flow's entry and dropped its packet: two \
                  packets of one new flow raced on two CPUs and the clash could not be resolved \
                  (the UDP/53 DNS race behind 5-second lookups in pods: A and AAAA queries leave \
                  from one socket at once), or a hash chain was too long.",
        detection:
            "Kretprobe on __nf_conntrack_confirm returning NF_DROP, which marks the dropped \
                    packet (its record names the flow); the conntrack insert_failed counter \
                    (chainlength for chains too long) per namespace.",
        advice: "For DNS from pods: `options single-request-reopen` (or use-vc) in resolv.conf, \
                 NodeLocal DNSCache, or a kernel with the clash-resolution fixes (5.0+; clashres \
                 counts resolved clashes). When chainlength rises instead, raise \
                 nf_conntrack_buckets.",
        reasons: &[],
        locations: &[],
        counters: &["insert_failed", "chainlength"],
    },
];
