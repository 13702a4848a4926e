//! Collections and points through the store's API: lifecycle, ids, payloads, metrics, text,
//! batch search, thresholds, and the errors that name what is wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use vector::{
    CreateCollection, Embedder, Error, Filter, Metric, PointId, PointInput, SearchRequest,
};

use crate::common::{self, brute_force, recall};

#[test]
fn lifecycle_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_plain(dir.path());
    assert!(store.list().is_empty());
    common::create(&store, "a", 4, Metric::Cosine);
    assert!(matches!(
        store.create(
            "a",
            CreateCollection {
                dim: 4,
                ..Default::default()
            }
        ),
        Err(Error::CollectionExists(_))
    ));
    assert!(matches!(
        store.create(
            "../x",
            CreateCollection {
                dim: 4,
                ..Default::default()
            }
        ),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        store.create(
            "b",
            CreateCollection {
                dim: 0,
                ..Default::default()
            }
        ),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        store.info("nope"),
        Err(Error::CollectionNotFound(_))
    ));
    assert!(matches!(
        store.search("nope", SearchRequest::vector(vec![1.0; 4], 1)),
        Err(Error::CollectionNotFound(_))
    ));

    let up = |pts: Vec<PointInput>| store.upsert("a", pts);
    let e = up(vec![PointInput::new(1u64, vec![1.0, 2.0], None)]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Dimension {
                expected: 4,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("point 1 has dimension 2"), "{e}");
    let e = up(vec![PointInput::new(
        1u64,
        vec![1.0, f32::NAN, 0.0, 0.0],
        None,
    )])
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidVector(_)) && e.to_string().contains("NaN"),
        "{e}"
    );
    let e = up(vec![PointInput::new(1u64, vec![0.0; 4], None)]).unwrap_err();
    assert!(e.to_string().contains("zero vector"), "{e}");
    let e = up(vec![PointInput::new(1u64, vec![1.0; 4], Some(json!([1])))]).unwrap_err();
    assert!(
        e.to_string().contains("payload must be a JSON object"),
        "{e}"
    );
    let e = up(vec![PointInput {
        id: 1u64.into(),
        vector: None,
        text: Some("hi".into()),
        payload: None,
    }])
    .unwrap_err();
    assert!(e.to_string().contains("no embedding_model"), "{e}");
    assert_eq!(
        store.info("a").unwrap().points,
        0,
        "failed upserts change nothing"
    );

    let r = up(vec![
        PointInput::new(1u64, vec![1.0, 0.0, 0.0, 0.0], Some(json!({"g": 1}))),
        PointInput::new("s-1", vec![0.0, 1.0, 0.0, 0.0], None),
    ])
    .unwrap();
    assert_eq!((r.operation_id, r.status), (1, "completed"));
    let rec = store.get_point("a", &"s-1".into(), true).unwrap();
    assert_eq!(rec.vector, Some(vec![0.0, 1.0, 0.0, 0.0]));
    assert!(matches!(
        store.get_point("a", &PointId::Num(9), false),
        Err(Error::PointNotFound { .. })
    ));
    // Replacing keeps one point per id; cosine vectors are stored normalised.
    up(vec![PointInput::new(
        1u64,
        vec![2.0, 0.0, 0.0, 0.0],
        Some(json!({"g": 2})),
    )])
    .unwrap();
    let rec = store.get_point("a", &PointId::Num(1), true).unwrap();
    assert_eq!(
        (rec.payload, rec.vector),
        (Some(json!({"g": 2})), Some(vec![1.0, 0.0, 0.0, 0.0]))
    );
    let info = store.info("a").unwrap();
    assert_eq!((info.points, info.deleted, info.operation_id), (2, 1, 2));
    assert!(info.memory_bytes > 0);

    let q = |v: Vec<f32>| SearchRequest::vector(v, 10);
    let e = store.search("a", q(vec![1.0; 3])).unwrap_err();
    assert!(e.to_string().contains("query has dimension 3"), "{e}");
    let e = store.search("a", q(vec![0.0; 4])).unwrap_err();
    assert!(e.to_string().contains("zero vector"), "{e}");
    let mut bad_k = q(vec![1.0; 4]);
    bad_k.k = 0;
    assert!(matches!(
        store.search("a", bad_k),
        Err(Error::InvalidRequest(_))
    ));
    let hits = store.search("a", q(vec![1.0, 0.1, 0.0, 0.0])).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        (hits[0].id.clone(), hits[0].payload.clone()),
        (PointId::Num(1), Some(json!({"g": 2})))
    );
    assert!(hits[0].score > hits[1].score && hits[0].score <= 1.0);
    let mut thr = q(vec![1.0, 0.1, 0.0, 0.0]);
    thr.score_threshold = Some(0.5);
    thr.with_payload = false;
    thr.with_vector = true;
    let hits = store.search("a", thr).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].payload.clone(), hits[0].vector.clone()),
        (None, Some(vec![1.0, 0.0, 0.0, 0.0]))
    );

    store
        .delete_points("a", vec![PointId::Num(1), PointId::Num(77)])
        .unwrap();
    let hits = store.search("a", q(vec![1.0, 0.1, 0.0, 0.0])).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        vec![PointId::from("s-1")]
    );
    let batch = store
        .search_batch(
            "a",
            vec![q(vec![0.0, 1.0, 0.0, 0.0]), q(vec![1.0, 1.0, 1.0, 1.0])],
        )
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(store.list().len(), 1);
    store.delete("a").unwrap();
    assert!(matches!(store.info("a"), Err(Error::CollectionNotFound(_))));
    assert!(!dir.path().join("a").exists());
    common::create(&store, "a", 2, Metric::L2);
    assert_eq!(
        store.info("a").unwrap().points,
        0,
        "a recreated collection starts empty"
    );
}

/// l2 and dot order results like brute force, and report distance / dot product as score.
/// (A graph over raw dot products is no metric space and finds less: see `min_recall`.)
#[test]
fn l2_and_dot_match_brute_force() {
    let all = common::clustered(11, 2_050, 16, 8);
    let (data, queries) = all.split_at(2_000);
    for (metric, min_recall) in [(Metric::L2, 0.95), (Metric::Dot, 0.9)] {
        let dir = tempfile::tempdir().unwrap();
        let store = common::open_plain(dir.path());
        common::create(&store, "m", 16, metric);
        common::upsert_all(&store, "m", data);
        let mut total = 0.0;
        for q in queries {
            let mut req = SearchRequest::vector(q.clone(), 10);
            req.ef = Some(128);
            let got = store.search("m", req).unwrap();
            let want = brute_force(
                metric,
                q,
                10,
                data.iter().enumerate().map(|(i, v)| (i as u64, v)),
            );
            let ids: Vec<PointId> = got.iter().map(|p| p.id.clone()).collect();
            total += recall(&ids, &want);
            let PointId::Num(top) = got[0].id else {
                panic!()
            };
            let s = common::score(metric, q, &data[top as usize]);
            assert!(
                (f64::from(got[0].score) - s).abs() <= 1e-3 * s.abs().max(1.0),
                "{metric:?} score"
            );
            if metric == Metric::L2 {
                assert!(got.windows(2).all(|w| w[0].score <= w[1].score));
            } else {
                assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            }
        }
        let r = total / queries.len() as f64;
        eprintln!("{metric:?}: recall@10 {r}");
        assert!(r >= min_recall, "{metric:?}: recall {r}");
    }
}

/// Maps each text to a vector by its bytes; counts calls.
struct FakeEmbedder {
    dim: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl Embedder for FakeEmbedder {
    fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        if model != "fake" {
            return Err(format!("model '{model}' is not served"));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01; self.dim];
                for (i, b) in t.bytes().enumerate() {
                    v[(b as usize + i) % self.dim] += 1.0;
                }
                v
            })
            .collect())
    }
}

#[test]
fn text_points_and_queries_use_the_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeEmbedder {
        dim: 8,
        calls: Default::default(),
    });
    let store = common::open(dir.path(), fake.clone(), common::quiet_options());
    let create = |name: &str, model: &str, dim| {
        store.create(
            name,
            CreateCollection {
                dim,
                embedding_model: Some(model.into()),
                ..Default::default()
            },
        )
    };
    create("t", "fake", 8).unwrap();
    let text = |id: u64, t: &str| PointInput {
        id: id.into(),
        vector: None,
        text: Some(t.into()),
        payload: Some(json!({"t": t})),
    };
    store
        .upsert(
            "t",
            vec![
                text(1, "apple pie"),
                text(2, "zebra crossing"),
                PointInput::new(3u64, vec![1.0; 8], None),
            ],
        )
        .unwrap();
    assert_eq!(
        fake.calls.load(Ordering::Relaxed),
        1,
        "texts of one upsert are embedded together"
    );
    let req = SearchRequest {
        text: Some("apple pie".into()),
        vector: None,
        ..SearchRequest::vector(vec![], 1)
    };
    let hits = store.search("t", req).unwrap();
    assert_eq!(hits[0].id, PointId::Num(1));
    assert!(hits[0].score > 0.999);

    create("wrong-dim", "fake", 4).unwrap();
    let e = store.upsert("wrong-dim", vec![text(1, "x")]).unwrap_err();
    assert!(
        matches!(e, Error::Embedding { .. }) && e.to_string().contains("dimension 8"),
        "{e}"
    );
    create("unknown", "other", 8).unwrap();
    let e = store.upsert("unknown", vec![text(1, "x")]).unwrap_err();
    assert!(e.to_string().contains("'other' is not served"), "{e}");
}

/// Searches keep answering, and writes keep landing, while a compaction rebuilds the graph.
#[test]
fn searches_answer_during_a_rebuild() {
    let data = common::clustered(21, 6_000, 16, 10);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(common::open_plain(dir.path()));
    common::create(&store, "r", 16, Metric::Cosine);
    common::upsert_all(&store, "r", &data);
    store
        .delete_points("r", (0..3_000u64).map(PointId::Num).collect())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (store, stop, q) = (Arc::clone(&store), Arc::clone(&stop), data[4_000].clone());
        std::thread::spawn(move || {
            let mut n = 0;
            let flt =
                Filter::from_json(&json!({"must": [{"key": "group", "match": {"value": 0}}]}))
                    .unwrap();
            while !stop.load(Ordering::Relaxed) || n == 0 {
                let hits = store
                    .search("r", SearchRequest::vector(q.clone(), 5))
                    .unwrap();
                assert_eq!(hits[0].id, PointId::Num(4_000));
                let mut f = SearchRequest::vector(q.clone(), 5);
                f.filter = Some(flt.clone());
                assert_eq!(store.search("r", f).unwrap()[0].id, PointId::Num(4_000));
                n += 1;
            }
            n
        })
    };
    let fresh = |i: u64| -> Vec<f32> {
        data[(i as usize * 37) % 3_000]
            .iter()
            .map(|x| x + 0.05)
            .collect()
    };
    let writer = {
        let store = Arc::clone(&store);
        let vs: Vec<Vec<f32>> = (0..50).map(fresh).collect();
        std::thread::spawn(move || {
            for (i, v) in vs.into_iter().enumerate() {
                store
                    .upsert("r", vec![PointInput::new(100_000 + i as u64, v, None)])
                    .unwrap();
            }
        })
    };
    let c = store.collection("r").unwrap();
    assert!(c.compact().unwrap());
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(searcher.join().unwrap() > 0);
    let info = store.info("r").unwrap();
    assert_eq!(info.points, 3_050, "writes during the rebuild are kept");
    assert_eq!(
        (info.deleted, info.indexed),
        (0, 3_050),
        "points written during the rebuild are in the new graph"
    );
    for i in [0u64, 17, 49] {
        let hits = store
            .search("r", SearchRequest::vector(fresh(i), 1))
            .unwrap();
        assert_eq!(hits[0].id, PointId::Num(100_000 + i));
    }
}

#[test]
fn scroll_pages_in_id_order_and_count_agrees_with_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_plain(dir.path());
    common::create(&store, "s", 2, Metric::L2);
    let points: Vec<PointInput> = (0..25u64)
        .rev()
        .map(|i| PointInput::new(i, vec![i as f32, 1.0], Some(json!({"even": i % 2 == 0}))))
        .chain([PointInput::new(
            PointId::Str("zz".into()),
            vec![0.0, 0.0],
            None,
        )])
        .collect();
    store.upsert("s", points).unwrap();
    store.delete_points("s", vec![PointId::Num(4)]).unwrap();
    // Unfiltered: numbers in order, then strings; pages chain through next.
    let mut seen = Vec::new();
    let mut from = None;
    loop {
        let (page, next) = store
            .scroll("s", None, from.as_ref(), 10, false, false)
            .unwrap();
        assert!(page.len() <= 10 && page.iter().all(|r| r.payload.is_none()));
        seen.extend(page.into_iter().map(|r| r.id));
        match next {
            Some(n) => from = Some(n),
            None => break,
        }
    }
    let mut want: Vec<PointId> = (0..25u64).filter(|i| *i != 4).map(PointId::Num).collect();
    want.push(PointId::Str("zz".into()));
    assert_eq!(seen, want);
    let even: Filter =
        serde_json::from_value(json!({"must": [{"key": "even", "match": {"value": true}}]}))
            .unwrap();
    let (page, next) = store
        .scroll("s", Some(&even), None, 100, true, true)
        .unwrap();
    assert_eq!(next, None);
    let ids: Vec<PointId> = page.iter().map(|r| r.id.clone()).collect();
    let want: Vec<PointId> = (0..25u64)
        .filter(|i| i % 2 == 0 && *i != 4)
        .map(PointId::Num)
        .collect();
    assert_eq!(ids, want);
    assert_eq!(page[1].vector.as_deref(), Some(&[2.0f32, 1.0][..]));
    assert_eq!(store.count("s", Some(&even)).unwrap(), want.len());
    assert_eq!(store.count("s", None).unwrap(), 25);
    assert!(matches!(
        store.scroll("s", None, None, 0, false, false),
        Err(Error::InvalidRequest(_))
    ));
}
