//! The catalogue of failure modes (design.md's vocabulary): for each mode,
//! its family and severity, what it means, how netprobe detects it, what to
//! change, and the kernel's drop-reason names, drop locations and counters
//! that raise it. Classification (`classify`), the records' general advice
//! and `netprobe explain` all read this one table.

use super::{Mode, FAMILIES};

/// How bad a mode is for the node's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: a reset or an unmapped drop, often normal.
    Notice,
    /// Packets or connections are being lost.
    Warning,
    /// The node itself is in trouble (the OOM killer ran).
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

pub struct Entry {
    pub mode: Mode,
    pub severity: Severity,
    /// One line: what happened.
    pub title: &'static str,
    pub meaning: &'static str,
    pub detection: &'static str,
    /// What to change, in general (records add their flow or listener).
    pub advice: &'static str,
    /// The kernel's drop-reason names (kfree_skb, 5.17+) for this mode.
    pub reasons: &'static [&'static str],
    /// Functions a drop happens in, on kernels without reasons, that
    /// mean this mode and nothing else.
    pub locations: &'static [&'static str],
    /// The procfs counters that raise it when no probe sees the event.
    pub counters: &'static [&'static str],
}

/// Every family's entries, in the registry's order.
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    FAMILIES.iter().flat_map(|f| f.entries.iter())
}

/// The entry of a mode name (`tw_recycle`, `accept_queue_full`, ...).
pub fn by_mode(mode: &str) -> Option<&'static Entry> {
    entries().find(|e| e.mode.mode == mode)
}

/// The entry a kernel drop-reason name maps to.
pub fn by_reason(reason: &str) -> Option<&'static Entry> {
    entries().find(|e| e.reasons.contains(&reason))
}

/// The entry a drop location (function) maps to, on kernels without reasons.
pub fn by_location(function: &str) -> Option<&'static Entry> {
    entries().find(|e| e.locations.contains(&function))
}

/// The entry of `mode`; every mode classify produces is in the table.
pub fn of(mode: Mode) -> &'static Entry {
    by_mode(mode.mode).unwrap_or(&super::OTHER_ENTRIES[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::drop;

    /// Every mode design.md names, with its family.
    const DESIGN: [(&str, &str); 18] = [
        ("tw_recycle", "tw_recycle"),
        ("queue_full", "accept_queue_full"),
        ("queue_full", "syn_queue_full"),
        ("queue_full", "rcvbuf_full"),
        ("queue_full", "backlog_full"),
        ("queue_full", "conntrack_table_full"),
        ("queue_full", "qdisc_full"),
        ("queue_full", "cpu_backlog_full"),
        ("queue_full", "nic_ring_full"),
        ("oom_stall", "oom_stall"),
        ("oom_stall", "oom_kill"),
        ("conntrack", "conntrack_insert_failed"),
        ("netfilter", "netfilter_drop"),
        ("netfilter", "netfilter_rule_bloat"),
        ("reset", "no_listener"),
        ("reset", "reset_other"),
        ("unreachable", "unreachable"),
        ("other", "other"),
    ];

    #[test]
    fn the_catalogue_is_design_mds_vocabulary_once_each() {
        assert_eq!(entries().count(), DESIGN.len());
        for (family, mode) in DESIGN {
            let e = by_mode(mode).unwrap_or_else(|| panic!("{mode} missing"));
            assert_eq!(e.mode.family, family);
            assert!(!e.meaning.is_empty() && !e.detection.is_empty() && !e.advice.is_empty());
        }
        // A reason or location maps to one mode only.
        let mut seen = std::collections::BTreeSet::new();
        for e in entries() {
            for r in e.reasons.iter().chain(e.locations) {
                assert!(seen.insert(*r), "{r} is in two entries");
            }
        }
    }

    #[test]
    fn reasons_of_real_kernels_map_through_the_catalogue() {
        // Names from the 6.18 format file this project keeps.
        let fmt = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/kernels/6.18/events/skb/kfree_skb/format"),
        )
        .unwrap();
        for e in entries() {
            for r in e.reasons {
                if *r == "FQ_BAND_LIMIT" || *r == "FQ_HORIZON_LIMIT" || *r == "FQ_FLOW_LIMIT" {
                    continue; // newer than 6.18
                }
                assert!(fmt.contains(&format!("\"{r}\"")), "{r} not a 6.18 reason");
                assert_eq!(drop::drop_reason(r), e.mode);
            }
        }
    }
}
