//! netprobe's kernel programs.
//!
//! Rust eBPF has no CO-RE relocations, so these programs know nothing about the
//! kernel's layouts: the daemon reads tracepoint field offsets from tracefs
//! `format` files and struct member offsets from BTF, and writes them into the
//! read-only `CONFIG` global before load. Each program copies the tracepoint's
//! record verbatim (and, for drops, the packet's headers) into one ring buffer;
//! the daemon decodes it with the same `format` file.
#![no_std]
#![no_main]

mod agg;
mod conntrack;
mod drop;
mod listen;
mod oom;
mod reset;
mod ringbuf;
mod skb;
mod slots;
mod symptoms;

use netprobe_common::Config;

/// A debug line through aya-log, in builds with the `log` feature (netprobe's
/// `probe-log`); nothing at all in others. The daemon prints the lines as
/// its own diagnostics (`--log-level netprobe=debug`).
#[cfg(feature = "log")]
macro_rules! probe_log {
    ($ctx:expr, $($arg:tt)+) => {
        aya_log_ebpf::debug!($ctx, $($arg)+)
    };
}
#[cfg(not(feature = "log"))]
macro_rules! probe_log {
    ($ctx:expr, $($arg:tt)+) => {{
        let _ = $ctx;
    }};
}
pub(crate) use probe_log;

/// Overwritten by the daemon at load (`EbpfLoader::override_global`). Frozen
/// read-only, so the verifier sees the values as constants.
#[no_mangle]
static CONFIG: Config = Config::DISABLED;

/// The configuration, read in place: a copy would take 136 bytes of the
/// program's 512-byte stack (5.10's verifier counts the aggregation
/// subprogram's frame on top of it).
#[inline(always)]
pub(crate) fn config() -> &'static Config {
    // SAFETY: a read-only global. The pointer is read through a volatile
    // load, so the compiler cannot fold the placeholder's values in.
    unsafe { &*core::ptr::read_volatile(&(&CONFIG as *const Config)) }
}

/// The pointer-sized field at `offset` (from the format file) of a
/// tracepoint record, 0 when the kernel has no such field or it cannot be read.
#[inline(always)]
pub(crate) fn record_u64(ctx: &aya_ebpf::programs::TracePointContext, offset: u32) -> u64 {
    if offset == Config::ABSENT {
        return 0;
    }
    // SAFETY: the offset comes from the running kernel's format file.
    unsafe { ctx.read_at::<u64>(offset as usize) }.unwrap_or(0)
}

/// The pointer-sized field at `offset` (from the format file) of the
/// tracepoint record already copied into `e.raw` (`ringbuf::emit`): no
/// probe read. 0 when the kernel has no such field.
#[inline(always)]
pub(crate) fn raw_u64(e: &netprobe_common::Event, offset: u32) -> u64 {
    let at = offset as usize;
    if offset == Config::ABSENT || at + 8 > e.raw_len as usize || at + 8 > netprobe_common::RAW_MAX
    {
        return 0;
    }
    if at % 8 == 0 {
        // SAFETY: inside `raw` (checked above), which is 8-aligned in Event.
        return unsafe { e.raw.as_ptr().cast::<u64>().add(at / 8).read() };
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&e.raw[at..at + 8]);
    u64::from_ne_bytes(b)
}

/// GPL-compatible, as the GPL-only helpers (bpf_probe_read_kernel) require.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
