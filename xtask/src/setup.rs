//! `cargo xtask setup`: make sure the eBPF build and the integration tests have
//! what they need, installing it (Debian, root) when missing. What counts as a
//! usable eBPF compiler and linker is decided by netprobe's own build script
//! code (`toolchain.rs`), so setup and build always agree.

use std::{fmt, path::Path, process::Command};

use anyhow::{bail, Result};

use crate::{cmd, toolchain};

/// One install command, spelled so that it can both run and be printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AptUpdate,
    Apt(&'static [&'static str]),
    /// Without the packages' recommendations (a server package whose
    /// recommends are more servers).
    AptLean(&'static [&'static str]),
    Cargo {
        envs: &'static [(&'static str, &'static str)],
        args: &'static [&'static str],
    },
}

impl Step {
    fn command(self) -> Command {
        match self {
            Step::AptUpdate => apt(["update"]),
            Step::Apt(packages) => apt(["install", "-y"].iter().chain(packages)),
            Step::AptLean(packages) => apt(["install", "-y", "--no-install-recommends"]
                .iter()
                .chain(packages)),
            Step::Cargo { envs, args } => {
                let mut c = Command::new("cargo");
                c.envs(envs.iter().copied()).args(args);
                c
            }
        }
    }
}

fn apt<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    c
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cmd::describe(&self.command()))
    }
}

/// Something the build or the tests need, how to find it and how to get it.
pub struct Requirement {
    pub what: &'static str,
    /// What was found (shown after `ok:`), or None when missing.
    pub find: fn() -> Option<String>,
    pub install: &'static [Step],
}

const LLVM_ENVS: &[(&str, &str)] = &[
    // bpf-linker's build script looks for llvm-config on PATH or in LLVM_PREFIX.
    ("LLVM_PREFIX", "/usr/lib/llvm-22"),
    ("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
];

pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "eBPF rustc (rustc with library sources)",
        find: || toolchain::find_ebpf_rustc().map(|r| r.describe()),
        install: &[Step::Apt(&["rustc-web", "rust-web-src"])],
    },
    Requirement {
        what: "bpf-linker (LLVM 22)",
        find: || toolchain::find_bpf_linker().map(|p| p.display().to_string()),
        install: &[
            Step::Apt(&[
                "llvm-22-dev",
                "libpolly-22-dev",
                "libzstd-dev",
                "zlib1g-dev",
            ]),
            Step::Cargo {
                envs: LLVM_ENVS,
                args: &[
                    "install",
                    "bpf-linker",
                    "--version",
                    "0.13.0",
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ],
            },
        ],
    },
    Requirement {
        what: "iproute2 (ip netns, for the integration tests)",
        find: || first_existing(&["/usr/bin/ip", "/sbin/ip"]),
        install: &[Step::Apt(&["iproute2"])],
    },
    Requirement {
        what: "systemd (journald and journalctl for the integration tests, systemd-analyze \
               for deploy-check)",
        find: || {
            let journald = first_existing(&["/lib/systemd/systemd-journald"])?;
            cmd::which("journalctl")?;
            cmd::which("systemd-analyze")?;
            Some(journald)
        },
        install: &[Step::Apt(&["systemd"])],
    },
    Requirement {
        what: "nftables (nft, for the netfilter drop scenarios)",
        find: || first_existing(&["/usr/sbin/nft", "/sbin/nft"]),
        install: &[Step::Apt(&["nftables"])],
    },
    Requirement {
        what: "podman with runc, and a static busybox (a real container for the attribution \
               tests; crun refuses this machine type's hybrid cgroups)",
        find: || {
            cmd::which("podman")?;
            let runc = first_existing(&["/usr/sbin/runc", "/usr/bin/runc"])?;
            first_existing(&["/bin/busybox", "/usr/bin/busybox"])?;
            Some(runc)
        },
        install: &[Step::Apt(&["podman", "runc", "busybox-static"])],
    },
    Requirement {
        what: "containerd and ctr (the image test runs netprobe's image under containerd, \
               with its default seccomp profile, as the kubelet's runtime would)",
        find: || {
            cmd::which("ctr")?;
            cmd::which("containerd").map(|p| p.display().to_string())
        },
        install: &[Step::AptLean(&["containerd"])],
    },
    Requirement {
        what: "Docker (dockerd and docker: the image test loads netprobe's image with \
               `docker load` and runs it with the manifest's settings)",
        find: || {
            cmd::which("docker")?;
            cmd::which("dockerd").map(|p| p.display().to_string())
        },
        install: &[Step::AptLean(&["docker.io"])],
    },
    Requirement {
        what: "Prometheus (a real server scraping the metrics endpoint, and promtool to query it)",
        find: || {
            cmd::which("promtool")?;
            cmd::which("prometheus").map(|p| p.display().to_string())
        },
        install: &[Step::AptLean(&["prometheus"])],
    },
    Requirement {
        what: "iptables (iptables-legacy-restore, for the rule bloat test)",
        find: || {
            first_existing(&[
                "/usr/sbin/iptables-legacy-restore",
                "/sbin/iptables-legacy-restore",
            ])
        },
        install: &[Step::Apt(&["iptables"])],
    },
];

fn first_existing(paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

/// The install steps for the missing requirements, in order, with one
/// `apt-get update` before the first apt install.
pub fn plan<'a>(missing: &[&'a Requirement]) -> Vec<(&'a Requirement, Vec<Step>)> {
    let mut updated = false;
    missing
        .iter()
        .map(|req| {
            let mut steps = Vec::new();
            for &step in req.install {
                if matches!(step, Step::Apt(_) | Step::AptLean(_)) && !updated {
                    steps.push(Step::AptUpdate);
                    updated = true;
                }
                steps.push(step);
            }
            (*req, steps)
        })
        .collect()
}

fn how(steps: &[Step]) -> String {
    steps
        .iter()
        .map(Step::to_string)
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Checks every requirement, installs what is missing, and checks again.
pub fn ensure() -> Result<()> {
    ensure_all(REQUIREMENTS)
}

/// [`ensure`] for another list (a task's own tools, such as the bench's).
pub fn ensure_all(requirements: &[Requirement]) -> Result<()> {
    let mut missing = Vec::new();
    for req in requirements {
        match (req.find)() {
            Some(found) => println!("ok: {}: {found}", req.what),
            None => missing.push(req),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let plan = plan(&missing);
    if let Some(why) = cannot_install() {
        return Err(manual_instructions(&why, &plan));
    }
    for (req, steps) in &plan {
        println!("installing: {} ({})", req.what, how(steps));
        install(req, steps)?;
    }
    Ok(())
}

/// Why we cannot install here, if we cannot.
fn cannot_install() -> Option<String> {
    if !cmd::is_root() {
        return Some(format!("not root (euid {})", cmd::euid()));
    }
    if cmd::which("apt-get").is_none() {
        return Some("apt-get not found (these instructions are for Debian)".into());
    }
    None
}

fn manual_instructions(why: &str, plan: &[(&Requirement, Vec<Step>)]) -> anyhow::Error {
    let mut text = format!("cannot install the missing requirements: {why}. As root, run:");
    for (req, steps) in plan {
        text.push_str(&format!("\n  # {}", req.what));
        for step in steps {
            text.push_str(&format!("\n  {step}"));
        }
    }
    text.push_str("\nthen run `cargo xtask setup` again.");
    anyhow::anyhow!(text)
}

fn install(req: &Requirement, steps: &[Step]) -> Result<()> {
    for step in steps {
        cmd::run(&mut step.command())?;
    }
    match (req.find)() {
        Some(found) => {
            println!("ok: {}: {found}", req.what);
            Ok(())
        }
        None => bail!(
            "{} is still missing after `{}`; see shared/docs/toolchain.md",
            req.what,
            how(steps)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_updates_apt_once_before_the_first_install() {
        let missing: Vec<&Requirement> = REQUIREMENTS.iter().collect();
        let plan = plan(&missing);
        let all: Vec<Step> = plan.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(all.iter().filter(|s| **s == Step::AptUpdate).count(), 1);
        assert_eq!(all[0], Step::AptUpdate);
        assert_eq!(all[1], Step::Apt(&["rustc-web", "rust-web-src"]));
        // Nothing but the first entry carries the update.
        assert!(plan[1..].iter().all(|(_, s)| !s.contains(&Step::AptUpdate)));
    }

    #[test]
    fn plan_without_apt_steps_has_no_update() {
        static CARGO_ONLY: Requirement = Requirement {
            what: "x",
            find: || None,
            install: &[Step::Cargo {
                envs: &[],
                args: &["install", "x"],
            }],
        };
        let plan = plan(&[&CARGO_ONLY]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].1, CARGO_ONLY.install.to_vec());
    }

    #[test]
    fn bpf_linker_is_installed_the_verified_way() {
        let linker = &REQUIREMENTS[1];
        assert_eq!(
            how(linker.install),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y llvm-22-dev libpolly-22-dev \
             libzstd-dev zlib1g-dev && LLVM_PREFIX=/usr/lib/llvm-22 \
             LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 \
             --locked --no-default-features --features llvm-22"
        );
    }

    #[test]
    fn manual_instructions_list_every_command() {
        let missing: Vec<&Requirement> = REQUIREMENTS.iter().collect();
        let text = manual_instructions("not root", &plan(&missing)).to_string();
        assert!(text.starts_with("cannot install the missing requirements: not root."));
        assert!(text.contains("\n  DEBIAN_FRONTEND=noninteractive apt-get update\n"));
        assert!(text.contains("apt-get install -y rustc-web rust-web-src"));
        assert!(text.contains("cargo install bpf-linker --version 0.13.0"));
        assert!(text.contains("apt-get install -y iproute2"));
        assert!(text.contains("apt-get install -y systemd"));
        assert!(text.contains("apt-get install -y nftables"));
    }
}
