//! Per-CPU skb slots (`netprobe_common::slot`): one program leaves an skb
//! for another that runs after it on the same CPU, in the same softirq or
//! call (a kprobe and the tracepoint it precedes, a function's entry and its
//! return). A later write on the same CPU only overwrites a slot, so a stale
//! value can cost a mark, never a fault.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netprobe_common::slot;

#[map]
static SKB_SLOT: PerCpuArray<u64> = PerCpuArray::with_max_entries(slot::COUNT, 0);

#[inline(always)]
pub fn put(at: u32, skb: u64) {
    if let Some(p) = SKB_SLOT.get_ptr_mut(at) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p = skb };
    }
}

#[inline(always)]
pub fn get(at: u32) -> u64 {
    match SKB_SLOT.get_ptr(at) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe { *p },
        None => 0,
    }
}

/// Whether slot `at` holds `skb`; clears it when it does.
#[inline(always)]
pub fn take(at: u32, skb: u64) -> bool {
    if skb == 0 {
        return false;
    }
    match SKB_SLOT.get_ptr_mut(at) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(p) => unsafe {
            if *p == skb {
                *p = 0;
                true
            } else {
                false
            }
        },
        None => false,
    }
}
