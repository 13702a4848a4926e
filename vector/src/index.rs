//! The HNSW index over a collection's slots. hnsw_rs builds the graph; searches walk a frozen,
//! refined flat copy of it ([`crate::graph`]) plus an exact scan of the points inserted since
//! that copy was made. Nothing here lets a panic out: inputs are validated before they get
//! here, and every call into hnsw_rs or the graph runs under `catch_unwind` as a last resort.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hnsw_rs::prelude::Hnsw;

use crate::config::CollectionParams;
use crate::distance::IndexDistance;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::search::TopK;

/// hnsw_rs's cap on layers.
const MAX_LAYERS: usize = 16;
/// Batches at least this large are inserted in parallel (rayon).
const PARALLEL_MIN: usize = 256;
/// The graph wants freezing again once this many points were inserted since the last
/// freeze...
const REFREEZE_MIN: usize = 512;
/// ... and they are at least `1 / REFREEZE_FRACTION` of the frozen graph: a collection
/// growing one point at a time is frozen O(log n) times, and the exact scan of the new points
/// stays a small part of a search.
const REFREEZE_FRACTION: usize = 16;

/// The HNSW index over a collection's slots: hnsw_rs builds the graph, a frozen flat copy of
/// it ([`Graph`], refined) answers searches, and the points inserted since the last freeze
/// are scanned exactly, so every acknowledged point is searchable at once. Freezing is
/// explicit ([`Index::freeze`]): after a bulk load, and from the maintenance thread once
/// [`Index::needs_freeze`].
pub struct Index {
    hnsw: Hnsw<'static, f32, IndexDistance>,
    m: usize,
    dim: usize,
    dist: IndexDistance,
    frozen: ArcSwap<Graph>,
    /// Serialises inserts and the copy of the graph: a copy must not see an insert half done.
    building: Mutex<()>,
    /// Held for a whole freeze, so two never race to store their graphs.
    freezing: Mutex<()>,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = panic_message(p);
        tracing::error!(what, panic = %msg, "the vector index panicked");
        Error::Internal(format!("the index failed during {what}: {msg}"))
    })
}

impl Index {
    /// An empty graph; `capacity` is only an allocation hint.
    pub fn new(params: &CollectionParams, capacity: usize) -> Index {
        let dist = IndexDistance::new(params.metric);
        let hnsw = Hnsw::new(
            params.m,
            capacity.max(1024),
            MAX_LAYERS,
            params.ef_construction,
            dist,
        );
        let frozen = ArcSwap::from_pointee(Graph::build(&hnsw, params.m, params.dim, &dist, 1));
        Index {
            hnsw,
            m: params.m,
            dim: params.dim,
            dist,
            frozen,
            building: Mutex::new(()),
            freezing: Mutex::new(()),
        }
    }

    /// Inserts `(vector, slot)` pairs, large batches in parallel. They are searched exactly
    /// until the next [`Index::freeze`].
    pub fn insert(&self, items: &[(&[f32], usize)]) -> Result<()> {
        let _one = self.building.lock().unwrap_or_else(|e| e.into_inner());
        guarded("insert", || {
            if items.len() >= PARALLEL_MIN {
                self.hnsw.parallel_insert_slice(&items.to_vec());
            } else {
                for &it in items {
                    self.hnsw.insert_slice(it);
                }
            }
        })
    }

    /// Whether enough points arrived since the last freeze to freeze again.
    pub fn needs_freeze(&self) -> bool {
        let frozen = self.frozen.load().len();
        let fresh = self.hnsw.get_nb_point().saturating_sub(frozen);
        fresh > 0 && fresh >= REFREEZE_MIN.max(frozen / REFREEZE_FRACTION)
    }

    /// Copies the graph as it is now (inserts wait meanwhile: ~0.3 s per 100k points on this
    /// machine), refines and renumbers the copy on all cores with inserts and searches going
    /// on, and swaps it in for searches.
    pub fn freeze(&self) -> Result<()> {
        let _one = self.freezing.lock().unwrap_or_else(|e| e.into_inner());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let copy = {
            let _still = self.building.lock().unwrap_or_else(|e| e.into_inner());
            guarded("freeze", || Graph::copy(&self.hnsw, self.m, self.dim))?
        };
        let graph = guarded("freeze", || copy.finish(&self.dist, threads))?;
        self.frozen.store(Arc::new(graph));
        Ok(())
    }

    /// Mean number of layer-0 links per node in the frozen graph.
    pub fn mean_degree(&self) -> f64 {
        self.frozen.load().mean_degree()
    }

    /// Points in the frozen graph (the rest are scanned exactly).
    pub fn frozen_len(&self) -> usize {
        self.frozen.load().len()
    }

    /// Up to `k` nearest `(slot, distance)` among the slots `accept` passes (all when
    /// `None`), closest first: the frozen graph searched with breadth `ef`, merged with an
    /// exact scan of the slots after it, read from `vectors`, the slot store (`dim` floats
    /// per slot).
    pub fn search(
        &self,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<Vec<(usize, f32)>> {
        let graph = self.frozen.load();
        let slots = vectors.len() / self.dim;
        if graph.len() > slots {
            return Err(Error::Internal(format!(
                "the index covers {} slots but the store holds {slots}",
                graph.len()
            )));
        }
        let mut hits = guarded("search", || graph.search(&self.dist, q, ef.max(k), accept))?;
        if graph.len() < slots {
            let mut top = TopK::new(k);
            for (s, d) in hits.drain(..) {
                top.push(d, s);
            }
            top.scan(&self.dist, q, vectors, self.dim, graph.len()..slots, |s| {
                accept.is_none_or(|f| f(s))
            });
            hits = top.into_sorted();
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// Points in the graph.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the frozen graph's links.
    pub fn frozen_bytes(&self) -> usize {
        self.frozen.load().memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Metric;

    const DIM: usize = 16;

    fn random_vectors(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n * DIM)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn index(n_hint: usize) -> Index {
        let params = CollectionParams {
            dim: DIM,
            metric: Metric::L2,
            m: 12,
            ef_construction: 100,
            ef: 64,
            embedding_model: None,
        };
        Index::new(&params, n_hint)
    }

    fn exact(vectors: &[f32], q: &[f32], k: usize, accept: impl Fn(usize) -> bool) -> Vec<usize> {
        let dist = IndexDistance::new(Metric::L2);
        let mut top = TopK::new(k);
        for (s, v) in vectors.chunks_exact(DIM).enumerate() {
            if accept(s) {
                top.push(dist.distance(q, v), s);
            }
        }
        top.into_sorted().into_iter().map(|(s, _)| s).collect()
    }

    /// Inserts `vectors` in batches of `batch`; returns the index.
    fn build(vectors: &[f32], batch: usize) -> Index {
        let idx = index(vectors.len() / DIM);
        let items: Vec<(&[f32], usize)> = vectors.chunks_exact(DIM).zip(0..).collect();
        for b in items.chunks(batch) {
            idx.insert(b).unwrap();
            if idx.needs_freeze() {
                idx.freeze().unwrap();
            }
        }
        idx
    }

    fn recall(
        idx: &Index,
        vectors: &[f32],
        queries: &[f32],
        filter: Option<&dyn Fn(usize) -> bool>,
    ) -> f64 {
        let (mut hits, mut total) = (0, 0);
        for q in queries.chunks_exact(DIM) {
            let want = exact(vectors, q, 10, |s| filter.is_none_or(|f| f(s)));
            let got = idx.search(vectors, q, 10, 64, filter).unwrap();
            assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "closest first");
            if let Some(f) = filter {
                assert!(got.iter().all(|&(s, _)| f(s)), "only accepted slots");
            }
            hits += got.iter().filter(|(s, _)| want.contains(s)).count();
            total += want.len();
        }
        hits as f64 / total as f64
    }

    #[test]
    fn frozen_graph_plus_fresh_points_find_the_true_neighbours() {
        let vectors = random_vectors(3_000, 7);
        let queries = random_vectors(100, 99);
        // Batches of 97: the graph is frozen several times and the last points are found by
        // the exact scan of what came after the last freeze.
        let idx = build(&vectors, 97);
        assert!(
            idx.frozen_len() < 3_000,
            "some points after the last freeze"
        );
        assert!(idx.frozen_len() >= 2_000);
        let r = recall(&idx, &vectors, &queries, None);
        assert!(r >= 0.97, "recall@10 {r}");
        let even = |s: usize| s.is_multiple_of(2);
        let r = recall(&idx, &vectors, &queries, Some(&even));
        assert!(r >= 0.95, "filtered recall@10 {r}");
    }

    #[test]
    fn a_point_is_found_as_soon_as_it_is_inserted() {
        let mut vectors = random_vectors(1_000, 3);
        let idx = build(&vectors, 1_000);
        assert_eq!(idx.frozen_len(), 1_000);
        let q: Vec<f32> = vec![3.0; DIM];
        vectors.extend_from_slice(&q);
        idx.insert(&[(&q, 1_000)]).unwrap();
        assert_eq!(idx.frozen_len(), 1_000, "one point does not refreeze");
        let got = idx.search(&vectors, &q, 3, 16, None).unwrap();
        assert_eq!(got[0], (1_000, 0.0));
        // Distances are the graph's, exactly.
        let d = IndexDistance::new(Metric::L2);
        for (s, dist) in got {
            assert_eq!(dist, d.distance(&q, &vectors[s * DIM..(s + 1) * DIM]));
        }
    }

    #[test]
    fn empty_and_single_point_indexes() {
        let idx = index(0);
        assert!(
            idx.search(&[], &[0.0; DIM], 5, 10, None)
                .unwrap()
                .is_empty()
        );
        let v = random_vectors(1, 5);
        idx.insert(&[(&v, 0)]).unwrap();
        assert_eq!(idx.search(&v, &v, 5, 10, None).unwrap(), vec![(0, 0.0)]);
        let none = |_: usize| false;
        assert!(idx.search(&v, &v, 5, 10, Some(&none)).unwrap().is_empty());
    }
}
