//! `cargo xtask bench --baseline BIN`: the netprobe built here against
//! another build of it (the one before a change), side by side in one run
//! on one machine. Start-ups alternate between the two; each round runs a
//! folded storm, a distinct-flow storm and a spoofed-source storm under each, the build that goes
//! first alternating by round. The table gives each figure for both and
//! their ratio (paired by round where the figure is per round), so a
//! change's cost is read from one run rather than from two days' figures.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::{
    bpf, check_interrupted,
    report::{median, mib, Machine},
    start_once, storm, Bench, Config, Options, StormKind, StormRun,
};

/// One build under comparison and what it measured.
pub struct Side {
    pub name: &'static str,
    pub bin: PathBuf,
    pub size: u64,
    pub starts: Vec<f64>,
    pub folded: Vec<StormRun>,
    pub distinct: Vec<StormRun>,
    pub spoofed: Vec<StormRun>,
}

impl Side {
    fn new(name: &'static str, bin: &Path) -> Result<Side> {
        let size = std::fs::metadata(bin)
            .with_context(|| format!("{}", bin.display()))?
            .len();
        Ok(Side {
            name,
            bin: bin.to_path_buf(),
            size,
            starts: Vec::new(),
            folded: Vec::new(),
            distinct: Vec::new(),
            spoofed: Vec::new(),
        })
    }

    fn storms(&self) -> impl Iterator<Item = &StormRun> {
        self.folded
            .iter()
            .chain(&self.distinct)
            .chain(&self.spoofed)
    }
}

/// Runs the comparison of `after` (built here) with `before`.
pub fn run(after: &Path, before: &Path, opts: &Options, out: &Path) -> Result<()> {
    let started = Instant::now();
    let machine = Machine::here();
    let mut sides = [Side::new("before", before)?, Side::new("after", after)?];
    let bench_of = |side: &Side, tracepoints: &[String]| Bench {
        bin: side.bin.clone(),
        out: out.to_path_buf(),
        tracepoints: tracepoints.to_vec(),
        script: out.join("unused.bt"),
    };
    println!(
        "xtask: bench: {} against {}: start-up, {} runs each, alternating",
        after.display(),
        before.display(),
        opts.starts
    );
    let mut tracepoints = Vec::new();
    for i in 0..opts.starts.max(1) as usize {
        for k in [i % 2, 1 - i % 2] {
            let (t, tps) = start_once(&bench_of(&sides[k], &[]))?;
            sides[k].starts.push(t);
            tracepoints = tps;
        }
    }
    let storm_secs = Duration::from_secs(opts.storm_secs);
    println!(
        "xtask: bench: {} rounds of a folded and a distinct-flow storm of {} s under each build",
        opts.rounds, opts.storm_secs
    );
    let stats = bpf::StatsEnabled::new()?;
    for round in 0..opts.rounds.max(1) as usize {
        for kind in [StormKind::Folded, StormKind::Distinct, StormKind::Spoofed] {
            for k in [round % 2, 1 - round % 2] {
                check_interrupted()?;
                let b = bench_of(&sides[k], &tracepoints);
                let run = storm(&b, Config::Netprobe, kind, storm_secs)?;
                println!("xtask: bench: round {}, {}", round + 1, sides[k].name);
                match kind {
                    StormKind::Folded => sides[k].folded.push(run),
                    StormKind::Distinct => sides[k].distinct.push(run),
                    StormKind::Spoofed => sides[k].spoofed.push(run),
                }
            }
        }
    }
    drop(stats);
    let figures = figures(&sides, &tracepoints);
    print!(
        "{}",
        table(
            &sides,
            &figures,
            opts,
            &machine,
            started.elapsed(),
            &tracepoints
        )
    );
    let json_path = out.join("compare.json");
    let json = json!({
        "before": before.display().to_string(),
        "after": after.display().to_string(),
        "figures": figures.iter().map(Figure::json).collect::<Vec<Value>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("{}", json_path.display()))?;
    println!("xtask: bench: written to {}", json_path.display());
    Ok(())
}

/// One line of the comparison: a figure for each build, and how lower or
/// higher is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// after / before: of the two figures, or the mean of the rounds'
    /// ratios where the figure is per round.
    pub ratio: Option<f64>,
    pub unit: &'static str,
}

impl Figure {
    fn of(name: &str, unit: &'static str, before: Option<f64>, after: Option<f64>) -> Figure {
        let ratio = match (before, after) {
            (Some(b), Some(a)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Figure {
            name: name.to_string(),
            before,
            after,
            ratio,
            unit,
        }
    }

    /// Medians of per-round figures, and the mean of their ratios paired by
    /// round (the rounds ran side by side: each pair shared the machine's
    /// state of the moment).
    fn paired(
        name: &str,
        unit: &'static str,
        before: &[Option<f64>],
        after: &[Option<f64>],
    ) -> Figure {
        let b: Vec<f64> = before.iter().flatten().copied().collect();
        let a: Vec<f64> = after.iter().flatten().copied().collect();
        let ratios: Vec<f64> = before
            .iter()
            .zip(after)
            .filter_map(|(b, a)| match (b, a) {
                (Some(b), Some(a)) if *b > 0.0 => Some(a / b),
                _ => None,
            })
            .collect();
        let mut f = Figure::of(
            name,
            unit,
            (!b.is_empty()).then(|| median(&b)),
            (!a.is_empty()).then(|| median(&a)),
        );
        if !ratios.is_empty() {
            f.ratio = Some(ratios.iter().sum::<f64>() / ratios.len() as f64);
        }
        f
    }

    fn json(&self) -> Value {
        json!({"figure": self.name, "unit": self.unit, "before": self.before,
               "after": self.after, "after_over_before": self.ratio})
    }
}

/// A storm's daemon CPU seconds below which a ratio of two builds' figures
/// is a ratio of clock ticks.
const TICKS_FOR_A_RATIO: f64 = 0.5;

/// A figure of each storm a build ran.
type PerRound = fn(&Side) -> Vec<Option<f64>>;

/// The figures the issue asks for: binary size, time to `ready`, RSS, CPU
/// per record that crosses, and the storms' accounting.
pub fn figures(sides: &[Side; 2], tracepoints: &[String]) -> Vec<Figure> {
    let [before, after] = sides;
    let both = |f: PerRound| (f(before), f(after));
    let mut out = vec![Figure::of(
        "binary size",
        "MiB",
        Some(mib(before.size)),
        Some(mib(after.size)),
    )];
    out.push(Figure::of(
        "exec to `ready`, median",
        "s",
        (!before.starts.is_empty()).then(|| median(&before.starts)),
        (!after.starts.is_empty()).then(|| median(&after.starts)),
    ));
    let per_round: [(&str, &str, PerRound); 8] = [
        ("RSS once ready", "MiB", |s| {
            s.storms().map(|r| Some(mib(r.rss_ready))).collect()
        }),
        ("RSS after the folded storm", "MiB", |s| {
            s.folded.iter().map(|r| Some(mib(r.rss_end))).collect()
        }),
        ("RSS after the distinct-flow storm", "MiB", |s| {
            s.distinct.iter().map(|r| Some(mib(r.rss_end))).collect()
        }),
        ("peak RSS (VmHWM), distinct-flow storm", "MiB", |s| {
            s.distinct.iter().map(|r| Some(mib(r.peak_rss))).collect()
        }),
        (
            "daemon CPU s per million records crossing (distinct-flow storm)",
            "CPU-s",
            |s| {
                s.distinct
                    .iter()
                    .map(StormRun::cpu_per_million_crossed)
                    .collect()
            },
        ),
        (
            "daemon CPU s per million kernel events (spoofed-source storm)",
            "CPU-s",
            |s| s.spoofed.iter().map(StormRun::cpu_per_million).collect(),
        ),
        (
            "daemon CPU s per million events processed (folded storm)",
            "CPU-s",
            |s| s.folded.iter().map(StormRun::cpu_per_million).collect(),
        ),
        (
            "records crossing per storm (distinct-flow storm)",
            "records",
            |s| {
                s.distinct
                    .iter()
                    .map(|r| r.records_crossed().map(|n| n as f64))
                    .collect()
            },
        ),
    ];
    for (name, unit, f) in per_round {
        let (b, a) = both(f);
        out.push(Figure::paired(name, unit, &b, &a));
    }
    // /proc's CPU times tick every 10 ms: a few ticks a storm make no ratio.
    let ticks = |s: &Side| s.folded.iter().all(|r| r.cpu_seconds < TICKS_FOR_A_RATIO);
    if ticks(before) && ticks(after) {
        if let Some(f) = out.iter_mut().find(|f| f.name.contains("(folded storm)")) {
            f.ratio = None;
            f.name.push_str(&format!(
                ": under {TICKS_FOR_A_RATIO} CPU-s a storm, a few 10 ms clock ticks, no ratio"
            ));
        }
    }
    for (kind, pick) in [
        (
            "folded",
            (|s: &Side| &s.folded) as fn(&Side) -> &Vec<StormRun>,
        ),
        ("distinct-flow", |s: &Side| &s.distinct),
        ("spoofed-source", |s: &Side| &s.spoofed),
    ] {
        let events = |s: &Side| pick(s).iter().map(|r| r.expected(tracepoints) as f64).sum();
        let unaccounted = |s: &Side| {
            pick(s)
                .iter()
                .map(|r| r.unaccounted(tracepoints).map(|u| u.unsigned_abs() as f64))
                .sum::<Option<f64>>()
        };
        let lost = |s: &Side| {
            pick(s)
                .iter()
                .map(|r| r.tally.as_ref().map(|t| t.lost as f64))
                .sum::<Option<f64>>()
        };
        out.push(Figure::of(
            &format!("{kind} storms: events the kernel counted, all rounds"),
            "events",
            Some(events(before)),
            Some(events(after)),
        ));
        out.push(Figure::of(
            &format!("{kind} storms: lost (counted, in `lost` records)"),
            "events",
            lost(before),
            lost(after),
        ));
        let mut u = Figure::of(
            &format!("{kind} storms: unaccounted (kernel - written - folded - lost)"),
            "events",
            unaccounted(before),
            unaccounted(after),
        );
        // 0 against 0 is the goal, not a ratio.
        u.ratio = None;
        out.push(u);
    }
    out
}

fn cell(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit == "events" || unit == "records" => format!("{v:.0}"),
        Some(v) if unit == "s" => format!("{v:.3}"),
        // A folded storm's CPU per million events is thousandths.
        Some(v) if v.abs() < 0.1 => format!("{v:.4}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The comparison as Markdown.
pub fn table(
    sides: &[Side; 2],
    figures: &[Figure],
    opts: &Options,
    m: &Machine,
    took: Duration,
    tracepoints: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} cores ({}), {} MiB, Linux {}, load {:.2} at start; netprobe {}\n\nbefore: {} ({} \
         bytes); after: {} ({} bytes); {} start-ups each, {} rounds of storms of {} s; \
         tracepoints {}; took {:.0} s\n",
        m.cores,
        m.cpu,
        m.memory_mib,
        m.kernel,
        m.load,
        m.commit,
        sides[0].bin.display(),
        sides[0].size,
        sides[1].bin.display(),
        sides[1].size,
        opts.starts,
        opts.rounds,
        opts.storm_secs,
        tracepoints.join(", "),
        took.as_secs_f64()
    );
    s.push_str("| figure | unit | before | after | after / before |\n|---|---|---:|---:|---:|\n");
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            f.name,
            f.unit,
            cell(f.before, f.unit),
            cell(f.after, f.unit),
            f.ratio.map_or("-".into(), |r| format!("{r:.3}"))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_figures_take_medians_and_the_mean_of_round_ratios() {
        let f = Figure::paired(
            "cpu",
            "CPU-s",
            &[Some(4.0), Some(2.0), None],
            &[Some(2.0), Some(2.0), Some(9.0)],
        );
        // Medians over what each measured; ratios only where both did.
        assert_eq!((f.before, f.after), (Some(3.0), Some(2.0)));
        assert_eq!(f.ratio, Some(0.75));
        let none = Figure::paired("x", "MiB", &[None], &[Some(1.0)]);
        assert_eq!((none.before, none.ratio), (None, None));
        let plain = Figure::of("size", "MiB", Some(4.0), Some(5.0));
        assert_eq!(plain.ratio, Some(1.25));
        assert_eq!(Figure::of("z", "s", Some(0.0), Some(1.0)).ratio, None);
    }

    #[test]
    fn cells_by_unit() {
        assert_eq!(cell(Some(12266190.0), "events"), "12266190");
        assert_eq!(cell(Some(0.1734), "s"), "0.173");
        assert_eq!(cell(Some(27.84), "MiB"), "27.84");
        assert_eq!(cell(Some(0.00219), "CPU-s"), "0.0022");
        assert_eq!(cell(None, "MiB"), "-");
    }
}
