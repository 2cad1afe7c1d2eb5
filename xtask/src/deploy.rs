//! `cargo xtask deploy-check` (also part of `cargo xtask test`): offline
//! checks of the deployment files in deploy/.
//!
//! - deploy/systemd/netprobe.service must pass `systemd-analyze verify` with
//!   nothing to say. verify checks that ExecStart's program exists and is
//!   executable, and netprobe is not installed at /usr/local/bin on a build
//!   machine, so a copy of the unit is verified whose ExecStart names the
//!   netprobe just built instead; every other byte is the shipped unit's.
//!   (`--root` with a temporary tree does not help: verify then also wants
//!   the whole unit tree, sysinit.target and /bin/kill, inside that root.)
//!   verify exits 0 after warnings such as "Unknown key", so any output at
//!   all fails the check. Each run also verifies a copy with a misspelt key
//!   and requires that to fail, so a systemd-analyze that stopped reporting
//!   cannot make the check pass silently.
//! - deploy/kubernetes/*.yaml must pass deploy/check (a small crate of its
//!   own that types each document with k8s-openapi; see deploy/README.md),
//!   and deploy/check's tests, which feed it broken manifests, must pass.
//! - deploy/prometheus/: the alert rules must pass `promtool check rules`
//!   and their unit tests (`promtool test rules`), and the PrometheusRule
//!   must hold exactly the rules file's groups (deploy/check again).
//! - deploy/grafana/netprobe-dashboard.json must pass deploy/check's
//!   dashboard check (its queries run against a real Prometheus in the
//!   resilience test).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The unit, relative to the workspace root.
const UNIT: &str = "deploy/systemd/netprobe.service";
/// Where the unit expects netprobe to be installed.
const INSTALLED: &str = "/usr/local/bin/netprobe";
const MANIFESTS: &str = "deploy/kubernetes";
const CHECKER: &str = "deploy/check/Cargo.toml";
const RULES_DIR: &str = "deploy/prometheus";
const RULES: &str = "netprobe.rules.yml";
const RULES_TEST: &str = "netprobe.rules.test.yml";
const PROMETHEUS_RULE: &str = "prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/netprobe-dashboard.json";

/// Runs every check, then fails naming each one that failed. `netprobe` is
/// a built netprobe executable, for the unit's ExecStart.
pub fn check(netprobe: &Path) -> Result<()> {
    let checks: [(&str, &dyn Fn() -> Result<()>); 4] = [
        ("systemd unit", &|| verify_unit(netprobe)),
        ("Kubernetes manifests", &check_manifests),
        ("Prometheus rules", &check_rules),
        ("Grafana dashboard", &|| {
            let mut c = checker(&["run", "--quiet"])?;
            c.args(["--", "--dashboard", DASHBOARD]);
            cmd::run(&mut c)
        }),
    ];
    let mut failed = Vec::new();
    for (name, run) in checks {
        match run() {
            Ok(()) => println!("xtask: deploy-check: ok: {name}"),
            Err(e) => {
                println!("xtask: deploy-check: FAILED: {name}: {e:#}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("deploy-check failed: {}", failed.join(", "));
    }
    Ok(())
}

/// [`check`] for `cargo xtask test`: true when every check passed.
pub fn check_reported(netprobe: &Path) -> bool {
    match check(netprobe) {
        Ok(()) => true,
        Err(e) => {
            println!("xtask: {e:#}");
            false
        }
    }
}

fn verify_unit(netprobe: &Path) -> Result<()> {
    let analyze = cmd::which("systemd-analyze").context(
        "systemd-analyze not found: it comes with Debian's `systemd` package, which \
         `cargo xtask setup` installs",
    )?;
    let path = cmd::workspace_root().join(UNIT);
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {UNIT}"))?;
    let netprobe = netprobe
        .canonicalize()
        .with_context(|| format!("{} does not exist", netprobe.display()))?;
    let unit = unit_for_verify(&text, &netprobe)?;
    let dir = TempDir::new("unit")?;
    let said = verify(&analyze, &dir.0, "netprobe.service", &unit)?;
    if let Some(said) = said {
        bail!("systemd-analyze verify {UNIT} (ExecStart={INSTALLED} -> {netprobe:?}):\n{said}");
    }
    // The same with a mistake put in: verify must say something about it.
    let broken = with_misspelt_key(&unit)?;
    let broken_dir = TempDir::new("broken-unit")?;
    if verify(&analyze, &broken_dir.0, "netprobe.service", &broken)?.is_none() {
        bail!(
            "systemd-analyze verify said nothing about a unit with a misspelt key \
             (ProtectSystm=): this check cannot be trusted here"
        );
    }
    Ok(())
}

/// Writes `unit` as `dir/name` and verifies it: None when verify succeeded
/// and printed nothing, else what it said.
fn verify(analyze: &Path, dir: &Path, name: &str, unit: &str) -> Result<Option<String>> {
    let file = dir.join(name);
    fs::write(&file, unit).with_context(|| format!("cannot write {}", file.display()))?;
    let mut c = Command::new(analyze);
    // Warnings (unknown keys, bad values) are at warning level; notice keeps
    // them and drops debug chatter an inherited SYSTEMD_LOG_LEVEL could add.
    c.env("SYSTEMD_LOG_LEVEL", "notice")
        .env("SYSTEMD_LOG_COLOR", "0")
        .arg("verify")
        .arg(&file);
    eprintln!("xtask: $ {}", cmd::describe(&c));
    let out = c
        .output()
        .with_context(|| format!("cannot run {}", analyze.display()))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = said.trim();
    Ok(if out.status.success() && said.is_empty() {
        None
    } else {
        Some(format!("({}) {said}", out.status))
    })
}

/// The unit with ExecStart's program, [`INSTALLED`], replaced by `netprobe`.
/// Exactly one ExecStart must name it.
fn unit_for_verify(unit: &str, netprobe: &Path) -> Result<String> {
    let shown = netprobe.to_str().context("netprobe's path is not UTF-8")?;
    if shown.contains(char::is_whitespace) || shown.contains(['"', '\'', '\\', '%', '$']) {
        bail!("{shown:?}: a path systemd would parse differently; build elsewhere");
    }
    let prefix = format!("ExecStart={INSTALLED} ");
    let mut found = 0;
    let mut out = String::with_capacity(unit.len() + shown.len());
    for line in unit.lines() {
        match line.strip_prefix(&prefix) {
            Some(args) => {
                found += 1;
                out.push_str(&format!("ExecStart={shown} {args}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    if found != 1 {
        bail!("{UNIT} must have exactly one `{prefix}...` line, it has {found}");
    }
    Ok(out)
}

/// The unit with `ProtectSystem=` misspelt.
fn with_misspelt_key(unit: &str) -> Result<String> {
    if !unit.contains("\nProtectSystem=") {
        bail!("{UNIT} has no ProtectSystem= line to misspell");
    }
    Ok(unit.replacen("\nProtectSystem=", "\nProtectSystm=", 1))
}

fn check_manifests() -> Result<()> {
    // Relative to the workspace root, where cargo runs the checker.
    let mut files: Vec<PathBuf> = fs::read_dir(cmd::workspace_root().join(MANIFESTS))
        .with_context(|| format!("cannot list {MANIFESTS}"))?
        .map(|e| e.map(|e| Path::new(MANIFESTS).join(e.file_name())))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"));
    files.sort();
    if files.is_empty() {
        bail!("no manifest in {MANIFESTS}");
    }
    // The shipped manifests, one `ok:` line or every problem per file.
    let mut run = checker(&["run", "--quiet"])?;
    run.arg("--").args(&files);
    cmd::run(&mut run)?;
    // Its own tests: broken manifests must fail, with the expected messages.
    cmd::run(&mut checker(&["test", "--quiet"])?)?;
    Ok(())
}

/// deploy/checker's cargo command: its own target directory under ours,
/// built once, then reused.
fn checker(args: &[&str]) -> Result<Command> {
    let mut c = cmd::cargo();
    c.env_remove("NETPROBE_REQUIRE_EBPF")
        .env("CARGO_TARGET_DIR", cmd::target_dir()?.join("deploy-check"))
        .args(args)
        .args(["--locked", "--manifest-path", CHECKER]);
    Ok(c)
}

/// The alert rules: promtool's syntax check and unit tests (the
/// distribution's Prometheus, which the setup installs), and the
/// PrometheusRule holding exactly the same groups.
fn check_rules() -> Result<()> {
    let dir = cmd::workspace_root().join(RULES_DIR);
    let mut check = Command::new("promtool");
    check.current_dir(&dir).args(["check", "rules", RULES]);
    cmd::run(&mut check)?;
    let mut test = Command::new("promtool");
    test.current_dir(&dir).args(["test", "rules", RULES_TEST]);
    cmd::run(&mut test)?;
    let rel = |f: &str| format!("{RULES_DIR}/{f}");
    let mut same = checker(&["run", "--quiet"])?;
    same.args([
        "--",
        "--prometheus-rule",
        &rel(PROMETHEUS_RULE),
        &rel(RULES),
    ]);
    cmd::run(&mut same)
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("netprobe-xtask-{what}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT_TEXT: &str = "[Service]\nType=notify\n\
        ExecStart=/usr/local/bin/netprobe run --output journald\n\
        ProtectSystem=strict\n";

    #[test]
    fn only_execstart_changes_for_verify() {
        let got = unit_for_verify(UNIT_TEXT, Path::new("/w/target/debug/netprobe")).unwrap();
        assert_eq!(
            got,
            UNIT_TEXT.replace(
                "ExecStart=/usr/local/bin/netprobe",
                "ExecStart=/w/target/debug/netprobe"
            )
        );
    }

    #[test]
    fn execstart_must_name_the_installed_netprobe_once() {
        let none = UNIT_TEXT.replace("/usr/local/bin/netprobe", "/usr/bin/netprobe");
        assert!(unit_for_verify(&none, Path::new("/x/netprobe")).is_err());
        let twice = format!("{UNIT_TEXT}ExecStart=/usr/local/bin/netprobe run\n");
        assert!(unit_for_verify(&twice, Path::new("/x/netprobe")).is_err());
        assert!(unit_for_verify(UNIT_TEXT, Path::new("/my dir/netprobe")).is_err());
    }

    #[test]
    fn the_broken_copy_misspells_one_key() {
        let broken = with_misspelt_key(UNIT_TEXT).unwrap();
        assert!(broken.contains("\nProtectSystm=strict\n"));
        assert!(!broken.contains("ProtectSystem="));
        assert!(with_misspelt_key("[Service]\n").is_err());
    }

    #[test]
    fn the_shipped_unit_can_be_prepared_for_verify() {
        let text = fs::read_to_string(cmd::workspace_root().join(UNIT)).unwrap();
        let unit = unit_for_verify(&text, Path::new("/x/netprobe")).unwrap();
        assert!(unit.contains("\nExecStart=/x/netprobe run "));
        with_misspelt_key(&unit).unwrap();
    }
}
