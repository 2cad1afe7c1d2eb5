//! What the kernel programs are told about the running kernel: struct
//! offsets read from its BTF (sk_buff, sock), each tracepoint's field
//! offsets from its format file, and the address range of the function
//! that purges a closed socket's queues; `build_config` packs them into the
//! programs' Config.

use netprobe_common::{Config, RAW_MAX};

use crate::{
    kernel::btf::Btf, kernel::kallsyms::Kallsyms, kernel::tracefs::Format,
    pipeline::decode::Layouts,
};

/// Offsets in `struct sk_buff` the drop program follows to the packet headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOffsets {
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
    /// `sk_buff.dev`, `net_device.nd_net.net`, `net.ns.inum`: the packet's
    /// namespace; `None` where BTF lacks one (no network namespaces).
    pub netns: Option<(u32, u32, u32)>,
}

impl SkbOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SkbOffsets, String> {
        let netns = (|| -> Result<(u32, u32, u32), String> {
            Ok((
                sized(btf, "sk_buff", "dev", 8)?,
                sized(btf, "net_device", "nd_net.net", 8)?,
                sized(btf, "net", "ns.inum", 4)?,
            ))
        })()
        .ok();
        Ok(SkbOffsets {
            head: sized(btf, "sk_buff", "head", 8)?,
            network_header: sized(btf, "sk_buff", "network_header", 2)?,
            transport_header: sized(btf, "sk_buff", "transport_header", 2)?,
            netns,
        })
    }
}

/// `offsetof(struct sock_common, skc_state)`, a byte.
pub fn sk_state_offset(btf: &Btf) -> Result<u32, String> {
    sized(btf, "sock_common", "skc_state", 1)
}

pub(crate) fn sized(btf: &Btf, strukt: &str, member: &str, size: u32) -> Result<u32, String> {
    let m = btf.member(strukt, member).map_err(|e| e.to_string())?;
    if m.size != size {
        return Err(format!(
            "{strukt}.{member} is {} bytes, expected {size}",
            m.size
        ));
    }
    Ok(m.offset)
}

/// The `struct sock_common` / `struct sock` members the programs read into
/// `SockInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockOffsets {
    pub family: u32,
    pub num: u32,
    pub rcv_saddr: u32,
    pub v6_rcv_saddr: u32,
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    pub rcvbuf: u32,
    pub rmem_alloc: u32,
    /// `skc_net.net`, where the kernel has network namespaces.
    pub net: Option<u32>,
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SockOffsets, String> {
        Ok(SockOffsets {
            family: sized(btf, "sock_common", "skc_family", 2)?,
            num: sized(btf, "sock_common", "skc_num", 2)?,
            rcv_saddr: sized(btf, "sock_common", "skc_rcv_saddr", 4)?,
            v6_rcv_saddr: sized(btf, "sock_common", "skc_v6_rcv_saddr", 16)?,
            ack_backlog: sized(btf, "sock", "sk_ack_backlog", 4)?,
            max_ack_backlog: sized(btf, "sock", "sk_max_ack_backlog", 4)?,
            rcvbuf: sized(btf, "sock", "sk_rcvbuf", 4)?,
            rmem_alloc: sized(btf, "sock", "sk_backlog.rmem_alloc", 4)?,
            net: sized(btf, "sock_common", "skc_net.net", 8).ok(),
        })
    }
}

/// Where the running kernel's BTF is. `NETPROBE_KERNEL_BTF` names another
/// file (tests use a missing one to prove the no-BTF plan).
pub fn kernel_btf_path() -> std::path::PathBuf {
    std::env::var_os("NETPROBE_KERNEL_BTF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into())
}

/// The running kernel's BTF.
pub fn kernel_btf() -> Result<Btf, String> {
    let path = kernel_btf_path();
    let data = std::fs::read(&path)
        .map_err(|e| format!("kernel BTF unavailable ({}: {e})", path.display()))?;
    Btf::parse(data).map_err(|e| format!("kernel BTF unreadable: {e}"))
}

/// Everything the programs need from BTF; each part `Err(why)` on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfOffsets {
    pub skb: Result<SkbOffsets, String>,
    pub sk_state: Result<u32, String>,
    pub sock: Result<SockOffsets, String>,
}

impl BtfOffsets {
    pub fn read(btf: &Result<Btf, String>) -> BtfOffsets {
        match btf {
            Ok(b) => BtfOffsets {
                skb: SkbOffsets::from_btf(b),
                sk_state: sk_state_offset(b),
                sock: SockOffsets::from_btf(b),
            },
            Err(why) => BtfOffsets::unavailable(why),
        }
    }

    pub fn unavailable(why: &str) -> BtfOffsets {
        BtfOffsets {
            skb: Err(why.to_string()),
            sk_state: Err(why.to_string()),
            sock: Err(why.to_string()),
        }
    }
}

pub(crate) fn record_len(fmt: &Option<Format>) -> u32 {
    fmt.as_ref()
        .map(|f| f.record_len().min(RAW_MAX) as u32)
        .unwrap_or(0)
}

/// Bytes after a record's fixed part that hold its `__data_loc` strings
/// (mark_victim's `comm`: at most 16, after padding to 8).
pub(crate) const DATA_LOC_SLACK: u32 = 32;

/// The offset of `name` in a record, when it has that field at that size.
fn offset_of(f: &Option<Format>, name: &str, size: usize) -> Option<u32> {
    f.as_ref()
        .and_then(|f| f.field(name))
        .filter(|x| x.size == size)
        .map(|x| x.offset as u32)
}

/// The programs' `CONFIG` from the running kernel's layouts. A probe whose
/// format is missing gets length 0, which makes its program a no-op.
pub fn build_config(layouts: &Layouts, btf: &BtfOffsets, reset_kprobes: bool) -> Config {
    let mut c = Config::DISABLED;
    if let Some(f) = &layouts.kfree_skb {
        c.kfree_skb_len = record_len(&layouts.kfree_skb);
        c.kfree_skb_skbaddr = f
            .field("skbaddr")
            .map_or(Config::ABSENT, |x| x.offset as u32);
        if let Some(r) = f.field("reason").filter(|r| r.size == 4) {
            c.kfree_skb_reason = r.offset as u32;
            c.kfree_skb_min_reason = f.symbol_value("reason", "NOT_SPECIFIED").unwrap_or(0) as u32;
            c.kfree_skb_purge_reason = f
                .symbol_value("reason", "QUEUE_PURGE")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(Config::ABSENT);
        }
        if let Some(r) = f.field("rx_sk").filter(|r| r.size == 8) {
            c.kfree_skb_rx_sk = r.offset as u32;
        }
        if let Some(l) = f.field("location").filter(|l| l.size == 8) {
            c.kfree_skb_location = l.offset as u32;
        }
    }
    c.send_reset_len = record_len(&layouts.send_reset);
    if reset_kprobes {
        // The kprobe reports every RST tcp_v{4,6}_send_reset sends; the
        // tracepoint skips those (same skb) and keeps the rest (active resets).
        if let Some(f) = layouts.send_reset.as_ref().and_then(|f| f.field("skbaddr")) {
            if f.size == 8 {
                c.send_reset_skbaddr = f.offset as u32;
            }
        }
    }
    c.receive_reset_len = record_len(&layouts.receive_reset);
    if let Ok(state) = btf.sk_state {
        c.sk_state = state;
        if let Some(sk) = offset_of(&layouts.receive_reset, "skaddr", 8) {
            c.receive_reset_skaddr = sk;
        }
    }
    if let Ok(s) = btf.skb {
        c.skb_head = s.head;
        c.skb_network_header = s.network_header;
        c.skb_transport_header = s.transport_header;
        if let Some((dev, nd_net, inum)) = s.netns {
            (c.skb_dev, c.dev_nd_net, c.net_ns_inum) = (dev, nd_net, inum);
        }
    }
    if let Ok(s) = btf.sock {
        c.skc_family = s.family;
        c.skc_num = s.num;
        c.skc_rcv_saddr = s.rcv_saddr;
        c.skc_v6_rcv_saddr = s.v6_rcv_saddr;
        c.sk_ack_backlog = s.ack_backlog;
        c.sk_max_ack_backlog = s.max_ack_backlog;
        c.sk_rcvbuf = s.rcvbuf;
        c.sk_rmem_alloc = s.rmem_alloc;
        // A socket's namespace needs struct net's inode offset too.
        if c.net_ns_inum != Config::ABSENT {
            c.sk_net = s.net.unwrap_or(Config::ABSENT);
        }
    }
    if layouts.oom.is_some() {
        c.oom_len = (record_len(&layouts.oom) + DATA_LOC_SLACK).min(RAW_MAX as u32);
    }
    c.retransmit_len = record_len(&layouts.retransmit);
    // Pointers in the records the programs follow to a namespace.
    let pointer = |f: &Option<Format>, name: &str| offset_of(f, name, 8).unwrap_or(Config::ABSENT);
    c.retransmit_skaddr = pointer(&layouts.retransmit, "skaddr");
    c.send_reset_sk = pointer(&layouts.send_reset, "skaddr");
    c.send_reset_skb = pointer(&layouts.send_reset, "skbaddr");
    c.sk_error_len = record_len(&layouts.sk_error);
    if let Some(e) = offset_of(&layouts.sk_error, "error", 4) {
        c.sk_error_error = e;
    }
    c
}

/// The function whose frees are a destroyed socket's queues (6.4+ names
/// them QUEUE_PURGE).
pub(crate) const PURGE_FUNCTION: &str = "sk_stream_kill_queues";

/// On a kernel without drop reasons, the text addresses of
/// `PURGE_FUNCTION`, whose frees the drop program skips: the last FIN of
/// every cleanly closed connection, not a failure. (0, 0) where the kernel
/// gives reasons (QUEUE_PURGE says it) or kallsyms does not know it.
pub fn purge_range(layouts: &Layouts, ksyms: &Kallsyms) -> (u64, u64) {
    let Some(f) = &layouts.kfree_skb else {
        return (0, 0);
    };
    if f.field("reason").is_some() || f.field("location").is_none_or(|l| l.size != 8) {
        return (0, 0);
    }
    ksyms.range(PURGE_FUNCTION).unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::kallsyms::test_kallsyms as ksyms;
    use crate::pipeline::decode::test_layouts as layouts;

    fn none() -> BtfOffsets {
        BtfOffsets::unavailable("no BTF in this test")
    }

    #[test]
    fn config_follows_each_kernels_format() {
        let c = build_config(&layouts("6.18"), &none(), false);
        assert_eq!(
            (c.kfree_skb_reason, c.kfree_skb_min_reason, c.kfree_skb_len),
            (36, 2, 40)
        );
        assert_eq!(c.kfree_skb_skbaddr, 8);
        // QUEUE_PURGE (6.4+) from the format file: 104 on 6.18, 91 on 6.12.
        assert_eq!(c.kfree_skb_purge_reason, 104);
        assert_eq!(
            build_config(&layouts("6.12"), &none(), false).kfree_skb_purge_reason,
            91
        );
        assert_eq!(
            build_config(&layouts("6.1"), &none(), false).kfree_skb_purge_reason,
            Config::ABSENT
        );
        assert_eq!(c.send_reset_len, 88);
        assert_eq!(c.skb_head, Config::ABSENT);
        assert_eq!(c.sk_error_error, 8);
        let c = build_config(&layouts("6.1"), &none(), false);
        assert_eq!(c.kfree_skb_reason, 28);
        assert_eq!(
            c.kfree_skb_min_reason as u64,
            layouts("6.1")
                .kfree_skb
                .unwrap()
                .symbol_value("reason", "NOT_SPECIFIED")
                .unwrap()
        );
        let c = build_config(&layouts("5.10"), &none(), false);
        assert_eq!(c.kfree_skb_reason, Config::ABSENT);
        assert!(c.kfree_skb_len > 0 && c.send_reset_len > 0);
        let c = build_config(&Layouts::default(), &none(), true);
        assert_eq!(c, Config::DISABLED);
        // The reset tracepoint skips the kprobe's skbs only beside the kprobe.
        let c = build_config(&layouts("6.1"), &none(), true);
        assert_eq!(c.send_reset_skbaddr, 8);
        assert_eq!(
            build_config(&layouts("6.1"), &none(), false).send_reset_skbaddr,
            Config::ABSENT
        );
    }

    #[test]
    fn skb_offsets_from_real_btf() {
        let s = SkbOffsets::from_btf(&crate::kernel::btf::test_btf_6_18()).unwrap();
        assert_eq!(s.transport_header + 2, s.network_header);
        // 6.18's sk_buff.dev, net_device.nd_net.net, net.ns.inum.
        assert_eq!(s.netns, Some((16, 264, 176)));
        let state = sk_state_offset(&crate::kernel::btf::test_btf_6_18()).unwrap();
        let sock = SockOffsets::from_btf(&crate::kernel::btf::test_btf_6_18()).unwrap();
        let btf = BtfOffsets {
            skb: Ok(s),
            sk_state: Ok(state),
            sock: Ok(sock),
        };
        let c = build_config(&layouts("6.18"), &btf, false);
        assert_eq!(c.kfree_skb_rx_sk, 24, "rx_sk on 6.18");
        assert_eq!((c.skb_dev, c.dev_nd_net, c.net_ns_inum), (16, 264, 176));
        assert_eq!((c.skc_num, c.sk_rmem_alloc), (sock.num, sock.rmem_alloc));
        assert!(c.sk_max_ack_backlog != Config::ABSENT && c.sk_rcvbuf != Config::ABSENT);
        // mark_victim's fixed part and its comm string.
        assert!(c.oom_len >= 66 + 16 && c.oom_len as usize <= RAW_MAX);
        assert_eq!(
            build_config(&layouts("6.1"), &btf, false).kfree_skb_rx_sk,
            Config::ABSENT
        );
        assert_eq!((c.receive_reset_skaddr, c.sk_state), (8, state));
        // A socket's namespace: skc_net.net inside sock_common, and the
        // records' socket and skb pointers (6.18's formats).
        assert!(sock.net.is_some_and(|n| n < 136), "{:?}", sock.net);
        assert_eq!(c.sk_net, sock.net.unwrap());
        assert_eq!((c.send_reset_skb, c.send_reset_sk), (8, 16));
        assert_ne!(c.retransmit_skaddr, Config::ABSENT);
        assert_eq!(c.skb_head, s.head);
        assert!(s.head > s.network_header);
    }

    #[test]
    fn the_purge_is_found_by_location_only_without_reasons() {
        // The 6.18 kallsyms lines stand in for a kernel without reasons:
        // the function's range is the same lookup.
        let k = ksyms("6.18");
        assert_eq!(
            purge_range(&layouts("5.10"), &k),
            (0xffff_ffff_81e4_d970, 0xffff_ffff_81e4_da60)
        );
        assert_eq!(
            purge_range(&layouts("6.18"), &k),
            (0, 0),
            "QUEUE_PURGE says it"
        );
        assert_eq!(purge_range(&layouts("5.10"), &Kallsyms::default()), (0, 0));
        let c = build_config(&layouts("5.10"), &none(), false);
        assert_eq!(c.kfree_skb_location, 16);
    }
}
