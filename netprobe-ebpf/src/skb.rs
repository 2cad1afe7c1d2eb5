//! Following a `struct sk_buff` (and its socket) with offsets from BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use netprobe_common::{pkt, Config, Event};

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
            }
        }
    }
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
