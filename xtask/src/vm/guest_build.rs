//! Static builds of netprobe and the integration test executables for the
//! busybox guest (no dynamic loader, no libc there).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::elf;
use crate::cmd;

/// Explicit, so that RUSTFLAGS reaches only the guest's binaries, never
/// build scripts or proc-macros (and the host build's cache is untouched).
const TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBin {
    /// The test target's name (`reset` for tests/reset.rs).
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug)]
pub struct Built {
    pub netprobe: PathBuf,
    /// netprobe with its `probe-log` feature (aya-log in the programs), for
    /// the test that proves those programs load on every kernel.
    pub netprobe_probe_log: PathBuf,
    pub tests: Vec<TestBin>,
}

/// The netprobe executable a cargo build's JSON messages name.
fn netprobe_in(built: &str) -> Result<PathBuf> {
    Ok(artifacts(built, false)
        .into_iter()
        .find(|b| b.name == "netprobe")
        .context("cargo built no netprobe executable")?
        .path)
}

fn cargo_static(args: &[&str]) -> Command {
    let mut c = cmd::cargo();
    c.env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("NETPROBE_REQUIRE_EBPF", "1")
        // Line tables only: panics keep their file and line, and each test
        // executable stays small enough for a RAM-backed guest (a dozen of
        // them with full debug info overflowed a 1 GiB guest's rootfs).
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env("CARGO_PROFILE_TEST_DEBUG", "line-tables-only")
        .args(args)
        .args(["--target", TARGET, "--message-format=json"])
        .stderr(Stdio::inherit());
    c
}

/// Runs cargo, passing its diagnostics on, and returns its JSON messages.
fn run_json(c: &mut Command) -> Result<String> {
    eprintln!("xtask: $ {}", cmd::describe(c));
    let out = c
        .output()
        .with_context(|| format!("cannot run `{}`", cmd::describe(c)))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            if v["reason"] == "compiler-message" {
                if let Some(r) = v["message"]["rendered"].as_str() {
                    eprint!("{r}");
                }
            }
        }
    }
    if !out.status.success() {
        bail!("`{}` failed ({})", cmd::describe(c), out.status);
    }
    Ok(text)
}

pub fn build() -> Result<Built> {
    // The probe-log build first, copied aside: the plain one then takes
    // the executable's name back.
    let logged = netprobe_in(&run_json(&mut cargo_static(&[
        "build",
        "-p",
        "netprobe",
        "--features",
        "probe-log",
    ]))?)?;
    let netprobe_probe_log = logged.with_file_name("netprobe-probe-log");
    std::fs::copy(&logged, &netprobe_probe_log)
        .with_context(|| format!("cannot copy {} aside", logged.display()))?;
    let netprobe = netprobe_in(&run_json(&mut cargo_static(&["build", "-p", "netprobe"]))?)?;
    let tests_json = run_json(&mut cargo_static(&[
        "test",
        "-p",
        "netprobe-tests",
        "--no-run",
    ]))?;
    let mut tests = artifacts(&tests_json, true);
    // Cargo lists them in build order; the matrix wants a stable order.
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if tests.is_empty() {
        bail!("cargo built no test executables for netprobe-tests");
    }
    for bin in [&netprobe, &netprobe_probe_log]
        .into_iter()
        .chain(tests.iter().map(|t| &t.path))
    {
        ensure_static(bin)?;
    }
    Ok(Built {
        netprobe,
        netprobe_probe_log,
        tests,
    })
}

/// The static release netprobe, for `cargo xtask dist`'s image: the same
/// static build the guests run, optimised.
pub fn release_static() -> Result<PathBuf> {
    let bin = netprobe_in(&run_json(&mut cargo_static(&[
        "build",
        "-p",
        "netprobe",
        "--release",
    ]))?)?;
    ensure_static(&bin)?;
    Ok(bin)
}

/// The tests each executable holds, from its own `--list` (run here: the
/// executables are static and listing runs no test); an executable that
/// holds none is an error, since the matrix could then show nothing of it.
pub fn list_tests(tests: &[TestBin]) -> Result<super::report::Expected> {
    let mut out = super::report::Expected::new();
    for t in tests {
        let o = Command::new(&t.path)
            .args(["--list", "--format", "terse"])
            .output()
            .with_context(|| format!("cannot run {} --list", t.path.display()))?;
        if !o.status.success() {
            bail!("{} --list failed ({})", t.path.display(), o.status);
        }
        let names = listed(&String::from_utf8_lossy(&o.stdout));
        if names.is_empty() {
            bail!("test executable {} holds no test", t.name);
        }
        out.insert(t.name.clone(), names);
    }
    Ok(out)
}

/// The test names in libtest's `--list --format terse` output (`NAME: test`).
pub fn listed(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// Fails unless `path` is an executable that needs no dynamic loader.
pub fn ensure_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if elf::has_interp(&bytes).with_context(|| path.display().to_string())? {
        bail!(
            "{} is dynamically linked: it cannot start in the guest, which has no libc",
            path.display()
        );
    }
    Ok(())
}

/// The executables in cargo's JSON messages: test harnesses when `test`,
/// else plain binaries. Deduplicated, in order.
pub fn artifacts(json_lines: &str, test: bool) -> Vec<TestBin> {
    let mut out: Vec<TestBin> = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"].as_bool() != Some(test) {
            continue;
        }
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str())
        else {
            continue;
        };
        let bin = TestBin {
            name: name.to_string(),
            path: PathBuf::from(exe),
        };
        if !out.contains(&bin) {
            out.push(bin);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real, from `cargo test -p netprobe-tests --no-run --message-format=json`
    // (the lib twice: as a dependency and as its own test harness).
    const CARGO_TEST_JSON: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/main/tests#netprobe-tests@0.1.0","manifest_path":"/work/main/tests/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"netprobe_tests","src_path":"/work/main/tests/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/work/main/target/x86_64-unknown-linux-gnu/debug/deps/libnetprobe_tests-186d35fa59416415.rlib","/work/main/target/x86_64-unknown-linux-gnu/debug/deps/libnetprobe_tests-186d35fa59416415.rmeta"],"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///work/main/tests#netprobe-tests@0.1.0","manifest_path":"/work/main/tests/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"netprobe_tests","src_path":"/work/main/tests/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/work/main/target/x86_64-unknown-linux-gnu/debug/deps/netprobe_tests-7d4c3be19ed5d4ae"],"executable":"/work/main/target/x86_64-unknown-linux-gnu/debug/deps/netprobe_tests-7d4c3be19ed5d4ae","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///work/main/tests#netprobe-tests@0.1.0","manifest_path":"/work/main/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"reset","src_path":"/work/main/tests/tests/reset.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/work/main/target/x86_64-unknown-linux-gnu/debug/deps/reset-a6df37db81588be3"],"executable":"/work/main/target/x86_64-unknown-linux-gnu/debug/deps/reset-a6df37db81588be3","fresh":true}
{"reason":"build-finished","success":true}"#;
    // Real, from `cargo build -p netprobe --message-format=json`.
    const CARGO_BUILD_JSON: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/main/netprobe#0.1.0","manifest_path":"/work/main/netprobe/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"netprobe","src_path":"/work/main/netprobe/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/work/main/target/x86_64-unknown-linux-gnu/debug/netprobe"],"executable":"/work/main/target/x86_64-unknown-linux-gnu/debug/netprobe","fresh":true}"#;

    #[test]
    fn test_executables_come_from_test_profile_artifacts() {
        assert_eq!(
            artifacts(CARGO_TEST_JSON, true),
            [
                TestBin {
                    name: "netprobe_tests".into(),
                    path:
                        "/work/main/target/x86_64-unknown-linux-gnu/debug/deps/netprobe_tests-7d4c3be19ed5d4ae"
                            .into()
                },
                TestBin {
                    name: "reset".into(),
                    path: "/work/main/target/x86_64-unknown-linux-gnu/debug/deps/reset-a6df37db81588be3".into()
                },
            ]
        );
        // The rlib has no executable; nothing non-test has one either.
        assert!(artifacts(CARGO_TEST_JSON, false).is_empty());
        assert!(artifacts("not json\n", true).is_empty());
    }

    #[test]
    fn listed_tests_are_the_terse_list_lines() {
        // Real: `conntrack --list --format terse` (benchmarks would end in
        // `: benchmark`).
        let text = "conntrack_insert_failed: test\nconntrack_probe_waits_for_the_module: test\nconntrack_table_full: test\n";
        assert_eq!(
            listed(text),
            [
                "conntrack_insert_failed",
                "conntrack_probe_waits_for_the_module",
                "conntrack_table_full"
            ]
        );
        assert!(listed("x: benchmark\n\n").is_empty());
    }

    #[test]
    fn build_executables_are_non_test_artifacts() {
        let json = CARGO_BUILD_JSON;
        assert_eq!(
            artifacts(json, false),
            [TestBin {
                name: "netprobe".into(),
                path: "/work/main/target/x86_64-unknown-linux-gnu/debug/netprobe".into()
            }]
        );
    }
}
