//! Listen queues: the accept-queue and SYN-queue overflow kprobes
//! (netprobe-ebpf/src/listen.rs), and the ListenOverflows/ListenDrops and
//! SYN-queue counters with the listeners' figures from sock_diag.

use crate::pipeline::decode::tcp_state_name;
use crate::pipeline::packet::endpoint;
use crate::pipeline::record::Record;

use crate::kernel::probes::{KprobeSpec, ProbeSpec};
use crate::pipeline::decode::{headers, sock, DecodeError, KernelEvent, Layouts, Sock};
use crate::pipeline::packet::Flow;
use netprobe_common::{kind, Event, LISTEN_AT_SYN};

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

/// Accept-queue overflows with the listener's figures (kprobes only).
pub const LISTEN_OVERFLOW: ProbeSpec = ProbeSpec {
    name: "listen_overflow",
    tracepoint: None,
    kprobe: Some(KprobeSpec {
        targets: &[
            ("conn_request", "tcp_conn_request"),
            ("syn_recv_sock", "tcp_v4_syn_recv_sock"),
            ("syn_recv_sock", "tcp_v6_syn_recv_sock"),
        ],
        covers: "accept-queue overflows with the listener's queue (SYNs and last ACKs)",
        only_without_reason: false,
        needs_sock: true,
        without: Some(
            "overflows at the handshake's last step still reach the drop probe where the kernel \
             names them (reason TCP_LISTEN_OVERFLOW, 2025 kernels such as 6.18); SYNs dropped at a \
             full accept queue are not seen",
        ),
        module: None,
    }),
    needs: &[],
};

pub const ACCEPT_QUEUE_FULL: Mode = m("queue_full", "accept_queue_full");
pub const SYN_QUEUE_FULL: Mode = m("queue_full", "syn_queue_full");

/// Where the accept queue overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenStage {
    /// A SYN (tcp_conn_request): dropped, the client retries it.
    Syn,
    /// The handshake's last ACK (tcp_v{4,6}_syn_recv_sock): dropped, the
    /// client thinks it is connected.
    Ack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEvent {
    pub stage: ListenStage,
    /// The listener.
    pub sock: Sock,
    /// The dropped segment.
    pub flow: Option<Flow>,
}

/// The kinds of record this family's programs write.
pub const KINDS: &[u32] = &[kind::KPROBE_LISTEN_OVERFLOW];

/// An overflow: the listener (always read), the stage, the segment.
pub fn decode(e: &Event, raw: &[u8], _: &Layouts) -> Result<KernelEvent, DecodeError> {
    let sock = sock(e).ok_or(DecodeError::NoSocket("listen overflow"))?;
    Ok(KernelEvent::ListenOverflow(ListenEvent {
        stage: if raw.first() == Some(&LISTEN_AT_SYN) {
            ListenStage::Syn
        } else {
            ListenStage::Ack
        },
        sock,
        flow: headers(e),
    }))
}

pub fn accept_queue_advice(listener: &str, max: Option<u32>) -> String {
    let backlog = max.map(|m| format!(" ({m})")).unwrap_or_default();
    format!(
        "The application listening on {listener} is not accepting connections fast enough, or \
         its listen() backlog{backlog} is too small: check that its accept loop is not stalled, \
         and raise the backlog it passes to listen() (the kernel caps it at net.core.somaxconn)."
    )
}

pub fn listen_record(e: &ListenEvent) -> Record {
    let mut r = Record {
        kind: "listen_overflow",
        ..Record::default()
    };
    r.set_mode(ACCEPT_QUEUE_FULL);
    r.set_sock(&e.sock);
    r.state = tcp_state_name(e.sock.state).map(str::to_string);
    if let Some(f) = &e.flow {
        r.set_flow(f);
    }
    let listener = endpoint(e.sock.addr, Some(e.sock.port));
    r.evidence("accept_queue", e.sock.accept_queue);
    r.evidence("accept_queue_max", e.sock.accept_queue_max);
    let (stage, what) = match e.stage {
        ListenStage::Syn => ("SYN", "the SYN (the client will retry it)"),
        ListenStage::Ack => (
            "ACK",
            "the handshake's last ACK (the client believes it is connected)",
        ),
    };
    r.evidence("stage", stage);
    let from = e
        .flow
        .as_ref()
        .map(|f| format!(" from {}", endpoint(f.saddr, f.sport)))
        .unwrap_or_default();
    r.message = format!(
        "accept queue full on {listener} ({} waiting for accept(), backlog {}): the kernel dropped {what}{from}",
        e.sock.accept_queue, e.sock.accept_queue_max
    );
    r.advice = Some(accept_queue_advice(
        &listener,
        Some(e.sock.accept_queue_max),
    ));
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: ACCEPT_QUEUE_FULL,
        severity: Severity::Warning,
        title: "accept queue full",
        meaning: "A listening socket's accept queue (connections the kernel completed, waiting \
                  for accept()) was full, so the kernel dropped the SYN or the handshake's last \
                  ACK. Clients retry and see slow or failed connects. The application accepts \
                  too slowly, or its listen() backlog is too small.",
        detection: "Kprobes on tcp_conn_request and tcp_v4/v6_syn_recv_sock test the kernel's own \
                    condition and read the listener's queue; drop reason TCP_LISTEN_OVERFLOW \
                    (2025 kernels); the ListenOverflows and ListenDrops counters, with the \
                    listener found through sock_diag (what `ss -lnt` shows).",
        advice: "Make the application accept faster (more acceptor threads, no blocking work in \
                 the accept loop), and raise its listen() backlog together with \
                 net.core.somaxconn, which caps it.",
        reasons: &["TCP_LISTEN_OVERFLOW"],
        locations: &[],
        counters: &["ListenOverflows", "ListenDrops"],
    },
    Entry {
        mode: SYN_QUEUE_FULL,
        severity: Severity::Warning,
        title: "SYN queue full",
        meaning: "A listener's SYN queue (half-open connections) was full: new SYNs were dropped, \
                  or answered with SYN cookies when net.ipv4.tcp_syncookies allows.",
        detection: "The TCPReqQFullDrop and TCPReqQFullDoCookies counters of each namespace, with \
                    the listener holding the longest SYN queue found through sock_diag; no \
                    tracepoint shows it.",
        advice: "Handshakes are not completing fast enough: a SYN flood, or clients that never \
                 send the final ACK. Raise the listen() backlog and net.ipv4.tcp_max_syn_backlog, \
                 and keep net.ipv4.tcp_syncookies=1 so a full SYN queue answers with cookies \
                 instead of dropping.",
        reasons: &[],
        locations: &[],
        counters: &["TCPReqQFullDrop", "TCPReqQFullDoCookies"],
    },
];
