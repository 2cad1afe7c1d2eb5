//! The guest: a busybox initramfs whose /init mounts what netprobe and the
//! tests need, loads the modules, runs `netprobe check` and each test
//! executable between markers the host parses, and powers off.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::{cpio, guest_build::Built, modules::Selection};

/// Seconds one test executable may run on the host row before it is killed
/// (native speed; the guests' limits come from `budget`).
pub const TEST_TIMEOUT_SECS: u32 = 300;

/// Shell: `$boot` (seconds, two decimals, from /proc/uptime) to `$boot_cs`
/// (centiseconds, no leading zeros: the shell would read them as octal).
const SPEED_CS: &str = r#"boot_cs=${boot%.*}${boot#*.}
while [ "${boot_cs#0}" != "$boot_cs" ]; do boot_cs=${boot_cs#0}; done
[ -z "$boot_cs" ] && boot_cs=0
"#;

/// Shell: the guest's speed factor in percent, never below 100, from
/// `$boot_cs` and the reference boot.
const SPEED_FACTOR: &str = r#"factor=$((boot_cs * 100 / {reference_boot_cs}))
[ "$factor" -lt 100 ] && factor=100
"#;

/// What /init does, given the test executables (by name, under /tests,
/// with their budgets in seconds at the reference speed), the reference
/// boot time of this kernel (centiseconds) and the modules (under
/// /lib/modules, in load order).
pub fn init_script(tests: &[(String, u32)], reference_boot_cs: u32, modules: &Selection) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Written by `cargo xtask vm`: set up, run netprobe's tests, power off.
export PATH=/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Keep kernel messages (but emergencies) off the console the host parses.
echo 1 > /proc/sys/kernel/printk
up() { read u rest < /proc/uptime; echo "$u"; }
# This guest's speed: its boot (kernel start to here) against the reference
# boot of this kernel on the project's machine; every limit scales with it.
boot=$(up)
"#,
    );
    s.push_str(SPEED_CS);
    s.push_str(
        r#"mount -t tracefs tracefs /sys/kernel/tracing || echo "@@NETPROBE-VM note: cannot mount tracefs"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
# cgroup2: journald needs it, and the OOM scenarios use memory cgroups.
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "@@NETPROBE-VM note: cannot mount cgroup2"
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
ip link set lo up
cd /tmp
echo "@@NETPROBE-VM kernel $(uname -r) up=$(up)"
load() {
  if insmod "/lib/modules/$1.ko"; then echo "@@NETPROBE-MODULE $1 loaded"
  else echo "@@NETPROBE-MODULE $1 failed"; fi
}
"#,
    );
    for (name, _) in &modules.load {
        s.push_str(&format!("load {name}\n"));
    }
    for name in &modules.builtin {
        s.push_str(&format!("echo \"@@NETPROBE-MODULE {name} builtin\"\n"));
    }
    for name in &modules.absent {
        s.push_str(&format!("echo \"@@NETPROBE-MODULE {name} absent\"\n"));
    }
    let total: u32 = tests.iter().map(|(_, b)| b).sum();
    s.push_str(&SPEED_FACTOR.replace("{reference_boot_cs}", &reference_boot_cs.to_string()));
    s.push_str(&format!(
        r#"echo "@@NETPROBE-VM speed boot={{boot}} reference_cs={reference_boot_cs} factor_pct=$factor total=$(({total} * factor / 100))"
echo "@@NETPROBE-CHECK BEGIN"
/bin/netprobe check
echo "@@NETPROBE-CHECK END rc=$?"
run_test() {{
  limit=$(($2 * factor / 100))
  echo "@@NETPROBE-TEST $1 BEGIN up=$(up) limit=$limit"
  NETPROBE_BIN=/bin/netprobe NETPROBE_PROBE_LOG_BIN=/bin/netprobe-probe-log NETPROBE_GUEST=1 NETPROBE_GUEST_MODULES=/lib/modules NETPROBE_CANNOT_SHOW=/tmp/cannot-show CI=true timeout -s KILL "$limit" "/tests/$1" --test-threads=1 --include-ignored
  rc=$?
  cat /tmp/cannot-show 2>/dev/null; rm -f /tmp/cannot-show
  echo "@@NETPROBE-TEST $1 END rc=$rc up=$(up)"
}}
"#
    ).replace("{boot}", "$boot"));
    for (t, budget) in tests {
        s.push_str(&format!("run_test {t} {budget}\n"));
    }
    s.push_str("echo \"@@NETPROBE-VM DONE up=$(up)\"\npoweroff -f\n");
    s
}

/// Busybox, static, and the names of its applets.
pub struct Busybox {
    pub path: PathBuf,
    pub applets: Vec<String>,
}

pub fn busybox() -> Result<Busybox> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox not found (package busybox-static)")?;
    super::guest_build::ensure_static(&path)
        .context("the guest needs busybox-static, not busybox")?;
    let out = Command::new(&path).arg("--list").output()?;
    if !out.status.success() {
        bail!("`{} --list` failed", path.display());
    }
    let applets = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect();
    Ok(Busybox { path, applets })
}

/// A dynamically linked host program copied into the guest with the
/// shared libraries `ldd` names (systemd-journald and journalctl for the
/// journald test, nft for the netfilter scenarios, tc and ip for the qdisc
/// and conntrack ones).
pub struct HostProgram {
    /// Path in the guest (no leading slash).
    pub guest: String,
    pub host: PathBuf,
    pub libs: Vec<PathBuf>,
}

/// Host programs the guest's tests use, with their libraries; a program the
/// host lacks is left out (the test that needs it then says so).
pub fn host_programs() -> Result<Vec<HostProgram>> {
    let wanted = [
        (
            "lib/systemd/systemd-journald",
            &[
                "/lib/systemd/systemd-journald",
                "/usr/lib/systemd/systemd-journald",
            ][..],
        ),
        (
            "bin/journalctl",
            &["/usr/bin/journalctl", "/bin/journalctl"][..],
        ),
        ("bin/nft", &["/usr/sbin/nft", "/sbin/nft"][..]),
        // iproute2's tc and ip: busybox's cannot add a tbf qdisc or a
        // dummy device.
        ("bin/tc", &["/usr/sbin/tc", "/sbin/tc"][..]),
        ("bin/ip", &["/usr/sbin/ip", "/sbin/ip", "/bin/ip"][..]),
    ];
    let mut found = Vec::new();
    for (guest, candidates) in wanted {
        let Some(host) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) else {
            println!("note: {guest} is not on this host; the guest's journald test will say so");
            continue;
        };
        let out = Command::new("ldd")
            .arg(&host)
            .output()
            .with_context(|| format!("cannot run ldd {}", host.display()))?;
        if !out.status.success() {
            bail!("ldd {} failed", host.display());
        }
        let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("ldd {}", host.display()))?;
        found.push(HostProgram {
            guest: guest.to_string(),
            host,
            libs,
        });
    }
    Ok(found)
}

/// The absolute library paths in `ldd` output (`name => /path (addr)` and
/// the loader's `/path (addr)`); the vDSO has none. A library ldd could not
/// find is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("{} not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Adds `path` (relative) after its parent directories, once each.
fn add_parents<W: std::io::Write>(
    w: &mut cpio::Writer<W>,
    made: &mut std::collections::BTreeSet<String>,
    path: &str,
) -> Result<()> {
    let mut at = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        if made.insert(at.clone()) {
            w.dir(&at, 0o755)?;
        }
    }
    Ok(())
}

/// A fixed machine id: journald names its journal directory after it.
const MACHINE_ID: &str = "6e657470726f62656d61747269780a00\n";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Writes the initramfs (uncompressed cpio, which the kernel accepts as is).
pub fn write(
    out: &Path,
    busybox: &Busybox,
    built: &Built,
    modules: &Selection,
    programs: &[HostProgram],
    reference_boot_cs: u32,
) -> Result<()> {
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tests = &built.tests;
    let mut w = cpio::Writer::new(BufWriter::new(file));
    let mut made = std::collections::BTreeSet::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "run",
        "sys",
        "tests",
        "tmp",
        "var",
    ] {
        w.dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
        made.insert(d.to_string());
    }
    let mut copied = std::collections::BTreeSet::new();
    for p in programs {
        for (guest, host) in std::iter::once((p.guest.clone(), &p.host)).chain(
            p.libs
                .iter()
                .map(|l| (l.to_string_lossy().trim_start_matches('/').to_string(), l)),
        ) {
            if copied.insert(guest.clone()) {
                add_parents(&mut w, &mut made, &guest)?;
                w.file_from(&guest, 0o755, host)?;
            }
        }
    }
    w.file("etc/machine-id", 0o444, MACHINE_ID.as_bytes())?;
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    w.file("etc/group", 0o644, GROUP.as_bytes())?;
    w.file_from("bin/busybox", 0o755, &busybox.path)?;
    for a in &busybox.applets {
        // A host program of the same name (tc) replaces the applet.
        let path = format!("bin/{a}");
        if !copied.contains(&path) {
            w.symlink(&path, "busybox")?;
        }
    }
    w.file_from("bin/netprobe", 0o755, &built.netprobe)?;
    w.file_from("bin/netprobe-probe-log", 0o755, &built.netprobe_probe_log)?;
    let names: Vec<(String, u32)> = tests
        .iter()
        .map(|t| (t.name.clone(), super::budget::budget(&t.name)))
        .collect();
    for t in tests {
        if !t
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!(
                "test target name {:?} is not safe in a shell script",
                t.name
            );
        }
        w.file_from(&format!("tests/{}", t.name), 0o755, &t.path)?;
    }
    for (name, ko) in &modules.load {
        w.file(&format!("lib/modules/{name}.ko"), 0o644, ko)?;
    }
    w.file(
        "init",
        0o755,
        init_script(&names, reference_boot_cs, modules).as_bytes(),
    )?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_runs_check_then_each_test_between_markers() {
        let modules = Selection {
            load: vec![
                ("nf_defrag_ipv4".into(), vec![]),
                ("nf_conntrack".into(), vec![]),
            ],
            builtin: vec!["veth".into()],
            absent: vec![],
        };
        let s = init_script(
            &[("reset".into(), 80), ("lifecycle".into(), 90)],
            330,
            &modules,
        );
        assert!(s.starts_with("#!/bin/sh\n"));
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in:\n{s}"))
        };
        // Mounts come before anything runs.
        for m in [
            "mount -t devtmpfs devtmpfs /dev",
            "mount -t proc proc /proc",
            "mount -t tracefs tracefs /sys/kernel/tracing",
            "mount -t tmpfs tmpfs /run",
            "mkdir -p /run/netns",
            "ip link set lo up",
        ] {
            assert!(pos(m) < pos("load nf_defrag_ipv4\n"), "{m}");
        }
        assert!(pos("load nf_defrag_ipv4\n") < pos("load nf_conntrack\n"));
        assert!(s.contains("echo \"@@NETPROBE-MODULE veth builtin\"\n"));
        assert!(pos("/bin/netprobe check\n") < pos("run_test reset 80\n"));
        assert!(pos("run_test reset 80\n") < pos("run_test lifecycle 90\n"));
        // The speed is measured before anything else runs, and said with
        // the guest's total limit.
        assert!(pos("boot=$(up)") < pos("load nf_defrag_ipv4\n"));
        assert!(s.contains("factor=$((boot_cs * 100 / 330))\n"));
        assert!(s.contains("reference_cs=330 factor_pct=$factor total=$((170 * factor / 100))\""));
        assert!(s.contains(
            "NETPROBE_BIN=/bin/netprobe NETPROBE_PROBE_LOG_BIN=/bin/netprobe-probe-log NETPROBE_GUEST=1 NETPROBE_GUEST_MODULES=/lib/modules NETPROBE_CANNOT_SHOW=/tmp/cannot-show CI=true timeout -s KILL \"$limit\" \"/tests/$1\" --test-threads=1 --include-ignored\n"
        ));
        // The tests' "cannot show" lines reach the log inside the markers.
        assert!(
            pos("cat /tmp/cannot-show") < pos("echo \"@@NETPROBE-TEST $1 END rc=$rc up=$(up)\"")
        );
        assert!(s.ends_with("echo \"@@NETPROBE-VM DONE up=$(up)\"\npoweroff -f\n"));
    }

    /// The factor /init computes for a boot of `boot` seconds, by the same
    /// shell text (POSIX sh here; busybox's ash in the guest).
    fn factor_of(boot: &str, reference_cs: u32) -> u32 {
        let script = format!(
            "boot={boot}\n{SPEED_CS}{}echo \"$factor\"\n",
            SPEED_FACTOR.replace("{reference_boot_cs}", &reference_cs.to_string())
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{script}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    #[test]
    fn a_slower_guest_gets_longer_limits_never_shorter() {
        assert_eq!(factor_of("3.30", 330), 100);
        // Twice as slow: twice the time.
        assert_eq!(factor_of("6.60", 330), 200);
        assert_eq!(factor_of("12.34", 330), 373);
        // Faster (KVM): the budgets stand; a leading zero is not octal.
        assert_eq!(factor_of("0.98", 330), 100);
        assert_eq!(factor_of("0.09", 330), 100);
        assert_eq!(factor_of("0.00", 330), 100);
    }

    #[test]
    fn ldd_output_of_the_real_journald() {
        let text = include_str!("testdata/ldd-journald.txt");
        let libs = parse_ldd(text).unwrap();
        assert!(libs.iter().all(|l| l.is_absolute()));
        assert!(libs.iter().any(|l| l.ends_with("ld-linux-x86-64.so.2")));
        assert!(libs
            .iter()
            .any(|l| l.to_string_lossy().contains("systemd/libsystemd-shared-")));
        assert!(!libs.iter().any(|l| l.to_string_lossy().contains("vdso")));
        assert_eq!(libs.len(), text.lines().count() - 1, "all but the vDSO");
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1 not found"));
    }
}
