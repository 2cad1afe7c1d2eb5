//! Real containers for the tests, run by podman with runc (on this
//! project's machine crun refuses the hybrid cgroups; podman's default
//! open-files limit is above the machine's hard limit). No registry: the
//! images are imported or loaded from archives made here.

use std::{path::Path, process::Command};

/// A busybox-only image (`sh`, `nc`, `sleep`).
pub const BUSYBOX: &str = "localhost/netprobe-test-busybox:1";

/// The `run` flags every container here needs on this machine.
pub const MACHINE_FLAGS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:20000",
    "--ulimit",
    "nproc=1024:1024",
];

/// `podman --runtime runc ARGS`, its stdout, failing the test with its
/// stderr.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman ({e}): `cargo xtask setup` installs it"));
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Imports [`BUSYBOX`]: a root file system holding only a static busybox.
pub fn busybox_image() {
    let dir = std::env::temp_dir().join(format!("netprobe-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a static busybox (`cargo xtask setup` installs busybox-static)");
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "nc", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    let tar = dir.with_extension("tar");
    let st = Command::new("tar")
        .args([
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tar of the root file system");
    podman(&["import", tar.to_str().unwrap(), BUSYBOX]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&tar);
}

/// A container's network namespace inode, from its process.
pub fn netns_of(id: &str) -> u64 {
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", id]);
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse::<u64>()
        .unwrap()
}

/// Removes the container when the test ends, however it ends.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
    }
}
