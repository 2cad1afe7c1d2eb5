//! Running commands and finding things: the helpers every subcommand shares.

use std::{
    env,
    ffi::OsStr,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

use anyhow::{bail, Context, Result};

/// Runs `cmd` with inherited stdio, echoing it first. Errors only if it cannot
/// be started; the caller decides what a non-zero status means.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    let shown = describe(cmd);
    eprintln!("xtask: $ {shown}");
    cmd.status()
        .with_context(|| format!("cannot run `{shown}`"))
}

/// Runs `cmd` and fails with its status unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// `cmd` as a shell would spell it: `K=V program args...`.
pub fn describe(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())));
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .map(|w| w.into_owned());
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

/// The exit code to pass on for a child's status (128 + signal if killed).
pub fn exit_code(status: ExitStatus) -> u8 {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    u8::try_from(code).unwrap_or(1)
}

/// `name` on PATH, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// True when running as root.
pub fn is_root() -> bool {
    euid() == 0
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A `cargo` command in the workspace root, using the cargo that runs us.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Cargo's target directory for this workspace (honours CARGO_TARGET_DIR and
/// `build.target-dir`).
pub fn target_dir() -> Result<PathBuf> {
    parse_target_dir(&metadata()?)
}

/// `cargo metadata --no-deps` of this workspace, as JSON text.
pub fn metadata() -> Result<Vec<u8>> {
    output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))
}

/// What `cmd` prints on stdout; fails with its stderr unless it succeeds.
pub fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn parse_target_dir(metadata: &[u8]) -> Result<PathBuf> {
    let json: serde_json::Value =
        serde_json::from_slice(metadata).context("`cargo metadata` printed invalid JSON")?;
    json["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` gave no target_directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_env_program_and_args() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker"]);
        assert_eq!(
            describe(&cmd),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker"
        );
    }

    #[test]
    fn describe_omits_removed_env() {
        let mut cmd = Command::new("cargo");
        cmd.env_remove("NETPROBE_REQUIRE_EBPF").arg("clippy");
        assert_eq!(describe(&cmd), "cargo clippy");
    }

    #[test]
    fn exit_code_passes_codes_and_signals_on() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(101 << 8)), 101);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }

    #[test]
    fn target_dir_is_read_from_metadata() {
        let json = br#"{"packages":[],"target_directory":"/w/target","version":1}"#;
        assert_eq!(parse_target_dir(json).unwrap(), PathBuf::from("/w/target"));
        assert!(parse_target_dir(br#"{"version":1}"#).is_err());
        assert!(parse_target_dir(b"not json").is_err());
    }
}
