//! The bench's results: the table it prints (Markdown, so that
//! BENCHMARKS.md can paste it), the goals of issue 7 as met or missed with
//! their figures, and target/bench/results.json.

use std::{collections::BTreeMap, fmt::Write as _, fs, process::Command, time::Duration};

use serde_json::{json, Value};

use super::{
    bpf::RunStats,
    refused::{ConnectRates, JournaldStorm},
    tracer::Tally,
    workload, Config, Options, CONFIGS,
};

/// Where the figures were taken.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_mib: u64,
    /// /proc/loadavg's 1-minute figure when the bench started.
    pub load: f64,
    pub bpftrace: String,
    pub commit: String,
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn here() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Machine {
            cores: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            cpu: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or("unknown", |(_, v)| v.trim())
                .to_string(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            memory_mib: super::procfs::field_u64(&meminfo, "MemTotal").unwrap_or(0) / 1024,
            load: load
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(f64::NAN),
            bpftrace: first_line_of("bpftrace", &["--version"]),
            commit: first_line_of("git", &["rev-parse", "--short", "HEAD"]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Connections,
    Requests,
    /// Not a workload: the tracer's CPU meanwhile, in percent of a core.
    TracerCpu,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Connections => "connections/s (connect, 1-byte request and response, close)",
            Workload::Requests => "requests/s (1-byte request and response, one connection)",
            Workload::TracerCpu => "the tracer's CPU meanwhile, % of one core",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Workload::Connections => "connections_per_sec",
            Workload::Requests => "requests_per_sec",
            Workload::TracerCpu => "tracer_cpu_pct",
        }
    }
}

/// A goal's verdict: met only when the figure (or its 95% interval) lies
/// inside the goal, missed when it lies outside, and not settled otherwise
/// (an interval that straddles the goal, a figure that cannot tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    NotSettled,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotSettled => "not settled",
        }
    }

    fn of(met: bool) -> Verdict {
        if met {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    /// The verdict on "the value is at least `goal`" from a 95% interval.
    pub fn at_least(interval: &Interval, goal: f64) -> Verdict {
        if interval.lo >= goal {
            Verdict::Met
        } else if interval.hi < goal {
            Verdict::Missed
        } else {
            Verdict::NotSettled
        }
    }
}

/// A mean and its 95% confidence interval (Student's t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// Student's t at 97.5% for `df` degrees of freedom (two-sided 95%).
fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        _ => 1.96,
    }
}

/// The mean of `v` and its 95% interval; `None` with fewer than two values.
pub fn interval(v: &[f64]) -> Option<Interval> {
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    Some(Interval {
        mean,
        lo: mean - half,
        hi: mean + half,
        n,
    })
}

/// One workload's rates per configuration, one per round.
#[derive(Debug, Clone)]
pub struct Overhead {
    pub workload: Workload,
    pub rates: Vec<(Config, Vec<f64>)>,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    }
}

impl Overhead {
    pub fn new(workload: Workload) -> Overhead {
        Overhead {
            workload,
            rates: CONFIGS.iter().map(|c| (*c, Vec::new())).collect(),
        }
    }

    fn of(&self, config: Config) -> &[f64] {
        self.rates
            .iter()
            .find(|(c, _)| *c == config)
            .map_or(&[], |(_, r)| r)
    }

    pub fn add(&mut self, config: Config, rate: f64) {
        if let Some((_, r)) = self.rates.iter_mut().find(|(c, _)| *c == config) {
            r.push(rate);
        }
    }

    pub fn last(&self, config: Config) -> f64 {
        self.of(config).last().copied().unwrap_or(f64::NAN)
    }

    pub fn median(&self, config: Config) -> f64 {
        median(self.of(config))
    }

    /// Throughput lost to the tracer, in percent of the run without one.
    pub fn overhead_pct(&self, config: Config) -> f64 {
        (1.0 - self.median(config) / self.median(Config::None)) * 100.0
    }

    /// The rate under `config` against the rate without a tracer, round by
    /// round (the configurations of a round run back to back, so each pair
    /// shares the machine's state of the moment), with its 95% interval.
    pub fn ratio_interval(&self, config: Config) -> Option<Interval> {
        let ratios: Vec<f64> = self
            .of(config)
            .iter()
            .zip(self.of(Config::None))
            .filter(|(_, none)| **none > 0.0)
            .map(|(with, none)| with / none)
            .collect();
        interval(&ratios)
    }

    /// How far the rounds without a tracer lie apart, in percent of their
    /// median: what a difference must exceed to mean anything.
    pub fn spread_pct(&self) -> f64 {
        let r = self.of(Config::None);
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        (hi - lo) / self.median(Config::None) * 100.0
    }
}

/// The storm's kernel counter deltas: (name, delta, the tracepoints each
/// count stands for).
#[derive(Debug, Clone)]
pub struct Kernel {
    pub counts: Vec<(String, u64, &'static [&'static str])>,
}

/// One storm under one tracer.
#[derive(Debug)]
pub struct StormRun {
    pub config: Config,
    pub kind: StormKind,
    pub generated: workload::Storm,
    pub kernel: Kernel,
    /// Bare tracepoint name -> the tracer's programs' statistics.
    pub programs: BTreeMap<String, RunStats>,
    pub cpu_seconds: f64,
    /// VmHWM at the end: the peak of the tracer's whole life.
    pub peak_rss: u64,
    /// VmRSS once ready (before the storm), and once the storm's records
    /// have stopped coming.
    pub rss_ready: u64,
    pub rss_end: u64,
    /// netprobe's records, tallied.
    pub tally: Option<Tally>,
}

/// Which storm: one whose events repeat (a service that is down, a socket
/// nobody reads: they fold), or one whose every event is a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormKind {
    Folded,
    Distinct,
    /// SYNs from spoofed sources to a closed port: no flow repeats.
    Spoofed,
}

impl StormKind {
    pub fn name(self) -> &'static str {
        match self {
            StormKind::Folded => "folded",
            StormKind::Distinct => "distinct-flow",
            StormKind::Spoofed => "spoofed-source",
        }
    }
}

/// The kernel event rate issue 17 names for the spoofed-source storm.
const SPOOFED_RATE: f64 = 200_000.0;

/// The fewest records crossing the ring buffer that a CPU figure per record
/// is given for.
const MIN_CROSSED: u64 = 10_000;

/// `kfree_skb` of `skb:kfree_skb`.
fn bare(tp: &str) -> &str {
    tp.split_once(':').map_or(tp, |(_, n)| n)
}

impl StormRun {
    /// Kernel events a second, as the kernel counted them.
    pub fn kernel_rate(&self, attached: &[String]) -> f64 {
        self.expected(attached) as f64 / self.generated.secs.max(1e-9)
    }

    /// Events the kernel's counters say happened on the tracepoints in
    /// `attached`, per tracepoint.
    pub fn expected_by_tracepoint(&self, attached: &[String]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, n, tps) in &self.kernel.counts {
            for tp in tps.iter().filter(|tp| attached.iter().any(|a| a == *tp)) {
                *out.entry(tp.to_string()).or_default() += n;
            }
        }
        out
    }

    pub fn expected(&self, attached: &[String]) -> u64 {
        self.expected_by_tracepoint(attached).values().sum()
    }

    /// Expected minus accounted (netprobe only).
    pub fn unaccounted(&self, attached: &[String]) -> Option<i64> {
        let t = self.tally.as_ref()?;
        Some(self.expected(attached) as i64 - t.accounted() as i64)
    }

    /// netprobe's final `summary` record, if it wrote one.
    fn summary(&self) -> Option<&Value> {
        self.tally.as_ref()?.summary.as_ref()
    }

    /// A number from the summary's evidence, as a cell.
    fn summary_figure(&self, name: &str) -> String {
        self.summary()
            .and_then(|v| v["evidence"][name].as_u64())
            .map_or("-".into(), |n| n.to_string())
    }

    /// Records that crossed the ring buffer: events that reached the daemon
    /// (written, folded in the daemon, of other flows) less the repeats the
    /// kernel counted in place of records (netprobe's summary).
    pub fn records_crossed(&self) -> Option<u64> {
        let repeats = self.summary()?["evidence"]["kernel_repeats"].as_u64()?;
        Some(self.tally.as_ref()?.processed().saturating_sub(repeats))
    }

    /// Daemon CPU seconds per million records that crossed the ring buffer;
    /// `None` under `MIN_CROSSED` records, where the daemon's CPU is its
    /// once-a-second work and dividing by the records would mean nothing.
    pub fn cpu_per_million_crossed(&self) -> Option<f64> {
        let crossed = self.records_crossed()?;
        (crossed >= MIN_CROSSED).then(|| self.cpu_seconds / (crossed as f64 / 1e6))
    }

    /// Daemon CPU seconds per million events it processed.
    /// Daemon CPU-seconds per million events the kernel counted.
    pub fn cpu_per_million_kernel(&self, attached: &[String]) -> Option<f64> {
        let events = self.expected(attached);
        (events > 0).then(|| self.cpu_seconds / (events as f64 / 1e6))
    }

    pub fn cpu_per_million(&self) -> Option<f64> {
        let processed = self.tally.as_ref()?.processed();
        (processed > 0).then(|| self.cpu_seconds / (processed as f64 / 1e6))
    }

    pub fn brief(&self) -> String {
        let runs: u64 = self.programs.values().map(|s| s.run_cnt).sum();
        let counts: Vec<String> = self
            .kernel
            .counts
            .iter()
            .map(|(n, d, _)| format!("{n} +{d}"))
            .collect();
        let mut s = format!(
            "{} datagrams, {} refused connections in {:.1} s; {}; {runs} program runs; CPU {:.2} s, peak RSS {:.1} MiB",
            self.generated.datagrams,
            self.generated.refused,
            self.generated.secs,
            counts.join(", "),
            self.cpu_seconds,
            mib(self.peak_rss)
        );
        if let Some(t) = &self.tally {
            let _ = write!(
                s,
                "; {} written, {} folded, {} lost",
                t.written_total(),
                t.folded,
                t.lost
            );
        }
        s
    }
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn ns_per_run(s: &RunStats) -> Option<f64> {
    (s.run_cnt > 0).then(|| s.run_time_ns as f64 / s.run_cnt as f64)
}

pub struct Results {
    pub machine: Machine,
    pub options: Options,
    pub startup: Vec<f64>,
    pub overhead: Vec<Overhead>,
    /// Under netprobe, netprobe --every-event, then bpftrace.
    pub storms: Vec<StormRun>,
    /// `category:name` of netprobe's tracepoints.
    pub tracepoints: Vec<String>,
    /// Events netprobe processed or lost during the healthy workload
    /// (host-wide; Linux 6.18 fires skb:kfree_skb, reason QUEUE_PURGE, once
    /// per closed connection: BENCHMARKS.md).
    pub healthy_events: u64,
    /// Short connections made under netprobe meanwhile.
    pub healthy_connections: u64,
    /// netprobe's kernel time during the healthy workload (issue 17).
    pub healthy_cost: Option<HealthyCost>,
    /// Refused connections per second, untraced and under netprobe, by
    /// service port (issue 17).
    pub connect_rates: Vec<ConnectRates>,
    /// The high-port storm under `--output journald` (issue 17).
    pub journald: Option<JournaldStorm>,
    pub took: Duration,
}

/// What netprobe's programs cost the kernel while the healthy workload ran
/// under it, with kernel.bpf_stats_enabled on, against the CPU the host
/// was busy meanwhile (/proc/stat).
#[derive(Debug, Clone, Default)]
pub struct HealthyCost {
    pub programs: BTreeMap<String, RunStats>,
    pub busy_ns: u64,
    pub connections: u64,
    pub secs: f64,
}

impl HealthyCost {
    pub fn kernel_ns(&self) -> u64 {
        self.programs.values().map(|p| p.run_time_ns).sum()
    }

    /// netprobe's kernel time, in % of the host's busy CPU time.
    pub fn share_pct(&self) -> Option<f64> {
        (self.busy_ns > 0).then(|| self.kernel_ns() as f64 / self.busy_ns as f64 * 100.0)
    }
}

/// A tracer's ns per run on a tracepoint, and its runs.
type Cost = Option<(f64, u64)>;

/// A goal and how this run did.
pub struct Goal {
    pub goal: String,
    pub verdict: Verdict,
    pub figure: String,
}

impl Results {
    /// The workloads' rates (not the tracers' CPU).
    fn workloads(&self) -> impl Iterator<Item = &Overhead> {
        self.overhead
            .iter()
            .filter(|o| o.workload != Workload::TracerCpu)
    }

    fn storm(&self, config: Config) -> Option<&StormRun> {
        self.storm_of(StormKind::Folded, config)
    }

    fn storm_of(&self, kind: StormKind, config: Config) -> Option<&StormRun> {
        self.storms
            .iter()
            .find(|s| s.config == config && s.kind == kind)
    }

    /// Per tracepoint: netprobe's (aggregating, and with
    /// `--every-event`) and bpftrace's ns per run, and runs.
    fn kernel_cost(&self) -> Vec<(String, Cost, Cost, Cost)> {
        let of = |c: Config, tp: &str| {
            let s = self.storm(c)?.programs.get(bare(tp))?;
            Some((ns_per_run(s)?, s.run_cnt))
        };
        self.tracepoints
            .iter()
            .map(|tp| {
                (
                    tp.clone(),
                    of(Config::Netprobe, tp),
                    of(Config::NetprobeEveryEvent, tp),
                    of(Config::Bpftrace, tp),
                )
            })
            .collect()
    }

    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for o in self.workloads() {
            let np = o.ratio_interval(Config::Netprobe);
            let bt = o.ratio_interval(Config::Bpftrace);
            let show = |i: &Option<Interval>| {
                i.map_or("not measured".into(), |i| {
                    format!("{:.3} [{:.3}, {:.3}]", i.mean, i.lo, i.hi)
                })
            };
            goals.push(Goal {
                goal: format!(
                    "overhead at most 1% on the healthy workload ({}): throughput under netprobe \
                     at least 0.99 of the rate without a tracer, its 95% interval inside",
                    o.workload.key()
                ),
                verdict: np.map_or(Verdict::NotSettled, |i| Verdict::at_least(&i, 0.99)),
                figure: format!(
                    "ratio to no tracer, paired by round, mean [95% interval] over {} rounds: \
                     netprobe {}, bpftrace {}; rounds without a tracer spread {:.1}%",
                    np.map_or(0, |i| i.n),
                    show(&np),
                    show(&bt),
                    o.spread_pct()
                ),
            });
        }
        for kind in [StormKind::Folded, StormKind::Distinct, StormKind::Spoofed] {
            let run = self.storm_of(kind, Config::Netprobe);
            let unaccounted = run.and_then(|s| s.unaccounted(&self.tracepoints));
            let lost = run.and_then(|s| s.tally.as_ref()).map_or(0, |t| t.lost);
            goals.push(Goal {
                goal: format!("zero unaccounted events in the {} storm", kind.name()),
                verdict: match unaccounted {
                    None => Verdict::NotSettled,
                    Some(0) => Verdict::Met,
                    Some(u) if u > 0 => Verdict::Missed,
                    // Accounted for beyond the storm: only losses (which
                    // name no flow) of the rest of the host's events can
                    // explain that.
                    Some(u) if lost >= u.unsigned_abs() => Verdict::NotSettled,
                    Some(_) => Verdict::Missed,
                },
                figure: match (run, unaccounted) {
                    (Some(s), Some(u)) if u < 0 => format!(
                        "{} accounted for beyond the {} events the kernel counted, with {lost} lost{}",
                        -u,
                        s.expected(&self.tracepoints),
                        if lost >= u.unsigned_abs() {
                            ": other flows' events among the lost may explain it; take figures on a quiet machine"
                        } else {
                            ": more than the losses can explain"
                        }
                    ),
                    (Some(s), Some(u)) => format!(
                        "{u} unaccounted of {} the kernel counted ({lost} of them lost, counted)",
                        s.expected(&self.tracepoints)
                    ),
                    _ => "not measured".into(),
                },
            });
        }
        goals.extend(self.spoofed_goals());
        let every = self.storm_of(StormKind::Folded, Config::NetprobeEveryEvent);
        let folded = self.storm_of(StormKind::Folded, Config::Netprobe);
        let per_crossing = every.and_then(StormRun::cpu_per_million_crossed);
        goals.push(Goal {
            goal: "at most 0.5 CPU-seconds in the daemon per million records that cross the ring \
                   buffer (the folded storm under --every-event: every event crosses)"
                .into(),
            verdict: per_crossing.map_or(Verdict::NotSettled, |c| Verdict::of(c <= 0.5)),
            figure: format!(
                "{}; beside it, the folded storm: {}",
                match (every, per_crossing) {
                    (Some(d), Some(c)) => format!(
                        "{c:.2} CPU-s per million records crossing ({} records, {:.2} CPU-s)",
                        d.records_crossed().unwrap_or(0),
                        d.cpu_seconds
                    ),
                    _ => "not measured".into(),
                },
                match folded {
                    Some(f) => format!(
                        "{} CPU-s per million events processed ({:.2} CPU-s, {} records crossed)",
                        f.cpu_per_million()
                            .map_or("-".into(), |c| format!("{c:.2}")),
                        f.cpu_seconds,
                        f.records_crossed().unwrap_or(0)
                    ),
                    None => "not measured".into(),
                }
            ),
        });
        let distinct = self.storm_of(StormKind::Distinct, Config::Netprobe);
        let lost = distinct.and_then(|r| {
            let t = r.tally.as_ref()?;
            let events = r.expected(&self.tracepoints);
            (events > 0).then(|| (t.lost, events, t.lost as f64 / events as f64))
        });
        goals.push(Goal {
            goal: "distinct-flow storm (one peer, a new closed port each connection: a scan): at \
                   most 1% of the kernel's events lost"
                .into(),
            verdict: lost.map_or(Verdict::NotSettled, |(_, _, share)| {
                Verdict::of(share <= 0.01)
            }),
            figure: match (distinct, lost) {
                (Some(r), Some((n, events, share))) => format!(
                    "{n} lost of {events} ({:.2}%); {:.2} CPU-s in the daemon, {} records crossed",
                    100.0 * share,
                    r.cpu_seconds,
                    r.records_crossed().unwrap_or(0)
                ),
                _ => "not measured".into(),
            },
        });
        let cost = self.kernel_cost();
        let compared: Vec<(String, f64)> = cost
            .iter()
            .filter_map(|(tp, n, _, b)| Some((tp.clone(), n.as_ref()?.0 / b.as_ref()?.0)))
            .collect();
        goals.push(Goal {
            goal: "kernel cost per event at most half of bpftrace's on the same tracepoint".into(),
            verdict: if compared.is_empty() {
                Verdict::NotSettled
            } else {
                Verdict::of(compared.iter().all(|(_, r)| *r <= 0.5))
            },
            figure: if compared.is_empty() {
                "no tracepoint ran under both".into()
            } else {
                compared
                    .iter()
                    .map(|(tp, r)| format!("{tp} {r:.2}x bpftrace's"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
        // Issue 17's floors, on the folded storm (every event but each
        // flow's first is a repeat).
        for (tps, most) in [
            (&["skb:kfree_skb"][..], 300.0),
            (&["tcp:tcp_send_reset", "tcp:tcp_receive_reset"][..], 150.0),
        ] {
            let measured: Vec<(&str, f64)> = cost
                .iter()
                .filter(|(tp, ..)| tps.contains(&tp.as_str()))
                .filter_map(|(tp, n, _, _)| Some((tp.as_str(), n.as_ref()?.0)))
                .collect();
            goals.push(Goal {
                goal: format!(
                    "{} at most {most:.0} ns per event on the repeat path (folded storm, bpf_stats)",
                    tps.join(" and ")
                ),
                verdict: if measured.len() < tps.len() {
                    Verdict::NotSettled
                } else {
                    Verdict::of(measured.iter().all(|(_, ns)| *ns <= most))
                },
                figure: if measured.is_empty() {
                    "not measured".into()
                } else {
                    measured
                        .iter()
                        .map(|(tp, ns)| format!("{tp} {ns:.0} ns"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        if let Some(h) = &self.healthy_cost {
            let share = h.share_pct();
            goals.push(Goal {
                goal: "netprobe's kernel time at most 0.5% of the CPU the healthy workload kept busy (bpf_stats run_time_ns against /proc/stat)".into(),
                verdict: share.map_or(Verdict::NotSettled, |p| Verdict::of(p <= 0.5)),
                figure: format!(
                    "{} ({:.3} ms in netprobe's programs, {:.2} CPU-s busy, {} connections in {:.0} s)",
                    share.map_or("-".into(), |p| format!("{p:.3}%")),
                    h.kernel_ns() as f64 / 1e6,
                    h.busy_ns as f64 / 1e9,
                    h.connections,
                    h.secs
                ),
            });
        }
        for r in &self.connect_rates {
            let i = r.ratio();
            goals.push(Goal {
                goal: format!(
                    "a closed-port connect storm (service port {}) at 0.95 or more of the untraced connection rate",
                    r.port
                ),
                verdict: i
                    .as_ref()
                    .map_or(Verdict::NotSettled, |i| Verdict::at_least(i, 0.95)),
                figure: i.map_or("fewer than two rounds".into(), |i| {
                    format!(
                        "ratio to no tracer, paired by round, mean [95% interval] over {} rounds: {:.3} [{:.3}, {:.3}]; {}",
                        i.n,
                        i.mean,
                        i.lo,
                        i.hi,
                        r.floor().map_or("no floor measured".into(), |f| format!(
                            "the floor, empty programs on the same {} tracepoints: {:.3} [{:.3}, {:.3}]",
                            self.tracepoints.len(),
                            f.mean,
                            f.lo,
                            f.hi
                        ))
                    )
                }),
            });
        }
        if let Some(j) = &self.journald {
            goals.push(Goal {
                goal: "the high-port storm under --output journald loses no events".into(),
                verdict: Verdict::of(j.lost == 0 && j.unaccounted() <= 0),
                figure: format!(
                    "{} kernel events ({} connections refused in {:.1} s): {} accounted, {} lost, {} unaccounted; {} journal entries",
                    j.kernel_events,
                    j.refused,
                    j.secs,
                    j.events,
                    j.lost,
                    j.unaccounted(),
                    j.journal_entries
                ),
            });
        }
        // Steady: once ready and after each storm under netprobe (folded and
        // distinct flows), not the peak in the middle of a storm.
        let runs: Vec<&StormRun> = [folded, distinct].into_iter().flatten().collect();
        goals.push(Goal {
            goal: "RSS under 32 MiB steady (once ready, and after each storm)".into(),
            verdict: if runs.is_empty() {
                Verdict::NotSettled
            } else {
                Verdict::of(runs.iter().all(|s| s.rss_ready.max(s.rss_end) < 32 << 20))
            },
            figure: if runs.is_empty() {
                "not measured".into()
            } else {
                runs.iter()
                    .map(|s| {
                        format!(
                            "{} storm: {:.1} MiB once ready, {:.1} MiB after it, peak {:.1} MiB",
                            s.kind.name(),
                            mib(s.rss_ready),
                            mib(s.rss_end),
                            mib(s.peak_rss)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });
        let ready = median(&self.startup);
        goals.push(Goal {
            goal: "`ready` in under a second".into(),
            verdict: if self.startup.is_empty() {
                Verdict::NotSettled
            } else {
                Verdict::of(ready < 1.0)
            },
            figure: format!("median {ready:.3} s of {} starts", self.startup.len()),
        });
        goals
    }

    pub fn table(&self) -> String {
        let m = &self.machine;
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n## netprobe bench\n\n{} cores ({}), {} MiB, Linux {}, load {:.2} at start; {}; \
             netprobe {}; {} rounds x {} s per measurement, storms of {} s; took {:.0} s\n",
            m.cores,
            m.cpu,
            m.memory_mib,
            m.kernel,
            m.load,
            m.bpftrace,
            m.commit,
            o.rounds,
            o.secs,
            o.storm_secs,
            self.took.as_secs_f64()
        );
        let (lo, hi) = self
            .startup
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let _ = writeln!(
            s,
            "Start-up, exec to `ready` (BTF parsing and program loading included), {} runs: \
             median {:.3} s (min {lo:.3}, max {hi:.3})\n",
            self.startup.len(),
            median(&self.startup)
        );
        let _ = writeln!(
            s,
            "### Overhead: healthy loopback TCP, nothing lost or refused (median of {} rounds; change against no tracer; \
             the ratio to no tracer paired by round, mean [95% interval])\n",
            o.rounds
        );
        let _ = writeln!(
            s,
            "| workload | no tracer | netprobe | bpftrace | netprobe / no tracer | bpftrace / no tracer | spread without a tracer |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let ratio = |i: Option<Interval>| {
            i.map_or("-".into(), |i| {
                format!("{:.3} [{:.3}, {:.3}]", i.mean, i.lo, i.hi)
            })
        };
        for w in self.workloads() {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} ({:+.1}%) | {:.0} ({:+.1}%) | {} | {} | {:.1}% |",
                w.workload.name(),
                w.median(Config::None),
                w.median(Config::Netprobe),
                -w.overhead_pct(Config::Netprobe),
                w.median(Config::Bpftrace),
                -w.overhead_pct(Config::Bpftrace),
                ratio(w.ratio_interval(Config::Netprobe)),
                ratio(w.ratio_interval(Config::Bpftrace)),
                w.spread_pct()
            );
        }
        if let Some(c) = self
            .overhead
            .iter()
            .find(|o| o.workload == Workload::TracerCpu)
        {
            let _ = writeln!(
                s,
                "| {} | - | {:.1}% | {:.1}% | | | |",
                c.workload.name(),
                c.median(Config::Netprobe),
                c.median(Config::Bpftrace)
            );
        }
        let _ = writeln!(
            s,
            "\nKernel events netprobe processed or lost during the healthy workload, host-wide: {} \
             (short connections made meanwhile: {})",
            self.healthy_events, self.healthy_connections
        );
        self.storm_table(&mut s);
        self.cost_table(&mut s);
        self.healthy_cost_table(&mut s);
        let _ = writeln!(s, "\n### Goals\n");
        let _ = writeln!(s, "| goal | verdict | figure |");
        let _ = writeln!(s, "|---|---|---|");
        for g in self.goals() {
            let _ = writeln!(s, "| {} | {} | {} |", g.goal, g.verdict.name(), g.figure);
        }
        s.push('\n');
        s
    }

    /// Issue 17, outcome 1: the spoofed-source storm, where no flow repeats.
    fn spoofed_goals(&self) -> Vec<Goal> {
        let run = self.storm_of(StormKind::Spoofed, Config::Netprobe);
        let tps = &self.tracepoints;
        let rate = run.map(|r| r.kernel_rate(tps));
        let fast_enough = rate.is_some_and(|r| r >= SPOOFED_RATE);
        let at = match (run, rate) {
            (Some(r), Some(rate)) => format!(
                "{} SYNs from spoofed sources in {:.1} s: {} kernel events, {:.0}k a second",
                r.generated.spoofed,
                r.generated.secs,
                r.expected(tps),
                rate / 1e3
            ),
            _ => "not measured".into(),
        };
        // Below the rate the goal names, nothing is settled either way.
        let judged = |ok: bool| {
            if fast_enough {
                Verdict::of(ok)
            } else {
                Verdict::NotSettled
            }
        };
        let lost = run.and_then(|r| {
            let t = r.tally.as_ref()?;
            let events = r.expected(tps);
            (events > 0).then(|| (t.lost, t.lost as f64 / events as f64))
        });
        let cpu = run.and_then(|r| r.cpu_per_million_kernel(tps));
        let sources = run.and_then(|r| r.tally.as_ref()?.distinct_sources.clone());
        let spoofed = run.map_or(0, |r| r.generated.spoofed);
        vec![
            Goal {
                goal: "spoofed-source storm (200k kernel events a second or more): at most 1% of \
                       the kernel's events lost"
                    .into(),
                verdict: lost.map_or(Verdict::NotSettled, |(_, share)| judged(share <= 0.01)),
                figure: match lost {
                    Some((n, share)) => format!("{at}; {n} lost ({:.2}%)", 100.0 * share),
                    None => at.clone(),
                },
            },
            Goal {
                goal: "spoofed-source storm: at most 1 CPU-second in the daemon per million \
                       kernel events"
                    .into(),
                verdict: cpu.map_or(Verdict::NotSettled, |c| judged(c <= 1.0)),
                figure: match (run, cpu) {
                    (Some(r), Some(c)) => format!(
                        "{c:.3} CPU-s per million ({:.2} CPU-s; {} records crossed)",
                        r.cpu_seconds,
                        r.records_crossed().unwrap_or(0)
                    ),
                    _ => "not measured".into(),
                },
            },
            Goal {
                goal: "spoofed-source storm: folded per service, its record names a sample of \
                       the sources and estimates how many were distinct (within a factor of 2 \
                       of the SYNs sent, nearly all from distinct sources)"
                    .into(),
                verdict: match &sources {
                    Some((n, named)) if !named.is_empty() && spoofed > 0 => {
                        let r = *n as f64 / spoofed as f64;
                        Verdict::of((0.5..=2.0).contains(&r))
                    }
                    Some(_) => Verdict::Missed,
                    None if run.is_some() => Verdict::Missed,
                    None => Verdict::NotSettled,
                },
                figure: match &sources {
                    Some((n, named)) => format!(
                        "about {n} distinct sources estimated, against {spoofed} SYNs sent; \
                         named: {}",
                        named.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                    ),
                    None => "no per-service record".into(),
                },
            },
        ]
    }

    fn storm_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Storms: UDP datagrams to a socket nobody reads + connections to a closed TCP port, two threads flat out; (distinct flows) connections to a new closed port each time; and (spoofed sources) SYNs to a closed port from random 127/8 sources through raw sockets\n"
        );
        let runs: Vec<&StormRun> = self.storms.iter().collect();
        let header: Vec<String> = runs
            .iter()
            .map(|r| match r.kind {
                StormKind::Folded => format!("under {}", r.config.name()),
                StormKind::Distinct => format!("distinct flows, under {}", r.config.name()),
                StormKind::Spoofed => format!("spoofed sources, under {}", r.config.name()),
            })
            .collect();
        let _ = writeln!(s, "| | {} |", header.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(runs.len()));
        let row = |s: &mut String, name: &str, f: &dyn Fn(&StormRun) -> String| {
            let cells: Vec<String> = runs.iter().map(|r| f(r)).collect();
            let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
        };
        row(s, "seconds", &|r| format!("{:.1}", r.generated.secs));
        row(
            s,
            "datagrams sent / connections refused / spoofed SYNs sent",
            &|r| {
                format!(
                    "{} / {} / {}",
                    r.generated.datagrams, r.generated.refused, r.generated.spoofed
                )
            },
        );
        // Each counter some storm read, in the order first read; "-" for
        // the storms that did not read it.
        let mut counts: Vec<(&str, &[&str])> = Vec::new();
        for (name, _, tps) in runs.iter().flat_map(|r| &r.kernel.counts) {
            if !counts.iter().any(|(n, t)| n == name && t == tps) {
                counts.push((name, tps));
            }
        }
        for (name, tps) in counts {
            row(
                s,
                &format!("kernel: {name} (one {} each)", tps.join(" + ")),
                &|r| {
                    r.kernel
                        .counts
                        .iter()
                        .find(|(n, _, t)| n == name && *t == tps)
                        .map_or("-".into(), |(_, c, _)| c.to_string())
                },
            );
        }
        let tps = &self.tracepoints;
        row(
            s,
            "events on netprobe's tracepoints, by the counters (per s)",
            &|r| {
                let e = r.expected(tps);
                format!("{e} ({:.0}/s)", e as f64 / r.generated.secs.max(1e-9))
            },
        );
        row(s, "program runs (BPF run_cnt, whole host)", &|r| {
            r.programs
                .values()
                .map(|p| p.run_cnt)
                .sum::<u64>()
                .to_string()
        });
        let tally = |f: fn(&Tally) -> u64| {
            move |r: &StormRun| r.tally.as_ref().map_or("-".into(), |t| f(t).to_string())
        };
        row(
            s,
            "netprobe: records written in full",
            &tally(Tally::written_total),
        );
        row(
            s,
            "netprobe: repeats folded into incidents",
            &tally(|t| t.folded),
        );
        row(
            s,
            "netprobe: lost (counted, `lost` records)",
            &tally(|t| t.lost),
        );
        row(
            s,
            "netprobe: accounted (written + folded + lost)",
            &tally(Tally::accounted),
        );
        row(
            s,
            "netprobe: events of other flows on the host (not counted above)",
            &tally(|t| t.elsewhere),
        );
        row(s, "netprobe: unaccounted (kernel - accounted)", &|r| {
            r.unaccounted(tps).map_or("-".into(), |u| u.to_string())
        });
        row(s, "netprobe's own `summary` record: events + lost", &|r| {
            r.summary().map_or("-".into(), |v| {
                format!(
                    "{} + {}",
                    v["count"].as_u64().unwrap_or(0),
                    r.summary_figure("lost")
                )
            })
        });
        row(
            s,
            "netprobe: repeats counted in the kernel (its summary, whole host)",
            &|r| r.summary_figure("kernel_repeats"),
        );
        row(
            s,
            "netprobe: most bytes the ring buffer held unread, of its size",
            &|r| {
                format!(
                    "{} of {}",
                    r.summary_figure("ring_buffer_peak_bytes"),
                    r.summary_figure("ring_buffer_bytes")
                )
            },
        );
        row(s, "tracer CPU s", &|r| format!("{:.2}", r.cpu_seconds));
        row(
            s,
            "daemon CPU s per million events processed (written, folded, elsewhere)",
            &|r| {
                r.cpu_per_million()
                    .map_or("-".into(), |c| format!("{c:.2}"))
            },
        );
        row(
            s,
            "daemon CPU s per million records that crossed the ring buffer",
            &|r| {
                r.cpu_per_million_crossed()
                    .map_or("-".into(), |c| format!("{c:.2}"))
            },
        );
        row(
            s,
            "tracer RSS once ready / after the storm / peak (VmHWM)",
            &|r| {
                format!(
                    "{:.1} / {:.1} / {:.1} MiB",
                    mib(r.rss_ready),
                    mib(r.rss_end),
                    mib(r.peak_rss)
                )
            },
        );
    }

    fn cost_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Kernel cost during the storms (kernel.bpf_stats_enabled: run_time_ns / run_cnt)\n"
        );
        let _ = writeln!(
            s,
            "| tracepoint | netprobe ns/event (runs) | netprobe --every-event | bpftrace ns/event (runs) | netprobe / bpftrace | hits by the counters (netprobe's storm) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        let cell =
            |c: &Option<(f64, u64)>| c.map_or("-".into(), |(ns, n)| format!("{ns:.0} ({n})"));
        let expected = self
            .storm(Config::Netprobe)
            .map(|r| r.expected_by_tracepoint(&self.tracepoints))
            .unwrap_or_default();
        for (tp, np, every, bt) in self.kernel_cost() {
            let ratio = match (np, bt) {
                (Some(n), Some(b)) => format!("{:.2}", n.0 / b.0),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {tp} | {} | {} | {} | {ratio} | {} |",
                cell(&np),
                cell(&every),
                cell(&bt),
                expected.get(&tp).copied().unwrap_or(0)
            );
        }
    }

    fn healthy_cost_table(&self, s: &mut String) {
        let Some(h) = &self.healthy_cost else {
            return;
        };
        let _ = writeln!(
            s,
            "\n### Kernel cost on the healthy workload (short connections for {:.0} s under netprobe, bpf_stats on)\n",
            h.secs
        );
        let _ = writeln!(s, "| tracepoint | runs | ns/run | kernel time, ms |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for (tp, p) in &h.programs {
            let _ = writeln!(
                s,
                "| {tp} | {} | {} | {:.3} |",
                p.run_cnt,
                ns_per_run(p).map_or("-".into(), |n| format!("{n:.0}")),
                p.run_time_ns as f64 / 1e6
            );
        }
        let _ = writeln!(
            s,
            "\n{} connections; the host's busy CPU meanwhile {:.2} CPU-s; netprobe's programs {:.3} ms, {} of it",
            h.connections,
            h.busy_ns as f64 / 1e9,
            h.kernel_ns() as f64 / 1e6,
            h.share_pct().map_or("-".into(), |p| format!("{p:.3}%"))
        );
    }

    pub fn json(&self) -> Value {
        let m = &self.machine;
        let storms: Vec<Value> = self
            .storms
            .iter()
            .map(|r| {
                json!({
                    "tracer": r.config.name(),
                    "storm": r.kind.name(),
                    "records_crossed": r.records_crossed(),
                    "cpu_seconds_per_million_records_crossed": r.cpu_per_million_crossed(),
                    "seconds": r.generated.secs,
                    "datagrams_sent": r.generated.datagrams,
                    "connections_refused": r.generated.refused,
                    "kernel_counts": r.kernel.counts.iter().map(|(n, d, tps)| json!({"counter": n, "delta": d, "tracepoints": tps})).collect::<Vec<_>>(),
                    "expected_events": r.expected(&self.tracepoints),
                    "expected_by_tracepoint": r.expected_by_tracepoint(&self.tracepoints),
                    "programs": r.programs.iter().map(|(tp, p)| (tp.clone(), json!({"run_cnt": p.run_cnt, "run_time_ns": p.run_time_ns, "ns_per_run": ns_per_run(p)}))).collect::<serde_json::Map<_, _>>(),
                    "cpu_seconds": r.cpu_seconds,
                    "peak_rss_bytes": r.peak_rss,
                    "rss_ready_bytes": r.rss_ready,
                    "rss_end_bytes": r.rss_end,
                    "netprobe": r.tally.as_ref().map(|t| json!({
                        "written": t.written,
                        "written_total": t.written_total(),
                        "folded": t.folded,
                        "lost": t.lost,
                        "accounted": t.accounted(),
                        "from_counters": t.from_counters,
                        "elsewhere": t.elsewhere,
                        "processed": t.processed(),
                        "unaccounted": r.unaccounted(&self.tracepoints),
                        "cpu_seconds_per_million_events": r.cpu_per_million(),
                        "errors": t.errors,
                        "summary": t.summary,
                    })),
                })
            })
            .collect();
        let overhead: serde_json::Map<String, Value> = self
            .overhead
            .iter()
            .map(|o| {
                let by: serde_json::Map<String, Value> = o
                    .rates
                    .iter()
                    .map(|(c, r)| {
                        let ratio = o.ratio_interval(*c).map(|i| json!({"mean": i.mean, "lo95": i.lo, "hi95": i.hi, "rounds": i.n}));
                        (
                            c.name().to_string(),
                            json!({"rates": r, "median": o.median(*c), "overhead_pct": o.overhead_pct(*c), "ratio_to_no_tracer": ratio}),
                        )
                    })
                    .collect();
                (
                    o.workload.key().to_string(),
                    json!({"by_tracer": by, "spread_without_tracer_pct": o.spread_pct()}),
                )
            })
            .collect();
        json!({
            "machine": {
                "cores": m.cores, "cpu": m.cpu, "kernel": m.kernel, "memory_mib": m.memory_mib,
                "load_at_start": m.load, "bpftrace": m.bpftrace, "commit": m.commit,
            },
            "options": {
                "secs": self.options.secs, "rounds": self.options.rounds,
                "storm_secs": self.options.storm_secs, "starts": self.options.starts,
            },
            "took_seconds": self.took.as_secs_f64(),
            "tracepoints": self.tracepoints,
            "startup_seconds": {"runs": self.startup, "median": median(&self.startup)},
            "healthy_workload_events": self.healthy_events,
            "healthy_workload_connections_under_netprobe": self.healthy_connections,
            "refused_connection_rates": self.connect_rates.iter().map(|r| json!({
                "port": r.port, "untraced": r.none, "netprobe": r.netprobe, "empty_programs": r.empty,
                "ratio": r.ratio().map(|i| json!({"mean": i.mean, "lo95": i.lo, "hi95": i.hi, "rounds": i.n})),
                "floor": r.floor().map(|i| json!({"mean": i.mean, "lo95": i.lo, "hi95": i.hi, "rounds": i.n})),
            })).collect::<Vec<_>>(),
            "journald_storm": self.journald.as_ref().map(|j| json!({
                "refused": j.refused, "seconds": j.secs, "kernel_events": j.kernel_events,
                "events": j.events, "lost": j.lost, "unaccounted": j.unaccounted(),
                "journal_entries": j.journal_entries,
            })),
            "healthy_workload_kernel_cost": self.healthy_cost.as_ref().map(|h| json!({
                "programs": h.programs.iter().map(|(tp, p)| (tp.clone(), json!({"run_cnt": p.run_cnt, "run_time_ns": p.run_time_ns, "ns_per_run": ns_per_run(p)}))).collect::<serde_json::Map<_, _>>(),
                "kernel_ns": h.kernel_ns(),
                "host_busy_ns": h.busy_ns,
                "share_pct": h.share_pct(),
                "connections": h.connections,
                "seconds": h.secs,
            })),
            "overhead": overhead,
            "storms": storms,
            "goals": self.goals().iter().map(|g| json!({"goal": g.goal, "verdict": g.verdict.name().to_lowercase(), "figure": g.figure})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn overhead_is_the_throughput_lost_against_no_tracer() {
        let mut o = Overhead::new(Workload::Connections);
        for (c, r) in [
            (Config::None, 1000.0),
            (Config::None, 1010.0),
            (Config::None, 990.0),
            (Config::Netprobe, 995.0),
            (Config::Bpftrace, 900.0),
        ] {
            o.add(c, r);
        }
        assert!((o.overhead_pct(Config::Netprobe) - 0.5).abs() < 1e-9);
        assert!((o.overhead_pct(Config::Bpftrace) - 10.0).abs() < 1e-9);
        assert!((o.spread_pct() - 2.0).abs() < 1e-9);
        assert_eq!(o.last(Config::Netprobe), 995.0);
    }

    #[test]
    fn storm_expects_one_event_per_count_on_each_attached_tracepoint() {
        let run = StormRun {
            config: Config::Netprobe,
            kind: StormKind::Folded,
            generated: workload::Storm {
                datagrams: 1000,
                refused: 10,
                spoofed: 0,
                secs: 1.0,
            },
            kernel: Kernel {
                counts: super::super::KERNEL_COUNTS
                    .iter()
                    .zip([990, 10, 10])
                    .map(|((p, n, tps), d)| (format!("{p} {n}"), d, *tps))
                    .collect(),
            },
            programs: BTreeMap::new(),
            cpu_seconds: 2.0,
            peak_rss: 0,
            rss_ready: 0,
            rss_end: 0,
            tally: Some(Tally {
                written: BTreeMap::from([("drop".to_string(), 3)]),
                folded: 997,
                lost: 20,
                ..Tally::default()
            }),
        };
        let attached: Vec<String> = ["skb:kfree_skb", "tcp:tcp_send_reset", "oom:mark_victim"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // kfree_skb: 990 + 10, tcp_send_reset: 10; the received resets and
        // errors are not on an attached tracepoint.
        assert_eq!(run.expected(&attached), 1010);
        assert_eq!(run.unaccounted(&attached), Some(1010 - 1020));
        assert_eq!(run.cpu_per_million(), Some(2.0 / (1000.0 / 1e6)));
    }

    /// A storm under netprobe whose kernel counted `kernel` events on
    /// `skb:kfree_skb` (Udp RcvbufErrors) and whose tally is as given.
    fn netprobe_storm(kind: StormKind, kernel: u64, tally: Tally, cpu: f64) -> StormRun {
        StormRun {
            config: Config::Netprobe,
            kind,
            generated: workload::Storm {
                datagrams: kernel,
                refused: 0,
                spoofed: 0,
                secs: 10.0,
            },
            kernel: Kernel {
                counts: vec![(
                    "Udp RcvbufErrors".into(),
                    kernel,
                    super::super::KERNEL_COUNTS[0].2,
                )],
            },
            programs: BTreeMap::new(),
            cpu_seconds: cpu,
            peak_rss: 20 << 20,
            rss_ready: 19 << 20,
            rss_end: 20 << 20,
            tally: Some(tally),
        }
    }

    fn tally(written: u64, folded: u64, lost: u64, kernel_repeats: u64) -> Tally {
        Tally {
            written: BTreeMap::from([("drop".to_string(), written)]),
            folded,
            lost,
            summary: Some(json!({"evidence": {"kernel_repeats": kernel_repeats}})),
            ..Tally::default()
        }
    }

    fn results(overhead: Vec<Overhead>, storms: Vec<StormRun>) -> Results {
        Results {
            machine: Machine {
                cores: 2,
                cpu: "test".into(),
                kernel: "6.18".into(),
                memory_mib: 1,
                load: 0.0,
                bpftrace: "v0.17.0".into(),
                commit: "test".into(),
            },
            options: Options {
                secs: 3,
                rounds: 5,
                storm_secs: 10,
                starts: 1,
            },
            startup: vec![0.3, 0.4],
            overhead,
            storms,
            tracepoints: vec!["skb:kfree_skb".into()],
            healthy_events: 0,
            healthy_connections: 0,
            healthy_cost: None,
            connect_rates: Vec::new(),
            journald: None,
            took: Duration::from_secs(1),
        }
    }

    fn workload(none: &[f64], netprobe: &[f64]) -> Overhead {
        let mut o = Overhead::new(Workload::Connections);
        for (n, p) in none.iter().zip(netprobe) {
            o.add(Config::None, *n);
            o.add(Config::Netprobe, *p);
            o.add(Config::Bpftrace, *n * 0.9);
        }
        o
    }

    fn verdict(r: &Results, goal_starts: &str) -> Verdict {
        r.goals()
            .into_iter()
            .find(|g| g.goal.starts_with(goal_starts))
            .unwrap_or_else(|| panic!("no goal {goal_starts}"))
            .verdict
    }

    #[test]
    fn intervals_follow_students_t() {
        // mean 2, sd 1, n 3: half-width 4.303 / sqrt(3).
        let i = interval(&[1.0, 2.0, 3.0]).unwrap();
        assert!((i.mean - 2.0).abs() < 1e-12);
        assert!((i.hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(interval(&[1.0]).is_none());
        // Inside the goal, straddling it, below it.
        for (lo, hi, want) in [
            (0.995, 1.005, Verdict::Met),
            (0.95, 1.03, Verdict::NotSettled),
            (0.88, 0.92, Verdict::Missed),
        ] {
            let i = Interval {
                mean: (lo + hi) / 2.0,
                lo,
                hi,
                n: 5,
            };
            assert_eq!(Verdict::at_least(&i, 0.99), want, "{i:?}");
        }
    }

    #[test]
    fn overhead_is_met_only_when_the_whole_interval_is_inside_the_goal() {
        const GOAL: &str = "overhead at most 1%";
        // Steady rounds, no cost: met.
        let steady = workload(
            &[1000.0, 1002.0, 998.0, 1001.0, 999.0],
            &[1000.0, 1001.0, 999.0, 1001.0, 1000.0],
        );
        assert_eq!(verdict(&results(vec![steady], vec![]), GOAL), Verdict::Met);
        // The same medians, noisy rounds (26% spread): not settled, where
        // the medians alone would have said met.
        let noisy = workload(
            &[1000.0, 1260.0, 1000.0, 1130.0, 1050.0],
            &[1130.0, 1000.0, 1250.0, 1000.0, 1050.0],
        );
        assert!(noisy.overhead_pct(Config::Netprobe) <= 1.0);
        assert_eq!(
            verdict(&results(vec![noisy], vec![]), GOAL),
            Verdict::NotSettled
        );
        // A clear 10% cost: missed.
        let costly = workload(
            &[1000.0, 1002.0, 998.0, 1001.0, 999.0],
            &[900.0, 901.0, 899.0, 902.0, 898.0],
        );
        assert_eq!(
            verdict(&results(vec![costly], vec![]), GOAL),
            Verdict::Missed
        );
        // One round cannot tell.
        assert_eq!(
            verdict(&results(vec![workload(&[1.0], &[1.0])], vec![]), GOAL),
            Verdict::NotSettled
        );
    }

    #[test]
    fn unaccounted_events_are_judged_against_the_losses() {
        const GOAL: &str = "zero unaccounted events in the folded storm";
        let judge = |t: Tally| {
            verdict(
                &results(
                    vec![],
                    vec![netprobe_storm(StormKind::Folded, 1000, t, 1.0)],
                ),
                GOAL,
            )
        };
        assert_eq!(judge(tally(10, 990, 0, 900)), Verdict::Met);
        assert_eq!(judge(tally(10, 980, 0, 900)), Verdict::Missed);
        // 20 more than the storm made, 30 lost: other flows' losses can
        // explain it.
        assert_eq!(judge(tally(10, 980, 30, 900)), Verdict::NotSettled);
        // 20 more and nothing lost: nothing explains it.
        assert_eq!(judge(tally(20, 1000, 0, 900)), Verdict::Missed);
        // Not measured.
        assert_eq!(verdict(&results(vec![], vec![]), GOAL), Verdict::NotSettled);
    }

    #[test]
    fn daemon_cpu_is_judged_per_record_that_crosses_the_ring_buffer() {
        const GOAL: &str = "at most 0.5 CPU-seconds in the daemon per million records";
        // The folded storm: a million events, all but 20,000 counted in
        // the kernel: 0.01 CPU-s per million events, 0.5 per million
        // crossing; with 1000 crossing, no per-record figure.
        let folded = netprobe_storm(
            StormKind::Folded,
            1_000_000,
            tally(10, 999_990, 0, 980_000),
            0.01,
        );
        assert!((folded.cpu_per_million().unwrap() - 0.01).abs() < 1e-9);
        assert!((folded.cpu_per_million_crossed().unwrap() - 0.5).abs() < 1e-9);
        let few = netprobe_storm(
            StormKind::Folded,
            1_000_000,
            tally(10, 999_990, 0, 999_000),
            0.01,
        );
        assert_eq!(few.cpu_per_million_crossed(), None);
        // Under --every-event: every event crosses.
        let cheap = StormRun {
            config: Config::NetprobeEveryEvent,
            ..netprobe_storm(StormKind::Folded, 1_000_000, tally(1_000_000, 0, 0, 0), 0.4)
        };
        let r = results(vec![], vec![folded, cheap]);
        assert_eq!(verdict(&r, GOAL), Verdict::Met);
        let figure = r
            .goals()
            .into_iter()
            .find(|g| g.goal.starts_with(GOAL))
            .unwrap()
            .figure;
        assert!(
            figure.contains("0.40 CPU-s per million records crossing (1000000 records"),
            "{figure}"
        );
        assert!(figure.contains("the folded storm: 0.01 CPU-s per million events processed (0.01 CPU-s, 20000 records crossed)"), "{figure}");
        let dear = StormRun {
            config: Config::NetprobeEveryEvent,
            ..netprobe_storm(
                StormKind::Folded,
                1_000_000,
                tally(1_000_000, 0, 0, 0),
                4.75,
            )
        };
        assert_eq!(verdict(&results(vec![], vec![dear]), GOAL), Verdict::Missed);
        // Only the folded storm: the goal is not judged on it.
        let folded = netprobe_storm(
            StormKind::Folded,
            1_000_000,
            tally(10, 999_990, 0, 999_000),
            0.01,
        );
        assert_eq!(
            verdict(&results(vec![], vec![folded]), GOAL),
            Verdict::NotSettled
        );
    }

    #[test]
    fn storms_that_read_different_counters_share_one_table() {
        let folded = netprobe_storm(StormKind::Folded, 1000, tally(10, 990, 0, 900), 0.1);
        let mut spoofed = netprobe_storm(StormKind::Spoofed, 3000, tally(10, 2990, 0, 2900), 0.1);
        spoofed.kernel.counts = vec![(
            "Tcp OutRsts".into(),
            1000,
            super::super::SPOOFED_COUNTS[0].2,
        )];
        spoofed.generated.spoofed = 1000;
        let table = results(vec![], vec![folded, spoofed]).table();
        assert!(
            table.contains("| kernel: Udp RcvbufErrors (one skb:kfree_skb each) | 1000 | - |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| kernel: Tcp OutRsts (one skb:kfree_skb + tcp:tcp_send_reset + skb:kfree_skb each) | - | 1000 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| 1000 / 0 / 0 | 3000 / 0 / 1000 |"),
            "{table}"
        );
    }

    #[test]
    fn spoofed_storm_goals_are_judged_only_at_the_rate_they_name() {
        const LOST: &str = "spoofed-source storm (200k kernel events a second or more)";
        const CPU: &str = "spoofed-source storm: at most 1 CPU-second";
        const NAMED: &str = "spoofed-source storm: folded per service";
        let spoofed = |kernel: u64, lost: u64, cpu: f64, distinct: Option<u64>| {
            let mut t = tally(10, kernel - lost - 10, lost, kernel - 100);
            t.distinct_sources = distinct.map(|n| (n, vec!["127.1.2.3".into()]));
            let mut r = netprobe_storm(StormKind::Spoofed, kernel, t, cpu);
            r.generated.spoofed = kernel / 3;
            r
        };
        // 3,000,000 events in 10 s: 300k a second.
        let r = results(vec![], vec![spoofed(3_000_000, 30_000, 2.9, Some(900_000))]);
        assert_eq!(verdict(&r, LOST), Verdict::Met);
        assert_eq!(verdict(&r, CPU), Verdict::Met);
        assert_eq!(verdict(&r, NAMED), Verdict::Met);
        let r = results(vec![], vec![spoofed(3_000_000, 30_001, 3.1, Some(400_000))]);
        assert_eq!(verdict(&r, LOST), Verdict::Missed);
        assert_eq!(verdict(&r, CPU), Verdict::Missed);
        assert_eq!(verdict(&r, NAMED), Verdict::Missed);
        assert_eq!(
            verdict(
                &results(vec![], vec![spoofed(3_000_000, 0, 0.1, None)]),
                NAMED
            ),
            Verdict::Missed
        );
        // 1,000,000 in 10 s is under the rate: nothing is settled.
        let slow = results(vec![], vec![spoofed(1_000_000, 0, 0.1, Some(333_333))]);
        assert_eq!(verdict(&slow, LOST), Verdict::NotSettled);
        assert_eq!(verdict(&slow, CPU), Verdict::NotSettled);
        // Not run at all.
        assert_eq!(verdict(&results(vec![], vec![]), LOST), Verdict::NotSettled);
    }

    #[test]
    fn memory_and_start_up_goals() {
        let r = results(
            vec![],
            vec![netprobe_storm(
                StormKind::Folded,
                10,
                tally(10, 0, 0, 0),
                0.1,
            )],
        );
        assert_eq!(verdict(&r, "RSS under 32 MiB"), Verdict::Met);
        assert_eq!(verdict(&r, "`ready` in under a second"), Verdict::Met);
        assert_eq!(verdict(&r, "kernel cost per event"), Verdict::NotSettled);
        // A distinct-flow storm that leaves 38 MiB behind misses it.
        let mut grown = netprobe_storm(StormKind::Distinct, 10, tally(10, 0, 0, 0), 0.1);
        grown.rss_end = 38 << 20;
        let r = results(
            vec![],
            vec![
                netprobe_storm(StormKind::Folded, 10, tally(10, 0, 0, 0), 0.1),
                grown,
            ],
        );
        assert_eq!(verdict(&r, "RSS under 32 MiB"), Verdict::Missed);
    }
}
