//! Resets: `tcp:tcp_send_reset` (this host sends a RST) and
//! `tcp:tcp_receive_reset` (a RST arrived for one of its sockets).
//!
//! Both records carry the addresses themselves (4.15+); their layout changed in
//! 6.10 (sockaddr-sized arrays, a `reason`), which the daemon decodes from the
//! `format` file. The programs only copy the record.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use netprobe_common::kind;

use crate::{config, ringbuf::emit};

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let len = config().send_reset_len;
    if len != 0 {
        emit(&ctx, kind::TCP_SEND_RESET, len, |_| {});
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let len = config().receive_reset_len;
    if len != 0 {
        emit(&ctx, kind::TCP_RECEIVE_RESET, len, |_| {});
    }
    0
}
