//! Connection and request limits against the real binary, over raw sockets where a client
//! library would not misbehave: requests in flight per principal (429 + Retry-After /
//! RESOURCE_EXHAUSTED, others unaffected), a slow-loris client cut off, oversized headers
//! refused, and a body of 100,000 one-byte chunks (Triton's CVE-2025-23310) answered 4xx
//! with the server still serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::proto::inference::ServerMetadataRequest;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::common::{self, Server};

/// Batches of 8 that wait up to 10 minutes to fill: a request stays in flight until its
/// own timeout.
const HELD: &str =
    "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 600000000\nmax_queue_size = 16\n";

fn row(timeout_us: u64) -> Value {
    json!({
        "parameters": { "timeout": timeout_us },
        "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.25; 64] }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_hold_more_than_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [common::key_entry("alice", "alice-secret", "infer"), common::key_entry("bob", "bob-secret", "infer")]}).to_string(),
    )
    .unwrap();
    let repo = common::repo(&[("mlp", Some(HELD))]);
    let srv = Server::start(
        repo.path(),
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--max-concurrent-per-principal",
            "2",
        ],
    )
    .await;
    let c = reqwest::Client::new();
    // Alice's two requests wait in the queue (for a batch that never fills) until their
    // 3 s timeout: both her places are taken.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let r = c
                .post(srv.url("/v2/models/mlp/infer"))
                .bearer_auth("alice-secret")
                .json(&row(3_000_000))
                .send();
            tokio::spawn(async move { r.await.unwrap().status().as_u16() })
        })
        .collect();
    srv.wait_metric(
        "inferd_inference_pending_request_count",
        &[("model", "mlp"), ("version", "1")],
        2.0,
    )
    .await;

    // Her third is refused at once, on either transport, saying why and when to retry.
    let r = c
        .get(srv.url("/v2/models/mlp"))
        .bearer_auth("alice-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("'alice' has 2 requests in flight"), "{msg}");
    let mut g = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(ServerMetadataRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer alice-secret".parse().unwrap());
    let e = g.server_metadata(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Health stays open to her; Bob is not affected.
    assert_eq!(
        c.get(srv.url("/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .get(srv.url("/v2/models/mlp"))
        .bearer_auth("bob-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut req = tonic::Request::new(common::mlp_grpc_request(0.25));
    req.metadata_mut()
        .insert("authorization", "Bearer alice-secret".parse().unwrap());
    assert_eq!(
        g.model_infer(req).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );

    // Once her requests have finished (timed out in the queue), her places are back.
    for h in held {
        assert_eq!(h.await.unwrap(), 504);
    }
    let r = c
        .get(srv.url("/v2/models/mlp"))
        .bearer_auth("alice-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Reads whatever the server sends until it closes the connection (or `limit` passes).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_huge_headers_and_many_chunks_are_cut_off_and_the_server_serves_on() {
    let repo = common::repo(&[("mlp", None)]);
    let srv = Server::start(repo.path(), &["--header-timeout-secs", "1"]).await;
    let addr = format!("127.0.0.1:{}", srv.http);

    // Slow loris: headers a byte at a time, never finished. The server closes the
    // connection while the client is still sending (it would drip for a minute).
    let loris = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(250)))
                .unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            while started.elapsed() < Duration::from_secs(60) {
                if s.write_all(b"X").is_err() {
                    return true;
                }
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    // A 408 before the close is fine too.
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return true,
                }
            }
            false
        })
    };
    assert!(
        loris.await.unwrap(),
        "a slow-loris client held its connection for a minute"
    );

    // Headers past --max-header-bytes (16 KiB): 431, and the connection closed.
    let big = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            let filler = "a".repeat(100 * 1024);
            let _ = s.write_all(
                format!("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n")
                    .as_bytes(),
            );
            read_until_closed(&mut s, Duration::from_secs(30))
        }
    })
    .await
    .unwrap();
    assert!(
        big.0.starts_with("HTTP/1.1 431"),
        "{:?}",
        &big.0[..big.0.len().min(200)]
    );

    // 100,000 one-byte chunks: read as one body of 100,000 bytes (not JSON: 400), no
    // recursion, no crash.
    let chunks = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            let mut req = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            for _ in 0..100_000 {
                req.extend_from_slice(b"1\r\nA\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&req).unwrap();
            read_until_closed(&mut s, Duration::from_secs(60))
        }
    })
    .await
    .unwrap();
    assert!(
        chunks.0.starts_with("HTTP/1.1 400"),
        "{:?}",
        &chunks.0[..chunks.0.len().min(300)]
    );
    assert!(chunks.0.contains("JSON"), "{}", chunks.0);

    // Still serving.
    let (code, body) = srv.post("/v2/models/mlp/infer", &row(0)).await;
    assert_eq!(code, 200, "{body}");
}
