//! What /proc says about a process, for records about it (an OOM victim):
//! read once, when its record is written; the process may already be gone.

use std::path::{Path, PathBuf};

/// The memory cgroup of a process from its `/proc/PID/cgroup` text
/// (parsed by procfs): the v1 memory controller's path, else the cgroup
/// v2 path (`0::/path`).
pub fn memory_cgroup(text: &str) -> Option<String> {
    use procfs::FromRead as _;
    let groups = procfs::ProcessCGroups::from_read(text.as_bytes()).ok()?;
    let mut v2 = None;
    for g in groups {
        if g.controllers.iter().any(|c| c == "memory") {
            return Some(g.pathname);
        }
        if g.hierarchy == 0 && g.controllers.is_empty() {
            v2 = Some(g.pathname);
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
    use procfs::FromRead as _;
    // procfs finds the fields after the command, which may hold spaces and
    // parentheses. Unreadable: as good as gone.
    match procfs::process::Stat::from_read(stat.as_bytes()) {
        Ok(s) => matches!(s.state, 'Z' | 'X' | 'x') || u64::from(s.flags) & PF_EXITING != 0,
        Err(_) => true,
    }
}

/// `comm` and memory cgroup of `pid`, as far as /proc still has them. The
/// cgroup is read first and kept only if the process was not exiting yet.
pub fn process(proc_root: &Path, pid: u32) -> (Option<Vec<u8>>, Option<String>) {
    let dir = proc_root.join(pid.to_string());
    // The name as bytes, not procfs's lossy String: a hostile name is
    // escaped in the record, never altered.
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

/// The OOM kill count in a memory cgroup's `memory.events` (v2) or
/// `memory.oom_control` (v1): its `oom_kill N` line (4.13+).
pub fn oom_kill_count(text: &str) -> Option<u64> {
    event_count(text, "oom_kill")
}

/// A `NAME N` line's count.
fn event_count(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// What the memory cgroups say of one OOM kill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillFacts {
    /// The victim's cgroup: the deepest whose `oom_kill` count went up.
    pub cgroup: Option<String>,
    /// Whether the kill was confined to a memory cgroup that reached its
    /// own limit (v2: a cgroup's `oom` count went up with it; v1: the
    /// victim's cgroup or one above it has a limit), or global (the node
    /// ran out of memory). `None`: cannot tell.
    pub confined: Option<bool>,
}

/// The memory hierarchies in a `/proc/self/mountinfo` text: (mount point,
/// the file holding `oom_kill`). cgroup v2 counts only where the memory
/// controller is enabled at its root (`has_memory` is asked).
pub fn memory_hierarchies(
    mountinfo: &str,
    has_memory: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let opts = r.nth(1).unwrap_or("");
        if fstype == "cgroup2" && has_memory(mount) {
            out.push((PathBuf::from(mount), "memory.events"));
        } else if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
            out.push((PathBuf::from(mount), "memory.oom_control"));
        }
    }
    out
}

/// The OOM kill counts of every memory cgroup, to name the cgroup of an
/// OOM victim that /proc no longer shows: the kernel counts a kill in the
/// victim's cgroup (and, on v2, its ancestors), so after a kill the deepest
/// cgroup whose count went up is the victim's. A walk of the hierarchy at
/// start and after each kill; kills are rare, so nothing runs between.
#[derive(Debug, Default)]
pub struct OomKills {
    hierarchies: Vec<(PathBuf, &'static str)>,
    /// Per cgroup: (oom_kill, oom) counts; `oom` only on v2.
    counts: std::collections::HashMap<PathBuf, (u64, u64)>,
}

/// A v1 `memory.limit_in_bytes` this large is no limit (the page counter's
/// maximum, rounded down to a page).
const V1_NO_LIMIT: u64 = 1 << 60;

/// Bounds on a walk: cgroups read, and depth.
const MAX_CGROUPS: usize = 100_000;
const MAX_DEPTH: usize = 32;

impl OomKills {
    /// Finds the memory hierarchies and reads their counts.
    pub fn new() -> OomKills {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hierarchies = memory_hierarchies(&mountinfo, |mount| {
            std::fs::read_to_string(Path::new(mount).join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        let mut k = OomKills {
            hierarchies,
            counts: Default::default(),
        };
        k.counts = k.walk();
        k
    }

    fn walk(&self) -> std::collections::HashMap<PathBuf, (u64, u64)> {
        let mut counts = std::collections::HashMap::new();
        for (root, file) in &self.hierarchies {
            let mut stack = vec![(root.clone(), 0usize)];
            while let Some((dir, depth)) = stack.pop() {
                if counts.len() >= MAX_CGROUPS {
                    break;
                }
                if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                    if let Some(n) = oom_kill_count(&text) {
                        let oom = event_count(&text, "oom").unwrap_or(0);
                        counts.insert(dir.clone(), (n, oom));
                    }
                }
                if depth >= MAX_DEPTH {
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
        counts
    }

    /// After a kill: the victim's cgroup (path under its hierarchy, `/a/b`),
    /// the deepest whose kill count went up (`None` when none did, or two
    /// unrelated cgroups did: two kills at once, no guess), and whether
    /// the kill was confined to a cgroup's limit.
    pub fn after_kill(&mut self) -> KillFacts {
        let now = self.walk();
        let before = |p: &PathBuf| self.counts.get(p).copied().unwrap_or((0, 0));
        let grew: Vec<&PathBuf> = now
            .iter()
            .filter(|(p, n)| n.0 > before(p).0)
            .map(|(p, _)| p)
            .collect();
        let limited = now.iter().any(|(p, n)| n.1 > before(p).1);
        let deepest = grew
            .iter()
            .copied()
            .max_by_key(|p| p.components().count())
            .cloned();
        let found = deepest.filter(|d| grew.iter().all(|g| d.starts_with(g)));
        self.counts = now;
        // On v2 a kill confined to a limit shows as a cgroup's `oom` count,
        // whether or not the victim's own cgroup is known (the root has
        // no memory.events).
        let v2 = self.hierarchies.iter().any(|(_, f)| *f == "memory.events");
        let Some(found) = found else {
            return KillFacts {
                cgroup: None,
                confined: v2.then_some(limited),
            };
        };
        let Some((root, file)) = self
            .hierarchies
            .iter()
            .find(|(root, _)| found.starts_with(root))
        else {
            return KillFacts::default();
        };
        let confined = if *file == "memory.events" {
            limited
        } else {
            // v1 counts no limit events: a limit on the victim's cgroup or
            // one above it (below the root) is what confines it.
            found
                .ancestors()
                .take_while(|a| a.starts_with(root) && *a != root.as_path())
                .any(|a| {
                    std::fs::read_to_string(a.join("memory.limit_in_bytes"))
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .is_some_and(|l| l < V1_NO_LIMIT)
                })
        };
        KillFacts {
            cgroup: Some(format!(
                "/{}",
                found.strip_prefix(root).unwrap_or(&found).display()
            )),
            confined: Some(confined),
        }
    }
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
        // A real v1 host's file (6.18, this machine type).
        let real = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/procfs/6.18/cgroup"),
        )
        .unwrap();
        assert_eq!(
            memory_cgroup(&real).as_deref(),
            Some("/process_api/f5cb184857d793a273699bba81f85fd1")
        );
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
    fn oom_kill_counts_of_v1_and_v2() {
        // The files' layout as 6.18 (v1, the project's machine) and 6.12
        // (v2) write them, with one kill counted.
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        let v2 = "low 0\nhigh 0\nmax 41\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), Some(1));
        assert_eq!(oom_kill_count(v2), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), None);
        assert_eq!(oom_kill_count("oom_kill x\n"), None);
    }

    #[test]
    fn memory_hierarchies_from_mountinfo() {
        // Real lines of this project's machine (hybrid: v1 memory, and a
        // v2 hierarchy without the memory controller) and of a v2 guest.
        let hybrid = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let found = memory_hierarchies(hybrid, |_| false);
        assert_eq!(
            found,
            [(PathBuf::from("/sys/fs/cgroup/memory"), "memory.oom_control")]
        );
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            memory_hierarchies(v2, |m| m == "/sys/fs/cgroup"),
            [(PathBuf::from("/sys/fs/cgroup"), "memory.events")]
        );
        assert!(memory_hierarchies(v2, |_| false).is_empty());
        assert!(memory_hierarchies("garbage\n - \n", |_| true).is_empty());
    }

    #[test]
    fn the_victim_is_the_deepest_cgroup_whose_count_grew() {
        let root = std::env::temp_dir().join(format!("netprobe-oomkills-{}", std::process::id()));
        let leaf = root.join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&leaf).unwrap();
        let write = |dir: &Path, n: u64| {
            std::fs::write(
                dir.join("memory.events"),
                format!("oom {n}\noom_kill {n}\n"),
            )
            .unwrap()
        };
        for d in [
            &root,
            &root.join("kubepods"),
            &root.join("kubepods/pod1"),
            &leaf,
        ] {
            write(d, 0);
        }
        let mut k = OomKills {
            hierarchies: vec![(root.clone(), "memory.events")],
            counts: Default::default(),
        };
        k.counts = k.walk();
        // Nothing moved: no victim found, and no limit reached (v2 counts
        // one wherever it is).
        assert_eq!(
            k.after_kill(),
            KillFacts {
                cgroup: None,
                confined: Some(false)
            }
        );
        // v2 counts the kill up the hierarchy; the pod's limit was hit
        // (its `oom` went up with it): confined.
        for d in [&root.join("kubepods"), &root.join("kubepods/pod1"), &leaf] {
            write(d, 1);
        }
        assert_eq!(
            k.after_kill(),
            KillFacts {
                cgroup: Some("/kubepods/pod1/ctr".into()),
                confined: Some(true)
            }
        );
        assert_eq!(k.after_kill().cgroup, None, "counted once");
        // A kill with no limit reached anywhere: the node ran out (global).
        std::fs::write(leaf.join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert_eq!(k.after_kill().confined, Some(false));
        // Two unrelated cgroups at once: no guess.
        let other = root.join("other");
        std::fs::create_dir_all(&other).unwrap();
        write(&other, 0);
        k.counts = k.walk();
        write(&other, 1);
        write(&leaf, 3);
        assert_eq!(k.after_kill().cgroup, None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn on_v1_a_limit_above_the_victim_confines_the_kill() {
        let root = std::env::temp_dir().join(format!("netprobe-oomv1-{}", std::process::id()));
        let (limited, free) = (root.join("limited/job"), root.join("free/job"));
        for d in [&root, &limited, &free] {
            std::fs::create_dir_all(d).unwrap();
        }
        let kills = |d: &Path, n: u64| {
            std::fs::write(
                d.join("memory.oom_control"),
                format!("oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"),
            )
            .unwrap()
        };
        for d in [&root, &limited, &free] {
            kills(d, 0);
        }
        // Debian's v1 "no limit": 9223372036854771712.
        std::fs::write(root.join("limited/memory.limit_in_bytes"), "33554432\n").unwrap();
        std::fs::write(
            root.join("free/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let mut k = OomKills {
            hierarchies: vec![(root.clone(), "memory.oom_control")],
            counts: Default::default(),
        };
        k.counts = k.walk();
        kills(&limited, 1);
        assert_eq!(
            k.after_kill(),
            KillFacts {
                cgroup: Some("/limited/job".into()),
                confined: Some(true)
            }
        );
        kills(&free, 1);
        assert_eq!(k.after_kill().confined, Some(false));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_process() {
        let (comm, _) = process(Path::new("/proc"), std::process::id());
        assert!(comm.is_some_and(|c| !c.is_empty() && !c.contains(&b'\n')));
        assert_eq!(process(Path::new("/nonexistent"), 1), (None, None));
    }
}
