//! `cargo xtask bench --scale`: what netprobe's once-a-second work (the
//! namespace discovery and the counter sampler) costs as a node fills up:
//! netprobe idle beside 0, 10, 100 and 1,000 empty network namespaces
//! (`ip netns add`, as a pod's sandbox is), and beside 1,000 namespaces and
//! 20,000 processes. Each point: the daemon's CPU over several windows (a
//! mean and its 95% interval, in percent of one core), its RSS at the end
//! and its peak, with a verdict on the goals (at most 2% of a core, RSS
//! under 32 MiB).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    check_interrupted, procfs,
    report::{interval, mib, Interval},
    tracer::Netprobe,
};

/// The goals of issue 17 (outcome 5).
pub const CPU_GOAL_PCT: f64 = 2.0;
pub const RSS_GOAL_MIB: f64 = 32.0;

/// Namespaces `ip netns add`ed for the bench (`netprobe-bench-PID-scale-N`),
/// removed on drop.
struct Spaces {
    names: Vec<String>,
}

fn ip_batch(lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip` (iproute2, which `cargo xtask setup` installs)")?;
    let mut stdin = child.stdin.take().context("ip's stdin")?;
    stdin.write_all(lines.join("\n").as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -batch` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Spaces {
    fn new() -> Spaces {
        Spaces { names: Vec::new() }
    }

    /// Adds namespaces until there are `n`.
    fn grow_to(&mut self, n: usize) -> Result<()> {
        let pid = std::process::id();
        let new: Vec<String> = (self.names.len()..n)
            .map(|i| format!("netprobe-bench-{pid}-scale-{i}"))
            .collect();
        let lines: Vec<String> = new.iter().map(|n| format!("netns add {n}")).collect();
        // Recorded before the batch: whatever it made is removed on drop.
        self.names.extend(new);
        ip_batch(&lines)
    }
}

impl Drop for Spaces {
    fn drop(&mut self) {
        let lines: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("netns del {n}"))
            .collect();
        if let Err(e) = ip_batch(&lines) {
            eprintln!("xtask: bench: removing the scale namespaces: {e:#}");
        }
    }
}

/// Processes that do nothing (forked, paused), killed on drop.
struct Idle {
    pids: Vec<libc::pid_t>,
}

impl Idle {
    fn spawn(n: usize) -> Result<Idle> {
        let mut idle = Idle { pids: Vec::new() };
        for _ in 0..n {
            // SAFETY: the child calls only async-signal-safe functions
            // (prctl, pause, _exit) before it dies.
            match unsafe { libc::fork() } {
                -1 => bail!(
                    "fork after {} idle processes: {}",
                    idle.pids.len(),
                    std::io::Error::last_os_error()
                ),
                0 => unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    loop {
                        libc::pause();
                    }
                },
                pid => idle.pids.push(pid),
            }
        }
        Ok(idle)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: our own children, reaped below.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.pids {
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// One point of the curve.
#[derive(Debug, Clone)]
pub struct Point {
    pub namespaces: usize,
    pub processes: usize,
    /// Percent of one core, per window.
    pub cpu_pct: Vec<f64>,
    pub rss_mib: f64,
    pub peak_mib: f64,
    pub threads: u64,
}

impl Point {
    pub fn cpu(&self) -> Option<Interval> {
        interval(&self.cpu_pct)
    }

    /// "at most 2% of a core": met when the whole interval is inside.
    pub fn cpu_verdict(&self) -> &'static str {
        match self.cpu() {
            Some(i) if i.hi <= CPU_GOAL_PCT => "met",
            Some(i) if i.lo > CPU_GOAL_PCT => "MISSED",
            Some(_) => "not settled",
            None => "not settled",
        }
    }

    pub fn rss_verdict(&self) -> &'static str {
        if self.rss_mib.max(self.peak_mib) < RSS_GOAL_MIB {
            "met"
        } else {
            "MISSED"
        }
    }
}

/// netprobe idle for `windows` windows of `secs` once ready (and its first
/// rounds past).
fn measure(bin: &Path, out: &Path, windows: u32, secs: u64) -> Result<(Vec<f64>, f64, f64, u64)> {
    let np = Netprobe::start(bin, &out.join("netprobe.stderr"), &[])?;
    thread::sleep(Duration::from_secs(3));
    let mut cpu = Vec::new();
    for _ in 0..windows {
        check_interrupted()?;
        let (t0, c0) = (Instant::now(), procfs::cpu_seconds(np.pid));
        thread::sleep(Duration::from_secs(secs));
        if let (Some(a), Some(b)) = (c0, procfs::cpu_seconds(np.pid)) {
            cpu.push((b - a) / t0.elapsed().as_secs_f64() * 100.0);
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", np.pid)).unwrap_or_default();
    let threads = procfs::field_u64(&status, "Threads").unwrap_or(0);
    let rss = mib(procfs::rss(np.pid).unwrap_or(0));
    let peak = mib(procfs::peak_rss(np.pid).unwrap_or(0));
    np.stop()?;
    Ok((cpu, rss, peak, threads))
}

/// The curve: each of `namespaces` (ascending), then the last with
/// `processes` idle processes beside.
pub fn run(
    bin: &Path,
    out: &Path,
    namespaces: &[usize],
    processes: usize,
    windows: u32,
    secs: u64,
) -> Result<Vec<Point>> {
    let mut spaces = Spaces::new();
    let mut points = Vec::new();
    let mut plan: Vec<(usize, usize)> = namespaces.iter().map(|&n| (n, 0)).collect();
    if processes > 0 {
        plan.push((namespaces.last().copied().unwrap_or(0), processes));
    }
    let mut idle = None;
    for (n, p) in plan {
        check_interrupted()?;
        spaces.grow_to(n)?;
        if p > 0 && idle.is_none() {
            println!("xtask: bench: scale: forking {p} idle processes");
            idle = Some(Idle::spawn(p)?);
        }
        println!(
            "xtask: bench: scale: netprobe beside {n} namespaces and {p} extra processes, \
             {windows} x {secs} s"
        );
        let (cpu_pct, rss_mib, peak_mib, threads) = measure(bin, out, windows, secs)?;
        let point = Point {
            namespaces: n,
            processes: p,
            cpu_pct,
            rss_mib,
            peak_mib,
            threads,
        };
        println!(
            "xtask: bench: scale: {n} namespaces, {p} processes: CPU {}, RSS {:.1} MiB (peak {:.1}), {} threads",
            point.cpu().map_or("-".into(), |i| format!("{:.2}% [{:.2}, {:.2}]", i.mean, i.lo, i.hi)),
            rss_mib,
            peak_mib,
            threads
        );
        points.push(point);
    }
    drop(idle);
    drop(spaces);
    Ok(points)
}

/// The curve as Markdown.
pub fn table(points: &[Point], windows: u32, secs: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n#### Scale: netprobe idle beside empty namespaces (`ip netns add`) and idle processes; CPU over {windows} windows of {secs} s, mean [95% interval], % of one core\n"
    );
    s.push_str(&format!(
        "| namespaces | extra processes | daemon CPU | at most {CPU_GOAL_PCT}% | RSS at the end / peak (MiB) | under {RSS_GOAL_MIB} MiB | threads |\n|---:|---:|---:|---|---:|---|---:|\n"
    ));
    for p in points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} / {:.1} | {} | {} |",
            p.namespaces,
            p.processes,
            p.cpu().map_or("-".into(), |i| format!(
                "{:.2}% [{:.2}, {:.2}]",
                i.mean, i.lo, i.hi
            )),
            p.cpu_verdict(),
            p.rss_mib,
            p.peak_mib,
            p.rss_verdict(),
            p.threads
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(cpu: &[f64], rss: f64, peak: f64) -> Point {
        Point {
            namespaces: 1000,
            processes: 0,
            cpu_pct: cpu.to_vec(),
            rss_mib: rss,
            peak_mib: peak,
            threads: 2,
        }
    }

    #[test]
    fn verdicts_need_the_whole_interval_inside_the_goal() {
        assert_eq!(
            point(&[0.5, 0.6, 0.55, 0.5], 27.0, 28.0).cpu_verdict(),
            "met"
        );
        assert_eq!(
            point(&[8.0, 8.5, 8.2, 8.4], 27.0, 28.0).cpu_verdict(),
            "MISSED"
        );
        assert_eq!(
            point(&[0.5, 3.5, 1.0, 3.0], 27.0, 28.0).cpu_verdict(),
            "not settled"
        );
        assert_eq!(point(&[1.0], 27.0, 28.0).cpu_verdict(), "not settled");
        assert_eq!(point(&[1.0], 27.0, 33.0).rss_verdict(), "MISSED");
        assert_eq!(point(&[1.0], 27.0, 31.0).rss_verdict(), "met");
        let t = table(&[point(&[0.5, 0.6, 0.55, 0.5], 27.0, 28.0)], 4, 5);
        assert!(t.contains("| 1000 | 0 | 0.54% ["), "{t}");
    }
}
