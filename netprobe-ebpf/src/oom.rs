//! `oom:mark_victim`: the OOM killer chose a victim. The record (pid; from
//! about 6.9 also comm, memory and uid) is copied with the bytes after it,
//! where its `comm` string lives. That copy goes through a probe read: a
//! program that reads its context past the record's fixed fields cannot
//! attach. An OOM kill is rare; the cost does not matter.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_buf, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use netprobe_common::{kind, RAW_MAX};

use crate::{config, ringbuf::emit};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let len = config().oom_len;
    if len != 0 {
        let at = ctx.as_ptr() as *const u8;
        emit(kind::OOM_MARK_VICTIM, core::ptr::null(), 0, |e| {
            let n = (len as usize).min(RAW_MAX);
            // SAFETY: a tracepoint record is kernel memory; a failed read
            // leaves raw_len 0, and the daemon says so.
            if unsafe { bpf_probe_read_kernel_buf(at, &mut e.raw[..n]) }.is_ok() {
                e.raw_len = n as u32;
            }
        });
    }
    0
}
