//! netprobe's own diagnostics, through the real binary (no root needed):
//! they go to stderr only, a closed stderr is no panic, and the filter is
//! the user's to set.

use std::process::{Command, Stdio};

fn netprobe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netprobe"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn an_error_goes_to_stderr_only() {
    let out = netprobe()
        .args(["report", "/nonexistent/netprobe.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR") && err.contains("cannot read /nonexistent/netprobe.json"),
        "{err}"
    );
}

#[test]
fn a_closed_stderr_is_not_a_panic() {
    // A pipe whose reader is gone: every write to stderr fails (EPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = netprobe()
        .args(["explain", "no_such_mode"])
        .stdout(Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    // 2 is explain's answer to an unknown name; a panic would be 101.
    assert_eq!(status.code(), Some(2), "{status:?}");
}

#[test]
fn the_filter_comes_from_the_flag_or_rust_log() {
    // Off: nothing said, the exit status unchanged.
    let out = netprobe()
        .args(["--log-level", "off", "explain", "no_such_mode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.is_empty(), "{out:?}");
    let out = netprobe()
        .env("RUST_LOG", "off")
        .args(["explain", "no_such_mode"])
        .output()
        .unwrap();
    assert!(out.stderr.is_empty(), "{out:?}");
    // The flag wins.
    let out = netprobe()
        .env("RUST_LOG", "off")
        .args(["explain", "no_such_mode", "--log-level", "error"])
        .output()
        .unwrap();
    assert!(!out.stderr.is_empty(), "{out:?}");
    // A bad filter is a clear error before anything runs.
    let out = netprobe()
        .args(["--log-level", "netprobe=loud", "explain", "tw_recycle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-level `netprobe=loud` is not a log filter"),
        "{err}"
    );
    let out = netprobe()
        .env("RUST_LOG", "=\u{1b}[31m")
        .args(["explain", "tw_recycle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUST_LOG `=\\u{1b}[31m` is not"), "{err}");
}
