//! The registry's record of a model: version metadata and aliases, kept in
//! `<repository>/<model>/registry.json` beside Triton's layout and written atomically.
//!
//! Versions are immutable and numbered per model; a number is never reused, even after the
//! version is deleted. Aliases (`production`, `staging`, ...) point at versions and keep the
//! history of their moves, so a rollback is "move it back".
//!
//! Uploads stream into `<model>/.uploads/` with a size limit and a running SHA-256, and only a
//! complete, digest-checked artifact is renamed into a version directory; partial uploads left
//! by a crash are discarded at start-up.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::signature::{Signature, TensorSpec};

pub const META_FILE: &str = "registry.json";
pub const UPLOADS_DIR: &str = ".uploads";

/// Where a version stands in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionStatus {
    /// Uploaded; its trial load is running.
    Pending,
    /// Trial-loaded and warmed up: servable.
    Ready,
    /// The trial load failed; never served.
    Failed,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Pending => "PENDING",
            VersionStatus::Ready => "READY",
            VersionStatus::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

impl From<&TensorSpec> for TensorMeta {
    fn from(t: &TensorSpec) -> Self {
        TensorMeta {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_owned(),
            shape: t.shape.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub status: VersionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub created_ms: u64,
    pub size: u64,
    pub sha256: String,
    pub backend: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub inputs: Vec<TensorMeta>,
    #[serde(default)]
    pub outputs: Vec<TensorMeta>,
    /// The digest of the `config.toml` uploaded with the version, in a registry kept in
    /// object storage (a local registry keeps that file in the version directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
}

impl VersionMeta {
    pub fn set_signature(&mut self, sig: &Signature) {
        self.inputs = sig.inputs.iter().map(TensorMeta::from).collect();
        self.outputs = sig.outputs.iter().map(TensorMeta::from).collect();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMove {
    pub version: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMeta {
    pub version: u64,
    /// Every position the alias has had, oldest first (the last is the current one).
    #[serde(default)]
    pub history: Vec<AliasMove>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The number the next upload gets.
    #[serde(default)]
    pub next_version: u64,
    #[serde(default)]
    pub versions: BTreeMap<u64, VersionMeta>,
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasMeta>,
}

impl ModelMeta {
    /// Reads `<model_dir>/registry.json`; a model directory prepared by hand has none.
    pub fn load(model_dir: &Path) -> Result<ModelMeta> {
        let path = model_dir.join(META_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelMeta::default()),
            Err(e) => Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
        }
    }

    pub fn save(&self, model_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("metadata serialises");
        write_atomic(&model_dir.join(META_FILE), &bytes)
    }

    /// Aliases pointing at `version`.
    pub fn aliases_of(&self, version: u64) -> Vec<&str> {
        self.aliases
            .iter()
            .filter(|(_, a)| a.version == version)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Points `alias` at `version`, recording the move.
    pub fn set_alias(&mut self, alias: &str, version: u64) {
        let mv = AliasMove {
            version,
            at_ms: now_ms(),
        };
        let a = self
            .aliases
            .entry(alias.to_owned())
            .or_insert_with(|| AliasMeta {
                version,
                history: Vec::new(),
            });
        a.version = version;
        a.history.push(mv);
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a file so that readers (and a crash) see the old content or the new, never a mix:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().expect("path has a parent");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename durable. Best effort: not every filesystem supports fsync on directories.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Alias names: like model names, but not purely numeric (those are versions).
pub fn validate_alias(alias: &str) -> Result<()> {
    crate::repository::validate_name(alias).map_err(|_| {
        Error::InvalidInput(format!(
            "invalid alias '{}': use 1-128 characters from A-Z a-z 0-9 - _ . (not starting with '.')",
            alias.escape_debug()
        ))
    })?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidInput(format!(
            "invalid alias '{alias}': a number would be read as a version"
        )));
    }
    Ok(())
}

/// An artifact being received: streamed to a file in `<model>/.uploads/`, hashed on the way.
pub struct Upload {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
    done: bool,
}

/// A complete upload, digest checked, waiting to become a version.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

impl Upload {
    pub fn begin(model_dir: &Path, limit: u64) -> Result<Upload> {
        let dir = model_dir.join(UPLOADS_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!(
            "{}-{}-{}.partial",
            now_ms(),
            std::process::id(),
            UPLOAD_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?;
        Ok(Upload {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
            limit,
            done: false,
        })
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(Error::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|e| Error::Io(format!("cannot write the upload: {e}")))
    }

    /// Completes the upload, checking `expected` (hex SHA-256) if given.
    pub fn finish(mut self, expected: Option<&str>) -> Result<Staged> {
        if self.size == 0 {
            return Err(Error::InvalidInput(
                "the upload is empty: send the model file as the body".into(),
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| Error::Io(format!("cannot write the upload: {e}")))?;
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        if let Some(want) = expected.filter(|w| !w.eq_ignore_ascii_case(&sha256)) {
            return Err(Error::InvalidInput(format!(
                "SHA-256 mismatch: the client expected {want}, the server received {sha256} ({} bytes); the upload was discarded",
                self.size
            )));
        }
        self.done = true;
        Ok(Staged {
            path: self.path.clone(),
            sha256,
            size: self.size,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes what crashed uploads left behind.
pub fn discard_partial_uploads(model_dir: &Path) {
    let dir = model_dir.join(UPLOADS_DIR);
    if dir.is_dir() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove partial uploads");
        } else {
            tracing::info!(dir = %dir.display(), "discarded partial uploads");
        }
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read as _;
    let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_hashes_limits_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let mut u = Upload::begin(d.path(), 10).unwrap();
        u.write(b"abc").unwrap();
        let s = u
            .finish(Some(
                "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            ))
            .unwrap();
        assert_eq!(
            s.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.size, 3);
        assert!(s.path.exists());

        let mut u = Upload::begin(d.path(), 4).unwrap();
        u.write(b"abc").unwrap();
        assert!(matches!(u.write(b"de"), Err(Error::TooLarge { limit: 4 })));
        let partial = u.path.clone();
        drop(u);
        assert!(!partial.exists());

        let mut u = Upload::begin(d.path(), 10).unwrap();
        u.write(b"abc").unwrap();
        let e = u.finish(Some("00")).unwrap_err().to_string();
        assert!(e.contains("SHA-256 mismatch"), "{e}");
        discard_partial_uploads(d.path());
        assert!(!d.path().join(UPLOADS_DIR).exists());
    }

    #[test]
    fn meta_round_trips_and_tracks_alias_history() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ModelMeta::load(d.path()).unwrap(), ModelMeta::default());
        let mut m = ModelMeta {
            next_version: 3,
            ..Default::default()
        };
        m.set_alias("production", 1);
        m.set_alias("production", 2);
        m.save(d.path()).unwrap();
        let back = ModelMeta::load(d.path()).unwrap();
        assert_eq!(back, m);
        let h: Vec<u64> = back.aliases["production"]
            .history
            .iter()
            .map(|h| h.version)
            .collect();
        assert_eq!(h, vec![1, 2]);
        assert_eq!(back.aliases_of(2), vec!["production"]);
        std::fs::write(d.path().join(META_FILE), b"{broken").unwrap();
        assert!(
            ModelMeta::load(d.path())
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
    }

    #[test]
    fn aliases_are_validated() {
        assert!(validate_alias("production").is_ok());
        assert!(validate_alias("12").is_err());
        assert!(validate_alias("../x").is_err());
    }
}
