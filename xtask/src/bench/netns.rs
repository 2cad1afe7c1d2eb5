//! A throwaway network namespace for the bench's workloads: `ip netns add`
//! with loopback up, entered by threads (setns is per thread), removed on
//! drop. A namespace left by a bench that was killed outright is removed by
//! the next run.

use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
    thread,
};

use anyhow::{anyhow, bail, Context, Result};

const PREFIX: &str = "netprobe-bench-";
const RUN_NETNS: &str = "/run/netns";

pub struct Netns {
    pub name: String,
    file: File,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2, which `cargo xtask setup` installs)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The pid in a bench namespace's name (`netprobe-bench-PID-TAG`).
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the namespaces of bench runs whose process is gone.
pub fn remove_stale() {
    let Ok(dir) = fs::read_dir(RUN_NETNS) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                println!("xtask: bench: removing namespace {name} left by an earlier run");
                if let Err(e) = ip(&["netns", "del", &name]) {
                    eprintln!("xtask: bench: {e:#}");
                }
            }
        }
    }
}

impl Netns {
    /// `netprobe-bench-PID-TAG`, with loopback up.
    pub fn create(tag: &str) -> Result<Netns> {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        // From here on, drop removes it.
        let file = File::open(Path::new(RUN_NETNS).join(&name));
        let ns = match file {
            Ok(file) => Netns { name, file },
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(anyhow!("cannot open {RUN_NETNS}/{name}: {e}"));
            }
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Starts `f` on a thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let fd = self.file.try_clone()?;
        let name = self.name.clone();
        Ok(thread::Builder::new()
            .name(what.to_string())
            .spawn(move || {
                // SAFETY: setns(2) on the calling thread only (CLONE_NEWNET
                // is per thread) with an open namespace descriptor.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "cannot enter namespace {name}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                f()
            })?)
    }

    /// Runs `f` in this namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        join(self.spawn("bench-netns", f)?)
    }

    /// The namespace's /proc/net/snmp (through /proc/thread-self: /proc/net
    /// is the thread group leader's, which stays outside).
    pub fn snmp(&self) -> Result<String> {
        self.run(|| {
            fs::read_to_string("/proc/thread-self/net/snmp")
                .context("cannot read /proc/thread-self/net/snmp")
        })
    }

    /// Sets a sysctl of this namespace (`net.ipv4.ip_local_port_range`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || fs::write(&path, value).with_context(|| format!("cannot write {path}")))
    }
}

/// The thread's result, a panic as an error.
pub fn join<T>(h: thread::JoinHandle<Result<T>>) -> Result<T> {
    let name = h.thread().name().unwrap_or("a bench thread").to_string();
    h.join().map_err(|_| anyhow!("{name} panicked"))?
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("xtask: bench: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_namespaces_are_known_by_their_pid() {
        assert_eq!(owner("netprobe-bench-4242-overhead"), Some(4242));
        assert_eq!(owner("netprobe-bench-x-storm"), None);
        assert_eq!(owner("other-4242"), None);
    }
}
