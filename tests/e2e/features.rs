//! The online feature store through the server: Kafka → Redis → predictions by entity key
//! (feature enrichment), and the REST / gRPC feature APIs. Real broker (tansu), real Redis.

use std::time::{Duration, Instant};

use feature_store::testkit::{Redis, Tansu, produce};
use serde_json::{Value, json};
use server::proto::inferd::feature_store_client::FeatureStoreClient;
use server::proto::inferd::{EntityValues, FeatureValue, GetOnlineFeaturesRequest, feature_value};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::infer_parameter::ParameterChoice;
use server::proto::inference::model_infer_request::InferInputTensor;
use server::proto::inference::{InferParameter, InferTensorContents, ModelInferRequest};

use crate::common::{self, Server};

const VIEWS: &str = r#"
[views.user]
entities = ["user_id"]
ttl = "1h"
features = [
  { name = "head", type = "float32_list" },
  { name = "x", type = "float64" },
  { name = "y", type = "int64" },
  { name = "z", type = "float32" },
]
[views.user.source]
topic = "user_features"
timestamp_field = "ts"
"#;

/// `b` (FP32 [N, 8]) ← head (5 values), x, y, z.
const ENRICH: &str = r#"
[features.inputs.b]
features = ["user:head", "user:x", "user:y", "user:z"]
default = 0.5
"#;

const ENRICH_STRICT: &str = r#"
[features.inputs.b]
features = ["user:head", "user:x", "user:y", { feature = "user:z", on_missing = "error" }]
default = 0.5
"#;

/// The features of user `i`, and the row of `b` they make.
fn user_event(i: usize, ts_us: i64) -> (Value, Vec<f32>) {
    let head: Vec<f32> = (0..5).map(|k| (i * 10 + k) as f32 * 0.125 - 1.0).collect();
    let (x, y, z) = (i as f64 * 0.25, i as i64 - 3, 0.75f32 * i as f32);
    let mut row = head.clone();
    row.extend([x as f32, y as f32, z]);
    (
        json!({"user_id": format!("u{i}"), "ts": ts_us, "head": head, "x": x, "y": y, "z": z}),
        row,
    )
}

fn a_rows(n: usize) -> Vec<f32> {
    (0..n * 8).map(|k| (k as f32 * 0.37).sin()).collect()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn eventually<F, Fut>(what: &str, srv: &Server, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn output<'a>(resp: &'a Value, name: &str) -> &'a Value {
    resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {resp}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicting_by_entity_equals_predicting_with_the_features() {
    let redis = Redis::start();
    let tansu = Tansu::start();
    tansu
        .create_topics(&["user_features", "user_features.dlq"], 2)
        .await;
    let repo = common::repo(&[("two_inputs", Some(ENRICH))]);
    // The same model, failing on a missing `z`.
    let strict = repo.path().join("strict");
    std::fs::create_dir_all(strict.join("1")).unwrap();
    std::fs::copy(
        repo.path().join("two_inputs/1/model.onnx"),
        strict.join("1/model.onnx"),
    )
    .unwrap();
    std::fs::write(strict.join("config.toml"), ENRICH_STRICT).unwrap();
    let views = repo.path().join("views.toml");
    std::fs::write(&views, VIEWS).unwrap();
    let srv = Server::start(
        repo.path(),
        &[
            "--feature-store",
            &redis.url(),
            "--feature-views",
            views.to_str().unwrap(),
            "--kafka-brokers",
            &tansu.brokers(),
            "--kafka-group",
            "e2e-enrich",
        ],
    )
    .await;

    // Events arrive through Kafka, one per user.
    let producer = tansu.producer();
    let ts = now_us();
    let mut rows = Vec::new();
    for i in 0..3 {
        let (ev, row) = user_event(i, ts + i as i64);
        produce(
            &producer,
            "user_features",
            &format!("u{i}"),
            ev.to_string().as_bytes(),
        )
        .await;
        rows.push(row);
    }
    let read = json!({"features": ["user:head", "user:z"], "entities": {"user_id": ["u0", "u1", "u2", "nobody"]}});
    eventually("the users' features", &srv, || async {
        let (s, r) = srv.post("/api/features/get-online-features", &read).await;
        s == 200
            && r["results"][2]["statuses"] == json!(["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"])
    })
    .await;
    let (_, r) = srv.post("/api/features/get-online-features", &read).await;
    assert_eq!(
        r["metadata"]["feature_names"],
        json!(["user_id", "head", "z"])
    );
    assert_eq!(
        r["results"][0]["values"],
        json!(["u0", "u1", "u2", "nobody"])
    );
    assert_eq!(r["results"][2]["values"], json!([0.0, 0.75, 1.5, null]));
    assert_eq!(r["results"][1]["values"][3], Value::Null);
    assert_eq!(r["results"][1]["event_timestamps"][3], Value::Null);
    assert!(
        r["results"][1]["event_timestamps"][1]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let a = a_rows(1);
    // By entity (a request parameter) and with the same features passed explicitly.
    let (s, by_entity) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"parameters": {"user_id": "u1"}, "inputs": [
                {"name": "a", "shape": [1, 8], "datatype": "FP32", "data": a}]}),
        )
        .await;
    assert_eq!(s, 200, "{by_entity}");
    let (s, explicit) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"inputs": [
                {"name": "a", "shape": [1, 8], "datatype": "FP32", "data": a},
                {"name": "b", "shape": [1, 8], "datatype": "FP32", "data": rows[1]}]}),
        )
        .await;
    assert_eq!(s, 200, "{explicit}");
    assert_eq!(by_entity["outputs"], explicit["outputs"]);
    assert_eq!(
        by_entity["parameters"],
        json!({"feature_inputs": "b", "features_defaulted_count": 0})
    );
    assert!(explicit.get("parameters").is_none());

    // A batch by entity-key tensor: one row per key, a missing entity defaulted.
    let a3 = a_rows(3);
    let (s, batch) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"inputs": [
                {"name": "a", "shape": [3, 8], "datatype": "FP32", "data": a3},
                {"name": "user_id", "shape": [3], "datatype": "BYTES", "data": ["u2", "nobody", "u0"]}]}),
        )
        .await;
    assert_eq!(s, 200, "{batch}");
    let mut b3 = rows[2].clone();
    b3.extend([0.5f32; 8]);
    b3.extend(rows[0].iter());
    let (_, explicit3) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"inputs": [
                {"name": "a", "shape": [3, 8], "datatype": "FP32", "data": a3},
                {"name": "b", "shape": [3, 8], "datatype": "FP32", "data": b3}]}),
        )
        .await;
    assert_eq!(batch["outputs"], explicit3["outputs"]);
    assert_eq!(batch["parameters"]["features_defaulted_count"], 4);
    assert_eq!(
        batch["parameters"]["features_defaulted"],
        "user:head,user:x,user:y,user:z"
    );
    assert_eq!(floats(&output(&batch, "sum")["data"]).len(), 24);

    // The strict model refuses a missing `z`, saying for whom; without keys, what to send.
    let (s, e) = srv
        .post(
            "/v2/models/strict/infer",
            &json!({"parameters": {"user_id": "nobody"}, "inputs": [
                {"name": "a", "shape": [1, 8], "datatype": "FP32", "data": a}]}),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("'user:z'") && msg.contains("user_id='nobody'") && msg.contains("NOT_FOUND"),
        "{msg}"
    );
    let (s, e) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"inputs": [{"name": "a", "shape": [1, 8], "datatype": "FP32", "data": a}]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("user_id"), "{e}");

    // gRPC: the same prediction by entity, with the response parameters.
    let mut grpc = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let resp = grpc
        .model_infer(ModelInferRequest {
            model_name: "two_inputs".into(),
            parameters: [(
                "user_id".to_string(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam("u1".into())),
                },
            )]
            .into(),
            inputs: vec![InferInputTensor {
                name: "a".into(),
                datatype: "FP32".into(),
                shape: vec![1, 8],
                contents: Some(InferTensorContents {
                    fp32_contents: a.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.parameters["feature_inputs"].parameter_choice,
        Some(ParameterChoice::StringParam("b".into()))
    );
    let weighted = resp
        .outputs
        .iter()
        .position(|o| o.name == "weighted")
        .unwrap();
    let got: Vec<f32> = resp.raw_output_contents[weighted]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = floats(&output(&explicit, "weighted")["data"])
        .into_iter()
        .map(|x| x as f32)
        .collect();
    assert_eq!(got, want);

    // Ingestion shows on /metrics.
    assert!(
        srv.metric(
            "inferd_feature_ingest_events_total",
            &[("view", "user"), ("outcome", "applied")]
        )
        .await
            >= 3.0
    );
    assert!(
        srv.metric(
            "inferd_feature_freshness_seconds_count",
            &[("view", "user")]
        )
        .await
            >= 3.0
    );
    // librdkafka's statistics (every second) give the lag per partition: 0 once caught up.
    eventually("the lag gauge", &srv, || async {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", srv.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().any(|l| {
            l.starts_with("inferd_feature_ingest_lag{")
                && l.contains("topic=\"user_features\"")
                && l.ends_with(" 0")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_views_pushes_and_reads_over_rest_and_grpc() {
    let mut redis = Redis::start();
    let repo = common::repo(&[]);
    let srv = Server::start(repo.path(), &["--feature-store", &redis.url()]).await;

    // A view created through the API.
    let view = json!({"entities": ["driver_id"], "ttl": "1h", "features": [
        {"name": "trips", "type": "int64"}, {"name": "rating", "type": "float64"}]});
    let r = reqwest::Client::new()
        .put(srv.url("/api/feature-views/drivers"))
        .json(&view)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, e) = srv
        .post(
            "/api/features/get-online-features",
            &json!({
        "features": ["drivers:nope"], "entities": {"driver_id": [1]}}),
        )
        .await;
    assert_eq!(s, 404, "{e}");
    let list: Value = reqwest::get(srv.url("/api/feature-views"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["feature_views"][0]["name"], "drivers");

    // Pushes: Feast's column-wise df, then rows; an old event is stale, an ancient one is
    // outside the ttl.
    let now = now_us();
    let (s, r) = srv
        .post(
            "/api/features/push",
            &json!({"push_source_name": "drivers", "df": {
                "driver_id": [1001, 1002], "event_timestamp": [now, now - 7_200_000_000i64],
                "trips": [5, 7], "rating": [4.5, null]}}),
        )
        .await;
    assert_eq!((s, &r), (200, &json!({"written": 2, "stale": 0})));
    let (_, r) = srv
        .post(
            "/api/features/push",
            &json!({"feature_view": "drivers", "rows": [
                {"driver_id": 1001, "event_timestamp": now - 1, "trips": 1}]}),
        )
        .await;
    assert_eq!(r, json!({"written": 0, "stale": 1}));
    let (s, r) = srv
        .post(
            "/api/features/get-online-features",
            &json!({"features": ["drivers:trips", "drivers:rating"],
                    "entities": {"driver_id": [1001, 1002, 1003]}, "full_feature_names": true}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["metadata"]["feature_names"],
        json!(["driver_id", "drivers__trips", "drivers__rating"])
    );
    assert_eq!(r["results"][1]["values"], json!([5, 7, null]));
    assert_eq!(
        r["results"][1]["statuses"],
        json!(["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert_eq!(
        r["results"][2]["statuses"],
        json!(["PRESENT", "NULL_VALUE", "NOT_FOUND"])
    );

    // gRPC reads the same.
    let mut c = FeatureStoreClient::connect(srv.grpc_url()).await.unwrap();
    let int = |i| FeatureValue {
        kind: Some(feature_value::Kind::Int64Val(i)),
    };
    let g = c
        .get_online_features(GetOnlineFeaturesRequest {
            features: vec!["drivers:rating".into()],
            entities: [(
                "driver_id".to_string(),
                EntityValues {
                    values: vec![int(1001), int(1003)],
                },
            )]
            .into(),
            full_feature_names: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.feature_names, ["driver_id", "rating"]);
    assert_eq!(g.results[1].statuses, [1, 3]);
    assert_eq!(
        g.results[1].values[0].kind,
        Some(feature_value::Kind::DoubleVal(4.5))
    );
    assert!(g.results[1].event_timestamps_us[0] > 0);

    // Redis down: reads fail with a clear 503 / UNAVAILABLE, and recover with it.
    redis.stop();
    let read = json!({"features": ["drivers:trips"], "entities": {"driver_id": [1001]}});
    let (s, e) = srv.post("/api/features/get-online-features", &read).await;
    assert_eq!(s, 503, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("online store is unavailable: redis at"),
        "{e}"
    );
    let status = c
        .get_online_features(GetOnlineFeaturesRequest {
            features: vec!["drivers:trips".into()],
            entities: [(
                "driver_id".to_string(),
                EntityValues {
                    values: vec![int(1001)],
                },
            )]
            .into(),
            full_feature_names: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    redis.restart();
    eventually("reads to recover", &srv, || async {
        let (s, r) = srv.post("/api/features/get-online-features", &read).await;
        s == 200 && r["results"][1]["values"] == json!([5])
    })
    .await;

    // The API-defined view survives in the data dir; deleting it works once.
    let r = reqwest::Client::new()
        .delete(srv.url("/api/feature-views/drivers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(srv.url("/api/feature-views/drivers"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_default_store_is_in_memory() {
    let repo = common::repo(&[]);
    let srv = Server::start(repo.path(), &[]).await;
    let r = reqwest::Client::new()
        .put(srv.url("/api/feature-views/items"))
        .json(&json!({"entities": ["item"], "features": [{"name": "price", "type": "float32"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, r) = srv
        .post(
            "/api/features/push",
            &json!({"feature_view": "items", "rows": [{"item": "i1", "price": 2.5}]}),
        )
        .await;
    assert_eq!((s, r), (200, json!({"written": 1, "stale": 0})));
    let (_, r) = srv
        .post(
            "/api/features/get-online-features",
            &json!({"features": ["items:price"], "entities": {"item": ["i1"]}}),
        )
        .await;
    assert_eq!(r["results"][1]["values"], json!([2.5]));
    let (s, e) = srv
        .post(
            "/api/features/push",
            &json!({"feature_view": "items", "rows": [{"item": 1.5}]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("row 0"), "{e}");
}
