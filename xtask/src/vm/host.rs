//! The matrix's `host` row: the same test executables the guests run, on
//! this machine's kernel, logged with the guests' markers so one parser
//! reads both.

use std::{fmt::Write as _, fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result};

use super::{
    guest_build::{Built, TestBin},
    initramfs::TEST_TIMEOUT_SECS,
    report::{self, Ending, KernelResult},
};

/// Output of `cmd` (stdout then stderr) and its exit code (-1: killed).
fn run_captured(cmd: &mut Command) -> Result<(String, i32)> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((text, out.status.code().unwrap_or(-1)))
}

/// The marker log of one host run (what a guest's /init would print).
pub fn log(
    release: &str,
    check: &(String, i32),
    runs: &[(&TestBin, String, i32, f64, f64)],
) -> String {
    let mut s = format!("@@NETPROBE-VM kernel {release} up=0\n@@NETPROBE-CHECK BEGIN\n");
    s.push_str(&check.0);
    let _ = writeln!(s, "@@NETPROBE-CHECK END rc={}", check.1);
    for (t, out, rc, begin, end) in runs {
        let _ = writeln!(s, "@@NETPROBE-TEST {} BEGIN up={begin:.2}", t.name);
        s.push_str(out);
        let _ = writeln!(s, "@@NETPROBE-TEST {} END rc={rc} up={end:.2}", t.name);
    }
    s.push_str("@@NETPROBE-VM DONE\n");
    s
}

/// Runs `netprobe check` and every test executable on this host (one test
/// thread, like the guests), printing each one's output as it finishes.
pub fn run(built: &Built, out_dir: &Path) -> Result<KernelResult> {
    let start = Instant::now();
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    println!("host {release}: netprobe check, then each test executable");
    let check = run_captured(Command::new(&built.netprobe).arg("check"))?;
    // netprobe's image, as `cargo xtask dist` makes it, of the binary under
    // test: the image test loads it into podman.
    let image = out_dir.join("netprobe-test.oci.tar");
    crate::dist::write_archive(&built.netprobe, "test", &image)?;
    let mut runs = Vec::new();
    let cannot_show = out_dir.join("host-cannot-show");
    for t in &built.tests {
        let begin = start.elapsed().as_secs_f64();
        let _ = fs::remove_file(&cannot_show);
        let (mut out, rc) = run_captured(
            Command::new("timeout")
                .args(["-s", "KILL", &TEST_TIMEOUT_SECS.to_string()])
                .arg(&t.path)
                .arg("--test-threads=1")
                .env("NETPROBE_BIN", &built.netprobe)
                .env("NETPROBE_PROBE_LOG_BIN", &built.netprobe_probe_log)
                .env("NETPROBE_CANNOT_SHOW", &cannot_show)
                .env("NETPROBE_IMAGE_ARCHIVE", &image),
        )?;
        // Like /init: the tests' "cannot show here" lines after their output.
        if let Ok(lines) = fs::read_to_string(&cannot_show) {
            out.push_str(&lines);
        }
        let end = start.elapsed().as_secs_f64();
        println!("[host {end:5.1}s] {} exited {rc}", t.name);
        print!("{out}");
        runs.push((t, out, rc, begin, end));
    }
    let text = log(&release, &check, &runs);
    let path = out_dir.join("host.log");
    fs::write(&path, &text)?;
    println!("host: log {}", path.display());
    Ok(KernelResult {
        short: "host".into(),
        wall: start.elapsed(),
        ending: Ending::Exited,
        run: report::parse(&text),
        expected: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{path::PathBuf, time::Duration};

    #[test]
    fn host_log_parses_like_a_guest_log() {
        let t = TestBin {
            name: "reset".into(),
            path: PathBuf::from("/x/reset"),
        };
        let check = (
            "  probe       drop            attached  tracepoint skb:kfree_skb\n".to_string(),
            0,
        );
        let out = "\nrunning 1 test\ntest closed_port_ipv4 ... ok\n\ntest result: ok. 1 passed\n";
        let text = log("6.18.44", &check, &[(&t, out.into(), 0, 0.1, 2.5)]);
        let r = KernelResult {
            short: "host".into(),
            wall: Duration::from_secs(3),
            ending: Ending::Exited,
            run: report::parse(&text),
            expected: Default::default(),
        };
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        assert_eq!(r.run.release.as_deref(), Some("6.18.44"));
        assert_eq!(r.run.probes[0].hook, "tracepoint skb:kfree_skb");
        assert_eq!(
            r.run.binaries[0].tests,
            [("closed_port_ipv4".to_string(), report::Outcome::Pass)]
        );
        assert_eq!(r.run.binaries[0].up, (Some(0.1), Some(2.5)));
    }
}
