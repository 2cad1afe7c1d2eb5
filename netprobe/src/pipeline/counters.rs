//! Counter evidence: what the kernel's own counters say moved in a
//! namespace between two samples, turned into records where no probe sees
//! the failure itself (SYN queue overflows, SYNs dropped at a full accept
//! queue on kernels without kprobes), naming the listener from sock_diag.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    families,
    kernel::netns::{DiagSock, Snapshot, TCP_LISTEN, TCP_SYN_RECV},
    pipeline::packet::endpoint,
    pipeline::record::Record,
};

/// How much `name` grew from `prev` to `cur`: 0 when `cur` lacks it or it
/// went backwards; from 0 when `prev` lacks it (a new namespace).
pub fn delta(prev: &Snapshot, cur: &Snapshot, name: &str) -> u64 {
    match cur.counters.get(name) {
        Some(b) => b.saturating_sub(*prev.counters.get(name).unwrap_or(&0)),
        None => 0,
    }
}

/// Request sockets (the SYN queue) per local address and port.
fn syn_queues(socks: &[DiagSock]) -> BTreeMap<(std::net::IpAddr, u16), u32> {
    let mut q = BTreeMap::new();
    for s in socks.iter().filter(|s| s.state == TCP_SYN_RECV) {
        *q.entry((s.addr, s.port)).or_insert(0) += 1;
    }
    q
}

/// The listener a request socket queues at: same port, same address or a
/// wildcard listener.
fn listener_of(socks: &[DiagSock], addr: std::net::IpAddr, port: u16) -> Option<&DiagSock> {
    let mut on_port = socks
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.port == port);
    let all: Vec<&DiagSock> = on_port.by_ref().collect();
    all.iter()
        .find(|s| s.addr == addr)
        .or_else(|| all.iter().find(|s| s.addr.is_unspecified()))
        .copied()
}

/// A record raised by counters (`evidence.source = "counters"`).
fn counter_record(kind: &'static str, netns: u64, mode: families::Mode) -> Record {
    let mut r = Record {
        kind,
        netns: Some(netns),
        ..Record::default()
    };
    r.set_mode(mode);
    evidence(&mut r, &[("source", "counters".into())]);
    r
}

/// The total of counters that moved, and them as `Name +n, ...`.
fn listing(moved: &[(&'static str, u64)]) -> (u64, String) {
    let total = moved.iter().map(|(_, d)| d).sum();
    let what = moved
        .iter()
        .map(|(n, d)| format!("{n} +{d}"))
        .collect::<Vec<_>>()
        .join(", ");
    (total, what)
}

/// Whether a counter record's evidence figure is a delta (what moved
/// since the last sample, to be summed when records fold) rather than a
/// level (a queue, a limit, a sysctl, kept at its worst). The kernel's
/// SNMP and netstat counters are named in CamelCase (TCPRcvQDrop,
/// ListenOverflows, PAWSEstab, UdpRcvbufErrors); the rest are listed.
pub fn is_delta(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_uppercase())
        || matches!(
            key,
            "drop"
                | "insert_failed"
                | "early_drop"
                | "clashres"
                | "chainlength"
                | "dropped"
                | "oom_kill"
        )
}

fn evidence(r: &mut Record, items: &[(&'static str, Value)]) {
    let e = r.evidence.get_or_insert_with(BTreeMap::new);
    for (k, v) in items {
        e.insert(k, v.clone());
    }
}

/// The counters that make a namespace's sockets worth dumping.
pub const WATCHED: [&str; 3] = [
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.ListenOverflows",
];

/// Whether any watched counter moved since `prev`.
pub fn moved(prev: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> bool {
    WATCHED
        .iter()
        .any(|k| cur.get(*k).unwrap_or(&0) > prev.get(*k).unwrap_or(&0))
}

/// Samples every namespace's counters. Namespaces present at the baseline
/// (taken before netprobe says it is ready) are compared with it: history
/// is not news. One that appears later is new, so its counters started at
/// zero and its first sample already counts.
pub struct Sampler {
    /// softnet_stat's dropped total, and vmstat's oom_kill, at the last round.
    softnet_dropped: Option<u64>,
    oom_kills: Option<u64>,
    prev: BTreeMap<u64, Snapshot>,
    errors_said: std::collections::BTreeSet<u64>,
    owners: crate::kernel::containers::Attributor,
    /// Rounds so far: rules are counted every `RULES_EVERY`th.
    rounds: u64,
    /// Each namespace's rule totals, the last `RULE_SAMPLES` counts.
    rules: BTreeMap<u64, RuleHistory>,
    /// The rule count above which a namespace is bloated (config
    /// `rule_limit`, reloaded on SIGHUP).
    pub rule_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Rules are counted once a minute (a dump of 180,000 rules is not a
/// once-a-second cost).
pub const RULES_EVERY: u64 = 60;
/// Rule counts kept per namespace, to see steady growth.
const RULE_SAMPLES: usize = 6;
/// The default `rule_limit` (seed 004's sick node had 180,000; its healthy
/// neighbours 200-300).
pub const DEFAULT_RULE_LIMIT: u64 = 10_000;
/// A namespace this many times its peers' median is bloated...
const PEER_FACTOR: u64 = 10;
/// ...when it holds at least this many (a few dozen rules against a few
/// is not bloat).
const PEER_MIN: u64 = 1_000;
/// Steady growth: every sample above the one before, by this much in all.
const GROWTH_MIN: u64 = 1_000;

#[derive(Debug, Default)]
struct RuleHistory {
    totals: std::collections::VecDeque<u64>,
    /// The total when bloat was last said (said again when it grows a
    /// tenth more).
    said: Option<u64>,
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
    let mut r = counter_record("rule_count", netns, families::rules::NETFILTER_RULE_BLOAT);
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

impl Sampler {
    /// Says which namespaces' rules are bloated, after a round that counted
    /// them (each said once, and again when it grows a tenth more).
    fn judge_rules(
        &mut self,
        counted: &[(u64, crate::kernel::netfilter::RuleCounts)],
    ) -> Vec<Record> {
        let limit = self.rule_limit.load(std::sync::atomic::Ordering::Relaxed);
        let mut totals: Vec<u64> = counted.iter().map(|(_, c)| c.total()).collect();
        totals.sort_unstable();
        let mut out = Vec::new();
        for (inode, counts) in counted {
            let total = counts.total();
            // The median of the others (at least two of them).
            let peers: Vec<u64> = {
                let mut v = totals.clone();
                if let Some(i) = v.iter().position(|t| *t == total) {
                    v.remove(i);
                }
                v
            };
            let median = (peers.len() >= 2).then(|| peers[peers.len() / 2]);
            let h = self.rules.entry(*inode).or_default();
            h.totals.push_back(total);
            while h.totals.len() > RULE_SAMPLES {
                h.totals.pop_front();
            }
            let history: Vec<u64> = h.totals.iter().copied().collect();
            let Some(why) = rule_bloat(total, &history, median, limit) else {
                h.said = None;
                continue;
            };
            if h.said.is_some_and(|s| total < s + s / 10) {
                continue;
            }
            h.said = Some(total);
            out.push(rule_bloat_record(
                *inode, counts, why, median, &history, limit,
            ));
        }
        out
    }
}

impl Sampler {
    /// Takes the baseline of every namespace there is now (counting their
    /// netfilter rules against `rule_limit`).
    pub fn baseline(rule_limit: u64) -> (Sampler, Vec<Record>) {
        let mut s = Sampler {
            softnet_dropped: None,
            oom_kills: None,
            prev: BTreeMap::new(),
            errors_said: Default::default(),
            owners: crate::kernel::containers::Attributor::new(
                std::path::Path::new("/proc"),
                std::path::Path::new("/var/log/pods"),
            ),
            rounds: 0,
            rules: BTreeMap::new(),
            rule_limit: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rule_limit)),
        };
        let records = s.round(true);
        (s, records)
    }

    /// One round over every namespace: the records of what moved (and of
    /// namespaces that could not be read, once each).
    pub fn round(&mut self, baseline: bool) -> Vec<Record> {
        use std::path::Path;
        let mut out = Vec::new();
        // Host-wide (every namespace shows the same per-CPU figures).
        let dropped = std::fs::read_to_string("/proc/net/softnet_stat")
            .ok()
            .and_then(|t| softnet_dropped(&t));
        if let (Some(before), Some(now)) = (self.softnet_dropped, dropped) {
            if now > before {
                let max = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                out.push(cpu_backlog_record(now - before, max));
            }
        }
        if dropped.is_some() {
            self.softnet_dropped = dropped;
        }
        let kills = std::fs::read_to_string("/proc/vmstat")
            .ok()
            .and_then(|t| vmstat_oom_kills(&t));
        if let (Some(before), Some(now)) = (self.oom_kills, kills) {
            if now > before {
                out.push(oom_kill_record(now - before));
            }
        }
        if kills.is_some() {
            self.oom_kills = kills;
        }
        let spaces = crate::kernel::netns::discover(Path::new("/proc"), Path::new("/run/netns"));
        // Rules are counted once a minute (Some: whether nftables is there).
        let want_rules = self
            .rounds
            .is_multiple_of(RULES_EVERY)
            .then(crate::kernel::netfilter::nftables_present);
        self.rounds += 1;
        let mut counted = Vec::new();
        self.prev
            .retain(|inode, _| spaces.iter().any(|n| n.inode == *inode));
        self.rules
            .retain(|inode, _| spaces.iter().any(|n| n.inode == *inode));
        self.errors_said
            .retain(|inode| spaces.iter().any(|n| n.inode == *inode));
        for ns in &spaces {
            if !baseline && !self.prev.contains_key(&ns.inode) {
                self.prev.insert(ns.inode, Snapshot::default());
            }
            let before = self.prev.get(&ns.inode).map(|s| &s.counters);
            let want = |cur: &BTreeMap<String, u64>| before.is_some_and(|b| moved(b, cur));
            match crate::kernel::netns::sample(ns, &want, want_rules) {
                Ok(mut cur) => {
                    if let Some(rules) = cur.rules.take() {
                        counted.push((ns.inode, rules));
                    }
                    if let Some(p) = self.prev.get(&ns.inode) {
                        let mut found = records(ns.inode, p, &cur);
                        if !found.is_empty() {
                            // The container and pod the namespace is, through
                            // a process in it (/proc/PID/ns/net).
                            let pid = ns
                                .path
                                .parent()
                                .and_then(Path::parent)
                                .and_then(|d| d.file_name()?.to_str()?.parse().ok());
                            if let Some((container, pod)) = pid.map(|p| self.owners.of_pid(p)) {
                                for r in &mut found {
                                    r.container.clone_from(&container);
                                    r.pod.clone_from(&pod);
                                }
                            }
                        }
                        out.extend(found);
                    }
                    if let Some(why) = &cur.sockets_error {
                        if self.errors_said.insert(ns.inode) {
                            let mut r = Record::error(format!(
                                "listening sockets of netns {} unknown (records name no port): {why}",
                                ns.inode
                            ));
                            r.netns = Some(ns.inode);
                            out.push(r);
                        }
                    }
                    self.prev.insert(ns.inode, cur);
                }
                // A namespace that vanished since discovery is not news;
                // anything else is said once per namespace.
                Err(why)
                    if std::fs::metadata(&ns.path).is_ok() && self.errors_said.insert(ns.inode) =>
                {
                    let mut r = Record::error(format!("counters of netns {}: {why}", ns.inode));
                    r.netns = Some(ns.inode);
                    out.push(r);
                }
                Err(_) => {}
            }
        }
        if want_rules.is_some() {
            out.extend(self.judge_rules(&counted));
        }
        out
    }

    /// Rounds every `period` on a thread of its own, until `stop`.
    pub fn spawn(
        mut self,
        period: std::time::Duration,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::sync::mpsc::Receiver<Record> {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("netprobe-ctr".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    std::thread::sleep(period.saturating_sub(started.elapsed()));
                    for r in self.round(false) {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // The receiver then reports nothing; say why once.
            tracing::error!("cannot start the counter thread: {e}");
        }
        rx
    }
}

/// Records for what moved in namespace `netns` between `prev` and `cur`.
pub fn records(netns: u64, prev: &Snapshot, cur: &Snapshot) -> Vec<Record> {
    let mut out = Vec::new();
    let dropped = delta(prev, cur, "TcpExt.TCPReqQFullDrop");
    let cookies = delta(prev, cur, "TcpExt.TCPReqQFullDoCookies");
    if dropped > 0 || cookies > 0 {
        out.push(syn_queue_record(netns, cur, dropped, cookies));
    }
    let overflows = delta(prev, cur, "TcpExt.ListenOverflows");
    if overflows > 0 {
        out.push(accept_queue_record(netns, prev, cur, overflows));
    }
    let paws: Vec<(&'static str, u64)> = PAWS
        .iter()
        .map(|&(name, short)| (short, delta(prev, cur, name)))
        .filter(|&(_, d)| d > 0)
        .collect();
    if !paws.is_empty() {
        out.push(paws_record(netns, prev, cur, &paws));
    }
    let buffers: Vec<(&'static str, u64)> = BUFFERS
        .iter()
        .map(|&(name, short)| (short, delta(prev, cur, name)))
        .filter(|&(_, d)| d > 0)
        .collect();
    if !buffers.is_empty() {
        out.push(buffer_record(netns, &buffers));
    }
    let ct_drop = delta(prev, cur, "Conntrack.drop");
    if ct_drop > 0 {
        out.push(conntrack_full_record(netns, prev, cur, ct_drop));
    }
    let insert_failed = delta(prev, cur, "Conntrack.insert_failed");
    if insert_failed > 0 {
        out.push(conntrack_insert_record(netns, prev, cur, insert_failed));
    }
    out
}

fn conntrack_figures(r: &mut Record, prev: &Snapshot, cur: &Snapshot) {
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
fn conntrack_full_record(netns: u64, prev: &Snapshot, cur: &Snapshot, dropped: u64) -> Record {
    let mut r = counter_record(
        "conntrack",
        netns,
        families::conntrack::CONNTRACK_TABLE_FULL,
    );
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
fn conntrack_insert_record(netns: u64, prev: &Snapshot, cur: &Snapshot, failed: u64) -> Record {
    let mut r = counter_record(
        "conntrack",
        netns,
        families::conntrack::CONNTRACK_INSERT_FAILED,
    );
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

/// `/proc/net/softnet_stat`: one line per CPU of hex columns with no header
/// (a fixed layout: processed, dropped, time_squeeze, ...). Returns the
/// packets dropped because a CPU's input backlog was full, summed over
/// CPUs; `None` for text that is not that file.
pub fn softnet_dropped(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let dropped = line.split_ascii_whitespace().nth(1)?;
        total = total.saturating_add(u64::from_str_radix(dropped, 16).ok()?);
        lines += 1;
    }
    (lines > 0).then_some(total)
}

/// Packets dropped at full CPU input backlogs (`netdev_max_backlog`), from
/// the host-wide softnet_stat (the same in every namespace).
pub fn cpu_backlog_record(dropped: u64, max_backlog: Option<u64>) -> Record {
    let mut r = Record {
        kind: "drop",
        ..Record::default()
    };
    r.set_mode(families::softnet::CPU_BACKLOG_FULL);
    evidence(
        &mut r,
        &[("source", "counters".into()), ("dropped", dropped.into())],
    );
    if let Some(m) = max_backlog {
        evidence(&mut r, &[("netdev_max_backlog", m.into())]);
    }
    r.message = format!(
        "{dropped} packet(s) dropped because a CPU's input backlog was full{} \
         (softnet_stat dropped)",
        max_backlog.map_or(String::new(), |m| format!(
            " (net.core.netdev_max_backlog {m})"
        ))
    );
    r
}

/// `oom_kill` from `/proc/vmstat` text (4.13+): OOM kills since boot
/// (parsed by procfs).
pub fn vmstat_oom_kills(text: &str) -> Option<u64> {
    use procfs::FromRead as _;
    let stat = procfs::VmStat::from_read(text.as_bytes()).ok()?;
    stat.0.get("oom_kill").and_then(|&n| u64::try_from(n).ok())
}

/// `/proc/pressure/memory` (PSI, 4.20+): the `some` and `full` avg10
/// figures, the share of the last 10 s in which tasks stalled on memory
/// (parsed by procfs).
pub fn memory_pressure(text: &str) -> Option<(f64, f64)> {
    use procfs::FromRead as _;
    let p = procfs::MemoryPressure::from_read(text.as_bytes()).ok()?;
    Some((f64::from(p.some.avg10), f64::from(p.full.avg10)))
}

/// Reads the memory pressure now, as evidence.
pub fn add_memory_pressure(r: &mut Record) {
    if let Some((some, full)) = std::fs::read_to_string("/proc/pressure/memory")
        .ok()
        .and_then(|t| memory_pressure(&t))
    {
        evidence(
            r,
            &[
                ("memory_pressure_some_avg10", some.into()),
                ("memory_pressure_full_avg10", full.into()),
            ],
        );
    }
}

/// OOM kills the kernel counted (vmstat `oom_kill`, host-wide): what shows
/// them where the oom probe cannot attach.
pub fn oom_kill_record(kills: u64) -> Record {
    let mut r = Record {
        kind: "oom",
        ..Record::default()
    };
    // Counters alone cannot tell whether the kill stalled the node.
    r.set_mode(families::oom::OOM_KILL);
    evidence(
        &mut r,
        &[("source", "counters".into()), ("oom_kill", kills.into())],
    );
    add_memory_pressure(&mut r);
    r.message = format!(
        "the kernel's OOM killer killed {kills} process(es) (vmstat oom_kill); counters alone \
         cannot tell whether the node stalled"
    );
    r
}

/// Receive-side buffer drops, and their names in records.
const BUFFERS: [(&str, &str); 5] = [
    ("TcpExt.TCPRcvQDrop", "TCPRcvQDrop"),
    // Segments beyond a zero window: the receiver's buffer is full.
    ("TcpExt.TCPZeroWindowDrop", "TCPZeroWindowDrop"),
    ("TcpExt.TCPBacklogDrop", "TCPBacklogDrop"),
    ("Udp.RcvbufErrors", "UdpRcvbufErrors"),
    ("Udp6.RcvbufErrors", "Udp6RcvbufErrors"),
];

/// Segments and datagrams dropped because a socket's receive buffer (or
/// its backlog while the owner held it) was full.
fn buffer_record(netns: u64, moved: &[(&'static str, u64)]) -> Record {
    let backlog_only = moved.iter().all(|(n, _)| *n == "TCPBacklogDrop");
    let mode = if backlog_only {
        families::buffers::BACKLOG_FULL
    } else {
        families::buffers::RCVBUF_FULL
    };
    let mut r = counter_record("drop", netns, mode);
    for &(name, d) in moved {
        evidence(&mut r, &[(name, d.into())]);
    }
    let (total, what) = listing(moved);
    r.message = format!(
        "{total} packet(s) dropped at full socket receive buffers in netns {netns}: {what}"
    );
    r
}

/// The timestamp-rejection counters, and their names in records.
const PAWS: [(&str, &str); 4] = [
    ("TcpExt.PAWSPassive", "PAWSPassive"),
    ("TcpExt.PAWSActive", "PAWSActive"),
    ("TcpExt.PAWSEstab", "PAWSEstab"),
    ("TcpExt.PAWSTimewait", "PAWSTimewait"),
];

/// PAWS rejections: segments (or SYNs, PAWSPassive) whose TCP timestamp is
/// older than the one the kernel remembers. With tcp_tw_recycle=1 (kernels
/// before 4.12) PAWSPassive rising with ListenDrops is the NAT incident.
fn paws_record(
    netns: u64,
    prev: &Snapshot,
    cur: &Snapshot,
    moved: &[(&'static str, u64)],
) -> Record {
    let mut r = counter_record("drop", netns, families::paws::TW_RECYCLE);
    for &(name, d) in moved {
        evidence(&mut r, &[(name, d.into())]);
    }
    let listen_drops = delta(prev, cur, "TcpExt.ListenDrops");
    if listen_drops > 0 {
        evidence(&mut r, &[("ListenDrops", listen_drops.into())]);
    }
    for (name, v) in [
        ("tcp_timestamps", cur.timestamps),
        ("tcp_tw_recycle", cur.tw_recycle),
    ] {
        if let Some(v) = v {
            evidence(&mut r, &[(name, v.into())]);
        }
    }
    let (total, what) = listing(moved);
    let passive = delta(prev, cur, "TcpExt.PAWSPassive");
    // The NAT signature: every SYN rejected by timestamp is a dropped SYN.
    let in_step = if passive > 0 && passive == listen_drops {
        format!(
            "; ListenDrops +{listen_drops} in step: SYNs of clients behind NAT (one address, \
             several timestamp clocks) are dropped"
        )
    } else {
        String::new()
    };
    let recycle = match cur.tw_recycle {
        Some(1) => "; tcp_tw_recycle=1 is on".to_string(),
        Some(_) => "; tcp_tw_recycle is off".to_string(),
        None => String::new(),
    };
    r.message = format!(
        "the kernel rejected {total} segment(s) by TCP timestamp (PAWS) in netns {netns}: \
         {what}{in_step}{recycle}"
    );
    if cur.tw_recycle == Some(1) {
        r.advice = Some(
            "Set net.ipv4.tcp_tw_recycle=0: with it on, clients behind one NAT address whose \
             clocks differ have their SYNs dropped silently."
                .into(),
        );
    }
    r
}

fn syn_queue_record(netns: u64, cur: &Snapshot, dropped: u64, cookies: u64) -> Record {
    let mut r = counter_record("syn_queue_full", netns, families::listen::SYN_QUEUE_FULL);
    // The listener with the longest SYN queue, relative to its backlog.
    let queues = syn_queues(&cur.sockets);
    let worst = queues
        .iter()
        .filter_map(|(&(addr, port), &n)| Some((listener_of(&cur.sockets, addr, port)?, n)))
        .max_by_key(|(l, n)| (*n as u64 * 1000) / (l.wqueue.max(1) as u64));
    let cookies_on = cur.syncookies.map(|v| v != 0);
    evidence(
        &mut r,
        &[
            ("TCPReqQFullDrop", dropped.into()),
            ("TCPReqQFullDoCookies", cookies.into()),
        ],
    );
    if let Some(v) = cur.syncookies {
        evidence(&mut r, &[("tcp_syncookies", v.into())]);
    }
    let place = match worst {
        Some((l, n)) => {
            r.addr = Some(l.addr.to_string());
            r.port = Some(l.port);
            evidence(
                &mut r,
                &[("syn_queue", n.into()), ("syn_queue_max", l.wqueue.into())],
            );
            format!(
                "{} ({n} half-open, backlog {})",
                endpoint(l.addr, Some(l.port)),
                l.wqueue
            )
        }
        None => "a listener".to_string(),
    };
    r.message = if dropped > 0 {
        format!(
            "SYN queue full on {place} in netns {netns}: the kernel dropped {dropped} SYN(s){}",
            if cookies_on == Some(false) {
                " (tcp_syncookies=0)"
            } else {
                ""
            }
        )
    } else {
        format!("SYN queue full on {place} in netns {netns}: {cookies} SYN(s) answered with SYN cookies")
    };
    r
}

fn accept_queue_record(netns: u64, prev: &Snapshot, cur: &Snapshot, overflows: u64) -> Record {
    let mut r = counter_record(
        "listen_overflow",
        netns,
        families::listen::ACCEPT_QUEUE_FULL,
    );
    let drops = delta(prev, cur, "TcpExt.ListenDrops");
    evidence(
        &mut r,
        &[
            ("ListenOverflows", overflows.into()),
            ("ListenDrops", drops.into()),
        ],
    );
    if let Some(m) = cur.somaxconn {
        evidence(&mut r, &[("somaxconn", m.into())]);
    }
    // A full accept queue shows as Recv-Q > Send-Q (`ss -lnt`).
    let full = cur
        .sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.rqueue > s.wqueue)
        .max_by_key(|s| s.rqueue);
    let place = match full {
        Some(l) => {
            r.addr = Some(l.addr.to_string());
            r.port = Some(l.port);
            evidence(
                &mut r,
                &[
                    ("accept_queue", l.rqueue.into()),
                    ("accept_queue_max", l.wqueue.into()),
                ],
            );
            format!(
                "{} ({} waiting for accept(), backlog {})",
                endpoint(l.addr, Some(l.port)),
                l.rqueue,
                l.wqueue
            )
        }
        None => "a listener that was no longer full (or gone) when netprobe looked".to_string(),
    };
    r.message = format!(
        "accept queue full on {place} in netns {netns}: {overflows} overflow(s) counted by the kernel"
    );
    r.advice = Some(crate::families::listen::accept_queue_advice(
        &full.map_or_else(
            || "that port".to_string(),
            |l| endpoint(l.addr, Some(l.port)),
        ),
        full.map(|l| l.wqueue),
    ));
    r
}

#[cfg(test)]
mod softnet_tests {
    use super::*;

    fn testdata(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/procfs/6.18")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn vmstat_and_psi_of_a_real_kernel() {
        let vmstat = testdata("vmstat");
        let kills = vmstat_oom_kills(&vmstat).unwrap();
        let more = vmstat.replacen(
            &format!("oom_kill {kills}\n"),
            &format!("oom_kill {}\n", kills + 2),
            1,
        );
        assert_eq!(vmstat_oom_kills(&more), Some(kills + 2));
        assert_eq!(vmstat_oom_kills("nr_free_pages 1\n"), None);
        assert_eq!(
            memory_pressure(&testdata("pressure_memory")),
            Some((0.0, 0.0))
        );
        assert_eq!(
            memory_pressure("some avg10=12.50 avg60=3.00 avg300=1.00 total=5\nfull avg10=7.25 avg60=0 avg300=0 total=1\n"),
            Some((12.5, 7.25))
        );
        assert_eq!(memory_pressure("garbage"), None);
        let r = oom_kill_record(2);
        assert_eq!(
            (r.kind, r.mode, r.severity),
            ("oom", Some("oom_kill"), Some("warning"))
        );
        assert_eq!(r.evidence_source(), Some("counters"));
        assert!(r
            .message
            .starts_with("the kernel's OOM killer killed 2 process(es)"));
    }

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

    #[test]
    fn deltas_are_told_from_levels() {
        for delta in [
            "TCPRcvQDrop",
            "ListenOverflows",
            "PAWSEstab",
            "UdpRcvbufErrors",
            "TCPReqQFullDrop",
            "drop",
            "insert_failed",
            "oom_kill",
        ] {
            assert!(is_delta(delta), "{delta}");
        }
        for level in [
            "accept_queue",
            "accept_queue_max",
            "syn_queue",
            "somaxconn",
            "tcp_timestamps",
            "nf_conntrack_max",
            "nf_conntrack_count",
            "netdev_max_backlog",
            "memory_pressure_full_avg10",
            "source",
        ] {
            assert!(!is_delta(level), "{level}");
        }
    }

    #[test]
    fn softnet_stat_of_a_real_kernel() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/procfs/6.18/softnet_stat");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(softnet_dropped(&text), Some(0));
        // The second column, summed over CPUs.
        let dropped = text.replacen(" 00000000 ", " 0000000a ", 1);
        assert_eq!(softnet_dropped(&dropped), Some(10));
        assert_eq!(softnet_dropped(""), None);
        assert_eq!(softnet_dropped("processed dropped\n"), None);
        let r = cpu_backlog_record(10, Some(1000));
        assert_eq!(
            (r.kind, r.mode, r.family),
            ("drop", Some("cpu_backlog_full"), Some("queue_full"))
        );
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(
            (&e["dropped"], &e["netdev_max_backlog"]),
            (&10.into(), &1000.into())
        );
        assert!(
            r.message.contains("netdev_max_backlog 1000"),
            "{}",
            r.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::parse_pairs;

    fn snap(netstat: &str, sockets: Vec<DiagSock>, syncookies: u64) -> Snapshot {
        Snapshot {
            counters: parse_pairs(netstat),
            syncookies: Some(syncookies),
            sockets,
            ..Snapshot::default()
        }
    }

    fn sock(state: u8, addr: &str, port: u16, rq: u32, wq: u32) -> DiagSock {
        DiagSock {
            state,
            addr: addr.parse().unwrap(),
            port,
            rqueue: rq,
            wqueue: wq,
        }
    }

    const HDR: &str = "TcpExt: ListenOverflows ListenDrops TCPReqQFullDrop TCPReqQFullDoCookies\n";

    #[test]
    fn syn_queue_drops_name_the_listener() {
        let prev = snap(&format!("{HDR}TcpExt: 0 0 5 0\n"), vec![], 0);
        let cur = snap(
            &format!("{HDR}TcpExt: 0 2 7 0\n"),
            vec![
                sock(TCP_LISTEN, "0.0.0.0", 8080, 0, 2),
                sock(TCP_LISTEN, "127.0.0.1", 9090, 0, 128),
                sock(TCP_SYN_RECV, "10.0.0.1", 8080, 0, 0),
                sock(TCP_SYN_RECV, "10.0.0.1", 8080, 0, 0),
                sock(TCP_SYN_RECV, "127.0.0.1", 9090, 0, 0),
            ],
            0,
        );
        let rs = records(4026532000, &prev, &cur);
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!((r.kind, r.mode), ("syn_queue_full", Some("syn_queue_full")));
        assert_eq!(
            (r.addr.as_deref(), r.port, r.netns),
            (Some("0.0.0.0"), Some(8080), Some(4026532000))
        );
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(e["TCPReqQFullDrop"], 2);
        assert_eq!(
            (e["syn_queue"].as_u64(), e["syn_queue_max"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(e["source"], "counters");
        assert_eq!(
            r.message,
            "SYN queue full on 0.0.0.0:8080 (2 half-open, backlog 2) in netns 4026532000: the kernel dropped 2 SYN(s) (tcp_syncookies=0)"
        );
        assert!(r.advice.as_ref().unwrap().contains("tcp_syncookies=1"));
    }

    #[test]
    fn accept_overflows_name_the_full_listener() {
        let prev = snap(&format!("{HDR}TcpExt: 10 10 0 0\n"), vec![], 1);
        let mut cur = snap(
            &format!("{HDR}TcpExt: 13 13 0 0\n"),
            vec![
                sock(TCP_LISTEN, "::", 443, 0, 4096),
                sock(TCP_LISTEN, "127.0.0.1", 8080, 2, 1),
            ],
            1,
        );
        cur.somaxconn = Some(4096);
        let rs = records(1, &prev, &cur);
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!((r.kind, r.port), ("listen_overflow", Some(8080)));
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(
            (&e["ListenOverflows"], &e["somaxconn"]),
            (&3.into(), &4096.into())
        );
        assert_eq!(
            (&e["accept_queue"], &e["accept_queue_max"]),
            (&2.into(), &1.into())
        );
        assert!(r.message.starts_with(
            "accept queue full on 127.0.0.1:8080 (2 waiting for accept(), backlog 1)"
        ));
    }

    #[test]
    fn nothing_moved_nothing_said_and_resets_are_not_negative() {
        let a = snap(&format!("{HDR}TcpExt: 10 10 5 5\n"), vec![], 1);
        assert!(records(1, &a, &a).is_empty());
        let b = snap(&format!("{HDR}TcpExt: 0 0 0 0\n"), vec![], 1);
        assert!(records(1, &a, &b).is_empty());
        assert_eq!(delta(&a, &Snapshot::default(), "TcpExt.ListenOverflows"), 0);
        // A namespace first seen after start counts from zero.
        assert_eq!(
            delta(&Snapshot::default(), &a, "TcpExt.ListenOverflows"),
            10
        );
        assert!(moved(&BTreeMap::new(), &a.counters));
        assert!(!moved(&a.counters, &a.counters));
    }

    #[test]
    fn paws_counters_raise_tw_recycle_with_the_sysctls() {
        // The second seed incident, in its own kernel's counters (CentOS 7,
        // 3.10: counters-only): PAWSPassive and ListenDrops rise together
        // while tcp_tw_recycle=1.
        let real = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/procfs/centos7-3.10/netstat"),
        )
        .unwrap();
        let at = |n: u64| {
            let mut lines = real.lines();
            let (hdr, vals) = (lines.next().unwrap(), lines.next().unwrap());
            let names: Vec<&str> = hdr.split_whitespace().collect();
            let vals: Vec<String> = vals
                .split_whitespace()
                .zip(&names)
                .map(|(v, name)| match *name {
                    "PAWSPassive" | "ListenDrops" => n.to_string(),
                    _ => v.to_string(),
                })
                .collect();
            format!("{hdr}\n{}\n", vals.join(" "))
        };
        let prev = snap(&at(3565), vec![], 1);
        let mut cur = snap(&at(3858), vec![], 1);
        assert_eq!(
            prev.counters.len(),
            112,
            "every TcpExt column of that kernel"
        );
        cur.tw_recycle = Some(1);
        cur.timestamps = Some(1);
        let rs = records(7, &prev, &cur);
        assert_eq!(rs.len(), 1, "{rs:?}");
        let r = &rs[0];
        assert_eq!(
            (r.kind, r.family, r.mode),
            ("drop", Some("tw_recycle"), Some("tw_recycle"))
        );
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(
            (e["PAWSPassive"].as_u64(), e["ListenDrops"].as_u64()),
            (Some(293), Some(293))
        );
        assert_eq!(
            (&e["tcp_tw_recycle"], &e["tcp_timestamps"]),
            (&1.into(), &1.into())
        );
        assert_eq!(e["source"], "counters");
        assert_eq!(
            r.message,
            "the kernel rejected 293 segment(s) by TCP timestamp (PAWS) in netns 7: PAWSPassive \
             +293; ListenDrops +293 in step: SYNs of clients behind NAT (one address, several \
             timestamp clocks) are dropped; tcp_tw_recycle=1 is on"
        );
        assert!(r
            .advice
            .as_ref()
            .unwrap()
            .starts_with("Set net.ipv4.tcp_tw_recycle=0"));
        let hdr = "TcpExt: PAWSPassive PAWSActive PAWSEstab ListenDrops\n";
        // A modern kernel: no tw_recycle, established-connection rejections.
        let prev = snap(&format!("{hdr}TcpExt: 0 0 4 0\n"), vec![], 1);
        let cur = snap(&format!("{hdr}TcpExt: 0 0 5 0\n"), vec![], 1);
        let r = &records(7, &prev, &cur)[0];
        assert!(r.message.ends_with("PAWSEstab +1"), "{}", r.message);
        assert!(r.advice.as_ref().unwrap().contains("NAT"));
    }

    #[test]
    fn conntrack_counters_name_full_tables_and_insert_races() {
        let prev = Snapshot {
            counters: crate::kernel::netns::parse_conntrack_stat(
                "entries drop insert_failed early_drop\n00000001 00000000 00000000 00000000\n",
            ),
            ..Snapshot::default()
        };
        let cur = Snapshot {
            counters: crate::kernel::netns::parse_conntrack_stat(
                "entries drop insert_failed early_drop\n00000004 00000003 00000002 00000000\n",
            ),
            conntrack_count: Some(4),
            conntrack_max: Some(4),
            ..Snapshot::default()
        };
        let rs = records(9, &prev, &cur);
        assert_eq!(rs.len(), 2);
        let full = &rs[0];
        assert_eq!(
            (full.kind, full.family, full.mode),
            (
                "conntrack",
                Some("queue_full"),
                Some("conntrack_table_full")
            )
        );
        let e = full.evidence.as_ref().unwrap();
        assert_eq!(
            (
                e["drop"].as_u64(),
                e["nf_conntrack_max"].as_u64(),
                e["early_drop"].as_u64()
            ),
            (Some(3), Some(4), Some(0))
        );
        assert_eq!(
            full.message,
            "conntrack table full in netns 9 (4 entries, nf_conntrack_max 4): 3 packet(s) dropped for want of an entry"
        );
        let race = &rs[1];
        assert_eq!(
            (race.family, race.mode),
            (Some("conntrack"), Some("conntrack_insert_failed"))
        );
        assert!(
            race.message.contains("2 new entries")
                && race
                    .advice
                    .as_ref()
                    .unwrap()
                    .contains("single-request-reopen")
        );
    }

    #[test]
    fn receive_buffer_counters() {
        let prev = Snapshot {
            counters: parse_pairs("TcpExt: TCPRcvQDrop TCPBacklogDrop\nTcpExt: 1 0\nUdp: InDatagrams RcvbufErrors\nUdp: 5 0\n"),
            ..Snapshot::default()
        };
        let cur = Snapshot {
            counters: parse_pairs("TcpExt: TCPRcvQDrop TCPBacklogDrop\nTcpExt: 3 0\nUdp: InDatagrams RcvbufErrors\nUdp: 9 40\n"),
            ..Snapshot::default()
        };
        let r = &records(2, &prev, &cur)[0];
        assert_eq!((r.kind, r.mode), ("drop", Some("rcvbuf_full")));
        assert_eq!(
            r.message,
            "42 packet(s) dropped at full socket receive buffers in netns 2: TCPRcvQDrop +2, UdpRcvbufErrors +40"
        );
        let cur = Snapshot {
            counters: parse_pairs("TcpExt: TCPRcvQDrop TCPBacklogDrop\nTcpExt: 1 7\n"),
            ..Snapshot::default()
        };
        assert_eq!(records(2, &prev, &cur)[0].mode, Some("backlog_full"));
    }
}
