//! Sentence-embedding throughput and latency (candle backend, all-MiniLM-L6-v2):
//!
//! - `in-process`: the limit — `SentenceEncoder::embed` called in a loop on the same
//!   sentences, no server (one sentence per call, and all of them in batches of 32), with
//!   candle and with ONNX Runtime executing the same encoder;
//! - `server`: inferd's `/v1/embeddings` with 1, 8 and 32 concurrent clients, one sentence
//!   per request, so the batcher's token-budget batching does the grouping.
//!
//! Sentences: the texts of tests/fixtures/embeddings.json. Run after `. scripts/env.sh`:
//! `cargo bench --bench embeddings` (about a minute).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use models::backends::candle::SentenceEncoder;
use models::backends::onnx::OnnxOptions;
use models::config::{CandleConfig, Execution};

fn minilm_dir() -> PathBuf {
    models::cache_dir()
        .expect("INFERD_CACHE or HOME")
        .join("models/all-MiniLM-L6-v2/1")
}

fn sentences() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/embeddings.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn report(what: &str, n: usize, elapsed: Duration, lat: &mut [Duration]) {
    lat.sort();
    println!(
        "| {what} | {:.1} | {:.2} | {:.2} |",
        n as f64 / elapsed.as_secs_f64(),
        pct(lat, 0.5),
        pct(lat, 0.99)
    );
}

fn in_process(texts: &[String], execution: Execution) {
    let onnx = OnnxOptions {
        intra_op_threads: 2,
        inter_op_threads: 1,
    };
    let cfg = CandleConfig {
        execution,
        ..Default::default()
    };
    let mut enc = SentenceEncoder::load("minilm", &minilm_dir(), &cfg, 1, &onnx)
        .unwrap()
        .remove(0);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    enc.embed(&refs[..4]).unwrap(); // warm up
    let (start, mut lat) = (Instant::now(), Vec::new());
    for t in &refs {
        let t0 = Instant::now();
        enc.embed(&[t]).unwrap();
        lat.push(t0.elapsed());
    }
    report(
        &format!("in-process ({execution:?}), 1 sentence per call"),
        refs.len(),
        start.elapsed(),
        &mut lat,
    );
    let (start, mut lat) = (Instant::now(), Vec::new());
    for _ in 0..3 {
        for chunk in refs.chunks(32) {
            let t0 = Instant::now();
            enc.embed(chunk).unwrap();
            lat.push(t0.elapsed());
        }
    }
    report(
        &format!("in-process ({execution:?}), batches of 32 (latency per batch)"),
        refs.len() * 3,
        start.elapsed(),
        &mut lat,
    );
}

async fn server(texts: Arc<Vec<String>>) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("minilm")).unwrap();
    std::os::unix::fs::symlink(minilm_dir(), repo.path().join("minilm/1")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args([
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            &free(),
            "--metrics-port",
            &free(),
        ])
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--data-dir")
        .arg(data.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    while reqwest::get(format!("{url}/v2/health/ready"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for clients in [1usize, 8, 32] {
        let stop = Instant::now() + Duration::from_secs(8);
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (texts, url) = (Arc::clone(&texts), url.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let (mut lat, mut i) = (Vec::new(), c);
                    while Instant::now() < stop {
                        let t0 = Instant::now();
                        let r = client
                            .post(format!("{url}/v1/embeddings"))
                            .json(&serde_json::json!({ "model": "minilm", "input": texts[i % texts.len()] }))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                        r.bytes().await.unwrap();
                        lat.push(t0.elapsed());
                        i += clients;
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let n = lat.len();
        report(
            &format!("inferd /v1/embeddings, {clients} clients"),
            n,
            start.elapsed(),
            &mut lat,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to check here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    models::backends::onnx::init(None).expect("ONNX Runtime (run `. scripts/env.sh` first)");
    let texts = sentences();
    println!("| setup | sentences/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
    in_process(&texts, Execution::Candle);
    in_process(&texts, Execution::Onnxruntime);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server(Arc::new(texts)));
}
