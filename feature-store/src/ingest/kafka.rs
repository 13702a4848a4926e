//! The Kafka ingester: a consumer group member that writes each view's topic into the
//! online store.
//!
//! ```text
//! StreamConsumer ─▶ bounded buffer ─▶ writer: decode ─▶ store.write (newest event wins)
//!   (subscribes to          │                    └─▶ malformed: dead-letter topic
//!    the views' topics)     │                                       │
//!                           └─ full: pause partitions   store offsets ◀┘ (only then)
//! ```
//!
//! - **At least once**: offsets are stored (`enable.auto.offset.store=false`) only after the
//!   batch's rows are in the store and its malformed messages acknowledged by the
//!   dead-letter topic; they are committed every second and on shutdown. A crash replays at
//!   most the uncommitted tail, and replays are harmless: writes are idempotent by event
//!   time.
//! - **Poison messages** never stop a partition: a message that is not a JSON object, lacks
//!   a join key or timestamp, or has a value of the wrong type goes to the view's dead-letter
//!   topic (default `<topic>.dlq`) with its key and payload unchanged and the reason in
//!   headers (`inferd.error`, `inferd.source.topic`, `inferd.source.partition`,
//!   `inferd.source.offset`).
//! - **Store outages** (Redis down) are retried with backoff, forever; meanwhile the buffer
//!   fills, the partitions are paused (the consumer keeps polling, so it stays in the group),
//!   and consumption resumes where it stopped once writes succeed.
//! - **Views change at run time**: the subscription follows the registry's topics.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::metrics::IngestMetrics;
use crate::error::{Error, Result};
use crate::registry::ViewRegistry;
use crate::store::{OnlineStore, Row};
use crate::value::now_micros;
use crate::view::FeatureView;

/// The ingester's settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group; ingesters with the same group share the partitions.
    pub group_id: String,
    /// Messages buffered between the consumer and the store writer; when full, the
    /// partitions are paused.
    pub buffer: usize,
    /// Most messages written to the store in one batch (one Redis pipeline).
    pub max_batch: usize,
    /// Extra librdkafka properties for the consumer and the dead-letter producer (they
    /// override the defaults, e.g. `fetch.wait.max.ms`).
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            group_id: "inferd-features".into(),
            buffer: 10_000,
            max_batch: 1_000,
            options: Vec::new(),
        }
    }
}

/// A running ingester. Dropping it without [`Ingester::shutdown`] stops it abruptly, as
/// [`Ingester::abort`] does.
pub struct Ingester {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    consumer: Option<Arc<Kafka>>,
}

type Kafka = StreamConsumer<Ctx>;

/// Routes librdkafka's logs and errors to `tracing` and its statistics to the lag gauge.
struct Ctx {
    metrics: IngestMetrics,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{msg}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{msg}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", facility = fac, "{msg}"),
            L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }

    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lags are -1 when
                // unknown (no offset stored or committed yet).
                if *p < 0 || !part.desired {
                    continue;
                }
                let lag = if part.consumer_lag_stored >= 0 {
                    part.consumer_lag_stored
                } else {
                    part.consumer_lag
                };
                if lag >= 0 {
                    self.metrics
                        .lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }
}

fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c
}

impl Ingester {
    /// Starts consuming the topics of the registry's views (now and as they change).
    pub fn start(
        cfg: KafkaConfig,
        views: Arc<ViewRegistry>,
        store: Arc<dyn OnlineStore>,
        metrics: IngestMetrics,
    ) -> Result<Ingester> {
        let kafka_err = |what: &str, e: KafkaError| Error::Kafka(format!("{what}: {e}"));
        let mut cc = client_config(&cfg);
        cc.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000")
            // A broker answers a fetch as soon as data arrives; this bounds the wait of one
            // that holds it for the whole interval, so freshness stays in milliseconds.
            .set("fetch.wait.max.ms", "10")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "16384");
        for (k, v) in &cfg.options {
            cc.set(k, v);
        }
        let consumer: Arc<Kafka> = Arc::new(
            cc.create_with_context(Ctx {
                metrics: metrics.clone(),
            })
            .map_err(|e| kafka_err("creating the consumer", e))?,
        );
        let mut pc = client_config(&cfg);
        pc.set("linger.ms", "0").set("message.timeout.ms", "30000");
        for (k, v) in &cfg.options {
            pc.set(k, v);
        }
        let producer: FutureProducer = pc
            .create()
            .map_err(|e| kafka_err("creating the dead-letter producer", e))?;

        let consumer_handle = Arc::clone(&consumer);
        let (stop, stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(cfg.buffer.max(1));
        let consumer_task = tokio::spawn(consume(
            Arc::clone(&consumer),
            Arc::clone(&views),
            tx,
            stop_rx.clone(),
            metrics.clone(),
        ));
        let writer = Writer {
            consumer,
            views,
            store,
            producer,
            metrics,
            stop: stop_rx,
        };
        let writer_task = tokio::spawn(writer.run(rx, cfg.max_batch.max(1)));
        Ok(Ingester {
            stop,
            tasks: vec![consumer_task, writer_task],
            consumer: Some(consumer_handle),
        })
    }

    /// Stops consuming, writes what is buffered (unless the store is down), commits the
    /// stored offsets and leaves the group (waiting at most 10 s for the broker).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(c) = self.consumer.take() {
            // The last reference: closing commits the stored offsets and leaves the group,
            // blocking, so off the runtime.
            let close = tokio::task::spawn_blocking(move || drop(c));
            if tokio::time::timeout(Duration::from_secs(10), close)
                .await
                .is_err()
            {
                tracing::warn!("the Kafka consumer did not close within 10 s");
            }
        }
    }

    /// Stops at once: what is buffered is dropped unwritten and its offsets are never
    /// stored, so the group consumes it again.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for Ingester {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(c) = self.consumer.take() {
            // Close on a thread of its own once the aborted tasks let go: librdkafka's close
            // blocks, for long when the broker is gone.
            let _ = std::thread::Builder::new()
                .name("kafka-close".into())
                .spawn(move || {
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while Arc::strong_count(&c) > 1 && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    drop(c);
                });
        }
    }
}

fn set_paused(consumer: &Kafka, pause: bool) {
    let tpl = match consumer.assignment() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "kafka assignment unavailable");
            return;
        }
    };
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, pause, "kafka pause/resume failed");
    }
}

fn subscribe(consumer: &Kafka, views: &ViewRegistry, current: &mut Vec<String>) {
    let topics = views.snapshot().topics();
    if topics == *current {
        return;
    }
    let r = if topics.is_empty() {
        consumer.unsubscribe();
        Ok(())
    } else {
        let t: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&t)
    };
    match r {
        Ok(()) => {
            tracing::info!(?topics, "kafka subscription");
            *current = topics;
        }
        Err(e) => tracing::error!(error = %e, ?topics, "kafka subscribe failed"),
    }
}

/// Receives messages into the bounded buffer; pauses the partitions while it is full.
async fn consume(
    consumer: Arc<Kafka>,
    views: Arc<ViewRegistry>,
    tx: mpsc::Sender<OwnedMessage>,
    mut stop: watch::Receiver<bool>,
    metrics: IngestMetrics,
) {
    let mut changes = views.subscribe();
    let mut topics = Vec::new();
    subscribe(&consumer, &views, &mut topics);
    // Messages received while the buffer was full. Pausing discards what librdkafka had
    // prefetched (resuming fetches again from the last message handed out), so this holds
    // at most the few already on their way when the buffer filled.
    let mut held: VecDeque<OwnedMessage> = VecDeque::new();
    let mut errors_logged = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                subscribe(&consumer, &views, &mut topics);
            }
            permit = tx.reserve(), if !held.is_empty() => {
                let Ok(permit) = permit else { break };
                permit.send(held.pop_front().expect("not empty"));
                while !held.is_empty() {
                    match tx.try_reserve() {
                        Ok(p) => p.send(held.pop_front().expect("not empty")),
                        Err(_) => break,
                    }
                }
                if held.is_empty() {
                    set_paused(&consumer, false);
                    metrics.paused.set(0);
                }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    errors_logged = 0;
                    let m = m.detach();
                    if held.is_empty() {
                        match tx.try_send(m) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(m)) => {
                                held.push_back(m);
                                set_paused(&consumer, true);
                                metrics.paused.set(1);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    } else {
                        // Also pauses partitions assigned since the last pause.
                        held.push_back(m);
                        set_paused(&consumer, true);
                    }
                }
                Err(e) => {
                    // Broker and topic errors are retried by librdkafka; say so, rarely.
                    if errors_logged < 5 || errors_logged.is_power_of_two() {
                        tracing::warn!(error = %e, "kafka consumer error");
                    }
                    errors_logged = errors_logged.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

struct Writer {
    consumer: Arc<Kafka>,
    views: Arc<ViewRegistry>,
    store: Arc<dyn OnlineStore>,
    producer: FutureProducer,
    metrics: IngestMetrics,
    stop: watch::Receiver<bool>,
}

/// Retry delays for store writes and dead-letter deliveries.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<OwnedMessage>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while rx.recv_many(&mut batch, max_batch).await > 0 {
            if !self.process(&batch).await {
                break;
            }
            batch.clear();
        }
    }

    /// Writes one batch, then stores its offsets. `false`: stopped before it was written.
    async fn process(&mut self, batch: &[OwnedMessage]) -> bool {
        let views = self.views.snapshot_full();
        let mut per_view: Vec<(Arc<FeatureView>, Vec<Row>)> = Vec::new();
        let mut dead: Vec<(&OwnedMessage, String, String)> = Vec::new();
        for m in batch {
            let vs = views.for_topic(m.topic());
            let Some(first) = vs.first() else {
                // The topic's view was deleted after the message was fetched.
                continue;
            };
            match super::decode(vs, m.payload()) {
                Ok(rows) => {
                    for (v, row) in vs.iter().zip(rows) {
                        match per_view.iter_mut().find(|(pv, _)| Arc::ptr_eq(pv, v)) {
                            Some((_, rows)) => rows.push(row),
                            None => per_view.push((Arc::clone(v), vec![row])),
                        }
                    }
                }
                Err(reason) => {
                    let dlq = first.dlq_topic().expect("a view with a topic");
                    dead.push((m, dlq, reason));
                }
            }
        }

        for (view, rows) in &per_view {
            let store = &self.store;
            let Some(applied) = retry(&mut self.stop, &self.metrics, "online store write", || {
                store.write(view, rows)
            })
            .await
            else {
                return false;
            };
            let now = now_micros();
            let mut n_applied = 0;
            let fresh = self
                .metrics
                .freshness
                .with_label_values(&[view.name.as_str()]);
            for (row, a) in rows.iter().zip(&applied) {
                if *a {
                    n_applied += 1;
                    fresh.observe(now.saturating_sub(row.event_ts).max(0) as f64 / 1e6);
                }
            }
            let events = &self.metrics.events;
            events
                .with_label_values(&[view.name.as_str(), "applied"])
                .inc_by(n_applied);
            events
                .with_label_values(&[view.name.as_str(), "stale"])
                .inc_by(rows.len() as u64 - n_applied);
        }

        for (m, dlq, reason) in dead {
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                dead_letter_topic = dlq,
                %reason,
                "malformed feature message"
            );
            let producer = &self.producer;
            let sent = retry(
                &mut self.stop,
                &self.metrics,
                "dead-letter delivery",
                || send_dead_letter(producer, m, &dlq, &reason),
            )
            .await;
            if sent.is_none() {
                return false;
            }
            self.metrics.dlq.with_label_values(&[m.topic()]).inc();
        }

        let mut tpl = TopicPartitionList::new();
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let e = next.entry((m.topic(), m.partition())).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        for ((t, p), o) in next {
            let _ = tpl.add_partition_offset(t, p, Offset::Offset(o));
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner consumes these again.
            tracing::debug!(error = %e, "storing offsets failed");
        }
        true
    }
}

async fn send_dead_letter(
    producer: &FutureProducer,
    m: &OwnedMessage,
    dlq: &str,
    reason: &str,
) -> Result<()> {
    let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "inferd.error",
            value: Some(reason),
        })
        .insert(Header {
            key: "inferd.source.topic",
            value: Some(m.topic()),
        })
        .insert(Header {
            key: "inferd.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "inferd.source.offset",
            value: Some(&offset),
        });
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq)
        .payload(m.payload().unwrap_or(&[]))
        .headers(headers);
    if let Some(k) = m.key() {
        rec = rec.key(k);
    }
    producer
        .send(rec, Duration::from_secs(5))
        .await
        .map(drop)
        .map_err(|(e, _)| Error::Kafka(format!("producing to '{dlq}': {e}")))
}

/// Runs `f` until it succeeds, with exponential backoff; `None` when stopped meanwhile.
async fn retry<T, F, Fut>(
    stop: &mut watch::Receiver<bool>,
    metrics: &IngestMetrics,
    what: &str,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        match f().await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(failures, "{what} succeeded again");
                }
                return Some(v);
            }
            Err(e) => {
                failures += 1;
                metrics.store_errors.inc();
                if failures <= 3 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, retry_in = ?delay, "{what} failed");
                }
                if *stop.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}
