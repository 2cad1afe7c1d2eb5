//! Conntrack drops, told apart from rule drops (both reach kfree_skb from
//! `nf_hook_slow`, as NETFILTER_DROP where the kernel gives reasons). Where
//! the kernel has kprobes and the nf_conntrack module is loaded:
//! - table full: `__nf_conntrack_alloc` returns an error pointer inside
//!   `nf_conntrack_in`; the skb `nf_conntrack_in` got is marked;
//! - insert failed: `__nf_conntrack_confirm(skb)` returns NF_DROP (a clash
//!   it could not resolve, such as the UDP/DNS SNAT race, or a chain too
//!   long); that skb is marked.
//!
//! The drop program flags the drop of a marked skb, so the record keeps the
//! drop's flow and location and gains the conntrack cause.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use netprobe_common::slot;

use crate::slots;

/// NF_DROP in include/uapi/linux/netfilter.h (stable ABI).
const NF_DROP: u64 = 0;
/// Error pointers are the top 4095 addresses (MAX_ERRNO).
const MAX_ERRNO: u64 = 4095;

/// `nf_conntrack_in(struct sk_buff *skb, const struct nf_hook_state *state)`.
#[kprobe]
pub fn ct_in(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(0) {
        slots::put(slot::CT_IN, skb);
    }
    0
}

/// `__nf_conntrack_alloc(...)` returns `ERR_PTR(-ENOMEM)` when the table is
/// full and early drop found no victim.
#[kretprobe]
pub fn ct_alloc_ret(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    if ret >= MAX_ERRNO.wrapping_neg() {
        slots::put(slot::CT_FULL, slots::get(slot::CT_IN));
    }
    0
}

/// `__nf_conntrack_confirm(struct sk_buff *skb)`.
#[kprobe]
pub fn ct_confirm(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(0) {
        slots::put(slot::CT_CONFIRM, skb);
    }
    0
}

#[kretprobe]
pub fn ct_confirm_ret(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    if ret & 0xffff_ffff == NF_DROP {
        slots::put(slot::CT_INSERT_FAILED, slots::get(slot::CT_CONFIRM));
    }
    0
}
