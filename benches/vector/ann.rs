//! HNSW benchmark of inferd's vector index (`vector::index::Index`: hnsw_rs builds the graph,
//! searches walk its frozen, refined copy): build time, recall@10 and single-thread QPS over
//! an `ef` sweep, on one of two data sets (`BENCH_SET`):
//!
//! - `synthetic` (default): 100,000 × 128 clustered vectors (fixed seed), L2;
//! - `debian`: the short descriptions of the machine's Debian package lists
//!   (`/var/lib/apt/lists/*_Packages[.lz4]`, ~60,000 distinct texts), embedded with
//!   all-MiniLM-L6-v2 by inferd's own encoder (ONNX Runtime execution) — 384-d, cosine. The
//!   embeddings are cached beside the texts; 1,000 descriptions are held out as queries.
//!
//! The exact top 10 of every query comes from a brute-force scan. The set is written as
//! `.npy` under `~/.cache/inferd/bench/vector/<set>/` (or `$BENCH_VECTOR_DIR/<set>`), with
//! inferd's results as `inferd.json`, so `benches/vector/peers.py` runs hnswlib and faiss on
//! the same vectors; `benches/vector/run.sh` runs both for both sets.
//!
//! `cargo bench --bench vector_ann` (env: `BENCH_SET`, `BENCH_N`, `BENCH_Q`, `BENCH_M`,
//! `BENCH_EFC`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use models::backends::candle::SentenceEncoder;
use models::backends::onnx::OnnxOptions;
use models::config::{CandleConfig, Execution};
use vector::config::{CollectionParams, Metric};
use vector::distance::IndexDistance;
use vector::index::Index;

/// The synthetic set's dimension.
const DIM: usize = 128;
const K: usize = 10;
/// Timed passes over the queries per `ef` (peers.py does the same); the fastest is reported.
const REPEATS: usize = 5;
const EFS: &[usize] = &[16, 24, 32, 48, 64, 96, 128, 192, 256];

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

/// A data set: base vectors and queries, `dim` floats each.
struct Data {
    name: &'static str,
    /// One sentence for the report.
    about: String,
    metric: Metric,
    dim: usize,
    base: Vec<f32>,
    queries: Vec<f32>,
}

/// `n + q` points around 100 centres: spread 1 around centres spread 3.
fn synthetic(n: usize, q: usize) -> Data {
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
    Data {
        name: "synthetic",
        about: format!(
            "{n} × {DIM} clustered synthetic vectors (100 Gaussian clusters, seed fixed), L2"
        ),
        metric: Metric::L2,
        dim: DIM,
        base,
        queries,
    }
}

/// The distinct short descriptions in the machine's Debian package lists, in a fixed
/// shuffled order (empty when there are none).
fn package_descriptions() -> Vec<String> {
    let mut texts = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/var/lib/apt/lists") else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with("_Packages") || name.ends_with("_Packages.lz4")
        })
        .collect();
    files.sort();
    for f in files {
        let raw = if f.extension().is_some_and(|e| e == "lz4") {
            match std::process::Command::new("lz4cat").arg(&f).output() {
                Ok(o) if o.status.success() => o.stdout,
                _ => {
                    eprintln!("debian set: cannot decompress {} (lz4cat)", f.display());
                    continue;
                }
            }
        } else {
            std::fs::read(&f).unwrap_or_default()
        };
        for line in String::from_utf8_lossy(&raw).lines() {
            if let Some(d) = line.strip_prefix("Description: ") {
                texts.insert(d.trim().to_owned());
            }
        }
    }
    let mut texts: Vec<String> = texts.into_iter().collect();
    // Fisher–Yates with a fixed seed: the held-out queries are a random sample.
    let mut r = Rng(4_242);
    for i in (1..texts.len()).rev() {
        texts.swap(i, (r.next() % (i as u64 + 1)) as usize);
    }
    texts
}

/// all-MiniLM-L6-v2 embeddings of `texts` by inferd's encoder (ONNX Runtime execution),
/// cached in `dir` next to the texts they belong to.
fn embed_cached(texts: &[String], dir: &Path) -> Vec<f32> {
    let (texts_file, vec_file) = (dir.join("texts.txt"), dir.join("embeddings.f32"));
    let joined = texts.join("\n");
    if std::fs::read_to_string(&texts_file).is_ok_and(|t| t == joined)
        && let Ok(bytes) = std::fs::read(&vec_file)
        && bytes.len() == texts.len() * 384 * 4
    {
        eprintln!(
            "debian set: embeddings from the cache ({})",
            vec_file.display()
        );
        return bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
    }
    let minilm = models::cache_dir()
        .expect("INFERD_CACHE or HOME")
        .join("models/all-MiniLM-L6-v2/1");
    models::backends::onnx::init(None).expect("ONNX Runtime (run `. scripts/env.sh` first)");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let onnx = OnnxOptions {
        intra_op_threads: threads,
        inter_op_threads: 1,
    };
    let cfg = CandleConfig {
        execution: Execution::Onnxruntime,
        ..Default::default()
    };
    let mut enc = SentenceEncoder::load("minilm", &minilm, &cfg, 1, &onnx)
        .unwrap_or_else(|e| {
            panic!(
                "loading all-MiniLM-L6-v2 from {} (run scripts/setup.sh first): {e}",
                minilm.display()
            )
        })
        .remove(0);
    let t = Instant::now();
    let mut out = Vec::with_capacity(texts.len() * 384);
    for (i, chunk) in texts.chunks(256).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(enc.embed(&refs).expect("embedding package descriptions"));
        if i % 20 == 0 {
            eprintln!(
                "debian set: embedded {} / {} texts, {:.0} s",
                (i + 1) * 256,
                texts.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "debian set: {} texts embedded in {:.0} s ({:.0} texts/s)",
        texts.len(),
        t.elapsed().as_secs_f64(),
        texts.len() as f64 / t.elapsed().as_secs_f64()
    );
    std::fs::write(&vec_file, f32_bytes(&out)).unwrap();
    std::fs::write(&texts_file, joined).unwrap();
    out
}

/// The Debian set, or `None` when the machine has no package lists.
fn debian(q: usize, dir: &Path) -> Option<Data> {
    let texts = package_descriptions();
    if texts.len() <= q {
        eprintln!("debian set: no Debian package lists under /var/lib/apt/lists; skipped");
        return None;
    }
    let all = embed_cached(&texts, dir);
    let dim = all.len() / texts.len();
    let (queries, base) = all.split_at(q * dim);
    Some(Data {
        name: "debian",
        about: format!(
            "{} all-MiniLM-L6-v2 embeddings ({dim}-d) of the distinct short descriptions in this \
             machine's Debian package lists, queries = {q} held-out descriptions, cosine",
            texts.len() - q
        ),
        metric: Metric::Cosine,
        dim,
        base: base.to_vec(),
        queries: queries.to_vec(),
    })
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

/// Exact top k by the index's own distance, all cores.
fn ground_truth(data: &Data, k: usize) -> Vec<Vec<u32>> {
    let (dim, dist) = (data.dim, IndexDistance::new(data.metric));
    let nq = data.queries.len() / dim;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = nq.div_ceil(threads);
    let mut out = vec![Vec::new(); nq];
    std::thread::scope(|s| {
        for (t, slot) in out.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (j, res) in slot.iter_mut().enumerate() {
                    let qi = t * chunk + j;
                    let q = &data.queries[qi * dim..(qi + 1) * dim];
                    let mut d: Vec<(f32, u32)> = data
                        .base
                        .chunks_exact(dim)
                        .enumerate()
                        .map(|(i, v)| (dist.distance(q, v), i as u32))
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
    let set = std::env::var("BENCH_SET").unwrap_or_else(|_| "synthetic".into());
    let nq = env("BENCH_Q", 1_000);
    let m = env("BENCH_M", 16);
    let efc = env("BENCH_EFC", 200);
    let root = std::env::var_os("BENCH_VECTOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            models::cache_dir()
                .expect("INFERD_CACHE or HOME")
                .join("bench/vector")
        });
    let dir = root.join(&set);
    std::fs::create_dir_all(&dir).expect("creating the bench directory");
    // A stale result must not reach peers.py if this run stops early.
    let _ = std::fs::remove_file(dir.join("inferd.json"));
    let data = match set.as_str() {
        "synthetic" => synthetic(env("BENCH_N", 100_000), nq),
        "debian" => match debian(nq, &dir) {
            Some(d) => d,
            None => return,
        },
        other => panic!("BENCH_SET must be synthetic or debian, not {other}"),
    };
    let (dim, n) = (data.dim, data.base.len() / data.dim);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "vector_ann [{}]: {n} × {dim} base, {nq} queries, m={m}, ef_construction={efc}, {threads} build threads",
        data.name
    );

    let t = Instant::now();
    let gt = ground_truth(&data, K);
    eprintln!(
        "ground truth (brute force): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    write_npy(
        &dir.join("base.npy"),
        "<f4",
        (n, dim),
        &f32_bytes(&data.base),
    )
    .unwrap();
    write_npy(
        &dir.join("queries.npy"),
        "<f4",
        (nq, dim),
        &f32_bytes(&data.queries),
    )
    .unwrap();
    let gt_bytes: Vec<u8> = gt
        .iter()
        .flatten()
        .flat_map(|x| (*x as i32).to_le_bytes())
        .collect();
    write_npy(&dir.join("gt.npy"), "<i4", (nq, K), &gt_bytes).unwrap();

    let params = CollectionParams {
        dim,
        metric: data.metric,
        m,
        ef_construction: efc,
        ef: 64,
        embedding_model: None,
    };
    let index = Index::new(&params, n);
    let items: Vec<(&[f32], usize)> = data.base.chunks_exact(dim).zip(0..).collect();
    let t = Instant::now();
    // Batches, as upserts would arrive; each is inserted in parallel (rayon, all cores). Then
    // the one freeze (copy + refinement) a collection gets after a bulk load.
    for batch in items.chunks(10_000) {
        index.insert(batch).unwrap();
    }
    let inserted = t.elapsed().as_secs_f64();
    index.freeze().unwrap();
    let build = t.elapsed().as_secs_f64();
    eprintln!(
        "build: {build:.1} s (hnsw_rs inserts {inserted:.1} s, freeze {:.1} s); {:.1} links per node on layer 0",
        build - inserted,
        index.mean_degree()
    );

    let mut rows = Vec::new();
    for &ef in EFS {
        // Warm-up pass, then REPEATS timed passes over all queries; the fastest counts (a pass
        // is ~0.1 s, and this VM's timing noise is larger than that).
        for q in data.queries.chunks_exact(dim).take(100) {
            std::hint::black_box(index.search(&data.base, q, K, ef, None).unwrap());
        }
        let mut secs = f64::INFINITY;
        let mut hits = 0usize;
        for _ in 0..REPEATS {
            let t = Instant::now();
            hits = 0;
            for (qi, q) in data.queries.chunks_exact(dim).enumerate() {
                let res = index.search(&data.base, q, K, ef, None).unwrap();
                hits += res
                    .iter()
                    .filter(|(id, _)| gt[qi].contains(&(*id as u32)))
                    .count();
            }
            secs = secs.min(t.elapsed().as_secs_f64());
        }
        let recall = hits as f64 / (nq * K) as f64;
        let qps = nq as f64 / secs;
        eprintln!("ef={ef:4}: recall@10 {recall:.4}, {qps:8.0} QPS");
        rows.push(format!(
            "{{\"ef\": {ef}, \"recall\": {recall:.4}, \"qps\": {qps:.1}}}"
        ));
    }
    let metric = match data.metric {
        Metric::L2 => "l2",
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
    };
    let json = format!(
        "{{\"engine\": \"inferd (hnsw_rs 0.3 build, frozen refined graph)\", \"set\": \"{}\", \"about\": \"{}\", \"metric\": \"{metric}\", \"n\": {n}, \"dim\": {dim}, \"queries\": {nq}, \"m\": {m}, \"ef_construction\": {efc}, \"build_threads\": {threads}, \"build_s\": {build:.2}, \"sweep\": [{}]}}\n",
        data.name,
        data.about,
        rows.join(", ")
    );
    std::fs::write(dir.join("inferd.json"), json).unwrap();
    eprintln!("results in {}", dir.join("inferd.json").display());
}
