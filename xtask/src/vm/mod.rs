//! `cargo xtask vm`: netprobe's integration tests on other kernels. Each
//! kernel is a Debian package (cached), booted in QEMU (KVM when it works, else TCG) with a busybox
//! initramfs holding static builds of netprobe and the test executables;
//! /init runs them and powers off, and the serial log becomes one row of
//! the matrix.

mod budget;
mod cpio;
mod elf;
mod guest_build;
pub use guest_build::release_static;
mod host;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod report;

use std::{
    fs,
    process::Command,
    sync::{Condvar, Mutex},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup};
use report::{Ending, KernelResult};

/// What `vm` needs on the host beyond the eBPF toolchain: (what, apt package,
/// found?).
fn tools() -> [(&'static str, &'static str, Option<String>); 4] {
    let on_path = |name: &str| cmd::which(name).map(|p| p.display().to_string());
    [
        (
            "QEMU (qemu-system-x86_64)",
            "qemu-system-x86",
            on_path("qemu-system-x86_64"),
        ),
        (
            "static busybox (the guest's userland)",
            "busybox-static",
            initramfs::busybox()
                .ok()
                .map(|b| b.path.display().to_string()),
        ),
        ("cpio (to inspect the images)", "cpio", on_path("cpio")),
        ("xz (compressed kernel modules)", "xz-utils", on_path("xz")),
    ]
}

/// Like `setup::ensure`, for the VM's tools: one `ok:` or `installing:` line each.
fn ensure_tools() -> Result<()> {
    let mut missing = Vec::new();
    for (what, package, found) in tools() {
        match found {
            Some(f) => println!("ok: {what}: {f}"),
            None => missing.push((what, package)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    let mut update = Command::new("apt-get");
    update
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("update");
    let mut install = Command::new("apt-get");
    // Only what the guests use: qemu-system-x86's recommended packages
    // (its GTK and SDL front ends, GStreamer, Mesa, OVMF) are not.
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages);
    let how = format!("{} && {}", cmd::describe(&update), cmd::describe(&install));
    if !cmd::is_root() || cmd::which("apt-get").is_none() {
        bail!(
            "missing {}; as root, run:\n  {how}",
            missing
                .iter()
                .map(|(w, _)| *w)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (what, _) in &missing {
        println!("installing: {what} ({how})");
    }
    cmd::run(&mut update)?;
    cmd::run(&mut install)?;
    for (what, _, found) in tools() {
        match found {
            Some(f) => println!("ok: {what}: {f}"),
            None => bail!("{what} is still missing after `{how}`"),
        }
    }
    Ok(())
}

/// How long an accelerator with a fallback behind it may take to reach
/// /init (TCG gets there in about 4 s here, KVM in 1-2 s where it works).
const ALIVE_WITHIN: Duration = Duration::from_secs(12);

/// `NETPROBE_VM_TIMEOUT` (seconds): one fixed limit per guest instead of
/// the limits calibrated from its speed.
fn fixed_timeout() -> Option<Duration> {
    std::env::var("NETPROBE_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// How many guests boot at once: `NETPROBE_VM_JOBS`, else one per kernel
/// up to three. A guest under TCG keeps a core about half busy (its tests
/// mostly wait for the kernel and the daemon), so three guests on this
/// project's two cores finish sooner than two, and their limits follow
/// their speed.
fn jobs(kernels: usize) -> usize {
    std::env::var("NETPROBE_VM_JOBS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(3)
        .clamp(1, kernels.max(1))
}

/// The accelerator, decided once for all guests: while the first guest
/// tries one that has a fallback behind it, the others wait; once it
/// reached /init (or stalled, and the fallback is taken) every guest boots
/// with what worked.
struct AccelChoice {
    /// (accelerators left, first one decided, a trial is running)
    state: Mutex<(Vec<String>, bool, bool)>,
    changed: Condvar,
}

impl AccelChoice {
    fn new(accels: Vec<String>) -> AccelChoice {
        let decided = accels.len() < 2;
        AccelChoice {
            state: Mutex::new((accels, decided, false)),
            changed: Condvar::new(),
        }
    }

    /// The accelerator to boot with, and whether this boot is the trial
    /// (a fallback remains).
    fn acquire(&self) -> (String, bool) {
        let mut st = self.state.lock().unwrap();
        loop {
            if st.1 {
                return (st.0[0].clone(), false);
            }
            if !st.2 {
                st.2 = true;
                return (st.0[0].clone(), true);
            }
            st = self.changed.wait(st).unwrap();
        }
    }

    fn alive(&self) {
        let mut st = self.state.lock().unwrap();
        st.1 = true;
        self.changed.notify_all();
    }

    /// The trial stalled: drop that accelerator; returns the next.
    fn stalled(&self) -> String {
        let mut st = self.state.lock().unwrap();
        st.0.remove(0);
        st.1 = st.0.len() < 2;
        st.2 = false;
        self.changed.notify_all();
        st.0[0].clone()
    }
}

/// Runs the integration tests on this host (with `host`) and in each
/// kernel, and prints one matrix; `Ok(true)` when every row passed.
pub fn run(kernels: &[String], keep: bool, host: bool) -> Result<bool> {
    let kernels = kernels
        .iter()
        .map(|k| kernel::by_short(k))
        .collect::<Result<Vec<_>>>()?;
    setup::ensure()?;
    if !kernels.is_empty() {
        ensure_tools()?;
    }
    let cache = kernel::cache_dir();
    let unpacked = kernels
        .iter()
        .map(|k| kernel::fetch(k, &cache))
        .collect::<Result<Vec<_>>>()?;
    let mut built = guest_build::build()?;
    // NETPROBE_VM_TESTS=a,b: only those test executables (for iterating on
    // one scenario; the matrix then lists only them).
    if let Ok(only) = std::env::var("NETPROBE_VM_TESTS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        built.tests.retain(|t| only.contains(&t.name.as_str()));
        if built.tests.is_empty() {
            bail!("NETPROBE_VM_TESTS={only:?} names no test executable");
        }
    }
    let expected = guest_build::list_tests(&built.tests)?;
    let out_dir = cmd::target_dir()?.join("vm");
    fs::create_dir_all(&out_dir)?;
    let mut results = Vec::new();
    if host {
        let mut r = host::run(&built, &out_dir)?;
        r.expected = expected.clone();
        results.push(r);
    }
    if unpacked.is_empty() {
        return Ok(report_all(&results));
    }
    let busybox = initramfs::busybox()?;
    let programs = initramfs::host_programs()?;
    let mut prepared = Vec::new();
    for k in &unpacked {
        let modules = modules::select(&k.modules_dir(), modules::WANTED)
            .with_context(|| format!("kernel {}: modules", k.short))?;
        let names = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        let load: Vec<String> = modules.load.iter().map(|(n, _)| n.clone()).collect();
        println!(
            "kernel {}: modules to load: {}; built in: {}; absent: {}",
            k.short,
            names(&load),
            names(&modules.builtin),
            names(&modules.absent)
        );
        let initrd = out_dir.join(format!("{}.cpio", k.short));
        initramfs::write(
            &initrd,
            &busybox,
            &built,
            &modules,
            &programs,
            budget::reference_boot_cs(k.short),
        )?;
        prepared.push((k, initrd));
    }
    let jobs = jobs(prepared.len());
    println!("xtask: vm: {} guests, {jobs} at a time", prepared.len());
    let accel = AccelChoice::new(qemu::accels());
    let queue = Mutex::new(prepared.into_iter());
    let done = Mutex::new(Vec::new());
    thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let next = queue.lock().unwrap().next();
                        let Some((k, initrd)) = next else {
                            return Ok(());
                        };
                        let result = boot_one(k, &initrd, &out_dir, &accel, &expected)?;
                        if !keep {
                            fs::remove_file(&initrd)?;
                        }
                        done.lock().unwrap().push(result);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a guest's thread panicked"))??;
        }
        Ok(())
    })?;
    let mut guests = done.into_inner().unwrap();
    guests.sort_by_key(|r| unpacked.iter().position(|k| k.short == r.short));
    results.extend(guests);
    Ok(report_all(&results))
}

/// Boots one kernel's guest (with the accelerator fallback) and reads its
/// log into a row.
fn boot_one(
    k: &kernel::Unpacked,
    initrd: &std::path::Path,
    out_dir: &std::path::Path,
    accel: &AccelChoice,
    expected: &report::Expected,
) -> Result<KernelResult> {
    let log = out_dir.join(format!("{}.log", k.short));
    let (mut name, mut trial) = accel.acquire();
    let boot = loop {
        // A fallback remains: give this accelerator a short leash to
        // reach /init.
        let leash = trial.then_some(ALIVE_WITHIN);
        let on_alive = || {
            if trial {
                accel.alive();
            }
        };
        let boot = qemu::boot(
            qemu::command(&k.vmlinuz(), initrd, &name),
            &log,
            fixed_timeout(),
            leash,
            k.short,
            &on_alive,
        )?;
        if !boot.stalled {
            println!("kernel {}: booted with {name}", k.short);
            break boot;
        }
        let text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
        let next = accel.stalled();
        println!(
            "kernel {}: {name} did not reach /init ({} after {:.1}s); falling back to {next} for the rest of the run. Console tail:",
            k.short,
            match boot.status {
                Some(st) => format!("QEMU exited: {st}"),
                None => format!("killed at the {}s limit", ALIVE_WITHIN.as_secs()),
            },
            boot.wall.as_secs_f64(),
        );
        for l in report::last_lines(&text, 5) {
            println!("  | {l}");
        }
        (name, trial) = accel.acquire();
    };
    let text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
    let result = KernelResult {
        short: k.short.to_string(),
        wall: boot.wall,
        ending: match boot.status {
            Some(_) => Ending::Exited,
            None => Ending::TimedOut(boot.limit),
        },
        run: report::parse(&text),
        expected: expected.clone(),
    };
    if matches!(result.ending, Ending::TimedOut(_)) || !result.run.done {
        println!(
            "kernel {}: the guest did not finish; last 40 console lines ({}):",
            k.short,
            log.display()
        );
        for l in report::last_lines(&text, 40) {
            println!("  | {l}");
        }
    }
    println!(
        "kernel {}: {} in {:.1}s, log {}",
        k.short,
        if result.problems().is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        boot.wall.as_secs_f64(),
        log.display()
    );
    Ok(result)
}

/// Prints the matrix; true when every row passed.
fn report_all(results: &[KernelResult]) -> bool {
    println!("\n{}", report::render(results));
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.problems().is_empty())
        .map(|r| r.short.as_str())
        .collect();
    if failed.is_empty() {
        println!("xtask: vm: every row of the matrix passed");
        true
    } else {
        println!("xtask: matrix: failed on {}", failed.join(", "));
        false
    }
}
