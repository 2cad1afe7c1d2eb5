//! One pass of the run loop's work on the ring buffer: each kernel record
//! decoded, credited for what in-kernel aggregation folded, put in context
//! (causes, OOM windows, retransmission summaries), folded into incidents
//! and written; and the losses counted on the way.

use crate::pipeline::run::RunOptions;
use netprobe_common::LOST_RINGBUF_FULL;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    families,
    kernel::kallsyms::Kallsyms,
    kernel::procinfo,
    kernel::tracer::Tracer,
    output::metrics::Metrics,
    output::sink::{AllSinksFailed, Output},
    pipeline::causes,
    pipeline::config::{Config, Filter},
    pipeline::decode,
    pipeline::incident::{Folder, RepeatKey},
    pipeline::kagg,
    pipeline::record::{self, Record},
    pipeline::timefmt,
};

/// Counts of events that did not become records, reported as `lost`.
#[derive(Default)]
pub(crate) struct Losses {
    pub(crate) reported_ringbuf: u64,
    pub(crate) undecodable: u64,
    pub(crate) last_decode_error: Option<String>,
}

impl Losses {
    pub(crate) fn count_undecodable(&mut self, n: u64, why: &dyn std::fmt::Display) {
        self.undecodable += n;
        self.last_decode_error = Some(why.to_string());
    }
}

/// What the daemon keeps to put network symptoms in context.
pub(crate) struct Symptoms {
    /// The open OOM window: when the kill was seen, and what it holds.
    pub(crate) stall: Option<(Instant, families::oom::OomStall)>,
    /// Retransmissions outside OOM windows since the last summary.
    pub(crate) retransmits: u64,
    pub(crate) last_summary: Instant,
    /// Which container and pod a victim's cgroup is.
    pub(crate) owners: crate::kernel::containers::Attributor,
    /// Timestamp clocks per source address among PAWS rejections.
    pub(crate) clocks: families::paws::NatClocks,
    /// The memory cgroups' OOM kill counts: the victim's cgroup when /proc
    /// no longer has it.
    pub(crate) oom_kills: procinfo::OomKills,
    /// What went wrong last on each flow: a symptom's own cause.
    pub(crate) causes: causes::Causes,
    /// Retransmits and timeouts without a cause, a minute at a time: the
    /// rate an OOM window's symptoms are held against.
    pub(crate) minutes: families::oom::MinuteCounts,
}

impl Symptoms {
    /// Retransmits and timeouts a minute, before now.
    pub(crate) fn baseline_per_min(&mut self) -> f64 {
        self.minutes.per_minute(Instant::now())
    }

    /// The victim and seconds since the kill, inside the window.
    pub(crate) fn oom_window(&self) -> Option<(u32, u64)> {
        let (at, stall) = self.stall.as_ref()?;
        let secs = at.elapsed().as_secs();
        (secs < families::oom::OOM_WINDOW_SECS).then_some((stall.pid, secs))
    }

    /// The OOM window's incident, once it has closed (or `now`).
    pub(crate) fn stall_closed(&mut self, now: bool) -> Option<Record> {
        let (at, _) = self.stall.as_ref()?;
        let secs = at.elapsed().as_secs();
        if !now && secs < families::oom::OOM_WINDOW_SECS {
            return None;
        }
        let (_, stall) = self.stall.take()?;
        stall.record(secs.min(families::oom::OOM_WINDOW_SECS))
    }

    /// The summary of folded retransmissions, once a minute (or `now`).
    pub(crate) fn summary(&mut self, now: bool) -> Option<Record> {
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
pub(crate) const DRAIN_BATCH: usize = 4096;

/// After a pass that handled events and emptied the buffer, the pause
/// before the next wait.
pub(crate) const GATHER_PAUSE: Duration = Duration::from_millis(10);

pub(crate) const DRAIN_TIME: Duration = Duration::from_millis(100);

/// What handling an event needs besides the state it changes.
pub(crate) struct Ctx<'a> {
    pub(crate) filter: &'a Filter,
    pub(crate) ksyms: &'a Kallsyms,
    pub(crate) clock: &'a timefmt::Clock,
    /// `--every-event`: no folding anywhere.
    pub(crate) every_event: bool,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
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
pub(crate) struct Pipeline {
    pub(crate) symptoms: Symptoms,
    pub(crate) folder: Folder,
    pub(crate) losses: Losses,
    pub(crate) credits: kagg::Credits,
}

/// Handles the ring buffer's records, up to a bound; returns how many,
/// and whether it emptied the buffer.
pub(crate) fn drain(
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
                handle(
                    &mut p.symptoms,
                    &mut p.folder,
                    ctx,
                    &d,
                    1,
                    d.ts_ns,
                    [0; 2],
                    out,
                )?;
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
pub(crate) fn read_kernel_counts(
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
    credits.per_service_records = tables.iter().map(|t| t.per_service_records).sum();
    credits.per_peer_records = tables.iter().map(|t| t.per_peer_records).sum();
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
pub(crate) fn credit(
    symptoms: &mut Symptoms,
    folder: &mut Folder,
    losses: &mut Losses,
    ctx: &Ctx,
    c: kagg::Credit<'_>,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    match c.of {
        Some(d) => handle(symptoms, folder, ctx, d, c.times, c.last_ns, c.sketch, out),
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
/// or counts them into what they repeat; `sketch`: the distinct flows of a
/// per-service record's repeats (`agg::sketch`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle(
    symptoms: &mut Symptoms,
    folder: &mut Folder,
    ctx: &Ctx,
    d: &decode::Decoded,
    times: u64,
    ts_ns: u64,
    sketch: netprobe_common::agg::sketch::Sketch,
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
    let flow = flow_of(d).and_then(causes::FlowKey::of_flow);
    if let Some(first) = raw
        .as_ref()
        .and_then(|k| folder.repeat(k, times, wall_ns, sketch))
    {
        if let Some(key) = flow {
            symptoms.causes.note_as(key, first, times, Instant::now());
        }
        return Ok(());
    }
    let mut rec = record::from_event(d, wall_ns, ctx.ksyms);
    if let Some(f) = flow_of(d) {
        use crate::pipeline::{decode::Fold, service};
        match d.fold {
            Fold::Service => service::mark_per_service(&mut rec, f, service::side(d)),
            Fold::Peer => service::mark_per_peer(&mut rec, f, service::side(d)),
            Fold::Flow => {}
        }
    }
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
        if let Some(n) = folder.offer_keyed(raw, &rec, Instant::now(), times, sketch) {
            rec.count = (n > 1).then_some(n);
            out.write(&rec)?;
        }
    }
    Ok(())
}

/// The packet's flow of a drop, a reset or a listen overflow.
fn flow_of(d: &decode::Decoded) -> Option<&crate::pipeline::packet::Flow> {
    match &d.event {
        decode::KernelEvent::Drop(e) => e.flow.as_ref(),
        decode::KernelEvent::ResetSent(e) | decode::KernelEvent::ResetReceived(e) => {
            e.flow.as_ref()
        }
        decode::KernelEvent::ListenOverflow(e) => e.flow.as_ref(),
        _ => None,
    }
}

pub(crate) fn report_losses(
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
pub(crate) fn final_summary(metrics: &Metrics, ran: Duration) -> Record {
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
