//! The one ring buffer every program writes to, and the loss counter.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::bpf_get_current_comm,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use netprobe_common::{Event, LOST_RINGBUF_FULL, LOST_SLOTS, RAW_MAX, RAW_WORDS};

/// Sized by the daemon at load (`--ring-buffer`, default 8 MiB: about
/// 23,000 records of 360 bytes).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// Per-CPU counts of records that could not be written (see `LOST_*`).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Index 0: per CPU, the most bytes the ring buffer held unread just after
/// this CPU wrote a record (the daemon reports the maximum: the buffer's
/// size is chosen by it).
#[map]
static RB_PEAK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn note_fill() {
    let held = EVENTS.query(0); // BPF_RB_AVAIL_DATA
    if let Some(p) = RB_PEAK.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            if held > *p {
                *p = held;
            }
        }
    }
}

/// Adds one to a per-CPU count of `LOST` (a loss, or a drop skipped by
/// design: `netprobe_common::SKIPPED_*`).
#[inline(always)]
pub fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Writes one record: the common part, `raw_len` bytes copied from `raw`
/// (a tracepoint record; null for kprobes, which fill `raw` themselves),
/// and what `fill` adds. While the daemon has aggregation on and the kind
/// takes part, the record is built in a per-CPU scratch copy and goes
/// through `agg::offer` (a repeat is only counted); otherwise it is built
/// in place in the ring buffer. Counts a loss when the ring buffer is full.
#[inline(always)]
pub fn emit(kind: u32, raw: *const u8, raw_len: u32, fill: impl FnOnce(&mut Event)) {
    if let Some(window) = crate::agg::window(kind) {
        let Some(e) = SCRATCH.get_ptr_mut(0) else {
            count_lost(LOST_RINGBUF_FULL);
            return;
        };
        // SAFETY: this CPU's scratch record; programs do not nest on a CPU.
        let e = unsafe { &mut *e };
        fill_common(e, kind, raw, raw_len);
        fill(e);
        crate::agg::offer(e, window);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(LOST_RINGBUF_FULL);
        return;
    };
    // SAFETY: the reservation is exactly one Event; every field the daemon
    // reads is written below (raw up to raw_len, net/transport per pkt_flags).
    let e = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(e, kind, raw, raw_len);
    fill_comm(e);
    fill(e);
    entry.submit(0);
    note_fill();
}

/// Writes a record built elsewhere (the aggregation's scratch copy); false
/// (and a loss counted) when the ring buffer is full.
#[inline(always)]
pub fn output(e: &Event) -> bool {
    if EVENTS.output::<Event>(e, 0).is_ok() {
        note_fill();
        true
    } else {
        count_lost(LOST_RINGBUF_FULL);
        false
    }
}

/// One record per CPU, where aggregated records are built.
#[map]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// A volatile store: LLVM would merge plain zero stores into a call to
/// the BPF target's `memset`, which writes one byte per loop turn.
#[inline(always)]
pub fn write_volatile<T>(at: &mut T, v: T) {
    // SAFETY: `at` is a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(at, v) }
}

/// Zeroes `v` a word at a time (see `write_volatile`); `T` is a plain
/// record of 4-byte words.
#[inline(always)]
pub fn zero<T: Copy>(v: &mut T) {
    const { assert!(size_of::<T>() % 4 == 0 && align_of::<T>() >= 4) };
    let p = (v as *mut T).cast::<u32>();
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: inside `v`, 4-byte aligned (checked above).
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
}

/// The task's name, straight into the record: the safe wrapper's copy
/// through the stack costs a byte-wise memset and a byte-wise copy. On
/// failure the helper zeroes the buffer itself. Aggregated records take it
/// only when they are written (`agg::offer`): a repeat does not need it.
#[inline(always)]
pub fn fill_comm(e: &mut Event) {
    // SAFETY: `comm` is 16 writable bytes.
    unsafe { bpf_get_current_comm(e.comm.as_mut_ptr().cast(), e.comm.len() as u32) };
}

/// Word `i` of a tracepoint record of `len` bytes at `src` (its context),
/// read whole, or its bytes that lie inside the record (each read aligned
/// to its size, as context reads must be), the rest zero.
#[inline(always)]
fn record_word(src: *const u64, i: usize, len: usize) -> u64 {
    let at = i * 8;
    if at + 8 <= len {
        // SAFETY: inside the record.
        return unsafe { core::ptr::read_volatile(src.add(i)) };
    }
    let b = src.cast::<u8>();
    let mut w = 0u64;
    // SAFETY (each read): inside the record, aligned to its size.
    if at + 4 <= len {
        w |= unsafe { core::ptr::read_volatile(b.add(at).cast::<u32>()) } as u64;
        if at + 6 <= len {
            w |= (unsafe { core::ptr::read_volatile(b.add(at + 4).cast::<u16>()) } as u64) << 32;
            if at + 7 <= len {
                w |= (unsafe { core::ptr::read_volatile(b.add(at + 6)) } as u64) << 48;
            }
        } else if at + 5 <= len {
            w |= (unsafe { core::ptr::read_volatile(b.add(at + 4)) } as u64) << 32;
        }
    } else if at < len {
        w |= unsafe { core::ptr::read_volatile(b.add(at)) } as u64;
        if at + 2 <= len {
            w |= (unsafe { core::ptr::read_volatile(b.add(at + 1)) } as u64) << 8;
        }
        if at + 3 <= len {
            w |= (unsafe { core::ptr::read_volatile(b.add(at + 2)) } as u64) << 16;
        }
    }
    w
}

#[inline(always)]
fn fill_common(e: &mut Event, kind: u32, raw: *const u8, raw_len: u32) {
    e.kind = kind;
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.pid_tgid = bpf_get_current_pid_tgid();
    e.cpu = unsafe { bpf_get_smp_processor_id() };
    e.pkt_flags = 0;
    e.network_header = 0xffff;
    e.transport_header = 0xffff;
    e.sk_state = 0;
    e.netns = 0;
    zero(&mut e.sock);
    e.agg_gen = 0;
    e.agg_slot = 0;
    write_volatile(&mut e.agg_prev, 0);
    write_volatile(&mut e.agg_prev_last_ns, 0);
    write_volatile(&mut e.agg_prev_sketch[0], 0);
    write_volatile(&mut e.agg_prev_sketch[1], 0);
    e.agg_fold = 0;
    e._pad = 0;
    e.raw_len = 0;
    if !raw.is_null() {
        // A tracepoint's record: read straight from the program's context
        // at fixed offsets, instead of through a probe read. The verifier
        // allows context reads from 8 bytes on, and attaching refuses a
        // program that reads past the record's size; `raw_len` comes from
        // the frozen CONFIG, so it sees each branch below decided and counts
        // only the reads inside the record. The first word, the common
        // header (type, flags, preempt count, pid), is left zero: neither
        // the daemon nor the aggregation key reads a `common_` field.
        let len = if raw_len as usize > RAW_MAX {
            RAW_MAX
        } else {
            raw_len as usize
        };
        let (src, dst) = (raw.cast::<u64>(), e.raw.as_mut_ptr().cast::<u64>());
        // Written out word by word: a loop, which LLVM may leave rolled,
        // would read the context at a variable offset, which the verifier
        // refuses.
        macro_rules! words {
            ($($i:literal)*) => {
                const { assert!(RAW_WORDS == 16) };
                // SAFETY: inside `raw`, which is 8-aligned in Event
                // (netprobe_common's layout test).
                unsafe {
                    dst.write(0);
                    $(dst.add($i).write(record_word(src, $i, len));)*
                }
            };
        }
        words!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        e.raw_len = len as u32;
    }
}
