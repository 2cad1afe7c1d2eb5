//! Resets: `tcp:tcp_send_reset` (this host sends a RST) and
//! `tcp:tcp_receive_reset` (a RST arrived for one of its sockets).
//!
//! Both records carry the addresses themselves (4.15+); their layout changed in
//! 6.10 (sockaddr-sized arrays, a `reason`), which the daemon decodes from the
//! `format` file. The programs only copy the record.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use netprobe_common::{kind, Config};

use crate::{config, ringbuf::emit};

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let len = config().send_reset_len;
    if len != 0 {
        emit(&ctx, kind::TCP_SEND_RESET, len, |_| {});
    }
    0
}

/// Also reads the socket's TCP state, so the daemon can tell a refused
/// connection (RST in answer to our SYN: SYN_SENT) from a reset one.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.receive_reset_len != 0 {
        emit(&ctx, kind::TCP_RECEIVE_RESET, cfg.receive_reset_len, |e| {
            if cfg.receive_reset_skaddr == Config::ABSENT || cfg.sk_state == Config::ABSENT {
                return;
            }
            // SAFETY: offsets from the format file and BTF; reads of kernel
            // memory go through bpf_probe_read_kernel.
            unsafe {
                if let Ok(sk) = ctx.read_at::<u64>(cfg.receive_reset_skaddr as usize) {
                    if sk != 0 {
                        if let Ok(state) = bpf_probe_read_kernel((sk + cfg.sk_state as u64) as *const u8) {
                            e.sk_state = state as u32;
                        }
                    }
                }
            }
        });
    }
    0
}
