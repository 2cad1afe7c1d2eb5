//! Netfilter rule bloat: each namespace's rule counts (kernel/netfilter.rs)
//! against a limit, its peers and its own growth. Counter-derived.

use crate::pipeline::counters::{counter_record, evidence};
use crate::pipeline::record::Record;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const NETFILTER_RULE_BLOAT: Mode = m("netfilter", "netfilter_rule_bloat");

/// Rule counts kept per namespace, to see steady growth.
pub const RULE_SAMPLES: usize = 6;

/// The default `rule_limit` (seed 004's sick node had 180,000; its healthy
/// neighbours 200-300).
pub const DEFAULT_RULE_LIMIT: u64 = 10_000;

/// A namespace this many times its peers' median is bloated...
pub const PEER_FACTOR: u64 = 10;

/// ...when it holds at least this many (a few dozen rules against a few
/// is not bloat).
pub const PEER_MIN: u64 = 1_000;

/// Steady growth: every sample above the one before, by this much in all.
pub const GROWTH_MIN: u64 = 1_000;

#[derive(Debug, Default)]
pub struct RuleHistory {
    totals: std::collections::VecDeque<u64>,
    /// The total when bloat was last said (said again when it grows a
    /// tenth more).
    said: Option<u64>,
}

impl RuleHistory {
    /// Adds a namespace's count of this round and says whether its rules
    /// are bloated: once, and again when they grow a tenth more.
    pub fn judge(
        &mut self,
        netns: u64,
        counts: &crate::kernel::netfilter::RuleCounts,
        peers_median: Option<u64>,
        limit: u64,
    ) -> Option<Record> {
        let total = counts.total();
        self.totals.push_back(total);
        while self.totals.len() > RULE_SAMPLES {
            self.totals.pop_front();
        }
        let history: Vec<u64> = self.totals.iter().copied().collect();
        let Some(why) = rule_bloat(total, &history, peers_median, limit) else {
            self.said = None;
            return None;
        };
        if self.said.is_some_and(|s| total < s + s / 10) {
            return None;
        }
        self.said = Some(total);
        Some(rule_bloat_record(
            netns,
            counts,
            why,
            peers_median,
            &history,
            limit,
        ))
    }
}

/// Why a namespace's rules are bloated, if they are: `limit`, `peers` or
/// `growing`.
pub fn rule_bloat(
    total: u64,
    history: &[u64],
    peers_median: Option<u64>,
    limit: u64,
) -> Option<&'static str> {
    if total > limit {
        return Some("limit");
    }
    if let Some(m) = peers_median {
        if total >= PEER_MIN && total > PEER_FACTOR * m.max(1) {
            return Some("peers");
        }
    }
    let rising = history.len() >= RULE_SAMPLES && history.windows(2).all(|w| w[1] > w[0]);
    if rising && history[history.len() - 1] - history[0] >= GROWTH_MIN {
        return Some("growing");
    }
    None
}

/// The record of a namespace whose rules are bloated.
pub fn rule_bloat_record(
    netns: u64,
    counts: &crate::kernel::netfilter::RuleCounts,
    why: &'static str,
    peers_median: Option<u64>,
    history: &[u64],
    limit: u64,
) -> Record {
    let mut r = counter_record("rule_count", Some(netns), NETFILTER_RULE_BLOAT);
    let total = counts.total();
    let nft: u64 = counts.nft.values().sum();
    let legacy: u64 = counts.legacy.values().sum();
    evidence(
        &mut r,
        &[
            ("rules", total.into()),
            ("nftables_rules", nft.into()),
            ("iptables_legacy_entries", legacy.into()),
            ("rule_limit", limit.into()),
            ("bloat", why.into()),
        ],
    );
    if counts.nft_capped {
        // The count stopped at the cap (a dump costs its square).
        evidence(&mut r, &[("nftables_rules_at_least", true.into())]);
    }
    if let Some(m) = peers_median {
        evidence(&mut r, &[("peers_median", m.into())]);
    }
    if let (Some(first), Some(last)) = (history.first(), history.last()) {
        evidence(&mut r, &[("grew_by", last.saturating_sub(*first).into())]);
    }
    let largest = counts.largest();
    if let Some((chain, n)) = largest {
        evidence(
            &mut r,
            &[
                ("largest_chain", chain.to_string().into()),
                ("largest_chain_rules", n.into()),
            ],
        );
    }
    let because = match why {
        "limit" => format!("above the limit of {limit}"),
        "peers" => format!(
            "{}x the median of the node's other namespaces ({})",
            total / peers_median.unwrap_or(1).max(1),
            peers_median.unwrap_or(0)
        ),
        _ => format!(
            "growing steadily ({} more in the last {} samples)",
            history
                .last()
                .unwrap_or(&0)
                .saturating_sub(*history.first().unwrap_or(&0)),
            history.len()
        ),
    };
    r.message = format!(
        "{}{total} netfilter rules in netns {netns} ({nft} nftables, {legacy} iptables-legacy \
         entries), {because}{}: every packet walks them",
        if counts.nft_capped { "at least " } else { "" },
        largest.map_or(String::new(), |(c, n)| format!(
            "; the largest is {c} with {n}"
        ))
    );
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: NETFILTER_RULE_BLOAT,
        severity: Severity::Warning,
        title: "netfilter rule bloat",
        meaning: "A network namespace holds far more netfilter rules than it should: far above \
                  the node's other namespaces, above the limit, or growing steadily. Every packet \
                  walks them, so latency and CPU grow with the count; seed 004's node had \
                  180,000 iptables rules against 200-300 on its healthy neighbours, left by a \
                  leak that appended the same rules again and again.",
        detection: "Once a minute in each namespace: nftables rules counted from a netlink dump \
                    (iptables-nft's included), iptables-legacy entries from IPT_SO_GET_INFO per \
                    table. Bloat when a namespace is above `rule_limit` (default 10,000), more \
                    than 10 times the median of the others (and at least 1,000), or grew in \
                    each of the last 6 samples by 1,000 or more in all. Needs CAP_NET_ADMIN.",
        advice: "Find what keeps adding rules: duplicates show with `iptables-save | sort | uniq \
                 -cd | sort -n | tail` (or `nft list ruleset`). A known cause is the k3s/kube-proxy \
                 iptables-version mismatch (iptables-legacy and iptables-nft both in use) that \
                 re-adds its rules on every sync: use one iptables backend on the node, upgrade \
                 the component that leaks, and flush the duplicates.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn rule_bloat_by_limit_peers_or_steady_growth() {
        // Seed 004: 180,000 against a limit of 10,000.
        assert_eq!(rule_bloat(180_000, &[180_000], None, 10_000), Some("limit"));
        // 5,000 against neighbours of 250: ten times and more.
        assert_eq!(
            rule_bloat(5_000, &[5_000], Some(250), 10_000),
            Some("peers")
        );
        // A few dozen against a few: not bloat.
        assert_eq!(rule_bloat(60, &[60], Some(3), 10_000), None);
        // Growing in every one of the last six samples, by 1,000 in all.
        let rising = [1_000, 1_300, 1_600, 1_900, 2_200, 2_500];
        assert_eq!(
            rule_bloat(2_500, &rising, Some(2_400), 10_000),
            Some("growing")
        );
        let mut flat = rising;
        flat[3] = 1_600;
        assert_eq!(rule_bloat(2_500, &flat, Some(2_400), 10_000), None);
        // A short history cannot show growth.
        assert_eq!(rule_bloat(2_500, &rising[3..], Some(2_400), 10_000), None);
        let counts = crate::kernel::netfilter::RuleCounts {
            nft: BTreeMap::from([("inet filter input".to_string(), 20_000)]),
            nft_capped: true,
            legacy: BTreeMap::from([("ip filter".to_string(), 180_004)]),
            errors: vec![],
        };
        let r = rule_bloat_record(7, &counts, "limit", Some(250), &[200_004], 10_000);
        assert_eq!(
            (r.kind, r.family, r.mode, r.evidence_source()),
            (
                "rule_count",
                Some("netfilter"),
                Some("netfilter_rule_bloat"),
                Some("counters")
            )
        );
        assert_eq!(
            r.message,
            "at least 200004 netfilter rules in netns 7 (20000 nftables, 180004 iptables-legacy \
             entries), above the limit of 10000; the largest is ip filter with 180004: every \
             packet walks them"
        );
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(
            (&e["rules"], &e["largest_chain"]),
            (&200_004.into(), &"ip filter".into())
        );
        assert!(r.advice.unwrap().contains("uniq -cd"));
    }
}
