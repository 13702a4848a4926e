//! The HNSW graph (hnsw_rs) over a collection's slots, behind a small API that never lets a
//! panic out: inputs are validated before they get here, and every call into hnsw_rs runs
//! under `catch_unwind` as a last resort.

use std::panic::{AssertUnwindSafe, catch_unwind};

use hnsw_rs::prelude::{FilterT, Hnsw};

use crate::config::CollectionParams;
use crate::distance::IndexDistance;
use crate::error::{Error, Result};

/// hnsw_rs's cap on layers.
const MAX_LAYERS: usize = 16;
/// Batches at least this large are inserted in parallel (rayon).
const PARALLEL_MIN: usize = 256;

pub struct Index {
    hnsw: Hnsw<'static, f32, IndexDistance>,
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
        tracing::error!(what, panic = %msg, "hnsw_rs panicked");
        Error::Internal(format!("the index failed during {what}: {msg}"))
    })
}

impl Index {
    /// An empty graph; `capacity` is only an allocation hint.
    pub fn new(params: &CollectionParams, capacity: usize) -> Index {
        let hnsw = Hnsw::new(
            params.m,
            capacity.max(1024),
            MAX_LAYERS,
            params.ef_construction,
            IndexDistance::new(params.metric),
        );
        Index { hnsw }
    }

    /// Inserts `(vector, slot)` pairs; large batches in parallel.
    pub fn insert(&self, items: &[(&[f32], usize)]) -> Result<()> {
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

    /// Up to `k` nearest `(slot, distance)`, closest first. With a filter, only slots it
    /// accepts are collected (hnsw_rs filters during the search, not after it).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn FilterT>,
    ) -> Result<Vec<(usize, f32)>> {
        guarded("search", || {
            self.hnsw
                .search_filter(q, k, ef, filter)
                .into_iter()
                .map(|n| (n.d_id, n.distance))
                .collect()
        })
    }

    /// Points in the graph.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
