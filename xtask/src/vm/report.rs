//! Reading a guest's console log (the markers /init prints, `netprobe
//! check`'s probe lines, libtest's result lines) and the matrix over kernels.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Ignored,
    /// `test NAME ... ` with no verdict: the executable died or hung in it.
    NoResult,
}

impl Outcome {
    fn cell(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Ignored => "skip",
            Outcome::NoResult => "DIED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    /// `attached` or `skipped`.
    pub status: String,
    /// The hooks it attached through (or the one tried), as check prints them:
    /// `tracepoint tcp:tcp_send_reset + kprobe tcp_v4_send_reset, ...`.
    pub hook: String,
    /// Why it was skipped, or what an attached probe lost.
    pub detail: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct BinaryRun {
    pub name: String,
    pub tests: Vec<(String, Outcome)>,
    pub rc: Option<i32>,
    /// Guest uptime at BEGIN and END.
    pub up: (Option<f64>, Option<f64>),
    /// Each failed test's captured output (`---- NAME stdout ----`).
    pub failures: BTreeMap<String, Vec<String>>,
    /// Tests that passed without showing their failure, or one of their
    /// checks: this kernel cannot (`@@NETPROBE-CANNOT-SHOW NAME WHY`; a
    /// test may say it of several checks).
    pub cannot_show: BTreeMap<String, String>,
    /// Tests that did not run here by design (`@@NETPROBE-SKIP NAME WHY`).
    pub not_run: BTreeMap<String, String>,
    /// libtest's reasons for ignored tests (`ignored, REASON`).
    pub ignored_why: BTreeMap<String, String>,
    /// Its time limit in the guest, seconds (`limit=` at BEGIN).
    pub limit: Option<u32>,
    /// libtest's own count of the tests it ran (`test result: ... N
    /// passed; M failed; K ignored`), when it got to print it.
    pub summary: Option<u32>,
}

#[derive(Debug, Default, Clone)]
pub struct GuestRun {
    pub release: Option<String>,
    /// (module, loaded|failed|builtin|absent)
    pub modules: Vec<(String, String)>,
    pub probes: Vec<Probe>,
    pub check_rc: Option<i32>,
    pub binaries: Vec<BinaryRun>,
    /// /init got to the end.
    pub done: bool,
    /// The guest's speed as /init measured it: (boot, factor in percent,
    /// its total limit in seconds).
    pub speed: Option<(String, u32, u32)>,
}

enum Section {
    None,
    Check,
    Test,
    Failure(String),
}

/// `key=value` among the words of a marker line.
fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The serial console turns `\n` into `\r\n`; QEMU adds terminal escapes.
pub fn console_lines(log: &str) -> Vec<&str> {
    log.split('\n').map(|l| l.trim_end_matches('\r')).collect()
}

pub fn parse(log: &str) -> GuestRun {
    let mut run = GuestRun::default();
    let mut section = Section::None;
    for line in console_lines(log) {
        if let Some(at) = line.find("@@NETPROBE-") {
            let words: Vec<&str> = line[at..].split_whitespace().collect();
            match words.as_slice() {
                ["@@NETPROBE-VM", "kernel", release, ..] => run.release = Some(release.to_string()),
                ["@@NETPROBE-VM", "DONE", ..] => run.done = true,
                ["@@NETPROBE-MODULE", name, status, ..] => {
                    run.modules.push((name.to_string(), status.to_string()))
                }
                ["@@NETPROBE-CHECK", "BEGIN", ..] => section = Section::Check,
                ["@@NETPROBE-VM", "speed", rest @ ..] => {
                    run.speed = Some((
                        field(rest, "boot").unwrap_or("?").to_string(),
                        field(rest, "factor_pct")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(100),
                        field(rest, "total")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    ))
                }
                ["@@NETPROBE-CANNOT-SHOW", name, why @ ..] => {
                    if let Some(b) = run.binaries.last_mut() {
                        let all = b.cannot_show.entry(name.to_string()).or_default();
                        if !all.is_empty() {
                            all.push_str("; ");
                        }
                        all.push_str(&why.join(" "));
                    }
                }
                ["@@NETPROBE-SKIP", name, why @ ..] => {
                    if let Some(b) = run.binaries.last_mut() {
                        b.not_run.insert(name.to_string(), why.join(" "));
                    }
                }
                ["@@NETPROBE-CHECK", "END", rest @ ..] => {
                    run.check_rc = field(rest, "rc").and_then(|v| v.parse().ok());
                    section = Section::None;
                }
                ["@@NETPROBE-TEST", name, "BEGIN", rest @ ..] => {
                    run.binaries.push(BinaryRun {
                        name: name.to_string(),
                        up: (field(rest, "up").and_then(|v| v.parse().ok()), None),
                        limit: field(rest, "limit").and_then(|v| v.parse().ok()),
                        ..BinaryRun::default()
                    });
                    section = Section::Test;
                }
                ["@@NETPROBE-TEST", name, "END", rest @ ..] => {
                    if let Some(b) = run.binaries.last_mut().filter(|b| b.name == *name) {
                        b.rc = field(rest, "rc").and_then(|v| v.parse().ok());
                        b.up.1 = field(rest, "up").and_then(|v| v.parse().ok());
                    }
                    section = Section::None;
                }
                _ => {}
            }
            continue;
        }
        match &section {
            Section::None => {}
            Section::Check => {
                if let Some(p) = probe_line(line) {
                    run.probes.push(p);
                }
            }
            Section::Test | Section::Failure(_) => {
                let Some(bin) = run.binaries.last_mut() else {
                    continue;
                };
                if let Some((name, outcome)) = libtest_line(line) {
                    if let Some(why) = line.split_once(" ... ignored, ").map(|(_, w)| w.trim()) {
                        bin.ignored_why.insert(name.clone(), why.to_string());
                    }
                    bin.tests.push((name, outcome));
                } else if let Some(name) = line
                    .strip_prefix("---- ")
                    .and_then(|l| l.strip_suffix(" stdout ----"))
                {
                    section = Section::Failure(name.to_string());
                } else if line == "failures:" || line.starts_with("test result: ") {
                    if let Some(n) = libtest_summary(line) {
                        bin.summary = Some(n);
                    }
                    section = Section::Test;
                } else if let Section::Failure(name) = &section {
                    bin.failures
                        .entry(name.clone())
                        .or_default()
                        .push(line.to_string());
                }
            }
        }
    }
    run
}

/// libtest's `test NAME ... ok|FAILED|ignored[, reason]` (and `test NAME ... `
/// when the executable died during the test).
pub fn libtest_line(line: &str) -> Option<(String, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, verdict) = rest.split_once(" ...")?;
    if name.contains(' ') {
        return None;
    }
    let verdict = verdict.trim();
    let outcome = if verdict == "ok" {
        Outcome::Pass
    } else if verdict == "FAILED" {
        Outcome::Fail
    } else if verdict.starts_with("ignored") {
        Outcome::Ignored
    } else if verdict.is_empty() {
        Outcome::NoResult
    } else {
        return None;
    };
    Some((name.to_string(), outcome))
}

/// The number of tests libtest ran by its `test result:` line (passed +
/// failed + ignored).
pub fn libtest_summary(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("test result: ")?;
    let mut n = 0;
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        if let [.., count, what] = words.as_slice() {
            if matches!(*what, "passed" | "failed" | "ignored") {
                n += count.parse::<u32>().ok()?;
            }
        }
    }
    Some(n)
}

/// `  probe       NAME  attached|skipped  HOOK[: why][ (degraded: what)]`
/// from `netprobe check`.
pub fn probe_line(line: &str) -> Option<Probe> {
    let rest = line.trim_start().strip_prefix("probe ")?.trim_start();
    let (name, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (status, hook_and_detail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let hook_and_detail = hook_and_detail.trim();
    let split = match status {
        "skipped" => hook_and_detail.split_once(": "),
        "attached" => hook_and_detail
            .split_once(" (degraded: ")
            .map(|(hook, lost)| (hook, lost.strip_suffix(')').unwrap_or(lost))),
        _ => return None,
    };
    let (hook, detail) = match split {
        Some((hook, detail)) => (hook, Some(detail.to_string())),
        None => (hook_and_detail, None),
    };
    Some(Probe {
        name: name.to_string(),
        status: status.to_string(),
        hook: hook.to_string(),
        detail,
    })
}

/// A matrix cell's short name for a probe's hooks: `tp`, `kprobe`,
/// `tp+kprobe`.
pub fn hook_cell(hook: &str) -> String {
    let kinds: Vec<&str> = hook
        .split(" + ")
        .map(|h| match h.split_whitespace().next() {
            Some("tracepoint") => "tp",
            Some(other) => other,
            None => "?",
        })
        .collect();
    kinds.join("+")
}

/// How one kernel's boot ended, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited (after /init's poweroff, or a panic).
    Exited,
    /// Killed at the host's timeout.
    TimedOut(Duration),
}

#[derive(Debug, Clone)]
pub struct KernelResult {
    pub short: String,
    pub wall: Duration,
    pub ending: Ending,
    pub run: GuestRun,
    /// The tests each executable holds (`--list`), every one of which must
    /// have a result in this row; empty: not known, not checked.
    pub expected: Expected,
}

/// Test executable -> the tests it holds, from `--list` on the host.
pub type Expected = BTreeMap<String, Vec<String>>;

/// The verdict of one test in one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Pass,
    /// Passed what this kernel allows; why the rest cannot be shown.
    NotApplicable(String),
    /// Not run here, by design; why.
    Skip(String),
    Fail,
    Died,
    /// No result at all.
    Missing,
}

impl Cell {
    fn name(&self) -> &'static str {
        match self {
            Cell::Pass => "pass",
            Cell::NotApplicable(_) => "n/a",
            Cell::Skip(_) => "skip",
            Cell::Fail => "FAIL",
            Cell::Died => "DIED",
            Cell::Missing => "MISSING",
        }
    }
}

impl BinaryRun {
    /// The cell of `test`, from its libtest verdict and the markers.
    pub fn cell(&self, test: &str) -> Cell {
        let outcome = self.tests.iter().find(|(t, _)| t == test).map(|(_, o)| *o);
        match outcome {
            None => Cell::Missing,
            Some(Outcome::Fail) => Cell::Fail,
            Some(Outcome::NoResult) => Cell::Died,
            Some(Outcome::Ignored) => Cell::Skip(
                self.ignored_why
                    .get(test)
                    .cloned()
                    .unwrap_or_else(|| "ignored".into()),
            ),
            Some(Outcome::Pass) => {
                if let Some(why) = self.not_run.get(test) {
                    Cell::Skip(why.clone())
                } else if let Some(why) = self.cannot_show.get(test) {
                    Cell::NotApplicable(why.clone())
                } else {
                    Cell::Pass
                }
            }
        }
    }
}

impl KernelResult {
    /// Why this kernel fails, if it does.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match (&self.ending, self.run.done) {
            (Ending::TimedOut(t), _) => {
                p.push(format!("guest hung: killed after {}s", t.as_secs()))
            }
            (Ending::Exited, false) => {
                p.push("guest stopped before /init finished (panic or crash)".into())
            }
            (Ending::Exited, true) => {}
        }
        match self.run.check_rc {
            Some(0) => {}
            Some(rc) => p.push(format!("`netprobe check` exited {rc}")),
            None if self.run.done => p.push("`netprobe check` gave no result".into()),
            None => {}
        }
        for b in &self.run.binaries {
            let died = b
                .tests
                .iter()
                .find(|(_, o)| *o == Outcome::NoResult)
                .map(|(t, _)| t.as_str());
            match (b.rc, b.limit) {
                (Some(0), _) => {}
                (Some(137), Some(limit)) => p.push(format!(
                    "{} killed at its {limit} s limit{}",
                    b.name,
                    died.map(|t| format!(", in {t}")).unwrap_or_default()
                )),
                (Some(rc), _) => p.push(format!("{} exited {rc}{}", b.name, rc_meaning(rc))),
                (None, _) => p.push(format!(
                    "{} did not finish{}",
                    b.name,
                    died.map(|t| format!(" (it was in {t})"))
                        .unwrap_or_default()
                )),
            }
            if b.rc.is_some() && b.summary != Some(b.tests.len() as u32) {
                p.push(format!(
                    "{}: libtest's summary counts {} tests, the log shows {}",
                    b.name,
                    b.summary.map_or("no".into(), |n| n.to_string()),
                    b.tests.len()
                ));
            }
        }
        for (bin, tests) in &self.expected {
            let runs: Vec<&BinaryRun> = self
                .run
                .binaries
                .iter()
                .filter(|b| b.name == *bin)
                .collect();
            if runs.is_empty() {
                if self.run.done {
                    p.push(format!("{bin} never ran"));
                }
                continue;
            }
            if tests.is_empty() {
                p.push(format!("{bin} holds no test"));
            }
            for t in tests {
                if runs.iter().all(|b| b.cell(t) == Cell::Missing) {
                    p.push(format!("{bin}::{t} has no result"));
                }
            }
        }
        p
    }

    /// How many cells of this row are pass, n/a, skip, FAIL, DIED, MISSING
    /// (over the expected tests, else over those seen).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        for (bin, test) in self.all_tests() {
            let cell = self
                .run
                .binaries
                .iter()
                .filter(|b| b.name == bin)
                .map(|b| b.cell(&test))
                .find(|c| *c != Cell::Missing)
                .unwrap_or(Cell::Missing);
            *c.entry(cell.name()).or_default() += 1;
        }
        c
    }

    fn all_tests(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .expected
            .iter()
            .flat_map(|(b, ts)| ts.iter().map(|t| (b.clone(), t.clone())))
            .collect();
        for b in &self.run.binaries {
            for (t, _) in &b.tests {
                let key = (b.name.clone(), t.clone());
                if !all.contains(&key) {
                    all.push(key);
                }
            }
        }
        all
    }

    /// `33 pass, 5 n/a, 1 skip` (zero counts left out).
    pub fn counts_text(&self) -> String {
        let c = self.counts();
        let parts: Vec<String> = ["pass", "n/a", "skip", "FAIL", "DIED", "MISSING"]
            .iter()
            .filter_map(|k| c.get(k).map(|n| format!("{n} {k}")))
            .collect();
        if parts.is_empty() {
            "no tests".into()
        } else {
            parts.join(", ")
        }
    }
}

fn rc_meaning(rc: i32) -> &'static str {
    match rc {
        101 => " (test failures)",
        137 => " (killed: in-guest time limit)",
        127 => " (would not start)",
        _ => "",
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The matrix: one row per kernel, a column per probe and per test, then
/// the legend, the footnotes, and what failed with the test's own message.
pub fn render(results: &[KernelResult]) -> String {
    let mut probes: Vec<String> = Vec::new();
    let mut tests: Vec<(String, String)> = Vec::new();
    for r in results {
        for p in &r.run.probes {
            if !probes.contains(&p.name) {
                probes.push(p.name.clone());
            }
        }
        for key in r.all_tests() {
            if !tests.contains(&key) {
                tests.push(key);
            }
        }
    }
    let mut notes: Vec<String> = Vec::new();
    let mut note = |text: String| -> usize {
        match notes.iter().position(|n| *n == text) {
            Some(i) => i + 1,
            None => {
                notes.push(text);
                notes.len()
            }
        }
    };
    let mut header: Vec<String> = ["kernel", "release", "wall", "result", "pass", "n/a", "skip"]
        .map(String::from)
        .to_vec();
    header.extend(probes.iter().cloned());
    header.extend((1..=tests.len()).map(|i| format!("T{i}")));
    let mut rows = vec![header];
    for r in results {
        let mut row = vec![
            r.short.clone(),
            r.run.release.clone().unwrap_or_else(|| "?".into()),
            secs(r.wall),
            match (&r.ending, r.problems().is_empty()) {
                (Ending::TimedOut(_), _) => "HUNG".into(),
                (_, true) => "ok".into(),
                (_, false) if !r.run.done => "CRASHED".into(),
                (_, false) => "FAILED".into(),
            },
        ];
        let counts = r.counts();
        for k in ["pass", "n/a", "skip"] {
            row.push(counts.get(k).copied().unwrap_or(0).to_string());
        }
        for name in &probes {
            row.push(match r.run.probes.iter().find(|p| p.name == *name) {
                None => "-".into(),
                Some(p) => {
                    let cell = if p.status == "attached" {
                        hook_cell(&p.hook)
                    } else {
                        p.status.clone()
                    };
                    match &p.detail {
                        None => cell,
                        Some(d) => {
                            format!("{cell}[{}]", note(format!("{} {}: {d}", p.name, p.status)))
                        }
                    }
                }
            });
        }
        for (bin, test) in &tests {
            let cell = r
                .run
                .binaries
                .iter()
                .filter(|b| b.name == *bin)
                .map(|b| b.cell(test))
                .find(|c| *c != Cell::Missing)
                .unwrap_or(Cell::Missing);
            row.push(match &cell {
                Cell::NotApplicable(why) => format!(
                    "n/a[{}]",
                    note(format!("{bin}::{test} cannot show here: {why}"))
                ),
                Cell::Skip(why) => {
                    format!("skip[{}]", note(format!("{bin}::{test} not run: {why}")))
                }
                Cell::Missing if !r.expected.contains_key(bin) && !r.run.done => "-".into(),
                other => other.name().into(),
            });
        }
        rows.push(row);
    }
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    if !tests.is_empty() {
        s.push('\n');
        for (i, (bin, test)) in tests.iter().enumerate() {
            let _ = writeln!(s, "T{:<3} {bin}::{test}", i + 1);
        }
    }
    if !probes.is_empty() {
        let _ = writeln!(
            s,
            "\nprobe cells: the hooks each probe attached through (tp: tracepoint), \
             or `skipped`; [n]: what it lost or why it was skipped, below"
        );
    }
    if !notes.is_empty() {
        s.push('\n');
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(s, "[{}] {n}", i + 1);
        }
    }
    for r in results {
        let loaded: Vec<String> = r
            .run
            .modules
            .iter()
            .map(|(m, st)| format!("{m} {st}"))
            .collect();
        let times: Vec<String> = r
            .run
            .binaries
            .iter()
            .filter_map(|b| {
                let took = b.up.1? - b.up.0?;
                Some(match b.limit {
                    Some(limit) => format!("{} {took:.1}s of {limit}s", b.name),
                    None => format!("{} {took:.1}s", b.name),
                })
            })
            .collect();
        let _ = write!(
            s,
            "\n{}: modules: {}",
            r.short,
            if loaded.is_empty() {
                "none".into()
            } else {
                loaded.join(", ")
            }
        );
        if !times.is_empty() {
            let _ = write!(s, "; test executables: {}", times.join(", "));
        }
        s.push('\n');
        let _ = write!(s, "{}: tests: {}", r.short, r.counts_text());
        if let Some((boot, factor, total)) = &r.run.speed {
            let _ = write!(
                s,
                "; booted in {boot} s, limits x{:.2} (this guest's speed), {total} s in all",
                *factor as f64 / 100.0
            );
        }
        s.push('\n');
        let hooks: Vec<String> = r
            .run
            .probes
            .iter()
            .filter(|p| p.status == "attached")
            .map(|p| format!("{} via {}", p.name, p.hook))
            .collect();
        if !hooks.is_empty() {
            let _ = writeln!(s, "{}: hooks: {}", r.short, hooks.join("; "));
        }
        for p in r.problems() {
            let _ = writeln!(s, "{}: {p}", r.short);
        }
        for b in &r.run.binaries {
            for (test, outcome) in &b.tests {
                if !matches!(outcome, Outcome::Fail | Outcome::NoResult) {
                    continue;
                }
                let _ = writeln!(s, "{}: {}::{test} {}", r.short, b.name, outcome.cell());
                for l in
                    failure_excerpt(b.failures.get(test).map(Vec::as_slice).unwrap_or_default())
                {
                    let _ = writeln!(s, "    {}", shorten(l, 200));
                }
            }
        }
    }
    s
}

/// `line`, cut to `max` characters with `...` when longer.
fn shorten(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// The panic message out of a failed test's captured output.
pub fn failure_excerpt(lines: &[String]) -> Vec<&str> {
    let from = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .unwrap_or(0);
    lines[from..]
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .take(8)
        .collect()
}

/// The last `n` non-empty-ended console lines, without carriage returns or
/// terminal escapes (QEMU's `ESC c` would reset the user's terminal).
pub fn last_lines(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = console_lines(log)
        .into_iter()
        .map(strip_escapes)
        .rev()
        .skip_while(|l| l.trim().is_empty())
        .collect();
    lines.into_iter().take(n).rev().collect()
}

/// `line` without ANSI escape sequences and other control characters.
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte; else ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real console log: Debian 6.1 under TCG, `cargo xtask vm --kernels 6.1`
    /// (serial `\r\n` line ends and QEMU's terminal escapes kept).
    const LOG_6_1: &str = include_str!("testdata/6.1.log");
    /// A real panic: 6.1 booted with `rdinit=/nonexistent`.
    const LOG_PANIC: &str = include_str!("testdata/panic.log");

    fn tests_of<'a>(run: &'a GuestRun, bin: &str) -> Vec<(&'a str, Outcome)> {
        let b = run.binaries.iter().find(|b| b.name == bin).unwrap();
        b.tests.iter().map(|(t, o)| (t.as_str(), *o)).collect()
    }

    #[test]
    fn the_real_log_keeps_its_carriage_returns() {
        assert!(LOG_6_1.contains("@@NETPROBE-CHECK BEGIN\r\n"));
    }

    #[test]
    fn parses_a_real_6_1_log() {
        let run = parse(LOG_6_1);
        assert!(run.done);
        // The marker follows QEMU's screen-clearing escapes on its line.
        assert_eq!(run.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        let modules: Vec<(&str, &str)> = run
            .modules
            .iter()
            .map(|(m, s)| (m.as_str(), s.as_str()))
            .collect();
        assert_eq!(
            modules,
            [
                ("veth", "loaded"),
                ("nf_defrag_ipv4", "loaded"),
                ("nf_defrag_ipv6", "loaded"),
                ("libcrc32c", "loaded"),
                ("nf_conntrack", "loaded")
            ]
        );
        assert_eq!(run.check_rc, Some(0));
        let probes: Vec<(&str, &str, Option<&str>)> = run
            .probes
            .iter()
            .map(|p| (p.name.as_str(), p.status.as_str(), p.detail.as_deref()))
            .collect();
        assert_eq!(
            probes,
            [
                ("drop", "attached", None),
                ("reset_sent", "attached", None),
                ("reset_received", "attached", None)
            ]
        );
        let names: Vec<&str> = run.binaries.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["netprobe_tests", "reset", "journald", "lifecycle"]);
        let rcs: Vec<Option<i32>> = run.binaries.iter().map(|b| b.rc).collect();
        assert_eq!(rcs, [Some(0), Some(101), Some(101), Some(0)]);
        assert_eq!(run.binaries[1].up, (Some(9.22), Some(40.30)));
        assert!(tests_of(&run, "netprobe_tests").is_empty());
        assert_eq!(
            tests_of(&run, "reset"),
            [
                ("closed_port_ipv4", Outcome::Fail),
                ("closed_port_ipv6", Outcome::Fail)
            ]
        );
        assert_eq!(tests_of(&run, "lifecycle").len(), 5);
        assert!(tests_of(&run, "lifecycle")
            .iter()
            .all(|(_, o)| *o == Outcome::Pass));
        // Each failure keeps its own captured output, and the excerpt starts
        // at the panic.
        let reset = &run.binaries[1];
        assert_eq!(reset.failures.len(), 2);
        let excerpt = failure_excerpt(&reset.failures["closed_port_ipv6"]);
        assert_eq!(
            excerpt[..2],
            [
                "thread 'closed_port_ipv6' (121) panicked at tests/src/lib.rs:331:27:",
                "no reset_sent record within 10s; records seen:"
            ]
        );
        assert!(!excerpt.iter().any(|l| l.contains("closed_port_ipv4")));
        let journald = failure_excerpt(
            &run.binaries[2].failures["closed_port_records_reach_journald_with_fields"],
        );
        assert_eq!(
            journald,
            [
                "thread 'closed_port_records_reach_journald_with_fields' (132) panicked at tests/tests/journald.rs:37:10:",
                "systemd-journald is not installed (package systemd); `cargo xtask setup` installs it"
            ]
        );
    }

    #[test]
    fn lf_only_logs_parse_the_same() {
        let lf = LOG_6_1.replace("\r\n", "\n");
        let (a, b) = (parse(LOG_6_1), parse(&lf));
        assert_eq!(a.probes, b.probes);
        assert_eq!(a.binaries.len(), b.binaries.len());
        assert_eq!(a.done, b.done);
    }

    #[test]
    fn escapes_are_stripped() {
        // The line QEMU leaves before the kernel's first output.
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J@@NETPROBE-VM kernel 6.1.0-56-cloud-amd64 up=5.85"),
            "@@NETPROBE-VM kernel 6.1.0-56-cloud-amd64 up=5.85"
        );
        assert_eq!(
            strip_escapes("\x1b[0mSeaBIOS (version 1.16.2)"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(strip_escapes("plain\ttext"), "plain\ttext");
        let tail = last_lines(LOG_6_1, 200);
        assert!(tail
            .iter()
            .any(|l| l.starts_with("@@NETPROBE-VM kernel 6.1.0-56")));
    }

    #[test]
    fn long_lines_are_shortened() {
        assert_eq!(shorten("abcdef", 4), "abcd...");
        assert_eq!(shorten("abcd", 4), "abcd");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }

    #[test]
    fn libtest_lines() {
        assert_eq!(
            libtest_line("test closed_port_ipv4 ... FAILED"),
            Some(("closed_port_ipv4".into(), Outcome::Fail))
        );
        assert_eq!(
            libtest_line("test check_reports_probes_as_root ... ok"),
            Some(("check_reports_probes_as_root".into(), Outcome::Pass))
        );
        assert_eq!(
            libtest_line("test slow_one ... ignored, needs a veth pair"),
            Some(("slow_one".into(), Outcome::Ignored))
        );
        // Died mid-test: the verdict never came.
        assert_eq!(
            libtest_line("test closed_port_ipv6 ... "),
            Some(("closed_port_ipv6".into(), Outcome::NoResult))
        );
        assert_eq!(
            libtest_line("test result: ok. 5 passed; 0 failed; 0 ignored"),
            None
        );
        assert_eq!(libtest_line("running 2 tests"), None);
    }

    #[test]
    fn probe_lines_from_netprobe_check() {
        // Real, from Debian 5.10 (no drop reasons before 5.17).
        let p = probe_line("  probe       drop            attached  tracepoint skb:kfree_skb (degraded: this kernel gives no drop reasons (before 5.17): classified by drop location)").unwrap();
        assert_eq!(p.name, "drop");
        assert_eq!(p.status, "attached");
        assert_eq!(p.hook, "tracepoint skb:kfree_skb");
        assert_eq!(
            p.detail.as_deref(),
            Some("this kernel gives no drop reasons (before 5.17): classified by drop location")
        );
        // check.rs's format for a skipped probe.
        let p = probe_line("  probe       reset_received  skipped   tracepoint tcp:tcp_receive_reset: tracepoint not found in tracefs").unwrap();
        assert_eq!(p.status, "skipped");
        assert_eq!(p.detail.as_deref(), Some("tracepoint not found in tracefs"));
        assert_eq!(p.hook, "tracepoint tcp:tcp_receive_reset");
        // Several hooks, no loss (6.1's resets).
        let p = probe_line("  probe       reset_sent      attached  tracepoint tcp:tcp_send_reset + kprobe tcp_v4_send_reset, tcp_v6_send_reset").unwrap();
        assert_eq!((p.status.as_str(), p.detail), ("attached", None));
        assert_eq!(hook_cell(&p.hook), "tp+kprobe");
        assert_eq!(hook_cell("kprobe tcp_drop"), "kprobe");
        assert_eq!(probe_line("  probes      not tried: no privilege"), None);
        assert_eq!(probe_line("  sysctl      net.core.somaxconn = 4096"), None);
    }

    fn result(short: &str, log: &str, wall: u64, ending: Ending) -> KernelResult {
        KernelResult {
            short: short.into(),
            wall: Duration::from_millis(wall),
            ending,
            run: parse(log),
            expected: Default::default(),
        }
    }

    #[test]
    fn a_guest_killed_mid_test_is_hung_and_the_test_died() {
        // The real log cut where a hang inside closed_port_ipv6 would leave it.
        let cut = LOG_6_1.find("test closed_port_ipv6 ... ").unwrap()
            + "test closed_port_ipv6 ... ".len();
        let r = result(
            "6.1",
            &LOG_6_1[..cut],
            600_000,
            Ending::TimedOut(Duration::from_secs(600)),
        );
        assert!(!r.run.done);
        assert_eq!(
            tests_of(&r.run, "reset"),
            [
                ("closed_port_ipv4", Outcome::Fail),
                ("closed_port_ipv6", Outcome::NoResult)
            ]
        );
        assert_eq!(
            r.problems(),
            [
                "guest hung: killed after 600s",
                "reset did not finish (it was in closed_port_ipv6)"
            ]
        );
        let m = render(&[r]);
        let row = m.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>()[..9],
            [
                "6.1",
                "6.1.0-56-cloud-amd64",
                "600.0s",
                "HUNG",
                "0",
                "0",
                "0",
                "tp",
                "tp"
            ]
        );
        assert!(m.contains("\n6.1: reset::closed_port_ipv6 DIED\n"), "{m}");
    }

    #[test]
    fn a_panicked_guest_crashed_and_its_last_lines_show_why() {
        let r = result("6.1", LOG_PANIC, 3_886, Ending::Exited);
        assert!(!r.run.done && r.run.release.is_none() && r.run.binaries.is_empty());
        assert_eq!(
            r.problems(),
            ["guest stopped before /init finished (panic or crash)"]
        );
        let tail = last_lines(LOG_PANIC, 40);
        assert!(tail.len() <= 40);
        assert!(tail.last().unwrap().contains("Kernel Offset: 0xec00000"));
        assert!(tail
            .iter()
            .any(|l| l.contains("Kernel panic - not syncing: VFS: Unable to mount root fs")));
        assert!(!tail.iter().any(|l| l.contains(['\r', '\x1b'])));
        assert_eq!(last_lines(LOG_PANIC, 2).len(), 2);
        let m = render(&[r]);
        assert!(
            m.starts_with(
                "kernel  release  wall  result   pass  n/a  skip\n6.1     ?        3.9s  CRASHED  0     0    0\n"
            ),
            "{m}"
        );
    }

    #[test]
    fn matrix_has_a_row_per_kernel_and_a_column_per_probe_and_test() {
        // 5.10's drop probe line, as that kernel prints it.
        let log_5_10 = LOG_6_1
            .replace("6.1.0-56-cloud-amd64", "5.10.0-32-cloud-amd64")
            .replace(
                "attached  tracepoint skb:kfree_skb\r\n",
                "attached  tracepoint skb:kfree_skb (degraded: this kernel gives no drop reasons (before 5.17): classified by drop location)\r\n",
            )
            .replace(
                "attached  tracepoint tcp:tcp_send_reset\r\n",
                "attached  tracepoint tcp:tcp_send_reset + kprobe tcp_v4_send_reset, tcp_v6_send_reset\r\n",
            )
            .replace("test closed_port_ipv6 ... FAILED", "test closed_port_ipv6 ... ok");
        let results = [
            result("5.10", &log_5_10, 62_840, Ending::Exited),
            result("6.1", LOG_6_1, 73_600, Ending::Exited),
        ];
        let m = render(&results);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "kernel  release                wall   result  pass  n/a  skip  drop   reset_sent  reset_received  T1    T2    T3    T4    T5    T6    T7    T8",
                "5.10    5.10.0-32-cloud-amd64  62.8s  FAILED  6     0    0     tp[1]  tp+kprobe   tp              FAIL  pass  FAIL  pass  pass  pass  pass  pass",
                "6.1     6.1.0-56-cloud-amd64   73.6s  FAILED  5     0    0     tp     tp          tp              FAIL  FAIL  FAIL  pass  pass  pass  pass  pass",
            ]
        );
        assert!(m.contains("\nT1   reset::closed_port_ipv4\nT2   reset::closed_port_ipv6\nT3   journald::closed_port_records_reach_journald_with_fields\n"));
        assert!(m.contains("\n[1] drop attached: this kernel gives no drop reasons (before 5.17): classified by drop location\n"));
        assert!(m.contains("\n6.1: modules: veth loaded, nf_defrag_ipv4 loaded, nf_defrag_ipv6 loaded, libcrc32c loaded, nf_conntrack loaded; test executables: netprobe_tests 0.1s, reset 31.1s, journald 0.2s, lifecycle 31.9s\n"), "{m}");
        assert!(m.contains("\n6.1: reset exited 101 (test failures)\n"));
        assert!(m.contains("\n5.10: hooks: drop via tracepoint skb:kfree_skb; reset_sent via tracepoint tcp:tcp_send_reset + kprobe tcp_v4_send_reset, tcp_v6_send_reset; reset_received via tracepoint tcp:tcp_receive_reset\n"), "{m}");
        assert!(m.contains("\n6.1: reset::closed_port_ipv4 FAIL\n    thread 'closed_port_ipv4' (115) panicked at tests/src/lib.rs:331:27:\n"));
        assert!(!m.contains("5.10: reset::closed_port_ipv6"));
    }

    #[test]
    fn a_test_that_cannot_show_its_failure_is_n_a_with_why() {
        let log = LOG_6_1.replace(
            "@@NETPROBE-TEST lifecycle END",
            "@@NETPROBE-CANNOT-SHOW sigint_and_sigterm_detach_and_exit_zero no signals here\r\n\
             @@NETPROBE-TEST lifecycle END",
        );
        let r = result("6.1", &log, 1_000, Ending::Exited);
        let lifecycle = r
            .run
            .binaries
            .iter()
            .find(|b| b.name == "lifecycle")
            .unwrap();
        assert_eq!(
            lifecycle.cannot_show["sigint_and_sigterm_detach_and_exit_zero"],
            "no signals here"
        );
        let m = render(&[r]);
        let row = m.lines().nth(1).unwrap();
        assert_eq!(row.matches("n/a[").count(), 1, "{m}");
        assert!(m.contains(
            "] lifecycle::sigint_and_sigterm_detach_and_exit_zero cannot show here: no signals here\n"
        ));
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        let clean = LOG_6_1
            .replace("... FAILED", "... ok")
            .replace("END rc=101", "END rc=0");
        let r = result("6.1", &clean, 1_000, Ending::Exited);
        assert!(r.problems().is_empty());
        assert!(render(&[r]).lines().nth(1).unwrap().contains(" ok  "));
    }

    /// A real run's log: 5.10 under TCG beside the other guests, with its
    /// speed, every executable's limit, failures, n/a and skip markers.
    const LOG_5_10_RUN: &str = include_str!("testdata/5.10-run.log");
    /// The host row of the same run (`ignored` tests with their reasons).
    const LOG_HOST_RUN: &str = include_str!("testdata/host-run.log");

    fn expected_of(run: &GuestRun) -> Expected {
        run.binaries
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    b.tests.iter().map(|(t, _)| t.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_calibrated_guest_says_its_speed_and_each_limit() {
        let run = parse(LOG_5_10_RUN);
        assert_eq!(run.speed, Some(("6.45".to_string(), 195, 2320)));
        let demo = run.binaries.iter().find(|b| b.name == "demo").unwrap();
        assert_eq!(demo.limit, Some(156));
        assert_eq!(demo.summary, Some(1));
        let r = result("5.10", LOG_5_10_RUN, 309_100, Ending::Exited);
        let m = render(&[r]);
        assert!(m.contains("5.10: tests: 32 pass, 6 n/a, 1 skip, 3 FAIL; booted in 6.45 s, limits x1.95 (this guest's speed), 2320 s in all\n"), "{m}");
        assert!(m.contains("demo 21.7s of 156s"), "{m}");
    }

    #[test]
    fn cells_are_pass_fail_n_a_or_skip_with_why() {
        let run = parse(LOG_5_10_RUN);
        let bin = |n: &str| run.binaries.iter().find(|b| b.name == n).unwrap();
        assert_eq!(bin("reset").cell("closed_port_ipv4"), Cell::Pass);
        assert_eq!(
            bin("countersonly")
                .cell("without_bpf_counters_name_paws_accept_queue_and_receive_buffer"),
            Cell::Fail
        );
        match bin("paws").cell("old_timestamp_is_rejected_as_paws") {
            Cell::NotApplicable(why) => assert!(why.contains("has no `reason` field"), "{why}"),
            other => panic!("{other:?}"),
        }
        match bin("soak").cell("soak_a_night_of_mixed_failures") {
            Cell::Skip(why) => assert!(why.contains("NETPROBE_SOAK_SECS unset"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(bin("reset").cell("no_such_test"), Cell::Missing);
        // On the host, the conntrack tests are ignored with their reason.
        let host = parse(LOG_HOST_RUN);
        let ct = host
            .binaries
            .iter()
            .find(|b| b.name == "conntrack")
            .unwrap();
        match ct.cell("conntrack_table_full") {
            Cell::Skip(why) => assert!(
                why.starts_with("changes global conntrack settings"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_is_ok_only_when_every_expected_test_has_a_verdict() {
        let clean = LOG_5_10_RUN
            .replace(
                "test result: FAILED. 0 passed; 1 failed",
                "test result: ok. 1 passed; 0 failed",
            )
            .replace(" ... FAILED", " ... ok")
            .replace("rc=101", "rc=0");
        let mut r = result("5.10", &clean, 300_000, Ending::Exited);
        r.expected = expected_of(&r.run);
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        // A test the executable holds but the log never shows.
        r.expected
            .get_mut("reset")
            .unwrap()
            .push("a_new_test".into());
        // An executable that never ran.
        r.expected.insert("newbin".into(), vec!["t".into()]);
        assert_eq!(
            r.problems(),
            ["newbin never ran", "reset::a_new_test has no result"]
        );
        assert_eq!(r.counts().get("MISSING"), Some(&2));
    }

    #[test]
    fn a_limit_that_is_hit_names_the_test_it_was_in() {
        // The log as it would read had resilience been killed at its limit
        // inside its first test.
        let at = LOG_5_10_RUN
            .find("test sigterm_writes_a_summary_and_exits_within_a_second ... ")
            .unwrap()
            + "test sigterm_writes_a_summary_and_exits_within_a_second ... ".len();
        let begin = LOG_5_10_RUN
            .find("@@NETPROBE-TEST resilience BEGIN")
            .unwrap();
        let resilience_start = LOG_5_10_RUN[begin..].find("test ").unwrap() + begin;
        let cut = format!(
            "{}{}\r\n@@NETPROBE-TEST resilience END rc=137 up=400.00\r\n@@NETPROBE-VM DONE up=400.1\r\n",
            &LOG_5_10_RUN[..resilience_start],
            &LOG_5_10_RUN[at - "test sigterm_writes_a_summary_and_exits_within_a_second ... ".len()..at]
        );
        let r = result("5.10", &cut, 400_000, Ending::Exited);
        let problems = r.problems();
        assert!(
            problems.contains(&"resilience killed at its 351 s limit, in sigterm_writes_a_summary_and_exits_within_a_second".to_string()),
            "{problems:?}"
        );
        // libtest never printed its summary: that is said too.
        assert!(
            problems.contains(
                &"resilience: libtest's summary counts no tests, the log shows 1".to_string()
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn libtest_summaries_count_every_verdict() {
        assert_eq!(
            libtest_summary("test result: ok. 4 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
            Some(8)
        );
        assert_eq!(libtest_summary("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.38s"), Some(1));
        assert_eq!(libtest_summary("nothing"), None);
    }
}
