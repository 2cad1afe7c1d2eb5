//! Facts about the running kernel that may excuse a test from one of its
//! checks, read from the kernel's own files (tracefs formats, kallsyms,
//! sysfs), never from netprobe's records: an `n/a` must rest on a fact the
//! test checked itself, not on what the program under test claims.
//!
//! Each `lacks_*` function returns `None` when the kernel has the feature,
//! and `Some(fact)` otherwise, the fact worded for the matrix's footnote.

use std::path::PathBuf;

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The running kernel's (major, minor) version.
pub fn version() -> Option<(u32, u32)> {
    let r = release();
    let mut parts = r.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `Some(fact)` when the kernel does not count a kprobe or tracepoint
/// program's runs skipped while another BPF program runs on the CPU: that
/// count (recursion_misses, from trace_call_bpf) came in 6.7. Read from
/// the release here; netprobe reads it from BTF, so the two must agree.
pub fn lacks_program_miss_count() -> Option<String> {
    match version() {
        Some(v) if v >= (6, 7) => None,
        _ => Some(format!(
            "Linux {} counts no skipped kprobe or tracepoint runs (trace_call_bpf counts them from 6.7)",
            release()
        )),
    }
}

fn tracefs() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// The `format` file of tracepoint `category:name`, if the kernel has it.
pub fn format(event: &str) -> Option<String> {
    let (category, name) = event.split_once(':')?;
    std::fs::read_to_string(
        tracefs()?
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()
}

/// Whether a format file declares a field named `field`.
pub fn format_has_field(format: &str, field: &str) -> bool {
    format
        .lines()
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .filter_map(|decl| decl.split(';').next())
        .any(|decl| {
            // `unsigned int reason`, `__u8 saddr[4]`, `const void * location`
            let last = decl.rsplit([' ', '*']).next().unwrap_or("");
            last.split('[').next() == Some(field)
        })
}

/// Whether the format's print format names the symbolic value `name`
/// (`{ 2, "NO_SOCKET" }` in `__print_symbolic`).
pub fn format_names_symbol(format: &str, name: &str) -> bool {
    format.contains(&format!("\"{name}\""))
}

/// `Some(fact)` when the kernel has no tracepoint `event`.
pub fn lacks_tracepoint(event: &str) -> Option<String> {
    match format(event) {
        Some(_) => None,
        None => Some(format!(
            "Linux {} has no tracepoint {event} (no events/{}/format in tracefs)",
            release(),
            event.replace(':', "/")
        )),
    }
}

/// `Some(fact)` when drops carry no reason: `skb:kfree_skb` has no `reason`
/// field (before 5.17).
pub fn lacks_drop_reasons() -> Option<String> {
    let f = format("skb:kfree_skb")?;
    if format_has_field(&f, "reason") {
        None
    } else {
        Some(format!(
            "Linux {}'s skb:kfree_skb has no `reason` field (drop reasons came in 5.17)",
            release()
        ))
    }
}

/// `Some(fact)` when the kernel has no drop reason `name` (its kfree_skb
/// format does not list it), or no drop reasons at all.
pub fn lacks_drop_reason(name: &str) -> Option<String> {
    if let Some(fact) = lacks_drop_reasons() {
        return Some(fact);
    }
    let f = format("skb:kfree_skb")?;
    if format_names_symbol(&f, name) {
        None
    } else {
        Some(format!(
            "Linux {}'s skb:kfree_skb does not list the drop reason {name}",
            release()
        ))
    }
}

/// Whether `/proc/kallsyms` names the function `symbol` (exactly).
pub fn in_kallsyms(symbol: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|text| kallsyms_has(&text, symbol))
}

/// Whether kallsyms text (`addr type name [module]` lines) names `symbol`.
pub fn kallsyms_has(text: &str, symbol: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().nth(2) == Some(symbol))
}

/// `Some(fact)` when kprobes cannot be attached: no kprobe PMU (what aya
/// uses) and no `kprobe_events` file.
pub fn lacks_kprobes() -> Option<String> {
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    let events = tracefs().is_some_and(|t| t.join("kprobe_events").exists());
    if pmu || events {
        None
    } else {
        Some(format!(
            "Linux {} has no kprobes (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in tracefs)",
            release()
        ))
    }
}

/// `Some(fact)` when the kernel function `function` cannot be kprobed: no
/// kprobes, or the function is not in /proc/kallsyms (inlined, or in a
/// module that is not loaded).
pub fn lacks_kprobe_on(function: &str) -> Option<String> {
    if let Some(fact) = lacks_kprobes() {
        return Some(fact);
    }
    if in_kallsyms(function) {
        None
    } else {
        Some(format!(
            "Linux {} has no {function} in /proc/kallsyms to kprobe",
            release()
        ))
    }
}

/// `Some(fact)` when a drop of a TCP segment on the kernel's path for it is
/// invisible to every probe netprobe has here: no drop reasons, and TCP's
/// own `tcp_drop` (where the kernel frees the segment) is inlined (absent
/// from kallsyms) or cannot be kprobed.
pub fn lacks_tcp_drop_visibility() -> Option<String> {
    let reasons = lacks_drop_reasons()?;
    if !in_kallsyms("tcp_drop") {
        return Some(format!(
            "{reasons}, and tcp_drop, where TCP frees the segment, is inlined (not in /proc/kallsyms)"
        ));
    }
    lacks_kprobes().map(|k| format!("{reasons}; {k}"))
}

/// The BPF program ids a process holds: `prog_id` in the fdinfo of its
/// program and link descriptors.
pub fn bpf_programs_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        ids.extend(fdinfo_prog_id(&text).filter(|id| !ids.contains(id)));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `prog_id` of an fdinfo text (a program's or a link's descriptor).
pub fn fdinfo_prog_id(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the kernel still has BPF program `id` loaded (BPF_PROG_GET_FD_BY_ID).
pub fn bpf_program_exists(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    // union bpf_attr for *_GET_FD_BY_ID: { id; next_id; open_flags }.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of a valid attr.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor bpf(2) just returned is ours to close.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real format files, captured from Debian's 5.10 and the project's
    // 6.18 (netprobe's test data).
    const KFREE_SKB_6_18: &str =
        include_str!("../../netprobe/testdata/kernels/6.18/events/skb/kfree_skb/format");
    const KFREE_SKB_5_10: &str =
        include_str!("../../netprobe/testdata/kernels/5.10/events/skb/kfree_skb/format");

    #[test]
    fn fields_are_found_by_their_last_word() {
        assert!(format_has_field(KFREE_SKB_6_18, "reason"));
        assert!(format_has_field(KFREE_SKB_6_18, "location"));
        assert!(format_has_field(KFREE_SKB_6_18, "rx_sk"));
        assert!(!format_has_field(KFREE_SKB_5_10, "reason"));
        assert!(format_has_field(KFREE_SKB_5_10, "protocol"));
        assert!(!format_has_field(KFREE_SKB_6_18, "skb"));
        assert!(format_has_field(
            "\tfield:__u8 saddr[4];\toffset:8;",
            "saddr"
        ));
    }

    #[test]
    fn drop_reasons_are_found_by_their_quoted_names() {
        assert!(format_names_symbol(KFREE_SKB_6_18, "NO_SOCKET"));
        assert!(!format_names_symbol(KFREE_SKB_6_18, "NO_SOCK"));
        assert!(!format_names_symbol(KFREE_SKB_5_10, "NO_SOCKET"));
    }

    #[test]
    fn program_ids_come_from_program_and_link_fdinfo() {
        // Real: /proc/PID/fdinfo of netprobe's descriptors on 6.18, a
        // tracepoint's perf link, a program and a map.
        let link = include_str!("../testdata/fdinfo_link_6.18");
        let prog = include_str!("../testdata/fdinfo_prog_6.18");
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nmap_type:\t6\nkey_size:\t4\nvalue_size:\t8\nmax_entries:\t1\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t336\nmap_id:\t528\nfrozen:\t0\n";
        assert_eq!(fdinfo_prog_id(link), Some(491));
        assert_eq!(fdinfo_prog_id(prog), Some(491));
        assert_eq!(fdinfo_prog_id(map), None);
    }

    #[test]
    fn kallsyms_names_match_whole() {
        let text = "ffffffff81a00000 T tcp_v4_rcv\nffffffff81a00100 t tcp_drop_reason\nffffffffc0000000 t nf_ct_x\t[nf_conntrack]\n";
        assert!(kallsyms_has(text, "tcp_v4_rcv"));
        assert!(!kallsyms_has(text, "tcp_drop"));
        assert!(kallsyms_has(text, "nf_ct_x"));
    }
}
