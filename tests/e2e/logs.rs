//! Logs for a log pipeline: `--log-format json` makes every line a JSON object, and
//! `--access-log` writes one line per request on both transports, with its principal, route,
//! status, latency and, for an inference, the model, version, arm, request id and batch rows.

use serde_json::{Value, json};
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::common::{self, Server};

/// The access lines logged so far.
fn access_lines(srv: &Server) -> Vec<Value> {
    let log = srv.log();
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_an_access_line_per_request_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [common::key_entry("ranker", "ranker-secret", "infer")]}).to_string(),
    )
    .unwrap();
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(
        repo.path(),
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--access-log",
            "--log-format",
            "json",
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let body = json!({"id": "req-42", "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": vec![0.5; 128]}]});
    let r = c
        .post(srv.url("/v2/models/mlp/infer"))
        .bearer_auth("ranker-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(srv.url("/v2/models/mlp"))
        .header("x-request-id", "meta-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut g = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(common::mlp_grpc_request(0.25));
    req.metadata_mut()
        .insert("authorization", "Bearer ranker-secret".parse().unwrap());
    g.model_infer(req).await.unwrap();
    let e = g
        .model_infer(common::mlp_grpc_request(0.25))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Lines are written as responses leave: wait for the last ones.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let lines = access_lines(&srv);
        let grpc = lines.iter().filter(|l| l["transport"] == "grpc").count();
        if grpc >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let find = |transport: &str, route: &str, status: &str| {
        lines
            .iter()
            .find(|l| l["transport"] == transport && l["route"] == route && l["status"] == status)
            .unwrap_or_else(|| panic!("no {transport} {route} {status} line in {lines:#?}"))
            .clone()
    };
    let rest = find("http", "/v2/models/{m}/infer", "200");
    assert_eq!(rest["method"], "POST");
    assert_eq!(rest["principal"], "ranker");
    assert_eq!(rest["request_id"], "req-42");
    assert_eq!(rest["model"], "mlp");
    assert_eq!(rest["version"], "1");
    assert_eq!(rest["batch_rows"], 2);
    assert!(rest["latency_ms"].as_f64().unwrap() > 0.0, "{rest}");
    assert_eq!(rest["level"], "INFO");
    let refused = find("http", "/v2/models/{m}", "401");
    assert_eq!(refused["principal"], "");
    assert_eq!(refused["request_id"], "meta-1");
    let infer = "/inference.GRPCInferenceService/ModelInfer";
    let grpc = find("grpc", infer, "0");
    assert_eq!(grpc["principal"], "ranker");
    assert_eq!(grpc["model"], "mlp");
    assert_eq!(grpc["batch_rows"], 1);
    // UNAUTHENTICATED is gRPC status 16.
    let denied = find("grpc", infer, "16");
    assert_eq!(denied["model"], "");
    // The server's other lines are JSON too (access_lines parsed every line): e.g. its start.
    assert!(srv.log().contains("\"message\":\"listening\""));
}
