//! Drift evaluation, inferd vs Evidently, side by side in one command:
//!
//! ```text
//! . scripts/env.sh && cargo bench --bench drift
//! ```
//!
//! First the sampler's cost on the request path: what a request of the iris model pays in
//! the server when a monitor samples it (the monitor lookup, the copy of its inputs and
//! outputs, the hand-off to the monitor thread, which evaluates on the other core) against
//! what every request pays when its model has no monitor (the lookup alone), in ns per
//! request. The load benchmark (`benches/load`) measures the same at the HTTP level.
//!
//! Then one window of 100,000 rows × 30 numeric columns against a 100,000-row reference (half the
//! columns shifted), evaluated by `drift::evaluate` (Evidently's default tests: normed
//! Wasserstein at this size, plus histograms and summaries) and, on the same data, by
//! Evidently's `DataDriftPreset` and by scipy per column (`benches/drift/evidently_bench.py`,
//! in Evidently's own virtual environment, created on first use). Also the same with KS
//! forced on every column. Prints seconds, the ratios, and the largest difference of the
//! per-column scores. `DRIFT_BENCH_ROWS` / `DRIFT_BENCH_COLUMNS` change the size.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use drift::evaluate::evaluate;
use drift::monitor::Monitors;
use drift::record::Values;
use drift::reference::{RefColumn, Reference, finite_sorted};
use drift::spec::{ColumnSpec, MonitorSpec, TestKind};
use drift::window::Current;
use models::metrics::Metrics;
use models::repository::{Repository, RepositoryOptions};
use models::{Tensor, TensorData};
use server::drift::Drift;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn normal(&mut self) -> f64 {
        let u = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// Evidently's virtual environment: evidently 0.7 needs pandas < 3.
fn evidently_python() -> Option<PathBuf> {
    let cache = PathBuf::from(std::env::var("INFERD_CACHE").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/inferd"))
    })?);
    let venv = cache.join("evidently-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        eprintln!("creating {} (evidently, pandas < 3)", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .ok()?
            .success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "evidently==0.7.23", "pandas<3"])
                .status()
                .ok()?
                .success();
        if !ok {
            return None;
        }
    }
    Some(py)
}

/// ns per call of `f`, best of 5 runs of `n` calls.
fn ns_per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The sampler's request-path cost, sampled vs unmonitored, on the iris fixture model.
fn sampler(calls: u64) {
    models::backends::onnx::init(None).expect("ONNX Runtime (run `. scripts/env.sh` first)");
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/sklearn_trees"
    );
    let target = dir.path().join("iris");
    copy_dir(fixture.as_ref(), &target);
    let registry = prometheus::Registry::new();
    let repo = Repository::new(
        RepositoryOptions {
            root: dir.path().to_owned(),
            cores: 1,
            remote: None,
        },
        Metrics::new(&registry).unwrap(),
    );
    repo.load_all().unwrap();
    let served = repo.get("iris", None).expect("the iris fixture loads");
    let monitors = Arc::new(Monitors::open(None, &registry).unwrap());
    let spec = MonitorSpec::from_json(br#"{"window": {"rows": 1000}}"#).unwrap();
    monitors.put("iris", spec).unwrap();
    let drift = Drift::start(Arc::clone(&monitors), 4096, None);
    // One row in, the model's outputs for one row out (zeros: the worker does not care).
    let tensor = |dt: models::DataType, shape: &[i64]| {
        let shape: Vec<i64> = shape.iter().map(|&d| d.max(1)).collect();
        let n: i64 = shape.iter().product();
        let bytes = vec![0u8; n as usize * dt.size().unwrap_or(4)];
        Tensor::new(dt, shape, TensorData::Raw(bytes.into())).unwrap()
    };
    let sig = &served.signature;
    let inputs: Vec<(String, Tensor)> = sig
        .inputs
        .iter()
        .map(|s| (s.name.clone(), tensor(s.datatype, &s.shape)))
        .collect();
    let outputs: Vec<Tensor> = sig
        .outputs
        .iter()
        .map(|s| tensor(s.datatype, &s.shape))
        .collect();
    let ids: Vec<String> = (0..calls).map(|i| format!("request-{i}")).collect();
    let unmonitored = ns_per_call(calls, |_| {
        std::hint::black_box(drift.wants("no-monitor"));
    });
    let sampled = ns_per_call(calls, |i| {
        if let Some(spec) = drift.wants("iris") {
            let id = &ids[i as usize];
            drift.offer(spec, &served, id, inputs.clone(), &outputs);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500)); // the worker catches up
    let m = monitors.metrics();
    let taken = m.samples.with_label_values(&["iris"]).get();
    let dropped = m.dropped.with_label_values(&["iris", "queue_full"]).get();
    println!("sampler on the request path ({calls} requests × 5, best run; iris, 1 row):");
    println!("  no monitor (lookup only)     {unmonitored:>8.0} ns/request");
    println!(
        "  sampled (lookup, copy, hand-off) {sampled:>4.0} ns/request  (+{:.0} ns; the monitor took {taken} samples, {dropped} dropped on a full queue)",
        sampled - unmonitored
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: a small smoke run,
    // without the peer.
    let bench = std::env::args().any(|a| a == "--bench");
    let rows = if bench {
        env("DRIFT_BENCH_ROWS", 100_000)
    } else {
        2_000
    };
    let cols = if bench {
        env("DRIFT_BENCH_COLUMNS", 30)
    } else {
        4
    };
    sampler(if bench { 200_000 } else { 2_000 });
    let mut rng = Rng(42);
    // Column j: normal; the odd columns of the current window shifted by 0.05 sd and
    // scaled by 1.05 (a drift Wasserstein sees, the even ones none).
    let mut data = vec![vec![0.0f64; rows]; 2 * cols];
    let (reference_cols, current_cols) = data.split_at_mut(cols);
    for (j, (r, c)) in reference_cols.iter_mut().zip(current_cols).enumerate() {
        for (ri, ci) in r.iter_mut().zip(c.iter_mut()) {
            *ri = rng.normal();
            let x = rng.normal();
            *ci = if j % 2 == 1 { 0.05 + 1.05 * x } else { x };
        }
    }
    let name = |j: usize| format!("c{j}");

    // The reference as a monitor holds it: sorted once, when it is set (not timed, as
    // Evidently's reference DataFrame is built before its timer too).
    let reference = Reference {
        rows,
        source: "bench".into(),
        created_ms: 0,
        columns: (0..cols)
            .map(|j| {
                let (sorted, missing) = finite_sorted(data[j].iter().copied());
                (name(j), RefColumn::Numeric { sorted, missing })
            })
            .collect(),
        embeddings: BTreeMap::new(),
    };
    let current = Current {
        rows,
        start_ms: 0,
        end_ms: 0,
        versions: BTreeMap::new(),
        columns: (0..cols)
            .map(|j| (name(j), Values::Numbers(data[cols + j].clone())))
            .collect(),
        embeddings: BTreeMap::new(),
    };
    let default = MonitorSpec::default();
    let ks = MonitorSpec {
        columns: (0..cols)
            .map(|j| {
                (
                    name(j),
                    ColumnSpec {
                        test: Some(TestKind::Ks),
                        ..ColumnSpec::default()
                    },
                )
            })
            .collect(),
        ..MonitorSpec::default()
    };
    // Best of 3 (the first run warms the allocator and caches).
    let best = |spec: &MonitorSpec| {
        (0..3)
            .map(|_| time(|| evaluate(spec, &reference, &current, 1)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("three runs")
    };
    let (ours, ours_s) = best(&default);
    let (ours_ks, ours_ks_s) = best(&ks);
    println!("drift evaluation, {rows} rows × {cols} columns vs a {rows}-row reference (2 cores)");
    println!(
        "inferd, default tests ({}):       {ours_s:.3} s  ({} of {cols} columns drifted)",
        ours.columns[0].test.name(),
        ours.dataset.drifted
    );
    println!(
        "inferd, KS on every column:              {ours_ks_s:.3} s  ({} drifted)",
        ours_ks.dataset.drifted
    );

    if !bench {
        return;
    }
    let Some(py) = evidently_python() else {
        println!("Evidently's environment could not be created: no peer numbers");
        return;
    };
    let file = std::env::temp_dir().join(format!("inferd-drift-bench-{}.f64", std::process::id()));
    let bytes: Vec<u8> = data
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&file, bytes).expect("writing the bench data");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/drift/evidently_bench.py"
    );
    let out = Command::new(&py)
        .arg(script)
        .arg(&file)
        .args([rows.to_string(), cols.to_string()])
        .output()
        .expect("running the Evidently side");
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        println!(
            "the Evidently side failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let peer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the peer prints JSON");
    let secs = |k: &str| peer[k].as_f64();
    let ratio =
        |theirs: Option<f64>, ours: f64| theirs.map_or("-".into(), |t| format!("{:.1}×", t / ours));
    println!(
        "Evidently {} DataDriftPreset:        {:.3} s  → inferd {} faster",
        peer["evidently_version"].as_str().unwrap_or("?"),
        secs("evidently_s").unwrap_or(f64::NAN),
        ratio(secs("evidently_s"), ours_s)
    );
    println!(
        "Evidently DataDriftPreset(stattest=ks):  {:.3} s  → inferd {} faster",
        secs("evidently_ks_s").unwrap_or(f64::NAN),
        ratio(secs("evidently_ks_s"), ours_ks_s)
    );
    println!(
        "scipy per column, wasserstein (normed):  {:.3} s  → inferd {} faster (scipy computes no histograms or summaries)",
        secs("scipy_wasserstein_s").unwrap_or(f64::NAN),
        ratio(secs("scipy_wasserstein_s"), ours_s)
    );
    println!(
        "scipy per column, ks_2samp:              {:.3} s  → inferd {} faster",
        secs("scipy_ks_s").unwrap_or(f64::NAN),
        ratio(secs("scipy_ks_s"), ours_ks_s)
    );
    // The same numbers: each column's score against Evidently's.
    let worst = |report: &drift::Report, key: &str| {
        let theirs = &peer[key];
        report
            .columns
            .iter()
            .filter_map(|c| {
                let t = theirs[&c.name][1].as_f64()?;
                let agree = theirs[&c.name][2].as_bool() == Some(c.drifted);
                Some(((c.score() - t).abs() / t.abs().max(1e-300), agree))
            })
            .fold((0.0f64, true), |(w, a), (e, ok)| (w.max(e), a && ok))
    };
    let (e1, a1) = worst(&ours, "evidently_columns");
    let (e2, a2) = worst(&ours_ks, "evidently_ks_columns");
    println!(
        "agreement with Evidently: default scores within {e1:.1e} relative (verdicts {}), KS p-values within {e2:.1e} (verdicts {})",
        if a1 { "equal" } else { "DIFFER" },
        if a2 { "equal" } else { "DIFFER" }
    );
}
