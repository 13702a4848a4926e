//! The experiment router's cost per request, beside a bare baseline in one run:
//!
//! - `route/no_experiment`: the lookup every request pays when its model has none running;
//! - `route/sticky`: lookup + assignment by a unit key (hash into 10,000 buckets) + target;
//! - `route/random`: the same without a unit key (a random bucket);
//! - `route_and_record/sticky`: the above plus recording the outcome (counts, latency
//!   histogram, SRM expectation, guardrails) — everything the request path adds;
//! - `hash/fnv_baseline`: FNV-1a of the same key alone, the floor under `route/sticky`.
//!
//! Criterion reports the median; the percentile pass at the end times single calls
//! (`Instant` pairs, whose own cost, ~25 ns here, is included) and prints p50/p99.
//!
//! `cargo bench --bench experiments`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use experiments::config::ExperimentSpec;
use experiments::{Catalog, Experiments, Options, Outcome};

struct Ready;

impl Catalog for Ready {
    fn resolve(&self, _: &str, v: &str) -> Result<(u64, String), String> {
        Ok((
            v.parse().unwrap_or(1),
            "input:FP32[-1,64] -> probabilities:FP32[-1,10]".into(),
        ))
    }
}

fn setup() -> Experiments {
    let exps = Experiments::open(Options::default(), &prometheus::Registry::new()).unwrap();
    let spec = ExperimentSpec::from_json(
        br#"{"model":"mlp","unit":{"header":"x-user-id"},"arms":[{"version":1,"weight":50},{"version":2,"weight":50}],
            "guardrails":[{"rule":"error_rate","max":0.5},{"rule":"latency_p99","max_ms":1000}]}"#,
    )
    .unwrap();
    exps.put("bench", spec, &Ready).unwrap();
    exps
}

fn users() -> Vec<String> {
    (0..4096).map(|i| format!("user-{i:08}")).collect()
}

fn bench(c: &mut Criterion) {
    let exps = setup();
    let users = users();
    let outcome = Outcome {
        latency: Duration::from_micros(150),
        error: false,
    };
    let mut g = c.benchmark_group("route");
    g.bench_function("no_experiment", |b| {
        b.iter(|| black_box(exps.for_model(black_box("other"))))
    });
    let mut i = 0;
    g.bench_function("sticky", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let e = exps.for_model("mlp").unwrap();
            let a = e.assign(Some(&users[i]));
            black_box(e.target(a))
        })
    });
    g.bench_function("random", |b| {
        b.iter(|| {
            let e = exps.for_model("mlp").unwrap();
            let a = e.assign(None);
            black_box(e.target(a))
        })
    });
    g.finish();
    c.bench_function("route_and_record/sticky", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let e = exps.for_model("mlp").unwrap();
            let a = e.assign(Some(&users[i]));
            black_box(e.target(a));
            e.record(a, outcome);
        })
    });
    c.bench_function("hash/fnv_baseline", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(experiments::assign::bucket("bench", black_box(&users[i])))
        })
    });
}

/// Single-call percentiles of route + record (criterion reports means and medians only).
fn percentiles() {
    let exps = setup();
    let users = users();
    let outcome = Outcome {
        latency: Duration::from_micros(150),
        error: false,
    };
    let n = 1_000_000;
    let mut ns = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let e = exps.for_model("mlp").unwrap();
        let a = e.assign(Some(&users[i & 4095]));
        black_box(e.target(a));
        e.record(a, outcome);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let q = |p: f64| ns[((n as f64 * p) as usize).min(n - 1)];
    println!(
        "route_and_record/sticky single calls: p50 {} ns, p99 {} ns, p99.9 {} ns (n = {n})",
        q(0.5),
        q(0.99),
        q(0.999)
    );
}

criterion_group!(benches, bench);

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to check here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    percentiles();
    Criterion::default().configure_from_args().final_summary();
}
