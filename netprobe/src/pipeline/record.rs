//! The records netprobe writes: one struct, serialised the same way to every
//! sink (design.md: JSON field names, journald `NETPROBE_<FIELD>`).

use crate::families::drop::{DropEvent, DropMark};
use crate::families::listen::{ListenEvent, ListenStage};
use crate::families::oom::OomEvent;
use crate::families::reset::ResetEvent;
use crate::families::symptoms::SocketEvent;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{
    families::catalogue,
    families::{self, Mode},
    kernel::kallsyms::Kallsyms,
    pipeline::decode::{tcp_state_name, Decoded, KernelEvent, Sock},
    pipeline::packet::{endpoint, proto_name, tcp_flags_name, Flow},
    pipeline::timefmt,
};

/// One output record. Field names are the interface contract: extend, never rename.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Record {
    pub ts: String,
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The mode's severity (catalogue): notice, warning or critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The socket a record is about (a listener, a full receive buffer):
    /// its local address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// TCP flags of the dropped packet, e.g. `SYN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// Kernel function (and offset) where a packet was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The task current when the hook fired; escaped, untrusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// How many events a record stands for: an `incident`'s count includes
    /// its first event, which was written in full before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `incident` records: the kind of event they fold (`drop`,
    /// `reset_sent`, ...), so that records reconcile with kernel counters
    /// without reading messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    /// `incident` records: when its first and last event happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// The figures behind the diagnosis (queue lengths, buffer sizes,
    /// memory, counter deltas), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<BTreeMap<&'static str, Value>>,
    /// The network namespace (inode) a record is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The cgroup (v2 path) a record is about: an OOM victim's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container (id) and Kubernetes pod (`namespace/name`, or its UID)
    /// the record's namespace or cgroup belongs to (containers.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `probe` records: the probe's name, its hook, `attached` or `skipped`,
    /// and why (or what it lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `ready` records: how many probes attached and were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u32>,
}

/// journald priorities (syslog levels).
pub const PRIORITY_ERR: u8 = 3;
pub const PRIORITY_WARNING: u8 = 4;
pub const PRIORITY_INFO: u8 = 6;

impl Record {
    pub fn new(kind: &'static str, message: String) -> Record {
        Record {
            ts: timefmt::rfc3339(timefmt::now_unix_ns()),
            kind,
            message,
            ..Record::default()
        }
    }

    /// warning for incidents and lost events, err for netprobe's own
    /// failures, info for the rest.
    pub fn priority(&self) -> u8 {
        match self.kind {
            "incident" => PRIORITY_WARNING,
            "lost" | "error" => PRIORITY_ERR,
            _ => PRIORITY_INFO,
        }
    }

    pub fn set_mode(&mut self, m: Mode) {
        self.family = Some(m.family);
        self.mode = Some(m.mode);
        let entry = catalogue::of(m);
        self.severity = Some(entry.severity.name());
        // The mode's general advice; records with a flow or a listener
        // replace it with their own.
        self.advice = Some(entry.advice.to_string());
    }

    fn set_flow(&mut self, f: &Flow) {
        self.proto = Some(proto_name(f.proto));
        self.saddr = Some(f.saddr.to_string());
        self.sport = f.sport;
        self.daddr = Some(f.daddr.to_string());
        self.dport = f.dport;
        self.tcp_flags = f.tcp_flags.map(tcp_flags_name);
    }

    pub fn probe(name: &str, hook: &str, status: Result<Option<String>, String>) -> Record {
        let (st, detail, message) = match status {
            Ok(None) => ("attached", None, format!("probe {name} attached to {hook}")),
            Ok(Some(lost)) => (
                "attached",
                Some(lost.clone()),
                format!("probe {name} attached to {hook}, degraded: {lost}"),
            ),
            Err(why) => (
                "skipped",
                Some(why.clone()),
                format!("probe {name} skipped: {why}"),
            ),
        };
        Record {
            probe: Some(name.to_string()),
            hook: Some(hook.to_string()),
            status: Some(st),
            detail,
            ..Record::new("probe", message)
        }
    }

    pub fn ready(attached: u32, skipped: u32) -> Record {
        Record {
            attached: Some(attached),
            skipped: Some(skipped),
            ..Record::new(
                "ready",
                format!("netprobe is tracing: {attached} probes attached, {skipped} skipped"),
            )
        }
    }

    pub fn lost(count: u64, why: &str) -> Record {
        Record {
            count: Some(count),
            detail: Some(why.to_string()),
            ..Record::new("lost", format!("{count} kernel events were lost: {why}"))
        }
    }

    pub fn error(message: String) -> Record {
        Record::new("error", message)
    }
}

/// Escapes untrusted bytes (process names): printable ASCII kept, everything
/// else as `\xNN`, so no sink can be fed control characters or bad UTF-8.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn flow_text(f: &Flow) -> String {
    format!(
        "{} {} -> {}",
        proto_name(f.proto).to_uppercase(),
        endpoint(f.saddr, f.sport),
        endpoint(f.daddr, f.dport)
    )
}

/// Builds the record of one kernel event: classification, flow, message.
pub fn from_event(d: &Decoded, wall_ns: i128, ksyms: &Kallsyms) -> Record {
    let mut r = match &d.event {
        KernelEvent::Drop(e) => drop_record(e, ksyms),
        KernelEvent::ResetSent(e) => reset_record(e, true),
        KernelEvent::ResetReceived(e) => reset_record(e, false),
        KernelEvent::ListenOverflow(e) => listen_record(e),
        KernelEvent::Oom(e) => oom_record(e),
        KernelEvent::Retransmit(e) => symptom_record(e, true),
        KernelEvent::SocketError(e) => symptom_record(e, false),
    };
    // The service the event is about, where the kernel says which end it
    // is (a listener or receiving socket the builders set stays).
    if r.addr.is_none() {
        let flow = match &d.event {
            KernelEvent::Drop(e) => e.flow.as_ref(),
            KernelEvent::ResetSent(e) | KernelEvent::ResetReceived(e) => e.flow.as_ref(),
            KernelEvent::SocketError(e) | KernelEvent::Retransmit(e) => e.flow.as_ref(),
            _ => None,
        };
        if let Some((addr, port)) = flow
            .and_then(|f| crate::pipeline::service::endpoint(f, crate::pipeline::service::side(d)))
        {
            r.addr = Some(addr.to_string());
            r.port = Some(port);
        }
    }
    // The event's own time, formatted once (the builders leave ts empty).
    r.ts = timefmt::rfc3339(wall_ns);
    if r.netns.is_none() {
        r.netns = d.netns;
    }
    // An OOM record is about its victim, not the task that hit the limit.
    if r.pid.is_none() {
        r.pid = Some(d.pid);
        r.comm = Some(escape_bytes(&d.comm));
    }
    r
}

impl Record {
    pub(crate) fn evidence(&mut self, name: &'static str, value: impl Into<Value>) {
        self.evidence
            .get_or_insert_with(BTreeMap::new)
            .insert(name, value.into());
    }

    /// `evidence.source`: "counters" for what counters (not a probe) saw.
    pub fn evidence_source(&self) -> Option<&str> {
        self.evidence.as_ref()?.get("source")?.as_str()
    }

    fn set_sock(&mut self, s: &Sock) {
        self.addr = Some(s.addr.to_string());
        self.port = Some(s.port);
    }
}

/// The names of the errors sockets report most (errno-base.h, stable ABI).
pub fn errno_name(e: i64) -> Option<&'static str> {
    Some(match e {
        32 => "EPIPE",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        112 => "EHOSTDOWN",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => return None,
    })
}

/// A retransmission or a socket error, on its own: family `other` until
/// an OOM window claims it (`attribute_to_oom`).
fn symptom_record(e: &SocketEvent, retransmit: bool) -> Record {
    let mut r = Record {
        kind: if retransmit {
            "retransmit"
        } else {
            "socket_error"
        },
        ..Record::default()
    };
    r.set_mode(if retransmit {
        families::OTHER
    } else {
        families::symptoms::socket_error(e.errno.unwrap_or(0).abs())
    });
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    r.state = e.state.and_then(tcp_state_name).map(str::to_string);
    let flow = e
        .flow
        .as_ref()
        .map(flow_text)
        .unwrap_or_else(|| "a socket".into());
    r.message = if retransmit {
        format!("retransmitted a segment on {flow}")
    } else {
        let errno = e.errno.unwrap_or(0).abs();
        let name = errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_string);
        r.reason = Some(name.clone());
        let meaning = match errno {
            110 => ": the connection timed out",
            104 => ": the peer reset the connection",
            111 => ": the connection was refused",
            101 => ": the network is unreachable",
            112 => ": the host is down",
            113 => ": the host is unreachable",
            _ => "",
        };
        format!("socket error {name} on {flow}{meaning}")
    };
    r
}

/// How long after an OOM kill network symptoms are attributed to it.
pub const OOM_WINDOW_SECS: u64 = 60;

/// Marks a symptom seen `secs` after the OOM kill of `pid` as part of that
/// stall (design.md's `oom_stall`), with the evidence that the node
/// stalled (`global_kill`, `symptom_rate`).
pub fn attribute_to_oom(r: &mut Record, pid: u32, secs: u64, evidence: &'static str) {
    r.set_mode(families::oom::OOM_STALL);
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

/// The TCP timestamp clocks seen per source address among PAWS
/// rejections: clients behind one NAT address each have their own clock
/// (an offset from real time), so rejected SYNs from one address whose
/// TSvals sit far apart come from several machines.
#[derive(Default)]
pub struct NatClocks {
    by_addr: std::collections::HashMap<String, Vec<i64>>,
}

/// Offsets closer than this are one clock (TSvals tick in ms on Linux).
const CLOCK_APART_MS: i64 = 60_000;
const CLOCK_ADDRS_MAX: usize = 4096;
const CLOCKS_MAX: usize = 16;

impl NatClocks {
    /// Notes a rejected TSval from `addr` at `now_ms`; returns how many
    /// distinct clocks that address has shown.
    pub fn observe(&mut self, addr: &str, tsval: u32, now_ms: i64) -> usize {
        if !self.by_addr.contains_key(addr) && self.by_addr.len() >= CLOCK_ADDRS_MAX {
            return 1;
        }
        let offset = i64::from(tsval) - now_ms;
        let clocks = self.by_addr.entry(addr.to_string()).or_default();
        match clocks
            .iter()
            .position(|c| (*c - offset).abs() < CLOCK_APART_MS)
        {
            Some(i) => clocks[i] = offset,
            None if clocks.len() < CLOCKS_MAX => clocks.push(offset),
            None => {}
        }
        clocks.len()
    }

    /// Adds the clock count to a PAWS drop record that carries its TSval,
    /// and says so when rejected SYNs from one address show several.
    pub fn annotate(&mut self, r: &mut Record, now_ms: i64) {
        if r.mode != Some("tw_recycle") {
            return;
        }
        let tsval = r
            .evidence
            .as_ref()
            .and_then(|e| e.get("tsval"))
            .and_then(Value::as_u64);
        let (Some(tsval), Some(addr)) = (tsval, r.saddr.clone()) else {
            return;
        };
        let clocks = self.observe(&addr, tsval as u32, now_ms);
        r.evidence("timestamp_clocks", clocks);
        if clocks > 1 && r.tcp_flags.as_deref() == Some("SYN") {
            r.message.push_str(&format!(
                "; {clocks} different timestamp clocks in SYNs from {addr}: clients behind NAT"
            ));
        }
    }
}

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
            families::oom::OOM_STALL
        } else {
            families::oom::OOM_KILL
        });
        r.pid = Some(self.pid);
        r.comm.clone_from(&self.comm);
        r.cgroup.clone_from(&self.cgroup);
        r.container.clone_from(&self.container);
        r.pod.clone_from(&self.pod);
        r.first = Some(self.ts.clone());
        r.count = Some(uncaused);
        r.event = Some("oom");
        crate::pipeline::counters::add_memory_pressure(&mut r);
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

/// Retransmissions outside any OOM window, folded into one record a minute.
pub fn retransmit_summary(count: u64, secs: u64) -> Record {
    let mut r = Record::new(
        "retransmit",
        format!(
            "{count} TCP retransmission(s) in the last {secs} s, none in an OOM window (the kernel counts them all in Tcp RetransSegs)"
        ),
    );
    r.set_mode(families::OTHER);
    r.count = Some(count);
    r
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

pub fn accept_queue_advice(listener: &str, max: Option<u32>) -> String {
    let backlog = max.map(|m| format!(" ({m})")).unwrap_or_default();
    format!(
        "The application listening on {listener} is not accepting connections fast enough, or \
         its listen() backlog{backlog} is too small: check that its accept loop is not stalled, \
         and raise the backlog it passes to listen() (the kernel caps it at net.core.somaxconn)."
    )
}

fn listen_record(e: &ListenEvent) -> Record {
    let mut r = Record {
        kind: "listen_overflow",
        ..Record::default()
    };
    r.set_mode(families::listen::ACCEPT_QUEUE_FULL);
    r.set_sock(&e.sock);
    r.state = tcp_state_name(e.sock.state).map(str::to_string);
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    let listener = endpoint(e.sock.addr, Some(e.sock.port));
    r.evidence("accept_queue", e.sock.accept_queue);
    r.evidence("accept_queue_max", e.sock.accept_queue_max);
    let (stage, what) = match e.stage {
        ListenStage::Syn => ("SYN", "the SYN (the client will retry it)"),
        ListenStage::Ack => (
            "ACK",
            "the handshake's last ACK (the client believes it is connected)",
        ),
    };
    r.evidence("stage", stage);
    let from = e
        .flow
        .as_ref()
        .map(|f| format!(" from {}", endpoint(f.saddr, f.sport)))
        .unwrap_or_default();
    r.message = format!(
        "accept queue full on {listener} ({} waiting for accept(), backlog {}): the kernel dropped {what}{from}",
        e.sock.accept_queue, e.sock.accept_queue_max
    );
    r.advice = Some(accept_queue_advice(
        &listener,
        Some(e.sock.accept_queue_max),
    ));
    r
}

fn oom_record(e: &OomEvent) -> Record {
    let mut r = Record {
        kind: "oom",
        ..Record::default()
    };
    r.set_mode(families::oom::OOM_STALL);
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

/// The local socket a dropped packet was for: the kernel's receiving socket
/// where it gave one, else the packet's destination.
fn receiver(e: &DropEvent) -> Option<String> {
    match (&e.sock, &e.flow) {
        (Some(s), _) => Some(endpoint(s.addr, Some(s.port))),
        (None, Some(f)) => Some(endpoint(f.daddr, f.dport)),
        (None, None) => None,
    }
}

fn drop_record(e: &DropEvent, ksyms: &Kallsyms) -> Record {
    let location = ksyms.lookup(e.location);
    let mode = match (e.mark, &e.reason, location) {
        // Conntrack's own verdict beats the generic NETFILTER_DROP reason.
        (Some(DropMark::ConntrackFull), _, _) => families::conntrack::CONNTRACK_TABLE_FULL,
        (Some(DropMark::ConntrackInsertFailed), _, _) => {
            families::conntrack::CONNTRACK_INSERT_FAILED
        }
        (_, Some(reason), _) => families::drop::drop_reason(&reason.label()),
        (Some(DropMark::NoSocketRst), None, _) => families::reset::NO_LISTENER,
        (None, None, Some((func, _))) => families::drop::drop_location(func),
        (None, None, None) => families::OTHER,
    };
    let mut r = Record {
        kind: "drop",
        ..Record::default()
    };
    r.set_mode(mode);
    r.reason = e.reason.as_ref().map(|x| x.label());
    r.location = Some(Kallsyms::render(location, e.location));
    if let (Some((tsval, tsecr)), "tw_recycle") = (e.tcp_ts, mode.mode) {
        r.evidence("tsval", tsval);
        r.evidence("tsecr", tsecr);
    }
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    if let Some(s) = &e.sock {
        r.set_sock(s);
        match mode {
            families::listen::ACCEPT_QUEUE_FULL => {
                r.evidence("accept_queue", s.accept_queue);
                r.evidence("accept_queue_max", s.accept_queue_max);
            }
            families::buffers::RCVBUF_FULL | families::buffers::BACKLOG_FULL => {
                r.evidence("rmem_alloc", s.rmem_alloc);
                r.evidence("rcvbuf", s.rcvbuf);
            }
            _ => {}
        }
    }
    let what = match (&e.flow, &r.tcp_flags) {
        (Some(f), Some(flags)) => format!("{} ({flags})", flow_text(f)),
        (Some(f), None) => flow_text(f),
        (None, _) => "a packet (flow unknown)".to_string(),
    };
    let why = match (&r.reason, e.mark) {
        (Some(reason), _) => reason.clone(),
        (None, Some(DropMark::NoSocketRst)) => {
            "no socket: the kernel answered it with a RST".into()
        }
        (None, Some(_)) => "no reason given by this kernel".into(),
        (None, None) if e.tcp_drop => "tcp_drop, no reason given by this kernel".into(),
        (None, None) => "no reason given by this kernel".into(),
    };
    let at = r.location.clone().unwrap_or_default();
    r.message = match (mode.mode, &e.flow) {
        ("no_listener", Some(f)) => {
            let dst = endpoint(f.daddr, f.dport);
            r.advice = Some(format!(
                "Nothing listens on {dst}: check that the service behind this port is running and \
                 bound to this address, and that clients use the right port."
            ));
            format!("dropped {what}: no socket listens on {dst} ({why} at {at})")
        }
        ("accept_queue_full", _) => {
            // A listener's record (design.md: kind listen_overflow).
            r.kind = "listen_overflow";
            let listener = receiver(e).unwrap_or_else(|| "a listening socket".into());
            let queue = e
                .sock
                .map(|s| {
                    format!(
                        " ({} waiting for accept(), backlog {})",
                        s.accept_queue, s.accept_queue_max
                    )
                })
                .unwrap_or_default();
            r.advice = Some(accept_queue_advice(
                &listener,
                e.sock.map(|s| s.accept_queue_max),
            ));
            format!("accept queue full on {listener}{queue}: dropped {what} ({why} at {at})")
        }
        ("rcvbuf_full", _) => {
            let owner = receiver(e).unwrap_or_else(|| "a socket".into());
            let fill = e
                .sock
                .map(|s| format!(" ({} of {} bytes)", s.rmem_alloc, s.rcvbuf))
                .unwrap_or_default();
            r.advice = Some(format!(
                "The application owning {owner} does not read fast enough: make it read faster, \
                 or give it a larger receive buffer (SO_RCVBUF; the kernel caps it at \
                 net.core.rmem_max)."
            ));
            format!("dropped {what}: the receive buffer of {owner} is full{fill} ({why} at {at})")
        }
        ("conntrack_table_full", _) => {
            r.kind = "conntrack";
            format!(
                "dropped {what}: conntrack table full, no entry could be made for it \
                 (__nf_conntrack_alloc failed; {why} at {at})"
            )
        }
        ("conntrack_insert_failed", _) => {
            r.kind = "conntrack";
            format!(
                "dropped {what}: conntrack could not insert its new entry \
                 (__nf_conntrack_confirm: a clash it could not resolve or a hash chain too long; \
                 {why} at {at})"
            )
        }
        ("qdisc_full", _) => {
            format!("dropped {what}: a device's transmit queue (qdisc) was full ({why} at {at})")
        }
        ("netfilter_drop", _) => {
            format!("dropped {what} by netfilter ({why} at {at})")
        }
        ("tw_recycle", _) => {
            format!(
                "dropped {what}: its TCP timestamp is older than the connection's ({why} at {at})"
            )
        }
        _ => format!("dropped {what}: {why} at {at}"),
    };
    r
}

fn reset_record(e: &ResetEvent, sent: bool) -> Record {
    let reason = e.reason.as_ref().map(|x| x.label());
    let mode = if sent {
        families::reset::reset_sent(reason.as_deref(), e.no_socket)
    } else {
        families::reset::reset_received(e.state)
    };
    let kind = if sent { "reset_sent" } else { "reset_received" };
    let mut r = Record {
        kind,
        ..Record::default()
    };
    r.set_mode(mode);
    r.reason = reason.clone();
    r.state = e.state.and_then(tcp_state_name).map(str::to_string);
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    let flow = e
        .flow
        .as_ref()
        .map(flow_text)
        .unwrap_or_else(|| "(addresses unknown)".into());
    let because = match (reason, e.no_socket) {
        (Some(x), _) => format!(" ({x})"),
        (None, true) => " (no socket)".into(),
        (None, false) => String::new(),
    };
    // In both directions the RST comes from the closed side to the client.
    let closed = e.flow.as_ref().map(|f| endpoint(f.saddr, f.sport));
    r.message = match (sent, mode == families::reset::NO_LISTENER, &closed) {
        (true, _, _) => format!("RST sent {flow}{because}"),
        (false, true, Some(closed)) => format!(
            "RST received {flow} in answer to our SYN: connection refused, nothing listens on {closed}"
        ),
        (false, _, _) => format!("RST received {flow}: the peer reset the connection"),
    };
    if let (true, Some(closed)) = (mode == families::reset::NO_LISTENER, &closed) {
        r.advice = Some(format!(
            "Nothing listens on {closed}: check that the service behind this port is running."
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::Reason;

    fn flow() -> Flow {
        Flow {
            proto: 6,
            saddr: "127.0.0.2".parse().unwrap(),
            sport: Some(40000),
            daddr: "127.0.0.1".parse().unwrap(),
            dport: Some(9),
            tcp_flags: Some(0x02),
        }
    }

    #[test]
    fn no_socket_drop_is_a_no_listener_reset() {
        let k = Kallsyms::parse("ffffffff81a00000 T tcp_v4_rcv\n");
        let d = Decoded {
            netns: None,
            ts_ns: 0,
            pid: 0,
            comm: b"swapper/0".to_vec(),
            event: KernelEvent::Drop(DropEvent {
                reason: Some(Reason {
                    value: 3,
                    name: Some("NO_SOCKET".into()),
                }),
                location: 0xffffffff81a00100,
                flow: Some(flow()),
                mark: None,
                tcp_ts: None,
                tcp_drop: false,
                sock: None,
            }),
        };
        let r = from_event(&d, 0, &k);
        assert_eq!(
            (r.kind, r.family, r.mode),
            ("drop", Some("reset"), Some("no_listener"))
        );
        assert_eq!(r.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.saddr.as_deref(), Some("127.0.0.2"));
        assert_eq!((r.sport, r.dport), (Some(40000), Some(9)));
        assert_eq!(r.tcp_flags.as_deref(), Some("SYN"));
        assert_eq!(r.location.as_deref(), Some("tcp_v4_rcv+0x100"));
        assert!(
            r.message.contains("no socket listens on 127.0.0.1:9"),
            "{}",
            r.message
        );
        assert!(r.advice.unwrap().contains("127.0.0.1:9"));
        assert_eq!(r.ts, "1970-01-01T00:00:00.000000Z");

        // A kernel without reasons (5.10): the same drop, known only by the
        // reset kprobe having answered this skb without a socket.
        let KernelEvent::Drop(e) = &d.event else {
            unreachable!()
        };
        let bare = DropEvent {
            reason: None,
            mark: Some(DropMark::NoSocketRst),
            ..e.clone()
        };
        let r = drop_record(&bare, &k);
        assert_eq!((r.family, r.mode), (Some("reset"), Some("no_listener")));
        assert_eq!(r.reason, None);
        assert!(r.message.contains("no socket listens on 127.0.0.1:9"));
        assert!(r
            .message
            .contains("no socket: the kernel answered it with a RST"));
        // Without that mark, a drop in tcp_v4_rcv says nothing more.
        let r = drop_record(
            &DropEvent {
                mark: None,
                ..bare.clone()
            },
            &k,
        );
        assert_eq!(r.mode, Some("other"));
        assert!(r.message.contains("no reason given by this kernel"));
        // The conntrack kprobes' marks beat the generic reason.
        let nf = DropEvent {
            reason: Some(Reason {
                value: 12,
                name: Some("NETFILTER_DROP".into()),
            }),
            ..bare
        };
        for (mark, mode, family, words) in [
            (
                DropMark::ConntrackFull,
                "conntrack_table_full",
                "queue_full",
                "conntrack table full",
            ),
            (
                DropMark::ConntrackInsertFailed,
                "conntrack_insert_failed",
                "conntrack",
                "could not insert its new entry",
            ),
        ] {
            let r = drop_record(
                &DropEvent {
                    mark: Some(mark),
                    ..nf.clone()
                },
                &k,
            );
            assert_eq!(
                (r.kind, r.mode, r.family),
                ("conntrack", Some(mode), Some(family))
            );
            assert_eq!(r.reason.as_deref(), Some("NETFILTER_DROP"));
            assert!(r.message.contains(words), "{}", r.message);
            assert!(r.message.contains("127.0.0.1:9"), "{}", r.message);
        }
        let r = drop_record(&nf, &k);
        assert_eq!((r.kind, r.mode), ("drop", Some("netfilter_drop")));
    }

    #[test]
    fn nat_clocks_count_distinct_offsets_per_address() {
        let mut c = NatClocks::default();
        let now = 1_000_000_000;
        assert_eq!(c.observe("10.0.3.7", 5_000, now), 1);
        // The same clock a second later.
        assert_eq!(c.observe("10.0.3.7", 6_000, now + 1_000), 1);
        // Two more machines behind the same address, hours apart.
        assert_eq!(c.observe("10.0.3.7", 9_000_000, now + 1_000), 2);
        assert_eq!(c.observe("10.0.3.7", 400_000_000, now + 2_000), 3);
        assert_eq!(c.observe("10.0.3.8", 5_000, now), 1);
        let mut r = Record {
            kind: "drop",
            message: "dropped TCP 10.0.3.7:40000 -> 10.0.0.5:80 (SYN)".into(),
            saddr: Some("10.0.3.7".into()),
            tcp_flags: Some("SYN".into()),
            ..Record::default()
        };
        r.set_mode(families::paws::TW_RECYCLE);
        r.evidence("tsval", 77_777_777);
        c.annotate(&mut r, now + 3_000);
        assert_eq!(r.evidence.as_ref().unwrap()["timestamp_clocks"], 4);
        assert!(
            r.message.ends_with(
                "; 4 different timestamp clocks in SYNs from 10.0.3.7: clients behind NAT"
            ),
            "{}",
            r.message
        );
    }

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
    fn hostile_comm_is_escaped() {
        assert_eq!(escape_bytes(b"a\nb\x00\xff\\"), "a\\x0ab\\x00\\xff\\x5c");
        let json = serde_json::to_string(&Record {
            comm: Some(escape_bytes(b"x\n\"y")),
            ..Record::new("drop", "m".into())
        })
        .unwrap();
        assert!(!json.contains('\n'));
        assert!(json.contains(r#""comm":"x\\x0a\"y""#), "{json}");
    }

    #[test]
    fn reset_records_name_the_direction() {
        let e = ResetEvent {
            flow: Some(flow().reversed()),
            reason: Some(Reason {
                value: 1,
                name: Some("NO_SOCKET".into()),
            }),
            state: Some(0),
            no_socket: false,
        };
        let r = reset_record(&e, true);
        assert_eq!((r.kind, r.mode), ("reset_sent", Some("no_listener")));
        assert_eq!(
            r.message,
            "RST sent TCP 127.0.0.1:9 -> 127.0.0.2:40000 (NO_SOCKET)"
        );
        // Before 6.10: the kprobe saw no socket, and there is no reason.
        let r = reset_record(
            &ResetEvent {
                reason: None,
                state: None,
                no_socket: true,
                ..e.clone()
            },
            true,
        );
        assert_eq!((r.kind, r.mode), ("reset_sent", Some("no_listener")));
        assert_eq!(
            r.message,
            "RST sent TCP 127.0.0.1:9 -> 127.0.0.2:40000 (no socket)"
        );
        let r = reset_record(
            &ResetEvent {
                reason: None,
                ..e.clone()
            },
            false,
        );
        assert_eq!((r.kind, r.mode), ("reset_received", Some("reset_other")));
        // A RST in answer to our SYN: the client's side of a closed port.
        let r = reset_record(
            &ResetEvent {
                reason: None,
                state: Some(2),
                ..e
            },
            false,
        );
        assert_eq!((r.kind, r.mode), ("reset_received", Some("no_listener")));
        assert_eq!(r.state.as_deref(), Some("SYN_SENT"));
        assert!(
            r.message
                .contains("connection refused, nothing listens on 127.0.0.1:9"),
            "{}",
            r.message
        );
        assert!(r.advice.as_ref().unwrap().contains("127.0.0.1:9"));
        assert_eq!(r.priority(), PRIORITY_INFO);
        assert_eq!(Record::lost(3, "ring buffer full").priority(), PRIORITY_ERR);
    }

    fn listener() -> Sock {
        Sock {
            addr: "127.0.0.1".parse().unwrap(),
            port: 9,
            state: 10,
            accept_queue: 2,
            accept_queue_max: 1,
            rmem_alloc: 6912,
            rcvbuf: 8192,
        }
    }

    #[test]
    fn full_queues_name_the_socket_and_its_figures() {
        // The kprobe's view: the listener and the SYN it drops.
        let e = ListenEvent {
            stage: ListenStage::Syn,
            sock: listener(),
            flow: Some(flow()),
        };
        let r = listen_record(&e);
        assert_eq!(
            (r.kind, r.mode),
            ("listen_overflow", Some("accept_queue_full"))
        );
        assert_eq!((r.addr.as_deref(), r.port), (Some("127.0.0.1"), Some(9)));
        assert_eq!(r.state.as_deref(), Some("LISTEN"));
        let ev = r.evidence.as_ref().unwrap();
        assert_eq!(
            (ev["accept_queue"].as_u64(), ev["accept_queue_max"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(ev["stage"], "SYN");
        assert_eq!(
            r.message,
            "accept queue full on 127.0.0.1:9 (2 waiting for accept(), backlog 1): the kernel \
             dropped the SYN (the client will retry it) from 127.0.0.2:40000"
        );
        assert!(r.advice.unwrap().contains("listen() backlog (1)"));
        // The same overflow as a drop with the kernel's reason (6.18).
        let k = Kallsyms::parse("ffffffff81a00000 T tcp_v4_rcv\n");
        let drop = DropEvent {
            reason: Some(Reason {
                value: 9,
                name: Some("TCP_LISTEN_OVERFLOW".into()),
            }),
            location: 0xffffffff81a00091,
            flow: Some(flow()),
            mark: None,
            tcp_ts: None,
            tcp_drop: false,
            sock: Some(listener()),
        };
        let r = drop_record(&drop, &k);
        assert_eq!((r.kind, r.family), ("listen_overflow", Some("queue_full")));
        assert_eq!(r.port, Some(9));
        assert!(
            r.message
                .starts_with("accept queue full on 127.0.0.1:9 (2 waiting"),
            "{}",
            r.message
        );
        // Without the socket (no rx_sk), the packet's destination is the listener.
        let r = drop_record(
            &DropEvent {
                sock: None,
                ..drop.clone()
            },
            &k,
        );
        assert_eq!(
            (r.kind, r.port, r.evidence),
            ("listen_overflow", None, None)
        );
        assert!(
            r.message
                .starts_with("accept queue full on 127.0.0.1:9: dropped"),
            "{}",
            r.message
        );
        // A full receive buffer.
        let udp = DropEvent {
            reason: Some(Reason {
                value: 6,
                name: Some("SOCKET_RCVBUFF".into()),
            }),
            ..drop
        };
        let r = drop_record(&udp, &k);
        assert_eq!((r.kind, r.mode), ("drop", Some("rcvbuf_full")));
        let ev = r.evidence.unwrap();
        assert_eq!(
            (ev["rmem_alloc"].as_u64(), ev["rcvbuf"].as_u64()),
            (Some(6912), Some(8192))
        );
        assert!(r
            .message
            .contains("the receive buffer of 127.0.0.1:9 is full (6912 of 8192 bytes)"));
        assert!(r.advice.unwrap().contains("SO_RCVBUF"));
    }

    #[test]
    fn oom_records_are_about_the_victim() {
        let e = OomEvent {
            pid: 4242,
            comm: Some(b"ja\nva".to_vec()),
            total_vm_kb: Some(99999),
            anon_rss_kb: Some(30720),
            file_rss_kb: Some(1),
            shmem_rss_kb: Some(0),
            uid: Some(1000),
            oom_score_adj: Some(-100),
        };
        let d = Decoded {
            netns: None,
            ts_ns: 0,
            pid: 1,
            comm: b"allocator".to_vec(),
            event: KernelEvent::Oom(e.clone()),
        };
        let r = from_event(&d, 0, &Kallsyms::default());
        assert_eq!(
            (r.kind, r.family, r.mode),
            ("oom", Some("oom_stall"), Some("oom_stall"))
        );
        assert_eq!((r.pid, r.comm.as_deref()), (Some(4242), Some("ja\\x0ava")));
        assert_eq!(
            r.evidence.as_ref().unwrap()["anon_rss_kb"].as_u64(),
            Some(30720)
        );
        assert_eq!(
            r.message,
            "the OOM killer chose pid 4242 (ja\\x0ava) to kill: anon-rss 30720 kB, total-vm 99999 kB"
        );
        // 5.10: the pid alone.
        let bare = OomEvent {
            comm: None,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            uid: None,
            oom_score_adj: None,
            ..e
        };
        let r = oom_record(&bare);
        assert_eq!(r.message, "the OOM killer chose pid 4242 to kill");
        assert_eq!((r.comm, r.evidence), (None, None));
    }

    #[test]
    fn proc_details_complete_an_oom_record() {
        let mut r = oom_record(&OomEvent {
            pid: 77,
            comm: None,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            uid: None,
            oom_score_adj: None,
        });
        add_process(&mut r, Some(b"hog\x1b"), Some("/netprobe-test".into()));
        assert_eq!(r.comm.as_deref(), Some("hog\\x1b"));
        assert_eq!(r.cgroup.as_deref(), Some("/netprobe-test"));
        assert_eq!(
            r.message,
            "the OOM killer chose pid 77 (hog\\x1b) to kill, in cgroup /netprobe-test"
        );
        // The kernel's name wins over /proc's.
        let mut r = Record {
            pid: Some(5),
            comm: Some("java".into()),
            message: "the OOM killer chose pid 5 (java) to kill".into(),
            ..Record::default()
        };
        add_process(&mut r, Some(b"other"), None);
        assert_eq!(r.comm.as_deref(), Some("java"));
        assert_eq!(r.message, "the OOM killer chose pid 5 (java) to kill");
    }

    #[test]
    fn symptoms_alone_and_inside_an_oom_window() {
        let e = SocketEvent {
            flow: Some(flow()),
            state: None,
            errno: Some(-110),
        };
        let mut r = symptom_record(&e, false);
        assert_eq!(
            (r.kind, r.family, r.reason.as_deref()),
            ("socket_error", Some("other"), Some("ETIMEDOUT"))
        );
        assert_eq!(
            r.message,
            "socket error ETIMEDOUT on TCP 127.0.0.2:40000 -> 127.0.0.1:9: the connection timed out"
        );
        attribute_to_oom(&mut r, 4242, 3, "global_kill");
        assert_eq!((r.family, r.mode), (Some("oom_stall"), Some("oom_stall")));
        assert!(r.message.ends_with(
            ", 3 s after the OOM kill of pid 4242, which stalled the node (a global kill: the \
             node ran out of memory, not one cgroup)"
        ));
        assert_eq!(r.evidence.as_ref().unwrap()["oom_victim_pid"], 4242);
        assert_eq!(
            r.evidence.as_ref().unwrap()["stall_evidence"],
            "global_kill"
        );
        let r = symptom_record(
            &SocketEvent {
                state: Some(1),
                errno: None,
                ..e
            },
            true,
        );
        assert_eq!(
            (r.kind, r.state.as_deref()),
            ("retransmit", Some("ESTABLISHED"))
        );
        assert_eq!(
            r.message,
            "retransmitted a segment on TCP 127.0.0.2:40000 -> 127.0.0.1:9"
        );
        let s = retransmit_summary(12, 60);
        assert_eq!((s.kind, s.count), ("retransmit", Some(12)));
        assert_eq!(errno_name(999), None);
    }
}
