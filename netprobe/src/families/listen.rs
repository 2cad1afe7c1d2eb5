//! Listen queues: the accept-queue and SYN-queue overflow kprobes
//! (netprobe-ebpf/src/listen.rs), and the ListenOverflows/ListenDrops and
//! SYN-queue counters with the listeners' figures from sock_diag.

use crate::families::Counters;

use crate::kernel::netns::{DiagSock, Snapshot, TCP_LISTEN, TCP_SYN_RECV};
use crate::kernel::probes::{KprobeSpec, ProbeSpec};
use crate::pipeline::counters::{counter_record, delta, evidence};
use crate::pipeline::decode::{
    headers, sock, tcp_state_name, DecodeError, KernelEvent, Layouts, Sock,
};
use crate::pipeline::packet::{endpoint, Flow};
use crate::pipeline::record::Record;
use netprobe_common::{kind, Event, LISTEN_AT_SYN};
use std::collections::BTreeMap;

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

/// The listen queues' counters.
pub const COUNTERS: Counters = Counters {
    triggers: &[
        "TcpExt.TCPReqQFullDrop",
        "TcpExt.TCPReqQFullDoCookies",
        "TcpExt.ListenOverflows",
    ],
    evidence: &["TcpExt.ListenDrops"],
    read: from_counters,
};

/// The listen queues' counters: SYNs dropped or answered with cookies at
/// a full SYN queue, and overflows of full accept queues.
pub fn from_counters(netns: u64, prev: &Snapshot, cur: &Snapshot, out: &mut Vec<Record>) {
    let dropped = delta(prev, cur, "TcpExt.TCPReqQFullDrop");
    let cookies = delta(prev, cur, "TcpExt.TCPReqQFullDoCookies");
    if dropped > 0 || cookies > 0 {
        out.push(syn_queue_record(netns, cur, dropped, cookies));
    }
    let overflows = delta(prev, cur, "TcpExt.ListenOverflows");
    if overflows > 0 {
        out.push(accept_queue_record(netns, prev, cur, overflows));
    }
}

/// Request sockets (the SYN queue) per local address and port.
pub fn syn_queues(socks: &[DiagSock]) -> BTreeMap<(std::net::IpAddr, u16), u32> {
    let mut q = BTreeMap::new();
    for s in socks.iter().filter(|s| s.state == TCP_SYN_RECV) {
        *q.entry((s.addr, s.port)).or_insert(0) += 1;
    }
    q
}

/// The listener a request socket queues at: same port, same address or a
/// wildcard listener.
pub fn listener_of(socks: &[DiagSock], addr: std::net::IpAddr, port: u16) -> Option<&DiagSock> {
    let mut on_port = socks
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.port == port);
    let all: Vec<&DiagSock> = on_port.by_ref().collect();
    all.iter()
        .find(|s| s.addr == addr)
        .or_else(|| all.iter().find(|s| s.addr.is_unspecified()))
        .copied()
}

pub fn syn_queue_record(netns: u64, cur: &Snapshot, dropped: u64, cookies: u64) -> Record {
    let mut r = counter_record("syn_queue_full", Some(netns), SYN_QUEUE_FULL);
    // The listener with the longest SYN queue, relative to its backlog.
    let queues = syn_queues(&cur.sockets);
    let worst = queues
        .iter()
        .filter_map(|(&(addr, port), &n)| Some((listener_of(&cur.sockets, addr, port)?, n)))
        .max_by_key(|(l, n)| (*n as u64 * 1000) / (l.wqueue.max(1) as u64));
    let cookies_on = cur.syncookies.map(|v| v != 0);
    evidence(
        &mut r,
        &[
            ("TCPReqQFullDrop", dropped.into()),
            ("TCPReqQFullDoCookies", cookies.into()),
        ],
    );
    if let Some(v) = cur.syncookies {
        evidence(&mut r, &[("tcp_syncookies", v.into())]);
    }
    let place = match worst {
        Some((l, n)) => {
            r.addr = Some(l.addr.to_string());
            r.port = Some(l.port);
            evidence(
                &mut r,
                &[("syn_queue", n.into()), ("syn_queue_max", l.wqueue.into())],
            );
            format!(
                "{} ({n} half-open, backlog {})",
                endpoint(l.addr, Some(l.port)),
                l.wqueue
            )
        }
        None => "a listener".to_string(),
    };
    r.message = if dropped > 0 {
        format!(
            "SYN queue full on {place} in netns {netns}: the kernel dropped {dropped} SYN(s){}",
            if cookies_on == Some(false) {
                " (tcp_syncookies=0)"
            } else {
                ""
            }
        )
    } else {
        format!("SYN queue full on {place} in netns {netns}: {cookies} SYN(s) answered with SYN cookies")
    };
    r
}

pub fn accept_queue_record(netns: u64, prev: &Snapshot, cur: &Snapshot, overflows: u64) -> Record {
    let mut r = counter_record("listen_overflow", Some(netns), ACCEPT_QUEUE_FULL);
    let drops = delta(prev, cur, "TcpExt.ListenDrops");
    evidence(
        &mut r,
        &[
            ("ListenOverflows", overflows.into()),
            ("ListenDrops", drops.into()),
        ],
    );
    if let Some(m) = cur.somaxconn {
        evidence(&mut r, &[("somaxconn", m.into())]);
    }
    // A full accept queue shows as Recv-Q > Send-Q (`ss -lnt`).
    let full = cur
        .sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.rqueue > s.wqueue)
        .max_by_key(|s| s.rqueue);
    let place = match full {
        Some(l) => {
            r.addr = Some(l.addr.to_string());
            r.port = Some(l.port);
            evidence(
                &mut r,
                &[
                    ("accept_queue", l.rqueue.into()),
                    ("accept_queue_max", l.wqueue.into()),
                ],
            );
            format!(
                "{} ({} waiting for accept(), backlog {})",
                endpoint(l.addr, Some(l.port)),
                l.rqueue,
                l.wqueue
            )
        }
        None => "a listener that was no longer full (or gone) when netprobe looked".to_string(),
    };
    r.message = format!(
        "accept queue full on {place} in netns {netns}: {overflows} overflow(s) counted by the kernel"
    );
    r.advice = Some(accept_queue_advice(
        &full.map_or_else(
            || "that port".to_string(),
            |l| endpoint(l.addr, Some(l.port)),
        ),
        full.map(|l| l.wqueue),
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
