//! The deployment assets against a running server: every metric that the Grafana dashboard
//! (deploy/grafana), the alert rules (deploy/prometheus) and the autoscaling rules
//! (deploy/kubernetes) name is one inferd exports, once each capability has been used —
//! inference, an experiment with feedback, a drift monitor, Kafka ingestion into a feature
//! view, a vector search.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use feature_store::testkit::Tansu;
use serde_json::json;

use crate::common::{self, Server};

/// Names a file mentions: every `inferd_[a-z0-9_]+` token.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("inferd_") {
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The deployment files that name metrics, relative to the checkout.
const USERS: &[&str] = &[
    "deploy/grafana/inferd.json",
    "deploy/prometheus/alerts.yaml",
    "deploy/kubernetes/hpa.yaml",
    "deploy/kubernetes/prometheus-adapter-rules.yaml",
    "deploy/kubernetes/keda/scaledobject.yaml",
];

/// Metrics that prometheus-adapter derives (hpa.yaml scales on it; the adapter's rule
/// computes it from inferd's queue histogram), not inferd.
const DERIVED: &[&str] = &["inferd_queue_seconds_per_request"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_alerts_and_autoscaling_name_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tansu = Tansu::start();
    tansu.create_topics(&["users"], 1).await;
    let repo = common::repo(&[("mlp", None), ("mlp_v2", None)]);
    let srv = Server::start(
        repo.path(),
        &[
            "--kafka-brokers",
            &tansu.brokers(),
            "--kafka-group",
            "e2e-deploy",
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let row = |x: f32| json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![x; 64]}]});
    // A drift monitor over mlp's traffic, its reference captured from the first rows.
    let (code, r) = srv
        .put(
            "/api/drift/mlp",
            &json!({"capture_reference": 20, "window": {"rows": 20}}),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    // An experiment on mlp_v2 (its only version twice, under two names), with feedback.
    let (code, r) = srv
        .put(
            "/api/experiments/e",
            &json!({"model": "mlp_v2", "arms": [{"name": "a", "version": 1, "weight": 1},
                                                {"name": "b", "model": "mlp", "version": 1, "weight": 1}]}),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let mut ids = Vec::new();
    for i in 0..60 {
        let (code, r) = srv
            .post("/v2/models/mlp/infer", &row(i as f32 / 60.0))
            .await;
        assert_eq!(code, 200, "{r}");
        let (code, r) = srv.post("/v2/models/mlp_v2/infer", &row(0.5)).await;
        assert_eq!(code, 200, "{r}");
        ids.push(json!({"id": r["id"], "reward": i % 2}));
    }
    let (code, r) = srv.post("/api/feedback", &json!({"feedback": ids})).await;
    assert_eq!(code, 200, "{r}");
    // A request the model refuses (failure by reason).
    let (code, _) = srv
        .post(
            "/v2/models/mlp/infer",
            &json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        )
        .await;
    assert_eq!(code, 400);
    // Kafka ingestion into a view.
    common::feed_users_view(&srv, &tansu, 1).await;
    // A vector collection and a search.
    let r = c
        .put(srv.url("/api/collections/docs"))
        .json(&json!({"dim": 4, "metric": "cosine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, _) = srv
        .post(
            "/api/collections/docs/search",
            &json!({"vector": [0.1, 0.2, 0.3, 0.4], "limit": 1}),
        )
        .await;
    assert_eq!(code, 200);
    let used: BTreeSet<String> = USERS
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            let names = names_in(&text);
            assert!(!names.is_empty(), "{f} names no inferd metric");
            names
        })
        .filter(|n| !DERIVED.contains(&n.as_str()))
        .collect();
    // The series the server exports (a histogram's as `_bucket`, `_sum`, `_count`), polled
    // until the slower ones (ingest lag, drift scores) have appeared.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", srv.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let exported: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
            .collect();
        let missing: Vec<&String> = used.difference(&exported).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "named by the deployment files but not exported: {missing:?}\nexported: {exported:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn names_are_read_whole() {
    let n = names_in(r#"rate(inferd_a_total[1m]) / x_inferd_b + "inferd_c_bucket""#);
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["inferd_a_total", "inferd_c_bucket"]
    );
}
