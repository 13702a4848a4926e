//! The set of collections under one directory, and the background thread that compacts and
//! snapshots them.
//!
//! ```text
//! <root>/<collection>/collection.json   parameters (written once, atomically, at creation)
//!                     snapshot.bin      live points at some log sequence number
//!                     wal-<seq>.log     the write-ahead log since then
//! ```
//!
//! A collection is created in `<root>/.tmp-<name>` and renamed into place; it is deleted by
//! renaming it to `<root>/.trash-<name>-<nanos>` before removing the files, so a crash leaves
//! either the whole collection or none (leftovers are cleared at start-up).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::collection::{Collection, CollectionInfo, PARAMS_FILE, Thresholds};
use crate::config::{CreateCollection, validate_name};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::point::{PointId, PointInput, Record, UpdateResult};
use crate::search::{ScoredPoint, SearchRequest};
use crate::wal::sync_dir;

/// Tuning of the background work.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Run the maintenance thread (graph freezes, compactions, periodic snapshots). Tests turn
    /// it off and call [`Collection::freeze`] / [`Collection::compact`] /
    /// [`Collection::snapshot`] themselves.
    pub background: bool,
    /// How often the maintenance thread looks at the collections.
    pub maintenance_interval: Duration,
    /// Snapshot when the log since the last snapshot is this large...
    pub snapshot_wal_bytes: u64,
    /// ... or when it is not empty and the last snapshot is this old.
    pub snapshot_interval: Duration,
    /// Compact when tombstones are this share of the slots...
    pub compact_dead_fraction: f64,
    /// ... and at least this many.
    pub compact_min_dead: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            background: true,
            maintenance_interval: Duration::from_secs(5),
            snapshot_wal_bytes: 64 << 20,
            snapshot_interval: Duration::from_secs(300),
            compact_dead_fraction: 0.2,
            compact_min_dead: 1_000,
        }
    }
}

struct Inner {
    root: PathBuf,
    embedder: Arc<dyn Embedder>,
    metrics: Metrics,
    opts: StoreOptions,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Wakes the maintenance thread; `true` asks it to stop.
    wake: (Mutex<(bool, bool)>, Condvar),
}

pub struct Store {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            compact_dead_fraction: self.opts.compact_dead_fraction,
            compact_min_dead: self.opts.compact_min_dead,
            snapshot_wal_bytes: self.opts.snapshot_wal_bytes,
            snapshot_interval: self.opts.snapshot_interval,
        }
    }

    fn get(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))
    }

    fn maintain(&self) {
        let all: Vec<Arc<Collection>> = self
            .collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for c in all {
            if c.needs_compaction()
                && let Err(e) = c.compact()
            {
                tracing::warn!(collection = c.name(), error = %e, "compaction failed");
            }
            if c.needs_freeze()
                && let Err(e) = c.freeze()
            {
                tracing::warn!(collection = c.name(), error = %e, "freezing the graph failed");
            }
            if c.needs_snapshot()
                && let Err(e) = c.snapshot()
            {
                tracing::warn!(collection = c.name(), error = %e, "snapshot failed");
            }
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Store {
    /// Opens (or creates) the store under `root` with the default options, registering its
    /// metrics in `registry`.
    pub fn open(
        root: &Path,
        embedder: Arc<dyn Embedder>,
        registry: &prometheus::Registry,
    ) -> Result<Store> {
        let metrics = Metrics::new(Some(registry))
            .map_err(|e| Error::Internal(format!("registering metrics: {e}")))?;
        Store::open_with(root, embedder, metrics, StoreOptions::default())
    }

    /// Opens (or creates) the store under `root`: every collection is loaded (snapshot, then
    /// log) and indexed before this returns.
    pub fn open_with(
        root: &Path,
        embedder: Arc<dyn Embedder>,
        metrics: Metrics,
        opts: StoreOptions,
    ) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("creating {}", root.display())))?;
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            embedder,
            metrics,
            opts,
            collections: RwLock::new(BTreeMap::new()),
            wake: (Mutex::new((false, false)), Condvar::new()),
        });
        let mut found = BTreeMap::new();
        for e in
            std::fs::read_dir(root).map_err(Error::io(format!("listing {}", root.display())))?
        {
            let e = e.map_err(Error::io(format!("listing {}", root.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                tracing::info!(path = %path.display(), "removing a leftover of an interrupted create or delete");
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            if !path.join(PARAMS_FILE).is_file() || validate_name(&name).is_err() {
                continue;
            }
            let c = Collection::open(
                &name,
                &path,
                Arc::clone(&inner.embedder),
                inner.metrics.clone(),
                inner.thresholds(),
            )?;
            found.insert(name, Arc::new(c));
        }
        *inner.collections.write().unwrap_or_else(|e| e.into_inner()) = found;
        let thread = inner.opts.background.then(|| {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("vector-maintenance".into())
                .spawn(move || {
                    let (lock, cv) = &inner.wake;
                    loop {
                        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if !g.0 && !g.1 {
                            g = cv
                                .wait_timeout(g, inner.opts.maintenance_interval)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        if g.0 {
                            return;
                        }
                        g.1 = false;
                        drop(g);
                        inner.maintain();
                    }
                })
                .expect("spawning the vector maintenance thread")
        });
        Ok(Store {
            inner,
            thread: Mutex::new(thread),
        })
    }

    fn nudge(&self) {
        let (lock, cv) = &self.inner.wake;
        lock.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        cv.notify_one();
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.inner.get(name)
    }

    pub fn list(&self) -> Vec<CollectionInfo> {
        let all: Vec<Arc<Collection>> = self
            .inner
            .collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.iter().map(|c| c.info()).collect()
    }

    pub fn info(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.inner.get(name)?.info())
    }

    /// Creates a collection; [`Error::CollectionExists`] if the name is taken.
    pub fn create(&self, name: &str, req: CreateCollection) -> Result<CollectionInfo> {
        validate_name(name)?;
        let params = req.into_params()?;
        let inner = &self.inner;
        let mut all = inner.collections.write().unwrap_or_else(|e| e.into_inner());
        if all.contains_key(name) {
            return Err(Error::CollectionExists(name.to_owned()));
        }
        let tmp = inner.root.join(format!(".tmp-{name}"));
        let dir = inner.root.join(name);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let json = serde_json::to_vec_pretty(&params).expect("parameters serialise");
        let pfile = tmp.join(PARAMS_FILE);
        std::fs::write(&pfile, json)
            .and_then(|_| std::fs::File::open(&pfile)?.sync_all())
            .map_err(Error::io(format!("writing {}", pfile.display())))?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, &dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        sync_dir(&inner.root)?;
        let c = Arc::new(Collection::open(
            name,
            &dir,
            Arc::clone(&inner.embedder),
            inner.metrics.clone(),
            inner.thresholds(),
        )?);
        all.insert(name.to_owned(), Arc::clone(&c));
        drop(all);
        tracing::info!(collection = name, ?params, "collection created");
        Ok(c.info())
    }

    /// Deletes a collection and its files.
    pub fn delete(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        let c = {
            let mut all = inner.collections.write().unwrap_or_else(|e| e.into_inner());
            all.remove(name)
                .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))?
        };
        c.mark_deleted();
        inner.metrics.forget(name);
        let dir = inner.root.join(name);
        let trash = inner.root.join(format!(".trash-{name}-{}", nanos()));
        std::fs::rename(&dir, &trash).map_err(Error::io(format!("removing {}", dir.display())))?;
        sync_dir(&inner.root)?;
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted collection's files");
        }
        tracing::info!(collection = name, "collection deleted");
        Ok(())
    }

    pub fn upsert(&self, name: &str, points: Vec<PointInput>) -> Result<UpdateResult> {
        let c = self.inner.get(name)?;
        let r = c.upsert(points);
        if c.needs_compaction() || c.needs_freeze() {
            self.nudge();
        }
        r
    }

    pub fn delete_points(&self, name: &str, ids: Vec<PointId>) -> Result<UpdateResult> {
        let c = self.inner.get(name)?;
        let r = c.delete(ids)?;
        if c.needs_compaction() {
            self.nudge();
        }
        Ok(r)
    }

    pub fn get_point(&self, name: &str, id: &PointId, with_vector: bool) -> Result<Record> {
        self.inner.get(name)?.get(id, with_vector)
    }

    /// [`Collection::scroll`].
    pub fn scroll(
        &self,
        name: &str,
        filter: Option<&crate::Filter>,
        from: Option<&PointId>,
        limit: usize,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        self.inner
            .get(name)?
            .scroll(filter, from, limit, with_payload, with_vector)
    }

    /// [`Collection::count`].
    pub fn count(&self, name: &str, filter: Option<&crate::Filter>) -> Result<usize> {
        self.inner.get(name)?.count(filter)
    }

    pub fn search(&self, name: &str, req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.inner.get(name)?.search(req)
    }

    /// Several searches on one collection; the first failing one fails the batch.
    pub fn search_batch(
        &self,
        name: &str,
        reqs: Vec<SearchRequest>,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        let c = self.inner.get(name)?;
        reqs.into_iter().map(|r| c.search(r)).collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let (lock, cv) = &self.inner.wake;
        lock.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        cv.notify_one();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}
