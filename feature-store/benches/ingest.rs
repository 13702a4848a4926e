//! Kafka ingestion benchmark against a real broker (tansu) and, for the Redis store, a real
//! `redis-server` (both started here, as in the integration tests):
//!
//! - **freshness**: the ingester follows an empty topic; events are produced at `RATE`/s
//!   (one record per batch), each stamped with the time it is sent; the store is wrapped to
//!   record, per row, the time from that stamp to the store's acknowledgement (servable):
//!   p50 / p99 / max;
//! - **throughput**: a backlog of `INFERD_BENCH_EVENTS` events (default 100 000) is produced
//!   to a second topic, then its view is added: the ingester subscribes and consumes it,
//!   timed from its first write to its last (the rebalance is left out): events/s.
//! - `probe`: the broker alone — a plain librdkafka consumer's produce → receive latency on
//!   a fresh topic and after a backlog (tansu 0.6's in-memory fetch slows as a partition
//!   grows, and holds each fetch for the whole `fetch.wait.max.ms`).
//!
//! `INFERD_BENCH_FETCH_WAIT_MS` sets the ingester's `fetch.wait.max.ms` (default 10).
//!
//! ```sh
//! cargo bench -p inferd-feature-store --bench ingest            # memory and redis
//! cargo bench -p inferd-feature-store --bench ingest -- redis   # one store
//! cargo bench -p inferd-feature-store --bench ingest -- probe
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feature_store::ingest::kafka::{Ingester, KafkaConfig};
use feature_store::ingest::metrics::IngestMetrics;
use feature_store::registry::ViewRegistry;
use feature_store::store::memory::MemoryStore;
use feature_store::store::redis::RedisStore;
use feature_store::store::{OnlineStore, Row, StoredRow};
use feature_store::testkit::{Redis, Tansu};
use feature_store::value::{EntityKey, now_micros};
use feature_store::view::{FeatureView, ViewsFile};
use futures::future::{BoxFuture, FutureExt};
use rdkafka::producer::{FutureProducer, FutureRecord};

const USERS: usize = 10_000;
const RATE: u64 = 500;
const FRESHNESS_EVENTS: usize = 2_000;

/// Records, per applied row, microseconds from its event time to the write's return.
struct Recording {
    inner: Arc<dyn OnlineStore>,
    samples: Mutex<Vec<i64>>,
    record: std::sync::atomic::AtomicBool,
}

impl OnlineStore for Recording {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn write<'a>(
        &'a self,
        view: &'a FeatureView,
        rows: &'a [Row],
    ) -> BoxFuture<'a, feature_store::Result<Vec<bool>>> {
        async move {
            let applied = self.inner.write(view, rows).await?;
            if self.record.load(std::sync::atomic::Ordering::Relaxed) {
                let now = now_micros();
                let mut s = self.samples.lock().unwrap();
                for (r, a) in rows.iter().zip(&applied) {
                    if *a {
                        s.push(now - r.event_ts);
                    }
                }
            }
            Ok(applied)
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        view: &'a FeatureView,
        keys: &'a [EntityKey],
        features: &'a [usize],
    ) -> BoxFuture<'a, feature_store::Result<Vec<Option<StoredRow>>>> {
        self.inner.read(view, keys, features)
    }
}

fn view(name: &str, topic: &str) -> FeatureView {
    ViewsFile::parse(
        &format!(
            r#"[views.{name}]
            entities = ["user_id"]
            features = [{{ name = "clicks", type = "int64" }}, {{ name = "ctr", type = "float32" }},
                        {{ name = "emb", type = "float32_list" }}]
            [views.{name}.source]
            topic = "{topic}"
            timestamp_field = "ts""#
        ),
        "bench",
    )
    .unwrap()
    .remove(0)
}

fn event(i: usize, ts: i64) -> Vec<u8> {
    format!(
        r#"{{"user_id":"u{}","ts":{ts},"clicks":{i},"ctr":0.{},"emb":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]}}"#,
        i % USERS,
        i % 1000
    )
    .into_bytes()
}

async fn send(p: &FutureProducer, topic: &str, payload: &[u8]) {
    p.send(
        FutureRecord::<[u8], [u8]>::to(topic).payload(payload),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("produce");
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run(store_kind: &str, events: usize) {
    let tansu = Tansu::start();
    tansu
        .create_topics(&["bench_fresh", "bench_fresh.dlq"], 1)
        .await;
    tansu
        .create_topics(&["bench_events", "bench_events.dlq"], 1)
        .await;
    let redis = (store_kind == "redis").then(Redis::start);
    let inner: Arc<dyn OnlineStore> = match &redis {
        Some(r) => Arc::new(RedisStore::open(&r.url(), "bench").unwrap()),
        None => Arc::new(MemoryStore::new()),
    };
    let store = Arc::new(Recording {
        inner,
        samples: Mutex::new(Vec::new()),
        record: true.into(),
    });
    let views = Arc::new(ViewRegistry::new(vec![view("fresh", "bench_fresh")], None).unwrap());
    let metrics = IngestMetrics::unregistered();
    let mut cfg = KafkaConfig::new(tansu.brokers());
    cfg.group_id = "bench".into();
    // Larger than the backlog: the throughput run never pauses (tansu 0.6 can stall a
    // consumer resumed inside a producer batch).
    cfg.buffer = events + 1;
    // The broker holds each fetch this long when it has nothing (tansu 0.6 always does).
    if let Ok(ms) = std::env::var("INFERD_BENCH_FETCH_WAIT_MS") {
        cfg.options.push(("fetch.wait.max.ms".into(), ms));
    }
    let store_dyn: Arc<dyn OnlineStore> = Arc::clone(&store) as Arc<dyn OnlineStore>;
    let ing = Ingester::start(cfg, Arc::clone(&views), store_dyn, metrics.clone()).unwrap();
    let producer = tansu.producer();
    let count = |view: &str| {
        metrics.events.with_label_values(&[view, "applied"]).get()
            + metrics.events.with_label_values(&[view, "stale"]).get()
    };

    // Freshness: wait until the ingester has joined (a first event is written), then a
    // steady RATE/s.
    send(&producer, "bench_fresh", &event(0, now_micros())).await;
    while count("fresh") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.samples.lock().unwrap().clear();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..FRESHNESS_EVENTS {
        tick.tick().await;
        let p = producer.clone();
        let payload = event(i, now_micros());
        tokio::spawn(async move { send(&p, "bench_fresh", &payload).await });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.samples.lock().unwrap().len() < FRESHNESS_EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
        .record
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut s = store.samples.lock().unwrap().clone();
    s.sort_unstable();
    println!(
        "{store_kind:>6}  freshness (event time → servable, {} events at {RATE}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.len(),
        pct(&s, 0.50),
        pct(&s, 0.99),
        *s.last().unwrap() as f64 / 1000.0
    );

    // Throughput: the backlog (sent concurrently, one record per batch), then its view.
    let t = Instant::now();
    let ts0 = now_micros();
    let mut sends = futures::stream::FuturesUnordered::new();
    for i in 0..events {
        let p = producer.clone();
        let payload = event(i, ts0 + i as i64);
        sends.push(async move { send(&p, "bench_events", &payload).await });
        if sends.len() >= 2_000 {
            futures::StreamExt::next(&mut sends).await;
        }
    }
    while futures::StreamExt::next(&mut sends).await.is_some() {}
    eprintln!(
        "[{store_kind}] produced {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    views.put(view("users", "bench_events")).unwrap();
    while count("users") == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (start, first) = (Instant::now(), count("users"));
    while count("users") < events as u64 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (events as u64 - first) as f64 / secs;
    println!(
        "{store_kind:>6}  ingest: {events} events ({USERS} entities) in {secs:.2} s = {rate:.0} events/s"
    );
    ing.shutdown().await;
}

/// The broker alone: a librdkafka consumer (`fetch.wait.max.ms` as given) reading events
/// produced at RATE/s, after consuming a backlog of `backlog` records.
async fn probe(wait_ms: &str, backlog: usize) {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let tansu = Tansu::start();
    tansu.create_topics(&["probe"], 1).await;
    let producer = tansu.producer();
    for _ in 0..backlog {
        send(&producer, "probe", b"0").await;
    }
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", tansu.brokers())
        .set("group.id", "probe")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", wait_ms)
        .create()
        .unwrap();
    c.subscribe(&["probe"]).unwrap();
    for _ in 0..backlog {
        c.recv().await.unwrap();
    }
    let n = FRESHNESS_EVENTS;
    let p = producer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        for _ in 0..n {
            tick.tick().await;
            let p = p.clone();
            let payload = now_micros().to_string().into_bytes();
            tokio::spawn(async move { send(&p, "probe", &payload).await });
        }
    });
    let mut s = Vec::with_capacity(n);
    while s.len() < n {
        let m = c.recv().await.unwrap();
        let ts: i64 = std::str::from_utf8(m.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        s.push(now_micros() - ts);
    }
    s.sort_unstable();
    println!(
        " probe  tansu alone, fetch.wait.max.ms={wait_ms}, after {backlog} records: p50 {:.2} ms, p99 {:.2} ms",
        pct(&s, 0.5),
        pct(&s, 0.99)
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to check here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let events = std::env::var("INFERD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "probe") {
        for (wait, backlog) in [("10", 0), ("1", 0), ("10", 5_000), ("10", 20_000)] {
            rt.block_on(probe(wait, backlog));
        }
        return;
    }
    for kind in ["memory", "redis"] {
        if args.is_empty() || args.iter().any(|a| a == kind) {
            rt.block_on(run(kind, events));
        }
    }
}
