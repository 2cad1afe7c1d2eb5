//! `netprobe run`: attach, then turn ring-buffer records into output records
//! until SIGINT or SIGTERM.

use std::{
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use netprobe_common::LOST_RINGBUF_FULL;

use crate::{
    counters,
    decode::{self, DecodeError},
    kallsyms::Kallsyms,
    probes::{self, Tracer},
    procinfo,
    record::{self, Record},
    sink::{AllSinksFailed, Output, OutputKind},
    sys, timefmt,
};

pub struct RunOptions {
    pub output: OutputKind,
}

/// Counts of events that did not become records, reported as `lost`.
#[derive(Default)]
struct Losses {
    reported_ringbuf: u64,
    undecodable: u64,
    last_decode_error: Option<String>,
}

pub fn run(opts: RunOptions) -> i32 {
    let mut out = Output::for_kind(opts.output);
    match daemon(&mut out) {
        Ok(code) => code,
        Err(AllSinksFailed(why)) => {
            eprintln!("netprobe: error: no output works any more ({why}); exiting");
            1
        }
    }
}

/// The daemon proper; returns the exit code.
fn daemon(out: &mut Output) -> Result<i32, AllSinksFailed> {
    let privilege = sys::cap_eff().map_or(
        Some("cannot read /proc/self/status".into()),
        sys::missing_privilege,
    );
    if let Some(why) = privilege {
        out.write(&Record::error(why.clone()))?;
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            eprintln!("netprobe: error: {why}");
        }
        return Ok(1);
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, shutdown.clone()) {
            out.write(&Record::error(format!("cannot handle signal {sig}: {e}")))?;
        }
    }

    let mut tracer = probes::start();
    let ksyms = std::mem::take(&mut tracer.ksyms);
    for s in &tracer.statuses {
        out.write(&Record::probe(s.spec.name, &s.hook, s.result.clone()))?;
    }
    // The namespaces' counters as they stand: what moves after `ready` is news.
    let (sampler, unreadable) = counters::Sampler::baseline();
    for r in &unreadable {
        out.write(r)?;
    }
    let attached = tracer.attached() as u32;
    out.write(&Record::ready(
        attached,
        tracer.statuses.len() as u32 - attached,
    ))?;
    if attached == 0 {
        out.write(&Record::error(
            "no probe could attach: netprobe is running but sees no kernel events (see the probe records for why)"
                .into(),
        ))?;
    }

    let mut losses = Losses::default();
    let mut clock = timefmt::Clock::now();
    let mut last_tick = Instant::now();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let counter_records = sampler.spawn(Duration::from_secs(1), sampler_stop.clone());
    while !shutdown.load(Ordering::Relaxed) {
        wait_readable(&tracer, Duration::from_millis(200));
        drain(&mut tracer, &ksyms, &clock, &mut losses, out)?;
        while let Ok(mut r) = counter_records.try_recv() {
            if r.ts.is_empty() {
                r.ts = timefmt::rfc3339(timefmt::now_unix_ns());
            }
            out.write(&r)?;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            clock = timefmt::Clock::now();
            report_losses(&tracer, &mut losses, out)?;
        }
    }
    sampler_stop.store(true, Ordering::Relaxed);
    drain(&mut tracer, &ksyms, &clock, &mut losses, out)?;
    report_losses(&tracer, &mut losses, out)?;
    // Dropping the tracer detaches every program.
    drop(tracer);
    Ok(0)
}

fn wait_readable(tracer: &Tracer, timeout: Duration) {
    let Some(rb) = &tracer.events else {
        std::thread::sleep(timeout);
        return;
    };
    let mut pfd = libc::pollfd {
        fd: rb.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd. EINTR (a signal) just returns early.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
}

fn drain(
    tracer: &mut Tracer,
    ksyms: &Kallsyms,
    clock: &timefmt::Clock,
    losses: &mut Losses,
    out: &mut Output,
) -> Result<(), AllSinksFailed> {
    let Tracer {
        events, layouts, ..
    } = tracer;
    let Some(rb) = events else { return Ok(()) };
    while let Some(item) = rb.next() {
        let decoded = decode::read_event(&item).and_then(|e| decode::decode(&e, layouts));
        drop(item);
        match decoded {
            Ok(d) => {
                let mut rec = record::from_event(&d, clock.wall_ns(d.ts_ns), ksyms);
                if let decode::KernelEvent::Oom(o) = &d.event {
                    // The victim's cgroup (and, before about 6.9, its
                    // name), while /proc still has them.
                    let (comm, cgroup) = procinfo::process(Path::new("/proc"), o.pid);
                    record::add_process(&mut rec, comm.as_deref(), cgroup);
                }
                out.write(&rec)?
            }
            Err(e) => {
                losses.undecodable += 1;
                losses.last_decode_error = Some(DecodeError::to_string(&e));
            }
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
            "records could not be decoded ({})",
            losses.last_decode_error.take().unwrap_or_default()
        );
        out.write(&Record::lost(losses.undecodable, &why))?;
        losses.undecodable = 0;
    }
    Ok(())
}
