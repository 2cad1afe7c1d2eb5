//! `cargo xtask bench`: what netprobe costs, measured side by side with no
//! tracer and with bpftrace on the same tracepoints (issue 7; the method and
//! the latest figures are in BENCHMARKS.md).
//!
//! - start-up: exec to the `ready` record, several runs;
//! - overhead: a healthy loopback TCP workload (short connections, and
//!   requests on one connection) in a namespace of its own, with no tracer,
//!   with netprobe and with bpftrace, interleaved in rounds; medians and
//!   their ratio to the run without a tracer;
//! - storm: drops and resets as fast as two threads make them, once under
//!   netprobe and once under bpftrace: the kernel's own counts (snmp
//!   counter deltas), what netprobe accounted for (records written,
//!   repeats folded into incidents, events lost) and what it did not, its
//!   CPU per million events and its peak RSS; and, from the kernel's BPF
//!   statistics (`kernel.bpf_stats_enabled`), the nanoseconds per event of
//!   each program, netprobe's next to bpftrace's on the same tracepoint.
//!
//! The goals of the issue are reported as met or missed with their
//! figures, never enforced. Everything it makes (namespaces, processes,
//! the sysctl) is undone on exit, on error and on Ctrl-C.

mod bpf;
pub mod compare;
mod netns;
mod procfs;
mod refused;
mod report;
pub mod scale;
mod tracer;
mod workload;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, setup};
use netns::Netns;
use report::{Kernel, Overhead, Results, StormKind, StormRun, Workload};
use tracer::{Bpftrace, Netprobe};

/// What the bench needs beyond netprobe's own build.
pub const REQUIREMENTS: &[setup::Requirement] = &[setup::Requirement {
    what: "bpftrace (what netprobe is compared with)",
    find: || cmd::which("bpftrace").map(|p| p.display().to_string()),
    install: &[setup::Step::Apt(&["bpftrace"])],
}];

#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per overhead measurement.
    pub secs: u64,
    /// Rounds of the three configurations.
    pub rounds: u32,
    /// Seconds of each storm.
    pub storm_secs: u64,
    /// Start-ups timed.
    pub starts: u32,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// True once SIGINT or SIGTERM has come: every loop stops, and the
/// namespaces, processes and sysctl are undone on the way out.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// The tracer of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    None,
    Netprobe,
    Bpftrace,
    /// netprobe with `--every-event` (storms only): no aggregation, for
    /// the side-by-side measure of what it saves.
    NetprobeEveryEvent,
    /// Programs that do nothing on netprobe's tracepoints (connect rates
    /// only): the floor any program there costs.
    Empty,
}

pub const CONFIGS: [Config; 3] = [Config::None, Config::Netprobe, Config::Bpftrace];

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::None => "no tracer",
            Config::Netprobe => "netprobe",
            Config::Bpftrace => "bpftrace",
            Config::NetprobeEveryEvent => "netprobe --every-event",
            Config::Empty => "empty programs",
        }
    }
}

/// Where everything is: the netprobe binary and target/bench.
struct Bench {
    bin: PathBuf,
    out: PathBuf,
    /// `category:name` of the tracepoints netprobe attaches here.
    tracepoints: Vec<String>,
    script: PathBuf,
}

/// A running tracer of either kind (or none).
enum Running {
    None,
    Netprobe(Netprobe),
    Bpftrace(Bpftrace),
    Empty(bpf::Empty),
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::None | Running::Empty(_) => None,
            Running::Netprobe(n) => Some(n.pid),
            Running::Bpftrace(b) => Some(b.pid),
        }
    }

    fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.pid()?)
    }

    fn stop(self) -> Result<Option<tracer::Tally>> {
        match self {
            Running::None => Ok(None),
            Running::Empty(programs) => {
                // Detaches them.
                drop(programs);
                Ok(None)
            }
            Running::Netprobe(n) => n.stop().map(Some),
            Running::Bpftrace(b) => b.stop().map(|()| None),
        }
    }
}

impl Bench {
    /// `kfree_skb` for `skb:kfree_skb`, as the kernel names attachments.
    fn bare_tracepoints(&self) -> Vec<String> {
        self.tracepoints
            .iter()
            .map(|t| t.split_once(':').map_or(t.as_str(), |(_, n)| n).to_string())
            .collect()
    }

    fn start(&self, config: Config) -> Result<Running> {
        Ok(match config {
            Config::None => Running::None,
            Config::Netprobe => Running::Netprobe(Netprobe::start(
                &self.bin,
                &self.out.join("netprobe.stderr"),
                &[],
            )?),
            Config::NetprobeEveryEvent => Running::Netprobe(Netprobe::start(
                &self.bin,
                &self.out.join("netprobe.stderr"),
                &["--every-event"],
            )?),
            Config::Bpftrace => Running::Bpftrace(Bpftrace::start(
                &self.script,
                self.tracepoints.len(),
                &self.out.join("bpftrace.stderr"),
            )?),
            Config::Empty => Running::Empty(bpf::Empty::attach(&self.tracepoints)?),
        })
    }
}

/// Runs the whole bench with the release netprobe `bin` (as root: the
/// caller checks).
pub fn run(bin: &Path, opts: &Options) -> Result<()> {
    let started = Instant::now();
    let out = prepare()?;
    let mut bench = Bench {
        bin: bin.to_path_buf(),
        script: out.join("netprobe-tracepoints.bt"),
        out,
        tracepoints: Vec::new(),
    };

    println!("xtask: bench: start-up, {} runs", opts.starts);
    let (startup, tracepoints) = startup(&bench, opts.starts)?;
    if tracepoints.is_empty() {
        bail!("netprobe attached no tracepoint here: nothing to compare");
    }
    let script = tracer::bpftrace_script(&tracepoints, tracer::tracefs_format);
    tracer::write_file(&bench.script, &script)?;
    println!(
        "xtask: bench: netprobe attaches {}; bpftrace runs {}",
        tracepoints.join(", "),
        bench.script.display()
    );
    bench.tracepoints = tracepoints;

    println!(
        "xtask: bench: overhead, {} rounds x 3 configurations x 2 workloads x {} s",
        opts.rounds, opts.secs
    );
    let (overhead, healthy_events, healthy_connections) = overhead(&bench, opts)?;

    println!(
        "xtask: bench: storm, {} s each under netprobe, netprobe --every-event and bpftrace; \
         then a storm of distinct flows under netprobe",
        opts.storm_secs
    );
    let stats = bpf::StatsEnabled::new()?;
    println!(
        "xtask: bench: netprobe's kernel time on the healthy workload, {} s",
        2 * opts.secs
    );
    let healthy_cost = healthy_cost(&bench, Duration::from_secs(2 * opts.secs))?;
    let storm_secs = Duration::from_secs(opts.storm_secs);
    let netprobe = storm(&bench, Config::Netprobe, StormKind::Folded, storm_secs)?;
    let every = storm(
        &bench,
        Config::NetprobeEveryEvent,
        StormKind::Folded,
        storm_secs,
    )?;
    let bpftrace = storm(&bench, Config::Bpftrace, StormKind::Folded, storm_secs)?;
    let distinct = storm(&bench, Config::Netprobe, StormKind::Distinct, storm_secs)?;
    let spoofed = storm(&bench, Config::Netprobe, StormKind::Spoofed, storm_secs)?;
    drop(stats);

    println!(
        "xtask: bench: refused connections, {} rounds x {} s per configuration at ports {} and {}; \
         then the port-{} storm under --output journald, {} s",
        opts.rounds,
        opts.secs,
        refused::LOW_PORT,
        refused::HIGH_PORT,
        refused::HIGH_PORT,
        opts.storm_secs
    );
    let connect_rates =
        refused::connect_rates(&bench, opts.rounds, Duration::from_secs(opts.secs))?;
    let journald = refused::journald_storm(
        &bench.bin,
        &bench.out.join("netprobe-journald.stderr"),
        storm_secs,
    )?;
    println!(
        "xtask: bench: journald storm: {} refused in {:.1} s, {} kernel events, {} events + {} lost by netprobe, {} journal entries",
        journald.refused, journald.secs, journald.kernel_events, journald.events, journald.lost, journald.journal_entries
    );

    let results = Results {
        machine: report::Machine::here(),
        options: opts.clone(),
        startup,
        overhead,
        storms: vec![netprobe, every, bpftrace, distinct, spoofed],
        tracepoints: bench.tracepoints.clone(),
        healthy_events,
        healthy_connections,
        healthy_cost: Some(healthy_cost),
        connect_rates,
        journald: Some(journald),
        took: started.elapsed(),
    };
    // The figures first: a run takes minutes.
    let json = bench.out.join("results.json");
    tracer::write_file(&json, &serde_json::to_string_pretty(&results.json())?)?;
    print!("{}", results.table());
    println!("xtask: bench: written to {}", json.display());
    Ok(())
}

/// Exec to `ready`, `n` times (BTF parsing and program loading included);
/// also the tracepoints the probes attached to.
fn startup(bench: &Bench, n: u32) -> Result<(Vec<f64>, Vec<String>)> {
    let mut times = Vec::new();
    let mut tracepoints = Vec::new();
    for _ in 0..n.max(1) {
        let (t, tps) = start_once(bench)?;
        times.push(t);
        tracepoints = tps;
    }
    Ok((times, tracepoints))
}

/// One start, exec to `ready` in seconds, and the tracepoints attached.
fn start_once(bench: &Bench) -> Result<(f64, Vec<String>)> {
    check_interrupted()?;
    let np = Netprobe::start(&bench.bin, &bench.out.join("netprobe.stderr"), &[])?;
    let out = (np.ready_after.as_secs_f64(), np.tracepoints.clone());
    np.stop()?;
    Ok(out)
}

/// `cargo xtask bench --baseline BEFORE`: the release netprobe `after`
/// against the build `before`, side by side (as root: the caller checks).
pub fn compare(after: &Path, before: &Path, opts: &Options) -> Result<()> {
    compare::run(after, before, opts, &prepare()?)
}

/// `cargo xtask bench --scale`: the once-a-second work's cost beside
/// `namespaces` empty namespaces each, then beside the last count and
/// `processes` idle processes (as root: the caller checks).
pub fn scale(bin: &Path, namespaces: &[usize], processes: usize) -> Result<()> {
    let out = prepare()?;
    // Ten seconds: /proc is listed at least that often on a node of many
    // processes, so each window holds a listing.
    let (windows, secs) = (6, 10);
    let points = scale::run(bin, &out, namespaces, processes, windows, secs)?;
    print!("{}", scale::table(&points, windows, secs));
    Ok(())
}

/// Ctrl-C and SIGTERM undo what a bench made; what a bench killed outright
/// left is removed; returns target/bench.
fn prepare() -> Result<PathBuf> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    netns::remove_stale();
    let out = cmd::target_dir()?.join("bench");
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

/// The rates per workload and the tracers' CPU (percent of a core); the
/// events netprobe saw meanwhile, and the short connections made under it.
fn overhead(bench: &Bench, opts: &Options) -> Result<(Vec<Overhead>, u64, u64)> {
    let ns = Netns::create("overhead")?;
    // Short connections leave TIME_WAIT behind: the whole port range.
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    let secs = Duration::from_secs(opts.secs);
    let mut results = vec![
        Overhead::new(Workload::Connections),
        Overhead::new(Workload::Requests),
    ];
    let (mut events, mut connections) = (0, 0);
    let mut busy = Overhead::new(Workload::TracerCpu);
    for round in 0..opts.rounds as usize {
        // Each configuration goes first in turn.
        for i in 0..CONFIGS.len() {
            check_interrupted()?;
            let config = CONFIGS[(round + i) % CONFIGS.len()];
            let running = bench.start(config)?;
            // Let the tracer's start-up work (namespace scan, first
            // counter sample) pass.
            thread::sleep(Duration::from_millis(500));
            let (t0, cpu0) = (Instant::now(), running.cpu_seconds());
            let measured = [
                workload::connections(&ns, secs),
                workload::requests(&ns, secs),
            ];
            if let (Some(a), Some(b)) = (cpu0, running.cpu_seconds()) {
                busy.add(config, (b - a) / t0.elapsed().as_secs_f64() * 100.0);
            }
            if let Some(t) = running.stop()? {
                events += t.processed() + t.lost;
                if let Ok(r) = &measured[0] {
                    connections += r.ops;
                }
            }
            for (r, rate) in results.iter_mut().zip(measured) {
                let rate = rate?;
                r.add(config, rate.per_sec());
            }
            println!(
                "xtask: bench: round {}/{}, {}: {:.0} connections/s, {:.0} requests/s",
                round + 1,
                opts.rounds,
                config.name(),
                results[0].last(config),
                results[1].last(config),
            );
        }
    }
    results.push(busy);
    Ok((results, events, connections))
}

/// netprobe's programs' kernel time while the healthy workload (short
/// connections) runs under it, against the CPU the host was busy (issue 17,
/// outcome 3). bpf_stats is on (the caller's), and costs a little per run
/// itself, so this is measured apart from the throughput rounds.
fn healthy_cost(bench: &Bench, dur: Duration) -> Result<report::HealthyCost> {
    check_interrupted()?;
    let ns = Netns::create("healthycost")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    let running = bench.start(Config::Netprobe)?;
    let pid = running.pid().expect("netprobe runs");
    thread::sleep(Duration::from_millis(500));
    let names = bench.bare_tracepoints();
    let busy = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| procfs::host_busy_ns(&t))
            .context("/proc/stat has no cpu line")
    };
    let (before, busy0, t0) = (bpf::programs(pid, &names)?, busy()?, Instant::now());
    let rate = workload::connections(&ns, dur);
    let (after, busy1, secs) = (
        bpf::programs(pid, &names)?,
        busy()?,
        t0.elapsed().as_secs_f64(),
    );
    running.stop()?;
    Ok(report::HealthyCost {
        programs: bpf::by_tracepoint(&bpf::since(&after, &before)),
        busy_ns: busy1.saturating_sub(busy0),
        connections: rate?.ops,
        secs,
    })
}

/// What the storm's kernel counters say, and the tracepoints each count
/// stands for (one hit of each per count; verified with the run counts).
pub const KERNEL_COUNTS: &[(&str, &str, &[&str])] = &[
    // The datagram dropped for a full receive buffer (SOCKET_RCVBUFF).
    ("Udp", "RcvbufErrors", &["skb:kfree_skb"]),
    // The SYN to the closed port dropped (NO_SOCKET), and the RST sent.
    ("Tcp", "OutRsts", &["skb:kfree_skb", "tcp:tcp_send_reset"]),
    // The RST received in SYN_SENT, and ECONNREFUSED reported.
    (
        "Tcp",
        "AttemptFails",
        &["tcp:tcp_receive_reset", "sock:inet_sk_error_report"],
    ),
];

/// The spoofed-source storm's: each RST sent answers a SYN dropped
/// (NO_SOCKET), and is itself dropped on arrival at its local, spoofed
/// destination (NO_SOCKET).
pub const SPOOFED_COUNTS: &[(&str, &str, &[&str])] = &[(
    "Tcp",
    "OutRsts",
    &["skb:kfree_skb", "tcp:tcp_send_reset", "skb:kfree_skb"],
)];

fn kernel_counts(
    kind: StormKind,
) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    match kind {
        StormKind::Spoofed => SPOOFED_COUNTS,
        _ => KERNEL_COUNTS,
    }
}

fn snmp_counts(text: &str, kind: StormKind) -> Result<Vec<u64>> {
    kernel_counts(kind)
        .iter()
        .map(|(proto, name, _)| {
            procfs::snmp(text, proto, name)
                .ok_or_else(|| anyhow::anyhow!("no {proto} {name} in /proc/net/snmp"))
        })
        .collect()
}

/// One storm under `config`: the counters before and after, the tracer's
/// programs' statistics, its CPU and memory, and (netprobe) its tally.
fn storm(bench: &Bench, config: Config, kind: StormKind, dur: Duration) -> Result<StormRun> {
    check_interrupted()?;
    let ns = Netns::create("storm")?;
    let targets = workload::Targets::new(&ns)?;
    if kind == StormKind::Distinct {
        // The clients' ports above every target port.
        ns.sysctl(
            "net.ipv4.ip_local_port_range",
            &format!("{} 65000", workload::DISTINCT_PORTS.end),
        )?;
    }
    let running = bench.start(config)?;
    if let Running::Netprobe(np) = &running {
        // The distinct storm's ports are thousands: all records count as
        // the storm's (the quiet host adds next to nothing).
        match kind {
            StormKind::Folded => np.count_only(&targets.ports()?),
            StormKind::Spoofed => np.count_only(&[workload::SPOOFED_PORT]),
            StormKind::Distinct => {}
        }
    }
    let pid = running.pid().expect("a storm runs under a tracer");
    let rss_ready = procfs::rss(pid).unwrap_or(0);
    thread::sleep(Duration::from_millis(500));
    let names = bench.bare_tracepoints();
    let before = bpf::programs(pid, &names)?;
    let snmp_before = snmp_counts(&ns.snmp()?, kind)?;
    let cpu_before = procfs::cpu_seconds(pid).unwrap_or(0.0);
    let generated = match kind {
        StormKind::Folded => workload::storm(&ns, &targets, dur),
        StormKind::Distinct => workload::distinct_storm(&ns, dur),
        StormKind::Spoofed => workload::spoofed_syns(&ns, dur),
    };
    let snmp_after = snmp_counts(&ns.snmp()?, kind)?;
    let after = bpf::programs(pid, &names)?;
    let generated = generated?;
    // Let netprobe drain what is queued: until its tally stops moving.
    if let Running::Netprobe(np) = &running {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = np.tally().accounted();
        while Instant::now() < deadline && !interrupted() {
            thread::sleep(Duration::from_secs(1));
            let now = np.tally().accounted();
            if now == last {
                break;
            }
            last = now;
        }
    }
    let cpu = procfs::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let peak_rss = procfs::peak_rss(pid).unwrap_or(0);
    let rss_end = procfs::rss(pid).unwrap_or(0);
    let tally = running.stop()?;
    let run = StormRun {
        config,
        kind,
        generated,
        kernel: Kernel {
            counts: kernel_counts(kind)
                .iter()
                .zip(snmp_before.iter().zip(&snmp_after))
                .map(|((proto, name, tps), (b, a))| {
                    (format!("{proto} {name}"), a.saturating_sub(*b), *tps)
                })
                .collect(),
        },
        programs: bpf::by_tracepoint(&bpf::since(&after, &before)),
        cpu_seconds: cpu,
        peak_rss,
        rss_ready,
        rss_end,
        tally,
    };
    println!(
        "xtask: bench: {} storm under {}: {}",
        kind.name(),
        config.name(),
        run.brief()
    );
    Ok(run)
}
