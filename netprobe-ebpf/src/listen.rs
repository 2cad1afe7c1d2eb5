//! Accept-queue overflow, where the kernel has kprobes: the listener's
//! accept queue is full when a SYN reaches `tcp_conn_request` (the SYN is
//! dropped; kfree_skb never sees it) or when the handshake's last ACK
//! reaches `tcp_v{4,6}_syn_recv_sock` (the ACK is dropped). The programs
//! test the kernel's own condition, `sk_ack_backlog > sk_max_ack_backlog`,
//! and report the listener and the segment.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use netprobe_common::{kind, LISTEN_AT_ACK, LISTEN_AT_SYN};

use crate::{
    config,
    ringbuf::emit,
    skb::{accept_queue_full, copy_headers, read_sock},
};

#[inline(always)]
fn report(sk: u64, skb: u64, at: u8) {
    let cfg = config();
    if !accept_queue_full(cfg, sk) {
        return;
    }
    emit(kind::KPROBE_LISTEN_OVERFLOW, core::ptr::null(), 0, |e| {
        e.raw[0] = at;
        e.raw_len = 1;
        read_sock(cfg, sk, e);
        copy_headers(cfg, skb, e);
    });
}

/// `tcp_conn_request(rsk_ops, af_ops, struct sock *sk, struct sk_buff *skb)`.
#[kprobe]
pub fn conn_request(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(skb)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(3)) {
        report(sk, skb, LISTEN_AT_SYN);
    }
    0
}

/// `tcp_v4_syn_recv_sock(const struct sock *sk, struct sk_buff *skb, ...)`
/// and its v6 twin.
#[kprobe]
pub fn syn_recv_sock(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        report(sk, skb, LISTEN_AT_ACK);
    }
    0
}
