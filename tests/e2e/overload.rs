//! Overload and deadlines: a full queue refuses at once (429 / RESOURCE_EXHAUSTED); a request
//! whose `timeout` passes in the queue is answered 504 without running; a request whose
//! client disconnects is dropped before it runs.

use std::io::Write;

use serde_json::json;

use crate::common::{self, Server};
use inferd_server_proto::grpc_inference_service_client::GrpcInferenceServiceClient;

mod inferd_server_proto {
    pub use server::proto::inference::*;
}

/// Batches of 8 that wait up to 10 minutes to fill, and a queue of 2.
const HELD: &str =
    "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 600000000\nmax_queue_size = 2\n";

fn one_row(timeout_us: u64) -> serde_json::Value {
    json!({
        "parameters": { "timeout": timeout_us },
        "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.25; 64] }]
    })
}

#[tokio::test]
async fn full_queue_rejects_at_once_and_queued_requests_time_out_unrun() {
    let repo = common::repo(&[("mlp", Some(HELD))]);
    let srv = Server::start(repo.path(), &[]).await;
    let labels = [("model", "mlp"), ("version", "1")];

    // Two requests fill the queue; they wait for a batch that never fills, until their
    // 1.5 s timeout.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let url = srv.url("/v2/models/mlp/infer");
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .json(&one_row(1_500_000))
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                )
            })
        })
        .collect();
    srv.wait_metric("inferd_inference_pending_request_count", &labels, 2.0)
        .await;

    // The third is refused at once, over REST and gRPC.
    let r = reqwest::Client::new()
        .post(srv.url("/v2/models/mlp/infer"))
        .json(&one_row(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("queue is full (2 requests waiting)"),
        "{body}"
    );

    let mut grpc = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let status = grpc
        .model_infer(common::mlp_grpc_request(0.25))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("queue is full"));

    for w in waiting {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, 504, "{body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("timed out")
                && msg.contains("timeout 1500000 µs")
                && msg.contains("not run"),
            "{msg}"
        );
    }
    assert_eq!(
        srv.metric("inferd_inference_exec_count_total", &labels)
            .await,
        0.0
    );
    assert_eq!(
        srv.metric(
            "inferd_inference_request_failure_total",
            &[("model", "mlp"), ("reason", "REJECTED")]
        )
        .await,
        2.0
    );
    assert_eq!(
        srv.metric(
            "inferd_inference_request_failure_total",
            &[("model", "mlp"), ("reason", "TIMEOUT")]
        )
        .await,
        2.0
    );
    assert_eq!(
        srv.metric("inferd_inference_pending_request_count", &labels)
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_request_whose_client_left_is_dropped_before_it_runs() {
    let repo = common::repo(&[("mlp", Some(HELD))]);
    let srv = Server::start(repo.path(), &[]).await;
    let labels = [("model", "mlp"), ("version", "1")];

    let body = serde_json::to_vec(&one_row(0)).unwrap();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", srv.http)).unwrap();
    write!(
        conn,
        "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body).unwrap();
    srv.wait_metric("inferd_inference_pending_request_count", &labels, 1.0)
        .await;
    drop(conn);

    srv.wait_metric(
        "inferd_inference_request_failure_total",
        &[("model", "mlp"), ("reason", "CANCELED")],
        1.0,
    )
    .await;
    assert_eq!(
        srv.metric("inferd_inference_pending_request_count", &labels)
            .await,
        0.0
    );
    assert_eq!(
        srv.metric("inferd_inference_exec_count_total", &labels)
            .await,
        0.0
    );
}
