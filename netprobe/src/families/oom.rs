//! OOM kills: `oom:mark_victim` (netprobe-ebpf/src/oom.rs) and vmstat's
//! `oom_kill`; whether a kill stalled the node, and the victim's cgroup.

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};
use crate::kernel::probes::{Need, ProbeSpec, TracepointSpec};

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
