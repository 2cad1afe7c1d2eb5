//! Netfilter rule bloat: each namespace's rule counts (kernel/netfilter.rs)
//! against a limit, its peers and its own growth. Counter-derived.

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const NETFILTER_RULE_BLOAT: Mode = m("netfilter", "netfilter_rule_bloat");

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
