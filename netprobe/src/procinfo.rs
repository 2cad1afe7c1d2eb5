//! What /proc says about a process, for records about it (an OOM victim):
//! read once, when its record is written; the process may already be gone.

use std::path::Path;

/// The memory cgroup of a process from its `/proc/PID/cgroup` text: the
/// cgroup v2 path (`0::/path`), else the v1 memory controller's.
pub fn memory_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    v2
}

/// PF_EXITING in include/linux/sched.h (stable for decades): set as soon as
/// a task starts to exit, before it leaves its cgroup.
const PF_EXITING: u64 = 0x4;

/// Whether the `/proc/PID/stat` text is of a process that is exiting (or a
/// zombie): its cgroup then reads as the root, whatever it was.
pub fn exiting(stat: &str) -> bool {
    // Fields after the command, which may hold spaces and parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return true;
    };
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = f.first().copied().unwrap_or("X");
    let flags = f.get(6).and_then(|x| x.parse::<u64>().ok());
    matches!(state, "Z" | "X" | "x") || flags.is_none_or(|fl| fl & PF_EXITING != 0)
}

/// `comm` and memory cgroup of `pid`, as far as /proc still has them. The
/// cgroup is read first and kept only if the process was not exiting yet.
pub fn process(proc_root: &Path, pid: u32) -> (Option<Vec<u8>>, Option<String>) {
    let dir = proc_root.join(pid.to_string());
    let comm = std::fs::read(dir.join("comm")).ok().map(|mut c| {
        if c.last() == Some(&b'\n') {
            c.pop();
        }
        c
    });
    let cgroup = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|t| memory_cgroup(&t))
        .filter(|_| std::fs::read_to_string(dir.join("stat")).is_ok_and(|stat| !exiting(&stat)));
    (comm, cgroup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cgroup_v1_or_v2() {
        // A v1 host (this project's CI machine) with a unified hierarchy too.
        let v1 = "12:pids:/\n5:memory:/netprobe-test-oom-42\n0::/\n";
        assert_eq!(memory_cgroup(v1).as_deref(), Some("/netprobe-test-oom-42"));
        let v2 = "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-abc.scope\n";
        assert_eq!(
            memory_cgroup(v2).as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/cri-containerd-abc.scope")
        );
        assert_eq!(memory_cgroup("garbage\n\n::\n"), None);
        assert_eq!(memory_cgroup("4:cpu,memory:/x\n").as_deref(), Some("/x"));
    }

    #[test]
    fn exiting_from_stat() {
        // This process, running; then the same line of a task that exits.
        let live = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(!exiting(&live), "{live}");
        let (head, rest) = live.rsplit_once(')').unwrap();
        let mut f: Vec<String> = rest.split_whitespace().map(String::from).collect();
        let flags: u64 = f[6].parse().unwrap();
        f[6] = (flags | PF_EXITING).to_string();
        assert!(exiting(&format!("{head}) {}", f.join(" "))));
        f[6] = flags.to_string();
        f[0] = "Z".into();
        assert!(exiting(&format!("{head}) {}", f.join(" "))));
        // A hostile command name cannot shift the fields.
        let odd = live.replacen('(', "(a) R 1 2 3 4 5 4 (", 1);
        assert!(!exiting(&odd));
        assert!(exiting("garbage"));
    }

    #[test]
    fn this_process() {
        let (comm, _) = process(Path::new("/proc"), std::process::id());
        assert!(comm.is_some_and(|c| !c.is_empty() && !c.contains(&b'\n')));
        assert_eq!(process(Path::new("/nonexistent"), 1), (None, None));
    }
}
