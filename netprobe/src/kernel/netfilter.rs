//! Netfilter rule counts of the namespace the calling thread is in, at a
//! bounded cost: seed 004's node had 180,000 leaked iptables rules against
//! 200-300 on its neighbours, and every packet walked them.
//! - nftables (and iptables-nft, which writes nftables rules): one netlink
//!   dump of the rules (NFT_MSG_GETRULE), counted per table and chain as
//!   the messages come, nothing kept;
//! - iptables-legacy: `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` on an inet
//!   socket gives each table's entry count without dumping it, for the
//!   tables the namespace has (`ip_tables_names`): asking for another would
//!   make the kernel load its module.
//!
//! Both need CAP_NET_ADMIN. Neither loads a module: nftables is asked only
//! where `nf_tables` is already in the kernel.

use std::{collections::BTreeMap, io, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

/// nftables rules counted at most per namespace and dump: the kernel walks
/// a chain from its start again for each batch of a dump, so a dump costs
/// the square of its length (180,000 rules: 5.3 CPU-seconds in the kernel
/// on this project's machine). A count that reaches the cap says "at least".
pub const NFT_COUNT_CAP: u64 = 20_000;

/// What one namespace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// The nftables count stopped at `cap` rules: there are at least that
    /// many.
    pub nft_capped: bool,
    /// nftables rules per `family table chain` (iptables-nft's included).
    pub nft: BTreeMap<String, u64>,
    /// iptables-legacy entries per `ip table` / `ip6 table` (each chain's
    /// policy and the table's end are entries too).
    pub legacy: BTreeMap<String, u64>,
    /// Why a part could not be counted.
    pub errors: Vec<String>,
}

impl RuleCounts {
    pub fn total(&self) -> u64 {
        self.nft.values().sum::<u64>() + self.legacy.values().sum::<u64>()
    }

    /// The chain (or legacy table) holding the most.
    pub fn largest(&self) -> Option<(&str, u64)> {
        self.nft
            .iter()
            .chain(self.legacy.iter())
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| (k.as_str(), *n))
    }
}

/// Whether nftables is in the kernel now (a loaded module, or built in:
/// its init function is in kallsyms). Asking a kernel without it would
/// make the kernel load the module.
pub fn nftables_present() -> bool {
    use std::io::BufRead;
    let loaded = procfs::modules().is_ok_and(|m| m.contains_key("nf_tables"));
    loaded
        || std::fs::File::open("/proc/kallsyms").is_ok_and(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.ends_with(" nf_tables_init_net"))
        })
}

/// Counts the caller's namespace. `net` is its `/proc/.../net` directory;
/// nftables is asked only when `nftables` (see `nftables_present`).
pub fn count_here(net: &str, nftables: bool, cap: u64) -> RuleCounts {
    let mut c = RuleCounts::default();
    if nftables {
        match nft_rules(cap) {
            Ok((n, capped)) => (c.nft, c.nft_capped) = (n, capped),
            Err(e) => c.errors.push(format!("nftables: {e}")),
        }
    }
    for (family, names, level, opt) in [
        ("ip", "ip_tables_names", libc::SOL_IP, IPT_SO_GET_INFO),
        ("ip6", "ip6_tables_names", libc::SOL_IPV6, IPT_SO_GET_INFO),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("{net}/{names}")) else {
            continue;
        };
        for table in text.split_whitespace() {
            match legacy_entries(family, level, opt, table) {
                Ok(n) => {
                    c.legacy.insert(format!("{family} {table}"), n);
                }
                Err(e) => c
                    .errors
                    .push(format!("iptables-legacy {family} {table}: {e}")),
            }
        }
    }
    c
}

/// `IPT_SO_GET_INFO` and `IP6T_SO_GET_INFO` (both `IPT_BASE_CTL`, 64).
const IPT_SO_GET_INFO: i32 = 64;

/// `struct ipt_getinfo` (and `ip6t_getinfo`): the table's name, its hooks,
/// then `num_entries` and `size`.
#[repr(C)]
struct GetInfo {
    name: [u8; 32],
    valid_hooks: u32,
    hook_entry: [u32; 5],
    underflow: [u32; 5],
    num_entries: u32,
    size: u32,
}

fn legacy_entries(family: &str, level: i32, opt: i32, table: &str) -> io::Result<u64> {
    let domain = if family == "ip" {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // Any inet socket reaches netfilter's getsockopt (iptables uses a raw
    // one, which would need CAP_NET_RAW as well).
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = GetInfo {
        name: [0; 32],
        valid_hooks: 0,
        hook_entry: [0; 5],
        underflow: [0; 5],
        num_entries: 0,
        size: 0,
    };
    let name = table.as_bytes();
    if name.len() >= info.name.len() {
        return Err(io::Error::other("table name too long"));
    }
    info.name[..name.len()].copy_from_slice(name);
    let mut len = std::mem::size_of::<GetInfo>() as libc::socklen_t;
    // SAFETY: getsockopt into a struct of the stated length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &mut info as *mut GetInfo as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(info.num_entries))
}

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDR: usize = 16;
/// `struct nfgenmsg`: family, version, res_id.
const NFGENMSG: usize = 4;

/// The dump request: every rule of every family.
fn rule_request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + NFGENMSG;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // NFPROTO_UNSPEC, NFNETLINK_V0, res_id 0.
    b.extend_from_slice(&[0, 0, 0, 0]);
    b
}

/// The family name of an nfgenmsg family (NFPROTO_*).
fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "other",
    }
}

/// A NUL-terminated string attribute.
fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Adds the rules in one netlink datagram of the dump to `counts`; `Ok(true)`
/// when the dump is done. Malformed input is an error, never a panic.
pub fn count_datagram(buf: &[u8], counts: &mut BTreeMap<String, u64>) -> Result<bool, String> {
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let h = &buf[at..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(format!("a netlink message of {len} bytes at {at}"));
        }
        let msg = &buf[at..at + len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = msg
                    .get(NLMSG_HDR..NLMSG_HDR + 4)
                    .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                    .unwrap_or(0);
                if errno == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(errno.saturating_neg()).to_string());
            }
            t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                let family = msg.get(NLMSG_HDR).copied().unwrap_or(0);
                let (mut table, mut chain) = (String::new(), String::new());
                let mut a = NLMSG_HDR + NFGENMSG;
                while a + 4 <= msg.len() {
                    let alen = u16::from_ne_bytes([msg[a], msg[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([msg[a + 2], msg[a + 3]]) & 0x3fff;
                    if alen < 4 || a + alen > msg.len() {
                        return Err(format!("a rule attribute of {alen} bytes"));
                    }
                    let v = &msg[a + 4..a + alen];
                    match aty {
                        NFTA_RULE_TABLE => table = attr_str(v),
                        NFTA_RULE_CHAIN => chain = attr_str(v),
                        _ => {}
                    }
                    a += alen.div_ceil(4) * 4;
                }
                *counts
                    .entry(format!("{} {table} {chain}", family_name(family)))
                    .or_default() += 1;
            }
            _ => {}
        }
        at += len.div_ceil(4) * 4;
    }
    Ok(false)
}

/// Counts the nftables rules of the caller's namespace, stopping at `cap`
/// (closing the socket ends the dump); true when it stopped there.
fn nft_rules(cap: u64) -> io::Result<(BTreeMap<String, u64>, bool)> {
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A dump that stalls ends the count, not the sampler.
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the stated size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let req = rule_request(1);
    // SAFETY: send(2) from a valid buffer; the kernel is the default peer.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut counts = BTreeMap::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: recv(2) into a buffer of the stated length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok((counts, false));
        }
        if count_datagram(&buf[..n as usize], &mut counts).map_err(io::Error::other)? {
            return Ok((counts, false));
        }
        if counts.values().sum::<u64>() >= cap {
            return Ok((counts, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NEWRULE message of `family` in `table`/`chain`, as the kernel
    /// sends them in a dump (with an expression attribute to skip).
    fn rule(family: u8, table: &str, chain: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        for (ty, v) in [
            (NFTA_RULE_TABLE, format!("{table}\0").into_bytes()),
            (NFTA_RULE_CHAIN, format!("{chain}\0").into_bytes()),
            (4, vec![1, 2, 3, 4, 5]),
        ] {
            attrs.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(&v);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        }
        let len = NLMSG_HDR + NFGENMSG + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE).to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn rules_are_counted_per_chain_until_done() {
        let mut dgram = rule(2, "filter", "INPUT");
        dgram.extend(rule(2, "filter", "INPUT"));
        dgram.extend(rule(1, "netprobe", "input"));
        let mut counts = BTreeMap::new();
        assert_eq!(count_datagram(&dgram, &mut counts), Ok(false));
        let mut done = Vec::new();
        done.extend_from_slice(&(20u32).to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        assert_eq!(count_datagram(&done, &mut counts), Ok(true));
        assert_eq!(counts["ip filter INPUT"], 2);
        assert_eq!(counts["inet netprobe input"], 1);
        let c = RuleCounts {
            nft_capped: false,
            nft: counts,
            legacy: BTreeMap::from([("ip filter".to_string(), 5)]),
            errors: vec![],
        };
        assert_eq!(c.total(), 8);
        assert_eq!(c.largest(), Some(("ip filter", 5)));
    }

    #[test]
    fn malformed_dumps_are_errors() {
        let mut counts = BTreeMap::new();
        let mut bad = rule(2, "t", "c");
        bad[0] = 200;
        assert!(count_datagram(&bad, &mut counts).is_err());
        let mut short_attr = rule(2, "t", "c");
        short_attr[NLMSG_HDR + NFGENMSG] = 2;
        assert!(count_datagram(&short_attr, &mut counts).is_err());
        let mut err = Vec::new();
        err.extend_from_slice(&(36u32).to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-1i32).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        assert!(count_datagram(&err, &mut counts)
            .unwrap_err()
            .contains("Operation not permitted"));
        // Truncated input is no message.
        assert_eq!(count_datagram(&[1, 2, 3], &mut counts), Ok(false));
    }

    #[test]
    fn the_request_is_a_rule_dump() {
        let r = rule_request(9);
        assert_eq!(r.len(), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0a07);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
    }
}
