//! Which BPF programs a process has attached to which tracepoints, and what
//! the kernel says each cost: `run_cnt` and `run_time_ns` from the program's
//! fdinfo, counted while `kernel.bpf_stats_enabled` is 1. Works for netprobe
//! and bpftrace alike, without bpftool:
//! - bpftrace keeps the perf event descriptor of each attachment open, and
//!   the kernel answers BPF_TASK_FD_QUERY on it with the program id and the
//!   tracepoint's name;
//! - aya (netprobe) attaches through a bpf_link and closes the perf event,
//!   which that query does not answer (`-ENOTSUPP` for perf links); but its
//!   programs are named after their tracepoints (the kernel keeps the first
//!   15 bytes), and BPF_OBJ_GET_INFO_BY_FD gives the name.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};

use super::procfs;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_TASK_FD_QUERY: libc::c_long = 20;
const BPF_FD_TYPE_RAW_TRACEPOINT: u32 = 0;
const BPF_FD_TYPE_TRACEPOINT: u32 = 1;

/// `union bpf_attr`'s `task_fd_query` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TaskFdQuery {
    pid: u32,
    fd: u32,
    flags: u32,
    buf_len: u32,
    buf: u64,
    prog_id: u32,
    fd_type: u32,
    probe_offset: u64,
    probe_addr: u64,
}

/// `union bpf_attr`'s members for BPF_PROG_GET_FD_BY_ID ...
#[repr(C)]
#[derive(Default)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// ... and BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// bpf(2) with `attr` (its size passed).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: every `T` here is one of the `bpf_attr` members above, sized
    // by the call; the pointers inside point to buffers the caller keeps
    // alive for the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) }
}

/// The program attached through `pid`'s descriptor `fd` and the tracepoint's
/// name, when `fd` is a perf event or raw tracepoint attachment.
fn task_fd_query(pid: u32, fd: u32) -> Option<(u32, String)> {
    let mut buf = [0u8; 256];
    let mut q = TaskFdQuery {
        pid,
        fd,
        buf_len: buf.len() as u32,
        buf: buf.as_mut_ptr() as u64,
        ..Default::default()
    };
    if bpf(BPF_TASK_FD_QUERY, &mut q) != 0
        || !matches!(
            q.fd_type,
            BPF_FD_TYPE_TRACEPOINT | BPF_FD_TYPE_RAW_TRACEPOINT
        )
    {
        return None;
    }
    Some((
        q.prog_id,
        c_string(&buf[..(q.buf_len as usize).min(buf.len())]),
    ))
}

fn c_string(bytes: &[u8]) -> String {
    let s = bytes.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(s).into_owned()
}

/// Where `name[BPF_OBJ_NAME_LEN]` lies in `struct bpf_prog_info`.
const PROG_INFO_NAME: std::ops::Range<usize> = 64..80;

/// The name the loader gave program `id` (at most 15 bytes).
fn prog_name(id: u32) -> Option<String> {
    let mut by_id = GetFdById {
        id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id);
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_prog_info is about 230 bytes on 6.18; the kernel fills
    // what both it and we know of.
    let mut info = [0u8; 512];
    let mut q = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut q) != 0 {
        return None;
    }
    Some(c_string(&info[PROG_INFO_NAME]))
}

/// The one tracepoint of `candidates` (bare names) that a program called
/// `name` (truncated to 15 bytes) is named after.
fn named_after<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    if name.len() < 3 {
        return None;
    }
    let mut hits = candidates.iter().filter(|c| c.starts_with(name));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

fn fds(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&dir)
        .with_context(|| format!("cannot list {dir}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// What the kernel counted for one program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl RunStats {
    pub fn since(self, before: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
        }
    }

    fn plus(self, o: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt + o.run_cnt,
            run_time_ns: self.run_time_ns + o.run_time_ns,
        }
    }
}

/// One BPF program a process holds.
#[derive(Debug, Clone)]
pub struct Program {
    pub id: u32,
    /// The bare tracepoint name (`kfree_skb`), when known.
    pub tracepoint: Option<String>,
    pub stats: RunStats,
}

/// Every BPF program `pid` holds open, with its statistics and, where it
/// can be told, the tracepoint it serves among `tracepoints` (bare names).
pub fn programs(pid: u32, tracepoints: &[String]) -> Result<Vec<Program>> {
    let mut progs = BTreeMap::new();
    let mut queried = BTreeMap::new();
    for fd in fds(pid)? {
        if let Some((prog, tp)) = task_fd_query(pid, fd) {
            queried.insert(prog, tp);
        }
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if let Some((id, stats)) = parse_prog_fdinfo(&info) {
            progs.insert(id, stats);
        }
    }
    Ok(progs
        .into_iter()
        .map(|(id, stats)| {
            let tracepoint = queried
                .remove(&id)
                .or_else(|| named_after(&prog_name(id)?, tracepoints).map(str::to_string));
            Program {
                id,
                tracepoint,
                stats,
            }
        })
        .collect())
}

/// A program's fdinfo (links carry a `prog_id` too, but no `run_cnt`).
fn parse_prog_fdinfo(info: &str) -> Option<(u32, RunStats)> {
    let id = procfs::field(info, "prog_id")?.parse().ok()?;
    Some((
        id,
        RunStats {
            run_cnt: procfs::field_u64(info, "run_cnt")?,
            run_time_ns: procfs::field_u64(info, "run_time_ns")?,
        },
    ))
}

/// The statistics of each tracepoint's programs (summed when several).
pub fn by_tracepoint(programs: &[Program]) -> BTreeMap<String, RunStats> {
    let mut out: BTreeMap<String, RunStats> = BTreeMap::new();
    for p in programs {
        if let Some(tp) = &p.tracepoint {
            let sum = out.entry(tp.clone()).or_default();
            *sum = sum.plus(p.stats);
        }
    }
    out
}

/// `after` less `before`, program by program.
pub fn since(after: &[Program], before: &[Program]) -> Vec<Program> {
    after
        .iter()
        .map(|p| {
            let b = before.iter().find(|b| b.id == p.id).map(|b| b.stats);
            Program {
                stats: p.stats.since(b.unwrap_or_default()),
                ..p.clone()
            }
        })
        .collect()
}

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while this lives; the old value after.
pub struct StatsEnabled {
    old: String,
}

impl StatsEnabled {
    pub fn new() -> Result<StatsEnabled> {
        let old = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write 1 to {STATS_SYSCTL}"))?;
        Ok(StatsEnabled { old })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, &self.old) {
            eprintln!(
                "xtask: bench: cannot restore {STATS_SYSCTL} to {}: {e}",
                self.old
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fdinfo_gives_id_and_stats() {
        let (id, stats) = parse_prog_fdinfo(include_str!("testdata/fdinfo_bpf_prog")).unwrap();
        assert!(id > 0);
        assert!(stats.run_cnt > 0 && stats.run_time_ns > 0, "{stats:?}");
        // A link's fdinfo names its program but has no statistics.
        let link = "link_type:\tperf\nlink_id:\t7\nprog_tag:\t0123456789abcdef\nprog_id:\t42\n";
        assert_eq!(parse_prog_fdinfo(link), None);
    }

    #[test]
    fn statistics_are_summed_per_tracepoint_and_differenced() {
        let s = |run_cnt, run_time_ns| RunStats {
            run_cnt,
            run_time_ns,
        };
        let p = |id, tp: Option<&str>, stats| Program {
            id,
            tracepoint: tp.map(str::to_string),
            stats,
        };
        let before = [p(1, Some("kfree_skb"), s(10, 1000))];
        let after = [
            p(1, Some("kfree_skb"), s(20, 2000)),
            p(2, Some("kfree_skb"), s(5, 500)),
            p(3, None, s(1, 1)),
        ];
        let by = by_tracepoint(&since(&after, &before));
        assert_eq!(by.len(), 1);
        assert_eq!(by["kfree_skb"], s(15, 1500));
        assert_eq!(s(1, 1).since(s(2, 2)), s(0, 0));
    }

    #[test]
    fn programs_are_known_by_the_tracepoint_they_are_named_after() {
        let tps: Vec<String> = [
            "kfree_skb",
            "tcp_send_reset",
            "tcp_receive_reset",
            "inet_sk_error_report",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(named_after("kfree_skb", &tps), Some("kfree_skb"));
        // The kernel keeps 15 bytes of the name.
        assert_eq!(
            named_after("inet_sk_error_r", &tps),
            Some("inet_sk_error_report")
        );
        // bpftrace's names say nothing; an ambiguous prefix is no answer.
        assert_eq!(named_after("tracepoint_tcp_", &tps), None);
        assert_eq!(named_after("tcp_", &tps), None);
        assert_eq!(named_after("", &tps), None);
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
/// `mov r0, 0; exit`: a program that does nothing (the opcode is each
/// instruction's low byte, registers and immediates zero).
const EMPTY_PROGRAM: [u64; 2] = [0xb7, 0x95];
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)` and `_IO('$', 0)` (include/uapi/linux/perf_event.h).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// `union bpf_attr`'s members for BPF_PROG_LOAD, up to `prog_name`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `struct perf_event_attr` as of its first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Programs that do nothing, attached to the tracepoints netprobe uses the
/// way netprobe attaches (perf event tracepoints): what any program there
/// costs the workload, the floor under netprobe's own. Detached on drop.
pub struct Empty {
    _fds: Vec<OwnedFd>,
}

impl Empty {
    /// Attaches one to each of `tracepoints` (`category:name`).
    pub fn attach(tracepoints: &[String]) -> Result<Empty> {
        let mut fds = Vec::new();
        for tp in tracepoints {
            let (cat, name) = tp
                .split_once(':')
                .with_context(|| format!("{tp}: not category:name"))?;
            let path = format!("/sys/kernel/tracing/events/{cat}/{name}/id");
            let id: u64 = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {path}"))?
                .trim()
                .parse()
                .with_context(|| format!("{path}: not a number"))?;
            let prog = load_empty().with_context(|| format!("an empty program for {tp}"))?;
            let mut attr = PerfEventAttr {
                kind: PERF_TYPE_TRACEPOINT,
                size: size_of::<PerfEventAttr>() as u32,
                config: id,
                sample_period: 1,
                wakeup_events: 1,
                ..Default::default()
            };
            // SAFETY: `attr` is a valid perf_event_attr of the size it
            // states; the other arguments are plain integers.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &mut attr as *mut PerfEventAttr,
                    -1,
                    0,
                    -1,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("perf_event_open on {tp}"));
            }
            // SAFETY: the kernel just gave us this descriptor.
            let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            for (req, arg) in [
                (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()),
                (PERF_EVENT_IOC_ENABLE, 0),
            ] {
                // SAFETY: both requests take an integer argument.
                if unsafe { libc::ioctl(event.as_raw_fd(), req, arg) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("attaching an empty program to {tp}"));
                }
            }
            fds.extend([prog, event]);
        }
        Ok(Empty { _fds: fds })
    }
}

/// Loads `EMPTY_PROGRAM` as a tracepoint program.
fn load_empty() -> Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"np_floor\0");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: EMPTY_PROGRAM.len() as u32,
        insns: EMPTY_PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_LOAD");
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
