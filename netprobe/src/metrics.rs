//! `--metrics ADDR`: Prometheus text exposition of what the daemon wrote.
//! Every record goes through `observe` (sink::Output), so the figures are
//! those of the records: events by kind, family, mode and reason (repeats
//! folded into incidents included), lost events by cause, probe state, and
//! the daemon's own CPU and memory.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::record::Record;

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

#[derive(Default)]
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

    /// The exposition, with the process's figures read now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        family(&mut out,
            "netprobe_events_total",
            "counter",
            "Kernel events by record kind, failure family, mode and kernel reason; source is probe (eBPF) or counters (procfs deltas).",
        );
        for ((kind, fam, mode, reason, source), n) in &s.events {
            let _ = writeln!(
                out,
                "netprobe_events_total{{kind=\"{}\",family=\"{}\",mode=\"{}\",reason=\"{}\",source=\"{source}\"}} {n}",
                label(kind),
                label(fam),
                label(mode),
                label(reason)
            );
        }
        family(
            &mut out,
            "netprobe_lost_events_total",
            "counter",
            "Events that did not become records, by cause (each also written as a `lost` record).",
        );
        for cause in [
            "ringbuf_full",
            "undecodable",
            "journald_unreachable",
            "shutdown",
            "other",
        ] {
            let n = s.lost.get(cause).copied().unwrap_or(0);
            let _ = writeln!(out, "netprobe_lost_events_total{{cause=\"{cause}\"}} {n}");
        }
        family(
            &mut out,
            "netprobe_records_total",
            "counter",
            "Records written, by kind.",
        );
        for (kind, n) in &s.records {
            let _ = writeln!(
                out,
                "netprobe_records_total{{kind=\"{}\"}} {n}",
                label(kind)
            );
        }
        family(
            &mut out,
            "netprobe_probe_attached",
            "gauge",
            "1 when the probe is attached, 0 when it is skipped (the probe record says why).",
        );
        for ((probe, hook), up) in &s.probes {
            let _ = writeln!(
                out,
                "netprobe_probe_attached{{probe=\"{}\",hook=\"{}\"}} {}",
                label(probe),
                label(hook),
                u8::from(*up)
            );
        }
        family(
            &mut out,
            "netprobe_ready",
            "gauge",
            "1 once every probe that can attach has.",
        );
        let _ = writeln!(out, "netprobe_ready {}", u8::from(s.ready));
        drop(s);
        family(
            &mut out,
            "netprobe_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(
            out,
            "netprobe_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        if let Some((cpu, rss)) = own_usage() {
            family(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the daemon.",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {cpu:.2}");
            family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the daemon.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value escaped as the text format wants (backslash, quote,
/// newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// CPU seconds (user + system) and resident bytes of this process.
pub fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    usage_of(&stat, &statm)
}

/// From /proc/PID/stat and /proc/PID/statm.
pub fn usage_of(stat: &str, statm: &str) -> Option<(f64, u64)> {
    // Fields after the command, which is in parentheses and may hold any
    // character: utime and stime are the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks as f64 / hz, rss_pages * page))
}

/// Binds the endpoint (done before privileges are dropped, so a port
/// below 1024 works; a taken port is an error at start).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves `GET /metrics` from a thread, one connection at a time.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("netprobe-metrics".into())
        .spawn(move || {
            for c in listener.incoming().flatten() {
                let _ = answer(c, &metrics);
            }
        })?;
    Ok(())
}

fn answer(mut c: TcpStream, metrics: &Metrics) -> io::Result<()> {
    // A slow or hostile client cannot hold the endpoint for long.
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics" | b"/") => ("200 OK", metrics.render()),
        (b"GET" | b"HEAD", _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    if method != b"HEAD" {
        c.write_all(body.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A command with spaces and parentheses must not shift the fields.
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 300 0 0 0 250 50 0 0 20 0 3 0 100 10000000 500 18446744073709551615";
        let (cpu, rss) = usage_of(stat, "2500 500 300 1 0 400 0\n").unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((cpu - 300.0 / hz).abs() < 1e-9, "{cpu}");
        assert_eq!(
            rss,
            500 * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
        );
        assert!(usage_of("garbage", "").is_none());
        assert!(own_usage().is_some());
    }

    #[test]
    fn serves_get_metrics_and_refuses_the_rest() {
        let m = Arc::new(Metrics::default());
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        serve(l, m).unwrap();
        let get = |req: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("netprobe_uptime_seconds "), "{ok}");
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A taken port is an error at once.
        assert!(bind(addr).is_err());
    }
}
