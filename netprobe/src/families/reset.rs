//! Resets: `tcp:tcp_send_reset`, the `tcp_v{4,6}_send_reset` kprobes and
//! `tcp:tcp_receive_reset` (netprobe-ebpf/src/reset.rs).

use crate::pipeline::decode::tcp_state_name;
use crate::pipeline::packet::endpoint;
use crate::pipeline::record::flow_text;
use crate::pipeline::record::Record;

use crate::kernel::probes::{BtfPart, KprobeSpec, Need, ProbeSpec, TracepointSpec};
use crate::kernel::tracefs::Format;
use crate::pipeline::decode::{
    field_bytes, field_uint, headers, reason, sockaddr, split_addrs, DecodeError, KernelEvent,
    Layouts, Reason,
};
use crate::pipeline::packet::{Flow, IPPROTO_TCP};
use netprobe_common::{kind, pkt, Event};

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

/// RSTs this host receives.
pub const RESET_RECEIVED: ProbeSpec = ProbeSpec {
    name: "reset_received",
    tracepoint: Some(TracepointSpec {
        program: "tcp_receive_reset",
        category: "tcp",
        name: "tcp_receive_reset",
    }),
    kprobe: None,
    needs: &[Need::Btf(
        BtfPart::SkState,
        "socket state unknown, refused connections not told apart",
    )],
};

/// RSTs this host sends: the tracepoint, and the send_reset kprobes before 6.10.
pub const RESET_SENT: ProbeSpec = ProbeSpec {
    name: "reset_sent",
    tracepoint: Some(TracepointSpec {
        program: "tcp_send_reset",
        category: "tcp",
        name: "tcp_send_reset",
    }),
    kprobe: Some(KprobeSpec {
        targets: &[
            ("send_reset", "tcp_v4_send_reset"),
            ("send_reset", "tcp_v6_send_reset"),
        ],
        covers: "RSTs sent without a full socket (closed ports)",
        only_without_reason: true,
        needs_sock: false,
        without: None,
        module: None,
    }),
    needs: &[],
};

pub const NO_LISTENER: Mode = m("reset", "no_listener");
pub const RESET_OTHER: Mode = m("reset", "reset_other");

/// TCP_SYN_SENT in include/net/tcp_states.h (stable ABI).
pub const TCP_SYN_SENT: i64 = 2;

/// The mode of a RST this host sent, from its reason (6.10+) where known,
/// or from the reset kprobe having seen no socket (before 6.10).
pub fn reset_sent(reason: Option<&str>, no_socket: bool) -> Mode {
    match reason {
        Some("NO_SOCKET") => NO_LISTENER,
        None if no_socket => NO_LISTENER,
        Some("TCP_RFC7323_PAWS") => super::paws::TW_RECYCLE,
        _ => RESET_OTHER,
    }
}

/// The mode of a RST this host received: in answer to its own SYN, the peer
/// had nothing listening (the client's view of a closed port).
pub fn reset_received(state: Option<i64>) -> Mode {
    match state {
        Some(TCP_SYN_SENT) => NO_LISTENER,
        _ => RESET_OTHER,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetEvent {
    /// The RST's own direction: for a sent RST, from this host.
    pub flow: Option<Flow>,
    pub reason: Option<Reason>,
    /// The socket's TCP state (0: no socket).
    pub state: Option<i64>,
    /// The reset kprobe saw no socket at all (a closed port).
    pub no_socket: bool,
}

/// `tcp_send_reset` stores the RST's direction (the socket's local side as
/// source, or the offending packet reversed); `tcp_receive_reset` stores the
/// socket's, so the RST travels the other way.
fn from_record(fmt: &Format, raw: &[u8], received: bool) -> ResetEvent {
    let addrs = match fmt.field("saddr") {
        Some(f) if f.size >= 16 => field_bytes(fmt, raw, "saddr")
            .and_then(sockaddr)
            .zip(field_bytes(fmt, raw, "daddr").and_then(sockaddr))
            .map(|((s, sp), (d, dp))| (s, sp, d, dp)),
        _ => split_addrs(fmt, raw),
    };
    let flow = addrs.map(|(saddr, sport, daddr, dport)| Flow {
        proto: IPPROTO_TCP,
        saddr,
        sport: Some(sport),
        daddr,
        dport: Some(dport),
        tcp_flags: None,
    });
    ResetEvent {
        flow: if received {
            flow.map(|f| f.reversed())
        } else {
            flow
        },
        reason: reason(fmt, raw),
        state: field_uint(fmt, raw, "state").map(|s| s as u32 as i32 as i64),
        no_socket: false,
    }
}

/// The kinds of record this family's programs write.
pub const KINDS: &[u32] = &[
    kind::TCP_SEND_RESET,
    kind::KPROBE_SEND_RESET,
    kind::TCP_RECEIVE_RESET,
];

pub fn decode(e: &Event, raw: &[u8], layouts: &Layouts) -> Result<KernelEvent, DecodeError> {
    Ok(match e.kind {
        kind::KPROBE_SEND_RESET => {
            // The segment being answered; the RST travels the other way.
            let no_socket = e.pkt_flags & pkt::NO_SOCKET != 0;
            KernelEvent::ResetSent(ResetEvent {
                flow: headers(e).map(|f| Flow {
                    tcp_flags: None,
                    ..f.reversed()
                }),
                reason: None,
                state: (!no_socket && e.sk_state != 0).then_some(e.sk_state as i64),
                no_socket,
            })
        }
        kind::TCP_SEND_RESET => {
            let fmt = layouts
                .send_reset
                .as_ref()
                .ok_or(DecodeError::NoLayout("tcp:tcp_send_reset"))?;
            KernelEvent::ResetSent(from_record(fmt, raw, false))
        }
        _ => {
            let fmt = layouts
                .receive_reset
                .as_ref()
                .ok_or(DecodeError::NoLayout("tcp:tcp_receive_reset"))?;
            let mut r = from_record(fmt, raw, true);
            // tcp_receive_reset has no state field; the program read it.
            if r.state.is_none() && e.sk_state != 0 {
                r.state = Some(e.sk_state as i64);
            }
            KernelEvent::ResetReceived(r)
        }
    })
}

pub fn reset_record(e: &ResetEvent, sent: bool) -> Record {
    let reason = e.reason.as_ref().map(|x| x.label());
    let mode = if sent {
        reset_sent(reason.as_deref(), e.no_socket)
    } else {
        reset_received(e.state)
    };
    let kind = if sent { "reset_sent" } else { "reset_received" };
    let mut r = Record {
        kind,
        ..Record::default()
    };
    r.set_mode(mode);
    r.reason = reason.clone();
    r.state = e.state.and_then(tcp_state_name).map(str::to_string);
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    let flow = e
        .flow
        .as_ref()
        .map(flow_text)
        .unwrap_or_else(|| "(addresses unknown)".into());
    let because = match (reason, e.no_socket) {
        (Some(x), _) => format!(" ({x})"),
        (None, true) => " (no socket)".into(),
        (None, false) => String::new(),
    };
    // In both directions the RST comes from the closed side to the client.
    let closed = e.flow.as_ref().map(|f| endpoint(f.saddr, f.sport));
    r.message = match (sent, mode == NO_LISTENER, &closed) {
        (true, _, _) => format!("RST sent {flow}{because}"),
        (false, true, Some(closed)) => format!(
            "RST received {flow} in answer to our SYN: connection refused, nothing listens on {closed}"
        ),
        (false, _, _) => format!("RST received {flow}: the peer reset the connection"),
    };
    if let (true, Some(closed)) = (mode == NO_LISTENER, &closed) {
        r.advice = Some(format!(
            "Nothing listens on {closed}: check that the service behind this port is running."
        ));
    }
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: NO_LISTENER,
        severity: Severity::Warning,
        title: "nothing listens on the port",
        meaning: "A segment reached a port where no socket listens: the kernel dropped it and \
                  answered with a RST, and the client sees \"connection refused\".",
        detection: "Drop reason NO_SOCKET and reset reason NO_SOCKET (6.10+); the reset kprobes' \
                    \"no socket\" before that; a RST received in SYN_SENT on the client's side.",
        advice: "Check that the service behind the port is running and bound to the address \
                 clients use, and that clients use the right port.",
        reasons: &["NO_SOCKET"],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: RESET_OTHER,
        severity: Severity::Notice,
        title: "connection reset",
        meaning: "A RST was sent or received on an existing connection: an application closed \
                  with unread data or aborted, a peer rejected the connection, or a middlebox \
                  reset it.",
        detection: "Tracepoints tcp:tcp_send_reset (with its reason, 6.10+) and \
                    tcp:tcp_receive_reset.",
        advice: "Look at the reason and at the application on the side that sent the RST.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_sent_and_received() {
        assert_eq!(reset_sent(Some("NO_SOCKET"), false), NO_LISTENER);
        assert_eq!(reset_sent(None, true), NO_LISTENER);
        assert_eq!(reset_sent(Some("TCP_ABORT_ON_DATA"), true), RESET_OTHER);
        assert_eq!(reset_sent(None, false), RESET_OTHER);
        assert_eq!(
            reset_sent(Some("TCP_RFC7323_PAWS"), false).mode,
            "tw_recycle"
        );
        assert_eq!(reset_received(Some(TCP_SYN_SENT)), NO_LISTENER);
        assert_eq!(reset_received(Some(1)), RESET_OTHER);
        assert_eq!(reset_received(None), RESET_OTHER);
    }
}
