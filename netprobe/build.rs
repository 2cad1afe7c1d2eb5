//! Builds the eBPF object (`netprobe-ebpf`) for `bpfel-unknown-none` and leaves
//! it in OUT_DIR for `include_bytes_aligned!`, so `cargo build -p netprobe` is
//! the whole build.
//!
//! Without the eBPF toolchain (plain `cargo test` on a fresh machine) it embeds
//! an empty object and says so; the binary then explains how to get a full
//! build. `NETPROBE_REQUIRE_EBPF=1` (set by `cargo xtask`) turns that into an
//! error.

#[path = "build/toolchain.rs"]
mod toolchain;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Stdio,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("netprobe-ebpf");
    for p in [
        "netprobe-ebpf/src",
        "netprobe-ebpf/Cargo.toml",
        "netprobe-ebpf/Cargo.lock",
        "netprobe-common/src",
        "netprobe-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-changed=build/toolchain.rs");
    println!("cargo:rerun-if-env-changed=NETPROBE_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=PATH");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let object = out_dir.join("netprobe.bpf.o");
    let required = env::var("NETPROBE_REQUIRE_EBPF").is_ok_and(|v| v == "1");

    match build(&ebpf_dir, &out_dir) {
        Ok(built) => {
            fs::copy(&built, &object).expect("copy eBPF object");
            println!("cargo:rustc-env=NETPROBE_EBPF_STATUS=built");
        }
        Err(why) if !required => {
            println!(
                "cargo:warning=netprobe is built WITHOUT its eBPF programs: {why}. \
                 Run `cargo xtask setup` (or `cargo xtask run`) for a full build."
            );
            fs::write(&object, b"").expect("write empty object");
            println!("cargo:rustc-env=NETPROBE_EBPF_STATUS={why}");
        }
        Err(why) => {
            eprintln!("error: cannot build netprobe's eBPF programs: {why}");
            eprintln!("       run `cargo xtask setup` to install the eBPF toolchain");
            std::process::exit(1);
        }
    }
}

fn build(ebpf_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let rustc = toolchain::find_ebpf_rustc().ok_or(
        "no rustc with library sources (rustup nightly + rust-src, or Debian rustc-web + rust-web-src)",
    )?;
    let linker = toolchain::find_bpf_linker().ok_or("bpf-linker not found")?;
    let cargo = PathBuf::from(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let target_dir = out_dir.join("ebpf-target");
    // netprobe's `probe-log` feature: aya-log in the programs.
    let probe_log = env::var_os("CARGO_FEATURE_PROBE_LOG").is_some();

    let mut cmd = rustc.cargo(&cargo);
    // Cargo tells build scripts about the outer build through the environment;
    // none of it applies to the nested build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC_WRAPPER")
            || k == "RUSTC_WORKSPACE_WRAPPER"
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
            || k == "TARGET"
            || k == "HOST"
            || k == "OUT_DIR"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    if matches!(rustc, toolchain::EbpfRustc::Bootstrap(_)) {
        cmd.env_remove("RUSTUP_TOOLCHAIN");
    }
    let mut path = vec![linker.parent().unwrap().to_path_buf()];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    cmd.env("PATH", env::join_paths(path).unwrap())
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"),
        )
        .current_dir(ebpf_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(if probe_log {
            &["--features", "log"][..]
        } else {
            &[]
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo for the eBPF build: {e}"))?;
    if !out.status.success() {
        // Shown by cargo when the build script fails, or as warnings otherwise.
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo:warning=ebpf: {line}");
        }
        return Err(format!(
            "the eBPF build with {} failed ({})",
            rustc.describe(),
            out.status
        ));
    }
    Ok(target_dir.join("bpfel-unknown-none/release/netprobe"))
}
