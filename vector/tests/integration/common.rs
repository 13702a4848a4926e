//! Seeded data, ground truth computed independently of the crate, and store helpers.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use vector::{
    CreateCollection, Embedder, Metric, Metrics, NoEmbedder, PointId, PointInput, Store,
    StoreOptions,
};

/// SplitMix64: a tiny seeded generator, so the tests need no RNG crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal (sum of uniforms).
    pub fn gauss(&mut self) -> f32 {
        (0..4).map(|_| self.f32()).sum::<f32>() - 2.0
    }
}

/// `n` vectors of `dim` around `clusters` random centres.
pub fn clustered(seed: u64, n: usize, dim: usize, clusters: usize) -> Vec<Vec<f32>> {
    let mut r = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| r.gauss() * 2.0).collect())
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[(r.next_u64() % clusters as u64) as usize];
            c.iter().map(|x| x + r.gauss()).collect()
        })
        .collect()
}

/// The score a metric gives, in f64 (cosine on the raw vectors).
pub fn score(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    match metric {
        Metric::Dot => dot,
        Metric::Cosine => {
            let n = |x: &[f32]| x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            dot / (n(q) * n(v))
        }
        Metric::L2 => q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            .sqrt(),
    }
}

/// The ids of the exact top k among `candidates` (id, vector).
pub fn brute_force<'a>(
    metric: Metric,
    q: &[f32],
    k: usize,
    candidates: impl Iterator<Item = (u64, &'a Vec<f32>)>,
) -> Vec<u64> {
    let mut all: Vec<(f64, u64)> = candidates
        .map(|(id, v)| (score(metric, q, v), id))
        .collect();
    if metric == Metric::L2 {
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    all.into_iter().take(k).map(|x| x.1).collect()
}

pub fn recall(got: &[PointId], want: &[u64]) -> f64 {
    if want.is_empty() {
        return 1.0;
    }
    let hits = want
        .iter()
        .filter(|w| got.contains(&PointId::Num(**w)))
        .count();
    hits as f64 / want.len() as f64
}

pub fn quiet_options() -> StoreOptions {
    StoreOptions {
        background: false,
        ..StoreOptions::default()
    }
}

pub fn open(dir: &Path, embedder: Arc<dyn Embedder>, opts: StoreOptions) -> Store {
    Store::open_with(dir, embedder, Metrics::new(None).unwrap(), opts).unwrap()
}

pub fn open_plain(dir: &Path) -> Store {
    open(dir, Arc::new(NoEmbedder), quiet_options())
}

pub fn create(store: &Store, name: &str, dim: usize, metric: Metric) {
    store
        .create(
            name,
            CreateCollection {
                dim,
                metric: Some(metric),
                m: Some(16),
                ef_construction: Some(100),
                ef: Some(64),
                embedding_model: None,
            },
        )
        .unwrap();
}

/// Point `i` with payload `{"group": i % 10, "rare": i.is_multiple_of(50), "i": i}`.
pub fn point(i: usize, v: &[f32]) -> PointInput {
    PointInput::new(
        i as u64,
        v.to_vec(),
        Some(json!({"group": i % 10, "rare": i.is_multiple_of(50), "i": i})),
    )
}

/// Upserts `data` (ids = positions) in batches of 1,000, then freezes the graph.
pub fn upsert_all(store: &Store, name: &str, data: &[Vec<f32>]) {
    for (b, chunk) in data.chunks(1000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| point(b * 1000 + j, v))
            .collect();
        store.upsert(name, pts).unwrap();
    }
    // What the maintenance thread (off in these tests) does after a bulk load: searches then
    // walk the graph instead of scanning the new points.
    store.collection(name).unwrap().freeze().unwrap();
    let info = store.info(name).unwrap();
    assert_eq!(info.frozen, info.indexed, "the whole graph is frozen");
}
