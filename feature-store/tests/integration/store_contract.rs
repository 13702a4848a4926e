//! The one contract every online store keeps, run against each store.

use std::sync::Arc;

use feature_store::store::memory::MemoryStore;
use feature_store::store::redis::RedisStore;
use feature_store::store::{OnlineStore, Row, StoredRow};
use feature_store::testkit::Redis;
use feature_store::value::{EntityKey, Value};
use feature_store::view::{FeatureView, ViewsFile};

use crate::common;

fn row(user: &str, ts: i64, n: i64) -> Row {
    Row {
        key: EntityKey::single(user),
        event_ts: ts,
        values: vec![Value::Int64(n), Value::Float64(n as f64 / 2.0)],
    }
}

async fn read_one(store: &dyn OnlineStore, view: &FeatureView, user: &str) -> Option<StoredRow> {
    store
        .read(view, &[EntityKey::single(user)], &[0, 1])
        .await
        .unwrap()
        .remove(0)
}

fn stored(ts: i64, n: i64) -> Option<StoredRow> {
    Some(StoredRow {
        event_ts: ts,
        values: vec![Value::Int64(n), Value::Float64(n as f64 / 2.0)],
    })
}

/// The contract (`feature_store::store`): newest event wins atomically, equal event times
/// are no-ops, rows replace rows, reads return what was asked in the order asked.
async fn contract(store: Arc<dyn OnlineStore>) {
    let v = common::view("contract", None);
    let s = &*store;

    // Written rows are readable; unknown keys are not found.
    assert_eq!(s.write(&v, &[row("a", 100, 1)]).await.unwrap(), [true]);
    assert_eq!(read_one(s, &v, "a").await, stored(100, 1));
    assert_eq!(read_one(s, &v, "nobody").await, None);

    // Out of order: an older event never overwrites a newer one.
    assert_eq!(s.write(&v, &[row("a", 50, 2)]).await.unwrap(), [false]);
    assert_eq!(read_one(s, &v, "a").await, stored(100, 1));
    // Equal event time: a no-op, even with other values (replays are idempotent).
    assert_eq!(s.write(&v, &[row("a", 100, 3)]).await.unwrap(), [false]);
    assert_eq!(read_one(s, &v, "a").await, stored(100, 1));
    // Newer wins.
    assert_eq!(s.write(&v, &[row("a", 101, 4)]).await.unwrap(), [true]);
    assert_eq!(read_one(s, &v, "a").await, stored(101, 4));

    // Within one batch, rows apply in order, each against the newest so far.
    let batch = [
        row("b", 10, 1),
        row("b", 30, 3),
        row("b", 20, 2),
        row("c", 5, 5),
    ];
    assert_eq!(
        s.write(&v, &batch).await.unwrap(),
        [true, true, false, true]
    );
    assert_eq!(read_one(s, &v, "b").await, stored(30, 3));

    // A row replaces the whole row: null features stay null.
    let partial = Row {
        key: EntityKey::single("c"),
        event_ts: 6,
        values: vec![Value::Null, Value::Float64(9.5)],
    };
    assert_eq!(s.write(&v, &[partial]).await.unwrap(), [true]);
    let got = s
        .read(
            &v,
            &[
                EntityKey::single("c"),
                EntityKey::single("zz"),
                EntityKey::single("b"),
            ],
            &[1, 0],
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            Some(StoredRow {
                event_ts: 6,
                values: vec![Value::Float64(9.5), Value::Null]
            }),
            None,
            Some(StoredRow {
                event_ts: 30,
                values: vec![Value::Float64(1.5), Value::Int64(3)]
            }),
        ]
    );

    // Views with the same entity keys do not see each other's rows; composite keys and
    // every value type round-trip.
    let other = common::view("contract_other", None);
    assert_eq!(read_one(s, &other, "a").await, None);
    let typed: FeatureView = ViewsFile::parse(
        r#"[views.typed]
        entities = ["shop", "item"]
        features = [
          { name = "b", type = "bool" }, { name = "i32", type = "int32" },
          { name = "f32", type = "float32" }, { name = "s", type = "string" },
          { name = "il", type = "int64_list" }, { name = "fl", type = "float32_list" },
          { name = "dl", type = "float64_list" },
        ]"#,
        "t",
    )
    .unwrap()
    .remove(0);
    let values = vec![
        Value::Bool(true),
        Value::Int32(-7),
        Value::Float32(0.1),
        Value::String("héllo \"quoted\"".into()),
        Value::Int64List(vec![1, -2, i64::MAX]),
        Value::Float32List(vec![0.5, -1.25, 1e-7]),
        Value::Float64List(vec![]),
    ];
    let key = EntityKey::from_parts(["s1", "i:9"]);
    let r = Row {
        key: key.clone(),
        event_ts: 1_700_000_000_000_000,
        values: values.clone(),
    };
    assert_eq!(s.write(&typed, &[r]).await.unwrap(), [true]);
    let all: Vec<usize> = (0..values.len()).collect();
    let got = s
        .read(&typed, std::slice::from_ref(&key), &all)
        .await
        .unwrap();
    assert_eq!(
        got[0],
        Some(StoredRow {
            event_ts: 1_700_000_000_000_000,
            values
        })
    );
    let swapped = EntityKey::from_parts(["i:9", "s1"]);
    assert_eq!(s.read(&typed, &[swapped], &all).await.unwrap()[0], None);

    // Concurrent writers, events in every order: each key ends at its newest event.
    let keys = 20;
    let writers = 8;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            // Writer w writes event times w, w + writers, ... for every key, shuffled by a
            // per-writer stride, in small batches.
            let mut rows = Vec::new();
            for i in 0..50i64 {
                let ts = 1_000 + ((i * 37 + w * 11) % 50) * writers + w;
                for k in 0..keys {
                    rows.push(row(&format!("k{k}"), ts, ts));
                }
            }
            for chunk in rows.chunks(7) {
                store.write(&v, chunk).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let newest = 1_000 + 49 * writers + (writers - 1);
    for k in 0..keys {
        assert_eq!(
            read_one(s, &v, &format!("k{k}")).await,
            stored(newest, newest),
            "key k{k}"
        );
    }
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = Redis::start();
    let store = RedisStore::open(&redis.url(), "inferd").unwrap();
    store.ping().await.unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test]
async fn memory_store_forgets_redefined_views() {
    let s = MemoryStore::new();
    let v = common::view("gone", None);
    s.write(&v, &[row("a", 1, 1)]).await.unwrap();
    s.forget_view("gone");
    assert_eq!(read_one(&s, &v, "a").await, None);
}
