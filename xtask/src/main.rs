//! netprobe's task runner: `cargo xtask setup|build|run|test|lint|deploy-check|soak|fuzz|vm|bench`.

mod bench;
mod cmd;
mod deploy;
mod dist;
mod fuzz;
mod setup;
mod vm;

// Shared with netprobe's build script so both agree on what a usable eBPF
// toolchain is. The xtask uses only part of it.
#[allow(dead_code)]
#[path = "../../netprobe/build/toolchain.rs"]
mod toolchain;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "netprobe's setup, build, run and test driver"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The QEMU kernel matrix: Debian 11's, 12's and 13's kernels.
const DEFAULT_KERNELS: &str = "5.10,6.1,6.12";

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the eBPF build and the integration tests need (idempotent).
    Setup,
    /// Set up, then build netprobe with its eBPF programs.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, then run netprobe with ARGS (default: `run`).
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Set up, build, then run the whole workspace's tests, integration tests
    /// included, on this host and then in QEMU on each kernel of the matrix.
    Test {
        /// Kernels for the QEMU part, comma-separated (`none`: this host only).
        #[arg(long, value_delimiter = ',', default_value = DEFAULT_KERNELS)]
        kernels: Vec<String>,
        /// Passed on to `cargo test`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,
    /// The static release binary and an OCI image archive holding only it
    /// (target/dist/netprobe-VERSION.oci.tar), for `podman load`,
    /// `docker load` and `ctr images import`; prints its size and digests.
    Dist,
    /// Set up, build, then check deploy/ offline: the systemd unit
    /// (systemd-analyze verify) and the Kubernetes manifests (schema).
    DeployCheck,
    /// A night compressed: the release daemon under sustained mixed
    /// failures (a storm minute, namespaces churning, OOM kills); prints
    /// RSS, events, losses and CPU, and writes target/soak/results.json.
    Soak {
        /// How long, in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Fuzz netprobe's parsers with cargo-fuzz (nightly): every target, or
    /// those named, N seconds each (fuzz/README.md).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// What netprobe costs, side by side with no tracer and with bpftrace
    /// (root): start-up, overhead on a healthy workload, a storm of drops
    /// and resets, the kernel's BPF statistics; prints a table, writes
    /// target/bench/results.json (BENCHMARKS.md).
    Bench {
        /// Seconds per overhead measurement.
        #[arg(long, default_value_t = 3)]
        secs: u64,
        /// Rounds of the three configurations (no tracer, netprobe, bpftrace):
        /// the overhead's interval is over the rounds' paired ratios.
        #[arg(long, default_value_t = 8)]
        rounds: u32,
        /// Seconds of each storm.
        #[arg(long, default_value_t = 10)]
        storm_secs: u64,
        /// Start-ups timed.
        #[arg(long, default_value_t = 5)]
        starts: u32,
        /// Compare with this netprobe binary (a release build of the code
        /// before a change) instead: start-ups and storms under each, side
        /// by side, no bpftrace and no overhead rounds.
        #[arg(long, value_name = "BINARY")]
        baseline: Option<PathBuf>,
        /// Measure the once-a-second work instead: netprobe idle beside
        /// empty namespaces (`--namespaces`), then beside the last count
        /// and `--processes` idle processes.
        #[arg(long)]
        scale: bool,
        #[arg(long, value_delimiter = ',', default_value = "0,10,100,1000")]
        namespaces: Vec<usize>,
        #[arg(long, default_value_t = 20_000)]
        processes: usize,
    },
    /// Run the integration tests on other kernels (Debian packages, booted in
    /// QEMU) and print a matrix of probes and tests per kernel.
    Vm {
        /// Kernels to test, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = DEFAULT_KERNELS)]
        kernels: Vec<String>,
        /// Keep each kernel's initramfs (target/vm/KERNEL.cpio).
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().task.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Task {
    fn run(self) -> Result<ExitCode> {
        match self {
            Task::Setup => setup::ensure().map(|()| ExitCode::SUCCESS),
            Task::Build { release } => {
                setup::ensure()?;
                build_netprobe(release).map(|_| ExitCode::SUCCESS)
            }
            Task::Run { release, args } => run(release, args),
            Task::Test { kernels, args } => test(&kernels, args),
            Task::Lint => lint().map(|()| ExitCode::SUCCESS),
            Task::Dist => {
                setup::ensure()?;
                dist::run().map(|_| ExitCode::SUCCESS)
            }
            Task::Soak { minutes } => soak(minutes),
            Task::DeployCheck => {
                setup::ensure()?;
                deploy::check(&build_netprobe(false)?).map(|()| ExitCode::SUCCESS)
            }
            Task::Fuzz { secs, targets } => fuzz::run(secs, &targets),
            Task::Bench {
                secs,
                rounds,
                storm_secs,
                starts,
                baseline,
                scale,
                namespaces,
                processes,
            } => bench(
                bench::Options {
                    secs: secs.max(1),
                    rounds: rounds.max(1),
                    storm_secs: storm_secs.max(1),
                    starts: starts.max(1),
                },
                baseline,
                scale.then_some((namespaces, processes)),
            ),
            Task::Vm { kernels, keep } => Ok(if vm::run(&kernels, keep, false)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }),
        }
    }
}

/// The soak test (ignored by the default test command) against the release
/// binary.
fn soak(minutes: u64) -> Result<ExitCode> {
    check_test_privileges()?;
    setup::ensure()?;
    let bin = build_netprobe(true)?;
    let mut test = cargo_requiring_ebpf();
    test.env("NETPROBE_BIN", &bin)
        .env("NETPROBE_SOAK_SECS", (minutes * 60).to_string())
        .args([
            "test",
            "-p",
            INTEGRATION_TESTS,
            "--test",
            "soak",
            "--",
            "--ignored",
            "--nocapture",
        ]);
    let status = cmd::status(&mut test)?;
    Ok(ExitCode::from(cmd::exit_code(status)))
}

/// The bench against the release binary, with bpftrace installed.
fn bench(
    opts: bench::Options,
    baseline: Option<PathBuf>,
    scale: Option<(Vec<usize>, usize)>,
) -> Result<ExitCode> {
    if !cmd::is_root() {
        bail!(
            "cargo xtask bench needs root (euid {}): it loads eBPF programs, runs bpftrace, \
             creates network namespaces and sets kernel.bpf_stats_enabled",
            cmd::euid()
        );
    }
    if let Some(before) = &baseline {
        if !before.is_file() {
            bail!("--baseline {}: no such file", before.display());
        }
    }
    setup::ensure()?;
    if baseline.is_none() && scale.is_none() {
        setup::ensure_all(bench::REQUIREMENTS)?;
    }
    let bin = build_netprobe(true)?;
    match (&baseline, &scale) {
        (_, Some((namespaces, processes))) => bench::scale(&bin, namespaces, *processes)?,
        (Some(before), None) => bench::compare(&bin, before, &opts)?,
        (None, None) => bench::run(&bin, &opts)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo build -p netprobe` with the eBPF object required; returns the binary.
fn build_netprobe(release: bool) -> Result<PathBuf> {
    let mut build = cargo_requiring_ebpf();
    build.args(["build", "-p", "netprobe"]);
    if release {
        build.arg("--release");
    }
    cmd::run(&mut build)?;
    let profile = if release { "release" } else { "debug" };
    let bin = cmd::target_dir()?.join(profile).join("netprobe");
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

fn cargo_requiring_ebpf() -> Command {
    let mut c = cmd::cargo();
    c.env("NETPROBE_REQUIRE_EBPF", "1");
    c
}

fn run(release: bool, args: Vec<String>) -> Result<ExitCode> {
    setup::ensure()?;
    let bin = build_netprobe(release)?;
    let status = cmd::status(Command::new(&bin).args(netprobe_args(args)))?;
    Ok(ExitCode::from(cmd::exit_code(status)))
}

/// What to run netprobe with: the given arguments, else `run`.
fn netprobe_args(given: Vec<String>) -> Vec<String> {
    if given.is_empty() {
        vec!["run".to_string()]
    } else {
        given
    }
}

/// The kernels to boot, from `--kernels` (`none`: none).
fn vm_kernels(kernels: &[String]) -> Vec<String> {
    kernels
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty() && *k != "none")
        .map(str::to_string)
        .collect()
}

/// Without ARGS: the unit tests with cargo, then the integration tests on
/// this host and in each kernel of the matrix, through one runner that
/// prints one matrix. With ARGS: `cargo test ARGS` on this host, then the
/// matrix's kernels.
fn test(kernels: &[String], args: Vec<String>) -> Result<ExitCode> {
    check_test_privileges()?;
    let kernels = vm_kernels(kernels);
    let mut phases = Phases::default();
    phases.time("setup", setup::ensure)?;
    let bin = phases.time("build", || build_netprobe(false))?;
    let whole = args.is_empty();
    let mut cargo_test = cargo_requiring_ebpf();
    cargo_test.env("NETPROBE_BIN", &bin).args(if whole {
        // The integration tests run below, on the host and in the guests.
        cargo_test_args(vec!["--exclude".into(), INTEGRATION_TESTS.into()])
    } else {
        cargo_test_args(args)
    });
    let cargo = phases.time("cargo test", || cmd::status(&mut cargo_test))?;
    let deployment = !whole || phases.time("deploy check", || deploy::check_reported(&bin));
    if kernels.is_empty() {
        println!("xtask: --kernels none: the QEMU kernel matrix is not run");
    }
    let matrix = if whole || !kernels.is_empty() {
        let name = if kernels.is_empty() {
            "host"
        } else {
            "host + vm"
        };
        phases.time(name, || vm::run(&kernels, false, whole))?
    } else {
        true
    };
    println!("xtask: {phases}");
    match (cargo.success(), matrix) {
        (true, true) if !deployment => {
            println!("xtask: test: the deployment checks (deploy/) failed");
            Ok(ExitCode::FAILURE)
        }
        (true, true) => Ok(ExitCode::SUCCESS),
        (false, _) => {
            println!("xtask: test: `cargo test` failed");
            Ok(ExitCode::from(cmd::exit_code(cargo).max(1)))
        }
        (true, false) => {
            println!("xtask: test: the integration test matrix failed");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The package of the root-only integration tests (tests/).
const INTEGRATION_TESTS: &str = "netprobe-tests";

/// `cargo test --workspace ARGS`, minus `--workspace` when ARGS pick
/// packages themselves (cargo would otherwise silently test everything).
fn cargo_test_args(extra: Vec<String>) -> Vec<String> {
    let cargo_args = extra.iter().take_while(|a| *a != "--");
    let picks_packages = cargo_args
        .clone()
        .any(|a| a.starts_with("-p") || a == "--package" || a.starts_with("--package="));
    let mut args = vec!["test".to_string()];
    if !picks_packages {
        args.push("--workspace".to_string());
    }
    args.extend(extra);
    args
}

/// The integration tests load eBPF programs and create network namespaces.
fn check_test_privileges() -> Result<()> {
    if cmd::is_root() {
        return Ok(());
    }
    let why = format!(
        "not root (euid {}): the integration tests (crate `tests`) need root to load eBPF \
         programs, read tracefs and create network namespaces",
        cmd::euid()
    );
    if std::env::var_os("CI").is_some() {
        bail!("{why}; CI must run them as root");
    }
    if std::env::var("NETPROBE_TESTS_SKIP_WITHOUT_ROOT").is_ok_and(|v| v == "1") {
        println!(
            "xtask: note: {why}; NETPROBE_TESTS_SKIP_WITHOUT_ROOT=1: they will be skipped, and each \
             test executable prints how many it skipped"
        );
        return Ok(());
    }
    bail!(
        "{why}. Run as root, or set NETPROBE_TESTS_SKIP_WITHOUT_ROOT=1 to skip them explicitly \
         (`--kernels none -- --workspace --exclude netprobe-tests` runs the unit tests alone)"
    )
}

fn lint() -> Result<()> {
    let checks = [
        vec!["fmt", "--all", "--", "--check"],
        vec![
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ];
    let mut failed = Vec::new();
    for args in checks {
        let mut c = cmd::cargo();
        c.env_remove("NETPROBE_REQUIRE_EBPF").args(&args);
        if !cmd::status(&mut c)?.success() {
            failed.push(format!("cargo {}", args.join(" ")));
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Wall-clock time of each phase, for the summary line.
#[derive(Debug, Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push((name, start.elapsed()));
        out
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(name, d)| format!("{name} {:.1}s", d.as_secs_f64()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Task {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .unwrap()
            .task
    }

    #[test]
    fn run_defaults_to_netprobe_run() {
        assert_eq!(netprobe_args(vec![]), vec!["run"]);
        let given = vec!["check".to_string(), "--json".to_string()];
        assert_eq!(netprobe_args(given.clone()), given);
    }

    #[test]
    fn run_passes_arguments_after_double_dash() {
        match parse(&["run", "--release", "--", "run", "--output", "json"]) {
            Task::Run { release, args } => {
                assert!(release);
                assert_eq!(args, ["run", "--output", "json"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["run"]) {
            Task::Run { release, args } => assert!(!release && args.is_empty()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn test_passes_cargo_arguments_after_double_dash() {
        match parse(&["test", "--", "-p", "netprobe-tests", "--", "--nocapture"]) {
            Task::Test { kernels, args } => {
                assert_eq!(args, ["-p", "netprobe-tests", "--", "--nocapture"]);
                assert_eq!(vm_kernels(&kernels), ["5.10", "6.1", "6.12"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["test", "--kernels", "6.1"]) {
            Task::Test { kernels, args } => {
                assert_eq!(vm_kernels(&kernels), ["6.1"]);
                assert!(args.is_empty());
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["test", "--kernels", "none"]) {
            Task::Test { kernels, .. } => assert!(vm_kernels(&kernels).is_empty()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn netprobe_arguments_need_double_dash() {
        assert!(Cli::try_parse_from(["xtask", "run", "check"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bogus"]).is_err());
    }

    #[test]
    fn cargo_test_covers_the_workspace_unless_packages_are_picked() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cargo_test_args(vec![]), ["test", "--workspace"]);
        assert_eq!(
            cargo_test_args(strings(&["--", "--nocapture", "-p"])),
            ["test", "--workspace", "--", "--nocapture", "-p"]
        );
        for pick in [
            &["-p", "xtask"][..],
            &["-pxtask"],
            &["--package", "xtask"],
            &["--package=xtask"],
        ] {
            let mut want = vec!["test".to_string()];
            want.extend(strings(pick));
            assert_eq!(cargo_test_args(strings(pick)), want);
        }
    }

    #[test]
    fn phases_print_one_decimal() {
        let phases = Phases(vec![
            ("setup", Duration::from_millis(300)),
            ("build", Duration::from_millis(41_249)),
            ("tests", Duration::from_secs(12)),
        ]);
        assert_eq!(phases.to_string(), "setup 0.3s, build 41.2s, tests 12.0s");
    }
}
