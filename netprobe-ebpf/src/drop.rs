//! Drops: `skb:kfree_skb`.
//!
//! Record (from the format file): `skbaddr`, `location`, `protocol`, and from
//! 5.17 `reason`, from 6.11 `rx_sk`. Drops at or below NOT_SPECIFIED are not
//! reported where the kernel gives a reason. The packet's network and transport
//! headers are copied through `skb->head` + `skb->{network,transport}_header`,
//! offsets from BTF, so the daemon can name the flow.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use netprobe_common::{kind, pkt, Config, Event};

use crate::{config, ringbuf::emit};

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.kfree_skb_len == 0 {
        return 0;
    }
    if cfg.kfree_skb_reason != Config::ABSENT {
        // SAFETY: offset from the format file, inside the record.
        let Ok(reason) = (unsafe { ctx.read_at::<u32>(cfg.kfree_skb_reason as usize) }) else {
            return 0;
        };
        if reason <= cfg.kfree_skb_min_reason {
            return 0;
        }
    }
    emit(&ctx, kind::KFREE_SKB, cfg.kfree_skb_len, |e| {
        if cfg.kfree_skb_skbaddr != Config::ABSENT && cfg.skb_head != Config::ABSENT {
            // SAFETY: offset from the format file.
            if let Ok(skb) = unsafe { ctx.read_at::<u64>(cfg.kfree_skb_skbaddr as usize) } {
                copy_headers(&cfg, skb, e);
            }
        }
    });
    0
}

#[inline(always)]
fn copy_headers(cfg: &Config, skb: u64, e: &mut Event) {
    if skb == 0 {
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
        if let Ok(th) =
            bpf_probe_read_kernel((skb + cfg.skb_transport_header as u64) as *const u16)
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
