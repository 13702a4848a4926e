//! Sentence embeddings (candle backend, all-MiniLM-L6-v2) against the independent NumPy
//! reference recorded by tests/fixtures/gen_embeddings.py.

use std::path::PathBuf;

use serde_json::{Value, json};
use server::proto::inference::ModelInferRequest;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::model_infer_request::InferInputTensor;

use crate::common::{self, Server};

/// The model files, unpacked by scripts/setup.sh (scripts/fetch_minilm.sh).
fn minilm_dir() -> PathBuf {
    let dir = models::cache_dir()
        .expect("INFERD_CACHE or HOME")
        .join("models/all-MiniLM-L6-v2/1");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A repository with the encoder as `minilm` (defaults) and `minilm_strict` (no
/// truncation, at most 4 texts per request), sharing the files through symlinks.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("minilm", None),
        (
            "minilm_strict",
            Some("[candle]\ntruncate = false\nmax_client_batch_size = 4\n"),
        ),
        // The same encoder run by ONNX Runtime (model.onnx built by scripts/build_minilm_onnx.py).
        (
            "minilm_ort",
            Some("[candle]\nexecution = \"onnxruntime\"\n"),
        ),
    ] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::os::unix::fs::symlink(minilm_dir(), dir.path().join(name).join("1")).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.path().join(name).join("config.toml"), c).unwrap();
        }
    }
    dir
}

struct Case {
    text: String,
    tokens: u64,
    truncated: bool,
    embedding: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(common::fixtures().join("embeddings.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_owned(),
            tokens: c["tokens"].as_u64().unwrap(),
            truncated: c["truncated"].as_bool().unwrap(),
            embedding: floats(&c["embedding"]),
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn rows(resp: &Value) -> Vec<Vec<f64>> {
    let out = &resp["outputs"][0];
    let dim = out["shape"][1].as_u64().unwrap() as usize;
    floats(&out["data"])
        .chunks(dim)
        .map(<[f64]>::to_vec)
        .collect()
}

/// A JSON array of numbers.
fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

async fn v2_embed(srv: &Server, model: &str, texts: &[&str]) -> (u16, Value) {
    srv.post(
        &format!("/v2/models/{model}/infer"),
        &json!({ "inputs": [{ "name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts }] }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_the_reference_batched_or_not_over_v2_openai_and_grpc() {
    let repo = repo();
    let srv = Server::start(repo.path(), &[]).await;
    let cases = cases();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    assert!(
        cases.iter().any(|c| c.truncated),
        "the fixture has over-long texts"
    );

    // Metadata: BYTES text in, FP32 [-1, 384] out.
    let meta: Value = reqwest::get(srv.url("/v2/models/minilm"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["inputs"][0],
        json!({ "name": "text", "datatype": "BYTES", "shape": [-1] })
    );
    assert_eq!(
        meta["outputs"][0],
        json!({ "name": "embedding", "datatype": "FP32", "shape": [-1, 384] })
    );

    // All texts in one request (one batch, mixed lengths) ...
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let (status, resp) = v2_embed(&srv, "minilm", &texts).await;
    assert_eq!(status, 200, "{resp}");
    let batched = rows(&resp);
    // ... and each text alone.
    let mut single = Vec::new();
    for t in &texts {
        let (status, resp) = v2_embed(&srv, "minilm", &[t]).await;
        assert_eq!(status, 200, "{resp}");
        single.push(rows(&resp).remove(0));
    }
    for (i, c) in cases.iter().enumerate() {
        let cos = cosine(&batched[i], &c.embedding);
        assert!(cos >= 0.9999, "text {i} {:?}: cosine {cos}", c.text);
        let max_diff = batched[i]
            .iter()
            .zip(&single[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max_diff <= 1e-5,
            "text {i}: batched and alone differ by {max_diff}"
        );
    }

    // ONNX Runtime execution of the same model family: same tokenization and pooling.
    let (status, resp) = v2_embed(&srv, "minilm_ort", &texts).await;
    assert_eq!(status, 200, "{resp}");
    for (i, (row, c)) in rows(&resp).iter().zip(&cases).enumerate() {
        let cos = cosine(row, &c.embedding);
        assert!(
            cos >= 0.9999,
            "onnxruntime, text {i} {:?}: cosine {cos}",
            c.text
        );
    }

    // OpenAI-compatible route: usage counts the tokens the model saw.
    let some: Vec<&str> = texts.iter().take(10).copied().collect();
    let r = reqwest::Client::new()
        .post(srv.url("/v1/embeddings"))
        .json(&json!({ "model": "minilm", "input": texts }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let truncated = cases.iter().filter(|c| c.truncated).count();
    assert_eq!(
        r.headers()["x-inferd-truncated"],
        truncated.to_string().as_str()
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model"], "minilm");
    assert_eq!(
        body["usage"]["prompt_tokens"],
        cases.iter().map(|c| c.tokens).sum::<u64>()
    );
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), cases.len());
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        let e = floats(&d["embedding"]);
        assert!(cosine(&e, &cases[i].embedding) >= 0.9999, "text {i}");
    }
    let (status, one) = srv
        .post(
            "/v1/embeddings",
            &json!({ "model": "minilm", "input": some[3] }),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let e = floats(&one["data"][0]["embedding"]);
    assert!(cosine(&e, &cases[3].embedding) >= 0.9999);

    // Token ids of the model's vocabulary ([CLS] hello world [SEP] in BERT's uncased one)
    // embed as their text on both engines, batched beside a text.
    for model in ["minilm", "minilm_ort"] {
        let (status, r) = srv
            .post(
                "/v1/embeddings",
                &json!({ "model": model, "input": [[101, 7592, 2088, 102], [101, 7592, 102]] }),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["usage"]["prompt_tokens"], 7);
        let (status, t) = srv
            .post(
                "/v1/embeddings",
                &json!({ "model": model, "input": ["hello world", "hello"] }),
            )
            .await;
        assert_eq!(status, 200, "{t}");
        for i in 0..2 {
            let (ids, text) = (
                floats(&r["data"][i]["embedding"]),
                floats(&t["data"][i]["embedding"]),
            );
            let diff = ids
                .iter()
                .zip(&text)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                diff <= 1e-5,
                "{model}, input {i}: ids and text differ by {diff}"
            );
        }
    }

    // gRPC with raw BYTES (4-byte length prefixes), as tritonclient sends them.
    let mut raw = Vec::new();
    for t in &some {
        raw.extend((t.len() as u32).to_le_bytes());
        raw.extend(t.as_bytes());
    }
    let mut grpc = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let resp = grpc
        .model_infer(ModelInferRequest {
            model_name: "minilm".into(),
            inputs: vec![InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![some.len() as i64],
                ..Default::default()
            }],
            raw_input_contents: vec![raw.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.outputs[0].shape, vec![some.len() as i64, 384]);
    let floats: Vec<f64> = resp.raw_output_contents[0]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    for (i, row) in floats.chunks(384).enumerate() {
        assert!(cosine(row, &cases[i].embedding) >= 0.9999, "grpc text {i}");
    }
}

#[tokio::test]
async fn bad_embedding_requests_are_explained() {
    let repo = repo();
    let srv = Server::start(repo.path(), &[]).await;
    let long = cases().into_iter().find(|c| c.truncated).unwrap().text;
    let checks: Vec<(Value, u16, &str)> = vec![
        (json!({ "model": "minilm", "input": [] }), 400, "empty list"),
        (
            json!({ "model": "minilm", "input": ["ok", 7] }),
            400,
            "input[1] must be a string like the other elements, got a number",
        ),
        (
            json!({ "model": "minilm", "input": [101, 2.5] }),
            400,
            "input[1] must be a token id (an integer from 0 to 2^32 - 1), got 2.5",
        ),
        (
            json!({ "model": "minilm", "input": [[101, 102], [101, -3]] }),
            400,
            "input[1][1] must be a token id",
        ),
        (
            json!({ "model": "minilm", "input": [[101], "ok"] }),
            400,
            "input[1] must be a token array like the other elements",
        ),
        (
            json!({ "model": "minilm", "input": [[101], []] }),
            400,
            "input[1] is an empty token array",
        ),
        (
            json!({ "model": "minilm", "input": [[101, 99999]] }),
            400,
            "token 1 of token array 0 is id 99999, outside the model's vocabulary of 30522 ids",
        ),
        (
            json!({ "model": "minilm", "input": [""] }),
            400,
            "text 0 is empty",
        ),
        (json!({ "model": "minilm" }), 400, "missing field `input`"),
        (
            json!({ "model": "nope", "input": "x" }),
            404,
            "unknown model 'nope'",
        ),
        (
            json!({ "model": "minilm_strict", "input": ["a", "b", "c", "d", "e"] }),
            400,
            "at most 4 per request",
        ),
        (
            json!({ "model": "minilm_strict", "input": [long] }),
            400,
            "truncation is off",
        ),
        (
            json!({ "model": "minilm", "input": "x", "encoding_format": "int8" }),
            400,
            "'float' or 'base64'",
        ),
        (
            json!({ "model": "minilm", "input": "x", "dimensions": 64 }),
            400,
            "does not support 'dimensions' 64",
        ),
    ];
    for (body, status, msg) in checks {
        let (got, resp) = srv.post("/v1/embeddings", &body).await;
        assert_eq!(got, status, "{body}: {resp}");
        let m = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(msg), "{body}: {m:?} lacks {msg:?}");
        assert_eq!(resp["error"]["code"], status);
    }
    // V2 with the wrong datatype, and the model keeps serving.
    let (status, resp) = srv
        .post("/v2/models/minilm/infer", &json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "FP32", "data": [1.0] }] }))
        .await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("datatype FP32 does not match the model's BYTES")
    );
    assert_eq!(v2_embed(&srv, "minilm", &["still fine"]).await.0, 200);
}
