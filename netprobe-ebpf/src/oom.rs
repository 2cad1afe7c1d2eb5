//! `oom:mark_victim`: the OOM killer chose a victim. The record (pid; from
//! about 6.9 also comm, memory and uid) is copied with the bytes after it,
//! where its `comm` string lives.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use netprobe_common::kind;

use crate::{config, ringbuf::emit};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let len = config().oom_len;
    if len != 0 {
        emit(
            kind::OOM_MARK_VICTIM,
            ctx.as_ptr() as *const u8,
            len,
            |_| {},
        );
    }
    0
}
