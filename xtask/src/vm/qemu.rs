//! Booting a kernel and initramfs in QEMU with the serial console in a log
//! file, under a hard timeout.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::budget;
use crate::cmd;

#[derive(Debug)]
pub struct Boot {
    /// None when the guest was killed (timeout, or no sign of life).
    pub status: Option<ExitStatus>,
    pub wall: Duration,
    /// The limit the guest was killed at, when it was.
    pub limit: Duration,
    /// With an `alive_within` limit: /init never started, because QEMU was
    /// killed at the limit or exited before (KVM can abort at once, e.g.
    /// `failed to set MSR 0x10a` on nested hosts).
    pub stalled: bool,
}

/// The line /init prints first; its absence means the kernel never got there.
pub const ALIVE_MARKER: &str = "@@NETPROBE-VM kernel ";

/// The line where /init says its speed and its total limit.
pub const SPEED_MARKER: &str = "@@NETPROBE-VM speed ";

/// The accelerators to use: `NETPROBE_VM_ACCEL=kvm|tcg` forces one;
/// otherwise KVM first when /dev/kvm can be opened, then TCG as the
/// fallback (KVM hangs early in boot on this project's nested machines).
pub fn accels() -> Vec<String> {
    if let Ok(a) = std::env::var("NETPROBE_VM_ACCEL") {
        return vec![a];
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm {
        vec!["kvm".into(), "tcg".into()]
    } else {
        vec!["tcg".into()]
    }
}

pub fn command(kernel: &Path, initrd: &Path, accel: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        accel,
        "-cpu",
        if accel == "kvm" { "host" } else { "max" },
    ])
    // The initramfs (executables, journald and their libraries) unpacks
    // into RAM: room for it, the tests and a 32 MiB OOM cgroup.
    .args(["-m", "2048", "-smp", "2"])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-nographic", "-no-reboot"])
    // The tests read `netprobe.accel` from /proc/cmdline: timing bounds
    // (exit within a second) mean nothing under TCG's emulation.
    .args([
        "-append",
        &format!("console=ttyS0 panic=-1 quiet netprobe.accel={accel}"),
    ]);
    c
}

/// Boots, writing the console to `log`. QEMU is killed when /init has not
/// said its speed within `budget::BOOT_LIMIT_SECS`, then when the guest's
/// own total limit (scaled by its speed) and `budget::HOST_SLACK_SECS`
/// have passed; `fixed` (NETPROBE_VM_TIMEOUT) replaces both with one limit.
/// With `alive_within`, QEMU is also killed if /init has not printed
/// `ALIVE_MARKER` by then (an exit before the marker also counts as
/// stalled). Lines with `@@NETPROBE-` markers are echoed as they come,
/// prefixed `[label]`.
pub fn boot(
    mut qemu: Command,
    log: &Path,
    fixed: Option<Duration>,
    alive_within: Option<Duration>,
    label: &str,
    on_alive: &dyn Fn(),
) -> Result<Boot> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    eprintln!("xtask: $ {} > {}", cmd::describe(&qemu), log.display());
    let start = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let mut tail = Tail::new(log)?;
    let mut stalled = false;
    let mut limit = fixed.unwrap_or(Duration::from_secs(budget::BOOT_LIMIT_SECS));
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        stalled = alive_within.is_some_and(|a| start.elapsed() > a) && !tail.alive;
        if let (None, Some((at, total))) = (fixed, tail.total) {
            limit = at + Duration::from_secs(u64::from(total) + budget::HOST_SLACK_SECS);
        }
        if start.elapsed() > limit || stalled {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        let was_alive = tail.alive;
        tail.echo(label, start)?;
        if tail.alive && !was_alive {
            on_alive();
        }
        thread::sleep(Duration::from_millis(250));
    };
    tail.echo(label, start)?;
    let stalled = stalled || (alive_within.is_some() && !tail.alive);
    Ok(Boot {
        status,
        wall: start.elapsed(),
        limit,
        stalled,
    })
}

/// Follows the log, echoing marker lines.
struct Tail {
    file: File,
    pos: u64,
    partial: Vec<u8>,
    /// `ALIVE_MARKER` seen.
    alive: bool,
    /// When /init said its speed, and its total limit (seconds).
    total: Option<(Duration, u32)>,
}

impl Tail {
    fn new(path: &Path) -> Result<Self> {
        Ok(Tail {
            file: File::open(path)?,
            pos: 0,
            partial: Vec::new(),
            alive: false,
            total: None,
        })
    }

    fn echo(&mut self, label: &str, start: Instant) -> Result<()> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        self.pos += self.file.read_to_end(&mut buf)? as u64;
        self.partial.extend(buf);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            self.alive |= line.contains(ALIVE_MARKER);
            if let Some(at) = line.find(SPEED_MARKER) {
                let total = line[at..]
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("total="))
                    .and_then(|t| t.trim().parse().ok());
                if let Some(total) = total {
                    self.total = Some((start.elapsed(), total));
                }
            }
            if let Some(at) = line.find("@@NETPROBE-") {
                println!(
                    "[{label} {:5.1}s] {}",
                    start.elapsed().as_secs_f64(),
                    line[at..].trim_end()
                );
            }
        }
        Ok(())
    }
}
