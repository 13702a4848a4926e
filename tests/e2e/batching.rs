//! Dynamic batching: concurrent requests share one model execution, each gets its own rows.

use crate::common::{self, Server};

#[tokio::test]
async fn queued_requests_run_as_one_batch_with_correct_rows() {
    // A long delay: the batch runs when it is full (8 rows), and not before.
    let repo = common::repo(&[(
        "mlp",
        Some("max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 600000000\n"),
    )]);
    let srv = Server::start(repo.path(), &[]).await;
    let cases = common::reference("mlp");
    let (one_row, five_rows) = (&cases[0], &cases[1]);
    assert_eq!(five_rows["inputs"][0]["shape"][0], 5);

    // 1 + 5 + 1 + 1 rows = 8: the batch fills and runs once.
    let mut tasks = Vec::new();
    for case in [one_row, five_rows, one_row, one_row] {
        let body = common::request_body(case);
        let url = srv.url("/v2/models/mlp/infer");
        let case = case.clone();
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-inferd-batch-size"], "8");
            let resp: serde_json::Value = r.json().await.unwrap();
            common::assert_outputs_match(&resp, &case);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let labels = [("model", "mlp"), ("version", "1")];
    assert_eq!(
        srv.metric("inferd_inference_exec_count_total", &labels)
            .await,
        1.0
    );
    assert_eq!(
        srv.metric("inferd_inference_count_total", &labels).await,
        8.0
    );
    assert_eq!(
        srv.metric("inferd_inference_batch_size_sum", &labels).await,
        8.0
    );
    assert_eq!(
        srv.metric("inferd_inference_batch_size_count", &labels)
            .await,
        1.0
    );

    let stats: serde_json::Value = reqwest::get(srv.url("/v2/models/mlp/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], 8);
    assert_eq!(s["execution_count"], 1);
    assert_eq!(s["inference_stats"]["success"]["count"], 4);
    assert_eq!(s["batch_stats"][0]["batch_size"], 8);
}
