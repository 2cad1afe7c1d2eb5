//! OOM kills: `oom:mark_victim` (netprobe-ebpf/src/oom.rs) and vmstat's
//! `oom_kill`; whether a kill stalled the node, and the victim's cgroup.

use crate::kernel::probes::{Need, ProbeSpec, TracepointSpec};
use crate::kernel::tracefs::Format;
use crate::pipeline::decode::{data_loc_str, field_uint, DecodeError, KernelEvent, Layouts};
use netprobe_common::{kind, Event};

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
