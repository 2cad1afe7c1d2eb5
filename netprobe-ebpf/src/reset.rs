//! Resets: `tcp:tcp_send_reset` (this host sends a RST) and
//! `tcp:tcp_receive_reset` (a RST arrived for one of its sockets); before
//! 6.10, kprobes on `tcp_v4_send_reset`/`tcp_v6_send_reset` for the RSTs the
//! tracepoint misses (no full socket: a closed port).
//!
//! Both records carry the addresses themselves (4.15+); their layout changed in
//! 6.10 (sockaddr-sized arrays, a `reason`), which the daemon decodes from the
//! `format` file. The programs only copy the record.

use aya_ebpf::{
    macros::{kprobe, tracepoint},
    programs::{ProbeContext, TracePointContext},
    EbpfContext,
};
use netprobe_common::{kind, pkt, slot};

use crate::{
    config, raw_u64, record_u64,
    ringbuf::emit,
    skb::{copy_headers, sk_netns, sk_state, skb_netns, tcp_flags},
    slots,
};

const TCP_RST: u8 = 0x04;

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.send_reset_len == 0 {
        return 0;
    }
    // ABSENT unless the reset kprobes run: then skip the skb they reported.
    let skb = record_u64(&ctx, cfg.send_reset_skbaddr);
    // The kprobe ran just before, on this CPU.
    if skb != 0 && slots::get(slot::RESET_ANY) == skb {
        return 0;
    }
    emit(
        kind::TCP_SEND_RESET,
        ctx.as_ptr() as *const u8,
        cfg.send_reset_len,
        |e| {
            // Its namespace: the answered segment's device's, else the socket's.
            let (skb, sk) = (raw_u64(e, cfg.send_reset_skb), raw_u64(e, cfg.send_reset_sk));
            crate::probe_log!(&ctx, "tcp_send_reset: reporting a RST (sk {:x})", sk);
            e.netns = skb_netns(cfg, skb);
            if e.netns == 0 {
                e.netns = sk_netns(cfg, sk);
            }
        },
    );
    0
}

/// `tcp_v4_send_reset(const struct sock *sk, struct sk_buff *skb, ...)` and
/// its v6 twin: `skb` is the segment being answered.
#[kprobe]
pub fn send_reset(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    // The kernel never answers a RST with a RST (it returns at once).
    if tcp_flags(cfg, skb).is_some_and(|f| f & TCP_RST != 0) {
        return 0;
    }
    slots::put(slot::RESET_ANY, skb);
    if sk == 0 {
        slots::put(slot::RESET_NO_SOCKET, skb);
    }
    emit(kind::KPROBE_SEND_RESET, core::ptr::null(), 0, |e| {
        copy_headers(cfg, skb, e);
        if sk == 0 {
            e.pkt_flags |= pkt::NO_SOCKET;
        } else {
            e.sk_state = sk_state(cfg, sk);
        }
    });
    0
}

/// Also reads the socket's TCP state, so the daemon can tell a refused
/// connection (RST in answer to our SYN: SYN_SENT) from a reset one.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.receive_reset_len == 0 {
        return 0;
    }
    emit(
        kind::TCP_RECEIVE_RESET,
        ctx.as_ptr() as *const u8,
        cfg.receive_reset_len,
        |e| {
            let sk = raw_u64(e, cfg.receive_reset_skaddr);
            e.sk_state = sk_state(cfg, sk);
            e.netns = sk_netns(cfg, sk);
        },
    );
    0
}
