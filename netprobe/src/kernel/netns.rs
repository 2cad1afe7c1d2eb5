//! Per network namespace: the kernel's counters, the sysctls that matter,
//! and the listening sockets with their queues (sock_diag, as `ss -lnt`).
//! A node's failures happen in pods' namespaces, and /proc/net, /proc/sys/net
//! and sock_diag all answer for the reader's namespace only: a worker thread
//! enters each namespace (setns) and reads there.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{DirEntryExt, MetadataExt},
    },
    path::{Path, PathBuf},
};

/// `Header: a b c` / `Header: 1 2 3` line pairs (/proc/net/netstat and
/// /proc/net/snmp) as `Header.name` -> value. Lines that do not pair up,
/// and values that are not numbers, are skipped.
pub fn parse_pairs(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    parse_pairs_into(text, &mut out, &|_| true);
    out
}

/// `parse_pairs`, keeping only the counters `keep` names (no allocation
/// for the others: a namespace's netstat and snmp hold some 300).
pub fn parse_pairs_into(text: &str, out: &mut BTreeMap<String, u64>, keep: &dyn Fn(&str) -> bool) {
    let mut key = String::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((h1, names)), Some((h2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if h1 != h2 {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            key.clear();
            key.push_str(h1);
            key.push('.');
            key.push_str(n);
            if !keep(&key) {
                continue;
            }
            if let Ok(v) = v.parse::<u64>() {
                out.insert(key.clone(), v);
            }
        }
    }
}

/// `/proc/net/stat/nf_conntrack`: a header naming the columns (they differ
/// between kernels), then one row of hex numbers per CPU. Returns
/// `Conntrack.<column>` summed over CPUs (`entries` is global: the first
/// row's).
pub fn parse_conntrack_stat(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return out;
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    for (row, line) in lines.enumerate() {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != names.len() {
            continue;
        }
        for (n, v) in names.iter().zip(values) {
            let Ok(v) = u64::from_str_radix(v, 16) else {
                continue;
            };
            let e = out.entry(format!("Conntrack.{n}")).or_insert(0u64);
            if *n == "entries" {
                if row == 0 {
                    *e = v;
                }
            } else {
                *e = e.saturating_add(v);
            }
        }
    }
    out
}

/// A network namespace and a file that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u64,
    pub path: PathBuf,
}

/// The namespaces of running processes (`/proc/PID/ns/net`) and those
/// bind-mounted by `ip netns` (`/run/netns/NAME`), one entry per inode.
pub fn discover(proc_root: &Path, run_netns: &Path) -> Vec<Namespace> {
    let mut seen = BTreeMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(m) = std::fs::metadata(&path) {
            seen.entry(m.ino()).or_insert(path);
        }
    };
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for e in dir.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                add(e.path().join("ns/net"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(run_netns) {
        for e in dir.flatten() {
            add(e.path());
        }
    }
    seen.into_iter()
        .map(|(inode, path)| Namespace { inode, path })
        .collect()
}

/// A socket from a sock_diag dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSock {
    pub state: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// For a listener: connections waiting for accept(), and the backlog.
    pub rqueue: u32,
    pub wqueue: u32,
}

pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_LISTEN: u8 = 10;
const TCP_NEW_SYN_RECV: u8 = 12;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48),
/// expires, rqueue, wqueue, uid, inode.
const DIAG_MSG: usize = 72;

/// The request: all TCP sockets of `family` in LISTEN or SYN_RECV (request
/// sockets, i.e. the SYN queue).
fn diag_request(family: u8, seq: u32) -> Vec<u8> {
    let states: u32 = 1 << TCP_LISTEN | 1 << TCP_SYN_RECV | 1 << TCP_NEW_SYN_RECV;
    let len = NLMSG_HDR + 56;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    b.extend_from_slice(&states.to_ne_bytes());
    b.resize(len, 0); // an all-zero sockid: any socket
    b
}

/// Parses one datagram of a sock_diag dump. Returns the sockets and
/// whether the dump is complete (`Err` for a netlink error or malformed
/// message).
pub fn parse_diag(buf: &[u8]) -> Result<(Vec<DiagSock>, bool), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(format!("malformed netlink message (length {len})"));
        }
        let body = &buf[at + NLMSG_HDR..at + len];
        match ty {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                // A negative errno; i32::MIN has no positive counterpart.
                return Err(format!(
                    "sock_diag: {}",
                    io::Error::from_raw_os_error(errno.saturating_neg())
                ));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= DIAG_MSG => {
                let family = body[0];
                let addr = match family as i32 {
                    libc::AF_INET => {
                        IpAddr::V4(Ipv4Addr::new(body[8], body[9], body[10], body[11]))
                    }
                    libc::AF_INET6 => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&body[8..24]).unwrap()))
                    }
                    _ => {
                        at += (len + 3) & !3;
                        continue;
                    }
                };
                let u32_at = |o: usize| u32::from_ne_bytes(body[o..o + 4].try_into().unwrap());
                out.push(DiagSock {
                    state: body[1],
                    addr,
                    port: u16::from_be_bytes([body[4], body[5]]),
                    rqueue: u32_at(56),
                    wqueue: u32_at(60),
                });
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok((out, false))
}

/// Dumps the listeners and request sockets of the caller's namespace.
pub fn dump_listeners() -> Result<Vec<DiagSock>, String> {
    // SAFETY: socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(format!("sock_diag socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut all = Vec::new();
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        let req = diag_request(family, seq);
        // SAFETY: sending a valid buffer to the kernel (pid 0 via an
        // unbound, unaddressed datagram: netlink's default destination).
        let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(format!("sock_diag send: {}", io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 32 << 10];
        // Bounded: a dump of a huge table stops after this many datagrams.
        for _ in 0..4096 {
            // SAFETY: receiving into a buffer of the stated size.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(format!("sock_diag recv: {}", io::Error::last_os_error()));
            }
            let (socks, done) = parse_diag(&buf[..n as usize])?;
            all.extend(socks);
            if done {
                break;
            }
        }
    }
    Ok(all)
}

/// What one namespace showed at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: BTreeMap<String, u64>,
    /// `net.ipv4.tcp_syncookies` in that namespace.
    pub syncookies: Option<u64>,
    /// `net.core.somaxconn`: the cap on every listen() backlog there.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_timestamps`, and `tcp_tw_recycle` where the kernel
    /// still has it (before 4.12).
    pub timestamps: Option<u64>,
    pub tw_recycle: Option<u64>,
    /// `net.netfilter.nf_conntrack_count` (this namespace's entries) and
    /// `nf_conntrack_max` (the limit), when conntrack is loaded.
    pub conntrack_count: Option<u64>,
    pub conntrack_max: Option<u64>,
    pub sockets: Vec<DiagSock>,
    /// Why the sockets could not be listed (the counters still count).
    pub sockets_error: Option<String>,
    /// Netfilter rule counts, on the rounds that count them.
    pub rules: Option<crate::kernel::netfilter::RuleCounts>,
}

/// What a sample reads beyond the counters, decided on them: the sysctls
/// (a lookup under /proc/sys/net costs in proportion to the node's
/// namespaces) and the listening sockets (a dump costs more than two small
/// files).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub sysctls: bool,
    pub sockets: bool,
}

/// How a sample is taken: which counters to keep, and what else to read
/// once the counters are known.
pub struct Reading<'a> {
    pub keep: &'a (dyn Fn(&str) -> bool + Sync),
    pub wants: &'a (dyn Fn(&BTreeMap<String, u64>) -> Wants + Sync),
    /// Count netfilter rules (Some: whether nftables is there).
    pub rules: Option<bool>,
}

/// Reads `ns` from a thread that enters it (needs CAP_SYS_ADMIN).
pub fn sample(ns: &Namespace, how: &Reading) -> Result<Snapshot, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // On this (scoped, short-lived) thread only.
            enter(ns)?;
            read_here(how)
        })
        .join()
        .map_err(|_| "the sampling thread panicked".to_string())?
    })
}

/// Reads `ns` from the calling thread, which enters it and then returns
/// to `home` (the namespace it was in). For a thread of its own that does
/// nothing else (the counter sampler's): no thread is made per namespace.
/// `Err(Stuck)` when the thread could not return: it must not be used for
/// anything else.
pub fn sample_in_place(ns: &Namespace, home: &File, how: &Reading) -> Result<Snapshot, Failed> {
    enter(ns).map_err(Failed::Read)?;
    let read = read_here(how);
    // SAFETY: as above, back to the namespace the thread came from.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Failed::Stuck(format!(
            "cannot return from netns {} to the host's: {}",
            ns.inode,
            io::Error::last_os_error()
        )));
    }
    read.map_err(Failed::Read)
}

/// Moves the calling thread into `ns` (needs CAP_SYS_ADMIN).
fn enter(ns: &Namespace) -> Result<(), String> {
    let file = File::open(&ns.path).map_err(|e| format!("{}: {e}", ns.path.display()))?;
    // SAFETY: setns(2) on the calling thread, with an open namespace file.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {}: {}",
            ns.path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Why a sample in place failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// The namespace could not be read (it may have gone).
    Read(String),
    /// The thread is left in another namespace.
    Stuck(String),
}

/// Network namespaces as `discover` finds them, remembered between calls.
/// Each call lists /run/netns (where runtimes bind their pods' namespaces)
/// and, when it is due, /proc; it examines only the processes and names it
/// has not seen (and every one of them every `RECHECK_EVERY`th call, for a
/// process that changed namespace or a name bound again). Listing /proc
/// costs in proportion to the node's processes (some 25 ms for 20,000 here,
/// more with the kernel busy): it is due every call on a node of fewer
/// than `PROC_FEW` processes, or while it costs under `PROC_BUDGET` a
/// second, else less often, at least every `PROC_EVERY_MAX` calls.
#[derive(Debug, Default)]
pub struct Discovery {
    /// PID -> its namespace's inode.
    pids: std::collections::HashMap<u32, u64>,
    /// The namespaces the last /proc listing found, and a process's path.
    of_pids: BTreeMap<u64, PathBuf>,
    /// /run/netns name and its own inode -> the namespace's inode.
    names: std::collections::HashMap<(std::ffi::OsString, u64), u64>,
    calls: u64,
    /// The call at which /proc is listed next, and the last it was.
    proc_due: u64,
    listed_at: u64,
}

/// Every this many calls, `Discovery` examines each process and name
/// again.
pub const RECHECK_EVERY: u64 = 60;
/// What listing /proc may cost a call, on average.
pub const PROC_BUDGET: std::time::Duration = std::time::Duration::from_micros(500);
/// Below this many processes /proc is listed every call.
pub const PROC_FEW: usize = 2_000;
/// /proc is listed at least every this many calls.
pub const PROC_EVERY_MAX: u64 = 10;

impl Discovery {
    pub fn namespaces(&mut self, proc_root: &Path, run_netns: &Path) -> Vec<Namespace> {
        let call = self.calls;
        let recheck = call.is_multiple_of(RECHECK_EVERY);
        self.calls += 1;
        let ns_inode = |path: &Path| std::fs::metadata(path).ok().map(|m| m.ino());
        if call >= self.proc_due {
            let started = std::time::Instant::now();
            self.list_proc(proc_root, call);
            // A node of few processes is listed every call, however slow the
            // machine (a new namespace known through a process is then found
            // at once).
            let calls = if self.pids.len() < PROC_FEW {
                1
            } else {
                started.elapsed().as_micros() / PROC_BUDGET.as_micros().max(1)
            };
            self.proc_due = call + (calls as u64).clamp(1, PROC_EVERY_MAX);
        }
        let mut seen = self.of_pids.clone();
        let mut names = std::collections::HashMap::with_capacity(self.names.len());
        if let Ok(dir) = std::fs::read_dir(run_netns) {
            for e in dir.flatten() {
                let key = (e.file_name(), e.ino());
                let path = e.path();
                let inode = match self.names.get(&key) {
                    Some(&i) if !recheck => Some(i),
                    _ => ns_inode(&path),
                };
                if let Some(i) = inode {
                    names.insert(key, i);
                    seen.entry(i).or_insert(path);
                }
            }
        }
        self.names = names;
        seen.into_iter()
            .map(|(inode, path)| Namespace { inode, path })
            .collect()
    }

    /// Lists /proc at call `call`: each process's namespace, looked up
    /// when the process is new, or when its turn to be rechecked came since
    /// the last listing (PID modulo `RECHECK_EVERY`: a sixtieth of them a
    /// call, so the rechecks cost evenly).
    fn list_proc(&mut self, proc_root: &Path, call: u64) {
        let since = call.saturating_sub(self.listed_at).max(1);
        let first = self.listed_at == 0 && self.pids.is_empty();
        self.listed_at = call;
        let recheck = |pid: u32| {
            first
                || since >= RECHECK_EVERY
                || (call + RECHECK_EVERY - u64::from(pid) % RECHECK_EVERY) % RECHECK_EVERY < since
        };
        let ns_inode = |path: &Path| std::fs::metadata(path).ok().map(|m| m.ino());
        let mut seen: BTreeMap<u64, PathBuf> = BTreeMap::new();
        let mut pids = std::collections::HashMap::with_capacity(self.pids.len());
        if let Ok(dir) = std::fs::read_dir(proc_root) {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let path = e.path().join("ns/net");
                let inode = match self.pids.get(&pid) {
                    Some(&i) if !recheck(pid) => Some(i),
                    _ => ns_inode(&path),
                };
                if let Some(i) = inode {
                    pids.insert(pid, i);
                    seen.entry(i).or_insert(path);
                }
            }
        }
        self.pids = pids;
        self.of_pids = seen;
    }
}

/// Reads the caller's namespace.
pub fn read_here(how: &Reading) -> Result<Snapshot, String> {
    let mut counters = BTreeMap::new();
    // Our own parsers, not procfs's: procfs reads /proc/net (the process's
    // namespace, not this thread's after setns), has no TcpExt/IpExt of
    // netstat, and no stat/nf_conntrack.
    // This thread's namespace: /proc/self/net is the process's, and
    // /proc/thread-self only exists from 3.17.
    // SAFETY: gettid(2) has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let net = format!("/proc/self/task/{tid}/net");
    for f in ["netstat", "snmp"] {
        let f = format!("{net}/{f}");
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?;
        parse_pairs_into(&text, &mut counters, how.keep);
    }
    // Conntrack, when its module is loaded (it may be loaded at any time).
    if let Ok(text) = std::fs::read_to_string(format!("{net}/stat/nf_conntrack")) {
        counters.extend(
            parse_conntrack_stat(&text)
                .into_iter()
                .filter(|(k, _)| (how.keep)(k)),
        );
    }
    let wants = (how.wants)(&counters);
    let sysctl = |name: &str| -> Option<u64> {
        if !wants.sysctls {
            return None;
        }
        std::fs::read_to_string(format!("/proc/sys/net/{name}"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let (sockets, sockets_error) = if wants.sockets {
        match dump_listeners() {
            Ok(s) => (s, None),
            Err(why) => (Vec::new(), Some(why)),
        }
    } else {
        (Vec::new(), None)
    };
    Ok(Snapshot {
        counters,
        syncookies: sysctl("ipv4/tcp_syncookies"),
        somaxconn: sysctl("core/somaxconn"),
        timestamps: sysctl("ipv4/tcp_timestamps"),
        tw_recycle: sysctl("ipv4/tcp_tw_recycle"),
        conntrack_count: sysctl("netfilter/nf_conntrack_count"),
        conntrack_max: sysctl("netfilter/nf_conntrack_max"),
        sockets,
        sockets_error,
        rules: how.rules.map(|nftables| {
            crate::kernel::netfilter::count_here(
                &net,
                nftables,
                crate::kernel::netfilter::NFT_COUNT_CAP,
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/procfs/6.18")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn counters_from_real_netstat_and_snmp() {
        let c = parse_pairs(&testdata("netstat"));
        for k in [
            "TcpExt.ListenOverflows",
            "TcpExt.ListenDrops",
            "TcpExt.TCPReqQFullDrop",
            "TcpExt.PAWSEstab",
            "IpExt.InOctets",
        ] {
            assert!(c.contains_key(k), "{k}");
        }
        let s = parse_pairs(&testdata("snmp"));
        assert!(s.contains_key("Udp.RcvbufErrors") && s.contains_key("Tcp.RetransSegs"));
        // Tcp.MaxConn is -1: not a counter, left out rather than wrapped.
        assert!(!s.contains_key("Tcp.MaxConn"));
        // Garbage and unpaired lines are skipped, not a panic.
        assert!(parse_pairs("TcpExt: a b\nIpExt: 1 2\n").is_empty());
        assert_eq!(parse_pairs("X: a b\nX: 1 zz\nY: c\n").len(), 1);
    }

    #[test]
    fn diag_messages_parse_and_malformed_ones_are_errors() {
        let mut msg = vec![0u8; NLMSG_HDR + DIAG_MSG];
        msg[..4].copy_from_slice(&((NLMSG_HDR + DIAG_MSG) as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let body = NLMSG_HDR;
        msg[body] = libc::AF_INET as u8;
        msg[body + 1] = TCP_LISTEN;
        msg[body + 4..body + 6].copy_from_slice(&8080u16.to_be_bytes());
        msg[body + 8..body + 12].copy_from_slice(&[127, 0, 0, 1]);
        msg[body + 56..body + 60].copy_from_slice(&2u32.to_ne_bytes());
        msg[body + 60..body + 64].copy_from_slice(&1u32.to_ne_bytes());
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let buf = [msg.clone(), done].concat();
        let (socks, finished) = parse_diag(&buf).unwrap();
        assert!(finished);
        assert_eq!(
            socks,
            [DiagSock {
                state: TCP_LISTEN,
                addr: "127.0.0.1".parse().unwrap(),
                port: 8080,
                rqueue: 2,
                wqueue: 1
            }]
        );
        assert!(parse_diag(&msg[..30]).is_err(), "a truncated message");
        assert!(
            parse_diag(&msg[..10]).unwrap().0.is_empty(),
            "less than a header"
        );
        let mut bad = msg.clone();
        bad[..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_diag(&bad).is_err());
        let mut err = vec![0u8; 36];
        err[..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(parse_diag(&err).unwrap_err().contains("not permitted"));
    }

    /// Found by `cargo xtask fuzz netns_diag`: an NLMSG_ERROR whose error
    /// is i32::MIN (negating it overflowed).
    #[test]
    fn netlink_error_of_i32_min_is_an_error() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/fuzz/netns-diag-error-errno-i32-min.bin");
        let buf = std::fs::read(path).unwrap();
        let err = parse_diag(&buf).unwrap_err();
        assert!(err.starts_with("sock_diag: "), "{err}");
    }

    #[test]
    fn request_asks_for_listeners_and_the_syn_queue() {
        let r = diag_request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[..4].try_into().unwrap()), 72);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        let states = u32::from_ne_bytes(r[20..24].try_into().unwrap());
        assert_eq!(states, 1 << 10 | 1 << 3 | 1 << 12);
    }

    #[test]
    fn discovers_this_process_namespace() {
        let all = discover(Path::new("/proc"), Path::new("/nonexistent"));
        let mine = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(all.iter().any(|n| n.inode == mine));
        let inodes: std::collections::BTreeSet<u64> = all.iter().map(|n| n.inode).collect();
        assert_eq!(inodes.len(), all.len(), "one entry per namespace");
    }

    #[test]
    fn live_dump_of_this_namespace_finds_a_listener() {
        // sock_diag of one's own namespace needs no privilege.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let all = dump_listeners().unwrap();
        let me = all
            .iter()
            .find(|s| s.port == port && s.state == TCP_LISTEN)
            .unwrap_or_else(|| panic!("listener {port} not in {all:?}"));
        assert_eq!(me.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(me.wqueue >= 1, "the backlog");
        // The connection waits in the accept queue (not yet accepted).
        assert!(me.rqueue <= 1);
    }

    #[test]
    fn conntrack_stat_sums_cpus_by_the_header() {
        let c = parse_conntrack_stat(&testdata("nf_conntrack"));
        for k in [
            "Conntrack.insert_failed",
            "Conntrack.drop",
            "Conntrack.early_drop",
            "Conntrack.clashres",
        ] {
            assert!(c.contains_key(k), "{k} in {c:?}");
        }
        // Two CPUs; columns named by the header, hex values.
        let text = "entries  insert_failed drop\n0000000a  00000001 00000010\n0000000a  00000002 00000001\n";
        let c = parse_conntrack_stat(text);
        assert_eq!(c["Conntrack.entries"], 10);
        assert_eq!(c["Conntrack.insert_failed"], 3);
        assert_eq!(c["Conntrack.drop"], 17);
        assert!(parse_conntrack_stat("").is_empty());
        assert!(parse_conntrack_stat("a b\nzz 1 2\nxx yy\n").is_empty());
    }

    #[test]
    fn discovery_examines_only_what_is_new_and_everything_now_and_then() {
        let root = std::env::temp_dir().join(format!("netprobe-discovery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (proc_root, run) = (root.join("proc"), root.join("netns"));
        let file = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
            std::fs::metadata(p).unwrap().ino()
        };
        let a = file(&proc_root.join("15/ns/net"));
        let b = file(&run.join("blue"));
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        let inodes = |d: &mut Discovery| {
            let mut v: Vec<u64> = d
                .namespaces(&proc_root, &run)
                .iter()
                .map(|n| n.inode)
                .collect();
            v.sort_unstable();
            v
        };
        let mut d = Discovery::default();
        let mut want = vec![a, b];
        want.sort_unstable();
        assert_eq!(inodes(&mut d), want);
        // PID 15 changed namespace: not seen until its turn to be rechecked
        // (the 15th call of every 60).
        let a2 = file(&proc_root.join("15/ns/net.new"));
        std::fs::rename(proc_root.join("15/ns/net.new"), proc_root.join("15/ns/net")).unwrap();
        // A new process and a name bound again are seen at once.
        let c = file(&proc_root.join("77/ns/net"));
        let b2 = file(&root.join("blue.new"));
        std::fs::rename(root.join("blue.new"), run.join("blue")).unwrap();
        let now = inodes(&mut d);
        assert!(
            now.contains(&a) && now.contains(&c) && now.contains(&b2),
            "{now:?}"
        );
        assert!(!now.contains(&a2));
        for _ in 2..RECHECK_EVERY {
            inodes(&mut d);
        }
        let later = inodes(&mut d);
        assert!(later.contains(&a2) && !later.contains(&a), "{later:?}");
        // A process gone is forgotten.
        std::fs::remove_dir_all(proc_root.join("77")).unwrap();
        assert!(!inodes(&mut d).contains(&c));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
