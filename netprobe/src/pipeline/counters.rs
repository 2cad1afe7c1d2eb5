//! Counter evidence: the sampler that reads every namespace's counters
//! (and the host's softnet_stat and vmstat) once a second, and hands what
//! moved to the families that read counters (`Family::counters`), for the
//! failures no probe sees on every kernel (SYN queue overflows, PAWS,
//! receive buffers, conntrack tables); the helpers those readers share.

use crate::families::oom::{oom_kill_record, vmstat_oom_kills};
use crate::families::rules::RuleHistory;
use crate::families::softnet::{cpu_backlog_record, softnet_dropped};
use crate::kernel::netns::{Failed, Namespace, Reading, Wants};
use crate::{families, kernel::netns::Snapshot, pipeline::record::Record};
use std::collections::BTreeMap;

use serde_json::Value;

/// How much `name` grew from `prev` to `cur`: 0 when `cur` lacks it or it
/// went backwards; from 0 when `prev` lacks it (a new namespace).
pub fn delta(prev: &Snapshot, cur: &Snapshot, name: &str) -> u64 {
    match cur.counters.get(name) {
        Some(b) => b.saturating_sub(*prev.counters.get(name).unwrap_or(&0)),
        None => 0,
    }
}

/// A record raised by counters (`evidence.source = "counters"`), of
/// namespace `netns` (None: host-wide figures, the same in every one).
pub(crate) fn counter_record(
    kind: &'static str,
    netns: Option<u64>,
    mode: families::Mode,
) -> Record {
    let mut r = Record {
        kind,
        netns,
        ..Record::default()
    };
    r.set_mode(mode);
    evidence(&mut r, &[("source", "counters".into())]);
    r
}

/// The total of counters that moved, and them as `Name +n, ...`.
pub(crate) fn listing(moved: &[(&'static str, u64)]) -> (u64, String) {
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

pub(crate) fn evidence(r: &mut Record, items: &[(&'static str, Value)]) {
    let e = r.evidence.get_or_insert_with(BTreeMap::new);
    for (k, v) in items {
        e.insert(k, v.clone());
    }
}

/// The counters that make a namespace's sockets worth dumping: the listen
/// queues' (the records name the listener).
pub const WATCHED: &[&str] = families::listen::COUNTERS.triggers;

/// Whether any watched counter moved since `prev`.
pub fn moved(prev: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> bool {
    rose(WATCHED, prev, cur)
}

/// Whether any of `names` is higher in `cur` than in `prev`.
fn rose(names: &[&str], prev: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> bool {
    names
        .iter()
        .any(|k| cur.get(*k).unwrap_or(&0) > prev.get(*k).unwrap_or(&0))
}

/// Whether some family will make a record of what moved since `prev`:
/// then the namespace's sysctls are worth reading, for its evidence.
pub fn triggered(prev: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> bool {
    families::FAMILIES
        .iter()
        .filter_map(|f| f.counters)
        .any(|c| rose(c.triggers, prev, cur))
}

/// Every counter some family reads: the rest are not kept.
pub fn sampled() -> std::collections::BTreeSet<&'static str> {
    families::FAMILIES
        .iter()
        .filter_map(|f| f.counters)
        .flat_map(|c| c.triggers.iter().chain(c.evidence))
        .copied()
        .collect()
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
    /// The counters some family reads (`sampled()`).
    sampled: std::collections::BTreeSet<&'static str>,
    discovery: crate::kernel::netns::Discovery,
    /// On the sampler's own thread: the namespace it returns to after
    /// each sample in place (None: a thread per sample, as at the
    /// baseline, which runs on the main thread).
    home: Option<std::fs::File>,
    /// Why the sampler's thread could not return home (it then stops).
    stuck: Option<String>,
    /// When the sampling cycle was last said, and the rounds that could
    /// not read every namespace since, with the namespaces they read.
    cycle_said: Option<(u64, u64, u64)>,
    /// The round each namespace was last sampled in.
    sampled_in: std::collections::HashMap<u64, u64>,
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

/// The wall time a round may spend sampling namespaces. Reading one costs
/// some 80 us (two /proc files the kernel formats, a setns each way): a
/// node with more namespaces than fit has them sampled in turn, the ones
/// waiting longest first (netprobe says how often each comes round). A
/// counter's rise is never lost, only reported later, as the delta since
/// that namespace's last sample.
pub const ROUND_BUDGET: std::time::Duration = std::time::Duration::from_millis(8);
/// At least this many namespaces a round, whatever the budget.
pub const ROUND_MIN: usize = 8;

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
            let history = self.rules.entry(*inode).or_default();
            out.extend(history.judge(*inode, counts, median, limit));
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
            sampled: sampled(),
            discovery: Default::default(),
            home: None,
            stuck: None,
            cycle_said: None,
            sampled_in: Default::default(),
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
        let spaces = self
            .discovery
            .namespaces(Path::new("/proc"), Path::new("/run/netns"));
        // Rules are counted once a minute (Some: whether nftables is there).
        let want_rules = self
            .rounds
            .is_multiple_of(RULES_EVERY)
            .then(crate::kernel::netfilter::nftables_present);
        let round = self.rounds;
        self.rounds += 1;
        let mut counted = Vec::new();
        let here: std::collections::HashSet<u64> = spaces.iter().map(|n| n.inode).collect();
        self.prev.retain(|inode, _| here.contains(inode));
        self.rules.retain(|inode, _| here.contains(inode));
        self.errors_said.retain(|inode| here.contains(inode));
        self.sampled_in.retain(|inode, _| here.contains(inode));
        // The baseline and the rule-counting rounds read every namespace;
        // the others, within the budget, those waiting longest first (a new
        // one has waited longest).
        let mut order: Vec<&Namespace> = spaces.iter().collect();
        let every = baseline || want_rules.is_some();
        if !every {
            order.sort_by_key(|n| self.sampled_in.get(&n.inode).copied());
        }
        let started = std::time::Instant::now();
        let total = order.len();
        for (i, ns) in order.into_iter().enumerate() {
            if !every && i >= ROUND_MIN && started.elapsed() >= ROUND_BUDGET {
                self.say_cycle(total, i, round);
                break;
            }
            self.sampled_in.insert(ns.inode, round);
            if !baseline && !self.prev.contains_key(&ns.inode) {
                self.prev.insert(ns.inode, Snapshot::default());
            }
            let before = self.prev.get(&ns.inode).map(|s| &s.counters);
            let wants = |cur: &BTreeMap<String, u64>| Wants {
                sysctls: before.is_some_and(|b| triggered(b, cur)),
                sockets: before.is_some_and(|b| moved(b, cur)),
            };
            let keep = |name: &str| self.sampled.contains(name);
            let how = Reading {
                keep: &keep,
                wants: &wants,
                rules: want_rules,
            };
            let sample = match &self.home {
                Some(home) => match crate::kernel::netns::sample_in_place(ns, home, &how) {
                    Err(Failed::Stuck(why)) => {
                        // Never read another namespace's sysctls as the
                        // host's: this thread stops sampling.
                        self.stuck = Some(why.clone());
                        out.push(Record::error(format!("counter sampling stopped: {why}")));
                        return out;
                    }
                    other => other.map_err(|e| match e {
                        Failed::Read(w) | Failed::Stuck(w) => w,
                    }),
                },
                None => crate::kernel::netns::sample(ns, &how),
            };
            match sample {
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

    /// Says how often each namespace is sampled when a round cannot read
    /// them all: the first time, then every ten minutes, from the
    /// namespaces sampled a round on average since.
    fn say_cycle(&mut self, total: usize, sampled: usize, round: u64) {
        let first = self.cycle_said.is_none();
        let (said_at, rounds, sum) = self.cycle_said.get_or_insert((round, 0, 0));
        *rounds += 1;
        *sum += sampled as u64;
        if first || round >= *said_at + 600 {
            let per_round = (*sum / *rounds).max(1);
            tracing::info!(
                "{total} network namespaces: {per_round} sampled a second within {} ms, so each \
                 every {} s or so (counter rises are reported then, never lost)",
                ROUND_BUDGET.as_millis(),
                (total as u64).div_ceil(per_round)
            );
            (*said_at, *rounds, *sum) = (round, 0, 0);
        }
    }

    /// Samples in place from now on: the calling thread is the sampler's
    /// own, and enters each namespace itself.
    fn stay_home(&mut self) {
        match std::fs::File::open("/proc/thread-self/ns/net")
            .or_else(|_| std::fs::File::open(format!("/proc/self/task/{}/ns/net", gettid())))
        {
            Ok(f) => self.home = Some(f),
            // A thread per sample, as before.
            Err(e) => tracing::warn!("counter sampler: cannot open its own namespace: {e}"),
        }
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
                self.stay_home();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && self.stuck.is_none() {
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

/// Records for what moved in namespace `netns` between `prev` and `cur`,
/// from every family that reads counters (in the registry's order).
pub fn records(netns: u64, prev: &Snapshot, cur: &Snapshot) -> Vec<Record> {
    let mut out = Vec::new();
    for c in families::FAMILIES.iter().filter_map(|f| f.counters) {
        (c.read)(netns, prev, cur, &mut out);
    }
    out
}

/// The counters of `names` (kernel name, name in records) that moved
/// between `prev` and `cur`, with how much.
pub(crate) fn moved_of(
    names: &[(&str, &'static str)],
    prev: &Snapshot,
    cur: &Snapshot,
) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .map(|&(name, short)| (short, delta(prev, cur, name)))
        .filter(|&(_, d)| d > 0)
        .collect()
}

/// The calling thread's id.
fn gettid() -> i64 {
    // SAFETY: gettid(2) has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::parse_pairs;
    use crate::kernel::netns::DiagSock;
    use crate::kernel::netns::TCP_LISTEN;
    use crate::kernel::netns::TCP_SYN_RECV;

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

    /// Every counter of a real kernel's netstat, snmp and nf_conntrack.
    fn real_counters() -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for f in ["netstat", "snmp"] {
            all.extend(parse_pairs(&crate::testdata(&format!("procfs/6.18/{f}"))));
        }
        all.extend(crate::kernel::netns::parse_conntrack_stat(
            &crate::testdata("procfs/6.18/nf_conntrack"),
        ));
        all
    }

    fn bumped(c: &BTreeMap<String, u64>, which: impl Fn(&str) -> bool) -> BTreeMap<String, u64> {
        c.iter()
            .map(|(k, v)| (k.clone(), if which(k) { v + 3 } else { *v }))
            .collect()
    }

    #[test]
    fn each_family_reads_only_the_counters_it_lists() {
        let all = real_counters();
        let sampled = sampled();
        assert!(WATCHED.iter().all(|w| sampled.contains(w)));
        for f in families::FAMILIES {
            let Some(c) = f.counters else { continue };
            let listed = |k: &str| c.triggers.contains(&k) || c.evidence.contains(&k);
            for name in c.triggers.iter().chain(c.evidence) {
                // Udp6 is in snmp6, which is not read yet; PAWSPassive went
                // with tcp_tw_recycle (4.12).
                assert!(
                    all.contains_key(*name)
                        || name.starts_with("Udp6.")
                        || *name == "TcpExt.PAWSPassive",
                    "{}: {name} is no counter of a real kernel",
                    f.name
                );
            }
            let snap = |counters| Snapshot {
                counters,
                ..Snapshot::default()
            };
            let run = |prev: &Snapshot, cur: &Snapshot| {
                let mut out = Vec::new();
                (c.read)(7, prev, cur, &mut out);
                out
            };
            // Everything moved: the same records as from the listed
            // counters alone (nothing else is read).
            let prev = snap(all.clone());
            let cur = snap(bumped(&all, |_| true));
            let keep = |m: &BTreeMap<String, u64>| {
                snap(
                    m.iter()
                        .filter(|(k, _)| listed(k))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                )
            };
            let full = run(&prev, &cur);
            assert!(!full.is_empty(), "{}", f.name);
            assert_eq!(full, run(&keep(&all), &keep(&cur.counters)), "{}", f.name);
            // Only the evidence moved: no record; each trigger alone: one.
            let evidence = snap(bumped(&all, |k| c.evidence.contains(&k)));
            assert!(run(&prev, &evidence).is_empty(), "{}", f.name);
            assert!(!triggered(&all, &evidence.counters), "{}", f.name);
            for t in c.triggers.iter().filter(|t| all.contains_key(**t)) {
                let one = snap(bumped(&all, |k| k == *t));
                assert!(!run(&prev, &one).is_empty(), "{}: {t}", f.name);
                assert!(triggered(&all, &one.counters), "{t}");
            }
        }
        // Nothing a family names moved: nothing to read beyond the counters.
        let others = bumped(&all, |k| !sampled.contains(k));
        assert!(!triggered(&all, &others) && !moved(&all, &others));
    }
}
