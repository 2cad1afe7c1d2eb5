//! The CPU backlog (`/proc/net/softnet_stat`'s dropped column and
//! net.core.netdev_max_backlog). Counter-derived.

use crate::pipeline::counters::{counter_record, evidence};
use crate::pipeline::record::Record;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const CPU_BACKLOG_FULL: Mode = m("queue_full", "cpu_backlog_full");

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
    let mut r = counter_record("drop", None, CPU_BACKLOG_FULL);
    evidence(&mut r, &[("dropped", dropped.into())]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softnet_stat_of_a_real_kernel() {
        let text = crate::testdata("procfs/6.18/softnet_stat");
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
