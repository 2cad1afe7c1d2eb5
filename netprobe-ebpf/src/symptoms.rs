//! What an application sees when the network fails it: retransmitted
//! segments (`tcp:tcp_retransmit_skb`) and socket errors such as ETIMEDOUT
//! (`sock:inet_sk_error_report`). Both records carry the socket's addresses
//! themselves; the programs copy them, and the retransmission's socket's
//! namespace (the error report's record names no socket: the daemon takes
//! its namespace from its flow's other records).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use netprobe_common::kind;

use crate::{config, raw_u64, ringbuf::emit, skb::sk_netns};

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let len = cfg.retransmit_len;
    if len != 0 {
        emit(kind::TCP_RETRANSMIT, ctx.as_ptr() as *const u8, len, |e| {
            // The socket's namespace.
            e.netns = sk_netns(cfg, raw_u64(e, cfg.retransmit_skaddr));
        });
    }
    0
}

#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let c = config();
    let len = c.sk_error_len;
    if c.sk_error_error != netprobe_common::Config::ABSENT {
        // SAFETY: the offset is the format's, inside the record.
        // Error 0: the socket closed after its error was read; not a
        // failure, and not worth a ring-buffer slot.
        if let Ok(0) = unsafe { ctx.read_at::<i32>(c.sk_error_error as usize) } {
            return 0;
        }
    }
    if len != 0 {
        emit(
            kind::SK_ERROR_REPORT,
            ctx.as_ptr() as *const u8,
            len,
            |_| {},
        );
    }
    0
}
