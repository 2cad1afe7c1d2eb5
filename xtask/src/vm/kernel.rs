//! The kernels of the matrix: which Debian package each is, downloading it
//! once into the cache and unpacking it there.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Where a kernel package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The newest `PREFIX<number>SUFFIX` package in this machine's apt lists.
    Newest {
        prefix: &'static str,
        suffix: &'static str,
    },
    /// One package from a suite this machine's sources do not have, through
    /// a private sources list in the cache.
    Pinned {
        package: &'static str,
        suite: &'static str,
    },
}

#[derive(Debug)]
pub struct Kernel {
    /// How the user names it: `--kernels 5.10,6.1`.
    pub short: &'static str,
    pub source: Source,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        short: "5.10",
        source: Source::Pinned {
            package: "linux-image-5.10.0-32-cloud-amd64",
            suite: "bullseye",
        },
    },
    Kernel {
        short: "6.1",
        source: Source::Newest {
            prefix: "linux-image-6.1.0-",
            suffix: "-cloud-amd64",
        },
    },
    Kernel {
        short: "6.12",
        source: Source::Newest {
            prefix: "linux-image-6.12.",
            suffix: "+deb12-cloud-amd64",
        },
    },
];

pub fn by_short(short: &str) -> Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.short == short).with_context(|| {
        let known: Vec<&str> = KERNELS.iter().map(|k| k.short).collect();
        format!("unknown kernel {short:?} (known: {})", known.join(", "))
    })
}

/// A kernel package unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub short: &'static str,
    pub release: String,
    pub root: PathBuf,
}

impl Unpacked {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The cache directory: `NETPROBE_VM_CACHE`, else /var/cache/netprobe/kernels.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NETPROBE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netprobe/kernels"))
}

/// Makes sure `kernel` is downloaded and unpacked in `cache`; downloads
/// nothing when it already is.
pub fn fetch(kernel: &'static Kernel, cache: &Path) -> Result<Unpacked> {
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let package = match kernel.source {
        Source::Pinned { package, .. } => package.to_string(),
        Source::Newest { prefix, suffix } => newest_in_apt(prefix, suffix)?,
    };
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{package} is not a linux-image package"))?
        .to_string();
    let unpacked = Unpacked {
        short: kernel.short,
        root: cache.join(&release),
        release,
    };
    if unpacked.vmlinuz().is_file() {
        println!(
            "ok: kernel {}: {package} ({})",
            kernel.short,
            unpacked.root.display()
        );
        return Ok(unpacked);
    }
    let deb = match find_deb(cache, &package)? {
        Some(deb) => deb,
        None => {
            println!("downloading: kernel {}: {package}", kernel.short);
            download(kernel.source, &package, cache)?;
            find_deb(cache, &package)?.with_context(|| {
                format!(
                    "apt-get download left no {package}_*.deb in {}",
                    cache.display()
                )
            })?
        }
    };
    println!("unpacking: {}", deb.display());
    let partial = cache.join(format!(".{}.partial", unpacked.release));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, &unpacked.root)?;
    if !unpacked.vmlinuz().is_file() {
        bail!(
            "{} holds no {}",
            deb.display(),
            unpacked.vmlinuz().display()
        );
    }
    println!(
        "ok: kernel {}: {package} ({})",
        kernel.short,
        unpacked.root.display()
    );
    Ok(unpacked)
}

/// `PACKAGE_*.deb` in `dir`, the newest if several.
fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
            found.push((entry.metadata()?.modified()?, entry.path()));
        }
    }
    found.sort();
    Ok(found.pop().map(|(_, p)| p))
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        // Downloads land in the cache, which the _apt sandbox user may not write.
        .args(["-o", "APT::Sandbox::User=root"]);
    c
}

fn download(source: Source, package: &str, cache: &Path) -> Result<()> {
    let mut get = apt_get();
    if let Source::Pinned { suite, .. } = source {
        let dir = cache.join(format!("apt-{suite}"));
        let options = private_sources(&dir, suite)?;
        cmd::run(apt_get().args(&options).arg("update"))?;
        get.args(&options);
    }
    cmd::run(get.current_dir(cache).args(["download", package]))
}

/// apt options for a sources list holding only `suite`, with its own lists
/// and cache under `dir` (the machine's apt state is left alone).
fn private_sources(dir: &Path, suite: &str) -> Result<Vec<String>> {
    fs::create_dir_all(dir.join("lists/partial"))?;
    fs::create_dir_all(dir.join("cache/archives/partial"))?;
    let mirror = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ]
    .iter()
    .filter_map(|p| fs::read_to_string(p).ok())
    .find_map(|text| debian_mirror(&text))
    .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let list = dir.join("sources.list");
    fs::write(&list, format!("deb [trusted=yes] {mirror} {suite} main\n"))?;
    let opt = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    Ok([
        opt("Dir::Etc::sourcelist", &list),
        opt("Dir::Etc::sourceparts", Path::new("-")),
        opt("Dir::State::Lists", &dir.join("lists")),
        opt("Dir::Cache", &dir.join("cache")),
    ]
    .concat())
}

/// The Debian mirror in an apt sources file (deb822 or one-line style),
/// skipping the security archive.
pub fn debian_mirror(sources: &str) -> Option<String> {
    sources
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            if let Some(uris) = l.strip_prefix("URIs:") {
                return uris.split_whitespace().next();
            }
            let mut words = l.split_whitespace().filter(|w| !w.starts_with('['));
            (words.next() == Some("deb"))
                .then(|| words.next())
                .flatten()
        })
        .find(|uri| uri.starts_with("http") && !uri.contains("security"))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

/// Asks apt for the newest `PREFIX<n>SUFFIX`; runs `apt-get update` once
/// when the lists have none.
fn newest_in_apt(prefix: &str, suffix: &str) -> Result<String> {
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("cannot run apt-cache (these kernels are Debian packages)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(name) = newest(text.lines(), prefix, suffix) {
            return Ok(name);
        }
        if attempt == 0 {
            println!("installing: apt lists (no {prefix}N{suffix} package known yet)");
            cmd::run(apt_get().arg("update"))?;
        }
    }
    bail!("apt knows no package named {prefix}N{suffix}")
}

/// The name `PREFIX<n>SUFFIX` with the largest number `n`.
pub fn newest<'a>(
    names: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    suffix: &str,
) -> Option<String> {
    names
        .into_iter()
        .map(str::trim)
        .filter_map(|name| {
            let n = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((n.parse::<u64>().ok()?, name))
        })
        .max()
        .map(|(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_picks_the_highest_abi_not_the_last_in_text_order() {
        // Part of `apt-cache pkgnames linux-image-6.1.0-` on Debian 12.
        let names = "linux-image-6.1.0-9-cloud-amd64\n\
                     linux-image-6.1.0-56-cloud-amd64\n\
                     linux-image-6.1.0-56-cloud-amd64-dbg\n\
                     linux-image-6.1.0-56-cloud-amd64-unsigned\n\
                     linux-image-6.1.0-100-amd64\n\
                     linux-image-6.1.0-48-cloud-amd64\n";
        assert_eq!(
            newest(names.lines(), "linux-image-6.1.0-", "-cloud-amd64").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let names = [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.99+deb12-cloud-amd64",
            "linux-image-6.12-cloud-amd64",
            "linux-image-6.12.117+deb12-amd64",
        ];
        assert_eq!(
            newest(names, "linux-image-6.12.", "+deb12-cloud-amd64").as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(newest([], "linux-image-6.12.", "-cloud-amd64"), None);
    }

    #[test]
    fn mirror_from_deb822_or_one_line_sources() {
        let deb822 = "Types: deb\n\
                      # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\n\n\
                      Types: deb\n\
                      URIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            debian_mirror(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "deb http://security.debian.org/debian-security bookworm-security main\n\
                        deb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            debian_mirror(one_line).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(debian_mirror("# nothing\n"), None);
    }

    #[test]
    fn kernels_are_known_by_short_name() {
        assert_eq!(by_short("6.1").unwrap().short, "6.1");
        let err = by_short("4.19").unwrap_err().to_string();
        assert!(err.contains("5.10, 6.1, 6.12"), "{err}");
    }
}
