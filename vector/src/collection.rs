//! One collection: its points, their HNSW index, its log and snapshots.
//!
//! Points live in *slots*: a flat vector store, ids, payloads and a live flag per slot, and the
//! graph indexes slots. hnsw_rs cannot delete, so a delete or a replacing upsert turns the old
//! slot into a tombstone that searches skip; once tombstones pass a share of the slots,
//! [`Collection::compact`] builds a new graph over the live points in the background and swaps
//! it in, while searches keep answering from the old one and writes keep landing.
//!
//! Locks: `writer` serialises writes (log append, apply, index insert) and is held briefly at
//! the start of a snapshot and at the end of a compaction; `state` is read-locked by searches
//! for their whole run and write-locked only to apply a write or swap in a rebuilt index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::codec::StoredPoint;
use crate::config::{CollectionParams, MAX_EF, Metric};
use crate::distance::{IndexDistance, prepare_vector};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::point::{PointId, PointInput, Record, UpdateResult, check_payload};
use crate::search::{MAX_K, ScoredPoint, SearchRequest, TopK};

/// Most points one [`Collection::scroll`] page returns.
pub const MAX_SCROLL: usize = 10_000;
use crate::snapshot;
use crate::wal::{Op, Replayed, Wal};

pub const PARAMS_FILE: &str = "collection.json";

/// When compactions and snapshots happen (see [`crate::StoreOptions`]).
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub compact_dead_fraction: f64,
    pub compact_min_dead: usize,
    pub snapshot_wal_bytes: u64,
    pub snapshot_interval: Duration,
}

/// Query planning with filters (see `Collection::plan`).
///
/// A filter accepting less than this share of the points is answered by an exact scan of
/// the points it accepts (the graph would have to be walked too far to find enough of them).
const EXACT_BELOW_FRACTION: f64 = 0.05;
/// ... as is one expected to accept no more than this many points.
const EXACT_BELOW_COUNT: f64 = 1_000.0;
/// Above this share, search the graph unfiltered with a wider `ef / share` and filter after.
const POST_FILTER_ABOVE: f64 = 0.5;
/// Slots sampled to estimate a filter's share.
const SAMPLES: usize = 256;

/// What `GET /api/collections/{c}` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    #[serde(flatten)]
    pub params: CollectionParams,
    /// Live points.
    pub points: usize,
    /// Tombstones (deleted or replaced points) awaiting compaction.
    pub deleted: usize,
    /// Points in the HNSW graph (live and tombstones).
    pub indexed: usize,
    /// Of those, the points in the frozen graph searches walk; the others (written since its
    /// last freeze) are scanned exactly until the next one.
    pub frozen: usize,
    /// Estimated resident memory: vectors (three times: the slot store, hnsw_rs's copy and the
    /// frozen graph's), graph links, payloads, the id map.
    pub memory_bytes: u64,
    /// `memory_bytes` per live point (0 when empty): what a point costs beside its
    /// `dim × 4` bytes of raw vector.
    pub bytes_per_point: u64,
    /// A background rebuild (compaction) is running.
    pub rebuilding: bool,
    /// The last operation's sequence number.
    pub operation_id: u64,
}

struct State {
    dim: usize,
    vectors: Vec<f32>,
    ids: Vec<PointId>,
    payloads: Vec<Option<Value>>,
    live: Vec<bool>,
    by_id: HashMap<PointId, usize>,
    dead: usize,
    payload_bytes: usize,
    index: Arc<Index>,
}

impl State {
    fn new(dim: usize, index: Arc<Index>) -> State {
        State {
            dim,
            vectors: Vec::new(),
            ids: Vec::new(),
            payloads: Vec::new(),
            live: Vec::new(),
            by_id: HashMap::new(),
            dead: 0,
            payload_bytes: 0,
            index,
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dim..(slot + 1) * self.dim]
    }

    /// Appends a point in a new slot, turning the id's previous slot into a tombstone.
    fn push(&mut self, id: PointId, vector: &[f32], payload: Option<Value>) -> usize {
        let slot = self.len();
        self.vectors.extend_from_slice(vector);
        self.payload_bytes += payload.as_ref().map_or(0, approx_json_bytes);
        self.payloads.push(payload);
        self.live.push(true);
        if let Some(old) = self.by_id.insert(id.clone(), slot) {
            self.kill(old);
        }
        self.ids.push(id);
        slot
    }

    fn kill(&mut self, slot: usize) {
        if std::mem::replace(&mut self.live[slot], false) {
            self.dead += 1;
            if let Some(p) = self.payloads[slot].take() {
                self.payload_bytes -= approx_json_bytes(&p);
            }
        }
    }

    fn delete(&mut self, id: &PointId) {
        if let Some(slot) = self.by_id.remove(id) {
            self.kill(slot);
        }
    }
}

/// A rough heap size of a JSON value, for the memory estimate.
fn approx_json_bytes(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 32,
        Value::String(s) => 32 + s.len(),
        Value::Array(a) => 32 + a.iter().map(approx_json_bytes).sum::<usize>(),
        Value::Object(o) => {
            32 + o
                .iter()
                .map(|(k, v)| 48 + k.len() + approx_json_bytes(v))
                .sum::<usize>()
        }
    }
}

/// The latest version of each id while replaying, in first-insertion order.
#[derive(Default)]
struct Latest {
    order: Vec<Option<StoredPoint>>,
    pos: HashMap<PointId, usize>,
}

impl Latest {
    fn put(&mut self, p: StoredPoint) {
        match self.pos.get(&p.id) {
            Some(&i) => self.order[i] = Some(p),
            None => {
                self.pos.insert(p.id.clone(), self.order.len());
                self.order.push(Some(p));
            }
        }
    }

    fn delete(&mut self, id: &PointId) {
        if let Some(&i) = self.pos.get(id) {
            self.order[i] = None;
        }
    }
}

struct Writer {
    wal: Wal,
    /// The last sequence number logged.
    seq: u64,
    /// The sequence number the last snapshot holds.
    snapshot_seq: u64,
}

pub struct Collection {
    name: String,
    params: CollectionParams,
    dir: PathBuf,
    dist: IndexDistance,
    embedder: Arc<dyn Embedder>,
    metrics: Metrics,
    thresholds: Thresholds,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    wal_bytes: AtomicU64,
    last_snapshot: Mutex<Instant>,
    deleted: AtomicBool,
    rebuilding: AtomicBool,
    /// Held for a whole snapshot, so two never interleave.
    snapshotting: Mutex<()>,
    /// An index call failed; the next maintenance pass rebuilds the index.
    needs_repair: AtomicBool,
}

// Poisoning would only follow a panic while a lock is held; the data stays consistent
// (every mutation is a few infallible steps), so take the guard anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collection {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the collection stored in `dir`: its parameters, its snapshot, then its log on
    /// top, and builds the index over the live points.
    pub(crate) fn open(
        name: &str,
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        metrics: Metrics,
        thresholds: Thresholds,
    ) -> Result<Collection> {
        let pfile = dir.join(PARAMS_FILE);
        let text = std::fs::read_to_string(&pfile)
            .map_err(Error::io(format!("reading {}", pfile.display())))?;
        let params: CollectionParams = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", pfile.display())))?;
        params.validate()?;

        let started = Instant::now();
        let (snap_seq, points) = snapshot::read(dir)?;
        let mut latest = Latest::default();
        for p in points {
            latest.put(p);
        }
        let mut replayed = 0usize;
        let (wal, last_seq) = Wal::open(dir, snap_seq, |_, op| {
            replayed += 1;
            match op {
                Replayed::Upsert(pts) => pts.into_iter().for_each(|p| latest.put(p)),
                Replayed::Delete(ids) => ids.iter().for_each(|id| latest.delete(id)),
            }
        })?;
        let live: Vec<StoredPoint> = latest.order.into_iter().flatten().collect();
        for p in &live {
            if p.vector.len() != params.dim {
                return Err(Error::Corrupt(format!(
                    "{}: point {} has dimension {}, the collection {}",
                    dir.display(),
                    p.id,
                    p.vector.len(),
                    params.dim
                )));
            }
        }

        let index = Arc::new(Index::new(&params, live.len()));
        let mut st = State::new(params.dim, Arc::clone(&index));
        st.vectors.reserve(live.len() * params.dim);
        for p in live {
            st.push(p.id, &p.vector, p.payload);
        }
        let items: Vec<(&[f32], usize)> = (0..st.len()).map(|s| (st.vector(s), s)).collect();
        index.insert(&items)?;
        drop(items);
        index.freeze()?;
        tracing::info!(
            collection = name,
            points = st.len(),
            snapshot_seq = snap_seq,
            log_records = replayed,
            secs = started.elapsed().as_secs_f64(),
            "collection opened"
        );
        let c = Collection {
            name: name.to_owned(),
            dist: IndexDistance::new(params.metric),
            params,
            dir: dir.to_path_buf(),
            embedder,
            metrics,
            thresholds,
            wal_bytes: AtomicU64::new(wal.bytes()),
            writer: Mutex::new(Writer {
                wal,
                seq: last_seq,
                snapshot_seq: snap_seq,
            }),
            state: RwLock::new(st),
            last_snapshot: Mutex::new(Instant::now()),
            deleted: AtomicBool::new(false),
            rebuilding: AtomicBool::new(false),
            snapshotting: Mutex::new(()),
            needs_repair: AtomicBool::new(false),
        };
        c.update_gauges(&c.read());
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn params(&self) -> &CollectionParams {
        &self.params
    }

    pub(crate) fn mark_deleted(&self) {
        // Taking the writer lock waits for a write in flight to finish.
        let _w = lock(&self.writer);
        self.deleted.store(true, Ordering::Release);
    }

    fn check_alive(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::CollectionNotFound(self.name.clone()));
        }
        Ok(())
    }

    pub fn info(&self) -> CollectionInfo {
        let seq = lock(&self.writer).seq;
        let st = self.read();
        let indexed = st.index.len();
        let memory_bytes = self.memory_bytes(&st);
        let points = st.len() - st.dead;
        CollectionInfo {
            name: self.name.clone(),
            params: self.params.clone(),
            points,
            deleted: st.dead,
            indexed,
            frozen: st.index.frozen_len(),
            memory_bytes,
            bytes_per_point: memory_bytes.checked_div(points as u64).unwrap_or(0),
            rebuilding: self.rebuilding.load(Ordering::Relaxed),
            operation_id: seq,
        }
    }

    /// The estimate [`CollectionInfo::memory_bytes`] reports.
    fn memory_bytes(&self, st: &State) -> u64 {
        let indexed = st.index.len();
        let dim = self.params.dim as u64;
        // hnsw_rs keeps per point a struct with 16 layer lists and an Arc'd, locked neighbour
        // table (~0.5 KiB), and per link an Arc'd entry (~40 bytes); 2m links on layer 0. The
        // frozen graph searches walk holds 4 bytes per link and its own copy of the vectors.
        let graph = indexed as u64 * (512 + 2 * self.params.m as u64 * 40 + dim * 4)
            + st.index.frozen_bytes() as u64;
        let slots = st.len() as u64 * (dim * 4 + 64) + st.by_id.len() as u64 * 64;
        graph + slots + st.payload_bytes as u64
    }

    fn update_gauges(&self, st: &State) {
        let l = [self.name.as_str()];
        self.metrics
            .points
            .with_label_values(&l)
            .set((st.len() - st.dead) as i64);
        self.metrics
            .deleted
            .with_label_values(&l)
            .set(st.dead as i64);
        self.metrics
            .unfrozen
            .with_label_values(&l)
            .set(st.len().saturating_sub(st.index.frozen_len()) as i64);
        self.metrics
            .memory
            .with_label_values(&l)
            .set(i64::try_from(self.memory_bytes(st)).unwrap_or(i64::MAX));
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let Some(model) = &self.params.embedding_model else {
            return Err(Error::InvalidRequest(format!(
                "collection '{}' has no embedding_model, so it takes vectors, not text",
                self.name
            )));
        };
        let out = self
            .embedder
            .embed(model, texts)
            .map_err(|message| Error::Embedding {
                model: model.clone(),
                message,
            })?;
        if out.len() != texts.len() {
            return Err(Error::Embedding {
                model: model.clone(),
                message: format!("returned {} vectors for {} texts", out.len(), texts.len()),
            });
        }
        if let Some(v) = out.iter().find(|v| v.len() != self.params.dim) {
            return Err(Error::Embedding {
                model: model.clone(),
                message: format!(
                    "returns vectors of dimension {}, but collection '{}' has dim {}",
                    v.len(),
                    self.name,
                    self.params.dim
                ),
            });
        }
        Ok(out)
    }

    /// Inserts or replaces points. Acknowledged (returns) once logged with fsync and indexed.
    pub fn upsert(&self, points: Vec<PointInput>) -> Result<UpdateResult> {
        self.check_alive()?;
        if points.is_empty() {
            return Err(Error::InvalidRequest("no points given".into()));
        }
        // Texts are embedded in one call, before anything is locked.
        let mut texts = Vec::new();
        for p in &points {
            p.id.validate()?;
            match (&p.vector, &p.text) {
                (Some(_), Some(_)) => {
                    return Err(Error::InvalidRequest(format!(
                        "point {}: give a vector or a text, not both",
                        p.id
                    )));
                }
                (None, None) => {
                    return Err(Error::InvalidRequest(format!(
                        "point {}: needs a vector or a text",
                        p.id
                    )));
                }
                (None, Some(t)) => texts.push(t.clone()),
                (Some(_), None) => {}
            }
        }
        let mut embedded = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed(&texts)?
        }
        .into_iter();
        let mut stored = Vec::with_capacity(points.len());
        for p in points {
            let what = format!("point {}", p.id);
            let raw = match p.vector {
                Some(v) => v,
                None => embedded.next().expect("one embedding per text"),
            };
            let vector =
                prepare_vector(&self.name, self.params.metric, self.params.dim, raw, &what)?;
            let payload = check_payload(&p.id, p.payload)?;
            stored.push(StoredPoint {
                id: p.id,
                vector,
                payload,
            });
        }
        self.apply_upsert(stored)
    }

    fn log(&self, w: &mut Writer, op: Op<'_>) -> Result<u64> {
        self.check_alive()?;
        let seq = w.seq + 1;
        w.wal.append(seq, op)?;
        w.seq = seq;
        self.wal_bytes.store(w.wal.bytes(), Ordering::Relaxed);
        Ok(seq)
    }

    fn apply_upsert(&self, points: Vec<StoredPoint>) -> Result<UpdateResult> {
        let mut w = lock(&self.writer);
        let seq = self.log(&mut w, Op::Upsert(&points))?;
        let mut slots = Vec::with_capacity(points.len());
        let mut vectors = Vec::with_capacity(points.len());
        let index = {
            let mut st = self.write();
            for p in points {
                slots.push(st.push(p.id, &p.vector, p.payload));
                vectors.push(p.vector);
            }
            self.update_gauges(&st);
            Arc::clone(&st.index)
        };
        // Searches go on meanwhile: hnsw_rs inserts through `&self` with its own locks.
        let items: Vec<(&[f32], usize)> = vectors.iter().map(Vec::as_slice).zip(slots).collect();
        if let Err(e) = index.insert(&items) {
            // Logged and applied; only the graph is behind. Rebuild it.
            self.needs_repair.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(UpdateResult {
            operation_id: seq,
            status: "completed",
        })
    }

    /// Deletes points by id (unknown ids are ignored). Acknowledged once logged with fsync.
    pub fn delete(&self, ids: Vec<PointId>) -> Result<UpdateResult> {
        self.check_alive()?;
        for id in &ids {
            id.validate()?;
        }
        let mut w = lock(&self.writer);
        let seq = self.log(&mut w, Op::Delete(&ids))?;
        let mut st = self.write();
        for id in &ids {
            st.delete(id);
        }
        self.update_gauges(&st);
        Ok(UpdateResult {
            operation_id: seq,
            status: "completed",
        })
    }

    pub fn get(&self, id: &PointId, with_vector: bool) -> Result<Record> {
        self.check_alive()?;
        let st = self.read();
        let slot = *st.by_id.get(id).ok_or_else(|| Error::PointNotFound {
            collection: self.name.clone(),
            id: id.clone(),
        })?;
        Ok(Record {
            id: id.clone(),
            payload: st.payloads[slot].clone(),
            vector: with_vector.then(|| st.vector(slot).to_vec()),
        })
    }

    /// A page of the live points that pass `filter`, in id order (numbers before strings),
    /// starting at `from` (inclusive), at most `limit`; and the id the next page starts at.
    /// Scans every point (a filtered scroll has no index to use): for paging through a
    /// collection and for deletes by filter, not the request path.
    pub fn scroll(
        &self,
        filter: Option<&Filter>,
        from: Option<&PointId>,
        limit: usize,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        self.check_alive()?;
        if limit == 0 || limit > MAX_SCROLL {
            return Err(Error::InvalidRequest(format!(
                "limit must be in 1..={MAX_SCROLL}, got {limit}"
            )));
        }
        let st = self.read();
        let mut slots: Vec<usize> = st
            .by_id
            .iter()
            .filter(|(id, _)| from.is_none_or(|f| *id >= f))
            .map(|(_, &slot)| slot)
            .filter(|&slot| {
                st.live[slot]
                    && filter.is_none_or(|f| f.matches(&st.ids[slot], st.payloads[slot].as_ref()))
            })
            .collect();
        slots.sort_unstable_by(|&a, &b| st.ids[a].cmp(&st.ids[b]));
        let next = slots.get(limit).map(|&s| st.ids[s].clone());
        let page = slots
            .into_iter()
            .take(limit)
            .map(|slot| Record {
                id: st.ids[slot].clone(),
                payload: if with_payload {
                    st.payloads[slot].clone()
                } else {
                    None
                },
                vector: with_vector.then(|| st.vector(slot).to_vec()),
            })
            .collect();
        Ok((page, next))
    }

    /// How many live points pass `filter` (all of them without one).
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        self.check_alive()?;
        let st = self.read();
        Ok(match filter {
            None => st.by_id.len(),
            Some(f) => st
                .by_id
                .values()
                .filter(|&&slot| {
                    st.live[slot] && f.matches(&st.ids[slot], st.payloads[slot].as_ref())
                })
                .count(),
        })
    }

    /// Top-k search by vector or text, with an optional payload filter.
    pub fn search(&self, req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.check_alive()?;
        if req.k == 0 || req.k > MAX_K {
            return Err(Error::InvalidRequest(format!(
                "k must be in 1..={MAX_K}, got {}",
                req.k
            )));
        }
        if let Some(ef) = req.ef
            && (ef == 0 || ef > MAX_EF)
        {
            return Err(Error::InvalidRequest(format!(
                "ef must be in 1..={MAX_EF}, got {ef}"
            )));
        }
        let raw = match (req.vector, req.text) {
            (Some(v), None) => v,
            (None, Some(t)) => self.embed(&[t])?.remove(0),
            (Some(_), Some(_)) => {
                return Err(Error::InvalidRequest(
                    "give a vector or a text to search by, not both".into(),
                ));
            }
            (None, None) => {
                return Err(Error::InvalidRequest(
                    "give a vector or a text to search by".into(),
                ));
            }
        };
        if let Some(t) = req.score_threshold
            && !t.is_finite()
        {
            return Err(Error::InvalidRequest(
                "score_threshold must be a finite number".into(),
            ));
        }
        let q = prepare_vector(
            &self.name,
            self.params.metric,
            self.params.dim,
            raw,
            &"query",
        )?;
        let started = Instant::now();
        let k = req.k;
        let ef = req.ef.unwrap_or(self.params.ef).max(k);
        let filter = req.filter.as_ref().filter(|f| !f.is_empty());

        let st = self.read();
        let hits = self.plan(&st, &q, k, ef, filter, req.exact)?;
        let higher = self.params.metric.higher_is_better();
        // Final scores are exact, and the order follows them (the graph's distances are f32
        // and, for dot, on augmented vectors).
        let mut scored: Vec<(usize, f32)> = hits
            .into_iter()
            .map(|(s, _)| (s, self.dist.score(&q, st.vector(s))))
            .collect();
        if higher {
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        } else {
            scored.sort_by(|a, b| a.1.total_cmp(&b.1));
        }
        let mut out = Vec::with_capacity(scored.len());
        for (slot, score) in scored {
            if let Some(t) = req.score_threshold
                && (if higher { score < t } else { score > t })
            {
                continue;
            }
            out.push(ScoredPoint {
                id: st.ids[slot].clone(),
                score,
                payload: if req.with_payload {
                    st.payloads[slot].clone()
                } else {
                    None
                },
                vector: req.with_vector.then(|| st.vector(slot).to_vec()),
            });
        }
        drop(st);
        let l = [self.name.as_str()];
        self.metrics.searches.with_label_values(&l).inc();
        self.metrics
            .search_seconds
            .with_label_values(&l)
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Chooses how to answer: the graph, the graph with the filter applied during or after the
    /// walk, or an exact scan. Returns `(slot, distance)`, closest first.
    fn plan(
        &self,
        st: &State,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&Filter>,
        exact: bool,
    ) -> Result<Vec<(usize, f32)>> {
        let n = st.len();
        if n == st.dead {
            return Ok(Vec::new());
        }
        let pass = |slot: usize| {
            st.live[slot]
                && filter.is_none_or(|f| f.matches(&st.ids[slot], st.payloads[slot].as_ref()))
        };
        if exact {
            return Ok(self.exact(st, q, k, pass));
        }
        // Points inserted since the graph was last frozen are scanned exactly by the index; but
        // after a failed insert, the graph may lack points below that line too.
        if self.needs_repair.load(Ordering::Acquire) {
            return Ok(self.exact(st, q, k, pass));
        }
        if filter.is_none() && st.dead == 0 {
            return st.index.search(&st.vectors, q, k, ef, None);
        }
        // The share of slots that pass (liveness and filter), estimated on a sample.
        let share = if filter.is_none() {
            (n - st.dead) as f64 / n as f64
        } else {
            let step = n.div_ceil(SAMPLES).max(1);
            let (mut seen, mut ok) = (0usize, 0usize);
            for s in (0..n).step_by(step) {
                seen += 1;
                ok += usize::from(pass(s));
            }
            ok as f64 / seen as f64
        };
        let expected = share * n as f64;
        if filter.is_some() && (share < EXACT_BELOW_FRACTION || expected <= EXACT_BELOW_COUNT) {
            return Ok(self.exact(st, q, k, pass));
        }
        let hits = if share >= POST_FILTER_ABOVE {
            // Most points pass: walk the graph unfiltered (it stops early), wider, then filter.
            let wide = ((ef as f64 / share).ceil() as usize).clamp(ef, MAX_EF);
            let mut hits = st.index.search(&st.vectors, q, wide, wide, None)?;
            hits.retain(|&(s, _)| pass(s));
            hits.truncate(k);
            hits
        } else {
            // Only passing points are collected, so `ef` counts matches; widen it too, as the
            // walk must cross non-matching regions.
            let wide = (ef * 2).min(MAX_EF);
            st.index.search(&st.vectors, q, k, wide, Some(&pass))?
        };
        if hits.len() < k && expected >= hits.len() as f64 {
            // Fewer than k found though more may pass: the exact answer is cheap enough here.
            return Ok(self.exact(st, q, k, pass));
        }
        Ok(hits)
    }

    /// Brute force over every slot that passes.
    fn exact(
        &self,
        st: &State,
        q: &[f32],
        k: usize,
        pass: impl Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let mut top = TopK::new(k);
        top.scan(&self.dist, q, &st.vectors, st.dim, 0..st.len(), pass);
        top.into_sorted()
    }

    /// Whether tombstones pass the compaction threshold, or the index needs a repair.
    pub fn needs_compaction(&self) -> bool {
        if self.needs_repair.load(Ordering::Acquire) {
            return true;
        }
        let st = self.read();
        st.dead >= self.thresholds.compact_min_dead.max(1)
            && st.dead as f64 >= self.thresholds.compact_dead_fraction * st.len() as f64
    }

    /// Whether enough points were inserted since the graph searches walk was last frozen.
    pub fn needs_freeze(&self) -> bool {
        self.read().index.needs_freeze()
    }

    /// Freezes the graph again (see [`Index::freeze`]); searches and writes go on meanwhile.
    pub fn freeze(&self) -> Result<()> {
        let index = Arc::clone(&self.read().index);
        let started = Instant::now();
        index.freeze()?;
        self.metrics
            .freezes
            .with_label_values(&[self.name.as_str()])
            .inc();
        self.update_gauges(&self.read());
        tracing::debug!(
            collection = %self.name,
            points = index.frozen_len(),
            secs = started.elapsed().as_secs_f64(),
            "graph frozen"
        );
        Ok(())
    }

    pub fn needs_snapshot(&self) -> bool {
        let bytes = self.wal_bytes.load(Ordering::Relaxed);
        bytes >= self.thresholds.snapshot_wal_bytes
            || (bytes > 0
                && lock(&self.last_snapshot).elapsed() >= self.thresholds.snapshot_interval)
    }

    /// Rebuilds the index over the live points only and drops the tombstones' slots, then
    /// snapshots. Searches keep answering from the old index meanwhile, and writes keep
    /// landing until the final catch-up. Returns false when a rebuild was already running.
    pub fn compact(&self) -> Result<bool> {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.rebuilding);
        let started = Instant::now();
        let repair = self.needs_repair.swap(false, Ordering::AcqRel);
        let dim = self.params.dim;

        // 1. Which slots are live now, and a copy of their vectors.
        let (n0, mut old_slots, mut vectors) = {
            let st = self.read();
            let old: Vec<usize> = (0..st.len()).filter(|&s| st.live[s]).collect();
            let mut v = Vec::with_capacity(old.len() * dim);
            for &s in &old {
                v.extend_from_slice(st.vector(s));
            }
            (st.len(), old, v)
        };
        // 2. The new graph, with no lock held.
        let index = Arc::new(Index::new(&self.params, old_slots.len()));
        let items: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..).collect();
        let built = index.insert(&items).and_then(|()| index.freeze());
        drop(items);
        if let Err(e) = built {
            self.needs_repair.store(true, Ordering::Release);
            return Err(e);
        }

        // 3. Writes held: catch up with the points written during the build, then swap.
        let w = lock(&self.writer);
        self.check_alive()?;
        let first_new = old_slots.len();
        {
            let st = self.read();
            for s in n0..st.len() {
                if st.live[s] {
                    old_slots.push(s);
                    vectors.extend_from_slice(st.vector(s));
                }
            }
        }
        let tail: Vec<(&[f32], usize)> =
            vectors.chunks_exact(dim).zip(0..).skip(first_new).collect();
        let caught_up = index.insert(&tail);
        drop(tail);
        if let Err(e) = caught_up {
            self.needs_repair.store(true, Ordering::Release);
            return Err(e);
        }
        let mut st = self.write();
        let mut new = State::new(dim, index);
        new.vectors = vectors;
        new.by_id.reserve(old_slots.len());
        for (slot, &old) in old_slots.iter().enumerate() {
            let id = std::mem::replace(&mut st.ids[old], PointId::Num(0));
            let live = st.live[old];
            let payload = st.payloads[old].take();
            new.payload_bytes += payload.as_ref().map_or(0, approx_json_bytes);
            if live {
                new.by_id.insert(id.clone(), slot);
            } else {
                // Deleted while the graph was being built.
                new.dead += 1;
            }
            new.ids.push(id);
            new.payloads.push(payload);
            new.live.push(live);
        }
        let dropped = st.len() - new.len();
        *st = new;
        self.update_gauges(&st);
        // Counted before the new state is visible: whoever sees it rebuilt sees the count.
        self.metrics
            .rebuilds
            .with_label_values(&[self.name.as_str()])
            .inc();
        drop(st);
        drop(w);
        tracing::info!(
            collection = %self.name,
            repair,
            points = old_slots.len(),
            dropped_tombstones = dropped,
            secs = started.elapsed().as_secs_f64(),
            "index rebuilt"
        );
        self.snapshot()?;
        Ok(true)
    }

    /// Writes a snapshot of every live point and drops the log it covers.
    pub fn snapshot(&self) -> Result<()> {
        let _one = lock(&self.snapshotting);
        let (seq, bytes) = {
            let mut w = lock(&self.writer);
            self.check_alive()?;
            if w.seq == w.snapshot_seq {
                *lock(&self.last_snapshot) = Instant::now();
                return Ok(());
            }
            let st = self.read();
            let live = st.len() - st.dead;
            let mut enc = snapshot::Encoder::new(w.seq, live * (self.params.dim * 4 + 32));
            for s in 0..st.len() {
                if st.live[s] {
                    enc.point(&st.ids[s], st.vector(s), st.payloads[s].as_ref());
                }
            }
            drop(st);
            let seq = w.seq;
            // Later writes go to a new segment; the old ones go once the snapshot is durable.
            w.wal.rotate(seq + 1)?;
            self.wal_bytes.store(0, Ordering::Relaxed);
            (seq, enc.finish())
        };
        snapshot::write(&self.dir, &bytes)?;
        Wal::remove_before(&self.dir, seq + 1)?;
        lock(&self.writer).snapshot_seq = seq;
        *lock(&self.last_snapshot) = Instant::now();
        tracing::debug!(collection = %self.name, seq, bytes = bytes.len(), "snapshot written");
        Ok(())
    }

    /// The metric, for callers computing their own ground truth.
    pub fn metric(&self) -> Metric {
        self.params.metric
    }
}
