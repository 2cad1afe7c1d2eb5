//! Container attribution: which container, and on a Kubernetes node which
//! pod, a record is about. Found without talking to any runtime:
//! - the container id and the pod's UID from a process's cgroup path, as
//!   runtimes and the kubelet name them (systemd and cgroupfs drivers:
//!   `.../kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`,
//!   `/kubepods/burstable/pod<uid>/<id>`, `/system.slice/docker-<id>.scope`,
//!   `/docker/<id>`, `crio-<id>.scope`, podman's `/libpod_parent/libpod-<id>`
//!   and `machine.slice/libpod-<id>.scope`);
//! - the pod's namespace and name from the kubelet's log directories,
//!   `/var/log/pods/<namespace>_<name>_<uid>/`.
//!
//! A network namespace is attributed through a process living in it (its
//! cgroup); an OOM victim through its own cgroup.

use std::{collections::HashMap, path::Path};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The container id (64 hex digits, as runtimes show it; `crictl ps`
    /// and `docker ps` show its first 12 or 13).
    pub container: Option<String>,
    /// The pod's UID (with dashes).
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID in a cgroup path component: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid with _>.slice` (systemd driver).
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let at = c.rfind("pod")?;
    let uid = c[at + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    ok.then_some(uid)
}

/// The container and pod a cgroup path (from `/proc/PID/cgroup`) names.
pub fn from_cgroup(path: &str) -> Owner {
    let mut owner = Owner::default();
    for component in path.split('/') {
        if let Some(uid) = pod_uid(component) {
            owner.pod_uid = Some(uid);
        }
        // `<runtime>-<id>[.scope]` (cri-containerd-, docker-, crio-,
        // libpod-) or a bare id; a runtime's monitor (`libpod-conmon-<id>`,
        // `crio-conmon-<id>`) is not the container.
        let base = component.strip_suffix(".scope").unwrap_or(component);
        let id = base.rsplit('-').next().unwrap_or(base);
        if is_container_id(id) && !base.contains("conmon") {
            owner.container = Some(id.to_string());
        }
    }
    owner
}

/// Pod UID -> `namespace/name`, from the kubelet's `/var/log/pods` entries
/// (`<namespace>_<name>_<uid>`; namespaces and names cannot hold `_`).
pub fn pod_names(log_pods: &Path) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let Ok(dir) = std::fs::read_dir(log_pods) else {
        return names;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(3, '_');
        if let (Some(ns), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next()) {
            if pod_uid(&format!("pod{uid}")).is_some() {
                names.insert(uid.to_string(), format!("{ns}/{pod}"));
            }
        }
    }
    names
}

/// Attributes network namespaces and cgroups, caching what it read (the
/// pod names are read again when a UID is not known yet: pods come and go).
pub struct Attributor {
    proc_root: std::path::PathBuf,
    log_pods: std::path::PathBuf,
    pods: HashMap<String, String>,
    /// Network namespace inode -> its owner, as last found.
    by_netns: HashMap<u64, (Option<String>, Option<String>)>,
    /// When /proc was last scanned for namespaces (at most once a second).
    scanned: Option<std::time::Instant>,
    pub scans: u64,
}

impl Attributor {
    pub fn new(proc_root: &Path, log_pods: &Path) -> Attributor {
        Attributor {
            proc_root: proc_root.to_path_buf(),
            log_pods: log_pods.to_path_buf(),
            pods: pod_names(log_pods),
            by_netns: HashMap::new(),
            scanned: None,
            scans: 0,
        }
    }

    /// The owner of network namespace `inode`, through a process in it. A
    /// namespace not seen before makes one scan of /proc (at most once a
    /// second); the host's own namespaces have no container.
    pub fn of_netns(&mut self, inode: u64) -> (Option<String>, Option<String>) {
        if let Some(o) = self.by_netns.get(&inode) {
            return o.clone();
        }
        let due = self
            .scanned
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if !due {
            return (None, None);
        }
        self.scanned = Some(std::time::Instant::now());
        self.scans += 1;
        let spaces = crate::kernel::netns::discover(&self.proc_root, Path::new("/run/netns"));
        // The scan replaces what was known: namespaces that are gone (pods
        // that ended) are forgotten, so the map stays as large as the node.
        self.by_netns.clear();
        for ns in spaces {
            let pid = ns
                .path
                .parent()
                .and_then(Path::parent)
                .filter(|d| d.parent() == Some(self.proc_root.as_path()))
                .and_then(|d| d.file_name()?.to_str()?.parse().ok());
            let owner = pid.map_or((None, None), |p| self.of_pid(p));
            self.by_netns.insert(ns.inode, owner);
        }
        self.by_netns.entry(inode).or_insert((None, None)).clone()
    }

    /// (container id, `namespace/name` or the pod UID) of a cgroup path.
    pub fn of_cgroup(&mut self, path: &str) -> (Option<String>, Option<String>) {
        let owner = from_cgroup(path);
        let pod = owner.pod_uid.map(|uid| {
            if !self.pods.contains_key(&uid) {
                self.pods = pod_names(&self.log_pods);
            }
            self.pods.get(&uid).cloned().unwrap_or(uid)
        });
        (owner.container, pod)
    }

    /// The same for process `pid` (through its memory cgroup path).
    pub fn of_pid(&mut self, pid: u32) -> (Option<String>, Option<String>) {
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| crate::kernel::procinfo::memory_cgroup(&t))
        {
            Some(cg) => self.of_cgroup(&cg),
            None => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";

    #[test]
    fn cgroup_paths_of_each_runtime_and_driver() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0e5b8c2a_1f3d_4b6e_9a7c_2d4f6b8e0a1c.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            from_cgroup(&systemd),
            Owner {
                container: Some(ID.into()),
                pod_uid: Some("0e5b8c2a-1f3d-4b6e-9a7c-2d4f6b8e0a1c".into())
            }
        );
        let cgroupfs = format!("/kubepods/besteffort/pod0e5b8c2a-1f3d-4b6e-9a7c-2d4f6b8e0a1c/{ID}");
        assert_eq!(from_cgroup(&cgroupfs).container.as_deref(), Some(ID));
        assert!(from_cgroup(&cgroupfs).pod_uid.is_some());
        for docker in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
        ] {
            assert_eq!(
                from_cgroup(&docker),
                Owner {
                    container: Some(ID.into()),
                    pod_uid: None
                }
            );
        }
        for other in [
            format!("/machine.slice/crio-{ID}.scope"),
            // podman with runc: cgroupfs (this project's machine, seen) and
            // systemd managers.
            format!("/libpod_parent/libpod-{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(
                from_cgroup(&other).container.as_deref(),
                Some(ID),
                "{other}"
            );
        }
        // The runtime's monitor process is not the container.
        assert_eq!(
            from_cgroup(&format!("/machine.slice/libpod-conmon-{ID}.scope")).container,
            None
        );
        // Not containers: the host, a user session, a test's own cgroup.
        for plain in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/netprobe-test-oom-42",
        ] {
            assert_eq!(from_cgroup(plain), Owner::default(), "{plain}");
        }
        // Lookalikes: a short id, a malformed UID.
        assert_eq!(from_cgroup("/docker/3f2a9c1d").container, None);
        assert_eq!(from_cgroup("/kubepods/podnot-a-uid/x").pod_uid, None);
    }

    #[test]
    fn pod_names_from_the_kubelets_log_directories() {
        let dir = std::env::temp_dir().join(format!("netprobe-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "kube-system_coredns-7db6d8ff4d-x2x9z_0e5b8c2a-1f3d-4b6e-9a7c-2d4f6b8e0a1c",
            "not-a-pod-dir",
            "default_web_not-a-uid",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let names = pod_names(&dir);
        assert_eq!(names.len(), 1);
        assert_eq!(
            names["0e5b8c2a-1f3d-4b6e-9a7c-2d4f6b8e0a1c"],
            "kube-system/coredns-7db6d8ff4d-x2x9z"
        );
        let mut a = Attributor::new(Path::new("/proc"), &dir);
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0e5b8c2a_1f3d_4b6e_9a7c_2d4f6b8e0a1c.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            a.of_cgroup(&systemd),
            (
                Some(ID.into()),
                Some("kube-system/coredns-7db6d8ff4d-x2x9z".into())
            )
        );
        // A pod started later is found on the next lookup.
        std::fs::create_dir_all(dir.join("default_web-0_11111111-2222-3333-4444-555555555555"))
            .unwrap();
        assert_eq!(
            a.of_cgroup("/kubepods/pod11111111-2222-3333-4444-555555555555/x")
                .1
                .as_deref(),
            Some("default/web-0")
        );
        // A process that is gone: nothing.
        assert_eq!(a.of_pid(u32::MAX), (None, None));
        // This process's namespace: found in one scan, then from the cache.
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let owner = a.of_netns(mine);
        assert_eq!(a.of_netns(mine), owner);
        assert_eq!(a.scans, 1);
        // An unknown one: no second scan within the second.
        assert_eq!(a.of_netns(1), (None, None));
        assert_eq!(a.scans, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
