//! `cargo xtask vm`: netprobe's integration tests on other kernels. Each
//! kernel is a Debian package (cached), booted in QEMU (KVM when it works, else TCG) with a busybox
//! initramfs holding static builds of netprobe and the test executables;
//! /init runs them and powers off, and the serial log becomes one row of
//! the matrix.

mod cpio;
mod elf;
mod guest_build;
mod host;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod report;

use std::{fs, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup};
use report::{Ending, KernelResult};

/// The longest one kernel may take, boot to poweroff (6.12 under TCG takes
/// about a minute for the tests; this is for hangs). `NETPROBE_VM_TIMEOUT`
/// (seconds) overrides it.
const TIMEOUT: Duration = Duration::from_secs(600);

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
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
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
/// /init (TCG gets there in about 5 s here).
const ALIVE_WITHIN: Duration = Duration::from_secs(20);

fn timeout() -> Duration {
    std::env::var("NETPROBE_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(TIMEOUT)
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
    let out_dir = cmd::target_dir()?.join("vm");
    fs::create_dir_all(&out_dir)?;
    let mut results = Vec::new();
    if host {
        results.push(host::run(&built, &out_dir)?);
    }
    if unpacked.is_empty() {
        return Ok(report_all(&results));
    }
    let busybox = initramfs::busybox()?;
    let programs = initramfs::host_programs()?;
    let timeout = timeout();
    let mut accels = qemu::accels();

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
            &built.netprobe,
            &built.tests,
            &modules,
            &programs,
        )?;
        let log = out_dir.join(format!("{}.log", k.short));
        let boot = loop {
            let accel = accels[0].clone();
            // A fallback remains: give this accelerator a short leash to
            // reach /init.
            let leash = (accels.len() > 1).then_some(ALIVE_WITHIN);
            let boot = qemu::boot(
                qemu::command(&k.vmlinuz(), &initrd, &accel),
                &log,
                timeout,
                leash,
                k.short,
            )?;
            if !boot.stalled {
                println!("kernel {}: booted with {accel}", k.short);
                break boot;
            }
            let text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
            println!(
                "kernel {}: {accel} did not reach /init ({} after {:.1}s); falling back to {} for the rest of the run. Console tail:",
                k.short,
                match boot.status {
                    Some(st) => format!("QEMU exited: {st}"),
                    None => format!("killed at the {}s limit", ALIVE_WITHIN.as_secs()),
                },
                boot.wall.as_secs_f64(),
                accels[1]
            );
            for l in report::last_lines(&text, 5) {
                println!("  | {l}");
            }
            accels.remove(0);
        };
        if !keep {
            fs::remove_file(&initrd)?;
        }
        let text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
        let result = KernelResult {
            short: k.short.to_string(),
            wall: boot.wall,
            ending: match boot.status {
                Some(_) => Ending::Exited,
                None => Ending::TimedOut(timeout),
            },
            run: report::parse(&text),
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
        results.push(result);
    }
    Ok(report_all(&results))
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
