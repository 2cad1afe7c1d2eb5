//! A containerd of the test's own (the distribution's package, with runc):
//! its root, state and socket in a temporary directory, so it neither needs
//! nor touches a containerd the machine may run. Stopped, with its
//! containers, when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::patience;

/// The containerd namespace the tests' images and containers live in.
const NAMESPACE: &str = "netprobe-test";

pub struct Containerd {
    child: Child,
    pub dir: PathBuf,
    socket: PathBuf,
    /// Containers to kill and remove on drop.
    containers: Vec<String>,
    /// Image mounts to undo on drop.
    mounts: Vec<PathBuf>,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = std::env::temp_dir().join(format!("netprobe-containerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        // The CRI plugin is the kubelet's door; ctr does not need it.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n",
                dir.display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (`cargo xtask setup` installs it)");
        let c = Containerd {
            child,
            dir,
            socket,
            containers: Vec::new(),
            mounts: Vec::new(),
        };
        let deadline = Instant::now() + patience(Duration::from_secs(20));
        while c.try_ctr(&["version"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {}: {}",
                c.socket.display(),
                std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn try_ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ctr: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `ctr ARGS` against this containerd, failing the test with its stderr.
    pub fn ctr(&self, args: &[&str]) -> String {
        self.try_ctr(args)
            .unwrap_or_else(|e| panic!("ctr {}: {e}", args.join(" ")))
    }

    /// Imports an image archive; returns the name it was given.
    pub fn import(&mut self, archive: &Path) -> String {
        let out = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        // "unpacking NAME (sha256:...)...done"
        out.lines()
            .find_map(|l| l.strip_prefix("unpacking "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("ctr images import named no image: {out}"))
            .to_string()
    }

    /// The OCI spec `ctr` builds for `image` with `flags`, as a container
    /// named `id` would get it (created, read, removed).
    pub fn spec(&mut self, flags: &[String], image: &str, id: &str, command: &[String]) -> Value {
        let mut args: Vec<&str> = vec!["containers", "create"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([image, id]);
        args.extend(command.iter().map(String::as_str));
        self.ctr(&args);
        let info: Value = serde_json::from_str(&self.ctr(&["containers", "info", id])).unwrap();
        self.ctr(&["containers", "rm", id]);
        info["Spec"].clone()
    }

    /// A writable root file system of `image` (the snapshot a container
    /// would get), mounted under the test's directory.
    pub fn rootfs(&mut self, image: &str, name: &str) -> PathBuf {
        let target = self.dir.join(name);
        std::fs::create_dir_all(&target).unwrap();
        self.ctr(&["images", "mount", "--rw", image, target.to_str().unwrap()]);
        self.mounts.push(target.clone());
        target
    }

    /// Runs a container from a full OCI spec, detached, its stdout and
    /// stderr into `log`.
    pub fn run_spec(&mut self, spec: &Value, id: &str, log: &Path) {
        let file = self.dir.join(format!("{id}.json"));
        std::fs::write(&file, serde_json::to_vec(spec).unwrap()).unwrap();
        let uri = format!("file://{}", log.display());
        self.containers.push(id.to_string());
        self.ctr(&[
            "run",
            "-d",
            "--log-uri",
            &uri,
            "--config",
            file.to_str().unwrap(),
            id,
        ]);
    }

    /// Runs a container from an image with `ctr run` flags, detached.
    pub fn run(&mut self, flags: &[&str], image: &str, id: &str, command: &[&str]) {
        let mut args = vec!["run", "-d"];
        args.extend(flags);
        args.extend([image, id]);
        args.extend(command);
        self.containers.push(id.to_string());
        self.ctr(&args);
    }

    /// The pid of a running container's first process.
    pub fn pid(&self, id: &str) -> u32 {
        let out = self.ctr(&["tasks", "ls"]);
        out.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == id).then(|| w.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no task {id}: {out}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.containers.drain(..).collect::<Vec<_>>() {
            let _ = self.try_ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
            // The task's deletion waits for it to exit.
            for _ in 0..50 {
                if self.try_ctr(&["tasks", "rm", &id]).is_ok()
                    || self
                        .try_ctr(&["tasks", "ls"])
                        .is_ok_and(|l| !l.contains(&id))
                {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = self.try_ctr(&["containers", "rm", &id]);
        }
        for m in self.mounts.drain(..).collect::<Vec<_>>() {
            let _ = self.try_ctr(&["images", "unmount", "--rm", m.to_str().unwrap_or("")]);
        }
        // SAFETY: a plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
