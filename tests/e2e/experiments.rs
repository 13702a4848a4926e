//! A/B experiments against the real binary: the split and its SRM check, stickiness across
//! a restart, weight changes, bypass by explicit version, shadow arms, guardrails, promotion
//! under load, the bandit, feedback, and bad configurations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Server, fixtures};

/// `mlp` with four versions: 1 = the mlp, 2 = the same signature with other weights,
/// 3 = the same signature, failing for inputs whose first value is >= 3, 4 = the same
/// signature, slow (tens of milliseconds). Every version is served; `production` is set to 1
/// by [`start`].
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (v, src) in [
        (1, "mlp"),
        (2, "mlp_v2"),
        (3, "mlp_faulty"),
        (4, "mlp_slow"),
    ] {
        let d = dir.path().join("mlp").join(v.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(
            fixtures().join("models").join(src).join("1/model.onnx"),
            d.join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("mlp/config.toml"),
        "[version_policy]\nall = true\n",
    )
    .unwrap();
    // Another model with another signature, for the signature check.
    let d = dir.path().join("two_inputs/1");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        fixtures().join("models/two_inputs/1/model.onnx"),
        d.join("model.onnx"),
    )
    .unwrap();
    dir
}

async fn start(repo: &std::path::Path, data: Option<&std::path::Path>) -> Server {
    start_with(repo, data, &[]).await
}

async fn start_with(
    repo: &std::path::Path,
    data: Option<&std::path::Path>,
    extra: &[&str],
) -> Server {
    let srv = match data {
        Some(d) => Server::start_with_data(repo, d, extra).await,
        None => Server::start(repo, extra).await,
    };
    let r = reqwest::Client::new()
        .put(srv.url("/api/models/mlp/aliases/production"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    srv
}

/// A V2 body for the mlp: 64 values, the first one `first`.
fn body(first: f32, params: Value) -> Value {
    let mut data = vec![0.25f32; 64];
    data[0] = first;
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}], "parameters": params})
}

struct Reply {
    status: u16,
    arm: Option<String>,
    version: Option<String>,
    id: Option<String>,
    body: Value,
}

async fn infer(
    c: &reqwest::Client,
    srv: &Server,
    path: &str,
    user: Option<&str>,
    b: &Value,
) -> Reply {
    let mut r = c.post(srv.url(path)).json(b);
    if let Some(u) = user {
        r = r.header("x-user-id", u);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let arm = r
        .headers()
        .get("inferd-experiment-arm")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    Reply {
        status,
        arm,
        version: body["model_version"].as_str().map(str::to_owned),
        id: body["id"].as_str().map(str::to_owned),
        body,
    }
}

async fn put(srv: &Server, name: &str, spec: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(srv.url(&format!("/api/experiments/{name}")))
        .json(&spec)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(srv: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::get(srv.url(path)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Arm of each unit, asked `concurrency` at a time.
async fn arms_of(srv: &Server, users: &[String]) -> Vec<String> {
    let c = reqwest::Client::new();
    let b = body(0.5, json!({}));
    futures::stream::iter(users)
        .map(|u| {
            let (c, b) = (&c, &b);
            async move {
                let r = infer(c, srv, "/v2/models/mlp/infer", Some(u), b).await;
                assert_eq!(r.status, 200, "{}", r.body);
                r.arm.expect("routed through the experiment")
            }
        })
        .buffered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_is_exact_sticky_across_a_restart_and_checked_for_srm() {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let mut srv = start(repo.path(), Some(data.path())).await;
    let (status, r) = put(
        &srv,
        "split",
        json!({"model": "mlp", "unit": {"header": "x-user-id"},
               "arms": [{"name": "control", "version": 1, "weight": 70},
                        {"name": "candidate", "version": 2, "weight": 30}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");

    let n = 20_000;
    let users: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
    let arms = arms_of(&srv, &users).await;
    let candidate = arms.iter().filter(|a| *a == "candidate").count() as f64;
    let sigma = (n as f64 * 0.3 * 0.7).sqrt();
    assert!(
        (candidate - 0.3 * n as f64).abs() < 4.0 * sigma,
        "candidate got {candidate} of {n}"
    );
    let (_, r) = get(&srv, "/api/experiments/split").await;
    assert_eq!(
        r["arms"][0]["exposures"].as_u64().unwrap() + r["arms"][1]["exposures"].as_u64().unwrap(),
        n as u64,
        "{r}"
    );
    assert_eq!(r["srm"]["mismatch"], false, "{}", r["srm"]);
    assert_eq!(r["trustworthy"], true);

    // The same units again: the same arms.
    let sample: Vec<String> = users[..1000].to_vec();
    assert_eq!(arms_of(&srv, &sample).await, arms[..1000]);

    // A request naming a version bypasses the experiment.
    let c = reqwest::Client::new();
    let direct = infer(
        &c,
        &srv,
        "/v2/models/mlp/versions/2/infer",
        Some("user-1"),
        &body(0.5, json!({})),
    )
    .await;
    assert_eq!(
        (
            direct.status,
            direct.arm.as_deref(),
            direct.version.as_deref()
        ),
        (200, None, Some("2"))
    );

    // Across a restart: same arms, counts kept.
    srv.sigterm();
    assert!(srv.wait_exit().await.success());
    drop(srv);
    let srv = start(repo.path(), Some(data.path())).await;
    let (_, r) = get(&srv, "/api/experiments/split").await;
    let exposures =
        r["arms"][0]["exposures"].as_u64().unwrap() + r["arms"][1]["exposures"].as_u64().unwrap();
    assert_eq!(exposures, n as u64 + 1000, "counts survive a restart: {r}");
    assert_eq!(arms_of(&srv, &sample).await, arms[..1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weight_changes_move_only_the_units_they_must_and_parameters_carry_unit_keys() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let (status, r) = put(
        &srv,
        "w",
        json!({"model": "mlp", "unit": {"parameter": "user_id"},
               "arms": [{"name": "a", "version": 1, "weight": 50}, {"name": "b", "version": 2, "weight": 50}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let c = reqwest::Client::new();
    let arms = |srv: &Server| {
        let c = c.clone();
        let srv_url = srv.url("/v2/models/mlp/infer");
        async move {
            let mut out = Vec::new();
            for i in 0..2000 {
                let r = c
                    .post(&srv_url)
                    .json(&body(0.5, json!({"user_id": format!("u{i}")})))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let arm = r.headers()["inferd-experiment-arm"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let b: Value = r.json().await.unwrap();
                // The arm is also a response parameter.
                assert_eq!(b["parameters"]["experiment_arm"], arm.as_str());
                assert_eq!(b["parameters"]["experiment"], "w");
                out.push(arm);
            }
            out
        }
    };
    let before = arms(&srv).await;
    let r = reqwest::Client::new()
        .post(srv.url("/api/experiments/w/weights"))
        .json(&json!({"weights": {"a": 60, "b": 40}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = arms(&srv).await;
    let moved: Vec<(&String, &String)> =
        before.iter().zip(&after).filter(|(x, y)| x != y).collect();
    assert!(
        moved.iter().all(|(from, to)| *from == "b" && *to == "a"),
        "only b → a moves"
    );
    // 10% of the buckets move: about 200 of 2000 units (binomial, 4σ ≈ 54).
    assert!(moved.len() <= 254, "{} units moved", moved.len());
    assert!(moved.len() >= 146, "{} units moved", moved.len());
}

/// Polls the first shadow arm's results until `done` says so (bounded: 20 s).
async fn settled_shadow(srv: &Server, exp: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let mut shadow = Value::Null;
    for _ in 0..400 {
        let (_, r) = get(srv, &format!("/api/experiments/{exp}")).await;
        shadow = r["shadows"][0].clone();
        if done(&shadow) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    shadow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_arm_gets_copies_and_cannot_touch_the_caller() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let (status, r) = put(
        &srv,
        "shadowed",
        json!({"model": "mlp",
               "arms": [{"name": "main", "version": 1, "weight": 1}, {"name": "idle", "version": 2, "weight": 0}],
               "shadows": [{"name": "faulty", "version": 3, "percent": 50}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let c = reqwest::Client::new();
    // First value 5: version 3 fails on it, version 1 does not.
    let b = body(5.0, json!({}));
    let direct = infer(&c, &srv, "/v2/models/mlp/versions/1/infer", None, &b).await;
    assert_eq!(direct.status, 200);
    let n = 400;
    for _ in 0..n {
        let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
        assert_eq!(
            (r.status, r.arm.as_deref()),
            (200, Some("main")),
            "{}",
            r.body
        );
        assert_eq!(
            r.body["outputs"], direct.body["outputs"],
            "the caller gets the main arm's answer"
        );
    }
    // Every copy fails; wait until the last ones have been counted (the count holds still).
    let mut last = Value::Null;
    let shadow = settled_shadow(&srv, "shadowed", |s| {
        let done = s["requests"] == s["errors"] && *s == last;
        last = s.clone();
        done
    })
    .await;
    let copies = shadow["requests"].as_f64().unwrap();
    let sigma = (n as f64 * 0.25).sqrt();
    assert!((copies - 200.0).abs() < 4.0 * sigma, "{shadow}");
    assert_eq!(shadow["errors"], shadow["requests"], "{shadow}");
    let (_, r) = get(&srv, "/api/experiments/shadowed").await;
    assert_eq!(r["arms"][0]["errors"], 0);
    assert!(
        srv.metric(
            "inferd_experiment_errors_total",
            &[("experiment", "shadowed"), ("arm", "faulty")]
        )
        .await
            >= copies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_shadow_arm_never_holds_the_caller() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let (status, r) = put(
        &srv,
        "slow",
        json!({"model": "mlp",
               "arms": [{"name": "main", "version": 1, "weight": 1}, {"name": "idle", "version": 2, "weight": 0}],
               "shadows": [{"name": "slow", "version": 4, "percent": 100}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let c = reqwest::Client::new();
    let b = body(0.5, json!({}));
    let direct = infer(&c, &srv, "/v2/models/mlp/versions/1/infer", None, &b).await;
    let n = 30;
    for _ in 0..n {
        let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
        assert_eq!(
            (r.status, r.arm.as_deref()),
            (200, Some("main")),
            "{}",
            r.body
        );
        assert_eq!(r.body["outputs"], direct.body["outputs"]);
    }
    // Every caller has its answer while most copies are still queued or running on the slow
    // version (each takes far longer than a caller's whole request): nobody waited for them.
    let (_, r) = get(&srv, "/api/experiments/slow").await;
    let done_then = r["shadows"][0]["requests"].as_u64().unwrap();
    assert!(
        done_then < n / 2,
        "copies done when the callers were: {done_then} of {n}"
    );
    // They all run in the end, without errors.
    let shadow = settled_shadow(&srv, "slow", |s| s["requests"] == n).await;
    assert_eq!(
        (shadow["requests"].as_u64(), shadow["errors"].as_u64()),
        (Some(n), Some(0)),
        "{shadow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guardrail_takes_an_erroring_arm_out() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let (status, r) = put(
        &srv,
        "guarded",
        json!({"model": "mlp",
               "arms": [{"name": "stable", "version": 1, "weight": 50}, {"name": "broken", "version": 3, "weight": 50}],
               "guardrails": [{"rule": "error_rate", "max": 0.2, "min_requests": 20}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let c = reqwest::Client::new();
    let b = body(5.0, json!({}));
    let mut broken_errors = 0;
    for _ in 0..200 {
        let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
        match r.status {
            200 => assert_eq!(r.arm.as_deref(), Some("stable")),
            500 => broken_errors += 1,
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(broken_errors, 20, "the arm is out after its 20th request");
    let (_, r) = get(&srv, "/api/experiments/guarded").await;
    let broken = &r["arms"][1];
    assert_eq!(broken["stopped_by_guardrail"], true, "{r}");
    assert_eq!(broken["weight"], 0.0);
    assert_eq!(broken["exposures"], 20);
    assert_eq!(r["arms"][0]["exposures"], 180);
    let ev = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "guardrail")
        .expect("a guardrail event");
    assert_eq!(
        (
            ev["arm"].as_str(),
            ev["rule"].as_str(),
            ev["value"].as_f64()
        ),
        (Some("broken"), Some("error_rate"), Some(1.0))
    );
    // From now on the arm gets nothing.
    for _ in 0..100 {
        let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
        assert_eq!((r.status, r.arm.as_deref()), (200, Some("stable")));
    }
    assert_eq!(
        srv.metric(
            "inferd_experiment_guardrail_trips_total",
            &[("experiment", "guarded"), ("arm", "broken")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_moves_production_under_load_with_no_failed_request() {
    let repo = repo();
    let srv = Arc::new(start(repo.path(), None).await);
    let (status, r) = put(
        &srv,
        "promo",
        json!({"model": "mlp", "arms": [{"name": "old", "version": 1, "weight": 1}, {"name": "new", "version": 2, "weight": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (srv, stop, failures, done) = (
            Arc::clone(&srv),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&done),
        );
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let b = body(0.5, json!({}));
            let mut after_stop = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {} {}", r.status, r.body);
                }
                done.fetch_add(1, Ordering::Relaxed);
                after_stop.push((r.arm, r.version));
            }
            after_stop
        }));
    }
    while done.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = reqwest::Client::new()
        .post(srv.url("/api/experiments/promo/promote"))
        .json(&json!({"arm": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (
            p["model"].as_str(),
            p["alias"].as_str(),
            p["version"].as_u64()
        ),
        (Some("mlp"), Some("production"), Some(2))
    );
    let at_promotion = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < at_promotion + 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Release);
    let mut tails = Vec::new();
    for c in clients {
        let seen = c.await.unwrap();
        tails.extend(seen.into_iter().rev().take(20));
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    // After the promotion: unrouted, on version 2.
    assert!(
        tails
            .iter()
            .all(|(arm, v)| arm.is_none() && v.as_deref() == Some("2")),
        "{tails:?}"
    );
    let (_, r) = get(&srv, "/api/experiments/promo").await;
    assert_eq!(
        (r["state"].as_str(), r["promoted"].as_str()),
        (Some("stopped"), Some("new"))
    );
    let (_, m) = get(&srv, "/api/models/mlp").await;
    assert_eq!(m["aliases"]["production"]["version"], 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bandit_sends_most_traffic_to_the_better_arm_and_feedback_joins_by_request_id() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let (status, r) = put(
        &srv,
        "bandit",
        json!({"model": "mlp", "allocation": "thompson", "outcome": "binary",
               "bandit": {"min_exposures": 50, "floor": 0.05, "update_every": 10},
               "arms": [{"name": "weak", "version": 1, "weight": 1}, {"name": "strong", "version": 2, "weight": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let c = reqwest::Client::new();
    let b = body(0.5, json!({}));
    // Rewards from a fixed-seed generator: strong converts 50%, weak 10%.
    let mut state: u64 = 42;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut late: HashMap<String, usize> = HashMap::new();
    let total = 1500;
    let mut pending = Vec::new();
    for i in 0..total {
        let r = infer(&c, &srv, "/v2/models/mlp/infer", None, &b).await;
        assert_eq!(r.status, 200);
        let arm = r.arm.unwrap();
        let p = if arm == "strong" { 0.5 } else { 0.1 };
        let reward = if uniform() < p { 1 } else { 0 };
        pending.push(json!({"id": r.id.expect("every response has an id"), "reward": reward}));
        if pending.len() == 25 {
            let (status, rep) = srv
                .post("/api/feedback", &json!({"feedback": pending}))
                .await;
            assert_eq!((status, rep["accepted"].as_u64()), (200, Some(25)), "{rep}");
            pending.clear();
        }
        if i >= total - 500 {
            *late.entry(arm).or_default() += 1;
        }
    }
    let strong = late.get("strong").copied().unwrap_or(0);
    assert!(
        strong > 350,
        "the better arm gets most of the late traffic: {late:?}"
    );
    let (_, r) = get(&srv, "/api/experiments/bandit").await;
    let rewards: u64 = r["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"]["n"].as_u64().unwrap())
        .sum();
    assert_eq!(rewards, total as u64, "{r}");
    assert!(
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "bandit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configurations_and_feedback_get_clear_errors() {
    let repo = repo();
    let srv = start(repo.path(), None).await;
    let arms = json!([{"version": 1, "weight": 1}, {"version": 2, "weight": 1}]);
    let cases = [
        (
            json!({"model": "mlp", "arms": arms, "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
        (
            json!({"model": "mlp", "arms": [{"version": 1, "weight": 1}]}),
            400,
            "at least 2 arms",
        ),
        (
            json!({"model": "mlp", "arms": [{"version": 1, "weight": 1}, {"version": 9, "weight": 1}]}),
            400,
            "no version '9'",
        ),
        (
            json!({"model": "mlp", "arms": [{"version": 1, "weight": 1}, {"version": "staging", "weight": 1}]}),
            400,
            "'staging'",
        ),
        (
            json!({"model": "mlp", "arms": [{"version": 1, "weight": 1}, {"model": "two_inputs", "version": 1, "weight": 1}]}),
            400,
            "different signature",
        ),
        (
            json!({"model": "mlp", "arms": [{"version": 1, "weight": 0}, {"version": 2, "weight": 0}]}),
            400,
            "positive sum",
        ),
        (
            json!({"model": "nope", "arms": arms}),
            400,
            "unknown model 'nope'",
        ),
    ];
    for (spec, want, msg) in cases {
        let (status, r) = put(&srv, "bad", spec.clone()).await;
        assert_eq!(status, want, "{spec}: {r}");
        assert!(r["error"].as_str().unwrap().contains(msg), "{spec}: {r}");
    }
    let (status, r) = put(&srv, "bad%20name", json!({"model": "mlp", "arms": arms})).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(
        put(&srv, "first", json!({"model": "mlp", "arms": arms}))
            .await
            .0,
        201
    );
    let (status, r) = put(&srv, "second", json!({"model": "mlp", "arms": arms})).await;
    assert_eq!(status, 409, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("already running"),
        "{r}"
    );
    assert_eq!(get(&srv, "/api/experiments/missing").await.0, 404);

    let post = |path: &str, body: &str| {
        let (c, url, body) = (reqwest::Client::new(), srv.url(path), body.to_owned());
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, r) = post("/api/feedback", "{not json").await;
    assert_eq!(status, 400, "{r}");
    let (status, r) = post(
        "/api/feedback",
        r#"{"feedback":[{"id":"x","reward":1,"extra":1}]}"#,
    )
    .await;
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("extra"), "{r}");
    let (status, r) = post(
        "/api/feedback",
        r#"{"feedback":[{"id":"never-served","reward":1}]}"#,
    )
    .await;
    assert_eq!((status, r["accepted"].as_u64()), (200, Some(0)), "{r}");
    assert!(
        r["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown request id"),
        "{r}"
    );
    let (status, r) = post("/api/experiments/first/promote", r#"{"arm":"9"}"#).await;
    assert_eq!(status, 400, "{r}");
    let (status, r) = post("/api/experiments/first/weights", r#"{"weights":{"1":-3}}"#).await;
    assert_eq!(status, 400, "{r}");
    // The server still serves.
    let c = reqwest::Client::new();
    let ok = infer(
        &c,
        &srv,
        "/v2/models/mlp/infer",
        None,
        &body(0.5, json!({})),
    )
    .await;
    assert_eq!(ok.status, 200);

    // The CLI's table reads the same results.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args(["experiments", "show", "first", "--server", &srv.url("")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("experiment first") && stdout.contains("EXPOSURES"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_configures_routes_by_metadata_and_takes_feedback() {
    use server::proto::inferd as pb;
    use server::proto::inferd::experiments_client::ExperimentsClient;
    use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use server::proto::inference::model_infer_request::InferInputTensor;
    use server::proto::inference::{InferTensorContents, ModelInferRequest};

    let repo = repo();
    let srv = start(repo.path(), None).await;
    let mut exps = ExperimentsClient::connect(srv.grpc_url()).await.unwrap();
    let arm = |name: &str, version: &str, weight: f64| pb::ExperimentArm {
        name: name.into(),
        version: version.into(),
        weight,
        ..Default::default()
    };
    let spec = pb::ExperimentSpec {
        model: "mlp".into(),
        arms: vec![arm("a", "1", 1.0), arm("b", "2", 1.0)],
        unit: Some(pb::UnitKey {
            header: "x-user-id".into(),
            ..Default::default()
        }),
        outcome: "continuous".into(),
        guardrails: vec![pb::Guardrail {
            rule: "error_rate".into(),
            max: 0.5,
            ..Default::default()
        }],
        ..Default::default()
    };
    // A bad configuration: INVALID_ARGUMENT with the reason.
    let mut bad = spec.clone();
    bad.arms[1].version = "9".into();
    let e = exps
        .put_experiment(pb::PutExperimentRequest {
            name: "g".into(),
            spec: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("no version '9'"), "{e}");
    let r = exps
        .put_experiment(pb::PutExperimentRequest {
            name: "g".into(),
            spec: Some(spec),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.arms.len(), r.state.as_str(), r.outcome.as_str()),
        (2, "running", "continuous")
    );

    let mut infer = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let request = |user: &str| {
        let mut r = tonic::Request::new(ModelInferRequest {
            model_name: "mlp".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 64],
                contents: Some(InferTensorContents {
                    fp32_contents: vec![0.25; 64],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        r.metadata_mut().insert("x-user-id", user.parse().unwrap());
        r
    };
    let c = reqwest::Client::new();
    let mut feedback = Vec::new();
    for i in 0..40 {
        let user = format!("grpc-user-{i}");
        let resp = infer.model_infer(request(&user)).await.unwrap();
        let arm = resp
            .metadata()
            .get("inferd-experiment-arm")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.into_inner();
        let param = body.parameters["experiment_arm"].parameter_choice.clone();
        assert_eq!(
            param,
            Some(
                server::proto::inference::infer_parameter::ParameterChoice::StringParam(
                    arm.clone()
                )
            )
        );
        // The unit's arm is the same on both transports.
        let rest = infer_rest_arm(&c, &srv, &user).await;
        assert_eq!(rest, arm, "{user}");
        assert!(!body.id.is_empty(), "the server assigns an id");
        feedback.push(pb::Feedback {
            id: body.id,
            reward: Some(i as f64),
            ..Default::default()
        });
    }
    feedback.push(pb::Feedback {
        id: "unknown".into(),
        reward: Some(1.0),
        ..Default::default()
    });
    let rep = exps
        .send_feedback(pb::SendFeedbackRequest { feedback })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rep.accepted, 40);
    assert_eq!(rep.rejected.len(), 1);
    assert_eq!(rep.rejected[0].index, 40);

    let r = exps
        .get_experiment(pb::GetExperimentRequest { name: "g".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.arms.iter().map(|a| a.rewards).sum::<u64>(), 40);
    assert_eq!(
        r.arms.iter().map(|a| a.exposures).sum::<u64>(),
        80,
        "gRPC and REST requests both count"
    );
    assert!(
        r.arms[1].p_value.is_some() && r.arms[1].test == "welch_t",
        "{:?}",
        r.arms[1]
    );

    let r = exps
        .set_weights(pb::SetWeightsRequest {
            name: "g".into(),
            weights: [("b".to_string(), 3.0)].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.arms[1].weight, 0.75);
    let r = exps
        .stop_experiment(pb::StopExperimentRequest { name: "g".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "stopped");
    let resp = infer.model_infer(request("grpc-user-1")).await.unwrap();
    assert!(
        resp.metadata().get("inferd-experiment-arm").is_none(),
        "stopped: unrouted"
    );
    let list = exps
        .list_experiments(pb::ListExperimentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.experiments.len(), 1);
    exps.delete_experiment(pb::DeleteExperimentRequest { name: "g".into() })
        .await
        .unwrap();
    let e = exps
        .get_experiment(pb::GetExperimentRequest { name: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

async fn infer_rest_arm(c: &reqwest::Client, srv: &Server, user: &str) -> String {
    let r = infer(
        c,
        srv,
        "/v2/models/mlp/infer",
        Some(user),
        &body(0.25, json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.arm.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_start_up_file_creates_experiments_and_a_bad_one_stops_the_start() {
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("experiments.toml");
    std::fs::write(
        &file,
        r#"
[experiments.from-file]
model = "mlp"
unit = { header = "x-user-id" }
arms = [{ name = "a", version = 1, weight = 1 }, { name = "b", version = "2", weight = 3 }]
guardrails = [{ rule = "latency_p99", max_ms = 1000 }]
"#,
    )
    .unwrap();
    let srv = Server::start(repo.path(), &["--experiments", file.to_str().unwrap()]).await;
    let (status, r) = get(&srv, "/api/experiments/from-file").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["arms"][1]["weight"].as_f64()),
        (Some("running"), Some(0.75))
    );
    let c = reqwest::Client::new();
    let reply = infer(
        &c,
        &srv,
        "/v2/models/mlp/infer",
        Some("u1"),
        &body(0.5, json!({})),
    )
    .await;
    assert!(
        matches!(reply.arm.as_deref(), Some("a" | "b")),
        "{}",
        reply.body
    );

    // A typo in the file: the server refuses to start and says where.
    std::fs::write(
        &file,
        "[experiments.x]\nmodel = \"mlp\"\narms = []\nwieght = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferd"))
        .args([
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--experiments")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("experiment file") && err.contains("wieght"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_state_answer_with_the_fleets_numbers() {
    let redis = feature_store::testkit::Redis::start();
    let repo = repo();
    let url = redis.url();
    let a = start_with(repo.path(), None, &["--state", &url]).await;
    let b = start_with(repo.path(), None, &["--state", &url]).await;
    // The same experiment on both (as a shared experiment file would give them).
    let spec = json!({"model": "mlp", "unit": {"header": "x-user-id"}, "outcome": "binary",
                      "arms": [{"name": "control", "version": 1, "weight": 50},
                               {"name": "candidate", "version": 2, "weight": 50}]});
    for srv in [&a, &b] {
        let (status, r) = put(srv, "fleet", spec.clone()).await;
        assert_eq!(status, 201, "{r}");
    }
    // 30 users through one replica, 20 through the other; each unit's arm is the same on
    // both, so rewards by unit may go to either.
    let c = reqwest::Client::new();
    let b0 = body(0.5, json!({}));
    let mut exposures: HashMap<String, u64> = HashMap::new();
    let mut rewards: HashMap<String, (u64, f64)> = HashMap::new();
    let mut feedback = Vec::new();
    for i in 0..50 {
        let user = format!("fleet-user-{i}");
        let srv = if i < 30 { &a } else { &b };
        let r = infer(&c, srv, "/v2/models/mlp/infer", Some(&user), &b0).await;
        assert_eq!(r.status, 200);
        let arm = r.arm.unwrap();
        *exposures.entry(arm.clone()).or_default() += 1;
        let reward = f64::from(i % 3 == 0);
        let e = rewards.entry(arm).or_default();
        e.0 += 1;
        e.1 += reward;
        feedback.push(json!({"experiment": "fleet", "unit": user, "reward": reward}));
    }
    let (status, r) = b
        .post("/api/feedback", &json!({"feedback": feedback}))
        .await;
    assert_eq!((status, &r["accepted"]), (200, &json!(50)), "{r}");
    // Within a few publishing intervals, either replica reports the fleet's numbers: each
    // arm's exposures and reward mean as the test counted them.
    for srv in [&a, &b] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let r = loop {
            let (_, r) = get(srv, "/api/experiments/fleet").await;
            let total: u64 = r["arms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["exposures"].as_u64().unwrap() + x["outcome"]["n"].as_u64().unwrap())
                .sum();
            if total == 100 {
                break r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fleet's numbers never arrived: {r}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        for arm in r["arms"].as_array().unwrap() {
            let name = arm["name"].as_str().unwrap();
            let (n, sum) = rewards.get(name).copied().unwrap_or((0, 0.0));
            assert_eq!(
                arm["exposures"],
                exposures.get(name).copied().unwrap_or(0),
                "{arm}"
            );
            assert_eq!(arm["outcome"]["n"], n, "{arm}");
            if n > 0 {
                let mean = arm["outcome"]["mean"].as_f64().unwrap();
                assert!((mean - sum / n as f64).abs() < 1e-12, "{arm}");
            }
        }
    }
}
