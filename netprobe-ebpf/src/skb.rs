//! Following a `struct sk_buff` (and its socket) with offsets from BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use netprobe_common::{
    headers::{self, TcpHdr},
    pkt, Config, Event,
};

use crate::ringbuf::zero;

/// Copies the packet's network and transport headers through `skb->head` +
/// `skb->{network,transport}_header`, setting the `pkt` bits for what was read.
#[inline(always)]
pub fn copy_headers(cfg: &Config, skb: u64, e: &mut Event) {
    if skb == 0 || cfg.skb_head == Config::ABSENT {
        return;
    }
    // SAFETY: all reads go through bpf_probe_read_kernel, which faults safely.
    unsafe {
        let Ok(head) = bpf_probe_read_kernel((skb + cfg.skb_head as u64) as *const u64) else {
            return;
        };
        if head == 0 {
            return;
        }
        // The namespace the packet is in: its device's.
        e.netns = skb_netns(cfg, skb);
        if let Ok(nh) = bpf_probe_read_kernel((skb + cfg.skb_network_header as u64) as *const u16) {
            e.network_header = nh;
            if nh != 0xffff
                && bpf_probe_read_kernel_buf((head + nh as u64) as *const u8, &mut e.net).is_ok()
            {
                e.pkt_flags |= pkt::NET;
            }
        }
        if let Ok(th) = bpf_probe_read_kernel((skb + cfg.skb_transport_header as u64) as *const u16)
        {
            e.transport_header = th;
            if th != 0xffff
                && bpf_probe_read_kernel_buf((head + th as u64) as *const u8, &mut e.transport)
                    .is_ok()
            {
                e.pkt_flags |= pkt::TRANSPORT;
                // A TCP header's data offset (in 32-bit words) past 5: options
                // (TCP timestamps, for PAWS). The daemon reads them only for
                // TCP flows and only as far as the offset says.
                if headers::view::<TcpHdr>(&e.transport).is_some_and(|t| t.doff() > 5)
                    && bpf_probe_read_kernel_buf(
                        (head + th as u64 + 20) as *const u8,
                        &mut e.tcp_options,
                    )
                    .is_ok()
                {
                    e.pkt_flags |= pkt::TCP_OPTIONS;
                }
            }
        }
    }
}

/// The inode of `struct net` at `net`, 0 when unknown.
#[inline(always)]
fn net_inum(cfg: &Config, net: u64) -> u32 {
    if net == 0 || cfg.net_ns_inum == Config::ABSENT {
        return 0;
    }
    // SAFETY: a faulting read returns an error; the offset is BTF's.
    unsafe { bpf_probe_read_kernel((net + cfg.net_ns_inum as u64) as *const u32) }.unwrap_or(0)
}

/// The namespace a packet is in (its device's), 0 when unknown.
#[inline(always)]
pub fn skb_netns(cfg: &Config, skb: u64) -> u32 {
    if skb == 0 || cfg.skb_dev == Config::ABSENT || cfg.dev_nd_net == Config::ABSENT {
        return 0;
    }
    // SAFETY: faulting reads return errors; offsets come from BTF.
    unsafe {
        let Ok(dev) = bpf_probe_read_kernel((skb + cfg.skb_dev as u64) as *const u64) else {
            return 0;
        };
        if dev == 0 {
            return 0;
        }
        let net = bpf_probe_read_kernel((dev + cfg.dev_nd_net as u64) as *const u64).unwrap_or(0);
        net_inum(cfg, net)
    }
}

/// A socket's namespace (`sk->__sk_common.skc_net.net`), 0 when unknown.
#[inline(always)]
pub fn sk_netns(cfg: &Config, sk: u64) -> u32 {
    if sk == 0 || cfg.sk_net == Config::ABSENT {
        return 0;
    }
    // SAFETY: a faulting read returns an error; the offset is BTF's.
    let net = unsafe { bpf_probe_read_kernel((sk + cfg.sk_net as u64) as *const u64) }.unwrap_or(0);
    net_inum(cfg, net)
}

/// The socket's TCP state (`sk->__sk_common.skc_state`), 0 when unknown.
#[inline(always)]
pub fn sk_state(cfg: &Config, sk: u64) -> u32 {
    if sk == 0 || cfg.sk_state == Config::ABSENT {
        return 0;
    }
    // SAFETY: a faulting read returns an error, not a crash.
    unsafe { bpf_probe_read_kernel((sk + cfg.sk_state as u64) as *const u8) }
        .map_or(0, |s| s as u32)
}

/// The TCP flags byte of the segment in `skb`, when it can be read.
#[inline(always)]
pub fn tcp_flags(cfg: &Config, skb: u64) -> Option<u8> {
    if skb == 0 || cfg.skb_head == Config::ABSENT {
        return None;
    }
    // SAFETY: faulting reads return errors.
    unsafe {
        let head = bpf_probe_read_kernel((skb + cfg.skb_head as u64) as *const u64).ok()?;
        let th =
            bpf_probe_read_kernel((skb + cfg.skb_transport_header as u64) as *const u16).ok()?;
        if head == 0 || th == 0xffff {
            return None;
        }
        bpf_probe_read_kernel((head + th as u64 + 13) as *const u8).ok()
    }
}

/// Reads `u32` at `base + off` (offset from BTF), 0 when it faults.
#[inline(always)]
fn u32_at(base: u64, off: u32) -> u32 {
    // SAFETY: a faulting read returns an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u32) }.unwrap_or(0)
}

/// Fills `e.sock` from `sk` and sets `pkt::SOCK`, when BTF gave the offsets.
#[inline(always)]
pub fn read_sock(cfg: &Config, sk: u64, e: &mut Event) {
    if sk == 0 || cfg.skc_family == Config::ABSENT || cfg.sk_state == Config::ABSENT {
        return;
    }
    // Written in place: a SockInfo built on the stack costs a byte-wise
    // memset (see `ringbuf::zero`).
    let info = &mut e.sock;
    zero(info);
    // SAFETY: faulting reads return errors; offsets come from BTF.
    unsafe {
        info.family =
            bpf_probe_read_kernel((sk + cfg.skc_family as u64) as *const u16).unwrap_or(0);
        info.port = bpf_probe_read_kernel((sk + cfg.skc_num as u64) as *const u16).unwrap_or(0);
        info.state = bpf_probe_read_kernel((sk + cfg.sk_state as u64) as *const u8).unwrap_or(0);
        if info.family == 10 {
            let _ = bpf_probe_read_kernel_buf(
                (sk + cfg.skc_v6_rcv_saddr as u64) as *const u8,
                &mut info.addr,
            );
        } else {
            let _ = bpf_probe_read_kernel_buf(
                (sk + cfg.skc_rcv_saddr as u64) as *const u8,
                &mut info.addr[..4],
            );
        }
    }
    info.ack_backlog = u32_at(sk, cfg.sk_ack_backlog);
    info.max_ack_backlog = u32_at(sk, cfg.sk_max_ack_backlog);
    info.rcvbuf = u32_at(sk, cfg.sk_rcvbuf);
    info.rmem_alloc = u32_at(sk, cfg.sk_rmem_alloc);
    e.pkt_flags |= pkt::SOCK;
}

/// `sk_acceptq_is_full(sk)`: `sk_ack_backlog > sk_max_ack_backlog`.
#[inline(always)]
pub fn accept_queue_full(cfg: &Config, sk: u64) -> bool {
    if sk == 0 || cfg.sk_ack_backlog == Config::ABSENT {
        return false;
    }
    u32_at(sk, cfg.sk_ack_backlog) > u32_at(sk, cfg.sk_max_ack_backlog)
}
