//! The catalogue of failure modes (design.md's vocabulary): for each mode,
//! its family and severity, what it means, how netprobe detects it, what to
//! change, and the kernel's drop-reason names, drop locations and counters
//! that raise it. Classification (`classify`), the records' general advice
//! and `netprobe explain` all read this one table.

use crate::families::classify::Mode;

/// How bad a mode is for the node's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: a reset or an unmapped drop, often normal.
    Notice,
    /// Packets or connections are being lost.
    Warning,
    /// The node itself is in trouble (the OOM killer ran).
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

pub struct Entry {
    pub mode: Mode,
    pub severity: Severity,
    /// One line: what happened.
    pub title: &'static str,
    pub meaning: &'static str,
    pub detection: &'static str,
    /// What to change, in general (records add their flow or listener).
    pub advice: &'static str,
    /// The kernel's drop-reason names (kfree_skb, 5.17+) for this mode.
    pub reasons: &'static [&'static str],
    /// Functions a drop happens in, on kernels without reasons, that
    /// mean this mode and nothing else.
    pub locations: &'static [&'static str],
    /// The procfs counters that raise it when no probe sees the event.
    pub counters: &'static [&'static str],
}

const fn m(family: &'static str, mode: &'static str) -> Mode {
    Mode { family, mode }
}

pub const ENTRIES: &[Entry] = &[
    Entry {
        mode: m("tw_recycle", "tw_recycle"),
        severity: Severity::Warning,
        title: "TCP timestamp (PAWS) rejection",
        meaning: "A segment carried a TCP timestamp older than the last one the kernel saw on its \
                  connection or from its peer, and was dropped (PAWS, RFC 7323). Behind NAT many \
                  clients share one address with different timestamp clocks; with \
                  net.ipv4.tcp_tw_recycle=1 (kernels before 4.12) their SYNs are dropped \
                  silently, and the clients only see connect timeouts.",
        detection: "Drop reasons TCP_RFC7323_PAWS, _PAWS_ACK, _TW_PAWS and _TSECR (5.17+); the \
                    PAWSPassive, PAWSActive, PAWSEstab and PAWSTimewait counters of each network \
                    namespace, with tcp_timestamps and tcp_tw_recycle.",
        advice:
            "Set net.ipv4.tcp_tw_recycle=0 where it exists (4.11 and older). Look for NAT or a \
                 load balancer in front of this host that mixes clients with different timestamp \
                 clocks; turning TCP timestamps off on those clients is the last resort.",
        reasons: &[
            "TCP_RFC7323_PAWS",
            "TCP_RFC7323_PAWS_ACK",
            "TCP_RFC7323_TW_PAWS",
            "TCP_RFC7323_TSECR",
        ],
        locations: &[],
        counters: &["PAWSPassive", "PAWSActive", "PAWSEstab", "PAWSTimewait"],
    },
    Entry {
        mode: m("queue_full", "accept_queue_full"),
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
        mode: m("queue_full", "syn_queue_full"),
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
    Entry {
        mode: m("queue_full", "rcvbuf_full"),
        severity: Severity::Warning,
        title: "socket receive buffer full",
        meaning: "A socket's receive buffer was full (or TCP memory was short), so arriving data \
                  was dropped: the application does not read fast enough, or its buffer is too \
                  small for the rate.",
        detection:
            "Drop reasons SOCKET_RCVBUFF, PROTO_MEM, TCP_ZEROWINDOW and TCP_OFO_QUEUE_PRUNE \
                    (with the socket's buffer figures on 6.11+); drops in the UDP queueing \
                    functions on older kernels; the TCPRcvQDrop, TCPZeroWindowDrop and UDP \
                    RcvbufErrors counters.",
        advice: "Find the socket with `ss -tunm` (large Recv-Q, rb near its limit), make its \
                 application read faster, or raise its SO_RCVBUF (capped by net.core.rmem_max; \
                 net.ipv4.tcp_rmem for TCP).",
        reasons: &[
            "SOCKET_RCVBUFF",
            "PROTO_MEM",
            "TCP_ZEROWINDOW",
            "TCP_OFO_QUEUE_PRUNE",
        ],
        locations: &[
            "__udp_queue_rcv_skb",
            "__udp6_queue_rcv_skb",
            "udp_queue_rcv_one_skb",
            "udpv6_queue_rcv_one_skb",
        ],
        counters: &["TCPRcvQDrop", "TCPZeroWindowDrop", "RcvbufErrors"],
    },
    Entry {
        mode: m("queue_full", "backlog_full"),
        severity: Severity::Warning,
        title: "socket backlog full",
        meaning: "Segments arrived while the application held its socket, and the socket's \
                  backlog (bounded by its receive buffer) was full, so they were dropped.",
        detection: "Drop reason SOCKET_BACKLOG; the TCPBacklogDrop counter.",
        advice: "The application holds its socket too long or its buffer is small for the rate: \
                 raise SO_RCVBUF (net.ipv4.tcp_rmem), and look for long work done while the \
                 socket is locked.",
        reasons: &["SOCKET_BACKLOG"],
        locations: &[],
        counters: &["TCPBacklogDrop"],
    },
    Entry {
        mode: m("queue_full", "conntrack_table_full"),
        severity: Severity::Warning,
        title: "conntrack table full",
        meaning: "The connection-tracking table was at net.netfilter.nf_conntrack_max and no \
                  entry could be evicted, so packets of new flows were dropped (\"nf_conntrack: \
                  table full, dropping packet\").",
        detection:
            "Kretprobe on __nf_conntrack_alloc failing, which marks the dropped packet (its \
                    record names the flow); the conntrack `drop` counter per namespace, with \
                    nf_conntrack_count and nf_conntrack_max.",
        advice: "Raise net.netfilter.nf_conntrack_max (and nf_conntrack_buckets), or shorten the \
                 timeouts that keep idle entries (nf_conntrack_tcp_timeout_established, \
                 nf_conntrack_udp_timeout); find what opens so many flows with `conntrack -L`.",
        reasons: &[],
        locations: &[],
        counters: &["drop"],
    },
    Entry {
        mode: m("queue_full", "qdisc_full"),
        severity: Severity::Warning,
        title: "device queue (qdisc) full",
        meaning: "A network device's transmit queue discipline was full or over its limit, so it \
                  dropped the packet before it left the host.",
        detection: "Drop reasons QDISC_DROP, QDISC_OVERLIMIT, QDISC_CONGESTED and the fq and cake \
                    limits (5.19+).",
        advice: "See which qdisc drops with `tc -s qdisc show` (dropped, overlimits) in the \
                 namespace where the packet was, and raise its limit, or its rate if it shapes \
                 traffic.",
        reasons: &[
            "QDISC_DROP",
            "QDISC_OVERLIMIT",
            "QDISC_CONGESTED",
            "CAKE_FLOOD",
            "FQ_BAND_LIMIT",
            "FQ_HORIZON_LIMIT",
            "FQ_FLOW_LIMIT",
        ],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: m("queue_full", "cpu_backlog_full"),
        severity: Severity::Warning,
        title: "CPU input backlog full",
        meaning: "Packets arrived faster than a CPU's softirq could process them and its input \
                  backlog (net.core.netdev_max_backlog) was full, so they were dropped before \
                  reaching any socket.",
        detection: "Drop reason CPU_BACKLOG; drops in enqueue_to_backlog on older kernels; the \
                    `dropped` column of /proc/net/softnet_stat (host-wide).",
        advice: "Raise net.core.netdev_max_backlog, spread receive work over CPUs (RSS, RPS), and \
                 look for what keeps that CPU busy (time_squeeze in /proc/net/softnet_stat).",
        reasons: &["CPU_BACKLOG"],
        locations: &["enqueue_to_backlog"],
        counters: &["softnet dropped"],
    },
    Entry {
        mode: m("queue_full", "nic_ring_full"),
        severity: Severity::Warning,
        title: "NIC ring full",
        meaning: "A device's hardware or virtual ring was full, so the packet was dropped.",
        detection: "Drop reason FULL_RING.",
        advice: "Enlarge the device's rings (`ethtool -G`), and check that its interrupts are \
                 spread over CPUs.",
        reasons: &["FULL_RING"],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: m("oom_stall", "oom_stall"),
        severity: Severity::Critical,
        title: "OOM kill stalling the network",
        meaning: "The kernel ran out of memory and killed a process, and the node stalled: \
                  while it reclaims and kills, packet processing and applications stall, so \
                  retransmits and timeouts in that window with no cause of their own are the \
                  OOM's, not the network's.",
        detection: "Tracepoint oom:mark_victim (the victim's pid; name and memory from about \
                    6.9; its memory cgroup from /proc, else from the cgroup whose oom_kill count \
                    went up). A stall needs evidence, named in the record's stall_evidence: a \
                    global kill (no memory cgroup reached its own limit), or retransmits \
                    (tcp:tcp_retransmit_skb) and timeouts (sock:inet_sk_error_report) without a \
                    cause of their own within 60 s of the kill clearly above the rate of the \
                    minutes before. A symptom whose flow shows a cause (a netfilter drop, a \
                    reset, a full queue) keeps that cause.",
        advice: "Fix the memory pressure first: raise the limit of the victim's cgroup or reduce \
                 its use. Timeouts and retransmits around the kill are likely its symptoms; tune \
                 the network only if they persist without OOM kills.",
        reasons: &[],
        locations: &[],
        counters: &["oom_kill"],
    },
    Entry {
        mode: m("oom_stall", "oom_kill"),
        severity: Severity::Warning,
        title: "OOM kill, no network stall seen",
        meaning: "The OOM killer killed a process, but nothing shows that the node stalled: the \
                  kill was confined to a memory cgroup that reached its own limit, and the \
                  network symptoms after it were no more than before (or each had a cause of \
                  its own on its flow). The victim's application lost its process; other \
                  connections on the node are not its victims.",
        detection: "Tracepoint oom:mark_victim; the victim's cgroup from /proc, else from the \
                    cgroup whose oom_kill count went up; confined when a cgroup's `oom` count \
                    (memory.events, cgroup v2) went up with it, or, on v1, when the victim's \
                    cgroup has a memory limit.",
        advice: "Raise the memory limit of the victim's container or cgroup, or find what grew \
                 in it (its memory.stat); the kill alone did not stall the network.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: m("conntrack", "conntrack_insert_failed"),
        severity: Severity::Warning,
        title: "conntrack insert failed",
        meaning: "Conntrack could not insert a new flow's entry and dropped its packet: two \
                  packets of one new flow raced on two CPUs and the clash could not be resolved \
                  (the UDP/53 DNS race behind 5-second lookups in pods: A and AAAA queries leave \
                  from one socket at once), or a hash chain was too long.",
        detection:
            "Kretprobe on __nf_conntrack_confirm returning NF_DROP, which marks the dropped \
                    packet (its record names the flow); the conntrack insert_failed counter \
                    (chainlength for chains too long) per namespace.",
        advice: "For DNS from pods: `options single-request-reopen` (or use-vc) in resolv.conf, \
                 NodeLocal DNSCache, or a kernel with the clash-resolution fixes (5.0+; clashres \
                 counts resolved clashes). When chainlength rises instead, raise \
                 nf_conntrack_buckets.",
        reasons: &[],
        locations: &[],
        counters: &["insert_failed", "chainlength"],
    },
    Entry {
        mode: m("netfilter", "netfilter_drop"),
        severity: Severity::Warning,
        title: "netfilter drop",
        meaning: "A netfilter hook dropped the packet: an nftables or iptables rule, or \
                  conntrack where the kernel could not tell which.",
        detection: "Drop reason NETFILTER_DROP; drops in nf_hook_slow, nft_do_chain or \
                    ipt_do_table on older kernels. Where the conntrack kprobes run, conntrack's \
                    own drops are named conntrack_table_full or conntrack_insert_failed instead.",
        advice:
            "Look for DROP rules matching this flow with `nft list ruleset` or `iptables-save` \
                 in the namespace where the packet was; if none matches, check conntrack \
                 (`conntrack -S`: drop, insert_failed).",
        reasons: &["NETFILTER_DROP"],
        locations: &[
            "nf_hook_slow",
            "nft_do_chain",
            "ipt_do_table",
            "ip6t_do_table",
        ],
        counters: &[],
    },
    Entry {
        mode: m("netfilter", "netfilter_rule_bloat"),
        severity: Severity::Warning,
        title: "netfilter rule bloat",
        meaning: "A network namespace holds far more netfilter rules than it should: far above \
                  the node's other namespaces, above the limit, or growing steadily. Every packet \
                  walks them, so latency and CPU grow with the count; seed 004's node had \
                  180,000 iptables rules against 200-300 on its healthy neighbours, left by a \
                  leak that appended the same rules again and again.",
        detection: "Once a minute in each namespace: nftables rules counted from a netlink dump \
                    (iptables-nft's included), iptables-legacy entries from IPT_SO_GET_INFO per \
                    table. Bloat when a namespace is above `rule_limit` (default 10,000), more \
                    than 10 times the median of the others (and at least 1,000), or grew in \
                    each of the last 6 samples by 1,000 or more in all. Needs CAP_NET_ADMIN.",
        advice: "Find what keeps adding rules: duplicates show with `iptables-save | sort | uniq \
                 -cd | sort -n | tail` (or `nft list ruleset`). A known cause is the k3s/kube-proxy \
                 iptables-version mismatch (iptables-legacy and iptables-nft both in use) that \
                 re-adds its rules on every sync: use one iptables backend on the node, upgrade \
                 the component that leaks, and flush the duplicates.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
    Entry {
        mode: m("reset", "no_listener"),
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
        mode: m("reset", "reset_other"),
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
    Entry {
        mode: m("unreachable", "unreachable"),
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
    },
    Entry {
        mode: m("other", "other"),
        severity: Severity::Notice,
        title: "other drop",
        meaning: "A drop whose reason or location netprobe does not map to a failure mode; the \
                  kernel's own reason name is kept in the record.",
        detection: "Every kfree_skb drop above NOT_SPECIFIED, except QUEUE_PURGE (the queues a destroyed socket still held: the last FIN of every closed connection); before drop reasons (5.17), every kfree_skb except those inside sk_stream_kill_queues (the same purge, known by its addresses in kallsyms).",
        advice: "Look the reason up in the kernel's include/net/dropreason-core.h.",
        reasons: &[],
        locations: &[],
        counters: &[],
    },
];

/// The entry of a mode name (`tw_recycle`, `accept_queue_full`, ...).
pub fn by_mode(mode: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.mode.mode == mode)
}

/// The entry a kernel drop-reason name maps to.
pub fn by_reason(reason: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.reasons.contains(&reason))
}

/// The entry a drop location (function) maps to, on kernels without reasons.
pub fn by_location(function: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.locations.contains(&function))
}

/// The entry of `mode`; every mode classify produces is in the table.
pub fn of(mode: Mode) -> &'static Entry {
    by_mode(mode.mode).unwrap_or(&ENTRIES[ENTRIES.len() - 1])
}

/// `netprobe explain WHAT`: a mode, a kernel drop-reason name (any case),
/// or a counter. `Err` lists what is known.
pub fn explain(what: &str) -> Result<String, String> {
    let key = what.trim();
    let upper = key.to_ascii_uppercase();
    let reason = upper.strip_prefix("SKB_DROP_REASON_").unwrap_or(&upper);
    let (entry, via) = if let Some(e) = by_mode(&key.to_ascii_lowercase()) {
        (e, None)
    } else if let Some(e) = by_reason(reason) {
        (e, Some(format!("drop reason {reason}")))
    } else if let Some(e) = ENTRIES
        .iter()
        .find(|e| e.counters.iter().any(|c| c.eq_ignore_ascii_case(key)))
    {
        (e, Some(format!("counter {key}")))
    } else {
        let modes: Vec<&str> = ENTRIES.iter().map(|e| e.mode.mode).collect();
        return Err(format!(
            "netprobe knows no mode, drop reason or counter called {key:?}; modes: {}",
            modes.join(", ")
        ));
    };
    let mut s = String::new();
    if let Some(via) = via {
        s.push_str(&format!("{via} -> mode {}\n\n", entry.mode.mode));
    }
    s.push_str(&format!(
        "{} ({}, family {}, severity {})\n\n",
        entry.mode.mode,
        entry.title,
        entry.mode.family,
        entry.severity.name()
    ));
    for (head, text) in [
        ("What it means", entry.meaning),
        ("How netprobe detects it", entry.detection),
        ("What to change", entry.advice),
    ] {
        s.push_str(head);
        s.push('\n');
        s.push_str(&wrap(text, 78, "  "));
        s.push('\n');
    }
    if !entry.reasons.is_empty() {
        s.push_str(&format!(
            "Kernel drop reasons: {}\n",
            entry.reasons.join(", ")
        ));
    }
    if !entry.counters.is_empty() {
        s.push_str(&format!("Counters: {}\n", entry.counters.join(", ")));
    }
    Ok(s)
}

/// Words of `text` in lines of at most `width` columns, each indented.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::classify;

    /// Every mode design.md names, with its family.
    const DESIGN: [(&str, &str); 18] = [
        ("tw_recycle", "tw_recycle"),
        ("queue_full", "accept_queue_full"),
        ("queue_full", "syn_queue_full"),
        ("queue_full", "rcvbuf_full"),
        ("queue_full", "backlog_full"),
        ("queue_full", "conntrack_table_full"),
        ("queue_full", "qdisc_full"),
        ("queue_full", "cpu_backlog_full"),
        ("queue_full", "nic_ring_full"),
        ("oom_stall", "oom_stall"),
        ("oom_stall", "oom_kill"),
        ("conntrack", "conntrack_insert_failed"),
        ("netfilter", "netfilter_drop"),
        ("netfilter", "netfilter_rule_bloat"),
        ("reset", "no_listener"),
        ("reset", "reset_other"),
        ("unreachable", "unreachable"),
        ("other", "other"),
    ];

    #[test]
    fn the_catalogue_is_design_mds_vocabulary_once_each() {
        assert_eq!(ENTRIES.len(), DESIGN.len());
        for (family, mode) in DESIGN {
            let e = by_mode(mode).unwrap_or_else(|| panic!("{mode} missing"));
            assert_eq!(e.mode.family, family);
            assert!(!e.meaning.is_empty() && !e.detection.is_empty() && !e.advice.is_empty());
        }
        // A reason or location maps to one mode only.
        let mut seen = std::collections::BTreeSet::new();
        for e in ENTRIES {
            for r in e.reasons.iter().chain(e.locations) {
                assert!(seen.insert(*r), "{r} is in two entries");
            }
        }
    }

    #[test]
    fn reasons_of_real_kernels_map_through_the_catalogue() {
        // Names from the 6.18 format file this project keeps.
        let fmt = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/kernels/6.18/events/skb/kfree_skb/format"),
        )
        .unwrap();
        for e in ENTRIES {
            for r in e.reasons {
                if *r == "FQ_BAND_LIMIT" || *r == "FQ_HORIZON_LIMIT" || *r == "FQ_FLOW_LIMIT" {
                    continue; // newer than 6.18
                }
                assert!(fmt.contains(&format!("\"{r}\"")), "{r} not a 6.18 reason");
                assert_eq!(classify::drop_reason(r), e.mode);
            }
        }
    }

    #[test]
    fn explain_takes_modes_reasons_and_counters() {
        let t = explain("tw_recycle").unwrap();
        assert!(
            t.starts_with(
                "tw_recycle (TCP timestamp (PAWS) rejection, family tw_recycle, severity warning)"
            ),
            "{t}"
        );
        assert!(t.contains("net.ipv4.tcp_tw_recycle=0"));
        assert!(t.lines().all(|l| l.len() <= 100), "{t}");
        let t = explain("skb_drop_reason_tcp_listen_overflow").unwrap();
        assert!(
            t.starts_with("drop reason TCP_LISTEN_OVERFLOW -> mode accept_queue_full\n"),
            "{t}"
        );
        assert!(t.contains("net.core.somaxconn"));
        let t = explain("PAWSPassive").unwrap();
        assert!(
            t.starts_with("counter PAWSPassive -> mode tw_recycle"),
            "{t}"
        );
        let e = explain("bogus\u{1b}[31m").unwrap_err();
        assert!(
            e.contains("no mode, drop reason or counter called \"bogus\\u{1b}[31m\""),
            "{e}"
        );
        assert!(e.contains("conntrack_insert_failed"));
    }
}
