//! `netprobe run`: attach, then turn ring-buffer records into output records
//! until SIGINT or SIGTERM.

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

use netprobe_common::{LOST_RINGBUF_FULL, SKIPPED_NOT_SPECIFIED, SKIPPED_QUEUE_PURGE};

use crate::{
    families,
    kernel::caps,
    kernel::kallsyms::Kallsyms,
    kernel::probes,
    kernel::procinfo,
    kernel::sys,
    kernel::tracer::{self, Tracer},
    output::metrics::{self, Metrics},
    output::notify::Notifier,
    output::sink::{AllSinksFailed, Output, OutputKind},
    pipeline::causes,
    pipeline::config::{Config, Filter},
    pipeline::counters,
    pipeline::decode,
    pipeline::incident::{Folder, RepeatKey},
    pipeline::kagg,
    pipeline::record::{self, Record},
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

/// Counts of events that did not become records, reported as `lost`.
#[derive(Default)]
struct Losses {
    reported_ringbuf: u64,
    undecodable: u64,
    last_decode_error: Option<String>,
}

impl Losses {
    fn count_undecodable(&mut self, n: u64, why: &dyn std::fmt::Display) {
        self.undecodable += n;
        self.last_decode_error = Some(why.to_string());
    }
}

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
        if let Err(why) = tracer.set_aggregation(0, false) {
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
    if let Some(peak) = tracer.ring_buffer_peak() {
        summary.evidence("ring_buffer_peak_bytes", peak);
        summary.evidence("ring_buffer_bytes", u64::from(opts.ring_buffer));
    }
    out.write(&summary)?;
    // Dropping the tracer detaches every program.
    drop(tracer);
    Ok(0)
}

/// Turns in-kernel aggregation on, keeping both ports in its key when the
/// filter looks at ports; if the kernel's settings cannot be written,
/// says so (every event then crosses the ring buffer, as with
/// `--every-event`).
fn aggregate(tracer: &mut Tracer, config: &Config, out: &mut Output) -> Result<(), AllSinksFailed> {
    if let Err(why) = tracer.set_aggregation(kagg::WINDOW_NS, !config.filter.ports.is_empty()) {
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

/// What the daemon keeps to put network symptoms in context.
struct Symptoms {
    /// The open OOM window: when the kill was seen, and what it holds.
    stall: Option<(Instant, families::oom::OomStall)>,
    /// Retransmissions outside OOM windows since the last summary.
    retransmits: u64,
    last_summary: Instant,
    /// Which container and pod a victim's cgroup is.
    owners: crate::kernel::containers::Attributor,
    /// Timestamp clocks per source address among PAWS rejections.
    clocks: families::paws::NatClocks,
    /// The memory cgroups' OOM kill counts: the victim's cgroup when /proc
    /// no longer has it.
    oom_kills: procinfo::OomKills,
    /// What went wrong last on each flow: a symptom's own cause.
    causes: causes::Causes,
    /// Retransmits and timeouts without a cause, a minute at a time: the
    /// rate an OOM window's symptoms are held against.
    minutes: families::oom::MinuteCounts,
}

impl Symptoms {
    /// Retransmits and timeouts a minute, before now.
    fn baseline_per_min(&mut self) -> f64 {
        self.minutes.per_minute(Instant::now())
    }

    /// The victim and seconds since the kill, inside the window.
    fn oom_window(&self) -> Option<(u32, u64)> {
        let (at, stall) = self.stall.as_ref()?;
        let secs = at.elapsed().as_secs();
        (secs < families::oom::OOM_WINDOW_SECS).then_some((stall.pid, secs))
    }

    /// The OOM window's incident, once it has closed (or `now`).
    fn stall_closed(&mut self, now: bool) -> Option<Record> {
        let (at, _) = self.stall.as_ref()?;
        let secs = at.elapsed().as_secs();
        if !now && secs < families::oom::OOM_WINDOW_SECS {
            return None;
        }
        let (_, stall) = self.stall.take()?;
        stall.record(secs.min(families::oom::OOM_WINDOW_SECS))
    }

    /// The summary of folded retransmissions, once a minute (or `now`).
    fn summary(&mut self, now: bool) -> Option<Record> {
        let secs = self.last_summary.elapsed().as_secs();
        if self.retransmits == 0 || (!now && secs < 60) {
            return None;
        }
        let r = families::symptoms::retransmit_summary(self.retransmits, secs.max(1));
        self.retransmits = 0;
        self.last_summary = Instant::now();
        Some(r)
    }
}

/// At most this many records, or this long, per pass of the main loop (a
/// pass also waits up to 200 ms for the ring buffer, does the once-a-second
/// work and checks for a signal).
const DRAIN_BATCH: usize = 4096;
/// After a pass that handled events and emptied the buffer, the pause
/// before the next wait.
const GATHER_PAUSE: Duration = Duration::from_millis(10);
const DRAIN_TIME: Duration = Duration::from_millis(100);

/// What handling an event needs besides the state it changes.
struct Ctx<'a> {
    filter: &'a Filter,
    ksyms: &'a Kallsyms,
    clock: &'a timefmt::Clock,
    /// `--every-event`: no folding anywhere.
    every_event: bool,
}

impl<'a> Ctx<'a> {
    fn new(
        config: &'a Config,
        ksyms: &'a Kallsyms,
        clock: &'a timefmt::Clock,
        opts: &RunOptions,
    ) -> Ctx<'a> {
        Ctx {
            filter: &config.filter,
            ksyms,
            clock,
            every_event: opts.every_event,
        }
    }
}

/// The state the main loop keeps between events.
struct Pipeline {
    symptoms: Symptoms,
    folder: Folder,
    losses: Losses,
    credits: kagg::Credits,
}

/// Handles the ring buffer's records, up to a bound; returns how many,
/// and whether it emptied the buffer.
fn drain(
    p: &mut Pipeline,
    ctx: &Ctx,
    tracer: &mut Tracer,
    out: &mut Output,
) -> Result<(usize, bool), AllSinksFailed> {
    let Tracer {
        events, layouts, ..
    } = tracer;
    let Some(rb) = events else {
        return Ok((0, true));
    };
    // Bounded, so that a flood that outpaces the daemon cannot starve the
    // once-a-second work (counter records, losses, module follow-up): the
    // rest waits in the ring buffer, or is counted lost by the kernel.
    let mut n = 0;
    let started = Instant::now();
    let mut emptied = false;
    while n < DRAIN_BATCH && (n % 64 != 0 || started.elapsed() < DRAIN_TIME) {
        let Some(item) = rb.next() else {
            emptied = true;
            break;
        };
        n += 1;
        let event = decode::read_event(&item);
        drop(item);
        let e = match event {
            Ok(e) => e,
            Err(why) => {
                p.losses.count_undecodable(1, &why);
                continue;
            }
        };
        // The repeats the kernel counted of this CPU's previous record.
        if let Some(c) = p.credits.ended_by(&e) {
            credit(&mut p.symptoms, &mut p.folder, &mut p.losses, ctx, c, out)?;
        }
        match decode::decode(&e, layouts) {
            Ok(d) => {
                handle(&mut p.symptoms, &mut p.folder, ctx, &d, 1, d.ts_ns, out)?;
                p.credits.started_by(&e, Some(d));
            }
            Err(why) => {
                p.losses.count_undecodable(1, &why);
                p.credits.started_by(&e, None);
            }
        }
    }
    Ok((n, emptied))
}

/// Credits what each CPU's aggregation table has counted so far.
fn read_kernel_counts(
    p: &mut Pipeline,
    ctx: &Ctx,
    tracer: &Tracer,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    let tables = tracer.agg_tables();
    let now = timefmt::monotonic_ns();
    let mut failed = None;
    let Pipeline {
        symptoms,
        folder,
        losses,
        credits,
    } = p;
    for (cpu, t) in tables.iter().enumerate() {
        credits.read_table(cpu as u32, t, now, |c| {
            if failed.is_none() {
                failed = credit(symptoms, folder, losses, ctx, c, out).err();
            }
        });
    }
    failed.map_or(Ok(()), Err)
}

/// Handles repeats the kernel counted as repeats of the record they follow.
fn credit(
    symptoms: &mut Symptoms,
    folder: &mut Folder,
    losses: &mut Losses,
    ctx: &Ctx,
    c: kagg::Credit<'_>,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    match c.of {
        Some(d) => handle(symptoms, folder, ctx, d, c.times, c.last_ns, out),
        None => {
            losses.count_undecodable(
                c.times,
                &"repeats of a record that was not handled (undecodable, or still queued at exit)",
            );
            Ok(())
        }
    }
}

/// Turns `times` occurrences of `d` (the last at `ts_ns`) into a record,
/// or counts them into what they repeat.
fn handle(
    symptoms: &mut Symptoms,
    folder: &mut Folder,
    ctx: &Ctx,
    d: &decode::Decoded,
    times: u64,
    ts_ns: u64,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    let wall_ns = ctx.clock.wall_ns(ts_ns);
    let in_oom_window = symptoms.oom_window().is_some();
    // Retransmits outside an OOM window are folded into a summary a
    // minute: counted before any record is built.
    if matches!(d.event, decode::KernelEvent::Retransmit(_)) && !in_oom_window && !ctx.every_event {
        symptoms.retransmits += times;
        symptoms.minutes.add(times);
        return Ok(());
    }
    // An event identical to one already folded is only counted (in an OOM
    // window every symptom is looked at).
    let raw = (!in_oom_window)
        .then(|| RepeatKey::of(d, !ctx.filter.ports.is_empty()))
        .flatten();
    // The packet's own flow, for the causes of symptoms on it.
    let flow = match &d.event {
        decode::KernelEvent::Drop(e) => e.flow.as_ref(),
        decode::KernelEvent::ResetSent(e) | decode::KernelEvent::ResetReceived(e) => {
            e.flow.as_ref()
        }
        _ => None,
    }
    .and_then(causes::FlowKey::of_flow);
    if let Some(first) = raw.as_ref().and_then(|k| folder.repeat(k, times, wall_ns)) {
        if let Some(key) = flow {
            symptoms.causes.note_as(key, first, times, Instant::now());
        }
        return Ok(());
    }
    let mut rec = record::from_event(d, wall_ns, ctx.ksyms);
    match &d.event {
        decode::KernelEvent::Oom(o) => {
            // The victim's cgroup (and, before about 6.9, its name), while
            // /proc still has them; else the cgroup whose OOM kill count
            // went up (the victim is usually gone by now).
            let (comm, cgroup) = procinfo::process(Path::new("/proc"), o.pid);
            let facts = symptoms.oom_kills.after_kill();
            let cgroup = cgroup.or(facts.cgroup);
            if let Some(cg) = &cgroup {
                (rec.container, rec.pod) = symptoms.owners.of_cgroup(cg);
            }
            families::oom::add_process(&mut rec, comm.as_deref(), cgroup);
            // A global kill is a stall by itself; a kill confined to a
            // cgroup's limit (or one that cannot be told) is one only if
            // the symptoms after it say so.
            // A kill inside the window of one that stalled the node is part
            // of the same shortage.
            let inherited = symptoms
                .oom_window()
                .and(symptoms.stall.as_ref())
                .and_then(|(_, s)| s.evidence);
            let evidence = (facts.confined == Some(false))
                .then_some("global_kill")
                .or(inherited);
            match evidence {
                Some(e) => {
                    rec.evidence("stall_evidence", e);
                    rec.message
                        .push_str(&format!(": {}", families::oom::stall_evidence_text(e)));
                }
                None => {
                    rec.set_mode(families::oom::OOM_KILL);
                    if let Some(c) = facts.confined {
                        rec.evidence("confined_to_cgroup", c);
                    }
                }
            }
            // A new kill closes the previous window.
            if let Some(r) = symptoms.stall_closed(true) {
                out.write(&r)?;
            }
            let stall = families::oom::OomStall {
                pid: o.pid,
                comm: rec.comm.clone(),
                cgroup: rec.cgroup.clone(),
                container: rec.container.clone(),
                pod: rec.pod.clone(),
                ts: rec.ts.clone(),
                confined: facts.confined,
                evidence,
                baseline_per_min: symptoms.baseline_per_min(),
                ..Default::default()
            };
            symptoms.stall = Some((Instant::now(), stall));
        }
        decode::KernelEvent::Retransmit(_) | decode::KernelEvent::SocketError(_) => {
            // A cause seen on the symptom's own flow wins; without one, a
            // stall shows as retransmissions and timeouts (a refused or
            // reset connection has a cause of its own).
            let window = symptoms.oom_window();
            match symptoms.causes.of(&rec, Instant::now()).cloned() {
                Some(cause) => {
                    causes::attribute(&mut rec, &cause);
                    if let (Some(_), Some((_, stall))) = (window, symptoms.stall.as_mut()) {
                        stall.with_cause += times;
                    }
                }
                None => {
                    causes::unreachable_uncaused(&mut rec);
                    let stall_symptom = match &d.event {
                        decode::KernelEvent::SocketError(e) => {
                            e.errno == Some(i64::from(libc::ETIMEDOUT))
                        }
                        _ => true,
                    };
                    match (window, symptoms.stall.as_mut()) {
                        (Some((pid, secs)), Some((_, stall))) if stall_symptom => {
                            if let Some(e) = stall.symptom(&rec, times, secs) {
                                families::oom::attribute_to_oom(&mut rec, pid, secs, e);
                            }
                        }
                        (None, _) if stall_symptom => symptoms.minutes.add(times),
                        _ => {}
                    }
                }
            }
        }
        _ => symptoms.causes.note(&rec, times, Instant::now()),
    }
    symptoms.causes.netns(&mut rec);
    if let (Some(ns), None) = (rec.netns, &rec.container) {
        (rec.container, rec.pod) = symptoms.owners.of_netns(ns);
    }
    symptoms
        .clocks
        .annotate(&mut rec, (wall_ns / 1_000_000) as i64);
    if times > 1 {
        rec.count = Some(times);
    }
    if ctx.filter.admits(&rec) {
        if let Some(n) = folder.offer_keyed(raw, &rec, Instant::now(), times) {
            rec.count = (n > 1).then_some(n);
            out.write(&rec)?;
        }
    }
    Ok(())
}

fn report_losses(
    tracer: &Tracer,
    losses: &mut Losses,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    if let Some(lost) = &tracer.lost {
        if let Ok(per_cpu) = lost.get(&LOST_RINGBUF_FULL, 0) {
            let total: u64 = per_cpu.iter().sum();
            if total > losses.reported_ringbuf {
                let n = total - losses.reported_ringbuf;
                losses.reported_ringbuf = total;
                out.write(&Record::lost(n, "the ring buffer was full"))?;
            }
        }
    }
    if losses.undecodable > 0 {
        let why = format!(
            "records could not be decoded or handled ({})",
            losses.last_decode_error.take().unwrap_or_default()
        );
        out.write(&Record::lost(losses.undecodable, &why))?;
        losses.undecodable = 0;
    }
    Ok(())
}

/// The record written at exit: how long netprobe ran, the events it saw by
/// mode (incidents' repeats included) and what was lost.
fn final_summary(metrics: &Metrics, ran: Duration) -> Record {
    let (by_mode, lost) = metrics.totals();
    let total: u64 = by_mode.values().sum();
    let mut worst: Vec<(&String, &u64)> = by_mode.iter().collect();
    worst.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let listed: Vec<String> = worst.iter().map(|(m, n)| format!("{m} {n}")).collect();
    let mut r = Record::new(
        "summary",
        format!(
            "netprobe stopped after {}: {total} event(s){}, {lost} lost",
            timefmt::span(ran.as_secs()),
            if listed.is_empty() {
                String::new()
            } else {
                format!(" ({})", listed.join(", "))
            }
        ),
    );
    r.count = Some(total);
    for (m, n) in &by_mode {
        if let Some(e) = crate::families::catalogue::by_mode(m) {
            r.evidence(e.mode.mode, *n);
        }
    }
    r.evidence("lost", lost);
    r.evidence("uptime_s", ran.as_secs());
    r
}
