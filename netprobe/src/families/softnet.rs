//! The CPU backlog (`/proc/net/softnet_stat`'s dropped column and
//! net.core.netdev_max_backlog). Counter-derived.

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const CPU_BACKLOG_FULL: Mode = m("queue_full", "cpu_backlog_full");

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[Entry {
    mode: CPU_BACKLOG_FULL,
    severity: Severity::Warning,
    title: "CPU input backlog full",
    meaning: "Packets arrived faster than a CPU's softirq could process them and its input \
                  backlog (net.core.netdev_max_backlog) was full, so they were dropped before \
                  reaching any socket.",
    detection: "Drop reason CPU_BACKLOG; drops in enqueue_to_backlog on older kernels; the \
                    `dropped` column of /proc/net/softnet_stat (host-wide).",
    advice: "Raise net.core.netdev_max_backlog, spread receive work over CPUs (RSS, RPS), and \
                 look for what keeps that CPU busy (time_squeeze in /proc/net/softnet_stat).",
    reasons: &["CPU_BACKLOG"],
    locations: &["enqueue_to_backlog"],
    counters: &["softnet dropped"],
}];
