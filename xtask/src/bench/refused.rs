//! Issue 17, outcome 0: what a refused-connection storm costs the clients,
//! and whether the journald output keeps up with it.
//!
//! - The clients' connection rate to a closed port under netprobe against
//!   no tracer, round by round side by side (the order alternates), at a
//!   service port below the clients' ephemeral range and at one above it.
//! - The high-port storm under `--output journald`, the output a node runs
//!   with: what the kernel counted against what netprobe accounted for
//!   (`--metrics`: events and lost), and the journal entries it wrote.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    check_interrupted, interrupted,
    netns::{join, Netns},
    report::{interval, Interval},
    snmp_counts, workload, Bench, Config, StormKind, KERNEL_COUNTS,
};

/// The clients' ephemeral ports in the storm's namespace: the low service
/// port lies below them, the high one above.
const CLIENT_PORTS: &str = "10000 60999";
pub const LOW_PORT: u16 = 8081;
pub const HIGH_PORT: u16 = 61000;
/// Where the journald run serves its metrics.
const METRICS: &str = "127.0.0.1:19466";

/// Refused connections per second with no tracer and under netprobe, one
/// figure per round, at one service port.
#[derive(Debug, Clone)]
pub struct ConnectRates {
    pub port: u16,
    pub none: Vec<f64>,
    pub netprobe: Vec<f64>,
    /// With programs that do nothing on netprobe's tracepoints: the floor.
    pub empty: Vec<f64>,
}

impl ConnectRates {
    /// netprobe's rate over no tracer's, paired by round.
    pub fn ratio(&self) -> Option<Interval> {
        self.ratio_of(&self.netprobe)
    }

    /// The empty programs' rate over no tracer's: the best any program on
    /// these tracepoints can do.
    pub fn floor(&self) -> Option<Interval> {
        self.ratio_of(&self.empty)
    }

    fn ratio_of(&self, rates: &[f64]) -> Option<Interval> {
        let r: Vec<f64> = rates
            .iter()
            .zip(&self.none)
            .filter(|(_, n)| **n > 0.0)
            .map(|(p, n)| p / n)
            .collect();
        interval(&r)
    }
}

/// Connections refused by two threads for `dur`, to `port`, and the
/// seconds they took.
fn refuse_twice(ns: &Netns, port: u16, dur: Duration) -> Result<(u64, f64)> {
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let threads = [
        ns.spawn("bench-refused", move || workload::refuse_for(dur, |_| to))?,
        ns.spawn("bench-refused", move || workload::refuse_for(dur, |_| to))?,
    ];
    let mut n = 0;
    for t in threads {
        n += join(t)?;
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// Connections refused per second by two threads for `dur`, to `port`.
fn refused_rate(ns: &Netns, port: u16, dur: Duration) -> Result<f64> {
    let (n, secs) = refuse_twice(ns, port, dur)?;
    Ok(n as f64 / secs)
}

/// Both ports, `rounds` rounds of `dur` per configuration.
pub fn connect_rates(bench: &Bench, rounds: u32, dur: Duration) -> Result<Vec<ConnectRates>> {
    let mut out = Vec::new();
    for port in [LOW_PORT, HIGH_PORT] {
        let ns = Netns::create("refused")?;
        ns.sysctl("net.ipv4.ip_local_port_range", CLIENT_PORTS)?;
        let mut rates = ConnectRates {
            port,
            none: Vec::new(),
            netprobe: Vec::new(),
            empty: Vec::new(),
        };
        for round in 0..rounds {
            // Each configuration takes each place in turn.
            let mut order = [Config::None, Config::Netprobe, Config::Empty];
            order.rotate_left(round as usize % 3);
            for config in order {
                check_interrupted()?;
                let running = bench.start(config)?;
                thread::sleep(Duration::from_millis(300));
                let rate = refused_rate(&ns, port, dur)?;
                running.stop()?;
                match config {
                    Config::None => rates.none.push(rate),
                    Config::Empty => rates.empty.push(rate),
                    _ => rates.netprobe.push(rate),
                }
            }
            println!(
                "xtask: bench: refused connections to port {port}, round {}/{rounds}: {:.0}/s untraced, {:.0}/s under netprobe, {:.0}/s with empty programs",
                round + 1,
                rates.none.last().copied().unwrap_or(0.0),
                rates.netprobe.last().copied().unwrap_or(0.0),
                rates.empty.last().copied().unwrap_or(0.0),
            );
        }
        out.push(rates);
    }
    Ok(out)
}

/// The high-port storm under `--output journald`.
#[derive(Debug, Clone, Default)]
pub struct JournaldStorm {
    pub refused: u64,
    pub secs: f64,
    /// Events on netprobe's tracepoints, by the namespace's counters.
    pub kernel_events: u64,
    /// Events and lost during the storm, by netprobe's `summary` record in
    /// the journal (less what its metrics had counted before).
    pub events: u64,
    pub lost: u64,
    /// Entries netprobe's process wrote to the journal.
    pub journal_entries: u64,
}

impl JournaldStorm {
    pub fn unaccounted(&self) -> i64 {
        self.kernel_events as i64 - (self.events + self.lost) as i64
    }
}

/// The exposition of netprobe's metrics endpoint.
fn scrape() -> Result<String> {
    let mut s = TcpStream::connect(METRICS).context("connect to netprobe's metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The sum of a metric's series (`name{...} value` and `name value`),
/// leaving out events netprobe made from counters (not kernel events).
fn sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && !l.contains("source=\"counters\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A running systemd-journald: the one already there, or one started here
/// (killed on drop), as a node would have.
struct Journald(Option<std::process::Child>);

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

impl Journald {
    fn ensure() -> Result<Journald> {
        let alive = || {
            std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(JOURNAL_SOCKET))
                .is_ok()
        };
        if alive() {
            return Ok(Journald(None));
        }
        let bin = [
            "/lib/systemd/systemd-journald",
            "/usr/lib/systemd/systemd-journald",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context(
            "systemd-journald is not installed (package systemd; `cargo xtask setup` installs it)",
        )?;
        let child = Command::new(bin)
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start systemd-journald")?;
        let j = Journald(Some(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !alive() {
            if Instant::now() > deadline {
                bail!("systemd-journald did not open {JOURNAL_SOCKET} within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(j)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The journal's entries from process `pid`, and its `summary` record's
/// events and lost (`NETPROBE_COUNT`, `NETPROBE_EVIDENCE`'s `lost`).
fn journal_of(pid: u32) -> Result<(u64, Option<(u64, u64)>)> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "--all", &format!("_PID={pid}")])
        .output()
        .context("cannot run journalctl")?;
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = entries
        .iter()
        .find(|e| e["NETPROBE_KIND"] == "summary")
        .and_then(|e| {
            let count = e["NETPROBE_COUNT"].as_str()?.parse().ok()?;
            let evidence: serde_json::Value =
                serde_json::from_str(e["NETPROBE_EVIDENCE"].as_str()?).ok()?;
            Some((count, evidence["lost"].as_u64()?))
        });
    Ok((entries.len() as u64, summary))
}

/// Runs the storm for `dur` under `bin run --output journald`, into a
/// real journald.
pub fn journald_storm(bin: &Path, stderr: &Path, dur: Duration) -> Result<JournaldStorm> {
    check_interrupted()?;
    let _journald = Journald::ensure()?;
    let ns = Netns::create("journald")?;
    ns.sysctl("net.ipv4.ip_local_port_range", CLIENT_PORTS)?;
    let err = std::fs::File::create(stderr)?;
    let mut child = Command::new(bin)
        .args(["run", "--output", "journald", "--metrics", METRICS])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id();
    let stop = |child: &mut std::process::Child| {
        // SAFETY: kill(2) on our own child. SIGTERM flushes the open
        // incidents and writes the summary.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        child.wait()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape().is_ok_and(|t| sum(&t, "netprobe_ready") == 1) {
        if Instant::now() > deadline || interrupted() {
            let _ = stop(&mut child);
            bail!("netprobe --output journald was not ready within 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let snmp_before = snmp_counts(&ns.snmp()?, StormKind::Folded)?;
    let before = scrape()?;
    let (refused, secs) = refuse_twice(&ns, HIGH_PORT, dur)?;
    let snmp_after = snmp_counts(&ns.snmp()?, StormKind::Folded)?;
    // Until netprobe has drained what is queued: its records stop coming.
    let mut last = u64::MAX;
    let settle = Instant::now() + Duration::from_secs(15);
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = sum(&scrape()?, "netprobe_records_total");
        if now == last || Instant::now() > settle {
            break;
        }
        last = now;
    }
    stop(&mut child)?;
    let kernel_events = KERNEL_COUNTS
        .iter()
        .zip(snmp_before.iter().zip(&snmp_after))
        .filter(|((proto, ..), _)| *proto == "Tcp")
        .map(|((_, _, tps), (b, a))| a.saturating_sub(*b) * tps.len() as u64)
        .sum();
    // The summary counts from the start: less what came before the storm.
    let (events_before, lost_before) = (
        sum(&before, "netprobe_events_total"),
        sum(&before, "netprobe_lost_events_total"),
    );
    let mut journal = journal_of(pid)?;
    let wait = Instant::now() + Duration::from_secs(10);
    while journal.1.is_none() && Instant::now() < wait {
        thread::sleep(Duration::from_millis(200));
        journal = journal_of(pid)?;
    }
    let (entries, summary) = journal;
    let (events, lost) = summary.context("netprobe's summary is not in the journal")?;
    Ok(JournaldStorm {
        refused,
        secs,
        kernel_events,
        events: events.saturating_sub(events_before),
        lost: lost.saturating_sub(lost_before),
        journal_entries: entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_summed_over_its_series_only() {
        let text = "# HELP netprobe_events_total x\n\
                    netprobe_events_total{kind=\"drop\"} 3\n\
                    netprobe_events_total{kind=\"reset_sent\"} 4.0\n\
                    netprobe_events_total{kind=\"paws\",source=\"counters\"} 9\n\
                    netprobe_events_total_extra 100\n\
                    netprobe_ready 1\n";
        assert_eq!(sum(text, "netprobe_events_total"), 7);
        assert_eq!(sum(text, "netprobe_ready"), 1);
        assert_eq!(sum(text, "netprobe_lost_events_total"), 0);
    }

    #[test]
    fn the_ratio_pairs_rounds() {
        let r = ConnectRates {
            port: HIGH_PORT,
            none: vec![100.0, 200.0, 0.0],
            netprobe: vec![90.0, 190.0, 50.0],
            empty: vec![95.0, 196.0],
        };
        let i = r.ratio().unwrap();
        // Rounds 1 and 2 (0.9, 0.95); the third has no untraced rate.
        assert_eq!(i.n, 2);
        assert!((i.mean - 0.925).abs() < 1e-9, "{i:?}");
        // The floor pairs the same way: 0.95 and 0.98.
        let f = r.floor().unwrap();
        assert_eq!(f.n, 2);
        assert!((f.mean - 0.965).abs() < 1e-9, "{f:?}");
    }
}
