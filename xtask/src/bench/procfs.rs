//! The few procfs and BPF fdinfo fields the bench reads. netprobe has
//! parsers of its own for /proc/net/snmp and /proc/PID/stat, but the xtask
//! cannot depend on netprobe (its build script builds the eBPF programs, and
//! `cargo xtask setup` must run before that can work), so these stay minimal.

use std::fs;

/// A counter of /proc/net/snmp: a `Proto: names...` line, then a
/// `Proto: values...` line.
pub fn snmp(text: &str, proto: &str, name: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let names = names[prefix.len()..].split_whitespace();
        let mut values = values[prefix.len()..].split_whitespace();
        if let Some(v) = names.zip(values.by_ref()).find(|(n, _)| *n == name) {
            return v.1.parse().ok();
        }
    }
    None
}

/// The first word of `key`'s value in `key:<tabs>value` lines (BPF fdinfo,
/// /proc/PID/status).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() == key {
            v.split_whitespace().next()
        } else {
            None
        }
    })
}

pub fn field_u64(text: &str, key: &str) -> Option<u64> {
    field(text, key)?.parse().ok()
}

/// utime + stime from /proc/PID/stat, in clock ticks (the fields after the
/// command, which is in parentheses and may hold any character).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// A `kB` figure of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(field_u64(&status, key)? * 1024)
}

/// A process's peak resident set (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM")
}

/// A process's resident set now (VmRSS), in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// The host's busy CPU time so far, in ns: user, nice, system, irq and
/// softirq of /proc/stat's `cpu` line (idle, iowait and steal left out).
pub fn host_busy_ns(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let ticks = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * (1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on this project's machine (Linux 6.18).
    const SNMP: &str = include_str!("../../../netprobe/testdata/procfs/6.18/snmp");
    /// /proc/PID/fdinfo/FD of a netprobe program on Linux 6.18, with
    /// kernel.bpf_stats_enabled=1.
    const FDINFO: &str = include_str!("testdata/fdinfo_bpf_prog");
    /// /proc/PID/status of a netprobe on Linux 6.18.
    const STATUS: &str = include_str!("testdata/status");

    #[test]
    fn snmp_counters_by_protocol_and_name() {
        assert_eq!(snmp(SNMP, "Tcp", "OutRsts"), Some(32));
        assert_eq!(snmp(SNMP, "Tcp", "AttemptFails"), Some(2));
        assert_eq!(snmp(SNMP, "Udp", "RcvbufErrors"), Some(0));
        assert_eq!(snmp(SNMP, "Udp", "InDatagrams"), Some(133));
        // UdpLite's line must not be read as Udp's.
        assert_eq!(snmp(SNMP, "UdpLite", "InDatagrams"), Some(0));
        // MaxConn is -1: not a counter.
        assert_eq!(snmp(SNMP, "Tcp", "MaxConn"), None);
        assert_eq!(snmp(SNMP, "Tcp", "NoSuchCounter"), None);
        assert_eq!(snmp("Udp: InDatagrams\n", "Udp", "InDatagrams"), None);
    }

    #[test]
    fn bpf_program_fdinfo() {
        assert_eq!(field(FDINFO, "prog_type"), Some("5"));
        assert!(field_u64(FDINFO, "prog_id").is_some());
        assert!(field_u64(FDINFO, "run_cnt").is_some());
        assert!(field_u64(FDINFO, "run_time_ns").is_some());
        assert_eq!(field(FDINFO, "no_such_key"), None);
    }

    #[test]
    fn peak_rss_from_status() {
        assert_eq!(field_u64(STATUS, "VmHWM"), Some(35144));
        assert_eq!(field_u64(STATUS, "VmRSS"), Some(35144));
        assert_eq!(field(STATUS, "Name"), Some("netprobe"));
    }

    #[test]
    fn cpu_ticks_after_a_command_with_parentheses() {
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 300 0 0 0 250 50 0 0 20 0 3 0 100";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn busy_time_is_read_from_a_real_proc_stat() {
        // Captured on the bench machine (Linux 6.18, 2 cores).
        let stat = include_str!("testdata/proc_stat_6.18.txt");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        // Its cpu line: user 2416627, nice 6209, system 402488, idle 3673260,
        // iowait 10616, irq 0, softirq 57278, steal 1269.
        assert_eq!(host_busy_ns(stat), Some(2882602 * (1_000_000_000 / hz)));
        assert!(host_busy_ns("cpu0 1 2 3").is_none());
        assert!(host_busy_ns("cpu  1 2 x 4 5 6 7").is_none());
    }
}
