//! `--metrics ADDR`: Prometheus text exposition of what the daemon wrote.
//! Every record goes through `observe` (sink::Output), so the figures are
//! those of the records: events by kind, family, mode and reason (repeats
//! folded into incidents included), lost events by cause, probe state, and
//! the daemon's own CPU and memory.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::AbortHandle,
};

use crate::{kernel::tracer::ProgramCost, pipeline::record::Record};

/// `9464` and `:9464` bind to loopback; `0.0.0.0:9464`, `[::]:9464` or an
/// address of the node expose the endpoint.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("`{s}` is not a port or an address:port (e.g. 9464, 127.0.0.1:9464, [::1]:9464)")
    })
}

type EventKey = (&'static str, String, String, String, &'static str);

#[derive(Debug, Default, Clone)]
struct State {
    /// (kind, family, mode, reason, source) -> events.
    events: BTreeMap<EventKey, u64>,
    /// cause -> events lost.
    lost: BTreeMap<&'static str, u64>,
    /// kind -> records written.
    records: BTreeMap<&'static str, u64>,
    /// (probe, hook) -> attached.
    probes: BTreeMap<(String, String), bool>,
    ready: bool,
    kernel: KernelCost,
}

/// What netprobe's programs cost the kernel, read once a second.
#[derive(Debug, Default, Clone)]
pub struct KernelCost {
    /// `kernel.bpf_stats_enabled` (None: this kernel has no such sysctl).
    pub stats_enabled: Option<bool>,
    /// Each program's runs and run time, as the kernel counts them while
    /// the sysctl is 1, and its skipped runs where the kernel counts them.
    pub programs: Vec<ProgramCost>,
    /// The most bytes the ring buffer has held unread, and its size.
    pub ring_buffer: Option<(u64, u64)>,
    /// Records the kernel wrote per service (new flows came too fast to
    /// fold per flow), and per peer (new services did too: a scan).
    pub per_service_records: u64,
    pub per_peer_records: u64,
}

pub struct Metrics {
    state: Mutex<State>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            state: Mutex::default(),
            started: Instant::now(),
        }
    }
}

/// What a `lost` record's detail says was lost, as a label.
fn lost_cause(detail: &str) -> &'static str {
    if detail.contains("ring buffer") {
        "ringbuf_full"
    } else if detail.contains("decoded") {
        "undecodable"
    } else if detail.contains("journald") {
        "journald_unreachable"
    } else if detail.contains("stopped") {
        "shutdown"
    } else {
        "other"
    }
}

impl Metrics {
    pub fn observe(&self, r: &Record) {
        let Ok(mut s) = self.state.lock() else { return };
        *s.records.entry(r.kind).or_default() += 1;
        match r.kind {
            "lost" => {
                *s.lost
                    .entry(lost_cause(r.detail.as_deref().unwrap_or("")))
                    .or_default() += r.count.unwrap_or(1)
            }
            "probe" => {
                let key = (
                    r.probe.clone().unwrap_or_default(),
                    r.hook.clone().unwrap_or_default(),
                );
                s.probes.insert(key, r.status == Some("attached"));
            }
            "ready" => s.ready = true,
            _ => {}
        }
        let Some(mode) = r.mode else { return };
        let counters = r.evidence_source() == Some("counters");
        // The first event of an incident was counted when it was written.
        let n = match (r.kind, r.count) {
            // An OOM window's incident sums events counted as they came.
            ("incident", _) if r.event == Some("oom") || mode == "oom_stall" => 0,
            ("incident", Some(c)) => c.saturating_sub(1),
            // Counter deltas, the minute's retransmissions and a record
            // standing for repeats counted in the kernel are sums.
            (_, Some(c)) => c,
            _ => 1,
        };
        if n == 0 {
            return;
        }
        // An incident's events are of its first event's kind (the message
        // names it); the mode says what they were.
        let key = (
            if r.kind == "incident" {
                "incident"
            } else {
                r.kind
            },
            r.family.unwrap_or("").to_string(),
            mode.to_string(),
            r.reason.clone().unwrap_or_default(),
            if counters { "counters" } else { "probe" },
        );
        *s.events.entry(key).or_default() += n;
    }

    /// The kernel's figures for netprobe's programs, now.
    pub fn set_kernel_cost(&self, cost: KernelCost) {
        let Ok(mut s) = self.state.lock() else { return };
        s.kernel = cost;
    }

    pub fn kernel_cost(&self) -> KernelCost {
        match self.state.lock() {
            Ok(s) => s.kernel.clone(),
            Err(p) => p.into_inner().kernel.clone(),
        }
    }

    /// Events by mode (incidents' repeats included), and events lost.
    pub fn totals(&self) -> (BTreeMap<String, u64>, u64) {
        let s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut by_mode = BTreeMap::new();
        for ((_, _, mode, _, _), n) in &s.events {
            *by_mode.entry(mode.clone()).or_default() += n;
        }
        (by_mode, s.lost.values().sum())
    }

    /// The exposition (OpenMetrics text, which Prometheus reads as it
    /// reads its own format), with the process's figures read now.
    pub fn render(&self) -> String {
        let snapshot = {
            let s = match self.state.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            Snapshot {
                state: s.clone(),
                uptime: self.started.elapsed().as_secs_f64(),
                usage: own_usage(),
            }
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The figures of one scrape, encoded by prometheus-client (names, label
/// escaping, HELP and TYPE lines, `_total` on counters).
#[derive(Debug)]
struct Snapshot {
    state: State,
    uptime: f64,
    usage: Option<(f64, u64)>,
}

/// Every cause a `lost` record can name: each is exposed, at 0 until it
/// happens.
const LOST_CAUSES: [&str; 5] = [
    "ringbuf_full",
    "undecodable",
    "journald_unreachable",
    "shutdown",
    "other",
];

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(
            "netprobe_events",
            "Kernel events by record kind, failure family, mode and kernel reason; source is probe (eBPF) or counters (procfs deltas).",
            None,
            MetricType::Counter,
        )?;
        for ((kind, fam, mode, reason, source), n) in &self.state.events {
            let labels = [
                ("kind", *kind),
                ("family", fam.as_str()),
                ("mode", mode.as_str()),
                ("reason", reason.as_str()),
                ("source", *source),
            ];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = enc.encode_descriptor(
            "netprobe_lost_events",
            "Events that did not become records, by cause (each also written as a `lost` record).",
            None,
            MetricType::Counter,
        )?;
        for cause in LOST_CAUSES {
            let n = self.state.lost.get(cause).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&[("cause", cause)])?)?;
        }
        let mut family = enc.encode_descriptor(
            "netprobe_records",
            "Records written, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in &self.state.records {
            ConstCounter::new(*n).encode(family.encode_family(&[("kind", *kind)])?)?;
        }
        let mut family = enc.encode_descriptor(
            "netprobe_probe_attached",
            "1 when the probe is attached, 0 when it is skipped (the probe record says why).",
            None,
            MetricType::Gauge,
        )?;
        for ((probe, hook), up) in &self.state.probes {
            let labels = [("probe", probe.as_str()), ("hook", hook.as_str())];
            ConstGauge::new(i64::from(*up)).encode(family.encode_family(&labels)?)?;
        }
        ConstGauge::new(i64::from(self.state.ready)).encode(enc.encode_descriptor(
            "netprobe_ready",
            "1 once every probe that can attach has.",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(on) = self.state.kernel.stats_enabled {
            ConstGauge::new(i64::from(on)).encode(enc.encode_descriptor(
                "netprobe_bpf_stats_enabled",
                "kernel.bpf_stats_enabled: 1 while the kernel counts each program's runs and run time (netprobe_program_*).",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let mut runs = enc.encode_descriptor(
            "netprobe_program_runs",
            "Runs of each of netprobe's kernel programs, counted by the kernel while kernel.bpf_stats_enabled is 1.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.state.kernel.programs {
            ConstCounter::new(p.runs)
                .encode(runs.encode_family(&[("program", p.program.as_str())])?)?;
        }
        let mut time = enc.encode_descriptor(
            "netprobe_program_run_seconds",
            "Time the kernel spent in each of netprobe's programs, counted while kernel.bpf_stats_enabled is 1.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.state.kernel.programs {
            ConstCounter::new(p.run_ns as f64 / 1e9)
                .encode(time.encode_family(&[("program", p.program.as_str())])?)?;
        }
        if self
            .state
            .kernel
            .programs
            .iter()
            .any(|p| p.misses.is_some())
        {
            let mut missed = enc.encode_descriptor(
                "netprobe_program_misses",
                "Runs of each of netprobe's kernel programs that the kernel skipped because another BPF program was running on that CPU (recursion_misses; kernels from 6.7 count them for kprobes and tracepoints; absent where they are not counted).",
                None,
                MetricType::Counter,
            )?;
            for p in &self.state.kernel.programs {
                if let Some(n) = p.misses {
                    ConstCounter::new(n)
                        .encode(missed.encode_family(&[("program", p.program.as_str())])?)?;
                }
            }
        }
        if let Some((peak, size)) = self.state.kernel.ring_buffer {
            ConstGauge::new(i64::try_from(peak).unwrap_or(i64::MAX)).encode(
                enc.encode_descriptor(
                    "netprobe_ring_buffer_peak_bytes",
                    "The most bytes the ring buffer has held unread since netprobe started (sampled as records are written); events are lost once it reaches netprobe_ring_buffer_size_bytes.",
                    None,
                    MetricType::Gauge,
                )?,
            )?;
            ConstGauge::new(i64::try_from(size).unwrap_or(i64::MAX)).encode(
                enc.encode_descriptor(
                    "netprobe_ring_buffer_size_bytes",
                    "The ring buffer's size (--ring-buffer).",
                    None,
                    MetricType::Gauge,
                )?,
            )?;
        }
        ConstCounter::new(self.state.kernel.per_service_records).encode(enc.encode_descriptor(
            "netprobe_per_service_records",
            "Records the kernel programs wrote per service rather than per flow: new flows came faster than 50 per 100 ms on a CPU (a SYN flood from spoofed sources, a scan), and were counted per service, their sources in a sketch.",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(self.state.kernel.per_peer_records).encode(enc.encode_descriptor(
            "netprobe_per_peer_records",
            "Records the kernel programs wrote per peer rather than per service: new services came faster than 50 per 100 ms on a CPU as well (a port scan), and were counted per peer, their ports in a sketch.",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(self.uptime).encode(enc.encode_descriptor(
            "netprobe_uptime_seconds",
            "Seconds since the daemon started.",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some((cpu, rss)) = self.usage {
            ConstCounter::new(cpu).encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the daemon.",
                None,
                MetricType::Counter,
            )?)?;
            ConstGauge::new(rss as i64).encode(enc.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the daemon.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// CPU seconds (user + system) and resident bytes of this process.
pub fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    usage_of(&stat, &statm)
}

/// From /proc/PID/stat and /proc/PID/statm (parsed by procfs).
pub fn usage_of(stat: &str, statm: &str) -> Option<(f64, u64)> {
    use procfs::FromRead as _;
    let stat = procfs::process::Stat::from_read(stat.as_bytes()).ok()?;
    let statm = procfs::process::StatM::from_read(statm.as_bytes()).ok()?;
    let hz = procfs::ticks_per_second().max(1) as f64;
    Some((
        (stat.utime + stat.stime) as f64 / hz,
        statm.resident * procfs::page_size(),
    ))
}

/// Binds the endpoint (done before privileges are dropped, so a port
/// below 1024 works; a taken port is an error at start).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Clients served at once. One more evicts the oldest, so idle or slow
/// clients can delay a new one by no more than a request takes.
pub const MAX_CLIENTS: usize = 64;
/// A client's whole exchange (request head in, exposition out) must end
/// within this; a slow or idle one is closed.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// OpenMetrics text, as prometheus-client encodes it: for scrapers that ask
/// for it (Prometheus does, in its `Accept` header).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for everyone else (`curl`, and `promtool check
/// metrics`, which reads only this one).
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// Serves `GET /metrics` on the daemon's event loop, each client a task
/// of its own (must be called inside the tokio runtime).
pub fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        let mut clients: VecDeque<AbortHandle> = VecDeque::with_capacity(MAX_CLIENTS);
        loop {
            let c = match listener.accept().await {
                Ok((c, _)) => c,
                // Out of descriptors or the like: try again shortly rather
                // than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            clients.retain(|h| !h.is_finished());
            if clients.len() >= MAX_CLIENTS {
                if let Some(oldest) = clients.pop_front() {
                    oldest.abort();
                }
            }
            let m = metrics.clone();
            let task = tokio::spawn(async move {
                let _ = tokio::time::timeout(CLIENT_DEADLINE, answer(c, &m)).await;
            });
            clients.push_back(task.abort_handle());
        }
    });
    Ok(())
}

/// Reads one request head and answers it.
async fn answer(mut c: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let mut req = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_HEAD {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let (status, body, head_only, kind) = respond(&req, metrics);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await?;
    if !head_only {
        c.write_all(body.as_bytes()).await?;
    }
    c.shutdown().await
}

/// Whether a request head's `Accept` header asks for OpenMetrics.
fn wants_openmetrics(req: &[u8]) -> bool {
    req.split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        line.strip_prefix("accept:")
            .is_some_and(|v| v.contains("application/openmetrics-text"))
    })
}

/// OpenMetrics text as the classic text format (0.0.4): a counter's HELP
/// and TYPE lines name its `_total` samples, and there is no `# UNIT` or
/// `# EOF` line. The samples themselves are the same.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The status, body, whether only the head is sent, and the body's content
/// type, for a request head.
fn respond(req: &[u8], metrics: &Metrics) -> (&'static str, String, bool, &'static str) {
    let plain = "text/plain; charset=utf-8";
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !version.starts_with(b"HTTP/") {
        return (
            "400 Bad Request",
            "not an HTTP request\n".into(),
            false,
            plain,
        );
    }
    let head_only = method == b"HEAD";
    match (method, path) {
        (b"GET" | b"HEAD", b"/metrics" | b"/") if wants_openmetrics(req) => {
            ("200 OK", metrics.render(), head_only, OPENMETRICS)
        }
        (b"GET" | b"HEAD", b"/metrics" | b"/") => {
            ("200 OK", classic(&metrics.render()), head_only, CLASSIC)
        }
        (b"GET" | b"HEAD", _) => (
            "404 Not Found",
            "not found: try /metrics\n".into(),
            head_only,
            plain,
        ),
        _ => ("405 Method Not Allowed", "only GET\n".into(), false, plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let m = Metrics::default();
        let mut drop = Record::new("drop", "d".into());
        drop.family = Some("reset");
        drop.mode = Some("no_listener");
        m.observe(&drop);
        let om = m.render();
        let text = classic(&om);
        assert!(om.contains("# TYPE netprobe_events counter"), "{om}");
        assert!(
            text.contains("# TYPE netprobe_events_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP netprobe_events_total "), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Gauges keep their names; every sample line is as it was.
        assert!(text.contains("# TYPE netprobe_ready gauge\n"), "{text}");
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(samples(&text)
            .iter()
            .any(|l| l.starts_with("netprobe_events_total{")));
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let m = Metrics::default();
        // Prometheus 2.42's scrape header.
        let prom = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n";
        let (status, body, _, kind) = respond(prom, &m);
        assert_eq!((status, kind), ("200 OK", OPENMETRICS));
        assert!(body.ends_with("# EOF\n"), "{body}");
        let curl =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
        let (status, body, _, kind) = respond(curl, &m);
        assert_eq!((status, kind), ("200 OK", CLASSIC));
        assert!(!body.contains("# EOF"), "{body}");
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_addr(":9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_addr("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse_addr("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_addr("localhost:x")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_addr("70000").is_err());
    }

    #[test]
    fn events_incidents_counters_lost_and_probes() {
        let m = Metrics::default();
        let mut drop = Record::new("drop", "d".into());
        drop.family = Some("reset");
        drop.mode = Some("no_listener");
        drop.reason = Some("NO_SOCKET".into());
        m.observe(&drop);
        let mut inc = drop.clone();
        inc.kind = "incident";
        inc.count = Some(5);
        m.observe(&inc);
        let mut ctr = Record::new("listen_overflow", "c".into());
        ctr.family = Some("queue_full");
        ctr.mode = Some("accept_queue_full");
        ctr.count = Some(7);
        ctr.evidence("source", "counters");
        m.observe(&ctr);
        m.observe(&Record::lost(3, "the ring buffer was full"));
        // A record that could not fold stands for the repeats the kernel
        // counted of it.
        let mut many = drop.clone();
        many.kind = "reset_sent";
        many.count = Some(6);
        m.observe(&many);
        m.observe(&Record::lost(
            2,
            "records could not be decoded or handled (x)",
        ));
        m.observe(&Record::probe(
            "drops",
            "tracepoint/skb/kfree_skb",
            Ok(None),
        ));
        m.observe(&Record::probe("oom", "x\"y\n", Err("no".into())));
        let text = m.render();
        for want in [
            "netprobe_events_total{kind=\"drop\",family=\"reset\",mode=\"no_listener\",reason=\"NO_SOCKET\",source=\"probe\"} 1\n",
            "netprobe_events_total{kind=\"incident\",family=\"reset\",mode=\"no_listener\",reason=\"NO_SOCKET\",source=\"probe\"} 4\n",
            "netprobe_events_total{kind=\"listen_overflow\",family=\"queue_full\",mode=\"accept_queue_full\",reason=\"\",source=\"counters\"} 7\n",
            "netprobe_lost_events_total{cause=\"ringbuf_full\"} 3\n",
            "netprobe_lost_events_total{cause=\"undecodable\"} 2\n",
            "netprobe_events_total{kind=\"reset_sent\",family=\"reset\",mode=\"no_listener\",reason=\"NO_SOCKET\",source=\"probe\"} 6\n",
            "netprobe_probe_attached{probe=\"drops\",hook=\"tracepoint/skb/kfree_skb\"} 1\n",
            "netprobe_probe_attached{probe=\"oom\",hook=\"x\\\"y\\n\"} 0\n",
            "netprobe_records_total{kind=\"drop\"} 1\n",
            "netprobe_ready 0\n",
            "# TYPE process_resident_memory_bytes gauge\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn usage_from_real_proc_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/procfs/6.18");
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        let statm = std::fs::read_to_string(dir.join("statm")).unwrap();
        // The real file, with 250 + 50 ticks of CPU and a command with
        // spaces and parentheses, which must not shift the fields.
        let (_, rest) = stat.rsplit_once(") ").unwrap();
        let mut f: Vec<&str> = rest.split(' ').collect();
        (f[11], f[12]) = ("250", "50");
        let hostile = format!("4242 (a b) c)) {}", f.join(" "));
        let (cpu, rss) = usage_of(&hostile, &statm).unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((cpu - 300.0 / hz).abs() < 1e-9, "{cpu}");
        assert_eq!(
            rss,
            449 * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
        );
        assert!(usage_of("garbage", "").is_none());
        assert!(usage_of(&stat, "").is_none());
        assert!(own_usage().is_some());
    }

    /// The endpoint on an event loop of its own thread, as the daemon runs
    /// it.
    fn endpoint() -> SocketAddr {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                serve(l, Arc::new(Metrics::default())).unwrap();
                std::future::pending::<()>().await
            })
        });
        addr
    }

    fn exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(CLIENT_DEADLINE * 2)).unwrap();
        c.write_all(req).unwrap();
        let mut s = Vec::new();
        c.read_to_end(&mut s).unwrap();
        String::from_utf8_lossy(&s).into_owned()
    }

    use std::io::{Read, Write};

    #[test]
    fn serves_get_metrics_and_refuses_the_rest() {
        let addr = endpoint();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("netprobe_uptime_seconds "), "{ok}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("netprobe_uptime_seconds"), "{head}");
        assert!(exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Garbage longer than a head is answered at once, not waited on.
        let junk = vec![0xffu8; MAX_HEAD + 100];
        assert!(exchange(addr, &junk).starts_with("HTTP/1.1 400"));
        // A taken port is an error at once.
        assert!(bind(addr).is_err());
    }

    #[test]
    fn idle_slow_and_garbage_clients_do_not_delay_another() {
        let addr = endpoint();
        let opened = Instant::now();
        let mut held = Vec::new();
        // Three times the clients served at once, idle.
        for _ in 0..3 * MAX_CLIENTS {
            held.push(std::net::TcpStream::connect(addr).unwrap());
        }
        // Slow ones, a byte of a request each, and garbage without an end.
        for _ in 0..20 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"G").unwrap();
            held.push(c);
            let mut g = std::net::TcpStream::connect(addr).unwrap();
            g.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff]).unwrap();
            held.push(g);
        }
        let started = Instant::now();
        for _ in 0..10 {
            let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        }
        let took = started.elapsed();
        eprintln!("10 scrapes beside {} held clients: {took:?}", held.len());
        // Served, not left to the held clients' deadline.
        assert!(took < CLIENT_DEADLINE, "{took:?}");
        // The oldest held clients were closed to make room, before their
        // deadline.
        let mut first = &held[0];
        let mut buf = [0u8; 1];
        first.set_read_timeout(Some(CLIENT_DEADLINE * 2)).unwrap();
        assert_eq!(
            first.read(&mut buf).unwrap_or(0),
            0,
            "an evicted client is closed"
        );
        assert!(
            opened.elapsed() < CLIENT_DEADLINE,
            "closed by its deadline, not evicted"
        );
    }
}
