//! The records netprobe writes: one struct, serialised the same way to every
//! sink (design.md: JSON field names, journald `NETPROBE_<FIELD>`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{
    families::catalogue,
    families::{self, Mode},
    kernel::kallsyms::Kallsyms,
    pipeline::decode::{Decoded, KernelEvent, Sock},
    pipeline::packet::{endpoint, proto_name, tcp_flags_name, Flow},
    pipeline::timefmt,
};

/// One output record. Field names are the interface contract: extend, never rename.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Record {
    pub ts: String,
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The mode's severity (catalogue): notice, warning or critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The socket a record is about (a listener, a full receive buffer):
    /// its local address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// TCP flags of the dropped packet, e.g. `SYN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// Kernel function (and offset) where a packet was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The task current when the hook fired; escaped, untrusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// How many events a record stands for: an `incident`'s count includes
    /// its first event, which was written in full before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `incident` records: the kind of event they fold (`drop`,
    /// `reset_sent`, ...), so that records reconcile with kernel counters
    /// without reading messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    /// `incident` records: when its first and last event happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// The figures behind the diagnosis (queue lengths, buffer sizes,
    /// memory, counter deltas), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<BTreeMap<&'static str, Value>>,
    /// The network namespace (inode) a record is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The cgroup (v2 path) a record is about: an OOM victim's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container (id) and Kubernetes pod (`namespace/name`, or its UID)
    /// the record's namespace or cgroup belongs to (containers.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `probe` records: the probe's name, its hook, `attached` or `skipped`,
    /// and why (or what it lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `ready` records: how many probes attached and were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u32>,
}

/// journald priorities (syslog levels).
pub const PRIORITY_ERR: u8 = 3;
pub const PRIORITY_WARNING: u8 = 4;
pub const PRIORITY_INFO: u8 = 6;

impl Record {
    pub fn new(kind: &'static str, message: String) -> Record {
        Record {
            ts: timefmt::rfc3339(timefmt::now_unix_ns()),
            kind,
            message,
            ..Record::default()
        }
    }

    /// warning for incidents and lost events, err for netprobe's own
    /// failures, info for the rest.
    pub fn priority(&self) -> u8 {
        match self.kind {
            "incident" => PRIORITY_WARNING,
            "lost" | "error" => PRIORITY_ERR,
            _ => PRIORITY_INFO,
        }
    }

    pub fn set_mode(&mut self, m: Mode) {
        self.family = Some(m.family);
        self.mode = Some(m.mode);
        let entry = catalogue::of(m);
        self.severity = Some(entry.severity.name());
        // The mode's general advice; records with a flow or a listener
        // replace it with their own.
        self.advice = Some(entry.advice.to_string());
    }

    pub(crate) fn set_flow(&mut self, f: &Flow) {
        self.proto = Some(proto_name(f.proto));
        self.saddr = Some(f.saddr.to_string());
        self.sport = f.sport;
        self.daddr = Some(f.daddr.to_string());
        self.dport = f.dport;
        self.tcp_flags = f.tcp_flags.map(tcp_flags_name);
    }

    pub fn probe(name: &str, hook: &str, status: Result<Option<String>, String>) -> Record {
        let (st, detail, message) = match status {
            Ok(None) => ("attached", None, format!("probe {name} attached to {hook}")),
            Ok(Some(lost)) => (
                "attached",
                Some(lost.clone()),
                format!("probe {name} attached to {hook}, degraded: {lost}"),
            ),
            Err(why) => (
                "skipped",
                Some(why.clone()),
                format!("probe {name} skipped: {why}"),
            ),
        };
        Record {
            probe: Some(name.to_string()),
            hook: Some(hook.to_string()),
            status: Some(st),
            detail,
            ..Record::new("probe", message)
        }
    }

    pub fn ready(attached: u32, skipped: u32) -> Record {
        Record {
            attached: Some(attached),
            skipped: Some(skipped),
            ..Record::new(
                "ready",
                format!("netprobe is tracing: {attached} probes attached, {skipped} skipped"),
            )
        }
    }

    pub fn lost(count: u64, why: &str) -> Record {
        Record {
            count: Some(count),
            detail: Some(why.to_string()),
            ..Record::new("lost", format!("{count} kernel events were lost: {why}"))
        }
    }

    pub fn error(message: String) -> Record {
        Record::new("error", message)
    }
}

/// Escapes untrusted bytes (process names): printable ASCII kept, everything
/// else as `\xNN`, so no sink can be fed control characters or bad UTF-8.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

pub(crate) fn flow_text(f: &Flow) -> String {
    format!(
        "{} {} -> {}",
        proto_name(f.proto).to_uppercase(),
        endpoint(f.saddr, f.sport),
        endpoint(f.daddr, f.dport)
    )
}

/// Builds the record of one kernel event: classification, flow, message.
pub fn from_event(d: &Decoded, wall_ns: i128, ksyms: &Kallsyms) -> Record {
    let mut r = match &d.event {
        KernelEvent::Drop(e) => families::drop::drop_record(e, ksyms),
        KernelEvent::ResetSent(e) => families::reset::reset_record(e, true),
        KernelEvent::ResetReceived(e) => families::reset::reset_record(e, false),
        KernelEvent::ListenOverflow(e) => families::listen::listen_record(e),
        KernelEvent::Oom(e) => families::oom::oom_record(e),
        KernelEvent::Retransmit(e) => families::symptoms::symptom_record(e, true),
        KernelEvent::SocketError(e) => families::symptoms::symptom_record(e, false),
    };
    // The service the event is about, where the kernel says which end it
    // is (a listener or receiving socket the builders set stays).
    if r.addr.is_none() {
        let flow = match &d.event {
            KernelEvent::Drop(e) => e.flow.as_ref(),
            KernelEvent::ResetSent(e) | KernelEvent::ResetReceived(e) => e.flow.as_ref(),
            KernelEvent::SocketError(e) | KernelEvent::Retransmit(e) => e.flow.as_ref(),
            _ => None,
        };
        if let Some((addr, port)) = flow
            .and_then(|f| crate::pipeline::service::endpoint(f, crate::pipeline::service::side(d)))
        {
            r.addr = Some(addr.to_string());
            r.port = Some(port);
        }
    }
    // The event's own time, formatted once (the builders leave ts empty).
    r.ts = timefmt::rfc3339(wall_ns);
    if r.netns.is_none() {
        r.netns = d.netns;
    }
    // An OOM record is about its victim, not the task that hit the limit.
    if r.pid.is_none() {
        r.pid = Some(d.pid);
        r.comm = Some(escape_bytes(&d.comm));
    }
    r
}

impl Record {
    pub(crate) fn evidence(&mut self, name: &'static str, value: impl Into<Value>) {
        self.evidence
            .get_or_insert_with(BTreeMap::new)
            .insert(name, value.into());
    }

    /// `evidence.source`: "counters" for what counters (not a probe) saw.
    pub fn evidence_source(&self) -> Option<&str> {
        self.evidence.as_ref()?.get("source")?.as_str()
    }

    pub(crate) fn set_sock(&mut self, s: &Sock) {
        self.addr = Some(s.addr.to_string());
        self.port = Some(s.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{
        drop::{DropEvent, DropMark},
        listen::{ListenEvent, ListenStage},
        oom::{add_process, attribute_to_oom, OomEvent},
        reset::ResetEvent,
        symptoms::{errno_name, retransmit_summary, SocketEvent},
    };
    use crate::pipeline::decode::Reason;

    fn flow() -> Flow {
        Flow {
            proto: 6,
            saddr: "127.0.0.2".parse().unwrap(),
            sport: Some(40000),
            daddr: "127.0.0.1".parse().unwrap(),
            dport: Some(9),
            tcp_flags: Some(0x02),
        }
    }

    #[test]
    fn no_socket_drop_is_a_no_listener_reset() {
        let k = Kallsyms::parse("ffffffff81a00000 T tcp_v4_rcv\n");
        let d = Decoded {
            netns: None,
            ts_ns: 0,
            pid: 0,
            comm: b"swapper/0".to_vec(),
            fold: Default::default(),
            event: KernelEvent::Drop(DropEvent {
                reason: Some(Reason {
                    value: 3,
                    name: Some("NO_SOCKET".into()),
                }),
                location: 0xffffffff81a00100,
                flow: Some(flow()),
                mark: None,
                tcp_ts: None,
                tcp_drop: false,
                sock: None,
            }),
        };
        let r = from_event(&d, 0, &k);
        assert_eq!(
            (r.kind, r.family, r.mode),
            ("drop", Some("reset"), Some("no_listener"))
        );
        assert_eq!(r.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.saddr.as_deref(), Some("127.0.0.2"));
        assert_eq!((r.sport, r.dport), (Some(40000), Some(9)));
        assert_eq!(r.tcp_flags.as_deref(), Some("SYN"));
        assert_eq!(r.location.as_deref(), Some("tcp_v4_rcv+0x100"));
        assert!(
            r.message.contains("no socket listens on 127.0.0.1:9"),
            "{}",
            r.message
        );
        assert!(r.advice.unwrap().contains("127.0.0.1:9"));
        assert_eq!(r.ts, "1970-01-01T00:00:00.000000Z");

        // A kernel without reasons (5.10): the same drop, known only by the
        // reset kprobe having answered this skb without a socket.
        let KernelEvent::Drop(e) = &d.event else {
            unreachable!()
        };
        let bare = DropEvent {
            reason: None,
            mark: Some(DropMark::NoSocketRst),
            ..e.clone()
        };
        let r = families::drop::drop_record(&bare, &k);
        assert_eq!((r.family, r.mode), (Some("reset"), Some("no_listener")));
        assert_eq!(r.reason, None);
        assert!(r.message.contains("no socket listens on 127.0.0.1:9"));
        assert!(r
            .message
            .contains("no socket: the kernel answered it with a RST"));
        // Without that mark, a drop in tcp_v4_rcv says nothing more.
        let r = families::drop::drop_record(
            &DropEvent {
                mark: None,
                ..bare.clone()
            },
            &k,
        );
        assert_eq!(r.mode, Some("other"));
        assert!(r.message.contains("no reason given by this kernel"));
        // The conntrack kprobes' marks beat the generic reason.
        let nf = DropEvent {
            reason: Some(Reason {
                value: 12,
                name: Some("NETFILTER_DROP".into()),
            }),
            ..bare
        };
        for (mark, mode, family, words) in [
            (
                DropMark::ConntrackFull,
                "conntrack_table_full",
                "queue_full",
                "conntrack table full",
            ),
            (
                DropMark::ConntrackInsertFailed,
                "conntrack_insert_failed",
                "conntrack",
                "could not insert its new entry",
            ),
        ] {
            let r = families::drop::drop_record(
                &DropEvent {
                    mark: Some(mark),
                    ..nf.clone()
                },
                &k,
            );
            assert_eq!(
                (r.kind, r.mode, r.family),
                ("conntrack", Some(mode), Some(family))
            );
            assert_eq!(r.reason.as_deref(), Some("NETFILTER_DROP"));
            assert!(r.message.contains(words), "{}", r.message);
            assert!(r.message.contains("127.0.0.1:9"), "{}", r.message);
        }
        let r = families::drop::drop_record(&nf, &k);
        assert_eq!((r.kind, r.mode), ("drop", Some("netfilter_drop")));
    }

    #[test]
    fn hostile_comm_is_escaped() {
        assert_eq!(escape_bytes(b"a\nb\x00\xff\\"), "a\\x0ab\\x00\\xff\\x5c");
        let json = serde_json::to_string(&Record {
            comm: Some(escape_bytes(b"x\n\"y")),
            ..Record::new("drop", "m".into())
        })
        .unwrap();
        assert!(!json.contains('\n'));
        assert!(json.contains(r#""comm":"x\\x0a\"y""#), "{json}");
    }

    #[test]
    fn reset_records_name_the_direction() {
        let e = ResetEvent {
            flow: Some(flow().reversed()),
            reason: Some(Reason {
                value: 1,
                name: Some("NO_SOCKET".into()),
            }),
            state: Some(0),
            no_socket: false,
        };
        let r = families::reset::reset_record(&e, true);
        assert_eq!((r.kind, r.mode), ("reset_sent", Some("no_listener")));
        assert_eq!(
            r.message,
            "RST sent TCP 127.0.0.1:9 -> 127.0.0.2:40000 (NO_SOCKET)"
        );
        // Before 6.10: the kprobe saw no socket, and there is no reason.
        let r = families::reset::reset_record(
            &ResetEvent {
                reason: None,
                state: None,
                no_socket: true,
                ..e.clone()
            },
            true,
        );
        assert_eq!((r.kind, r.mode), ("reset_sent", Some("no_listener")));
        assert_eq!(
            r.message,
            "RST sent TCP 127.0.0.1:9 -> 127.0.0.2:40000 (no socket)"
        );
        let r = families::reset::reset_record(
            &ResetEvent {
                reason: None,
                ..e.clone()
            },
            false,
        );
        assert_eq!((r.kind, r.mode), ("reset_received", Some("reset_other")));
        // A RST in answer to our SYN: the client's side of a closed port.
        let r = families::reset::reset_record(
            &ResetEvent {
                reason: None,
                state: Some(2),
                ..e
            },
            false,
        );
        assert_eq!((r.kind, r.mode), ("reset_received", Some("no_listener")));
        assert_eq!(r.state.as_deref(), Some("SYN_SENT"));
        assert!(
            r.message
                .contains("connection refused, nothing listens on 127.0.0.1:9"),
            "{}",
            r.message
        );
        assert!(r.advice.as_ref().unwrap().contains("127.0.0.1:9"));
        assert_eq!(r.priority(), PRIORITY_INFO);
        assert_eq!(Record::lost(3, "ring buffer full").priority(), PRIORITY_ERR);
    }

    fn listener() -> Sock {
        Sock {
            addr: "127.0.0.1".parse().unwrap(),
            port: 9,
            state: 10,
            accept_queue: 2,
            accept_queue_max: 1,
            rmem_alloc: 6912,
            rcvbuf: 8192,
        }
    }

    #[test]
    fn full_queues_name_the_socket_and_its_figures() {
        // The kprobe's view: the listener and the SYN it drops.
        let e = ListenEvent {
            stage: ListenStage::Syn,
            sock: listener(),
            flow: Some(flow()),
        };
        let r = families::listen::listen_record(&e);
        assert_eq!(
            (r.kind, r.mode),
            ("listen_overflow", Some("accept_queue_full"))
        );
        assert_eq!((r.addr.as_deref(), r.port), (Some("127.0.0.1"), Some(9)));
        assert_eq!(r.state.as_deref(), Some("LISTEN"));
        let ev = r.evidence.as_ref().unwrap();
        assert_eq!(
            (ev["accept_queue"].as_u64(), ev["accept_queue_max"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(ev["stage"], "SYN");
        assert_eq!(
            r.message,
            "accept queue full on 127.0.0.1:9 (2 waiting for accept(), backlog 1): the kernel \
             dropped the SYN (the client will retry it) from 127.0.0.2:40000"
        );
        assert!(r.advice.unwrap().contains("listen() backlog (1)"));
        // The same overflow as a drop with the kernel's reason (6.18).
        let k = Kallsyms::parse("ffffffff81a00000 T tcp_v4_rcv\n");
        let drop = DropEvent {
            reason: Some(Reason {
                value: 9,
                name: Some("TCP_LISTEN_OVERFLOW".into()),
            }),
            location: 0xffffffff81a00091,
            flow: Some(flow()),
            mark: None,
            tcp_ts: None,
            tcp_drop: false,
            sock: Some(listener()),
        };
        let r = families::drop::drop_record(&drop, &k);
        assert_eq!((r.kind, r.family), ("listen_overflow", Some("queue_full")));
        assert_eq!(r.port, Some(9));
        assert!(
            r.message
                .starts_with("accept queue full on 127.0.0.1:9 (2 waiting"),
            "{}",
            r.message
        );
        // Without the socket (no rx_sk), the packet's destination is the listener.
        let r = families::drop::drop_record(
            &DropEvent {
                sock: None,
                ..drop.clone()
            },
            &k,
        );
        assert_eq!(
            (r.kind, r.port, r.evidence),
            ("listen_overflow", None, None)
        );
        assert!(
            r.message
                .starts_with("accept queue full on 127.0.0.1:9: dropped"),
            "{}",
            r.message
        );
        // A full receive buffer.
        let udp = DropEvent {
            reason: Some(Reason {
                value: 6,
                name: Some("SOCKET_RCVBUFF".into()),
            }),
            ..drop
        };
        let r = families::drop::drop_record(&udp, &k);
        assert_eq!((r.kind, r.mode), ("drop", Some("rcvbuf_full")));
        let ev = r.evidence.unwrap();
        assert_eq!(
            (ev["rmem_alloc"].as_u64(), ev["rcvbuf"].as_u64()),
            (Some(6912), Some(8192))
        );
        assert!(r
            .message
            .contains("the receive buffer of 127.0.0.1:9 is full (6912 of 8192 bytes)"));
        assert!(r.advice.unwrap().contains("SO_RCVBUF"));
    }

    #[test]
    fn oom_records_are_about_the_victim() {
        let e = OomEvent {
            pid: 4242,
            comm: Some(b"ja\nva".to_vec()),
            total_vm_kb: Some(99999),
            anon_rss_kb: Some(30720),
            file_rss_kb: Some(1),
            shmem_rss_kb: Some(0),
            uid: Some(1000),
            oom_score_adj: Some(-100),
        };
        let d = Decoded {
            netns: None,
            ts_ns: 0,
            pid: 1,
            comm: b"allocator".to_vec(),
            fold: Default::default(),
            event: KernelEvent::Oom(e.clone()),
        };
        let r = from_event(&d, 0, &Kallsyms::default());
        assert_eq!(
            (r.kind, r.family, r.mode),
            ("oom", Some("oom_stall"), Some("oom_stall"))
        );
        assert_eq!((r.pid, r.comm.as_deref()), (Some(4242), Some("ja\\x0ava")));
        assert_eq!(
            r.evidence.as_ref().unwrap()["anon_rss_kb"].as_u64(),
            Some(30720)
        );
        assert_eq!(
            r.message,
            "the OOM killer chose pid 4242 (ja\\x0ava) to kill: anon-rss 30720 kB, total-vm 99999 kB"
        );
        // 5.10: the pid alone.
        let bare = OomEvent {
            comm: None,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            uid: None,
            oom_score_adj: None,
            ..e
        };
        let r = families::oom::oom_record(&bare);
        assert_eq!(r.message, "the OOM killer chose pid 4242 to kill");
        assert_eq!((r.comm, r.evidence), (None, None));
    }

    #[test]
    fn proc_details_complete_an_oom_record() {
        let mut r = families::oom::oom_record(&OomEvent {
            pid: 77,
            comm: None,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            uid: None,
            oom_score_adj: None,
        });
        add_process(&mut r, Some(b"hog\x1b"), Some("/netprobe-test".into()));
        assert_eq!(r.comm.as_deref(), Some("hog\\x1b"));
        assert_eq!(r.cgroup.as_deref(), Some("/netprobe-test"));
        assert_eq!(
            r.message,
            "the OOM killer chose pid 77 (hog\\x1b) to kill, in cgroup /netprobe-test"
        );
        // The kernel's name wins over /proc's.
        let mut r = Record {
            pid: Some(5),
            comm: Some("java".into()),
            message: "the OOM killer chose pid 5 (java) to kill".into(),
            ..Record::default()
        };
        add_process(&mut r, Some(b"other"), None);
        assert_eq!(r.comm.as_deref(), Some("java"));
        assert_eq!(r.message, "the OOM killer chose pid 5 (java) to kill");
    }

    #[test]
    fn symptoms_alone_and_inside_an_oom_window() {
        let e = SocketEvent {
            flow: Some(flow()),
            state: None,
            errno: Some(-110),
        };
        let mut r = families::symptoms::symptom_record(&e, false);
        assert_eq!(
            (r.kind, r.family, r.reason.as_deref()),
            ("socket_error", Some("other"), Some("ETIMEDOUT"))
        );
        assert_eq!(
            r.message,
            "socket error ETIMEDOUT on TCP 127.0.0.2:40000 -> 127.0.0.1:9: the connection timed out"
        );
        attribute_to_oom(&mut r, 4242, 3, "global_kill");
        assert_eq!((r.family, r.mode), (Some("oom_stall"), Some("oom_stall")));
        assert!(r.message.ends_with(
            ", 3 s after the OOM kill of pid 4242, which stalled the node (a global kill: the \
             node ran out of memory, not one cgroup)"
        ));
        assert_eq!(r.evidence.as_ref().unwrap()["oom_victim_pid"], 4242);
        assert_eq!(
            r.evidence.as_ref().unwrap()["stall_evidence"],
            "global_kill"
        );
        let r = families::symptoms::symptom_record(
            &SocketEvent {
                state: Some(1),
                errno: None,
                ..e
            },
            true,
        );
        assert_eq!(
            (r.kind, r.state.as_deref()),
            ("retransmit", Some("ESTABLISHED"))
        );
        assert_eq!(
            r.message,
            "retransmitted a segment on TCP 127.0.0.2:40000 -> 127.0.0.1:9"
        );
        let s = retransmit_summary(12, 60);
        assert_eq!((s.kind, s.count), ("retransmit", Some(12)));
        assert_eq!(errno_name(999), None);
    }
}
