//! SIGTERM: requests in flight finish, new ones are refused, the process exits 0.

use std::time::{Duration, Instant};

use crate::common::{self, Server};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    // A partial batch waits 2 s before it runs: long enough to send SIGTERM meanwhile.
    let repo = common::repo(&[(
        "mlp",
        Some("max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 2000000\n"),
    )]);
    let mut srv = Server::start(repo.path(), &[]).await;
    let case = common::reference("mlp").remove(0);

    let url = srv.url("/v2/models/mlp/infer");
    let body = common::request_body(&case);
    let in_flight = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    srv.wait_metric(
        "inferd_inference_pending_request_count",
        &[("model", "mlp")],
        1.0,
    )
    .await;
    srv.sigterm();

    // New connections are refused once the listener has closed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", srv.http)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, resp) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{resp}");
    common::assert_outputs_match(&resp, &case);
    let exit = srv.wait_exit().await;
    assert!(exit.success(), "exit status {exit}");
}
