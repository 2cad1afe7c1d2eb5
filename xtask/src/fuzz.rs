//! `cargo xtask fuzz [--secs N] [TARGET...]`: runs the cargo-fuzz (libFuzzer)
//! targets of `fuzz/` over netprobe's parsers of kernel, procfs and user
//! input, N seconds each, and says per target how many inputs ran, how big
//! the corpus is and whether it crashed.
//!
//! cargo-fuzz needs nightly: the rustup `nightly` toolchain (the one
//! `netprobe/build/toolchain.rs` looks for first), else the running cargo
//! with `RUSTC_BOOTSTRAP=1` and no sanitizer. cargo-fuzz itself is installed
//! with `cargo install cargo-fuzz --locked` when missing.
//!
//! Each target's working corpus is `fuzz/corpus/TARGET/` (not in git). Before
//! a run it gets copies of the real files kept under `netprobe/testdata`
//! that the target parses; `fuzz/seeds/TARGET/` (in git) holds seeds that
//! testdata has no file for, and is read as a second corpus;
//! `fuzz/dicts/TARGET.dict`, where there is one, gives libFuzzer the
//! tokens of the format.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, toolchain};

/// A fuzz target (`fuzz/fuzz_targets/NAME.rs`) and the testdata files it
/// starts from: files named `file_name` anywhere under `under`.
pub struct Target {
    pub name: &'static str,
    pub testdata: &'static [(&'static str, &'static str)],
}

const KERNELS: &str = "netprobe/testdata/kernels";
const PROCFS: &str = "netprobe/testdata/procfs";

pub const TARGETS: &[Target] = &[
    Target {
        name: "tracefs_format",
        testdata: &[(KERNELS, "format")],
    },
    Target {
        name: "btf",
        testdata: &[],
    },
    Target {
        name: "netns_pairs",
        testdata: &[(PROCFS, "netstat"), (PROCFS, "snmp")],
    },
    Target {
        name: "netns_conntrack_stat",
        testdata: &[(PROCFS, "nf_conntrack")],
    },
    Target {
        name: "netns_diag",
        testdata: &[],
    },
    Target {
        name: "counters_softnet",
        testdata: &[(PROCFS, "softnet_stat")],
    },
    Target {
        name: "counters_vmstat",
        testdata: &[(PROCFS, "vmstat")],
    },
    Target {
        name: "counters_pressure",
        testdata: &[(PROCFS, "pressure_memory")],
    },
    Target {
        name: "sys_cap_eff",
        testdata: &[],
    },
    Target {
        name: "kallsyms",
        testdata: &[(KERNELS, "kallsyms_selected.txt")],
    },
    Target {
        name: "proc_modules",
        testdata: &[(KERNELS, "proc_modules")],
    },
    Target {
        name: "containers_cgroup",
        testdata: &[],
    },
    Target {
        name: "decode_event",
        testdata: &[],
    },
    Target {
        name: "report_records",
        testdata: &[],
    },
    Target {
        name: "report_since",
        testdata: &[],
    },
];

/// How cargo-fuzz gets a nightly compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nightly {
    /// `rustup run nightly cargo fuzz`, AddressSanitizer on.
    Rustup,
    /// The running cargo with `RUSTC_BOOTSTRAP=1`; its std may lack the
    /// sanitizer runtimes, so `--sanitizer none` (panics, overflows, hangs
    /// and huge allocations are still caught).
    Bootstrap,
}

impl Nightly {
    fn find() -> Nightly {
        let rustup_nightly = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if rustup_nightly {
            Nightly::Rustup
        } else {
            Nightly::Bootstrap
        }
    }

    /// `cargo fuzz SUBCOMMAND` in the workspace root, for `fuzz/`.
    fn cargo_fuzz(self, subcommand: &str) -> Command {
        let mut c = match self {
            Nightly::Rustup => toolchain::EbpfRustc::RustupNightly.cargo(Path::new("cargo")),
            Nightly::Bootstrap => {
                let mut c = cmd::cargo();
                c.env("RUSTC_BOOTSTRAP", "1");
                c
            }
        };
        // The parsers need no eBPF object: netprobe's build script embeds an
        // empty one when it cannot build the programs, unless this says no.
        c.env_remove("NETPROBE_REQUIRE_EBPF")
            .current_dir(cmd::workspace_root())
            .args(["fuzz", subcommand, "--fuzz-dir"])
            .arg(fuzz_dir());
        if self == Nightly::Bootstrap {
            c.args(["--sanitizer", "none"]);
        }
        c
    }
}

fn fuzz_dir() -> PathBuf {
    let root = cmd::workspace_root();
    root.canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .join("fuzz")
}

/// What one target's run showed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub runs: Option<u64>,
    pub secs: Option<u64>,
    /// The input that crashed, hung or allocated too much.
    pub artifact: Option<String>,
    /// libFuzzer's or the panic's first line about it.
    pub error: Option<String>,
}

impl Outcome {
    /// Reads libFuzzer's output (`-print_final_stats=1`).
    pub fn parse(log: &str) -> Outcome {
        let mut o = Outcome::default();
        for line in log.lines() {
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                o.runs = n.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("Done ") {
                // `Done 123 runs in 30 second(s)`
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [runs, "runs", "in", secs, ..] = words[..] {
                    o.runs = o.runs.or(runs.parse().ok());
                    o.secs = secs.parse().ok();
                }
            } else if let Some(at) = line.find("Test unit written to ") {
                o.artifact = Some(
                    line[at + "Test unit written to ".len()..]
                        .trim()
                        .to_string(),
                );
            } else if o.error.is_none()
                && (line.contains("ERROR: libFuzzer:")
                    || line.contains("ERROR: AddressSanitizer")
                    || line.contains("panicked at"))
            {
                o.error = Some(line.trim().to_string());
            }
        }
        o
    }
}

/// The target names asked for, all when none are; unknown names are an error.
fn select(names: &[String]) -> Result<Vec<&'static Target>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            TARGETS.iter().find(|t| t.name == n).with_context(|| {
                let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                format!("no fuzz target {n:?}; there are: {}", all.join(", "))
            })
        })
        .collect()
}

/// Files named `name` anywhere under `dir`, sorted.
fn files_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            files_named(&path, name, out)?;
        } else if path.file_name().is_some_and(|f| f == name) {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Copies the target's testdata files into its corpus (`seed-<path>`), once.
fn seed(t: &Target, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let root = cmd::workspace_root();
    for (under, name) in t.testdata {
        let mut found = Vec::new();
        files_named(&root.join(under), name, &mut found)?;
        for src in found {
            let rel = src
                .strip_prefix(root.join("netprobe/testdata"))
                .unwrap_or(&src);
            let dst = corpus.join(format!("seed-{}", rel.display()).replace('/', "_"));
            if !dst.exists() {
                fs::copy(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
            }
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// Runs one target for `secs` seconds, echoing libFuzzer's output and
/// keeping it in `fuzz/logs/TARGET.log`.
fn run_target(nightly: Nightly, t: &Target, secs: u64) -> Result<(Outcome, u64)> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(t.name);
    seed(t, &corpus)?;
    let mut c = nightly.cargo_fuzz("run");
    c.arg(t.name).arg(&corpus);
    let seeds = dir.join("seeds").join(t.name);
    if seeds.is_dir() {
        c.arg(&seeds);
    }
    c.arg("--");
    // Tokens of the input's format (JSON keys, tracefs keywords).
    let dict = dir.join("dicts").join(format!("{}.dict", t.name));
    if dict.is_file() {
        c.arg(format!("-dict={}", dict.display()));
    }
    c.args([
        format!("-max_total_time={secs}"),
        // A hang: one input taking this long.
        "-timeout=10".to_string(),
        "-rss_limit_mb=2048".to_string(),
        "-print_final_stats=1".to_string(),
    ]);
    c.stderr(Stdio::piped());
    eprintln!("xtask: $ {}", cmd::describe(&c));
    let started = Instant::now();
    let mut child = c.spawn().context("cannot run cargo fuzz")?;
    let logs = dir.join("logs");
    fs::create_dir_all(&logs)?;
    let mut log = fs::File::create(logs.join(format!("{}.log", t.name)))?;
    let mut text = String::new();
    for line in BufReader::new(child.stderr.take().expect("piped stderr")).lines() {
        let line = line?;
        eprintln!("{line}");
        writeln!(log, "{line}")?;
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    let elapsed = started.elapsed().as_secs();
    let mut outcome = Outcome::parse(&text);
    if !status.success() && outcome.artifact.is_none() && outcome.error.is_none() {
        outcome.error = Some(format!("cargo fuzz failed ({status}) before fuzzing"));
    }
    if outcome.secs.is_none() {
        outcome.secs = Some(elapsed);
    }
    Ok((outcome, count_files(&corpus) as u64))
}

/// `cargo install cargo-fuzz --locked` unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = cmd::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!("xtask: cargo-fuzz is missing; installing it");
        cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

pub fn run(secs: u64, names: &[String]) -> Result<ExitCode> {
    if secs == 0 {
        bail!("--secs must be at least 1");
    }
    let targets = select(names)?;
    ensure_cargo_fuzz()?;
    let nightly = Nightly::find();
    if nightly == Nightly::Bootstrap {
        println!(
            "xtask: no rustup nightly toolchain: fuzzing with RUSTC_BOOTSTRAP=1 and no \
             sanitizer (`rustup toolchain install nightly` for AddressSanitizer)"
        );
    }
    // One build of every target first, so run times are fuzzing times.
    cmd::run(&mut nightly.cargo_fuzz("build"))?;
    let mut results = Vec::new();
    for t in targets {
        let (outcome, corpus) = run_target(nightly, t, secs)?;
        results.push((t.name, outcome, corpus));
    }
    println!("\nxtask: fuzz results ({secs} s per target):");
    println!(
        "  {:<22} {:>12} {:>6} {:>7}  result",
        "target", "runs", "secs", "corpus"
    );
    let mut failed = false;
    for (name, o, corpus) in &results {
        let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let result = match (&o.artifact, &o.error) {
            (Some(a), _) => {
                failed = true;
                format!("CRASH: {a}")
            }
            (None, Some(e)) => {
                failed = true;
                format!("FAILED: {e}")
            }
            (None, None) => "ok".to_string(),
        };
        println!(
            "  {name:<22} {:>12} {:>6} {corpus:>7}  {result}",
            show(o.runs),
            show(o.secs)
        );
    }
    if failed {
        println!(
            "xtask: reproduce a crash with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET ARTIFACT`"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_and_every_source_a_target() {
        let dir = fuzz_dir().join("fuzz_targets");
        let mut sources: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                p.file_stem().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        sources.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, sources);
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{}\"", t.name)),
                "{} not a [[bin]] of fuzz/Cargo.toml",
                t.name
            );
        }
    }

    #[test]
    fn every_target_has_seeds() {
        for t in TARGETS {
            let mut found = Vec::new();
            for (under, name) in t.testdata {
                files_named(&cmd::workspace_root().join(under), name, &mut found).unwrap();
            }
            let seeds = fuzz_dir().join("seeds").join(t.name);
            assert!(
                !found.is_empty() || count_files(&seeds) > 0,
                "{} has no seed",
                t.name
            );
        }
    }

    #[test]
    fn selects_all_or_the_named_targets() {
        assert_eq!(select(&[]).unwrap().len(), TARGETS.len());
        let picked = select(&["btf".to_string()]).unwrap();
        assert_eq!(picked[0].name, "btf");
        let err = select(&["nope".to_string()]).err().unwrap().to_string();
        assert!(err.contains("no fuzz target \"nope\"") && err.contains("tracefs_format"));
    }

    #[test]
    fn reads_libfuzzer_output() {
        let ok = "#1048576\tpulse  cov: 120 ft: 300 corp: 40/2Kb\n\
                  Done 1234567 runs in 31 second(s)\n\
                  stat::number_of_executed_units: 1234568\n\
                  stat::average_exec_per_sec:     39824\n";
        assert_eq!(
            Outcome::parse(ok),
            Outcome {
                runs: Some(1234568),
                secs: Some(31),
                ..Outcome::default()
            }
        );
        let crash = "thread '<unnamed>' panicked at netprobe/src/btf.rs:10:5:\n\
                     attempt to add with overflow\n\
                     ==42== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='/w/fuzz/artifacts/btf/'; Test unit written to /w/fuzz/artifacts/btf/crash-da39a3ee\n\
                     stat::number_of_executed_units: 77\n";
        let o = Outcome::parse(crash);
        assert_eq!(
            o.artifact.as_deref(),
            Some("/w/fuzz/artifacts/btf/crash-da39a3ee")
        );
        assert_eq!(o.runs, Some(77));
        assert!(o.error.unwrap().contains("panicked at netprobe/src/btf.rs"));
    }
}
