//! Micro-benchmarks of the request path below the network:
//!
//! - `onnx_mlp/run/N`: ONNX Runtime alone running the digits-sized MLP on a batch of N rows;
//! - `batcher_mlp/one_request`: one request through the batcher (queue, worker hand-off,
//!   ONNX Runtime, split, reply) — the batcher's overhead is this minus `onnx_mlp/run/1`;
//! - `batcher_mlp/32_concurrent`: 32 threads submitting at once, so batches form; time for
//!   all 32 responses;
//! - `handoff/*`: the hand-off alone (issue 14): one request through the batcher to a model
//!   that returns its input, always queued (`trivial_model_blocking`: the caller blocks on
//!   the result; `trivial_model_async`: a tokio task awaits it, as the servers did before
//!   issue 14 and shadow copies still do), beside the floor of any cross-thread hand-off on the machine: a request
//!   and its reply over std channels to a thread that does nothing
//!   (`bare_thread_round_trip`); `trivial_model_call_blocking` and `trivial_model_call_async`
//!   are the same request through [`Batcher::call`], which runs it on the caller when the
//!   queue is empty and the instance idle (the REST and gRPC paths since issue 14);
//! - `v2_json/decode_mlp_request` and `v2_json/encode_mlp_response`: the REST JSON codec;
//! - `grpc_decode/image_request`: a gRPC request with a 602 KB input decoded into a tensor
//!   (a view of `raw_input_contents`), beside `image_copy_baseline`, the copy it used to make.
//!
//! `cargo bench --bench batcher` (after `. scripts/env.sh`, which provides ONNX Runtime).

use std::sync::Arc;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use models::backends::onnx::{self, OnnxModel, OnnxOptions};
use models::batcher::{BatchSettings, Batcher, Job};
use models::metrics::Metrics;
use models::{DataType, Model, Tensor, TensorData};

const MLP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/models/mlp/1/model.onnx"
);

fn rows(n: usize) -> Tensor {
    let data: Vec<u8> = (0..n * 64)
        .flat_map(|i| ((i % 17) as f32 / 17.0).to_le_bytes())
        .collect();
    Tensor::new(
        DataType::Fp32,
        vec![n as i64, 64],
        TensorData::Raw(data.into()),
    )
    .unwrap()
}

fn load() -> OnnxModel {
    onnx::init(None).expect("ONNX Runtime (run `. scripts/env.sh` first)");
    OnnxModel::load(
        "mlp",
        MLP.as_ref(),
        &OnnxOptions {
            intra_op_threads: 1,
            inter_op_threads: 1,
        },
    )
    .unwrap()
}

fn onnx_direct(c: &mut Criterion) {
    let mut model = load();
    let mut g = c.benchmark_group("onnx_mlp");
    for n in [1usize, 8, 32] {
        let input = [rows(n)];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("run", n), &n, |b, _| {
            b.iter(|| model.run(&input).unwrap())
        });
    }
    g.finish();
}

fn batcher(c: &mut Criterion) {
    let settings = BatchSettings {
        max_batch_size: 64,
        ..Default::default()
    };
    let metrics = Metrics::unregistered().for_version("mlp", "1");
    let batcher = Arc::new(
        Batcher::start(
            "mlp",
            "1",
            vec![Box::new(load())],
            settings,
            metrics,
            Default::default(),
        )
        .unwrap(),
    );
    let job = || Job {
        inputs: vec![rows(1)],
        rows: 1,
        priority: None,
        timeout: None,
        cost: 1,
    };

    let mut g = c.benchmark_group("batcher_mlp");
    g.bench_function("one_request", |b| {
        b.iter(|| batcher.submit(job()).unwrap().wait().unwrap())
    });
    g.bench_function("one_call", |b| {
        b.iter(|| batcher.call_blocking(job()).unwrap())
    });

    const CLIENTS: usize = 32;
    g.throughput(Throughput::Elements(CLIENTS as u64));
    g.bench_function("32_concurrent", |b| {
        b.iter_custom(|iters| {
            let start = Arc::new(Barrier::new(CLIENTS + 1));
            let threads: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let (batcher, start) = (Arc::clone(&batcher), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..iters {
                            batcher.submit(job()).unwrap().wait().unwrap();
                        }
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for th in threads {
                th.join().unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();
}

/// Returns its inputs: what is left of a model once the model is taken out.
struct Echo;

impl Model for Echo {
    fn run(&mut self, inputs: &[Tensor]) -> models::Result<Vec<Tensor>> {
        Ok(inputs.to_vec())
    }
}

fn handoff(c: &mut Criterion) {
    let batcher = Batcher::start(
        "echo",
        "1",
        vec![Box::new(Echo)],
        BatchSettings {
            max_batch_size: 64,
            ..Default::default()
        },
        Metrics::unregistered().for_version("echo", "1"),
        Default::default(),
    )
    .unwrap();
    let job = || Job {
        inputs: vec![rows(1)],
        rows: 1,
        priority: None,
        timeout: None,
        cost: 1,
    };
    let mut g = c.benchmark_group("handoff");
    g.bench_function("trivial_model_blocking", |b| {
        b.iter(|| batcher.submit(job()).unwrap().wait().unwrap())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("trivial_model_async", |b| {
        b.iter(|| rt.block_on(async { batcher.submit(job()).unwrap().await.unwrap() }))
    });
    g.bench_function("trivial_model_call_blocking", |b| {
        b.iter(|| batcher.call_blocking(job()).unwrap())
    });
    // `call` runs inline only on a multi-threaded runtime, where `block_in_place` can move
    // the runtime's other tasks off the thread: the server's runtime.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("trivial_model_call_async", |b| {
        b.iter(|| mt.block_on(async { batcher.call(job()).await.unwrap() }))
    });
    // The floor: a message to a waiting thread and its answer back, nothing else.
    let (to_worker, inbox) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<Tensor>>();
    let worker = std::thread::spawn(move || {
        let t = rows(1);
        for reply in inbox {
            let _ = reply.send(t.clone());
        }
    });
    g.bench_function("bare_thread_round_trip", |b| {
        b.iter(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            to_worker.send(tx).unwrap();
            rx.recv().unwrap()
        })
    });
    g.finish();
    drop(to_worker);
    worker.join().unwrap();
}

fn json_codec(c: &mut Criterion) {
    let body = serde_json::json!({
        "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32",
                     "data": (0..64).map(|i| i as f32 / 64.0).collect::<Vec<_>>() }]
    });
    let body = Bytes::from(serde_json::to_vec(&body).unwrap());
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("v2_json");
    g.bench_function("decode_mlp_request", |b| {
        b.iter(|| server::http::codec::decode_request(&headers, &body, "mlp", None).unwrap())
    });
    let out = Tensor::new(
        DataType::Fp32,
        vec![1, 10],
        TensorData::Raw(
            (0..10)
                .flat_map(|i| (i as f32 / 10.0).to_le_bytes())
                .collect(),
        ),
    )
    .unwrap();
    let resp = server::infer::InferResponse {
        model_name: "mlp".into(),
        model_version: "1".into(),
        id: None,
        outputs: vec![("probabilities".into(), out)],
        timing: Default::default(),
        batch_rows: 1,
        parameters: Vec::new(),
        experiment: None,
    };
    g.bench_function("encode_mlp_response", |b| {
        b.iter(|| server::http::codec::encode_response(&resp, &Default::default()))
    });
    g.finish();
}

/// A gRPC request carrying one image-sized input (FP32 1×3×224×224, 602 KB in
/// `raw_input_contents`) decoded into a tensor, beside the copy the decoder used to make.
fn grpc_decode(c: &mut Criterion) {
    use server::proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    let shape = vec![1i64, 3, 224, 224];
    let raw = Bytes::from(vec![0x3fu8; 3 * 224 * 224 * 4]);
    let req = ModelInferRequest {
        model_name: "resnet".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: shape.clone(),
            ..Default::default()
        }],
        raw_input_contents: vec![raw.clone()],
        ..Default::default()
    };
    let mut g = c.benchmark_group("grpc_decode");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("image_request", |b| {
        b.iter(|| server::grpc::convert::request(req.clone()).unwrap())
    });
    g.bench_function("image_copy_baseline", |b| {
        b.iter(|| Tensor::from_raw(DataType::Fp32, shape.clone(), &raw).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = onnx_direct, batcher, handoff, json_codec, grpc_decode
}
criterion_main!(benches);
