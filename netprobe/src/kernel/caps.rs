//! Dropping privilege once the programs are attached. Loading and attaching
//! need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), CAP_SYS_RESOURCE (the
//! memlock limit before 5.11) and CAP_SYSLOG (kallsyms addresses); the
//! steady state reads the ring buffer through descriptors it already holds,
//! and needs only:
//! - CAP_SYS_ADMIN: setns() into pods' network namespaces, to read their
//!   counters and sysctls and dump their listeners (sock_diag);
//! - CAP_SYS_PTRACE: open other processes' /proc/PID/ns/net;
//! - CAP_DAC_READ_SEARCH: read other processes' /proc files and the
//!   kubelet's /var/log/pods;
//! - CAP_NET_ADMIN: count each namespace's netfilter rules once a minute
//!   (nftables' netlink dump and iptables' IPT_SO_GET_INFO both ask for it;
//!   netprobe only reads);
//! - CAP_BPF and CAP_PERFMON only while a kprobe waits for its module.
//!
//! Everything else leaves the effective, permitted, inheritable, ambient
//! and bounding sets, and no_new_privs is set, so nothing can be regained.
//! Capabilities are per thread: this runs before the daemon starts any.

use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_SYSLOG: u32 = 34;
pub use crate::kernel::sys::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};

/// Names of the capabilities netprobe deals in, for messages.
pub fn name(cap: u32) -> String {
    match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH".into(),
        CAP_SETPCAP => "CAP_SETPCAP".into(),
        CAP_NET_ADMIN => "CAP_NET_ADMIN".into(),
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE".into(),
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN".into(),
        CAP_SYS_RESOURCE => "CAP_SYS_RESOURCE".into(),
        CAP_SYSLOG => "CAP_SYSLOG".into(),
        CAP_PERFMON => "CAP_PERFMON".into(),
        CAP_BPF => "CAP_BPF".into(),
        c => format!("capability {c}"),
    }
}

/// The mask of names in a set, lowest first.
pub fn names(mask: u64) -> Vec<String> {
    (0..64).filter(|c| mask & (1 << c) != 0).map(name).collect()
}

const fn bit(c: u32) -> u64 {
    1 << c
}

/// What the daemon keeps after attaching.
pub fn steady_set(waiting_for_module: bool) -> u64 {
    let mut keep =
        bit(CAP_SYS_ADMIN) | bit(CAP_SYS_PTRACE) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_NET_ADMIN);
    if waiting_for_module {
        keep |= bit(CAP_BPF) | bit(CAP_PERFMON);
    }
    keep
}

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted) of the calling thread.
fn get() -> io::Result<(u64, u64)> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
    ))
}

fn set(effective: u64, permitted: u64) -> io::Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let d = [
        Data {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: 0,
        },
        Data {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and its two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// What dropping did: the capabilities kept (of those asked, the ones this
/// process had) and those given up.
#[derive(Debug)]
pub struct Dropped {
    pub kept: u64,
    pub dropped: u64,
    /// Set when the bounding set could not be narrowed (no CAP_SETPCAP: a
    /// service manager has then narrowed it already).
    pub bounding_note: Option<String>,
}

/// Keeps only `keep` (where held), clears the rest from every set, and sets
/// no_new_privs.
pub fn drop_to(keep: u64) -> Result<Dropped, String> {
    // Capabilities are per thread: another thread alive now would keep
    // all of them.
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let n = tasks.count();
        if n > 1 {
            return Err(format!(
                "{n} threads are alive, and each would keep its capabilities"
            ));
        }
    }
    let (eff, perm) = get().map_err(|e| format!("capget: {e}"))?;
    let kept = keep & perm;
    // The bounding set first: narrowing it needs CAP_SETPCAP, dropped below.
    let mut bounding_note = None;
    if eff & bit(CAP_SETPCAP) != 0 {
        for c in 0..=last_cap() {
            if kept & bit(c) == 0 {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } != 0 {
                    let e = io::Error::last_os_error();
                    // EINVAL: a capability this kernel does not know.
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(format!("dropping {} from the bounding set: {e}", name(c)));
                    }
                }
            }
        }
    } else {
        bounding_note =
            Some("bounding set left as the service manager set it (no CAP_SETPCAP)".into());
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    set(kept, kept).map_err(|e| format!("capset: {e}"))?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", io::Error::last_os_error()));
    }
    Ok(Dropped {
        kept,
        dropped: perm & !kept,
        bounding_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_set_and_names() {
        let s = steady_set(false);
        assert_eq!(
            names(s),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_NET_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_SYS_ADMIN"
            ]
        );
        assert_eq!(names(steady_set(true) & !s), ["CAP_PERFMON", "CAP_BPF"]);
        assert_eq!(name(5), "capability 5");
    }

    #[test]
    fn capget_reads_this_thread() {
        let (eff, perm) = get().unwrap();
        // Effective is always within permitted.
        assert_eq!(eff & !perm, 0);
    }
}
