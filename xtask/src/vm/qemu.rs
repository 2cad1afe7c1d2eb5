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

use crate::cmd;

#[derive(Debug)]
pub struct Boot {
    /// None when the guest was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub wall: Duration,
}

/// `NETPROBE_VM_ACCEL=kvm` tries KVM; the default is TCG, because KVM hangs
/// at boot on this project's (nested) machines.
pub fn accel() -> String {
    std::env::var("NETPROBE_VM_ACCEL").unwrap_or_else(|_| "tcg".to_string())
}

pub fn command(kernel: &Path, initrd: &Path, accel: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        accel,
        "-cpu",
        if accel == "kvm" { "host" } else { "max" },
    ])
    .args(["-m", "1024", "-smp", "2"])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-nographic", "-no-reboot"])
    .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    c
}

/// Boots, writing the console to `log`; kills QEMU after `timeout`. Lines
/// with `@@NETPROBE-` markers are echoed as they come, prefixed `[label]`.
pub fn boot(mut qemu: Command, log: &Path, timeout: Duration, label: &str) -> Result<Boot> {
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
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tail.echo(label, start)?;
        thread::sleep(Duration::from_millis(250));
    };
    tail.echo(label, start)?;
    Ok(Boot {
        status,
        wall: start.elapsed(),
    })
}

/// Follows the log, echoing marker lines.
struct Tail {
    file: File,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: &Path) -> Result<Self> {
        Ok(Tail {
            file: File::open(path)?,
            pos: 0,
            partial: Vec::new(),
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
