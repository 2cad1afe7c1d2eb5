//! OOM kills: `oom:mark_victim` (netprobe-ebpf/src/oom.rs) and vmstat's
//! `oom_kill`; whether a kill stalled the node, and the victim's cgroup.

use crate::kernel::probes::{Need, ProbeSpec, TracepointSpec};
use crate::kernel::tracefs::Format;
use crate::pipeline::counters::{counter_record, evidence};
use crate::pipeline::decode::{data_loc_str, field_uint, DecodeError, KernelEvent, Layouts};
use crate::pipeline::record::{escape_bytes, Record};
use netprobe_common::{kind, Event};
use std::collections::BTreeMap;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

/// OOM kills.
pub const OOM: ProbeSpec = ProbeSpec {
    name: "oom",
    tracepoint: Some(TracepointSpec {
        program: "mark_victim",
        category: "oom",
        name: "mark_victim",
    }),
    kprobe: None,
    needs: &[Need::Field(
        "comm",
        "this kernel's mark_victim gives the pid only (before about 6.9): the victim's name is \
         read from /proc while it still exists",
    )],
};

pub const OOM_STALL: Mode = m("oom_stall", "oom_stall");
/// An OOM kill with no stall seen: a memory cgroup at its own limit.
pub const OOM_KILL: Mode = m("oom_stall", "oom_kill");

/// `oom:mark_victim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    pub pid: u32,
    /// From the record (about 6.9+); untrusted bytes.
    pub comm: Option<Vec<u8>>,
    /// kB, where the kernel gives them.
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i64>,
}

/// `oom:mark_victim`'s record.
fn from_record(fmt: &Format, raw: &[u8]) -> OomEvent {
    let kb = |name: &str| field_uint(fmt, raw, name);
    OomEvent {
        pid: field_uint(fmt, raw, "pid").unwrap_or(0) as u32,
        comm: data_loc_str(fmt, raw, "comm"),
        total_vm_kb: kb("total_vm"),
        anon_rss_kb: kb("anon_rss"),
        file_rss_kb: kb("file_rss"),
        shmem_rss_kb: kb("shmem_rss"),
        uid: field_uint(fmt, raw, "uid").map(|u| u as u32),
        oom_score_adj: field_uint(fmt, raw, "oom_score_adj").map(|v| v as u16 as i16 as i64),
    }
}

/// The kinds of record this family's programs write.
pub const KINDS: &[u32] = &[kind::OOM_MARK_VICTIM];

pub fn decode(_: &Event, raw: &[u8], layouts: &Layouts) -> Result<KernelEvent, DecodeError> {
    let fmt = layouts
        .oom
        .as_ref()
        .ok_or(DecodeError::NoLayout("oom:mark_victim"))?;
    Ok(KernelEvent::Oom(from_record(fmt, raw)))
}

/// How long after an OOM kill network symptoms are attributed to it.
pub const OOM_WINDOW_SECS: u64 = 60;

/// Marks a symptom seen `secs` after the OOM kill of `pid` as part of that
/// stall (design.md's `oom_stall`), with the evidence that the node
/// stalled (`global_kill`, `symptom_rate`).
pub fn attribute_to_oom(r: &mut Record, pid: u32, secs: u64, evidence: &'static str) {
    r.set_mode(OOM_STALL);
    r.evidence("oom_victim_pid", pid);
    r.evidence("seconds_after_oom", secs);
    r.evidence("stall_evidence", evidence);
    r.message.push_str(&format!(
        ", {secs} s after the OOM kill of pid {pid}, which stalled the node ({})",
        stall_evidence_text(evidence)
    ));
}

/// The evidence that an OOM kill stalled the node, in words.
pub fn stall_evidence_text(evidence: &str) -> &'static str {
    match evidence {
        "global_kill" => "a global kill: the node ran out of memory, not one cgroup",
        "symptom_rate" => {
            "retransmits and timeouts without a cause of their own far above the minutes before"
        }
        _ => "no evidence",
    }
}

/// Counts a minute at a time over the last `MINUTES` minutes (events
/// added outside OOM windows), for a rate to hold a window's against.
#[derive(Debug)]
pub struct MinuteCounts {
    done: std::collections::VecDeque<u64>,
    current: u64,
    started: std::time::Instant,
}

impl Default for MinuteCounts {
    fn default() -> MinuteCounts {
        MinuteCounts {
            done: Default::default(),
            current: 0,
            started: std::time::Instant::now(),
        }
    }
}

impl MinuteCounts {
    /// Minutes kept.
    pub const MINUTES: usize = 10;

    pub fn add(&mut self, n: u64) {
        self.current += n;
    }

    fn roll(&mut self, now: std::time::Instant) {
        while now.saturating_duration_since(self.started) >= std::time::Duration::from_secs(60) {
            self.done.push_back(self.current);
            self.current = 0;
            self.started += std::time::Duration::from_secs(60);
            if self.done.len() > Self::MINUTES {
                self.done.pop_front();
            }
        }
    }

    /// The mean count of the finished minutes (0 before the first ends).
    pub fn per_minute(&mut self, now: std::time::Instant) -> f64 {
        self.roll(now);
        if self.done.is_empty() {
            return 0.0;
        }
        self.done.iter().sum::<u64>() as f64 / self.done.len() as f64
    }
}

/// Uncaused symptoms in an OOM window that say the node stalled: at least
/// this many...
pub const STALL_MIN_SYMPTOMS: u64 = 10;

/// ...and this many times the rate of the minutes before the kill.
pub const STALL_RATE_FACTOR: f64 = 3.0;

/// An OOM kill's window: the victim, what says the node stalled (if
/// anything does), and the network symptoms seen in the `OOM_WINDOW_SECS`
/// after it: those without a cause of their own, and how many had one.
#[derive(Debug, Clone, Default)]
pub struct OomStall {
    pub pid: u32,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
    /// When the kill was recorded.
    pub ts: String,
    /// Whether the kill was confined to a memory cgroup's own limit.
    pub confined: Option<bool>,
    /// What says the node stalled, once something does: `global_kill`,
    /// `symptom_rate`.
    pub evidence: Option<&'static str>,
    /// Uncaused retransmissions and timeouts a minute before the kill.
    pub baseline_per_min: f64,
    /// Retransmissions without a cause of their own.
    pub retransmits: u64,
    /// Socket errors (ETIMEDOUT) without a cause of their own, by name.
    pub errors: BTreeMap<String, u64>,
    /// Symptoms in the window that had a cause of their own on their flow.
    pub with_cause: u64,
}

impl OomStall {
    pub fn uncaused(&self) -> u64 {
        self.retransmits + self.errors.values().sum::<u64>()
    }

    /// Counts `n` symptoms like `r` without a cause of their own, `secs`
    /// after the kill; returns the stall evidence, if there is any now.
    pub fn symptom(&mut self, r: &Record, n: u64, secs: u64) -> Option<&'static str> {
        match r.kind {
            "retransmit" => self.retransmits += n,
            _ => {
                let name = r.reason.clone().unwrap_or_else(|| "error".into());
                *self.errors.entry(name).or_default() += n;
            }
        }
        if self.evidence.is_none() {
            let minutes = (secs as f64 / 60.0).max(1.0);
            let expected = self.baseline_per_min * minutes;
            let seen = self.uncaused();
            if seen >= STALL_MIN_SYMPTOMS && seen as f64 >= STALL_RATE_FACTOR * expected {
                self.evidence = Some("symptom_rate");
            }
        }
        self.evidence
    }

    /// The window as one `incident` record, written when it closes: mode
    /// oom_stall with the evidence, or oom_kill when nothing showed a
    /// stall. `None` when there is nothing to say beyond the kill's own
    /// record (no evidence, no symptom at all).
    pub fn record(&self, secs: u64) -> Option<Record> {
        let uncaused = self.uncaused();
        if self.evidence.is_none() && uncaused == 0 && self.with_cause == 0 {
            return None;
        }
        let errors: u64 = self.errors.values().sum();
        let who = match &self.comm {
            Some(c) => format!("pid {} ({c})", self.pid),
            None => format!("pid {}", self.pid),
        };
        let list: Vec<String> = self
            .errors
            .iter()
            .map(|(e, n)| format!("{n} {e}"))
            .collect();
        let symptoms = format!(
            "{} TCP retransmission(s) and {} socket error(s){} without a cause of their own in the \
             {secs} s after it ({:.1} a minute before it); {} symptom(s) had a cause of their own",
            self.retransmits,
            errors,
            if list.is_empty() {
                String::new()
            } else {
                format!(" ({})", list.join(", "))
            },
            self.baseline_per_min,
            self.with_cause
        );
        let mut r = Record::new(
            "incident",
            match self.evidence {
                Some(e) => format!(
                    "OOM kill of {who} stalled the node ({}): {symptoms}",
                    stall_evidence_text(e)
                ),
                None => format!("OOM kill of {who}, no network stall seen: {symptoms}"),
            },
        );
        r.set_mode(if self.evidence.is_some() {
            OOM_STALL
        } else {
            OOM_KILL
        });
        r.pid = Some(self.pid);
        r.comm.clone_from(&self.comm);
        r.cgroup.clone_from(&self.cgroup);
        r.container.clone_from(&self.container);
        r.pod.clone_from(&self.pod);
        r.first = Some(self.ts.clone());
        r.count = Some(uncaused);
        r.event = Some("oom");
        add_memory_pressure(&mut r);
        r.evidence("oom_victim_pid", self.pid);
        r.evidence("stall_evidence", self.evidence.unwrap_or("none"));
        if let Some(c) = self.confined {
            r.evidence("confined_to_cgroup", c);
        }
        r.evidence("retransmits", self.retransmits);
        r.evidence("socket_errors", errors);
        r.evidence("symptoms_with_cause", self.with_cause);
        r.evidence("baseline_per_min", self.baseline_per_min);
        for (e, n) in &self.errors {
            if e == "ETIMEDOUT" {
                r.evidence("ETIMEDOUT", *n);
            }
        }
        r.last = Some(r.ts.clone());
        Some(r)
    }
}

/// Adds what /proc knew of a record's process: its memory cgroup, and its
/// name when the kernel did not give one.
pub fn add_process(r: &mut Record, comm: Option<&[u8]>, cgroup: Option<String>) {
    if r.comm.is_none() {
        if let Some(c) = comm {
            let c = escape_bytes(c);
            r.message = r.message.replacen(
                &format!("pid {}", r.pid.unwrap_or(0)),
                &format!("pid {} ({c})", r.pid.unwrap_or(0)),
                1,
            );
            r.comm = Some(c);
        }
    }
    if let Some(cg) = cgroup {
        r.message.push_str(&format!(", in cgroup {cg}"));
        r.cgroup = Some(cg);
    }
}

pub fn oom_record(e: &OomEvent) -> Record {
    let mut r = Record {
        kind: "oom",
        ..Record::default()
    };
    r.set_mode(OOM_STALL);
    r.pid = Some(e.pid);
    r.comm = e.comm.as_deref().map(escape_bytes);
    for (name, v) in [
        ("total_vm_kb", e.total_vm_kb),
        ("anon_rss_kb", e.anon_rss_kb),
        ("file_rss_kb", e.file_rss_kb),
        ("shmem_rss_kb", e.shmem_rss_kb),
    ] {
        if let Some(v) = v {
            r.evidence(name, v);
        }
    }
    if let Some(uid) = e.uid {
        r.evidence("uid", uid);
    }
    if let Some(adj) = e.oom_score_adj {
        r.evidence("oom_score_adj", adj);
    }
    let who = match &r.comm {
        Some(c) => format!("pid {} ({c})", e.pid),
        None => format!("pid {}", e.pid),
    };
    let rss = e
        .anon_rss_kb
        .map(|a| {
            format!(
                ": anon-rss {a} kB, total-vm {} kB",
                e.total_vm_kb.unwrap_or(0)
            )
        })
        .unwrap_or_default();
    r.message = format!("the OOM killer chose {who} to kill{rss}");
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
    // Counters alone cannot tell whether the kill stalled the node.
    let mut r = counter_record("oom", None, OOM_KILL);
    evidence(&mut r, &[("oom_kill", kills.into())]);
    add_memory_pressure(&mut r);
    r.message = format!(
        "the kernel's OOM killer killed {kills} process(es) (vmstat oom_kill); counters alone \
         cannot tell whether the node stalled"
    );
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: OOM_STALL,
        severity: Severity::Critical,
        title: "OOM kill stalling the network",
        meaning: "The kernel ran out of memory and killed a process, and the node stalled: \
                  while it reclaims and kills, packet processing and applications stall, so \
                  retransmits and timeouts in that window with no cause of their own are the \
                  OOM's, not the network's.",
        detection: "Tracepoint oom:mark_victim (the victim's pid; name and memory from about \
                    6.9; its memory cgroup from /proc, else from the cgroup whose oom_kill count \
                    went up). A stall needs evidence, named in the record's stall_evidence: a \
                    global kill (no memory cgroup reached its own limit), or retransmits \
                    (tcp:tcp_retransmit_skb) and timeouts (sock:inet_sk_error_report) without a \
                    cause of their own within 60 s of the kill clearly above the rate of the \
                    minutes before. A symptom whose flow shows a cause (a netfilter drop, a \
                    reset, a full queue) keeps that cause.",
        advice: "Fix the memory pressure first: raise the limit of the victim's cgroup or reduce \
                 its use. Timeouts and retransmits around the kill are likely its symptoms; tune \
                 the network only if they persist without OOM kills.",
        reasons: &[],
        locations: &[],
        counters: &["oom_kill"],
    },
    Entry {
        mode: OOM_KILL,
        severity: Severity::Warning,
        title: "OOM kill, no network stall seen",
        meaning: "The OOM killer killed a process, but nothing shows that the node stalled: the \
                  kill was confined to a memory cgroup that reached its own limit, and the \
                  network symptoms after it were no more than before (or each had a cause of \
                  its own on its flow). The victim's application lost its process; other \
                  connections on the node are not its victims.",
        detection: "Tracepoint oom:mark_victim; the victim's cgroup from /proc, else from the \
                    cgroup whose oom_kill count went up; confined when a cgroup's `oom` count \
                    (memory.events, cgroup v2) went up with it, or, on v1, when the victim's \
                    cgroup has a memory limit.",
        advice: "Raise the memory limit of the victim's container or cgroup, or find what grew \
                 in it (its memory.stat); the kill alone did not stall the network.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::Record;

    fn symptom(kind: &'static str, reason: Option<&str>) -> Record {
        let mut r = Record::new(kind, String::new());
        r.reason = reason.map(str::to_string);
        r
    }

    #[test]
    fn a_global_kill_is_a_stall_and_its_window_says_so() {
        let mut stall = OomStall {
            pid: 42,
            comm: Some("logstash".into()),
            ts: "2026-11-22T02:10:00Z".into(),
            confined: Some(false),
            evidence: Some("global_kill"),
            ..Default::default()
        };
        assert_eq!(
            stall.symptom(&symptom("retransmit", None), 2, 3),
            Some("global_kill")
        );
        assert_eq!(
            stall.symptom(&symptom("socket_error", Some("ETIMEDOUT")), 1, 5),
            Some("global_kill")
        );
        stall.with_cause = 15;
        let r = stall.record(60).unwrap();
        assert_eq!(
            (r.kind, r.event, r.mode, r.severity),
            ("incident", Some("oom"), Some("oom_stall"), Some("critical"))
        );
        assert_eq!(
            r.message,
            "OOM kill of pid 42 (logstash) stalled the node (a global kill: the node ran out of \
             memory, not one cgroup): 2 TCP retransmission(s) and 1 socket error(s) (1 \
             ETIMEDOUT) without a cause of their own in the 60 s after it (0.0 a minute before \
             it); 15 symptom(s) had a cause of their own"
        );
        // Only symptoms without a cause of their own are the stall's.
        assert_eq!(r.count, Some(3));
        let e = r.evidence.as_ref().unwrap();
        assert_eq!(
            (
                &e["retransmits"],
                &e["ETIMEDOUT"],
                &e["symptoms_with_cause"],
                &e["stall_evidence"]
            ),
            (&2.into(), &1.into(), &15.into(), &"global_kill".into())
        );
        assert_eq!(r.first.as_deref(), Some("2026-11-22T02:10:00Z"));
        assert!(r.advice.unwrap().contains("memory"));
    }

    #[test]
    fn a_confined_kill_stalls_only_if_its_symptoms_rise_well_above_before() {
        let mut stall = OomStall {
            pid: 7,
            confined: Some(true),
            baseline_per_min: 6.0,
            ..Default::default()
        };
        // 10 in the first minute: under 3 x 6.
        assert_eq!(stall.symptom(&symptom("retransmit", None), 10, 20), None);
        // 18: three times the minute before, and at least 10.
        assert_eq!(
            stall.symptom(&symptom("retransmit", None), 8, 30),
            Some("symptom_rate")
        );
        // With no symptoms at all before, 10 are enough; fewer are not.
        let mut quiet = OomStall {
            confined: Some(true),
            ..Default::default()
        };
        assert_eq!(quiet.symptom(&symptom("retransmit", None), 9, 5), None);
        assert_eq!(
            quiet.symptom(&symptom("retransmit", None), 1, 6),
            Some("symptom_rate")
        );
        // A confined kill whose symptoms all had causes: no stall, and the
        // window says so in mode oom_kill.
        let calm = OomStall {
            pid: 9,
            confined: Some(true),
            with_cause: 12,
            ..Default::default()
        };
        let r = calm.record(60).unwrap();
        assert_eq!(r.mode, Some("oom_kill"));
        assert!(
            r.message
                .starts_with("OOM kill of pid 9, no network stall seen: 0 TCP"),
            "{}",
            r.message
        );
        assert_eq!(r.evidence.unwrap()["stall_evidence"], "none");
        // Nothing at all: no window record beyond the kill's own.
        assert!(OomStall::default().record(60).is_none());
    }

    #[test]
    fn minute_counts_average_the_finished_minutes() {
        let t0 = std::time::Instant::now();
        let mut m = MinuteCounts {
            started: t0,
            ..MinuteCounts::default()
        };
        m.add(30);
        assert_eq!(m.per_minute(t0), 0.0);
        assert_eq!(m.per_minute(t0 + std::time::Duration::from_secs(61)), 30.0);
        m.add(10);
        // Two minutes on: 30, 10 and an empty one.
        let later = t0 + std::time::Duration::from_secs(180);
        assert!((m.per_minute(later) - 40.0 / 3.0).abs() < 1e-9);
        // Only the last MINUTES are kept.
        let much_later = t0 + std::time::Duration::from_secs(60 * 30);
        assert_eq!(m.per_minute(much_later), 0.0);
    }

    #[test]
    fn vmstat_and_psi_of_a_real_kernel() {
        let vmstat = crate::testdata("procfs/6.18/vmstat");
        let kills = vmstat_oom_kills(&vmstat).unwrap();
        let more = vmstat.replacen(
            &format!("oom_kill {kills}\n"),
            &format!("oom_kill {}\n", kills + 2),
            1,
        );
        assert_eq!(vmstat_oom_kills(&more), Some(kills + 2));
        assert_eq!(vmstat_oom_kills("nr_free_pages 1\n"), None);
        assert_eq!(
            memory_pressure(&crate::testdata("procfs/6.18/pressure_memory")),
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
}
