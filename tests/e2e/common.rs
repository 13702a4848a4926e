//! Starting the real `inferd` binary for a test, and small helpers around it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A temporary model repository holding copies of fixture models, each with an optional
/// `config.toml`.
pub fn repo(models: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in models {
        let v1 = dir.path().join(name).join("1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::copy(
            fixtures().join("models").join(name).join("1/model.onnx"),
            v1.join("model.onnx"),
        )
        .unwrap();
        if let Some(c) = config {
            std::fs::write(dir.path().join(name).join("config.toml"), c).unwrap();
        }
    }
    dir
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: every listener is held until all are picked, since a port freed
/// by one pick may be handed out again by the next (two of a server's ports once collided).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

pub struct Server {
    child: Child,
    pub http: u16,
    pub grpc: u16,
    pub metrics: u16,
    log: PathBuf,
    /// `https` when the server was started with TLS ([`Server::start_tls`]).
    scheme: &'static str,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(repo: &Path, extra: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_path_buf();
        Server::launch(repo, &dir, Some(data), extra, None).await
    }

    /// Starts with TLS (`extra` has `--tls-cert` and `--tls-key`); `client` trusts its CA
    /// (and presents a client certificate if the server asks for one) and is used for the
    /// readiness check; [`Server::url`] answers `https://` addresses.
    pub async fn start_tls(repo: &Path, extra: &[&str], client: &reqwest::Client) -> Server {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_path_buf();
        Server::launch(repo, &dir, Some(data), extra, Some(client)).await
    }

    /// Starts on a data directory the caller keeps, e.g. to start again on the same state.
    pub async fn start_with_data(repo: &Path, data_dir: &Path, extra: &[&str]) -> Server {
        Server::launch(repo, data_dir, None, extra, None).await
    }

    async fn launch(
        repo: &Path,
        data_dir: &Path,
        data: Option<tempfile::TempDir>,
        extra: &[&str],
        tls_client: Option<&reqwest::Client>,
    ) -> Server {
        let [http, grpc, metrics] = free_ports();
        let log = data_dir.join(format!("server-{http}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .arg("serve")
            .arg("--model-repository")
            .arg(repo)
            .args(["--host", "127.0.0.1"])
            .args(["--http-port", &http.to_string()])
            .args(["--grpc-port", &grpc.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            // Unauthenticated unless the test gives keys (tests/e2e/auth.rs).
            .args(
                (!extra.iter().any(|a| *a == "--api-keys" || *a == "--jwks"))
                    .then_some("--no-auth"),
            )
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn inferd");
        let mut s = Server {
            child,
            http,
            grpc,
            metrics,
            log,
            scheme: if tls_client.is_some() {
                "https"
            } else {
                "http"
            },
            _data: data,
        };
        let plain = reqwest::Client::new();
        let client = tls_client.unwrap_or(&plain);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("inferd exited ({status}) before it was ready:\n{}", s.log());
            }
            let ready = client.get(s.url("/v2/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "inferd not ready after 60 s:\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.grpc)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit (bounded), returning its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "inferd did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one Prometheus sample, e.g. `metric("inferd_inference_pending_request_count", &[("model","mlp")])`;
    /// 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                (n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// Polls until the metric reaches `want` (bounded).
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.metric(name, labels).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {got}, expected {want}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

impl Server {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(self.url(path)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// PUT with a body of the given content type.
    pub async fn put_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = reqwest::Client::new()
            .put(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.put_raw(path, "application/json", serde_json::to_vec(body).unwrap())
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- inferd log ---\n{}", self.log());
        }
    }
}

/// The reference cases recorded with ONNX Runtime's Python API by tests/fixtures/gen_models.py.
pub fn reference(model: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[model].as_array().unwrap().clone()
}

/// A V2 JSON request body from a reference case's inputs.
pub fn request_body(case: &Value) -> Value {
    serde_json::json!({ "inputs": case["inputs"] })
}

/// Asserts each output of a V2 JSON response equals the reference within 1e-5.
pub fn assert_outputs_match(resp: &Value, case: &Value) {
    let outputs = resp["outputs"].as_array().expect("outputs");
    for want in case["outputs"].as_array().unwrap() {
        let got = outputs
            .iter()
            .find(|o| o["name"] == want["name"])
            .unwrap_or_else(|| panic!("output {} missing in {resp}", want["name"]));
        assert_eq!(got["shape"], want["shape"], "{}", want["name"]);
        assert_eq!(got["datatype"], want["datatype"], "{}", want["name"]);
        let (g, w) = (
            got["data"].as_array().unwrap(),
            want["data"].as_array().unwrap(),
        );
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    assert!((x - y).abs() <= 1e-5, "{}: {x} vs {y}", want["name"])
                }
                _ => assert_eq!(a, b, "{}", want["name"]),
            }
        }
    }
}

/// A keys-file entry for `secret` (its SHA-256) with one scope.
pub fn key_entry(name: &str, secret: &str, scope: &str) -> Value {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({"name": name, "sha256": hex, "scopes": [scope]})
}

/// One row of the `mlp` fixture (FP32 [1, 64], every value `x`) as a gRPC ModelInferRequest.
pub fn mlp_grpc_request(x: f32) -> server::proto::inference::ModelInferRequest {
    use server::proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![
            (0..64)
                .flat_map(|_| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// Creates the feature view `users` (join key `user_id`, feature `n`: int64) fed by the
/// Kafka topic `users`, and sends that topic one event: `u1` has `n`.
pub async fn feed_users_view(srv: &Server, tansu: &feature_store::testkit::Tansu, n: i64) {
    let r = reqwest::Client::new()
        .put(srv.url("/api/feature-views/users"))
        .json(&serde_json::json!({"entities": ["user_id"], "ttl": "1h",
            "features": [{"name": "n", "type": "int64"}],
            "source": {"topic": "users", "timestamp_field": "ts"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    feature_store::testkit::produce(
        &tansu.producer(),
        "users",
        "u1",
        serde_json::json!({"user_id": "u1", "ts": ts, "n": n})
            .to_string()
            .as_bytes(),
    )
    .await;
}
