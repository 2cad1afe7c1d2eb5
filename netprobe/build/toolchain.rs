//! Finding a compiler that can build netprobe's eBPF object.
//!
//! Shared by `netprobe/build.rs` (which builds the object) and `xtask setup`
//! (which installs what is missing), so both agree on what "ready" means.
//! The object needs `core` built for `bpfel-unknown-none`, so a rustc whose
//! sysroot holds the library sources, plus `bpf-linker` built against the same
//! LLVM major. See shared/docs/toolchain.md.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// How to run cargo for the BPF target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbpfRustc {
    /// A rustup nightly with `rust-src` (developer laptops with internet).
    RustupNightly,
    /// A rustc with library sources installed elsewhere (Debian's `rustc-web`
    /// and `rust-web-src`), driven by the stable cargo with `RUSTC_BOOTSTRAP=1`.
    Bootstrap(PathBuf),
}

impl EbpfRustc {
    pub fn describe(&self) -> String {
        match self {
            EbpfRustc::RustupNightly => "rustup nightly with rust-src".to_string(),
            EbpfRustc::Bootstrap(p) => format!("{} (library source in its sysroot)", p.display()),
        }
    }

    /// A `cargo` command set up for this compiler. `cargo` is the cargo to use
    /// on the bootstrap route (the one running us, normally).
    pub fn cargo(&self, cargo: &Path) -> Command {
        match self {
            EbpfRustc::RustupNightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c.env_remove("RUSTC");
                c
            }
            EbpfRustc::Bootstrap(rustc) => {
                let mut c = Command::new(cargo);
                c.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
                c
            }
        }
    }
}

/// The Debian route's compiler (toolchain.md).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn sysroot_has_src(rustc: &mut Command) -> bool {
    let Ok(out) = rustc.arg("--print").arg("sysroot").output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

/// The first usable compiler: a rustup nightly with rust-src, else Debian's.
pub fn find_ebpf_rustc() -> Option<EbpfRustc> {
    let mut nightly = Command::new("rustup");
    nightly.args(["run", "nightly", "rustc"]);
    if sysroot_has_src(&mut nightly) {
        return Some(EbpfRustc::RustupNightly);
    }
    if sysroot_has_src(&mut Command::new(DEBIAN_RUSTC)) {
        return Some(EbpfRustc::Bootstrap(PathBuf::from(DEBIAN_RUSTC)));
    }
    None
}

/// `bpf-linker` on PATH or in cargo's bin directory.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("bpf-linker"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/bpf-linker"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/bpf-linker"));
    }
    candidates.into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}
