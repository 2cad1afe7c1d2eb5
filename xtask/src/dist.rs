//! `cargo xtask dist`: the static release binary and an OCI image archive
//! that holds only it, written directly (no registry, no image builder).
//!
//! The archive is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) with Docker's `manifest.json` beside it, the shape
//! `docker save` writes since Docker 25: `podman load`, `docker load` and
//! `ctr images import` all read it. Every timestamp is the last commit's,
//! so the same source gives the same digests.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{cmd, vm};

/// Where the binary lies in the image (the DaemonSet's `command`).
pub const BINARY_PATH: &str = "usr/local/bin/netprobe";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Builds the static binary and writes target/dist/netprobe-VERSION.oci.tar.
pub fn run() -> Result<()> {
    let version = netprobe_version()?;
    let built = vm::release_static()?;
    let out = cmd::target_dir()?.join("dist");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let binary = out.join("netprobe");
    fs::copy(&built, &binary)
        .with_context(|| format!("cannot copy {} to {}", built.display(), binary.display()))?;
    let archive = out.join(format!("netprobe-{version}.oci.tar"));
    let written = write_archive(&binary, &version, &archive)?;
    println!(
        "xtask: dist: {} ({} bytes, static)",
        binary.display(),
        fs::metadata(&binary)?.len()
    );
    println!(
        "xtask: dist: {} ({} bytes, {}): image {}, manifest {}, image id {}",
        archive.display(),
        written.size,
        written.archive_digest,
        written.reference,
        written.manifest_digest,
        written.config_digest,
    );
    println!(
        "xtask: dist: load it with `podman load -i {0}`, `docker load -i {0}` or `ctr -n k8s.io images import {0}`",
        archive.display()
    );
    Ok(())
}

/// The image of the static `binary`, tagged `tag`, written to `archive`.
pub fn write_archive(binary: &Path, tag: &str, archive: &Path) -> Result<Written> {
    let image = Image {
        name: "netprobe".into(),
        tag: tag.into(),
        binary: fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?,
        created: commit_time(),
    };
    let written = image.archive()?;
    fs::write(archive, &written.tar)
        .with_context(|| format!("cannot write {}", archive.display()))?;
    Ok(written)
}

/// netprobe's version, from its manifest through cargo.
fn netprobe_version() -> Result<String> {
    let meta: Value =
        serde_json::from_slice(&cmd::metadata()?).context("cargo metadata printed no JSON")?;
    version_of(&meta, "netprobe")
}

fn version_of(meta: &Value, package: &str) -> Result<String> {
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == package)
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .with_context(|| format!("cargo metadata names no package {package}"))
}

/// The last commit's time (seconds since the epoch), else 0 outside git.
fn commit_time() -> u64 {
    let mut c = Command::new("git");
    c.current_dir(cmd::workspace_root())
        .args(["log", "-1", "--format=%ct"]);
    cmd::output(&mut c)
        .ok()
        .and_then(|s| String::from_utf8_lossy(&s).trim().parse().ok())
        .unwrap_or(0)
}

/// One image: a single layer holding the binary.
pub struct Image {
    pub name: String,
    pub tag: String,
    pub binary: Vec<u8>,
    /// Seconds since the epoch, for every timestamp in it.
    pub created: u64,
}

/// The archive and the digests people compare.
pub struct Written {
    pub tar: Vec<u8>,
    pub size: usize,
    /// `sha256:` of the archive file itself.
    pub archive_digest: String,
    pub manifest_digest: String,
    /// The image id podman and Docker show.
    pub config_digest: String,
    /// `netprobe:VERSION`.
    pub reference: String,
}

/// `sha256:HEX` of `bytes`.
fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blob's path in the layout.
fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

impl Image {
    /// `netprobe:0.1.0`; runtimes read it as `localhost/netprobe:0.1.0`
    /// (podman) or `docker.io/library/netprobe:0.1.0` (Docker, containerd).
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The layer: the directories down to the binary, and the binary.
    fn layer(&self) -> Result<Vec<u8>> {
        let mut t = Tar::new(self.created);
        let mut dir = String::new();
        let (parent, _) = BINARY_PATH.rsplit_once('/').context("no directory")?;
        for part in parent.split('/') {
            dir.push_str(part);
            dir.push('/');
            t.dir(&dir)?;
        }
        t.file(BINARY_PATH, 0o755, &self.binary)?;
        t.finish()
    }

    pub fn archive(&self) -> Result<Written> {
        let layer = self.layer()?;
        let layer_digest = digest(&layer);
        let created = rfc3339(self.created);
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": [format!("/{BINARY_PATH}")],
                "Cmd": ["run", "--output", "json"],
                "Labels": {
                    "org.opencontainers.image.title": "netprobe",
                    "org.opencontainers.image.version": self.tag,
                    "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": created, "created_by": "cargo xtask dist"}],
        }))?;
        let config_digest = digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer.len()}],
        }))?;
        let manifest_digest = digest(&manifest);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": format!("docker.io/library/{}", self.reference()),
                    "org.opencontainers.image.ref.name": self.tag,
                },
            }],
        }))?;
        // Docker's own listing, which older `docker load` needs.
        let docker = serde_json::to_vec(&json!([{
            "Config": blob_path(&config_digest),
            "RepoTags": [self.reference()],
            "Layers": [blob_path(&layer_digest)],
        }]))?;
        let mut t = Tar::new(self.created);
        t.dir("blobs/")?;
        t.dir("blobs/sha256/")?;
        for (d, bytes) in [
            (&config_digest, &config),
            (&layer_digest, &layer),
            (&manifest_digest, &manifest),
        ] {
            t.file(&blob_path(d), 0o644, bytes)?;
        }
        t.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        t.file("index.json", 0o644, &index)?;
        t.file("manifest.json", 0o644, &docker)?;
        let tar = t.finish()?;
        Ok(Written {
            size: tar.len(),
            archive_digest: digest(&tar),
            tar,
            manifest_digest,
            config_digest,
            reference: self.reference(),
        })
    }
}

/// `1970-01-01T00:00:00Z` style, from seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm), for 1970 on.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A tar archive in memory, owned by root, every entry at one time.
struct Tar {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Tar {
    fn new(mtime: u64) -> Tar {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Tar { b, mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("tar: {path}"))
    }

    fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<()> {
        let mut h = self.header(tar::EntryType::Regular, mode, bytes.len() as u64);
        self.b
            .append_data(&mut h, path, bytes)
            .with_context(|| format!("tar: {path}"))
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.b.into_inner().context("tar: finishing")
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, io::Read};

    use super::*;

    fn entries(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(tar);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            out.insert(path, bytes);
        }
        out
    }

    fn image() -> Image {
        Image {
            name: "netprobe".into(),
            tag: "0.1.0".into(),
            binary: b"\x7fELF not really".to_vec(),
            created: 1_796_000_000,
        }
    }

    #[test]
    fn the_layout_agrees_with_its_blobs() {
        let w = image().archive().unwrap();
        let files = entries(&w.tar);
        // Every blob is named by its own digest.
        for (path, bytes) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if !hex.is_empty() {
                    assert_eq!(digest(bytes), format!("sha256:{hex}"), "{path}");
                }
            }
        }
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], w.manifest_digest);
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "0.1.0"
        );
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/library/netprobe:0.1.0"
        );
        let manifest_bytes = &files[&blob_path(&w.manifest_digest)];
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], w.config_digest);
        let config: Value = serde_json::from_slice(&files[&blob_path(&w.config_digest)]).unwrap();
        assert_eq!(config["created"], "2026-11-30T00:53:20Z");
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        // The layer holds the binary, executable, and its directories.
        let layer = entries(&files[&blob_path(layer_digest)]);
        assert_eq!(layer[BINARY_PATH], b"\x7fELF not really");
        assert!(layer.contains_key("usr/local/bin/"), "{:?}", layer.keys());
        let mut a = tar::Archive::new(&files[&blob_path(layer_digest)][..]);
        let modes: Vec<(String, u32)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert!(
            modes.contains(&(BINARY_PATH.to_string(), 0o755)),
            "{modes:?}"
        );
        // Docker's listing names the same blobs.
        let docker: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(docker[0]["RepoTags"][0], "netprobe:0.1.0");
        assert_eq!(docker[0]["Config"], blob_path(&w.config_digest));
        assert_eq!(docker[0]["Layers"][0], blob_path(layer_digest));
    }

    #[test]
    fn the_same_input_gives_the_same_digests() {
        let (a, b) = (image().archive().unwrap(), image().archive().unwrap());
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.tar, b.tar);
        let mut other = image();
        other.binary.push(0);
        assert_ne!(other.archive().unwrap().manifest_digest, a.manifest_digest);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
    }

    #[test]
    fn the_version_comes_from_cargo_metadata() {
        let meta = json!({"packages": [{"name": "xtask", "version": "9"}, {"name": "netprobe", "version": "0.1.0"}]});
        assert_eq!(version_of(&meta, "netprobe").unwrap(), "0.1.0");
        assert!(version_of(&meta, "nope").is_err());
    }
}
