//! Kernel modules the scenarios need, taken from the unpacked package with
//! their dependencies, decompressed, in load order. The packages carry no
//! modules.dep (depmod runs at install), so dependencies are read from each
//! module's `.modinfo`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::elf;

/// What the scenarios (now and planned: veth pairs, conntrack) may load.
/// Modules the scenarios need; a real node loads them on demand (tcp_diag
/// when sock_diag is first asked about TCP), the guest has no modprobe.
pub const WANTED: &[&str] = &[
    "veth",
    "nf_conntrack",
    "nf_tables",
    "nft_ct",
    "tcp_diag",
    "sch_tbf",
    "dummy",
    // `reject with icmp type host-unreachable` (the unreachable tests).
    "nft_reject_ipv4",
];

/// The modules to put in the initramfs, and what happened to the rest.
#[derive(Debug, Default)]
pub struct Selection {
    /// (name, decompressed .ko), dependencies before dependents.
    pub load: Vec<(String, Vec<u8>)>,
    /// Wanted modules built into the kernel.
    pub builtin: Vec<String>,
    /// Wanted modules this kernel does not have at all.
    pub absent: Vec<String>,
}

/// Module names use `_` and `-` interchangeably.
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// `veth` for `.../veth.ko` or `.../veth.ko.xz`.
fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = base
        .strip_suffix(".ko")
        .or_else(|| base.strip_suffix(".ko.xz"))
        .or_else(|| base.strip_suffix(".ko.zst"))
        .or_else(|| base.strip_suffix(".ko.gz"))?;
    Some(norm(stem))
}

fn index(dir: &Path, into: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(&path, into)?;
        } else if let Some(name) = module_name(&path.to_string_lossy()) {
            into.insert(name, path);
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("cannot read {name}"));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot run `{tool} -dc` for {name}"))?;
    if !out.status.success() {
        bail!(
            "`{tool} -dc {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Picks `wanted` and their dependencies out of `modules_dir`
/// (`lib/modules/<release>` of an unpacked kernel package).
pub fn select(modules_dir: &Path, wanted: &[&str]) -> Result<Selection> {
    let builtin: HashSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let mut files = HashMap::new();
    index(&modules_dir.join("kernel"), &mut files)?;

    let mut sel = Selection::default();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut data: HashMap<String, Vec<u8>> = HashMap::new();
    let mut todo: Vec<String> = Vec::new();
    for w in wanted {
        let w = norm(w);
        if builtin.contains(&w) {
            sel.builtin.push(w);
        } else if files.contains_key(&w) {
            todo.push(w);
        } else {
            sel.absent.push(w);
        }
    }
    let roots = todo.clone();
    while let Some(name) = todo.pop() {
        if deps.contains_key(&name) || builtin.contains(&name) {
            continue;
        }
        let path = files.get(&name).with_context(|| {
            format!(
                "module {name} is needed but not in {}",
                modules_dir.display()
            )
        })?;
        let ko = read_module(path)?;
        let d: Vec<String> = elf::module_depends(&ko)
            .with_context(|| format!("cannot read {}", path.display()))?
            .iter()
            .map(|d| norm(d))
            .collect();
        todo.extend(d.iter().cloned());
        deps.insert(name.clone(), d);
        data.insert(name, ko);
    }
    for name in load_order(&roots, &deps) {
        let ko = data.remove(&name).expect("every ordered module was read");
        sel.load.push((name, ko));
    }
    Ok(sel)
}

/// `roots` and everything they depend on (as far as `deps` knows; names it
/// does not know are taken as built in), dependencies first, each once.
pub fn load_order(roots: &[String], deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    fn visit(
        name: &str,
        deps: &BTreeMap<String, Vec<String>>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !deps.contains_key(name) || !seen.insert(name.to_string()) {
            return;
        }
        for d in &deps[name] {
            visit(d, deps, seen, out);
        }
        out.push(name.to_string());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in roots {
        visit(r, deps, &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/drivers/net/veth.ko").as_deref(),
            Some("veth")
        );
        assert_eq!(
            module_name("/x/kernel/net/netfilter/nf_conntrack.ko.xz").as_deref(),
            Some("nf_conntrack")
        );
        assert_eq!(
            module_name("kernel/lib/crc-itu-t.ko").as_deref(),
            Some("crc_itu_t")
        );
        assert_eq!(module_name("modules.builtin"), None);
    }

    #[test]
    fn dependencies_load_first_and_once() {
        // The dependency graph of nf_conntrack in Debian 6.1, plus veth.
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let deps: BTreeMap<String, Vec<String>> = [
            ("veth", s(&[])),
            (
                "nf_conntrack",
                s(&["nf_defrag_ipv6", "libcrc32c", "nf_defrag_ipv4"]),
            ),
            ("nf_defrag_ipv6", s(&[])),
            ("nf_defrag_ipv4", s(&[])),
            ("libcrc32c", s(&["crc32c_generic"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            load_order(&s(&["veth", "nf_conntrack", "libcrc32c"]), &deps),
            [
                "veth",
                "nf_defrag_ipv6",
                // crc32c_generic is not in the map: built in, skipped.
                "libcrc32c",
                "nf_defrag_ipv4",
                "nf_conntrack"
            ]
        );
    }
}
