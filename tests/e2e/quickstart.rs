//! The quick start: `inferd serve` with no repository serves the embedded examples (and the
//! sentence encoder scripts/setup.sh fetched).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

#[tokio::test]
async fn serve_without_a_repository_serves_the_examples() {
    let data = tempfile::tempdir().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let http = port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args([
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--http-port",
            &http,
            "--grpc-port",
            &port(),
            "--metrics-port",
            &port(),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{url}/v2/health/ready"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let index: Value = reqwest::Client::new()
        .post(format!("{url}/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ready: Vec<&str> = index
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "READY")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(ready, vec!["all-MiniLM-L6-v2", "mlp", "sklearn_trees"]);
    let case = common::reference("sklearn_trees").remove(0);
    let r = reqwest::Client::new()
        .post(format!("{url}/v2/models/sklearn_trees/infer"))
        .json(&common::request_body(&case))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    common::assert_outputs_match(&r.json().await.unwrap(), &case);
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/embeddings"))
        .json(&json!({ "model": "all-MiniLM-L6-v2", "input": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
