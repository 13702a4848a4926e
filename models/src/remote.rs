//! The registry on S3-compatible object storage: one record of every model for a fleet of
//! replicas, each of which keeps its local repository as a cache of it.
//!
//! ```text
//! <prefix>/<model>/registry.json        the model's record (`ModelMeta`), as on local disk
//! <prefix>/<model>/blobs/sha256/<hex>   artifacts and version configs, content-addressed
//! ```
//!
//! The record is the only object that changes, and every change to it is a conditional
//! write (`If-Match` with the ETag it was read at, or `If-None-Match: *` to create it): a
//! replica reads the record, applies its change and writes it back; if another replica wrote
//! in between, the store refuses the write (412) and the change is redone on the newer
//! record. So two uploads through two replicas get two version numbers, and an alias move
//! never silently undoes another.
//!
//! An artifact is uploaded (multipart, streamed from the staged file) before the version that
//! names it is recorded, so every version a replica sees has its bytes in the store. Replicas
//! download what they serve into their cache, verify its SHA-256 and load from the cache.
//! Each replica polls every record (a conditional GET, answered 304 while unchanged) and
//! applies a change through the same load-then-swap as a local one (`Repository::refresh`).
//!
//! The store is reached through `object_store`; its futures run on a small runtime of this
//! module's own, so the repository's blocking callers (upload threads, the validation thread,
//! the poller) can wait on them wherever they run.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::registry::{META_FILE, ModelMeta};

/// How often replicas look for changes made by others, unless configured.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// Marks a directory as a registry's cache (and names the registry).
const CACHE_MARKER: &str = ".inferd-registry-cache";

/// Multipart part size for artifacts (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight per upload.
const PARTS_IN_FLIGHT: usize = 4;

/// Where the registry lives and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `s3://bucket[/prefix]`.
    pub url: String,
    /// `object_store`'s S3 settings (`endpoint`, `region`, `access_key_id`, `allow_http`, ...),
    /// over those read from the standard `AWS_*` environment variables.
    pub options: Vec<(String, String)>,
    /// How often to look for changes made through other replicas.
    pub poll: Duration,
}

/// A model record as read from the store.
#[derive(Debug, Clone)]
pub struct Record {
    pub meta: ModelMeta,
    /// What a conditional write of the next change must match.
    pub version: UpdateVersion,
}

/// The answer to "has this record changed since I read it?".
#[derive(Debug)]
pub enum Fetched {
    Unchanged,
    /// No record: the model does not exist (or no longer does).
    Absent,
    Changed(Record),
}

/// The registry's home in object storage.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    poll: Duration,
    /// Runs the store's futures; `Option` so `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // The runtime may be dropped from async code (the server's shutdown): don't block.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Remote {
    /// Connects to `s3://bucket/prefix` (credentials and endpoint from the environment and
    /// `opts.options`). Nothing is read yet.
    pub fn open(opts: &RemoteOptions) -> Result<Remote> {
        let rest = opts.url.strip_prefix("s3://").ok_or_else(|| {
            Error::Config(format!(
                "registry URL '{}' is not supported: use s3://bucket/prefix (any S3-compatible store; set its endpoint with --registry-option endpoint=URL)",
                opts.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "registry URL '{}' names no bucket: use s3://bucket/prefix",
                opts.url
            )));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in &opts.options {
            let k = key.parse().map_err(|_| {
                Error::Config(format!(
                    "unknown registry option '{key}': use object_store's S3 settings (endpoint, region, access_key_id, secret_access_key, session_token, allow_http, virtual_hosted_style_request, ...)"
                ))
            })?;
            builder = builder.with_config(k, value);
        }
        let store = builder
            .build()
            .map_err(|e| Error::Config(format!("registry {}: {e}", opts.url)))?;
        Remote::with_store(Arc::new(store), prefix, &opts.url, opts.poll)
    }

    /// A registry on any `ObjectStore` (the tests use the in-memory one).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        url: &str,
        poll: Duration,
    ) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the registry's I/O thread: {e}")))?;
        Ok(Remote {
            store,
            prefix: ObjectPath::from(prefix),
            url: url.to_owned(),
            poll,
            rt: Some(rt),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Makes `dir` this registry's cache: an empty directory, or one that already is. Anything
    /// else (a model repository of its own, another registry's cache) is refused, since the
    /// cache's content is replaced by the registry's.
    pub fn claim_cache(&self, dir: &Path) -> Result<()> {
        let marker = dir.join(CACHE_MARKER);
        let io = |e: std::io::Error| {
            Error::Io(format!(
                "cannot use {} as the registry's cache: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        match std::fs::read_to_string(&marker) {
            Ok(url) if url.trim() == self.url => return Ok(()),
            Ok(url) => {
                return Err(Error::Config(format!(
                    "{} caches the registry {}, not {}: give each registry its own cache directory",
                    dir.display(),
                    url.trim(),
                    self.url
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(Error::Config(format!(
                "{} is not empty and is not a cache of the registry {}: a registry's cache is rewritten to match it, so give an empty directory (or none: DATA_DIR/registry-cache)",
                dir.display(),
                self.url
            )));
        }
        crate::registry::write_atomic(&marker, self.url.as_bytes())
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("runtime lives until drop")
            .block_on(f)
    }

    fn err(&self, what: &str, e: object_store::Error) -> Error {
        Error::Io(format!("object storage {}: {what}: {e}", self.url))
    }

    fn record_path(&self, model: &str) -> ObjectPath {
        self.prefix.clone().join(model).join(META_FILE)
    }

    fn blob_path(&self, model: &str, sha256: &str) -> ObjectPath {
        self.prefix
            .clone()
            .join(model)
            .join("blobs")
            .join("sha256")
            .join(sha256)
    }

    /// The models that have a record (a model whose first upload is still in flight has
    /// only blobs, and is not listed).
    pub fn models(&self) -> Result<BTreeSet<String>> {
        self.block(async {
            let listed = self
                .store
                .list_with_delimiter(Some(&self.prefix))
                .await
                .map_err(|e| self.err("cannot list the models", e))?;
            let mut names = BTreeSet::new();
            for dir in listed.common_prefixes {
                let Some(name) = dir.filename() else { continue };
                match self.store.head(&self.record_path(name)).await {
                    Ok(_) => {
                        names.insert(name.to_owned());
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.err(&format!("cannot read model '{name}'"), e)),
                }
            }
            Ok(names)
        })
    }

    /// Reads a model's record, unless its ETag is still `seen`.
    pub fn fetch(&self, model: &str, seen: Option<&str>) -> Result<Fetched> {
        self.block(async {
            let opts = GetOptions {
                if_none_match: seen.map(str::to_owned),
                ..Default::default()
            };
            let got = match self.store.get_opts(&self.record_path(model), opts).await {
                Ok(got) => got,
                Err(object_store::Error::NotModified { .. }) => return Ok(Fetched::Unchanged),
                Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Absent),
                Err(e) => return Err(self.err(&format!("cannot read model '{model}'"), e)),
            };
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            if seen.is_some() && version.e_tag.as_deref() == seen {
                return Ok(Fetched::Unchanged);
            }
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.err(&format!("cannot read model '{model}'"), e))?;
            let meta = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!(
                    "object storage {}: the record of model '{model}' is corrupt: {e}",
                    self.url
                ))
            })?;
            Ok(Fetched::Changed(Record { meta, version }))
        })
    }

    /// Writes `meta` as the model's record if it is still at `read` (`None`: if it does not
    /// exist yet). Returns the new record's version, or `None` when another writer got there
    /// first and the change must be redone on a fresh read.
    pub fn commit(
        &self,
        model: &str,
        meta: &ModelMeta,
        read: Option<&UpdateVersion>,
    ) -> Result<Option<UpdateVersion>> {
        let bytes = serde_json::to_vec_pretty(meta).expect("metadata serialises");
        let mode = match read {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        self.block(async {
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&self.record_path(model), PutPayload::from(bytes), opts)
                .await
            {
                Ok(done) => Ok(Some(UpdateVersion {
                    e_tag: done.e_tag,
                    version: done.version,
                })),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => Ok(None),
                Err(e) => Err(self.err(&format!("cannot write the record of model '{model}'"), e)),
            }
        })
    }

    /// Uploads a file as the blob `sha256` of `model` (multipart, streamed), unless the store
    /// already has it.
    pub fn put_blob(&self, model: &str, file: &Path, sha256: &str) -> Result<()> {
        let path = self.blob_path(model, sha256);
        let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", file.display()));
        self.block(async {
            match self.store.head(&path).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("cannot read an artifact", e)),
            }
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.err("cannot start the artifact upload", e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut f = std::fs::File::open(file).map_err(io)?;
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                // Blocking reads are fine here: the future runs on the (blocking) caller's thread.
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(self.err("cannot upload the artifact", e));
                }
                writer.write(&buf[..n]);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.err("cannot upload the artifact", e))?;
            Ok(())
        })
    }

    /// Uploads small bytes (a version's config) as a blob; returns its digest.
    pub fn put_small_blob(&self, model: &str, bytes: &[u8]) -> Result<String> {
        let sha256 = crate::registry::hex(&Sha256::digest(bytes));
        let path = self.blob_path(model, &sha256);
        self.block(self.store.put(&path, PutPayload::from(bytes.to_vec())))
            .map_err(|e| self.err("cannot upload a version's config", e))?;
        Ok(sha256)
    }

    /// Downloads blob `sha256` of `model` to `dest`, checking the digest: a blob that does
    /// not hash to its name is refused and nothing is left at `dest`.
    pub fn get_blob(&self, model: &str, sha256: &str, dest: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Io(format!("cannot write {}: {e}", dest.display()));
        let path = self.blob_path(model, sha256);
        let partial = dest.with_extension("partial");
        let result = self.block(async {
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.err(&format!("cannot read artifact {sha256}"), e))?;
            let mut stream = got.into_stream();
            let mut f = std::fs::File::create(&partial).map_err(io)?;
            let mut hasher = Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| self.err(&format!("cannot read artifact {sha256}"), e))?;
                hasher.update(&chunk);
                f.write_all(&chunk).map_err(io)?;
            }
            f.sync_all().map_err(io)?;
            let got = crate::registry::hex(&hasher.finalize());
            if got != sha256 {
                return Err(Error::Io(format!(
                    "object storage {}: artifact {sha256} of model '{model}' is corrupt: its bytes hash to {got}",
                    self.url
                )));
            }
            std::fs::rename(&partial, dest).map_err(io)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Deletes a model's record, then its blobs.
    pub fn delete_model(&self, model: &str) -> Result<()> {
        self.block(async {
            match self.store.delete(&self.record_path(model)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&format!("cannot delete model '{model}'"), e)),
            }
            let mut listed = self.store.list(Some(&self.prefix.clone().join(model)));
            while let Some(meta) = listed.next().await {
                let meta = meta.map_err(|e| self.err("cannot list a model's artifacts", e))?;
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.err("cannot delete an artifact", e)),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::VersionStatus;
    use crate::repository::{Repository, RepositoryOptions};
    use object_store::memory::InMemory;

    fn remote(store: &Arc<InMemory>) -> Arc<Remote> {
        let store: Arc<dyn ObjectStore> = Arc::clone(store) as _;
        Arc::new(Remote::with_store(store, "fleet", "memory://fleet", DEFAULT_POLL).unwrap())
    }

    fn replica(store: &Arc<InMemory>, cache: &Path) -> Arc<Repository> {
        let remote = remote(store);
        remote.claim_cache(cache).unwrap();
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        let opts = RepositoryOptions {
            root: cache.to_owned(),
            cores: 1,
            remote: Some(remote),
        };
        Arc::new(Repository::new(opts, metrics))
    }

    fn upload(repo: &Arc<Repository>, bytes: &[u8]) -> u64 {
        let mut up = repo.begin_upload("m", 1 << 20).unwrap();
        up.write(bytes).unwrap();
        let staged = up.finish(None).unwrap();
        repo.add_version("m", staged, None, Default::default())
            .unwrap()
    }

    #[test]
    fn a_bad_url_or_setting_is_refused_by_name() {
        let open = |url: &str, options: &[(&str, &str)]| {
            Remote::open(&RemoteOptions {
                url: url.into(),
                options: options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                poll: DEFAULT_POLL,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(open("s3://", &[]).contains("names no bucket"));
        assert!(open("gs://bucket", &[]).contains("use s3://bucket/prefix"));
        let e = open("s3://bucket/p", &[("endpoint_of_doom", "x")]);
        assert!(
            e.contains("unknown registry option 'endpoint_of_doom'"),
            "{e}"
        );
    }

    #[test]
    fn a_write_from_a_stale_read_is_refused() {
        let store = Arc::new(InMemory::new());
        let r = remote(&store);
        let mut meta = ModelMeta::default();
        let first = r.commit("m", &meta, None).unwrap().expect("created");
        assert!(
            r.commit("m", &meta, None).unwrap().is_none(),
            "created twice"
        );
        meta.next_version = 2;
        let second = r
            .commit("m", &meta, Some(&first))
            .unwrap()
            .expect("updated");
        assert!(
            r.commit("m", &meta, Some(&first)).unwrap().is_none(),
            "stale write"
        );
        match r.fetch("m", second.e_tag.as_deref()).unwrap() {
            Fetched::Unchanged => {}
            other => panic!("expected unchanged, got {other:?}"),
        }
        match r.fetch("m", first.e_tag.as_deref()).unwrap() {
            Fetched::Changed(rec) => assert_eq!(rec.meta.next_version, 2),
            other => panic!("expected the newer record, got {other:?}"),
        }
        assert!(matches!(r.fetch("other", None).unwrap(), Fetched::Absent));
    }

    #[test]
    fn a_blob_that_does_not_hash_to_its_name_is_refused() {
        let store = Arc::new(InMemory::new());
        let r = remote(&store);
        let dir = tempfile::tempdir().unwrap();
        let good = r.put_small_blob("m", b"config").unwrap();
        r.get_blob("m", &good, &dir.path().join("good")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("good")).unwrap(), b"config");
        let forged = "0".repeat(64);
        r.block(store.put(&r.blob_path("m", &forged), PutPayload::from_static(b"x")))
            .unwrap();
        let e = r
            .get_blob("m", &forged, &dir.path().join("bad"))
            .unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left behind"
        );
    }

    #[test]
    fn a_cache_is_an_empty_directory_or_this_registrys_own() {
        let store = Arc::new(InMemory::new());
        let r = remote(&store);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        r.claim_cache(&cache).unwrap();
        r.claim_cache(&cache).unwrap();
        let other =
            Remote::with_store(Arc::clone(&store) as _, "x", "memory://other", DEFAULT_POLL)
                .unwrap();
        let e = other.claim_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("caches the registry memory://fleet"), "{e}");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("model/1")).unwrap();
        let e = r.claim_cache(&repo).unwrap_err().to_string();
        assert!(e.contains("is not empty"), "{e}");
        assert!(repo.join("model/1").is_dir());
    }

    /// The in-memory store applies a conditional write atomically (S3's semantics), so this
    /// races the record for real: every upload must get its own number.
    #[test]
    fn racing_uploads_through_two_replicas_get_distinct_versions() {
        let store = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let a = replica(&store, &dir.path().join("a"));
        let b = replica(&store, &dir.path().join("b"));
        let per_replica = 6;
        let versions: Vec<u64> = std::thread::scope(|s| {
            let threads: Vec<_> = [&a, &b]
                .into_iter()
                .enumerate()
                .map(|(i, repo)| {
                    s.spawn(move || {
                        (0..per_replica)
                            .map(|k| upload(repo, format!("artifact {i}/{k}").as_bytes()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=2 * per_replica as u64).collect::<Vec<_>>());

        // The validations (which fail: the artifacts are not models) are recorded too,
        // each on the newest record; then both replicas mirror the same record.
        let r = remote(&store);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let record = loop {
            let Fetched::Changed(rec) = r.fetch("m", None).unwrap() else {
                panic!("no record")
            };
            if rec
                .meta
                .versions
                .values()
                .all(|v| v.status == VersionStatus::Failed)
            {
                break rec;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "validations not recorded"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(record.meta.versions.len(), 2 * per_replica);
        assert_eq!(record.meta.next_version, 2 * per_replica as u64 + 1);
        for repo in [&a, &b] {
            repo.refresh().unwrap();
            assert_eq!(repo.model("m").unwrap().meta, record.meta);
        }
    }
}
