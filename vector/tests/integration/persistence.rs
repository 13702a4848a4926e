//! Restarts: the log alone, snapshot + log, a torn log tail, and the background thread that
//! freezes, compacts and snapshots by itself.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vector::{
    Metric, Metrics, NoEmbedder, PointId, PointInput, SearchRequest, Store, StoreOptions,
};

use crate::common;

fn wal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    v.sort();
    v
}

#[test]
fn log_replay_restores_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::clustered(3, 500, 8, 4);
    {
        let store = common::open_plain(dir.path());
        common::create(&store, "p", 8, Metric::L2);
        common::upsert_all(&store, "p", &data);
        store
            .delete_points("p", vec![PointId::Num(3), PointId::Num(4)])
            .unwrap();
        store
            .upsert(
                "p",
                vec![PointInput::new(
                    "str",
                    vec![9.0; 8],
                    Some(json!({"k": "v"})),
                )],
            )
            .unwrap();
        store
            .upsert("p", vec![PointInput::new(4u64, vec![7.0; 8], None)])
            .unwrap();
        // Dropped without a snapshot: everything comes back from the log.
    }
    let store = common::open_plain(dir.path());
    let info = store.info("p").unwrap();
    assert_eq!((info.points, info.operation_id), (500, 4));
    assert!(matches!(
        store.get_point("p", &PointId::Num(3), false),
        Err(vector::Error::PointNotFound { .. })
    ));
    assert_eq!(
        store.get_point("p", &PointId::Num(4), true).unwrap().vector,
        Some(vec![7.0; 8])
    );
    assert_eq!(
        store.get_point("p", &"str".into(), false).unwrap().payload,
        Some(json!({"k": "v"}))
    );
    assert_eq!(
        store
            .get_point("p", &PointId::Num(10), true)
            .unwrap()
            .vector
            .as_ref(),
        Some(&data[10])
    );
    let hits = store
        .search("p", SearchRequest::vector(data[42].clone(), 1))
        .unwrap();
    assert_eq!((hits[0].id.clone(), hits[0].score), (PointId::Num(42), 0.0));

    // Snapshot, more writes, restart: the snapshot plus the newer log.
    let c = store.collection("p").unwrap();
    c.snapshot().unwrap();
    assert!(dir.path().join("p/snapshot.bin").is_file());
    assert_eq!(
        wal_files(&dir.path().join("p")).len(),
        1,
        "older log segments removed"
    );
    store.delete_points("p", vec![PointId::Num(5)]).unwrap();
    store
        .upsert("p", vec![PointInput::new(1_000u64, vec![1.0; 8], None)])
        .unwrap();
    drop(c);
    drop(store);
    let store = common::open_plain(dir.path());
    let info = store.info("p").unwrap();
    assert_eq!((info.points, info.operation_id), (500, 6));
    assert!(store.get_point("p", &PointId::Num(5), false).is_err());
    assert!(store.get_point("p", &PointId::Num(1_000), false).is_ok());
    // The next operation continues the sequence.
    assert_eq!(
        store
            .delete_points("p", vec![PointId::Num(6)])
            .unwrap()
            .operation_id,
        7
    );
}

#[test]
fn a_torn_log_tail_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = common::open_plain(dir.path());
        common::create(&store, "t", 2, Metric::Dot);
        for i in 0..10u64 {
            store
                .upsert("t", vec![PointInput::new(i, vec![i as f32, 1.0], None)])
                .unwrap();
        }
    }
    // What a kill -9 in the middle of an (unacknowledged) append leaves.
    let seg = wal_files(&dir.path().join("t")).pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);
    let store = common::open_plain(dir.path());
    assert_eq!(store.info("t").unwrap().points, 10);
    store
        .upsert("t", vec![PointInput::new(10u64, vec![1.0, 1.0], None)])
        .unwrap();
    drop(store);
    let store = common::open_plain(dir.path());
    assert_eq!(
        store.info("t").unwrap().points,
        11,
        "appends after the cut replay too"
    );
}

/// A store with the maintenance thread on, every 20 ms, and its metrics' registry.
fn background_store(dir: &std::path::Path, opts: StoreOptions) -> (Store, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(Some(&registry)).unwrap();
    let opts = StoreOptions {
        background: true,
        maintenance_interval: Duration::from_millis(20),
        ..opts
    };
    let store = Store::open_with(dir, Arc::new(NoEmbedder), metrics, opts).unwrap();
    (store, registry)
}

fn metrics_text(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
}

#[test]
fn background_thread_compacts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        snapshot_wal_bytes: 1 << 40,
        snapshot_interval: Duration::from_millis(200),
        compact_dead_fraction: 0.2,
        compact_min_dead: 10,
        ..StoreOptions::default()
    };
    let (store, registry) = background_store(dir.path(), opts);
    let data = common::clustered(5, 300, 8, 3);
    common::create(&store, "b", 8, Metric::Cosine);
    common::upsert_all(&store, "b", &data);
    store
        .delete_points("b", (0..100u64).map(PointId::Num).collect())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = store.info("b").unwrap();
        let snap = dir.path().join("b/snapshot.bin").is_file();
        if info.deleted == 0 && snap {
            assert_eq!((info.points, info.indexed), (200, 200));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction / snapshot: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = metrics_text(&registry);
    assert!(
        text.contains("inferd_vector_rebuilds_total{collection=\"b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("inferd_vector_points{collection=\"b\"} 200"),
        "{text}"
    );
    store.delete("b").unwrap();
    let text = metrics_text(&registry);
    assert!(
        !text.contains("collection=\"b\""),
        "a deleted collection's series go: {text}"
    );
}

/// The maintenance thread freezes the graph once enough points arrived since the last freeze;
/// until then (and for a few points after) they are found by the exact scan.
#[test]
fn background_thread_freezes_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = background_store(dir.path(), StoreOptions::default());
    let data = common::clustered(9, 1_010, 8, 4);
    common::create(&store, "f", 8, Metric::L2);
    let points = |r: std::ops::Range<usize>| r.map(|i| common::point(i, &data[i])).collect();
    store.upsert("f", points(0..1_000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.info("f").unwrap().frozen < 1_000 {
        assert!(
            Instant::now() < deadline,
            "never frozen: {:?}",
            store.info("f")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ten more: too few for a freeze, found at once all the same.
    store.upsert("f", points(1_000..1_010)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let info = store.info("f").unwrap();
    assert_eq!((info.indexed, info.frozen), (1_010, 1_000));
    for (i, v) in data.iter().enumerate().skip(1_000) {
        let hits = store
            .search("f", SearchRequest::vector(v.clone(), 1))
            .unwrap();
        assert_eq!(hits[0].id, PointId::Num(i as u64));
    }
    let text = metrics_text(&registry);
    assert!(
        text.contains("inferd_vector_freezes_total{collection=\"f\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("inferd_vector_unfrozen_points{collection=\"f\"} 10"),
        "{text}"
    );
}
