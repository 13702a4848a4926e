//! Drift and performance monitoring against the real binary: shifted live traffic flips the
//! verdict of exactly the shifted columns, an unshifted run stays quiet, embeddings drift,
//! labels by request id give the accuracy computed here, a full sample channel drops and
//! counts without failing a request, state survives a restart, and the Kafka path
//! (`inferd drift watch` on the real tansu broker) gives the in-process verdicts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use feature_store::testkit::Tansu;
use serde_json::{Value, json};

use crate::common::{self, Server};

const IRIS: &str = "sklearn_trees";
const NAMES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
/// Iris-like means and standard deviations per feature.
const MEANS: [f64; 4] = [5.8, 3.0, 3.7, 1.2];
const SDS: [f64; 4] = [0.8, 0.4, 1.7, 0.7];

/// SplitMix64 with Box–Muller normals: fixed seeds, the same rows on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `n` iris-like rows; `shift[j]` is added to feature j (in standard deviations).
fn iris_rows(seed: u64, n: usize, shift: [f64; 4]) -> Vec<[f32; 4]> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| std::array::from_fn(|j| (MEANS[j] + SDS[j] * (r.normal() + shift[j])) as f32))
        .collect()
}

fn reference_csv(rows: &[[f32; 4]]) -> Vec<u8> {
    let mut s = NAMES.join(",") + "\n";
    for r in rows {
        s += &r
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        s.push('\n');
    }
    s.into_bytes()
}

/// Sends rows in requests of `batch` rows; returns each request's id and predicted labels.
async fn send_iris(srv: &Server, rows: &[[f32; 4]], batch: usize) -> Vec<(String, Vec<i64>)> {
    let c = reqwest::Client::new();
    let mut out = Vec::new();
    for chunk in rows.chunks(batch) {
        let data: Vec<f32> = chunk.iter().flatten().copied().collect();
        let body = json!({"inputs": [{"name": "float_input", "shape": [chunk.len(), 4], "datatype": "FP32", "data": data}]});
        let r = c
            .post(srv.url(&format!("/v2/models/{IRIS}/infer")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let label = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "label")
            .unwrap();
        let labels = label["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        out.push((v["id"].as_str().unwrap().to_owned(), labels));
    }
    out
}

/// Polls the monitor until it has evaluated `windows` windows (bounded).
async fn wait_windows(srv: &Server, model: &str, windows: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, s) = srv.get(&format!("/api/drift/{model}")).await;
        assert_eq!(code, 200, "{s}");
        if s["windows"].as_u64() >= Some(windows) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{model}: {windows} windows not evaluated: {s}\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(status: &Value, window: u64) -> &Value {
    status["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["window"] == window)
        .unwrap_or_else(|| panic!("no window {window} in {status}"))
}

fn drifted_columns(report: &Value) -> Vec<String> {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["drifted"] == true)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// The two-sample KS statistic by brute force: the largest gap between the empirical CDFs,
/// checked at every observed value.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
    a.iter()
        .chain(b)
        .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
        .fold(0.0, f64::max)
}

const WINDOW: usize = 500;

// Seeds: the unshifted windows (14, 15) are seeds whose four KS p-values against the seed-1
// reference are all above 0.05 by scipy's own `ks_2samp` (checked once with the same
// generator in numpy); an unshifted window drifts by chance in about 1 of 5 seeds here
// (four columns at 5%, and the seed-1 reference's petal_width sits a little off its mean).

fn iris_spec() -> Value {
    json!({"window": {"rows": WINDOW}, "names": {"float_input": NAMES}})
}

async fn iris_server(data: &std::path::Path, repo: &std::path::Path, extra: &[&str]) -> Server {
    Server::start_with_data(repo, data, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_columns_drift_unshifted_stay_quiet_and_it_all_survives_a_restart() {
    let repo = common::repo(&[(IRIS, None)]);
    let data = tempfile::tempdir().unwrap();
    let srv = iris_server(data.path(), repo.path(), &[]).await;
    assert_eq!(
        srv.put(&format!("/api/drift/{IRIS}"), &iris_spec()).await.0,
        201
    );
    let reference = iris_rows(1, WINDOW, [0.0; 4]);
    let (code, r) = srv
        .put_raw(
            &format!("/api/drift/{IRIS}/reference"),
            "text/csv",
            reference_csv(&reference),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["reference"]["rows"], WINDOW);
    assert_eq!(r["reference"]["columns"]["sepal_length"]["count"], WINDOW);

    // Window 1: the same distribution, another seed (one whose KS p-values scipy puts all
    // above 0.05 against this reference: see the note on seeds below). Window 2: two
    // features shifted.
    send_iris(&srv, &iris_rows(14, WINDOW, [0.0; 4]), 10).await;
    let shifted = iris_rows(3, WINDOW, [1.0, 0.0, 0.0, 0.8]);
    send_iris(&srv, &shifted, 25).await;
    let s = wait_windows(&srv, IRIS, 2).await;
    let (quiet, loud) = (report(&s, 1), report(&s, 2));
    // The reference holds the inputs only: those are the columns tested.
    assert_eq!(quiet["columns"].as_array().unwrap().len(), 4, "{quiet}");
    assert!(drifted_columns(quiet).is_empty(), "{quiet}");
    assert_eq!(quiet["drift_detected"], false);
    assert_eq!(
        drifted_columns(loud),
        ["petal_width", "sepal_length"],
        "{loud}"
    );
    // Small reference, many values: Evidently's choice is KS; its D is the brute-force one.
    let c = column(loud, "sepal_length");
    assert_eq!(c["test"], "ks");
    let f = |rows: &[[f32; 4]]| rows.iter().map(|r| f64::from(r[0])).collect::<Vec<_>>();
    let d = ks_statistic(&f(&reference), &f(&shifted));
    assert!(
        (c["statistic"].as_f64().unwrap() - d).abs() < 1e-12,
        "{c} vs D = {d}"
    );
    assert!(c["p_value"].as_f64().unwrap() <= 0.05);
    assert_eq!(
        c["histogram"]["reference"].as_array().unwrap().len(),
        c["histogram"]["current"].as_array().unwrap().len()
    );
    // 2 of 4 columns: share 0.5 reaches Evidently's default drift share.
    assert_eq!(loud["dataset"]["share"], 0.5);
    assert_eq!(loud["drift_detected"], true);
    let labels = [("model", IRIS), ("column", "sepal_length"), ("test", "ks")];
    assert_eq!(
        srv.metric("inferd_drift_score", &labels).await,
        c["p_value"].as_f64().unwrap()
    );
    assert_eq!(
        srv.metric("inferd_drift_detected", &[("model", IRIS)])
            .await,
        1.0
    );
    assert_eq!(
        srv.metric("inferd_drift_samples_total", &[("model", IRIS)])
            .await,
        70.0
    );

    // Restart on the same data directory: reference and verdicts are still there, and new
    // traffic is compared with the same reference.
    drop(srv);
    let srv = iris_server(data.path(), repo.path(), &[]).await;
    let (_, after) = srv.get(&format!("/api/drift/{IRIS}")).await;
    assert_eq!(after["reports"], s["reports"]);
    assert_eq!(after["reference"]["rows"], WINDOW);
    assert_eq!(
        srv.metric("inferd_drift_detected", &[("model", IRIS)])
            .await,
        1.0
    );
    send_iris(&srv, &iris_rows(15, WINDOW, [0.0; 4]), 50).await;
    let s = wait_windows(&srv, IRIS, 3).await;
    assert!(drifted_columns(report(&s, 3)).is_empty(), "{s}");
    assert_eq!(
        srv.metric("inferd_drift_detected", &[("model", IRIS)])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_embedding_flips_embedding_drift() {
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(repo.path(), &[]).await;
    // The mlp's 64-wide input as one embedding; the reference is captured from traffic.
    let spec = json!({"embeddings": ["input"], "capture_reference": 200, "window": {"rows": 200},
                      "embedding": {"permutations": 200, "max_rows": 200}});
    assert_eq!(srv.put("/api/drift/mlp", &spec).await.0, 201);
    let send = |seed: u64, shift: f64| {
        let srv = &srv;
        async move {
            let mut r = Rng(seed);
            let c = reqwest::Client::new();
            for _ in 0..20 {
                let data: Vec<f32> = (0..10 * 64).map(|_| (r.uniform() + shift) as f32).collect();
                let body = json!({"inputs": [{"name": "input", "shape": [10, 64], "datatype": "FP32", "data": data}]});
                let resp = c
                    .post(srv.url("/v2/models/mlp/infer"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
    };
    send(10, 0.0).await; // the reference
    send(11, 0.0).await; // window 1
    send(12, 0.15).await; // window 2
    let s = wait_windows(&srv, "mlp", 2).await;
    assert_eq!(s["reference"]["source"], "capture");
    assert_eq!(s["reference"]["embeddings"]["input"], json!([64, 200]));
    let e = |w| report(&s, w)["embeddings"][0].clone();
    assert_eq!(e(1)["name"], "input");
    assert_eq!(e(1)["method"], "mmd");
    assert_eq!(e(1)["drifted"], false, "{}", e(1));
    assert_eq!(e(2)["drifted"], true, "{}", e(2));
    assert!(e(2)["statistic"].as_f64().unwrap() > e(1)["statistic"].as_f64().unwrap());
    assert_eq!(report(&s, 2)["drift_detected"], true);
    let labels = [("model", "mlp"), ("column", "input"), ("test", "mmd")];
    assert_eq!(
        srv.metric("inferd_drift_score", &labels).await,
        e(2)["p_value"].as_f64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_by_request_id_give_the_accuracy_computed_here() {
    let repo = common::repo(&[(IRIS, None)]);
    let srv = Server::start(repo.path(), &[]).await;
    assert_eq!(
        srv.put(&format!("/api/drift/{IRIS}"), &iris_spec()).await.0,
        201
    );
    let served = send_iris(&srv, &iris_rows(5, 60, [0.0; 4]), 1).await;
    // Labels for 40 of the 60 requests: class i % 3.
    let feedback: Vec<Value> = served[..40]
        .iter()
        .enumerate()
        .map(|(i, (id, _))| json!({"id": id, "truth": i % 3}))
        .collect();
    let (code, r) = srv
        .post("/api/feedback", &json!({"feedback": feedback}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["labelled"], 40, "{r}");
    assert_eq!(r["rejected"], json!([]));
    let correct = served[..40]
        .iter()
        .enumerate()
        .filter(|(i, (_, p))| p[0] == (*i % 3) as i64)
        .count();
    let accuracy = correct as f64 / 40.0;
    let (_, s) = srv.get(&format!("/api/drift/{IRIS}")).await;
    let p = &s["performance"][0];
    assert_eq!(p["version"], "1");
    assert_eq!(
        (p["predicted_rows"].as_u64(), p["labelled_rows"].as_u64()),
        (Some(60), Some(40))
    );
    assert_eq!(p["labelled_share"].as_f64().unwrap(), 40.0 / 60.0);
    assert_eq!(
        p["classification"]["accuracy"].as_f64().unwrap(),
        accuracy,
        "{p}"
    );
    let labels = [("model", IRIS), ("version", "1"), ("metric", "accuracy")];
    assert_eq!(
        srv.metric("inferd_model_performance", &labels).await,
        accuracy
    );

    // Bad truths are refused one by one, with why; the good one in the batch still counts.
    let (code, r) = srv
        .post(
            "/api/feedback",
            &json!({"feedback": [
                {"id": served[40].0, "truth": 7},
                {"id": "no-such-request", "truth": 1},
                {"id": served[41].0, "truth": [1, 2]},
                {"id": served[42].0, "truth": "setosa"},
                {"id": served[43].0, "truth": 1},
            ]}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["labelled"], 1);
    let reasons: Vec<(u64, String)> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{r}"
    );
    assert!(reasons[0].1.contains("not a class index"), "{r}");
    assert!(
        reasons[1]
            .1
            .contains("no drift monitor sampled request 'no-such-request'"),
        "{r}"
    );
    assert!(
        reasons[2].1.contains("had 1 rows; its truth has 2 values"),
        "{r}"
    );
    assert!(reasons[3].1.contains("must be a number"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sample_channel_drops_and_counts_samples_and_every_request_succeeds() {
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(repo.path(), &["--drift-queue", "1"]).await;
    // Every sample slides a window whose MMD takes the worker long: the queue of one fills.
    // (100 rows to capture, 100 to fill the window, then ~10^8 kernel sums per sample.)
    let spec = json!({"embeddings": ["input"], "capture_reference": 100, "window": {"rows": 100, "slide": 1},
                      "embedding": {"permutations": 5000, "max_rows": 100}});
    assert_eq!(srv.put("/api/drift/mlp", &spec).await.0, 201);
    let c = reqwest::Client::new();
    let body = |seed: u64| {
        let mut r = Rng(seed);
        let data: Vec<f32> = (0..64).map(|_| r.uniform() as f32).collect();
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]})
    };
    let total = 600u64;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let (c, url) = (c.clone(), srv.url("/v2/models/mlp/infer"));
            let bodies: Vec<Value> = (0..total / 8).map(|i| body(t * 1000 + i)).collect();
            tokio::spawn(async move {
                for b in bodies {
                    let r = c.post(&url).json(&b).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let dropped = srv
        .metric(
            "inferd_drift_samples_dropped_total",
            &[("model", "mlp"), ("reason", "queue_full")],
        )
        .await;
    assert!(dropped > 0.0, "nothing dropped:\n{}", srv.log());
    // Each request was sampled (rate 1): the monitor took it or it was dropped and counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let taken = srv
            .metric("inferd_drift_samples_total", &[("model", "mlp")])
            .await;
        if taken + dropped == total as f64 {
            break;
        }
        assert!(
            taken + dropped < total as f64 && Instant::now() < deadline,
            "taken {taken} + dropped {dropped} != {total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WATCH_KEY: &str = "watch-admin-secret";

/// `inferd drift watch`, started for a test.
struct Watch {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Watch {
    /// With an admin key, `WATCH_KEY`, required on its /api/drift routes.
    async fn start(brokers: &str, topic: &str) -> Watch {
        let data = tempfile::tempdir().unwrap();
        let keys = data.path().join("keys.json");
        std::fs::write(
            &keys,
            json!({"keys": [common::key_entry("ops", WATCH_KEY, "admin")]}).to_string(),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = data.path().join("watch.log");
        let child = Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args([
                "drift",
                "watch",
                "--kafka-brokers",
                brokers,
                "--topic",
                topic,
                "--group",
                "e2e-drift",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--api-keys")
            .arg(&keys)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Watch {
            child,
            port,
            log,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(w.url("/api/drift")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "drift watch did not start:\n{}",
                w.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- drift watch log ---\n{}", self.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_path_gives_the_in_process_verdicts() {
    let tansu = Tansu::start();
    let topic = "inferd-predictions";
    tansu.create_topics(&[topic], 1).await;
    let repo = common::repo(&[(IRIS, None)]);
    let srv = Server::start(
        repo.path(),
        &[
            "--drift-kafka-topic",
            topic,
            "--drift-kafka-brokers",
            &tansu.brokers(),
        ],
    )
    .await;
    let watch = Watch::start(&tansu.brokers(), topic).await;
    let c = reqwest::Client::new();
    let csv = reference_csv(&iris_rows(1, WINDOW, [0.0; 4]));
    // The watcher asks for a key (the server here runs --no-auth, and ignores it).
    let r = c.get(watch.url("/api/drift")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(watch.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200, "metrics stay open");
    for base in [srv.url(""), watch.url("")] {
        let r = c
            .put(format!("{base}/api/drift/{IRIS}"))
            .bearer_auth(WATCH_KEY)
            .json(&iris_spec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = c
            .put(format!("{base}/api/drift/{IRIS}/reference"))
            .bearer_auth(WATCH_KEY)
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    send_iris(&srv, &iris_rows(14, WINDOW, [0.0; 4]), 10).await;
    let served = send_iris(&srv, &iris_rows(3, WINDOW, [1.0, 0.0, 0.0, 0.8]), 25).await;
    // A truth travels the same way.
    let (_, r) = srv
        .post(
            "/api/feedback",
            &json!([{"id": served[0].0, "truth": vec![1; 25]}]),
        )
        .await;
    assert_eq!(r["labelled"], 1, "{r}");
    let local = wait_windows(&srv, IRIS, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let remote = loop {
        let s: Value = c
            .get(watch.url(&format!("/api/drift/{IRIS}")))
            .bearer_auth(WATCH_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["windows"].as_u64() >= Some(2) && s["performance"][0]["labelled_rows"] == 25 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not catch up: {s}\n{}",
            watch.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(remote["reports"], local["reports"]);
    assert_eq!(
        drifted_columns(report(&remote, 2)),
        ["petal_width", "sepal_length"]
    );
    assert_eq!(remote["performance"], local["performance"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_references_and_names_get_clear_errors_and_lose_nothing() {
    let repo = common::repo(&[(IRIS, None)]);
    let srv = Server::start(repo.path(), &[]).await;
    let path = format!("/api/drift/{IRIS}");
    let bad = |code: u16, v: &Value, says: &str| {
        assert_eq!(code, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{v} should say {says}"
        );
    };
    let (c, v) = srv.put(&path, &json!({"sample_rat": 0.5})).await;
    bad(c, &v, "unknown field `sample_rat`");
    let (c, v) = srv.put(&path, &json!({"sample_rate": 2})).await;
    bad(c, &v, "sample_rate must be in (0, 1]");
    let (c, v) = srv
        .put(&path, &json!({"columns": {"x": {"test": "anderson"}}}))
        .await;
    bad(c, &v, "unknown variant `anderson`");
    let (c, v) = srv
        .put_raw(
            &format!("{path}/reference"),
            "text/csv",
            b"a,b\n1,2\n3\n".to_vec(),
        )
        .await;
    bad(c, &v, "reference CSV");
    let (c, v) = srv
        .put(
            &format!("{path}/reference"),
            &json!({"columns": {"a": [true]}}),
        )
        .await;
    bad(c, &v, "neither a number");
    let (c, v) = srv.put("/api/drift/..secret", &json!({})).await;
    bad(c, &v, "is not a model name");
    let (c, v) = srv.get("/api/drift/nope").await;
    assert_eq!(c, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("has no drift monitor"),
        "{v}"
    );
    let (c, _) = srv.get(&format!("{path}?windows=x")).await;
    assert_eq!(c, 400);
    // Nothing above created a monitor, and the server still serves.
    let (_, list) = srv.get("/api/drift").await;
    assert_eq!(list["monitors"], json!([]));
    send_iris(&srv, &iris_rows(6, 3, [0.0; 4]), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sets_the_monitor_and_reference_and_reads_the_rest_verdicts() {
    use server::proto::inferd as pb;
    use server::proto::inferd::drift_client::DriftClient;
    use server::proto::inferd::experiments_client::ExperimentsClient;

    let repo = common::repo(&[(IRIS, None)]);
    let srv = Server::start(repo.path(), &[]).await;
    let mut d = DriftClient::connect(srv.grpc_url()).await.unwrap();
    let e = d
        .put_monitor(pb::PutMonitorRequest {
            model: IRIS.into(),
            spec_json: r#"{"window": {"rows": 0}}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("set rows, seconds"), "{e:?}");
    let created = d
        .put_monitor(pb::PutMonitorRequest {
            model: IRIS.into(),
            spec_json: iris_spec().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .created;
    assert!(created);
    let r = d
        .put_reference(pb::PutReferenceRequest {
            model: IRIS.into(),
            data: reference_csv(&iris_rows(1, WINDOW, [0.0; 4])),
            content_type: "text/csv".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.rows, r.columns.len()), (WINDOW as u64, 4));
    let served = send_iris(&srv, &iris_rows(3, WINDOW, [1.0, 0.0, 0.0, 0.8]), 50).await;
    let rest = wait_windows(&srv, IRIS, 1).await;
    // Truth by gRPC feedback.
    let mut x = ExperimentsClient::connect(srv.grpc_url()).await.unwrap();
    let fb = x
        .send_feedback(pb::SendFeedbackRequest {
            feedback: vec![pb::Feedback {
                id: served[0].0.clone(),
                truth_json: serde_json::to_string(&served[0].1).unwrap(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((fb.labelled, fb.rejected.len()), (1, 0));
    let s = d
        .get_drift(pb::GetDriftRequest {
            model: IRIS.into(),
            windows: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.windows, 1);
    assert_eq!(s.drift_detected, Some(true));
    let w = &s.reports[0];
    let rest_w = report(&rest, 1);
    let got: Vec<(String, String, f64, Option<f64>, bool)> = w
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.test.clone(),
                c.statistic,
                c.p_value,
                c.drifted,
            )
        })
        .collect();
    let want: Vec<(String, String, f64, Option<f64>, bool)> = rest_w["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["test"].as_str().unwrap().into(),
                c["statistic"].as_f64().unwrap(),
                c["p_value"].as_f64(),
                c["drifted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // The model predicted these labels itself: accuracy 1 on the one labelled request.
    assert_eq!(s.performance[0].metrics["accuracy"], 1.0);
    let status: Value = serde_json::from_str(&s.status_json).unwrap();
    assert_eq!(status["reports"][0]["columns"], rest_w["columns"]);
    let e = d
        .get_drift(pb::GetDriftRequest {
            model: "nope".into(),
            windows: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
