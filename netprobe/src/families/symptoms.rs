//! What applications see: `tcp:tcp_retransmit_skb` and
//! `sock:inet_sk_error_report` (netprobe-ebpf/src/symptoms.rs). Symptoms
//! take the cause seen on their own flow (pipeline/causes.rs).

use crate::pipeline::decode::tcp_state_name;
use crate::pipeline::record::flow_text;
use crate::pipeline::record::Record;

use crate::families::reset::{NO_LISTENER, RESET_OTHER};
use crate::families::OTHER;
use crate::kernel::probes::{ProbeSpec, TracepointSpec};
use crate::kernel::tracefs::Format;
use crate::pipeline::decode::{field_uint, split_addrs, DecodeError, KernelEvent, Layouts};
use crate::pipeline::packet::{Flow, IPPROTO_TCP};
use netprobe_common::{kind, Event};

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

/// Errors reported to sockets (what the application sees).
pub const SOCKET_ERROR: ProbeSpec = ProbeSpec {
    name: "socket_error",
    tracepoint: Some(TracepointSpec {
        program: "inet_sk_error_report",
        category: "sock",
        name: "inet_sk_error_report",
    }),
    kprobe: None,
    needs: &[],
};

/// Retransmissions.
pub const RETRANSMIT: ProbeSpec = ProbeSpec {
    name: "retransmit",
    tracepoint: Some(TracepointSpec {
        program: "tcp_retransmit_skb",
        category: "tcp",
        name: "tcp_retransmit_skb",
    }),
    kprobe: None,
    needs: &[],
};

pub const UNREACHABLE: Mode = m("unreachable", "unreachable");

/// The mode of a socket error, by the errno the application saw: a
/// refused connection is a closed port's, a reset the reset family's, and
/// an unreachable host or network its own mode; the rest (ETIMEDOUT above
/// all) are `other` until a cause on their flow, or an OOM stall, claims
/// them.
pub fn socket_error(errno: i64) -> Mode {
    match errno {
        111 => NO_LISTENER,             // ECONNREFUSED
        104 => RESET_OTHER,             // ECONNRESET
        101 | 112 | 113 => UNREACHABLE, // ENETUNREACH, EHOSTDOWN, EHOSTUNREACH
        _ => OTHER,
    }
}

/// A socket-level symptom: a retransmission (with the socket's TCP state)
/// or an error (with its errno).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    /// The socket's own direction: local address and port first.
    pub flow: Option<Flow>,
    pub state: Option<i64>,
    pub errno: Option<i64>,
}

/// A socket's flow from the split address fields (local side first).
fn socket_flow(fmt: &Format, raw: &[u8], proto: u8) -> Option<Flow> {
    split_addrs(fmt, raw).map(|(saddr, sport, daddr, dport)| Flow {
        proto,
        saddr,
        sport: Some(sport),
        daddr,
        dport: Some(dport),
        tcp_flags: None,
    })
}

/// The kinds of record this family's programs write.
pub const KINDS: &[u32] = &[kind::TCP_RETRANSMIT, kind::SK_ERROR_REPORT];

pub fn decode(e: &Event, raw: &[u8], layouts: &Layouts) -> Result<KernelEvent, DecodeError> {
    if e.kind == kind::TCP_RETRANSMIT {
        let fmt = layouts
            .retransmit
            .as_ref()
            .ok_or(DecodeError::NoLayout("tcp:tcp_retransmit_skb"))?;
        return Ok(KernelEvent::Retransmit(SocketEvent {
            flow: socket_flow(fmt, raw, IPPROTO_TCP),
            state: field_uint(fmt, raw, "state").map(|s| s as u32 as i32 as i64),
            errno: None,
        }));
    }
    let fmt = layouts
        .sk_error
        .as_ref()
        .ok_or(DecodeError::NoLayout("sock:inet_sk_error_report"))?;
    let proto = field_uint(fmt, raw, "protocol").unwrap_or(IPPROTO_TCP as u64) as u8;
    Ok(KernelEvent::SocketError(SocketEvent {
        flow: socket_flow(fmt, raw, proto),
        state: None,
        errno: field_uint(fmt, raw, "error").map(|e| e as u32 as i32 as i64),
    }))
}

/// The names of the errors sockets report most (errno-base.h, stable ABI).
pub fn errno_name(e: i64) -> Option<&'static str> {
    Some(match e {
        32 => "EPIPE",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        112 => "EHOSTDOWN",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => return None,
    })
}

/// A retransmission or a socket error, on its own: family `other` until
/// an OOM window claims it (`attribute_to_oom`).
pub fn symptom_record(e: &SocketEvent, retransmit: bool) -> Record {
    let mut r = Record {
        kind: if retransmit {
            "retransmit"
        } else {
            "socket_error"
        },
        ..Record::default()
    };
    r.set_mode(if retransmit {
        crate::families::OTHER
    } else {
        socket_error(e.errno.unwrap_or(0).abs())
    });
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    r.state = e.state.and_then(tcp_state_name).map(str::to_string);
    let flow = e
        .flow
        .as_ref()
        .map(flow_text)
        .unwrap_or_else(|| "a socket".into());
    r.message = if retransmit {
        format!("retransmitted a segment on {flow}")
    } else {
        let errno = e.errno.unwrap_or(0).abs();
        let name = errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_string);
        r.reason = Some(name.clone());
        let meaning = match errno {
            110 => ": the connection timed out",
            104 => ": the peer reset the connection",
            111 => ": the connection was refused",
            101 => ": the network is unreachable",
            112 => ": the host is down",
            113 => ": the host is unreachable",
            _ => "",
        };
        format!("socket error {name} on {flow}{meaning}")
    };
    r
}

/// Retransmissions outside any OOM window, folded into one record a minute.
pub fn retransmit_summary(count: u64, secs: u64) -> Record {
    let mut r = Record::new(
        "retransmit",
        format!(
            "{count} TCP retransmission(s) in the last {secs} s, none in an OOM window (the kernel counts them all in Tcp RetransSegs)"
        ),
    );
    r.set_mode(crate::families::OTHER);
    r.count = Some(count);
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[Entry {
    mode: UNREACHABLE,
    severity: Severity::Warning,
    title: "host or network unreachable",
    meaning: "A connection failed because its peer could not be reached: the application \
                  saw EHOSTUNREACH (\"No route to host\"), ENETUNREACH or EHOSTDOWN. The cause \
                  netprobe saw on the same flow is named: a netfilter rule that rejected the \
                  packet (REJECT with an ICMP unreachable), a neighbour (the next hop) that \
                  never answered ARP or neighbour discovery, or, with no drop on this host, no \
                  route or an ICMP unreachable from the network.",
    detection: "Tracepoint sock:inet_sk_error_report (5.14+) for the error, and the drops \
                    of the same flow: reason NETFILTER_DROP for a rule; NEIGH_FAILED, \
                    NEIGH_QUEUEFULL, NEIGH_CREATEFAIL or NEIGH_DEAD for the neighbour; \
                    IP_OUTNOROUTES or IP_INNOROUTES for the route (5.17+).",
    advice: "If a netfilter rule rejected it, find the REJECT rule matching this flow \
                 (`nft list ruleset`, `iptables-save | grep REJECT`). If the neighbour never \
                 answered, check that the peer (or the gateway) is up and on that link \
                 (`ip neigh show` shows it FAILED). Otherwise check the route to the peer \
                 (`ip route get ADDRESS`) and the network in between.",
    reasons: &[
        "NEIGH_FAILED",
        "NEIGH_QUEUEFULL",
        "NEIGH_CREATEFAIL",
        "NEIGH_DEAD",
        "IP_OUTNOROUTES",
        "IP_INNOROUTES",
    ],
    locations: &[],
    counters: &[],
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_by_errno() {
        assert_eq!(socket_error(111), NO_LISTENER);
        assert_eq!(socket_error(104), RESET_OTHER);
        assert_eq!(socket_error(113), UNREACHABLE);
        assert_eq!(socket_error(101), UNREACHABLE);
        assert_eq!(socket_error(112), UNREACHABLE);
        assert_eq!(socket_error(110), OTHER);
    }
}
