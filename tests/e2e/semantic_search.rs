//! Text in, neighbours out: a collection whose points and queries are embedded in process by
//! the served sentence encoder.

use serde_json::{Value, json};

use crate::common::{self, Server};

#[tokio::test]
async fn a_paraphrase_finds_its_sentence_first() {
    let repo = tempfile::tempdir().unwrap();
    let cache = models::cache_dir().expect("INFERD_CACHE or HOME");
    std::fs::create_dir_all(repo.path().join("minilm")).unwrap();
    std::os::unix::fs::symlink(
        cache.join("models/all-MiniLM-L6-v2/1"),
        repo.path().join("minilm/1"),
    )
    .unwrap();
    let srv = Server::start(repo.path(), &[]).await;

    let r = reqwest::Client::new()
        .put(srv.url("/api/collections/docs"))
        .json(&json!({ "dim": 384, "metric": "cosine", "embedding_model": "minilm" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let docs = [
        "The cat sat on the mat.",
        "A man is playing a guitar on stage.",
        "Stock markets fell sharply on Monday.",
        "The recipe needs two cups of flour and an egg.",
        "Rust guarantees memory safety without a garbage collector.",
        "It will rain heavily in Paris tomorrow.",
    ];
    let points: Vec<Value> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({ "id": i, "text": t, "payload": { "n": i } }))
        .collect();
    let r = reqwest::Client::new()
        .put(srv.url("/api/collections/docs/points"))
        .json(&json!({ "points": points }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    for (query, expected) in [
        ("Someone performs music with a guitar.", 1),
        ("Shares dropped a lot at the start of the week.", 2),
        (
            "Tomorrow there will be a downpour in the French capital.",
            5,
        ),
        (
            "A programming language that is memory safe and has no GC.",
            4,
        ),
    ] {
        let (status, resp) = srv
            .post(
                "/api/collections/docs/search",
                &json!({ "text": query, "k": 3, "with_payload": true }),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["result"][0]["id"], expected, "{query}: {resp}");
        assert_eq!(resp["result"][0]["payload"]["n"], expected);
    }
    let _ = common::fixtures();
}
