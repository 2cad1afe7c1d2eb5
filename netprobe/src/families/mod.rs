//! The failure families. Each module holds one family's modes and their
//! catalogue entries, and how its records are classified; `FAMILIES` is the
//! one registry. The first six are named like their kernel programs in
//! netprobe-ebpf/src; the last four are derived from counters alone.

pub mod buffers;
pub mod catalogue;
pub mod conntrack;
pub mod drop;
pub mod listen;
pub mod oom;
pub mod paws;
pub mod reset;
pub mod rules;
pub mod softnet;
pub mod symptoms;

use catalogue::{Entry, Severity};

use crate::{
    kernel::{netns::Snapshot, probes::ProbeSpec},
    pipeline::{decode::Decoder, record::Record},
};

/// A failure mode and the family it belongs to (design.md's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub family: &'static str,
    pub mode: &'static str,
}

pub(crate) const fn m(family: &'static str, mode: &'static str) -> Mode {
    Mode { family, mode }
}

/// What no family claims.
pub const OTHER: Mode = m("other", "other");

/// The catalogue entry of `other`.
pub const OTHER_ENTRIES: &[Entry] = &[
    Entry {
        mode: OTHER,
        severity: Severity::Notice,
        title: "other drop",
        meaning: "A drop whose reason or location netprobe does not map to a failure mode; the \
                  kernel's own reason name is kept in the record.",
        detection: "Every kfree_skb drop above NOT_SPECIFIED, except QUEUE_PURGE (the queues a destroyed socket still held: the last FIN of every closed connection); before drop reasons (5.17), every kfree_skb except those inside sk_stream_kill_queues (the same purge, known by its addresses in kallsyms).",
        advice: "Look the reason up in the kernel's include/net/dropreason-core.h.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
];

/// Reads what moved in namespace `netns` between two samples of its
/// counters, and pushes the records it makes of that onto `out`.
pub type CounterReader = fn(netns: u64, prev: &Snapshot, cur: &Snapshot, out: &mut Vec<Record>);

/// What a family reads from each namespace's counters. The sampler keeps
/// only the counters some family names here, and reads a namespace's
/// sysctls (and its listeners) only when a trigger rose: on a node of a
/// thousand namespaces, those reads are the cost.
pub struct Counters {
    /// The counters (`Group.Name`, as sampled) whose rise makes a record.
    pub triggers: &'static [&'static str],
    /// The other counters its records report.
    pub evidence: &'static [&'static str],
    pub read: CounterReader,
}

/// One failure family.
pub struct Family {
    pub name: &'static str,
    /// Its probes (kernel programs and their fallbacks), in attach order.
    pub probes: &'static [&'static ProbeSpec],
    /// The kinds of ring-buffer record its programs write, and their decoder.
    pub kinds: &'static [u32],
    pub decode: Option<Decoder>,
    /// What the kernel's counters of a namespace say about it, sampled
    /// once a second (for failures no probe sees, or sees on every kernel).
    pub counters: Option<&'static Counters>,
    /// The catalogue entries of its modes.
    pub entries: &'static [Entry],
}

/// Every family: adding one is a module here and a line in this list.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "drop",
        probes: &[&drop::DROP],
        kinds: drop::KINDS,
        decode: Some(drop::decode),
        counters: None,
        entries: drop::ENTRIES,
    },
    Family {
        name: "reset",
        probes: &[&reset::RESET_SENT, &reset::RESET_RECEIVED],
        kinds: reset::KINDS,
        decode: Some(reset::decode),
        counters: None,
        entries: reset::ENTRIES,
    },
    Family {
        name: "listen",
        probes: &[&listen::LISTEN_OVERFLOW],
        kinds: listen::KINDS,
        decode: Some(listen::decode),
        counters: Some(&listen::COUNTERS),
        entries: listen::ENTRIES,
    },
    Family {
        name: "oom",
        probes: &[&oom::OOM],
        kinds: oom::KINDS,
        decode: Some(oom::decode),
        counters: None,
        entries: oom::ENTRIES,
    },
    Family {
        name: "symptoms",
        probes: &[&symptoms::RETRANSMIT, &symptoms::SOCKET_ERROR],
        kinds: symptoms::KINDS,
        decode: Some(symptoms::decode),
        counters: None,
        entries: symptoms::ENTRIES,
    },
    Family {
        name: "conntrack",
        probes: &[&conntrack::CONNTRACK],
        kinds: &[],
        decode: None,
        counters: Some(&conntrack::COUNTERS),
        entries: conntrack::ENTRIES,
    },
    Family {
        name: "paws",
        probes: &[],
        kinds: &[],
        decode: None,
        counters: Some(&paws::COUNTERS),
        entries: paws::ENTRIES,
    },
    Family {
        name: "buffers",
        probes: &[],
        kinds: &[],
        decode: None,
        counters: Some(&buffers::COUNTERS),
        entries: buffers::ENTRIES,
    },
    Family {
        name: "softnet",
        probes: &[],
        kinds: &[],
        decode: None,
        counters: None,
        entries: softnet::ENTRIES,
    },
    Family {
        name: "rules",
        probes: &[],
        kinds: &[],
        decode: None,
        counters: None,
        entries: rules::ENTRIES,
    },
    Family {
        name: "other",
        probes: &[],
        kinds: &[],
        decode: None,
        counters: None,
        entries: OTHER_ENTRIES,
    },
];

/// Every family's probes, in the registry's order (the order they attach).
pub fn probes() -> impl Iterator<Item = &'static ProbeSpec> + Clone {
    FAMILIES.iter().flat_map(|f| f.probes.iter().copied())
}
