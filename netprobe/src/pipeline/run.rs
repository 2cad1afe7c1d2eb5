//! `netprobe run`: attach, then turn ring-buffer records into output records
//! until SIGINT or SIGTERM.

use crate::pipeline::handle::{
    credit, drain, final_summary, read_kernel_counts, report_losses, Ctx, Losses, Pipeline,
    Symptoms, GATHER_PAUSE,
};
use netprobe_common::{SKIPPED_NOT_SPECIFIED, SKIPPED_QUEUE_PURGE};

use std::{
    net::SocketAddr,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, Signal, SignalKind},
};

use crate::{
    families,
    kernel::caps,
    kernel::probes,
    kernel::procinfo,
    kernel::sys,
    kernel::tracer::{self, Tracer},
    output::metrics::{self, Metrics},
    output::notify::Notifier,
    output::sink::{AllSinksFailed, Output, OutputKind},
    pipeline::causes,
    pipeline::config::Config,
    pipeline::counters,
    pipeline::decode,
    pipeline::incident::Folder,
    pipeline::kagg,
    pipeline::record::Record,
    pipeline::timefmt,
};

pub struct RunOptions {
    pub output: OutputKind,
    /// Repeats of one mode and flow inside this window fold into one
    /// `incident` record (the config file's, else 60 s, when not given).
    pub incident_window: Option<Duration>,
    /// `--metrics`: where to serve Prometheus text.
    pub metrics: Option<SocketAddr>,
    /// `--config`: reloaded on SIGHUP.
    pub config: Option<PathBuf>,
    /// `--ring-buffer`: bytes.
    pub ring_buffer: u32,
    /// `--every-event`: every kernel event crosses the ring buffer and is
    /// written as its own record (no aggregation in the kernel, no
    /// incidents, no retransmission summary).
    pub every_event: bool,
}

const DEFAULT_INCIDENT_WINDOW: Duration = Duration::from_secs(60);
/// At shutdown, how long the kernel's last records are drained: the whole
/// exit stays within a second of SIGTERM.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(400);

pub fn run(opts: RunOptions) -> i32 {
    // A bad config file is refused before anything starts.
    let config = match &opts.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(why) => {
                tracing::error!("{why}");
                return 2;
            }
        },
        None => Config::default(),
    };
    let mut out = Output::for_kind(opts.output);
    let metrics = Arc::new(Metrics::default());
    out.metrics = Some(metrics.clone());
    // One thread drives everything (capabilities are per thread, and they
    // are dropped with no other thread alive): the ring buffer, signals,
    // timers and the metrics endpoint's clients. Namespace readers are
    // threads of their own (counters.rs), so no setns reaches this one.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the event loop: {e}");
            return 1;
        }
    };
    match runtime.block_on(daemon(&mut out, &opts, config, metrics)) {
        Ok(code) => code,
        Err(AllSinksFailed(why)) => {
            tracing::error!("no output works any more ({why}); exiting");
            1
        }
    }
}

/// The daemon proper; returns the exit code.
async fn daemon(
    out: &mut Output,
    opts: &RunOptions,
    mut config: Config,
    metrics: Arc<Metrics>,
) -> Result<i32, AllSinksFailed> {
    let started = Instant::now();
    let privilege = sys::cap_eff().map_or(
        Some("cannot read /proc/self/status".into()),
        sys::missing_privilege,
    );
    if let Some(why) = privilege {
        out.write(&Record::error(why.clone()))?;
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            tracing::error!("{why}");
        }
        return Ok(1);
    }
    // Bound before privileges are dropped (a port below 1024 needs them).
    let listener = match opts.metrics.map(|a| (a, metrics::bind(a))) {
        Some((_, Ok(l))) => Some(l),
        Some((addr, Err(e))) => {
            let why = format!("cannot serve metrics on {addr}: {e}");
            out.write(&Record::error(why.clone()))?;
            tracing::error!("{why}");
            return Ok(1);
        }
        None => None,
    };
    let mut signals = Signals::new(out)?;
    let notifier = Notifier::from_env();

    crate::kernel::sys::fix_malloc_thresholds();
    let mut tracer = tracer::start_with(opts.ring_buffer);
    let ksyms = std::mem::take(&mut tracer.ksyms);
    for s in &tracer.statuses {
        tracing::debug!(probe = s.spec.name, hook = %s.hook, result = ?s.result, "probe");
        out.write(&Record::probe(s.spec.name, &s.hook, s.result.clone()))?;
    }
    // The namespaces' counters as they stand: what moves after `ready` is news.
    let rule_limit = |c: &Config| {
        c.rule_limit
            .unwrap_or(crate::families::rules::DEFAULT_RULE_LIMIT)
    };
    let (sampler, unreadable) = counters::Sampler::baseline(rule_limit(&config));
    let sampler_rule_limit = sampler.rule_limit.clone();
    // What the first round found: namespaces it could not read, and
    // bloated rule sets (counted now, then once a minute).
    for mut r in unreadable {
        if r.ts.is_empty() {
            r.ts = timefmt::rfc3339(timefmt::now_unix_ns());
        }
        if config.filter.admits(&r) {
            out.write(&r)?;
        }
    }
    // Probes on modules (nf_conntrack) follow them loading and unloading.
    let follows_modules = tracer
        .statuses
        .iter()
        .any(|s| s.spec.kprobe.as_ref().is_some_and(|k| k.module.is_some()));
    // Everything is loaded and attached: keep only what the steady state
    // needs. No thread has been started yet (capabilities are per thread).
    let waits = tracer.statuses.iter().any(|s| {
        s.spec.kprobe.as_ref().is_some_and(|k| k.module.is_some())
            && (s.pending.is_some() || s.result.is_ok())
    });
    let privileges = match caps::drop_to(caps::steady_set(waits)) {
        Ok(d) => format!(
            "; capabilities kept: {} ({} dropped, no_new_privs set{})",
            caps::names(d.kept).join(", "),
            d.dropped.count_ones(),
            d.bounding_note
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        ),
        Err(why) => {
            out.write(&Record::error(format!(
                "could not drop capabilities after attaching ({why}); running with them"
            )))?;
            String::new()
        }
    };
    if let Some(l) = listener {
        if let Err(e) = metrics::serve(l, metrics.clone()) {
            out.write(&Record::error(format!("cannot serve metrics: {e}")))?;
        }
    }
    let attached = tracer.attached() as u32;
    let mut ready = Record::ready(attached, tracer.statuses.len() as u32 - attached);
    ready.message.push_str(&privileges);
    if opts.every_event {
        ready
            .message
            .push_str("; every event: each kernel event is a record, nothing is folded");
    } else if attached > 0 {
        aggregate(&mut tracer, &config, out)?;
    }
    if config != Config::default() {
        ready
            .message
            .push_str(&format!("; config: {}", config.describe()));
    }
    out.write(&ready)?;
    crate::kernel::sys::trim_heap();
    let _ = notifier.send(&format!(
        "READY=1\nSTATUS=tracing: {attached} probes attached"
    ));
    if attached == 0 {
        out.write(&Record::error(
            "counters-only mode: no probe could attach (see the probe records for why), so netprobe sees no kernel events and runs on procfs counters and sysctls alone"
                .into(),
        ))?;
    }

    let window = |c: &Config| {
        opts.incident_window
            .or(c.incident_window.map(Duration::from_secs))
            .unwrap_or(DEFAULT_INCIDENT_WINDOW)
    };
    let mut p = Pipeline {
        symptoms: Symptoms {
            stall: None,
            retransmits: 0,
            last_summary: Instant::now(),
            owners: crate::kernel::containers::Attributor::new(
                Path::new("/proc"),
                Path::new("/var/log/pods"),
            ),
            clocks: families::paws::NatClocks::default(),
            oom_kills: procinfo::OomKills::new(),
            causes: causes::Causes::default(),
            minutes: families::oom::MinuteCounts::default(),
        },
        folder: if opts.every_event {
            Folder::unfolded()
        } else {
            Folder::new(window(&config))
        },
        losses: Losses::default(),
        credits: kagg::Credits::default(),
    };
    let mut clock = timefmt::Clock::now();
    let mut last_tick = Instant::now();
    let mut last_ping = Instant::now();
    let oom_probe = tracer
        .statuses
        .iter()
        .any(|s| s.spec.name == crate::families::oom::OOM.name && s.result.is_ok());
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let counter_records = sampler.spawn(Duration::from_secs(1), sampler_stop.clone());
    // Readiness of the ring buffer (edge-triggered): cleared before a
    // drain, so a record written during it wakes the next wait.
    let ring = tracer.events.as_ref().and_then(|rb| {
        let fd = rb.as_fd().try_clone_to_owned().ok()?;
        // SAFETY: the descriptor is this AsyncFd's own duplicate: open,
        // the same description, for as long as the AsyncFd lives.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
    });
    // A drain that stopped at its bound left records: no wait before the
    // next (the kernel wakes a reader only once it has caught up).
    let mut more = false;
    loop {
        let woke = if more {
            // Metrics clients get their turn, and a signal is still seen.
            tokio::task::yield_now().await;
            signals.wait(None, Duration::ZERO).await
        } else {
            signals
                .wait(ring.as_ref(), Duration::from_millis(200))
                .await
        };
        if woke == Woke::Shutdown {
            break;
        }
        if woke == Woke::Reload {
            if let Some(path) = &opts.config {
                let _ = notifier.send("RELOADING=1");
                match Config::load(path) {
                    Ok(c) => {
                        config = c;
                        sampler_rule_limit.store(rule_limit(&config), Ordering::Relaxed);
                        if !opts.every_event {
                            p.folder.set_window(window(&config));
                            aggregate(&mut tracer, &config, out)?;
                        }
                        p.folder.forget_shortcuts();
                        out.write(&Record::new(
                            "config",
                            format!(
                                "configuration reloaded from {}: {}",
                                path.display(),
                                config.describe()
                            ),
                        ))?;
                    }
                    Err(why) => out.write(&Record::error(format!(
                        "configuration not reloaded, the previous one stays in force: {why}"
                    )))?,
                }
                let _ = notifier.send("READY=1");
            } else {
                out.write(&Record::error(
                    "SIGHUP: there is no configuration file to reload (netprobe run was started without --config)".into(),
                ))?;
            }
        }
        if notifier
            .watchdog
            .is_some_and(|every| last_ping.elapsed() >= every)
        {
            last_ping = Instant::now();
            let _ = notifier.send("WATCHDOG=1");
        }
        let ctx = Ctx::new(&config, &ksyms, &clock, opts);
        let (drained, emptied) = drain(&mut p, &ctx, &mut tracer, out)?;
        tracer.flush_probe_log();
        more = !emptied;
        // Events came and the buffer is empty: let the next ones gather
        // instead of waking for each (a wakeup costs more than an event).
        // 10 ms fills well under a tenth of the default buffer at this
        // machine's highest drop rate; an idle node is not delayed at all.
        // Metrics clients are served meanwhile.
        if drained > 0 && emptied {
            tokio::time::sleep(GATHER_PAUSE).await;
        }
        while let Ok(mut r) = counter_records.try_recv() {
            // The oom probe names each kill itself, with its victim.
            if r.kind == "oom" && oom_probe {
                continue;
            }
            if r.ts.is_empty() {
                r.ts = timefmt::rfc3339(timefmt::now_unix_ns());
            }
            // The same counters moving sample after sample fold into one
            // incident, as events do.
            if config.filter.admits(&r) && p.folder.offer_times(&r, Instant::now(), 1).is_some() {
                out.write(&r)?;
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let ctx = Ctx::new(&config, &ksyms, &clock, opts);
            read_kernel_counts(&mut p, &ctx, &tracer, out)?;
            clock = timefmt::Clock::now();
            report_losses(&tracer, &mut p.losses, out)?;
            metrics.set_kernel_cost(kernel_cost(&tracer, opts.ring_buffer, &p.credits));
            out.tick();
            if let Some(r) = p.symptoms.summary(false) {
                out.write(&r)?;
            }
            if let Some(r) = p.symptoms.stall_closed(false) {
                out.write(&r)?;
            }
            for r in p.folder.closed(Instant::now()) {
                out.write(&r)?;
            }
            if follows_modules {
                let live = probes::read_live_modules();
                for i in tracer::follow_modules(&mut tracer, &live) {
                    let s = &tracer.statuses[i];
                    out.write(&Record::probe(s.spec.name, &s.hook, s.result.clone()))?;
                }
            }
        }
    }
    sampler_stop.store(true, Ordering::Relaxed);
    drop(ring);
    let _ = notifier.send("STOPPING=1");
    // From now on every event is a record: nothing more is counted in the
    // kernel, and what was counted is credited after the drain.
    if !opts.every_event && tracer.agg_settings.is_some() {
        if let Err(why) = tracer.set_aggregation(0, false, 0) {
            out.write(&Record::error(format!("at exit, {why}")))?;
        }
    }
    // What the kernel wrote before the programs detach, for a moment.
    let deadline = Instant::now() + SHUTDOWN_DRAIN;
    let ctx = Ctx::new(&config, &ksyms, &clock, opts);
    while drain(&mut p, &ctx, &mut tracer, out)?.0 > 0 && Instant::now() < deadline {}
    tracer.flush_probe_log();
    read_kernel_counts(&mut p, &ctx, &tracer, out)?;
    // Whatever is still queued is not written, but counted; the repeats the
    // kernel counted of an earlier record that one ends are still handled.
    let mut left = 0u64;
    if let Some(rb) = tracer.events.as_mut() {
        // Bounded: the programs are still attached and may keep writing.
        while left < 1 << 20 {
            let Some(item) = rb.next() else { break };
            let event = decode::read_event(&item);
            drop(item);
            left += 1;
            if let Ok(e) = event {
                if let Some(c) = p.credits.ended_by(&e) {
                    credit(&mut p.symptoms, &mut p.folder, &mut p.losses, &ctx, c, out)?;
                }
                p.credits.started_by(&e, None);
            }
        }
    }
    // The repeats of those records: lost with them.
    read_kernel_counts(&mut p, &ctx, &tracer, out)?;
    report_losses(&tracer, &mut p.losses, out)?;
    if left > 0 {
        out.write(&Record::lost(
            left,
            "still queued when netprobe stopped (not written within 0.4 s)",
        ))?;
    }
    if let Some(r) = p.symptoms.summary(true) {
        out.write(&r)?;
    }
    if let Some(r) = p.symptoms.stall_closed(true) {
        out.write(&r)?;
    }
    for r in p.folder.flush() {
        out.write(&r)?;
    }
    out.finish()?;
    let mut summary = final_summary(&metrics, started.elapsed());
    summary.evidence("kernel_repeats", p.credits.total);
    // Drops skipped in the kernel by design: not failures, never lost.
    for (slot, name) in [
        (SKIPPED_NOT_SPECIFIED, "skipped_not_specified"),
        (SKIPPED_QUEUE_PURGE, "skipped_queue_purge"),
    ] {
        if let Some(n) = tracer.lost.as_ref().and_then(|m| m.get(&slot, 0).ok()) {
            summary.evidence(name, n.iter().sum::<u64>());
        }
    }
    add_kernel_cost(
        &mut summary,
        &kernel_cost(&tracer, opts.ring_buffer, &p.credits),
        &tracer.misses,
    );
    out.write(&summary)?;
    // Dropping the tracer detaches every program.
    drop(tracer);
    Ok(0)
}

/// What netprobe's programs have cost the kernel so far.
fn kernel_cost(tracer: &Tracer, ring_buffer: u32, credits: &kagg::Credits) -> metrics::KernelCost {
    metrics::KernelCost {
        per_service_records: credits.per_service_records,
        per_peer_records: credits.per_peer_records,
        stats_enabled: sys::bpf_stats_enabled(),
        programs: tracer.program_costs(),
        ring_buffer: tracer
            .ring_buffer_peak()
            .map(|peak| (peak, u64::from(ring_buffer))),
    }
}

/// The programs' runs, run time and skipped runs in the summary, whether
/// the kernel counted them (`bpf_stats_enabled`; when 0 the figures stand
/// still; `program_misses_counted`), and the ring buffer's peak.
fn add_kernel_cost(summary: &mut Record, cost: &metrics::KernelCost, misses: &Result<(), String>) {
    if let Some(on) = cost.stats_enabled {
        summary.evidence("bpf_stats_enabled", on);
    }
    summary.evidence("per_service_records", cost.per_service_records);
    summary.evidence("per_peer_records", cost.per_peer_records);
    if let Some((peak, size)) = cost.ring_buffer {
        summary.evidence("ring_buffer_peak_bytes", peak);
        summary.evidence("ring_buffer_bytes", size);
    }
    if cost.programs.is_empty() {
        return;
    }
    summary.evidence("program_misses_counted", misses.is_ok());
    let programs: serde_json::Map<String, serde_json::Value> = cost
        .programs
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({"runs": p.runs, "run_ns": p.run_ns});
            if let Some(n) = p.misses {
                v["misses"] = n.into();
            }
            (p.program.clone(), v)
        })
        .collect();
    summary.evidence("programs", serde_json::Value::Object(programs));
}

/// Turns in-kernel aggregation on, keeping both ports in its key when the
/// filter looks at ports; if the kernel's settings cannot be written,
/// says so (every event then crosses the ring buffer, as with
/// `--every-event`).
fn aggregate(tracer: &mut Tracer, config: &Config, out: &mut Output) -> Result<(), AllSinksFailed> {
    if let Err(why) = tracer.set_aggregation(
        kagg::WINDOW_NS,
        !config.filter.ports.is_empty(),
        kagg::CHURN_LIMIT,
    ) {
        out.write(&Record::error(format!(
            "in-kernel aggregation is off ({why}): every event crosses the ring buffer"
        )))?;
    }
    Ok(())
}

/// What ended a wait of the main loop.
#[derive(PartialEq, Eq, Debug)]
enum Woke {
    /// SIGINT or SIGTERM.
    Shutdown,
    /// SIGHUP.
    Reload,
    /// The ring buffer has records, or the wait timed out (the
    /// once-a-second work and the counters are looked at either way).
    Ring,
}

/// The signals the daemon handles (a signal it could not register for
/// keeps its default action, and says so).
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    fn new(out: &mut Output) -> Result<Signals, AllSinksFailed> {
        let mut take = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Ok(Some(s)),
            Err(e) => out
                .write(&Record::error(format!("cannot handle {name}: {e}")))
                .map(|()| None),
        };
        Ok(Signals {
            interrupt: take(SignalKind::interrupt(), "SIGINT")?,
            terminate: take(SignalKind::terminate(), "SIGTERM")?,
            hangup: take(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for a signal, records in the ring buffer, or `timeout`.
    async fn wait(&mut self, ring: Option<&AsyncFd<OwnedFd>>, timeout: Duration) -> Woke {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let readable = async {
            match ring.map(|r| r.readable()) {
                Some(r) => match r.await {
                    // Cleared before the drain: what comes during it
                    // wakes the next wait.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => tokio::time::sleep(timeout).await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = next(&mut self.interrupt) => Woke::Shutdown,
            () = next(&mut self.terminate) => Woke::Shutdown,
            () = next(&mut self.hangup) => Woke::Reload,
            () = readable => Woke::Ring,
            () = tokio::time::sleep(timeout) => Woke::Ring,
        }
    }
}
