//! The Kafka ingester against a real broker (tansu) and a real Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use feature_store::Error;
use feature_store::ingest::kafka::{Ingester, KafkaConfig};
use feature_store::ingest::metrics::IngestMetrics;
use feature_store::registry::ViewRegistry;
use feature_store::store::redis::RedisStore;
use feature_store::store::{OnlineStore, StoredRow};
use feature_store::testkit::{Redis, Tansu, produce};
use feature_store::value::{EntityKey, Value};
use feature_store::view::FeatureView;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::common::{self, event, eventually};

struct Setup {
    tansu: Tansu,
    redis: Redis,
    store: Arc<dyn OnlineStore>,
    view: Arc<FeatureView>,
    views: Arc<ViewRegistry>,
    producer: FutureProducer,
    topic: String,
}

async fn setup(topic: &str, partitions: i32) -> Setup {
    let tansu = Tansu::start();
    let dlq = format!("{topic}.dlq");
    tansu.create_topics(&[topic, &dlq], partitions).await;
    let redis = Redis::start();
    let store: Arc<dyn OnlineStore> = Arc::new(RedisStore::open(&redis.url(), "t").unwrap());
    let view = common::view("users", Some(topic));
    let views = Arc::new(ViewRegistry::new(vec![view.clone()], None).unwrap());
    Setup {
        producer: tansu.producer(),
        tansu,
        redis,
        store,
        view: Arc::new(view),
        views,
        topic: topic.into(),
    }
}

impl Setup {
    fn config(&self) -> KafkaConfig {
        let mut c = KafkaConfig::new(self.tansu.brokers());
        c.group_id = format!("{}-ingest", self.topic);
        c.options = vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("heartbeat.interval.ms".into(), "500".into()),
        ];
        c
    }

    fn ingester(&self, cfg: KafkaConfig, metrics: &IngestMetrics) -> Ingester {
        Ingester::start(
            cfg,
            Arc::clone(&self.views),
            Arc::clone(&self.store),
            metrics.clone(),
        )
        .unwrap()
    }

    async fn send(&self, user: &str, ts: i64, n: i64) {
        produce(&self.producer, &self.topic, user, &event(user, ts, n)).await;
    }

    async fn read(&self, user: &str) -> Result<Option<StoredRow>, Error> {
        Ok(self
            .store
            .read(&self.view, &[EntityKey::single(user)], &[0, 1])
            .await?
            .remove(0))
    }

    /// Waits until `user` holds exactly event `ts` with `clicks = n`.
    async fn wait_for(&self, user: &str, ts: i64, n: i64) {
        let want = StoredRow {
            event_ts: ts,
            values: vec![Value::Int64(n), Value::Float64(n as f64 / 2.0)],
        };
        eventually(&format!("{user} = {n} at {ts}"), || async {
            (self.read(user).await.ok().flatten().as_ref() == Some(&want)).then_some(())
        })
        .await;
    }
}

const T0: i64 = 1_700_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_readable_and_the_newest_wins() {
    let s = setup("events", 1).await;
    let metrics = IngestMetrics::unregistered();
    let ing = s.ingester(s.config(), &metrics);
    // In order, out of order, duplicated.
    s.send("alice", T0 + 10, 1).await;
    s.send("alice", T0 + 30, 3).await;
    s.send("alice", T0 + 20, 2).await; // older than what is stored: dropped
    s.send("alice", T0 + 30, 9).await; // same event time: a no-op
    s.send("bob", T0 + 5, 5).await;
    s.send("bob", T0 + 5, 5).await; // exact duplicate
    s.send("carol", T0 + 1, 7).await;
    s.wait_for("carol", T0 + 1, 7).await;
    s.wait_for("alice", T0 + 30, 3).await;
    s.wait_for("bob", T0 + 5, 5).await;
    let ev = |o: &str| metrics.events.with_label_values(&["users", o]).get();
    eventually("event counts", || async {
        (ev("applied") + ev("stale") == 7).then_some(())
    })
    .await;
    assert_eq!(ev("applied"), 4);
    assert_eq!(ev("stale"), 3);
    assert!(
        metrics
            .freshness
            .with_label_values(&["users"])
            .get_sample_count()
            >= 4
    );
    ing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_topic_and_ingestion_goes_on() {
    let s = setup("poison", 1).await;
    let metrics = IngestMetrics::unregistered();
    let ing = s.ingester(s.config(), &metrics);
    s.send("u1", T0 + 1, 1).await;
    produce(&s.producer, &s.topic, "bad1", b"{not json").await;
    produce(
        &s.producer,
        &s.topic,
        "bad2",
        br#"{"user_id": "u2", "ts": 1700000000000000, "clicks": "many"}"#,
    )
    .await;
    produce(
        &s.producer,
        &s.topic,
        "bad3",
        br#"{"ts": 1700000000000000}"#,
    )
    .await;
    s.send("u2", T0 + 2, 2).await;
    s.wait_for("u2", T0 + 2, 2).await;
    s.wait_for("u1", T0 + 1, 1).await;
    eventually("3 dead letters counted", || async {
        (metrics.dlq.with_label_values(&["poison"]).get() == 3).then_some(())
    })
    .await;

    // The dead-letter topic holds the three messages, unchanged, with the reason.
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.tansu.brokers())
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("poison.dlq", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut dead = Vec::new();
    while dead.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let headers: HashMap<String, String> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        dead.push((
            String::from_utf8_lossy(m.key().unwrap()).into_owned(),
            m.payload().unwrap().to_vec(),
            headers,
        ));
    }
    assert_eq!(dead[0].0, "bad1");
    assert_eq!(dead[0].1, b"{not json");
    assert!(
        dead[0].2["inferd.error"].starts_with("not JSON"),
        "{:?}",
        dead[0].2
    );
    assert_eq!(dead[0].2["inferd.source.topic"], "poison");
    assert_eq!(dead[0].2["inferd.source.partition"], "0");
    assert_eq!(dead[0].2["inferd.source.offset"], "1");
    assert!(
        dead[1].2["inferd.error"].contains("feature 'clicks'"),
        "{:?}",
        dead[1].2
    );
    assert!(dead[2].2["inferd.error"].contains("join key 'user_id' is missing"));
    ing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingester_restarted_mid_stream_loses_nothing() {
    let s = setup("restart", 3).await;
    let metrics = IngestMetrics::unregistered();
    let users = 30;
    let events = 600i64;
    // Small batches, so the stop falls between stored batches.
    let mut cfg = s.config();
    cfg.max_batch = 8;
    let first = s.ingester(cfg.clone(), &metrics);
    let producer = {
        let producer = s.producer.clone();
        let topic = s.topic.clone();
        tokio::spawn(async move {
            for i in 0..events {
                let u = format!("user{}", i % users);
                // Event times rise with i, except every 7th, which is late.
                let ts = if i % 7 == 3 { T0 } else { T0 + i };
                produce(&producer, &topic, &u, &event(&u, ts, i)).await;
            }
        })
    };
    let applied = || {
        metrics
            .events
            .with_label_values(&["users", "applied"])
            .get()
    };
    eventually("part of the stream written", || async {
        (applied() >= 50).then_some(())
    })
    .await;
    // Abruptly: buffered messages are dropped unwritten.
    first.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = s.ingester(cfg, &metrics);
    producer.await.unwrap();
    // Every user ends with its newest event, which is its last non-late one.
    for u in 0..users {
        let last = (0..events)
            .filter(|i| i % users == u && i % 7 != 3)
            .max()
            .unwrap();
        s.wait_for(&format!("user{u}"), T0 + last, last).await;
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_retried_and_caught_up() {
    let mut s = setup("outage", 1).await;
    let metrics = IngestMetrics::unregistered();
    let mut cfg = s.config();
    cfg.buffer = 4;
    cfg.max_batch = 2;
    let ing = s.ingester(cfg, &metrics);
    s.send("a", T0 + 1, 1).await;
    s.wait_for("a", T0 + 1, 1).await;

    s.redis.stop();
    // Reads fail with a clear error meanwhile.
    let e = s.read("a").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("redis at redis://127.0.0.1:"), "{e}");
    // Events keep coming: more than the buffer holds, so consumption pauses.
    for i in 0..20 {
        s.send(&format!("b{i}"), T0 + 10 + i, i).await;
    }
    s.send("a", T0 + 2, 2).await;
    eventually("the ingester to pause", || async {
        (metrics.paused.get() == 1).then_some(())
    })
    .await;
    eventually("failed writes to be counted", || async {
        (metrics.store_errors.get() > 0).then_some(())
    })
    .await;

    s.redis.restart();
    s.wait_for("a", T0 + 2, 2).await;
    for i in 0..20 {
        s.wait_for(&format!("b{i}"), T0 + 10 + i, i).await;
    }
    eventually("the ingester to resume", || async {
        (metrics.paused.get() == 0).then_some(())
    })
    .await;
    assert_eq!(
        s.read("a").await.unwrap().unwrap().values[0],
        Value::Int64(2)
    );
    ing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_added_at_run_time_are_subscribed() {
    let s = setup("first", 1).await;
    s.tansu.create_topics(&["second", "second.dlq"], 1).await;
    let metrics = IngestMetrics::unregistered();
    let ing = s.ingester(s.config(), &metrics);
    s.send("x", T0, 1).await;
    s.wait_for("x", T0, 1).await;
    let late = common::view("late", Some("second"));
    s.views.put(late.clone()).unwrap();
    produce(&s.producer, "second", "y", &event("y", T0, 4)).await;
    eventually("the new view's row", || async {
        let r = s
            .store
            .read(&late, &[EntityKey::single("y")], &[0])
            .await
            .ok()?
            .remove(0)?;
        (r.values == [Value::Int64(4)]).then_some(())
    })
    .await;
    ing.shutdown().await;
}
