//! Conntrack: the insert-race and full-table kprobes
//! (netprobe-ebpf/src/conntrack.rs) and each namespace's
//! stat/nf_conntrack counters.

use crate::families::Counters;

use crate::kernel::netns::Snapshot;
use crate::kernel::probes::{KprobeSpec, ProbeSpec};
use crate::pipeline::counters::{counter_record, delta, evidence};
use crate::pipeline::record::Record;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

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

/// conntrack's statistics (`stat/nf_conntrack`).
pub const COUNTERS: Counters = Counters {
    triggers: &["Conntrack.drop", "Conntrack.insert_failed"],
    evidence: &[
        "Conntrack.early_drop",
        "Conntrack.clashres",
        "Conntrack.chainlength",
    ],
    read: from_counters,
};

/// conntrack's own counters: packets dropped at a full table, and entries
/// that could not be inserted.
pub fn from_counters(netns: u64, prev: &Snapshot, cur: &Snapshot, out: &mut Vec<Record>) {
    let dropped = delta(prev, cur, "Conntrack.drop");
    if dropped > 0 {
        out.push(conntrack_full_record(netns, prev, cur, dropped));
    }
    let failed = delta(prev, cur, "Conntrack.insert_failed");
    if failed > 0 {
        out.push(conntrack_insert_record(netns, prev, cur, failed));
    }
}

pub fn conntrack_figures(r: &mut Record, prev: &Snapshot, cur: &Snapshot) {
    for (name, counter) in [
        ("early_drop", "Conntrack.early_drop"),
        ("clashres", "Conntrack.clashres"),
        // st->chaintoolong, printed under this name.
        ("chainlength", "Conntrack.chainlength"),
    ] {
        if cur.counters.contains_key(counter) {
            evidence(r, &[(name, delta(prev, cur, counter).into())]);
        }
    }
    if let Some(c) = cur.conntrack_count {
        evidence(r, &[("nf_conntrack_count", c.into())]);
    }
    if let Some(m) = cur.conntrack_max {
        evidence(r, &[("nf_conntrack_max", m.into())]);
    }
}

/// Packets conntrack dropped because no entry could be made: the table was
/// at nf_conntrack_max and early drop found nothing to evict.
pub fn conntrack_full_record(netns: u64, prev: &Snapshot, cur: &Snapshot, dropped: u64) -> Record {
    let mut r = counter_record("conntrack", Some(netns), CONNTRACK_TABLE_FULL);
    evidence(&mut r, &[("drop", dropped.into())]);
    conntrack_figures(&mut r, prev, cur);
    let fill = match (cur.conntrack_count, cur.conntrack_max) {
        (Some(c), Some(m)) => format!(" ({c} entries, nf_conntrack_max {m})"),
        _ => String::new(),
    };
    r.message = format!(
        "conntrack table full in netns {netns}{fill}: {dropped} packet(s) dropped for want of an entry"
    );
    r
}

/// Packets dropped because their new entry could not be inserted: two
/// packets of one flow raced (the UDP/DNS SNAT race) or the chain was too long.
pub fn conntrack_insert_record(netns: u64, prev: &Snapshot, cur: &Snapshot, failed: u64) -> Record {
    let mut r = counter_record("conntrack", Some(netns), CONNTRACK_INSERT_FAILED);
    evidence(&mut r, &[("insert_failed", failed.into())]);
    conntrack_figures(&mut r, prev, cur);
    let why = if delta(prev, cur, "Conntrack.chainlength") > 0 {
        "hash chains too long (the table has too few buckets for its entries)"
    } else {
        "packets of one flow raced (typically UDP DNS through SNAT)"
    };
    r.message = format!(
        "conntrack could not insert {failed} new entr{} in netns {netns}: {why}; the packets \
         were dropped",
        if failed == 1 { "y" } else { "ies" }
    );
    r
}

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
