//! Vector collections against the real server: create, upsert, search (with and without a
//! filter) equal to brute force on a small set, delete, bad input, gRPC, and a restart after
//! `kill -9` in the middle of an ingest that keeps every acknowledged point.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::proto::inferd::collections_client::CollectionsClient;
use server::proto::inferd::{SearchRequest, point_id};

use crate::common::Server;

const DIM: usize = 8;

/// Deterministic vectors (a small LCG), so the test needs no RNG crate.
fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    (0..n).map(|_| (0..DIM).map(|_| next()).collect()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// Ids of the exact top k by cosine among `(id, vector)`.
fn brute_force(q: &[f32], k: usize, pts: impl Iterator<Item = (u64, Vec<f32>)>) -> Vec<u64> {
    let mut all: Vec<(f64, u64)> = pts.map(|(i, v)| (cosine(q, &v), i)).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.into_iter().take(k).map(|x| x.1).collect()
}

fn ids(resp: &Value) -> Vec<u64> {
    resp["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result in {resp}"))
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

async fn send(
    srv: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, srv.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn search(srv: &Server, body: Value) -> (u16, Value) {
    srv.post("/api/collections/docs/search", &body).await
}

async fn put(srv: &Server, path: &str, body: &Value) -> (u16, Value) {
    send(srv, reqwest::Method::PUT, path, Some(body)).await
}

async fn get(srv: &Server, path: &str) -> (u16, Value) {
    send(srv, reqwest::Method::GET, path, None).await
}

fn points(vs: &[Vec<f32>], first: usize) -> Value {
    let pts: Vec<Value> = vs
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let i = first + j;
            json!({"id": i, "vector": v, "payload": {"group": i % 4, "name": format!("p{i}")}})
        })
        .collect();
    json!({ "points": pts })
}

#[tokio::test]
async fn collections_over_rest_and_grpc() {
    let repo = tempfile::tempdir().unwrap();
    let srv = Server::start(repo.path(), &[]).await;
    let spec = json!({"dim": DIM, "metric": "cosine", "m": 16, "ef_construction": 100, "ef": 64});
    let (code, info) = put(&srv, "/api/collections/docs", &spec).await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(
        (info["dim"].as_u64(), info["metric"].as_str()),
        (Some(DIM as u64), Some("cosine"))
    );
    assert_eq!(put(&srv, "/api/collections/docs", &spec).await.0, 409);

    let data = vectors(300, 1);
    let (code, r) = put(&srv, "/api/collections/docs/points", &points(&data, 0)).await;
    assert_eq!(
        (code, r["status"].as_str()),
        (200, Some("completed")),
        "{r}"
    );
    let (code, list) = get(&srv, "/api/collections").await;
    assert_eq!(
        (code, list["collections"][0]["points"].as_u64()),
        (200, Some(300))
    );

    // Unfiltered and filtered searches equal brute force.
    let queries = vectors(10, 99);
    for q in &queries {
        let (code, r) = srv
            .post(
                "/api/collections/docs/search",
                &json!({"vector": q, "k": 5}),
            )
            .await;
        assert_eq!(code, 200, "{r}");
        let want = brute_force(
            q,
            5,
            data.iter().cloned().enumerate().map(|(i, v)| (i as u64, v)),
        );
        assert_eq!(ids(&r), want);
        assert!(r["result"][0]["payload"]["name"].is_string());
        let flt = json!({"vector": q, "k": 5, "filter": {"must": [{"key": "group", "match": {"value": 1}}]}});
        let (code, r) = srv.post("/api/collections/docs/search", &flt).await;
        assert_eq!(code, 200, "{r}");
        let want = brute_force(
            q,
            5,
            data.iter()
                .cloned()
                .enumerate()
                .filter(|(i, _)| i % 4 == 1)
                .map(|(i, v)| (i as u64, v)),
        );
        assert_eq!(ids(&r), want);
    }
    let (code, r) = srv
        .post("/api/collections/docs/search/batch", &json!({"searches": [{"vector": queries[0], "k": 2}, {"vector": queries[1], "k": 3, "exact": true}]}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (
            r["results"][0].as_array().unwrap().len(),
            r["results"][1].as_array().unwrap().len()
        ),
        (2, 3)
    );

    // Deletes.
    let top = ids(&srv
        .post(
            "/api/collections/docs/search",
            &json!({"vector": queries[0], "k": 1}),
        )
        .await
        .1)[0];
    let (code, _) = srv
        .post(
            "/api/collections/docs/points/delete",
            &json!({"ids": [top]}),
        )
        .await;
    assert_eq!(code, 200);
    let r = srv
        .post(
            "/api/collections/docs/search",
            &json!({"vector": queries[0], "k": 10}),
        )
        .await
        .1;
    assert!(!ids(&r).contains(&top));
    assert_eq!(
        get(&srv, &format!("/api/collections/docs/points/{top}"))
            .await
            .0,
        404
    );
    let (code, p) = get(&srv, "/api/collections/docs/points/7").await;
    assert_eq!((code, p["payload"]["name"].as_str()), (200, Some("p7")));

    // Bad input: 400 naming the problem, 404 for what does not exist.
    let (code, e) = search(&srv, json!({"vector": [1.0, 2.0]})).await;
    assert_eq!(code, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("query has dimension 2, but collection 'docs' expects 8"),
        "{e}"
    );
    let (code, e) = search(&srv, json!({"vector": vec![0.0; DIM]})).await;
    assert!(
        code == 400 && e["error"].as_str().unwrap().contains("zero vector"),
        "{e}"
    );
    let (code, e) = search(
        &srv,
        json!({"vector": vec![1.0; DIM], "filter": {"must": [{"key": "group"}]}}),
    )
    .await;
    assert!(
        code == 400 && e["error"].as_str().unwrap().contains("filter.must[0]"),
        "{e}"
    );
    let (code, e) = put(
        &srv,
        "/api/collections/docs/points",
        &json!({"points": [{"id": 1, "vector": [1.0]}]}),
    )
    .await;
    assert!(
        code == 400
            && e["error"]
                .as_str()
                .unwrap()
                .contains("point 1 has dimension 1"),
        "{e}"
    );
    let (code, e) = put(
        &srv,
        "/api/collections/docs/points",
        &json!({"points": [{"id": 1, "text": "hello"}]}),
    )
    .await;
    assert!(
        code == 400 && e["error"].as_str().unwrap().contains("no embedding_model"),
        "{e}"
    );
    // NaN as Python's json.dumps writes it, which is not JSON.
    let nan = format!(
        "{{\"points\": [{{\"id\": 1, \"vector\": [NaN{}]}}]}}",
        ", 1.0".repeat(DIM - 1)
    );
    let r = reqwest::Client::new()
        .put(srv.url("/api/collections/docs/points"))
        .header("content-type", "application/json")
        .body(nan)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("NaN"), "{e}");
    assert_eq!(search(&srv, json!({"vector": [1.0], "k": 0})).await.0, 400);
    let (code, e) = srv
        .post("/api/collections/nope/search", &json!({"vector": [1.0]}))
        .await;
    assert!(
        code == 404
            && e["error"]
                .as_str()
                .unwrap()
                .contains("collection 'nope' not found"),
        "{e}"
    );
    assert_eq!(get(&srv, "/api/collections/nope").await.0, 404);
    assert_eq!(put(&srv, "/api/collections/bad%20name", &spec).await.0, 400);
    assert_eq!(
        put(&srv, "/api/collections/c2", &json!({"dim": 0})).await.0,
        400
    );
    assert_eq!(
        srv.metric("inferd_vector_points", &[("collection", "docs")])
            .await,
        299.0
    );
    // Memory: reported per collection and per point, and at least the raw vectors.
    let (_, info) = get(&srv, "/api/collections/docs").await;
    let (bytes, per_point) = (
        info["memory_bytes"].as_u64().unwrap(),
        info["bytes_per_point"].as_u64().unwrap(),
    );
    let (dim, points) = (
        info["dim"].as_u64().unwrap(),
        info["points"].as_u64().unwrap(),
    );
    assert_eq!(per_point, bytes / points, "{info}");
    assert!(per_point >= dim * 4, "{info}");
    let gauge = srv
        .metric("inferd_vector_memory_bytes", &[("collection", "docs")])
        .await;
    assert!(gauge >= (points * dim * 4) as f64, "{gauge} for {info}");
    assert!(
        srv.metric("inferd_vector_searches_total", &[("collection", "docs")])
            .await
            >= 20.0
    );

    // gRPC: the same collection, the same answers; NaN (representable in protobuf) is named.
    let mut client = CollectionsClient::connect(srv.grpc_url()).await.unwrap();
    let req = SearchRequest {
        collection: "docs".into(),
        vector: queries[2].clone(),
        k: 5,
        ..Default::default()
    };
    let res = client.search(req.clone()).await.unwrap().into_inner();
    let got: Vec<u64> = res
        .result
        .iter()
        .map(|p| match p.id.as_ref().unwrap().kind {
            Some(point_id::Kind::Num(n)) => n,
            _ => panic!("numeric ids"),
        })
        .collect();
    let rest = ids(&srv
        .post(
            "/api/collections/docs/search",
            &json!({"vector": queries[2], "k": 5}),
        )
        .await
        .1);
    assert_eq!(got, rest);
    let mut nan = req.clone();
    nan.vector[3] = f32::NAN;
    let st = client.search(nan).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(
        st.message().contains("element 3 is NaN"),
        "{}",
        st.message()
    );
    let mut missing = req;
    missing.collection = "nope".into();
    assert_eq!(
        client.search(missing).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let (code, _) = send(&srv, reqwest::Method::DELETE, "/api/collections/docs", None).await;
    assert_eq!(code, 200);
    assert_eq!(get(&srv, "/api/collections/docs").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_ingest_keeps_every_acknowledged_point() {
    let repo = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start_with_data(repo.path(), data_dir.path(), &[]).await;
    let (code, _) = put(
        &srv,
        "/api/collections/ingest",
        &json!({"dim": DIM, "metric": "l2"}),
    )
    .await;
    assert_eq!(code, 200);

    // Batches of 10 points, one request after another, until the server dies.
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let ingest = {
        let (acked, url) = (
            Arc::clone(&acked),
            srv.url("/api/collections/ingest/points"),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for b in 0.. {
                let body = points(&vectors(10, b as u64 + 1000), b * 10);
                match client.put(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(b),
                    Ok(r) => panic!("ingest failed with {}", r.status()),
                    Err(_) => return,
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 30 {
        assert!(Instant::now() < deadline, "ingest too slow:\n{}", srv.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    srv.kill9();
    ingest.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    let srv = Server::start_with_data(repo.path(), data_dir.path(), &[]).await;
    let (code, info) = get(&srv, "/api/collections/ingest").await;
    assert_eq!(code, 200, "{info}");
    let points = info["points"].as_u64().unwrap() as usize;
    assert!(
        points >= acked.len() * 10,
        "{points} points after restart, {} acknowledged",
        acked.len() * 10
    );
    for b in &acked {
        let vs = vectors(10, *b as u64 + 1000);
        for (j, v) in vs.iter().enumerate() {
            let id = b * 10 + j;
            let (code, p) = get(&srv, &format!("/api/collections/ingest/points/{id}")).await;
            assert_eq!(code, 200, "acknowledged point {id} lost: {p}");
            let got: Vec<f32> = p["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(&got, v, "point {id}");
        }
    }
    let last = acked.last().unwrap() * 10 + 3;
    let q = &vectors(10, *acked.last().unwrap() as u64 + 1000)[3];
    let r = srv
        .post(
            "/api/collections/ingest/search",
            &json!({"vector": q, "k": 1}),
        )
        .await
        .1;
    assert_eq!(ids(&r), vec![last as u64]);
}
