//! The model registry: uploads, validation, aliases, hot swap under load, restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{self, Server};

fn artifact(model: &str) -> Vec<u8> {
    std::fs::read(
        common::fixtures()
            .join("models")
            .join(model)
            .join("1/model.onnx"),
    )
    .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn upload(srv: &Server, name: &str, body: Vec<u8>, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(srv.url(&format!("/api/models/{name}/versions?wait=true{query}")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn put_alias(srv: &Server, name: &str, alias: &str, version: u64) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(srv.url(&format!("/api/models/{name}/aliases/{alias}")))
        .json(&json!({ "version": version }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(srv: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::get(srv.url(path)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The reference outputs of the first `mlp` case for each artifact: tells v1 from v2.
fn expected(model: &str) -> Vec<f64> {
    let case = common::reference(model).remove(0);
    case["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn which(resp: &Value, v1: &[f64], v2: &[f64]) -> Option<u64> {
    let got: Vec<f64> = resp["outputs"][0]["data"]
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let close =
        |w: &[f64]| got.len() == w.len() && got.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-5);
    if close(v1) {
        Some(1)
    } else if close(v2) {
        Some(2)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alias_moves_under_load_drop_no_request_and_switch_outputs() {
    let repo = tempfile::tempdir().unwrap();
    let srv = Arc::new(Server::start(repo.path(), &[]).await);
    let (v1_out, v2_out) = (expected("mlp"), expected("mlp_v2"));
    assert_ne!(
        which(&json!({"outputs": [{"data": v1_out}]}), &v1_out, &v2_out),
        Some(2)
    );

    let bytes = artifact("mlp");
    let (status, v) = upload(
        &srv,
        "mlp",
        bytes.clone(),
        &format!("&sha256={}&label=team=search", sha256(&bytes)),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["version"].as_u64(), v["status"].as_str()),
        (Some(1), Some("READY"))
    );
    assert_eq!(v["sha256"], sha256(&bytes));
    assert_eq!(v["size"], bytes.len());
    assert_eq!(v["labels"]["team"], "search");
    assert_eq!(v["inputs"][0]["name"], "input");
    assert_eq!(put_alias(&srv, "mlp", "production", 1).await.0, 200);

    // Steady load on the model without a version: it follows `production`.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let body = common::request_body(&common::reference("mlp")[0]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (srv, stop, seen, body) = (
            Arc::clone(&srv),
            Arc::clone(&stop),
            Arc::clone(&seen),
            body.clone(),
        );
        let (v1_out, v2_out) = (v1_out.clone(), v2_out.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut log: Vec<(Instant, Instant, u16, Option<u64>, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = client
                    .post(srv.url("/v2/models/mlp/infer"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let resp: Value = r.json().await.unwrap();
                let kind = which(&resp, &v1_out, &v2_out);
                seen[kind.unwrap_or(0) as usize].fetch_add(1, Ordering::Relaxed);
                let version = resp["model_version"].as_str().unwrap_or("").to_owned();
                log.push((started, Instant::now(), status, kind, version));
            }
            log
        }));
    }
    let wait_for = |i: usize, n: usize| {
        let seen = Arc::clone(&seen);
        async move {
            let base = seen[i].load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen[i].load(Ordering::Relaxed) < base + n {
                assert!(Instant::now() < deadline, "no responses from version {i}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(1, 20).await;

    // Upload v2: it validates and loads, but `production` still serves v1.
    let (status, v) = upload(&srv, "mlp", artifact("mlp_v2"), "").await;
    assert_eq!((status, v["version"].as_u64()), (201, Some(2)), "{v}");
    wait_for(1, 20).await;
    assert_eq!(
        seen[2].load(Ordering::Relaxed),
        0,
        "v2 served before the alias moved"
    );

    let (status, m) = put_alias(&srv, "mlp", "production", 2).await;
    assert_eq!(status, 200, "{m}");
    let swapped = Instant::now();
    wait_for(2, 40).await;

    let rollback_sent = Instant::now();
    let r = reqwest::Client::new()
        .post(srv.url("/api/models/mlp/aliases/production/rollback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["aliases"]["production"]["version"], 1);
    let history: Vec<u64> = m["aliases"]["production"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_u64().unwrap())
        .collect();
    assert_eq!(history, vec![1, 2, 1]);
    let rolled_back = Instant::now();
    wait_for(1, 40).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for c in clients {
        for (started, ended, status, kind, version) in c.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "a request failed during the swaps");
            let kind = kind.expect("every response is v1's or v2's output");
            assert_eq!(
                version,
                kind.to_string(),
                "model_version names the version that answered"
            );
            // Requests entirely inside a phase see that phase's version; those overlapping a
            // move may see either.
            if started > swapped && ended < rollback_sent {
                assert_eq!(kind, 2, "a request after the move to v2 got v1");
            }
            if started > rolled_back {
                assert_eq!(kind, 1, "a request after the rollback got v2");
            }
        }
    }
    assert!(total >= 100, "{total} requests");
    assert!(seen[2].load(Ordering::Relaxed) >= 40);
    assert_eq!(seen[0].load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bad_uploads_fail_cleanly_and_leave_serving_untouched() {
    let repo = tempfile::tempdir().unwrap();
    let srv = Server::start(repo.path(), &["--max-upload-bytes", "100000"]).await;
    let good = artifact("mlp");
    assert_eq!(upload(&srv, "mlp", good.clone(), "").await.0, 201);
    assert_eq!(put_alias(&srv, "mlp", "production", 1).await.0, 200);

    // Not a model: stored as version 2, fails its trial load, never served.
    let (status, v) = upload(&srv, "mlp", b"definitely not an ONNX model".to_vec(), "").await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(
        (v["version"].as_u64(), v["status"].as_str()),
        (Some(2), Some("FAILED"))
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("failed to load model 'mlp'"),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("failed validation"),
        "{v}"
    );

    // A truncated ONNX file: the same.
    let (status, v) = upload(&srv, "mlp", good[..good.len() / 2].to_vec(), "").await;
    assert_eq!(
        (status, v["version"].as_u64(), v["status"].as_str()),
        (422, Some(3), Some("FAILED")),
        "{v}"
    );

    // Over the size limit: refused while streaming, no version created.
    let (status, v) = upload(&srv, "mlp", vec![7u8; 150_000], "").await;
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit of 100000 bytes"),
        "{v}"
    );

    // A digest that does not match: refused, no version created.
    let (status, v) = upload(
        &srv,
        "mlp",
        good.clone(),
        &format!("&sha256={}", "0".repeat(64)),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("SHA-256 mismatch"),
        "{v}"
    );
    let (status, v) = upload(&srv, "mlp", good.clone(), "&sha256=abc").await;
    assert_eq!(status, 400, "{v}");

    // Names are checked before anything touches the disk.
    let (status, v) = upload(&srv, "bad%20name", good.clone(), "").await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("invalid model name"),
        "{v}"
    );
    let (status, v) = upload(&srv, "..", good.clone(), "").await;
    assert!(status == 400 || status == 404, "{status} {v}");
    let (status, v) = put_alias(&srv, "mlp", "1", 1).await;
    assert_eq!(status, 400, "{v}");

    // The serving version was never disturbed.
    let case = common::reference("mlp").remove(0);
    let (status, resp) = srv
        .post("/v2/models/mlp/infer", &common::request_body(&case))
        .await;
    assert_eq!(status, 200, "{resp}");
    common::assert_outputs_match(&resp, &case);
    assert_eq!(resp["model_version"], "1");

    let (_, m) = get(&srv, "/api/models/mlp").await;
    let statuses: Vec<(u64, &str)> = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, vec![(1, "READY"), (2, "FAILED"), (3, "FAILED")]);
    assert_eq!(m["default_version"], 1);
    let leftovers = std::fs::read_dir(repo.path().join("mlp/.uploads")).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0, "partial uploads left behind");

    // Aliases only point at READY versions; aliased versions cannot be deleted.
    let (status, v) = put_alias(&srv, "mlp", "staging", 2).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("is FAILED, not READY"),
        "{v}"
    );
    let r = reqwest::Client::new()
        .delete(srv.url("/api/models/mlp/versions/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("aliases point at it: production"),
        "{v}"
    );
    let r = reqwest::Client::new()
        .delete(srv.url("/api/models/mlp/versions/3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get(&srv, "/api/models/mlp/versions/3").await.0, 404);

    // Triton's repository API sees the registry's versions.
    let (_, index) = srv.post("/v2/repository/index", &json!({})).await;
    let rows: Vec<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("1".into(), "READY".into()),
            ("2".into(), "UNAVAILABLE".into())
        ]
    );
    assert!(
        index[1]["reason"]
            .as_str()
            .unwrap()
            .contains("FAILED validation")
    );
    assert_eq!(
        srv.post("/v2/repository/models/mlp/unload", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        srv.post("/v2/models/mlp/infer", &common::request_body(&case))
            .await
            .0,
        503
    );
    assert_eq!(
        srv.post("/v2/repository/models/mlp/load", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        srv.post("/v2/models/mlp/infer", &common::request_body(&case))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn restart_restores_versions_and_aliases_even_after_kill_during_an_upload() {
    use std::io::Write;

    let repo = tempfile::tempdir().unwrap();
    let mut srv = Server::start(repo.path(), &[]).await;
    assert_eq!(upload(&srv, "mlp", artifact("mlp"), "").await.0, 201);
    assert_eq!(upload(&srv, "mlp", artifact("mlp_v2"), "").await.0, 201);
    assert_eq!(put_alias(&srv, "mlp", "production", 2).await.0, 200);
    assert_eq!(put_alias(&srv, "mlp", "staging", 1).await.0, 200);

    // An upload in progress when the server is killed: half the bytes sent.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", srv.http)).unwrap();
    write!(
        conn,
        "POST /api/models/mlp/versions HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&[1u8; 300_000]).unwrap();
    let uploads = repo.path().join("mlp/.uploads");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&uploads).map_or(0, |d| d.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    srv.kill9();
    drop(conn);

    let srv = Server::start(repo.path(), &[]).await;
    assert!(!uploads.exists(), "the partial upload was not discarded");
    let (_, m) = get(&srv, "/api/models/mlp").await;
    let versions: Vec<(u64, &str, &str)> = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["status"].as_str().unwrap(),
                v["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, vec![(1, "READY", "READY"), (2, "READY", "READY")]);
    assert_eq!(m["aliases"]["production"]["version"], 2);
    assert_eq!(m["aliases"]["staging"]["version"], 1);

    let (v1, v2) = (expected("mlp"), expected("mlp_v2"));
    let body = common::request_body(&common::reference("mlp")[0]);
    let (_, resp) = srv.post("/v2/models/mlp/infer", &body).await;
    assert_eq!(
        which(&resp, &v1, &v2),
        Some(2),
        "no version: follows production"
    );
    let (_, resp) = srv
        .post("/v2/models/mlp/versions/staging/infer", &body)
        .await;
    assert_eq!(
        which(&resp, &v1, &v2),
        Some(1),
        "an alias where a version goes"
    );
    let (status, resp) = srv
        .post("/v2/models/mlp/versions/canary/infer", &body)
        .await;
    assert_eq!(
        (status, resp["error"].as_str().unwrap()),
        (404, "model 'mlp' has no version 'canary'")
    );

    // The next upload gets a fresh number.
    let (status, v) = upload(&srv, "mlp", artifact("mlp"), "").await;
    assert_eq!((status, v["version"].as_u64()), (201, Some(3)), "{v}");
}

fn cli(srv: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .arg("models")
        .args(["--server", &srv.url("")])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_grpc_drive_the_same_registry() {
    use server::proto::inferd::model_registry_client::ModelRegistryClient;
    use server::proto::inferd::{
        GetModelRequest, SetAliasRequest, UploadHeader, UploadVersionRequest,
        upload_version_request::Part,
    };

    let repo = tempfile::tempdir().unwrap();
    let srv = Server::start(repo.path(), &[]).await;
    let models = common::fixtures().join("models");
    let v1 = models.join("mlp/1/model.onnx");
    let v2 = models.join("mlp_v2/1/model.onnx");

    let (ok, out, err) = cli(
        &srv,
        &[
            "push",
            v1.to_str().unwrap(),
            "--name",
            "mlp",
            "--alias",
            "production",
            "--label",
            "team=search",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("mlp version 1: READY"), "{out}");
    assert!(out.contains("mlp: production -> version 1"), "{out}");

    // A version uploaded with its own config.toml (multipart) serves with it.
    let cfg = repo.path().join("v2-config.toml");
    std::fs::write(&cfg, "max_batch_size = 4\n").unwrap();
    let (ok, out, err) = cli(
        &srv,
        &[
            "push",
            v2.to_str().unwrap(),
            "--name",
            "mlp",
            "--alias",
            "production",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("mlp: production -> version 2"), "{out}");
    let (_, c) = get(&srv, "/v2/models/mlp/config").await;
    assert_eq!(c["max_batch_size"], 4);
    // v1 is neither aliased nor the latest any more: unloaded.
    let (_, v) = get(&srv, "/api/models/mlp/versions/1").await;
    assert_eq!(v["state"], "UNAVAILABLE", "{v}");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("not served"),
        "{v}"
    );
    assert_eq!(get(&srv, "/v2/models/mlp/versions/1/config").await.0, 503);

    let (ok, out, err) = cli(&srv, &["rollback", "mlp", "production"]);
    assert!(ok, "{err}");
    assert!(out.contains("production -> version 1"), "{out}");
    let (_, c) = get(&srv, "/v2/models/mlp/versions/1/config").await;
    assert_eq!(c["max_batch_size"], 64);
    let (ok, _, err) = cli(&srv, &["delete", "mlp", "1"]);
    assert!(!ok);
    assert!(
        err.contains("409") && err.contains("aliases point at it: production"),
        "{err}"
    );
    let (ok, out, _) = cli(&srv, &["show", "mlp"]);
    assert!(ok);
    assert!(
        out.contains("alias production -> v1 (history: 1 -> 2 -> 1)"),
        "{out}"
    );

    // gRPC: a streamed upload, digest checked.
    let bytes = artifact("mlp");
    let upload = |digest: String| {
        let mut msgs = vec![UploadVersionRequest {
            part: Some(Part::Header(UploadHeader {
                name: "mlp".into(),
                expected_sha256: digest,
                wait: true,
                ..Default::default()
            })),
        }];
        msgs.extend(bytes.chunks(10_000).map(|c| UploadVersionRequest {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        futures::stream::iter(msgs)
    };
    let mut client = ModelRegistryClient::connect(srv.grpc_url()).await.unwrap();
    let e = client
        .upload_version(upload("ab".repeat(32)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("SHA-256 mismatch"), "{}", e.message());
    let v = client
        .upload_version(upload(sha256(&bytes)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.version, v.status.as_str(), v.sha256.as_str()),
        (3, "READY", sha256(&bytes).as_str())
    );
    let m = client
        .set_alias(SetAliasRequest {
            name: "mlp".into(),
            alias: "staging".into(),
            version: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.default_version, Some(1));
    let m = client
        .get_model(GetModelRequest { name: "mlp".into() })
        .await
        .unwrap()
        .into_inner();
    let aliases: Vec<(String, u64)> = m
        .aliases
        .iter()
        .map(|a| (a.name.clone(), a.version))
        .collect();
    assert_eq!(
        aliases,
        vec![("production".into(), 1), ("staging".into(), 3)]
    );
    let e = client
        .set_alias(SetAliasRequest {
            name: "mlp".into(),
            alias: "x".into(),
            version: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
