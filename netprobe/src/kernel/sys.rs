//! Facts about the running system: privileges, kernel release, sysctls.
//! Reads go through small functions over text so tests can feed them.

use std::fs;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability mask from `/proc/self/status` text (parsed
/// by procfs).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    use procfs::FromRead as _;
    procfs::process::Status::from_read(status.as_bytes())
        .ok()
        .map(|s| s.capeff)
}

pub fn cap_eff() -> Option<u64> {
    parse_cap_eff(&fs::read_to_string("/proc/self/status").ok()?)
}

/// What is missing to load and attach tracing programs, or None if nothing.
/// Tracepoint programs need CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN (also
/// needed to mount tracefs and read it, which is root-only by mode).
pub fn missing_privilege(cap_eff: u64) -> Option<String> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Some(format!(
        "netprobe needs {} (or CAP_SYS_ADMIN) to load its eBPF programs, and this process \
         does not have {}: run it as root (sudo netprobe ...)",
        "CAP_BPF and CAP_PERFMON",
        missing.join(" or ")
    ))
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A sysctl's value, by its dotted name, or None where this kernel lacks it.
pub fn sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The sysctls of note for the failure modes (design.md, kernel-map.md).
pub const SYSCTLS: [&str; 7] = [
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_recycle",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
];

/// Start-up reads files of megabytes (/proc/kallsyms, BTF) and frees them.
/// glibc raises its mmap threshold to the size of a freed mmap'd block, so
/// later big blocks come from the heap, and freed heap above the (also
/// raised) trim threshold stays resident: 15 MiB of a 33 MiB RSS. A fixed
/// threshold keeps big blocks mmap'd (unmapped when freed).
pub fn fix_malloc_thresholds() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Gives back to the kernel the heap that start-up freed.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `kernel.bpf_stats_enabled` (5.1+): whether the kernel counts each BPF
/// program's runs and run time. None where the sysctl does not exist.
pub fn bpf_stats_enabled() -> Option<bool> {
    sysctl("kernel.bpf_stats_enabled").map(|v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        // A real status (6.18), then the same with every capability.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/procfs/6.18/status");
        let real = std::fs::read_to_string(path).unwrap();
        assert_eq!(parse_cap_eff(&real), Some(0x1ff_feff_ffff));
        let root = real.replace("CapEff:\t000001fffeffffff", "CapEff:\t000001ffffffffff");
        assert_eq!(parse_cap_eff(&root), Some(0x1ff_ffff_ffff));
        assert_eq!(missing_privilege(0x1ff_ffff_ffff), None);
        assert_eq!(missing_privilege(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing_privilege((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        let m = missing_privilege(1 << CAP_BPF).unwrap();
        assert!(m.contains("CAP_PERFMON") && m.contains("root"), "{m}");
        let m = missing_privilege(0).unwrap();
        assert!(m.contains("not have CAP_BPF or CAP_PERFMON"), "{m}");
        let bad = real.replace("CapEff:\t000001fffeffffff", "CapEff:\tzz");
        assert_eq!(parse_cap_eff(&bad), None);
        assert_eq!(parse_cap_eff(""), None);
    }
}
