//! Recall@10 of the HNSW search against brute force computed here, on 10,000 clustered
//! points: unfiltered, with filters of every selectivity (each of the planner's paths), after
//! deletes (tombstones), after a compaction, and after a restart from disk.

use std::collections::HashSet;

use serde_json::json;
use vector::{Filter, Metric, PointId, SearchRequest, Store};

use crate::common::{self, brute_force, recall};

const N: usize = 10_000;
const DIM: usize = 32;
const QUERIES: usize = 100;
const K: usize = 10;

struct Case<'a> {
    name: &'a str,
    filter: Option<serde_json::Value>,
    /// Which points the filter accepts (by index), computed independently of the crate.
    accepts: &'a dyn Fn(usize) -> bool,
    min_recall: f64,
}

fn mean_recall(
    store: &Store,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    live: &HashSet<usize>,
    case: &Case<'_>,
) -> f64 {
    let filter = case.filter.as_ref().map(|f| Filter::from_json(f).unwrap());
    let mut total = 0.0;
    for q in queries {
        let mut req = SearchRequest::vector(q.clone(), K);
        req.filter = filter.clone();
        let got = store.search("c", req).unwrap();
        let ids: Vec<PointId> = got.iter().map(|p| p.id.clone()).collect();
        for p in &got {
            let PointId::Num(i) = p.id else {
                panic!("numeric ids")
            };
            assert!(
                live.contains(&(i as usize)),
                "{}: deleted point {i} returned",
                case.name
            );
            assert!(
                (case.accepts)(i as usize),
                "{}: point {i} fails the filter",
                case.name
            );
        }
        let want = brute_force(
            Metric::Cosine,
            q,
            K,
            live.iter()
                .filter(|&&i| (case.accepts)(i))
                .map(|&i| (i as u64, &data[i])),
        );
        assert_eq!(got.len(), want.len(), "{}: result count", case.name);
        total += recall(&ids, &want);
    }
    total / queries.len() as f64
}

fn check_all(
    store: &Store,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    live: &HashSet<usize>,
    stage: &str,
) {
    let cases = [
        Case {
            name: "unfiltered",
            filter: None,
            accepts: &|_| true,
            min_recall: 0.95,
        },
        // 70 %: graph walked unfiltered, wider, then filtered.
        Case {
            name: "group in 0..7",
            filter: Some(
                json!({"must": [{"key": "group", "match": {"any": [0, 1, 2, 3, 4, 5, 6]}}]}),
            ),
            accepts: &|i| i % 10 < 7,
            min_recall: 0.93,
        },
        // 10 % (1,000 points): few enough for the exact scan.
        Case {
            name: "group == 3",
            filter: Some(json!({"must": [{"key": "group", "match": {"value": 3}}]})),
            accepts: &|i| i % 10 == 3,
            min_recall: 0.9,
        },
        // 30 %, with must_not and a range: filtered during the graph walk (10 % after the
        // deletes below: exact scan).
        Case {
            name: "group range minus 5",
            filter: Some(
                json!({"must": [{"key": "group", "range": {"gte": 4, "lt": 8}}],
                                "must_not": [{"key": "group", "match": {"value": 5}}]}),
            ),
            accepts: &|i| (4..8).contains(&(i % 10)) && i % 10 != 5,
            min_recall: 0.9,
        },
        // 2 %: exact scan, so exact results.
        Case {
            name: "rare",
            filter: Some(json!({"must": [{"key": "rare", "match": {"value": true}}]})),
            accepts: &|i| i.is_multiple_of(50),
            min_recall: 1.0,
        },
    ];
    for case in &cases {
        let r = mean_recall(store, data, queries, live, case);
        eprintln!("{stage}: {}: recall@{K} = {r:.4}", case.name);
        assert!(
            r >= case.min_recall,
            "{stage}: {}: recall@{K} {r:.4} < {}",
            case.name,
            case.min_recall
        );
    }
    // exact=true is brute force.
    for q in queries.iter().take(10) {
        let mut req = SearchRequest::vector(q.clone(), K);
        req.exact = true;
        let got: Vec<PointId> = store
            .search("c", req)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        let want = brute_force(
            Metric::Cosine,
            q,
            K,
            live.iter().map(|&i| (i as u64, &data[i])),
        );
        assert_eq!(recall(&got, &want), 1.0, "{stage}: exact search");
    }
}

#[test]
fn recall_through_deletes_compaction_and_restart() {
    let all = common::clustered(7, N + QUERIES, DIM, 20);
    let (data, queries) = all.split_at(N);
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_plain(dir.path());
    common::create(&store, "c", DIM, Metric::Cosine);
    common::upsert_all(&store, "c", data);
    let mut live: HashSet<usize> = (0..N).collect();
    assert_eq!(store.info("c").unwrap().points, N);
    check_all(&store, data, queries, &live, "fresh");

    // Delete 30 % (ids ending in 1, 4, 7): tombstones, filtered at search.
    let doomed: Vec<usize> = (0..N).filter(|i| matches!(i % 10, 1 | 4 | 7)).collect();
    for chunk in doomed.chunks(500) {
        store
            .delete_points("c", chunk.iter().map(|&i| PointId::Num(i as u64)).collect())
            .unwrap();
    }
    for i in &doomed {
        live.remove(i);
    }
    let info = store.info("c").unwrap();
    assert_eq!((info.points, info.deleted), (live.len(), doomed.len()));
    check_all(&store, data, queries, &live, "after deletes");

    // Compaction: a new graph over the live points only.
    let c = store.collection("c").unwrap();
    assert!(c.needs_compaction());
    assert!(c.compact().unwrap());
    let info = store.info("c").unwrap();
    assert_eq!(
        (info.points, info.deleted, info.indexed),
        (live.len(), 0, live.len())
    );
    check_all(&store, data, queries, &live, "after compaction");

    // More writes after the snapshot the compaction took, then a restart: snapshot + log.
    store
        .delete_points("c", vec![PointId::Num(0), PointId::Num(2)])
        .unwrap();
    live.remove(&0);
    live.remove(&2);
    drop(c);
    drop(store);
    let store = common::open_plain(dir.path());
    let info = store.info("c").unwrap();
    assert_eq!((info.points, info.deleted), (live.len(), 0));
    check_all(&store, data, queries, &live, "after restart");
}
