//! Drops: `skb:kfree_skb`, and `tcp_drop` where a kernel still has it.
//!
//! Record (from the format file): `skbaddr`, `location`, `protocol`, and from
//! 5.17 `reason`, from 6.11 `rx_sk`. Drops at or below NOT_SPECIFIED, and
//! QUEUE_PURGE (a destroyed socket's queues), are not reported where the
//! kernel gives a reason; without reasons, frees inside
//! `sk_stream_kill_queues` (the same purge) are not. Each skip is counted
//! (per CPU, in `LOST`'s SKIPPED_* slots) for the summary. The packet's network and transport
//! headers are copied through `skb->head` + `skb->{network,transport}_header`,
//! offsets from BTF, so the daemon can name the flow.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{kprobe, tracepoint},
    programs::{ProbeContext, TracePointContext},
    EbpfContext,
};
use netprobe_common::{kind, pkt, slot, Config, SKIPPED_NOT_SPECIFIED, SKIPPED_QUEUE_PURGE};

use crate::{
    config, raw_u64, record_u64,
    ringbuf::{count_lost, emit},
    skb::{copy_headers, read_sock, sk_state},
    slots,
};

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
            count_lost(SKIPPED_NOT_SPECIFIED);
            return 0;
        }
        if reason == cfg.kfree_skb_purge_reason {
            count_lost(SKIPPED_QUEUE_PURGE);
            return 0;
        }
    } else if cfg.purge_start != 0 {
        // No reasons: a free inside sk_stream_kill_queues is the purge.
        let at = record_u64(&ctx, cfg.kfree_skb_location);
        if at >= cfg.purge_start && at < cfg.purge_end {
            count_lost(SKIPPED_QUEUE_PURGE);
            return 0;
        }
    }
    emit(
        kind::KFREE_SKB,
        ctx.as_ptr() as *const u8,
        cfg.kfree_skb_len,
        |e| {
            let (skb, rx_sk) = (
                raw_u64(e, cfg.kfree_skb_skbaddr),
                raw_u64(e, cfg.kfree_skb_rx_sk),
            );
            crate::probe_log!(&ctx, "kfree_skb: reporting the drop of skb {:x}", skb);
            copy_headers(cfg, skb, e);
            read_sock(cfg, rx_sk, e);
            // Without reasons, a drop of the skb a RST was just sent for, with no
            // socket, is the kernel's NO_SOCKET drop.
            if slots::take(slot::RESET_NO_SOCKET, skb) {
                e.pkt_flags |= pkt::AFTER_NO_SOCKET_RST;
            }
            // The conntrack kprobes' verdicts on this skb (nf_hook_slow frees
            // it right after the hook returns NF_DROP, on this CPU).
            if slots::take(slot::CT_FULL, skb) {
                e.pkt_flags |= pkt::CONNTRACK_FULL;
            }
            if slots::take(slot::CT_INSERT_FAILED, skb) {
                e.pkt_flags |= pkt::CONNTRACK_INSERT_FAILED;
            }
        },
    );
    0
}

/// `tcp_drop(struct sock *sk, struct sk_buff *skb)`: frees with `__kfree_skb`,
/// which the tracepoint does not see. The caller (the return address on the
/// stack at entry) is the drop location.
#[kprobe]
pub fn tcp_drop(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    // SAFETY: regs is the kprobe's pt_regs; the stack read can fault safely.
    let caller = unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_kernel(sp as *const u64).unwrap_or(0)
    };
    emit(kind::KPROBE_TCP_DROP, core::ptr::null(), 0, |e| {
        e.raw[..8].copy_from_slice(&caller.to_ne_bytes());
        e.raw_len = 8;
        e.sk_state = sk_state(cfg, sk);
        copy_headers(cfg, skb, e);
    });
    0
}
