//! HNSW benchmark of inferd's vector index (`vector::index::Index`, on hnsw_rs): builds it on
//! 100,000 × 128 clustered synthetic vectors (fixed seed), computes the exact top 10 of 1,000
//! queries by brute force, and reports build time, recall@10 and single-thread QPS over an
//! `ef` sweep. It writes the data set as `.npy` under `~/.cache/inferd/bench/vector/` (or
//! `$BENCH_VECTOR_DIR`) so `benches/vector/peers.py` runs hnswlib and faiss on the same
//! vectors, and its results as `inferd.json` there. `benches/vector/run.sh` runs both.
//!
//! `cargo bench --bench vector_ann` (env: `BENCH_N`, `BENCH_Q`, `BENCH_M`, `BENCH_EFC`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vector::config::{CollectionParams, Metric};
use vector::distance::l2sq;
use vector::index::Index;

const DIM: usize = 128;
const K: usize = 10;
const EFS: &[usize] = &[16, 32, 64, 128, 192, 256, 384];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately standard normal (Irwin–Hall, 12 uniforms).
    fn gauss(&mut self) -> f32 {
        (0..12).map(|_| self.unit()).sum::<f32>() - 6.0
    }
}

/// `n + q` points around 100 centres: spread 1 around centres spread 3.
fn dataset(n: usize, q: usize) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(20_261_123);
    let centres: Vec<f32> = (0..100 * DIM).map(|_| r.gauss() * 3.0).collect();
    let mut make = |count: usize| {
        let mut out = Vec::with_capacity(count * DIM);
        for _ in 0..count {
            let c = (r.next() % 100) as usize;
            for d in 0..DIM {
                out.push(centres[c * DIM + d] + r.gauss());
            }
        }
        out
    };
    let base = make(n);
    let queries = make(q);
    (base, queries)
}

fn write_npy(path: &Path, descr: &str, shape: (usize, usize), data: &[u8]) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Exact top k by L2, all cores.
fn ground_truth(base: &[f32], queries: &[f32], k: usize) -> Vec<Vec<u32>> {
    let nq = queries.len() / DIM;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = nq.div_ceil(threads);
    let mut out = vec![Vec::new(); nq];
    std::thread::scope(|s| {
        for (t, slot) in out.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (j, res) in slot.iter_mut().enumerate() {
                    let qi = t * chunk + j;
                    let q = &queries[qi * DIM..(qi + 1) * DIM];
                    let mut d: Vec<(f32, u32)> = base
                        .chunks_exact(DIM)
                        .enumerate()
                        .map(|(i, v)| (l2sq(q, v), i as u32))
                        .collect();
                    d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
                    d.truncate(k);
                    d.sort_by(|a, b| a.0.total_cmp(&b.0));
                    *res = d.into_iter().map(|x| x.1).collect();
                }
            });
        }
    });
    out
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to check here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env("BENCH_N", 100_000);
    let nq = env("BENCH_Q", 1_000);
    let m = env("BENCH_M", 16);
    let efc = env("BENCH_EFC", 200);
    let dir = std::env::var_os("BENCH_VECTOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/inferd/bench/vector")
        });
    std::fs::create_dir_all(&dir).expect("creating the bench directory");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "vector_ann: {n} × {DIM} base, {nq} queries, m={m}, ef_construction={efc}, {threads} build threads"
    );

    let (base, queries) = dataset(n, nq);
    let t = Instant::now();
    let gt = ground_truth(&base, &queries, K);
    eprintln!(
        "ground truth (brute force): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    write_npy(&dir.join("base.npy"), "<f4", (n, DIM), &f32_bytes(&base)).unwrap();
    write_npy(
        &dir.join("queries.npy"),
        "<f4",
        (nq, DIM),
        &f32_bytes(&queries),
    )
    .unwrap();
    let gt_bytes: Vec<u8> = gt
        .iter()
        .flatten()
        .flat_map(|x| (*x as i32).to_le_bytes())
        .collect();
    write_npy(&dir.join("gt.npy"), "<i4", (nq, K), &gt_bytes).unwrap();

    let params = CollectionParams {
        dim: DIM,
        metric: Metric::L2,
        m,
        ef_construction: efc,
        ef: 64,
        embedding_model: None,
    };
    let index = Index::new(&params, n);
    let items: Vec<(&[f32], usize)> = base.chunks_exact(DIM).zip(0..).collect();
    let t = Instant::now();
    // Batches, as upserts would arrive; each is inserted in parallel (rayon, all cores).
    for batch in items.chunks(10_000) {
        index.insert(batch).unwrap();
    }
    let build = t.elapsed().as_secs_f64();
    eprintln!("build: {build:.1} s");

    let mut rows = Vec::new();
    for &ef in EFS {
        // Warm-up pass, then the timed pass.
        for q in queries.chunks_exact(DIM).take(100) {
            std::hint::black_box(index.search(q, K, ef, None).unwrap());
        }
        let t = Instant::now();
        let mut hits = 0usize;
        for (qi, q) in queries.chunks_exact(DIM).enumerate() {
            let res = index.search(q, K, ef, None).unwrap();
            hits += res
                .iter()
                .filter(|(id, _)| gt[qi].contains(&(*id as u32)))
                .count();
        }
        let secs = t.elapsed().as_secs_f64();
        let recall = hits as f64 / (nq * K) as f64;
        let qps = nq as f64 / secs;
        eprintln!("ef={ef:4}: recall@10 {recall:.4}, {qps:8.0} QPS");
        rows.push(format!(
            "{{\"ef\": {ef}, \"recall\": {recall:.4}, \"qps\": {qps:.1}}}"
        ));
    }
    let json = format!(
        "{{\"engine\": \"inferd (hnsw_rs 0.3)\", \"n\": {n}, \"dim\": {DIM}, \"queries\": {nq}, \"m\": {m}, \"ef_construction\": {efc}, \"build_threads\": {threads}, \"build_s\": {build:.2}, \"sweep\": [{}]}}\n",
        rows.join(", ")
    );
    std::fs::write(dir.join("inferd.json"), json).unwrap();
    eprintln!("results in {}", dir.join("inferd.json").display());
}
