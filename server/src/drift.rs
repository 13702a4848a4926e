//! Drift monitoring's server side: the sampler on the request path, the monitor's worker
//! thread, column extraction from tensors, the Kafka producer of a fleet, and
//! `inferd drift watch` (the same monitor fed from Kafka). The domain logic is the `drift`
//! crate.
//!
//! ```text
//! request path ── sampled copy ──▶ bounded channel (full: dropped, counted) ──▶ worker thread
//!                                                  drain what is queued, extract columns │
//!                                     Kafka topic (optional, one record per request) ◀───┤
//!                          Monitors.ingest_requests (consecutive samples as one record) ◀┘
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use drift::monitor::Predicted;
use drift::record::{Column, Embedding, Values};
use drift::spec::Task;
use drift::{Message, MonitorSpec, Monitors, Predictions, Record, Truth};
use models::repository::ServedVersion;
use models::{DataType, Tensor, TensorData};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// One sampled request on its way to the worker: the tensors, not yet columns, so the
/// request path only copies.
pub struct Sample {
    served: Arc<ServedVersion>,
    spec: Arc<MonitorSpec>,
    id: String,
    time_ms: u64,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<Tensor>,
    /// A merged sample's requests: `(first row, time_ms)` each (see `Record::row_times`).
    row_times: Vec<(usize, u64)>,
}

/// Where sampled requests go.
pub struct Drift {
    pub monitors: Arc<Monitors>,
    tx: SyncSender<Sample>,
    kafka: Option<Arc<Publisher>>,
    progress: Arc<Progress>,
}

/// Samples queued and samples the worker has finished with: a truth posted right after its
/// response waits until its prediction has reached the monitor ([`Drift::settled`]).
#[derive(Default)]
struct Progress {
    queued: AtomicU64,
    done: AtomicU64,
}

/// The Kafka producer of a fleet's prediction records and truths.
pub struct Publisher {
    producer: BaseProducer,
    topic: String,
}

impl Publisher {
    /// `options`: librdkafka properties (TLS, SASL, ...), over the defaults.
    pub fn new(
        brokers: &str,
        topic: &str,
        options: &[(String, String)],
    ) -> anyhow::Result<Publisher> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (k, v) in options {
            c.set(k, v);
        }
        let producer: BaseProducer = c
            .create()
            .map_err(|e| anyhow::anyhow!("creating the drift Kafka producer: {e}"))?;
        Ok(Publisher {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Queues a message (keyed by model, so one model's records stay in order); `false` when
    /// the producer's queue is full.
    fn send(&self, key: &str, m: &Message) -> bool {
        let payload = match serde_json::to_vec(m) {
            Ok(p) => p,
            Err(_) => return false,
        };
        let ok = self
            .producer
            .send(BaseRecord::to(&self.topic).key(key).payload(&payload))
            .is_ok();
        self.producer.poll(Duration::ZERO);
        ok
    }

    /// Waits for queued messages to be delivered (shutdown, tests).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}

impl Drift {
    /// Starts the worker thread that turns samples into records and feeds the monitors
    /// (and the Kafka topic, when one is given).
    pub fn start(monitors: Arc<Monitors>, queue: usize, kafka: Option<Publisher>) -> Drift {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        let kafka = kafka.map(Arc::new);
        let progress = Arc::new(Progress::default());
        let worker = Worker {
            monitors: Arc::clone(&monitors),
            kafka: kafka.clone(),
            progress: Arc::clone(&progress),
        };
        std::thread::Builder::new()
            .name("drift-monitor".into())
            .spawn(move || worker.run(rx))
            .expect("spawning the drift monitor thread");
        Drift {
            monitors,
            tx,
            kafka,
            progress,
        }
    }

    /// The monitor's spec when this request is to be sampled (the request path asks before
    /// copying the inputs).
    pub fn wants(&self, model: &str) -> Option<Arc<MonitorSpec>> {
        let s = self.monitors.sampler(model)?;
        s.sample().then(|| Arc::clone(&s.spec))
    }

    /// Hands a sampled request to the worker, or drops and counts it when the queue is full:
    /// the request never waits.
    pub fn offer(
        &self,
        spec: Arc<MonitorSpec>,
        served: &Arc<ServedVersion>,
        id: &str,
        inputs: Vec<(String, Tensor)>,
        outputs: &[Tensor],
    ) {
        let sample = Sample {
            served: Arc::clone(served),
            spec,
            id: id.to_owned(),
            time_ms: now_ms(),
            inputs,
            outputs: outputs.to_vec(),
            row_times: Vec::new(),
        };
        // Counted first, so that a truth for this request waits for it (`settled`).
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) = self.tx.try_send(sample)
        {
            self.progress.queued.fetch_sub(1, Ordering::AcqRel);
            self.monitors
                .metrics()
                .dropped
                .with_label_values(&[&s.served.model, "queue_full"])
                .inc();
        }
    }

    /// Waits (up to 2 s) until the worker has taken every sample queued before this call:
    /// a truth posted as soon as its response arrived then finds its prediction. Milliseconds
    /// at most (the worker lingers 2 ms per drain).
    pub async fn settled(&self) {
        let target = self.progress.queued.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.progress.done.load(Ordering::Acquire) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Ground truth by request id: joined with the sampled predictions here, and published
    /// for the fleet's monitors. A principal restricted to some models (`within`) labels only
    /// their predictions, and only those sampled here reach the fleet: a truth names no model,
    /// so one this replica cannot attribute is not published on the principal's word.
    pub fn label(
        &self,
        truths: &[(usize, Truth)],
        within: Option<&dyn Fn(&str) -> bool>,
    ) -> drift::monitor::Labelled {
        let labelled = match within {
            Some(w) => self.monitors.label_within(truths, w),
            None => self.monitors.label(truths),
        };
        if let Some(k) = &self.kafka {
            let published = truths
                .iter()
                .filter(|(i, _)| within.is_none() || labelled.joined.contains(i));
            for (_, t) in published {
                if !k.send(&t.id, &Message::Truth(t.clone())) {
                    self.monitors
                        .metrics()
                        .dropped
                        .with_label_values(&["", "kafka"])
                        .inc();
                }
            }
        }
        labelled
    }

    pub fn flush(&self) {
        if let Some(k) = &self.kafka {
            k.flush();
        }
    }
}

struct Worker {
    monitors: Arc<Monitors>,
    kafka: Option<Arc<Publisher>>,
    progress: Arc<Progress>,
}

/// How often timed windows are checked (also under steady traffic), and the longest the
/// worker waits for a sample.
const TICK: Duration = Duration::from_secs(1);
/// The most queued samples the worker takes at once.
const MAX_DRAIN: usize = 256;
/// How long the worker lets samples queue up after the first (so at most 2 ms of monitoring
/// delay; `--drift-queue` must hold what arrives in that time, 4096 by default).
const LINGER: Duration = Duration::from_millis(2);

impl Worker {
    fn run(self, rx: Receiver<Sample>) {
        let mut last_tick = Instant::now();
        let mut batch = Vec::with_capacity(MAX_DRAIN);
        loop {
            match rx.recv_timeout(TICK) {
                Ok(s) => {
                    batch.push(s);
                    // Let the queue fill a little (a Kafka producer's linger): one wake-up
                    // and one record for what arrives meanwhile, instead of one per request.
                    std::thread::sleep(LINGER);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Consecutive samples of one version become one record (one set of column
            // allocations, not one per request).
            while batch.len() < MAX_DRAIN {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let mut start = 0;
            for i in 1..=batch.len() {
                if i == batch.len() || !joins(&batch[start], &batch[i]) {
                    self.ingest(&batch[start..i]);
                    self.progress
                        .done
                        .fetch_add((i - start) as u64, Ordering::Release);
                    start = i;
                }
            }
            batch.clear();
            if last_tick.elapsed() >= TICK {
                self.monitors.tick();
                last_tick = Instant::now();
            }
        }
    }

    /// One group of consecutive samples of one version ([`joins`]): published one record per
    /// request, ingested here as one.
    fn ingest(&self, group: &[Sample]) {
        let model = &group[0].served.model;
        let metrics = self.monitors.metrics();
        if let Some(k) = &self.kafka {
            for s in group {
                if !k.send(model, &Message::Prediction(record(s))) {
                    metrics.dropped.with_label_values(&[model, "kafka"]).inc();
                }
            }
        }
        let (r, predicted) = if let [s] = group {
            let mut r = record(s);
            let p = r.predictions.take().map(|predictions| Predicted {
                id: s.id.clone(),
                time_ms: s.time_ms,
                predictions,
            });
            (r, p.into_iter().collect())
        } else {
            // The merged record's predictions are every request's rows at once: each request's
            // own are kept instead, for its truth.
            let mut r = record(&merged(group));
            r.predictions = None;
            let predicted: Vec<Predicted> = group
                .iter()
                .filter_map(|s| {
                    let p = predictions(&s.spec, &s.served.signature, &s.outputs, rows(s))?;
                    Some(Predicted {
                        id: s.id.clone(),
                        time_ms: s.time_ms,
                        predictions: p,
                    })
                })
                .collect();
            (r, predicted)
        };
        // A bug in one model's evaluation must not end monitoring for every model: the
        // samples are counted as refused and the thread goes on.
        let n = group.len() as u64;
        let ingest =
            std::panic::AssertUnwindSafe(|| self.monitors.ingest_requests(&r, n, predicted));
        if std::panic::catch_unwind(ingest).is_err() {
            tracing::error!(model = %model, "drift evaluation panicked; samples dropped");
            metrics
                .dropped
                .with_label_values(&[model, "invalid"])
                .inc_by(n as f64);
        }
    }
}

/// The rows of a sample (its first input's first dimension).
fn rows(s: &Sample) -> usize {
    s.inputs
        .first()
        .and_then(|(_, t)| t.shape().first())
        .map_or(1, |&d| usize::try_from(d).unwrap_or(0))
}

/// Whether `b` can be ingested with `a` as one record: the same version and monitor spec, and
/// tensors of the same names, types and trailing dimensions, each with its rows first.
fn joins(a: &Sample, b: &Sample) -> bool {
    let stacks = |x: &Tensor, y: &Tensor, rows_x: usize, rows_y: usize| {
        x.datatype() == y.datatype()
            && !x.shape().is_empty()
            && x.shape().len() == y.shape().len()
            && x.shape()[1..] == y.shape()[1..]
            && usize::try_from(x.shape()[0]).ok() == Some(rows_x)
            && usize::try_from(y.shape()[0]).ok() == Some(rows_y)
    };
    let (ra, rb) = (rows(a), rows(b));
    Arc::ptr_eq(&a.served, &b.served)
        && Arc::ptr_eq(&a.spec, &b.spec)
        && a.inputs.len() == b.inputs.len()
        && a.outputs.len() == b.outputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|((na, x), (nb, y))| na == nb && stacks(x, y, ra, rb))
        && a.outputs
            .iter()
            .zip(&b.outputs)
            .all(|(x, y)| stacks(x, y, ra, rb))
}

/// One sample holding a group's rows in order ([`joins`] has checked that they stack).
fn merged(group: &[Sample]) -> Sample {
    let first = &group[0];
    let inputs = (0..first.inputs.len())
        .map(|i| {
            let parts: Vec<&Tensor> = group.iter().map(|s| &s.inputs[i].1).collect();
            (first.inputs[i].0.clone(), Tensor::concat(&parts))
        })
        .collect();
    let outputs = (0..first.outputs.len())
        .map(|i| {
            let parts: Vec<&Tensor> = group.iter().map(|s| &s.outputs[i]).collect();
            Tensor::concat(&parts)
        })
        .collect();
    Sample {
        served: Arc::clone(&first.served),
        spec: Arc::clone(&first.spec),
        id: String::new(),
        time_ms: group
            .iter()
            .map(|s| s.time_ms)
            .max()
            .unwrap_or(first.time_ms),
        inputs,
        outputs,
        // Each request's first row and time, so the windows keep their exact times.
        row_times: group
            .iter()
            .scan(0, |row, s| {
                let first = *row;
                *row += rows(s);
                Some((first, s.time_ms))
            })
            .collect(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A sampled request's columns, embeddings and predictions, from its tensors and the
/// monitor's spec.
pub fn record(s: &Sample) -> Record {
    let sig = &s.served.signature;
    let text_model = sig.inputs.iter().any(|t| t.datatype == DataType::Bytes);
    let is_embedding = |name: &str, t: &Tensor, output: bool| match &s.spec.embeddings {
        Some(names) => names.iter().any(|n| n == name),
        None => output && text_model && t.datatype() != DataType::Bytes && t.shape().len() == 2,
    };
    let rows = s
        .inputs
        .first()
        .and_then(|(_, t)| t.shape().first())
        .map_or(1, |&d| usize::try_from(d).unwrap_or(0));
    let mut columns = Vec::new();
    let mut embeddings = Vec::new();
    let tensors = s.inputs.iter().map(|(n, t)| (n.as_str(), t, false)).chain(
        sig.outputs
            .iter()
            .zip(&s.outputs)
            .map(|(spec, t)| (spec.name.as_str(), t, true)),
    );
    for (name, t, output) in tensors {
        if is_embedding(name, t, output) {
            if let Some(values) = floats(t).filter(|_| t.shape().len() == 2) {
                let dim = values.len() / rows.max(1);
                embeddings.push(Embedding {
                    name: name.to_owned(),
                    dim,
                    values: values.into_iter().map(|x| x as f32).collect(),
                });
            }
            continue;
        }
        tensor_columns(name, t, rows, s.spec.names.get(name), &mut columns);
    }
    let predictions = predictions(&s.spec, sig, &s.outputs, rows);
    if let Some(Predictions::Classification { classes, .. }) = &predictions
        && !columns.iter().any(|c| c.name == "prediction")
    {
        columns.push(Column {
            name: "prediction".into(),
            values: Values::Categories(classes.iter().map(u32::to_string).collect()),
        });
    }
    Record {
        model: s.served.model.clone(),
        version: s.served.version_label.clone(),
        id: s.id.clone(),
        time_ms: s.time_ms,
        rows,
        columns,
        embeddings,
        predictions,
        row_times: s.row_times.clone(),
    }
}

/// The per-feature columns of one tensor: `[batch]` is one column, `[batch, n]` is n
/// (named by the spec, else `name[i]`), BYTES text gives its length and token count.
fn tensor_columns(
    name: &str,
    t: &Tensor,
    rows: usize,
    names: Option<&Vec<String>>,
    out: &mut Vec<Column>,
) {
    if rows == 0 {
        return;
    }
    if let TensorData::Bytes(b) = t.data() {
        let text: Vec<String> = b
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        out.push(Column {
            name: format!("{name}.length"),
            values: Values::Numbers(text.iter().map(|s| s.chars().count() as f64).collect()),
        });
        out.push(Column {
            name: format!("{name}.tokens"),
            values: Values::Numbers(
                text.iter()
                    .map(|s| s.split_whitespace().count() as f64)
                    .collect(),
            ),
        });
        return;
    }
    let Some(values) = floats(t) else { return };
    let width = match t.shape() {
        [_] => 1,
        [_, n] => usize::try_from(*n).unwrap_or(0),
        // Images and sequences have no per-feature columns.
        _ => return,
    };
    if width == 0 || values.len() != rows * width {
        return;
    }
    for j in 0..width {
        let col = match (names.and_then(|n| n.get(j)), t.shape().len()) {
            (Some(n), _) => n.clone(),
            (None, 1) => name.to_owned(),
            (None, _) => format!("{name}[{j}]"),
        };
        out.push(Column {
            name: col,
            values: Values::Numbers((0..rows).map(|i| values[i * width + j]).collect()),
        });
    }
}

/// A numeric tensor's elements as f64.
fn floats(t: &Tensor) -> Option<Vec<f64>> {
    let TensorData::Raw(b) = t.data() else {
        return None;
    };
    macro_rules! le {
        ($ty:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk size")) as f64)
                .collect()
        };
    }
    Some(match t.datatype() {
        DataType::Bool | DataType::Uint8 => b.iter().map(|&x| f64::from(x)).collect(),
        DataType::Int8 => b.iter().map(|&x| f64::from(x as i8)).collect(),
        DataType::Uint16 => le!(u16, 2),
        DataType::Int16 => le!(i16, 2),
        DataType::Uint32 => le!(u32, 4),
        DataType::Int32 => le!(i32, 4),
        DataType::Uint64 => le!(u64, 8),
        DataType::Int64 => le!(i64, 8),
        DataType::Fp32 => le!(f32, 4),
        DataType::Fp64 => le!(f64, 8),
        DataType::Fp16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DataType::Bf16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DataType::Bytes => return None,
    })
}

/// The prediction per row, as `performance.task` says (see [`drift::spec::PerformanceSpec`]).
fn predictions(
    spec: &MonitorSpec,
    sig: &models::Signature,
    outputs: &[Tensor],
    rows: usize,
) -> Option<Predictions> {
    let p = &spec.performance;
    let named = |pred: &dyn Fn(&str, &Tensor) -> bool| {
        sig.outputs
            .iter()
            .zip(outputs)
            .find(|(s, t)| {
                p.output
                    .as_ref()
                    .map_or_else(|| pred(&s.name, t), |o| *o == s.name)
            })
            .map(|(s, t)| (s.name.as_str(), t))
    };
    let integer = |t: &Tensor| {
        matches!(
            t.datatype(),
            DataType::Int64
                | DataType::Int32
                | DataType::Uint8
                | DataType::Uint16
                | DataType::Uint32
                | DataType::Uint64
        )
    };
    let is_float = |t: &Tensor| {
        matches!(
            t.datatype(),
            DataType::Fp32 | DataType::Fp64 | DataType::Fp16 | DataType::Bf16
        )
    };
    let label = named(&|_, t| integer(t) && t.shape().len() == 1);
    let probs = named(&|n, t| {
        is_float(t) && t.shape().len() == 2 && n.to_ascii_lowercase().contains("prob")
    });
    let value =
        named(&|_, t| is_float(t) && (t.shape().len() == 1 || t.shape().get(1) == Some(&1)));
    let classify = |label: Option<(&str, &Tensor)>, probs: Option<(&str, &Tensor)>| {
        let scores = probs
            .and_then(|(_, t)| floats(t))
            .filter(|s| !s.is_empty() && s.len() % rows.max(1) == 0);
        let k = scores.as_ref().map(|s| s.len() / rows.max(1));
        let classes: Vec<u32> = match (label.and_then(|(_, t)| floats(t)), &scores, k) {
            (Some(l), _, _) => l.iter().map(|&x| x.max(0.0) as u32).collect(),
            (None, Some(s), Some(k)) => s
                .chunks_exact(k)
                .map(|row| {
                    let (i, _) =
                        row.iter()
                            .enumerate()
                            .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
                                if x > best.1 { (i, x) } else { best }
                            });
                    i as u32
                })
                .collect(),
            _ => return None,
        };
        let n_classes = k.unwrap_or_else(|| classes.iter().max().map_or(1, |&m| m as usize + 1));
        Some(Predictions::Classification {
            classes,
            n_classes,
            scores: scores.map(|s| s.into_iter().map(|x| x as f32).collect()),
        })
    };
    match p.task {
        Task::None => None,
        Task::Classification => classify(
            label,
            probs.or_else(|| named(&|_, t| is_float(t) && t.shape().len() == 2)),
        ),
        Task::Regression => value
            .and_then(|(_, t)| floats(t))
            .map(|values| Predictions::Regression { values }),
        Task::Auto if label.is_some() || probs.is_some() => classify(label, probs),
        Task::Auto => value
            .and_then(|(_, t)| floats(t))
            .map(|values| Predictions::Regression { values }),
    }
}

/// `inferd drift watch`: the monitor fed from a Kafka topic instead of the request path,
/// so one monitor sees a whole fleet's traffic. Runs until `shutdown`.
pub async fn watch(
    monitors: Arc<Monitors>,
    brokers: &str,
    topic: &str,
    group: &str,
    options: &[(String, String)],
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message as _;

    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10");
    for (k, v) in options {
        c.set(k, v);
    }
    let consumer: StreamConsumer = c
        .create()
        .map_err(|e| anyhow::anyhow!("creating the Kafka consumer: {e}"))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| anyhow::anyhow!("subscribing to {topic}: {e}"))?;
    let mut stream = consumer.stream();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tick.tick() => {
                let m = Arc::clone(&monitors);
                let _ = tokio::task::spawn_blocking(move || m.tick()).await;
            }
            msg = stream.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "drift topic");
                        continue;
                    }
                };
                let parsed = msg.payload().map(serde_json::from_slice::<Message>);
                let m = Arc::clone(&monitors);
                match parsed {
                    Some(Ok(Message::Prediction(r))) => {
                        let _ = tokio::task::spawn_blocking(move || m.ingest(&r)).await;
                    }
                    Some(Ok(Message::Truth(t))) => {
                        let _ = tokio::task::spawn_blocking(move || m.label(&[(0, t)])).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, offset = msg.offset(), "drift topic: not a drift record");
                        monitors.metrics().dropped.with_label_values(&["", "invalid"]).inc();
                    }
                    None => {}
                }
            }
        }
    }
}

/// What became of a feedback batch: rewards for experiments and truths for the monitors.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FeedbackOutcome {
    /// Rewards added to an experiment arm.
    pub accepted: usize,
    /// Truths joined with a sampled prediction.
    pub labelled: usize,
    /// Items that added nothing, with why (index into the batch).
    pub rejected: Vec<experiments::Rejected>,
}

/// `POST /api/feedback` and `SendFeedback`: rewards go to the experiments, truths to the
/// drift monitors (and the fleet's topic). A truth-only item that no monitor here sampled is
/// refused, unless a Kafka topic carries it to the fleet's monitor. A principal restricted
/// to some models reaches only their experiments and predictions; the rest is refused as
/// unknown.
pub async fn feedback(
    state: &crate::state::AppState,
    principal: Option<&crate::auth::Principal>,
    items: &[experiments::Feedback],
) -> crate::error::ApiResult<FeedbackOutcome> {
    use crate::auth::Kind;
    let restricted = principal.filter(|p| p.reach.restricts(Kind::Model));
    let model_within = restricted.map(|p| move |m: &str| p.reach.allows(Kind::Model, m));
    let report = match &model_within {
        Some(w) => state
            .experiments
            .feedback_within(items, &|e| e.models().iter().all(|m| w(m)))?,
        None => state.experiments.feedback(items)?,
    };
    let mut out = FeedbackOutcome {
        accepted: report.accepted,
        labelled: 0,
        rejected: report.rejected,
    };
    let mut truths = Vec::new();
    for (index, f) in items.iter().enumerate() {
        let Some(truth) = &f.truth else { continue };
        let Some(id) = &f.id else {
            if f.reward.is_none() {
                out.rejected
                    .push(reject(index, "a truth names its request by 'id'".into()));
            }
            continue;
        };
        match Truth::from_json(id, truth) {
            Ok(t) => truths.push((index, t)),
            Err(why) => out.rejected.push(reject(index, why)),
        }
    }
    if truths.is_empty() {
        return Ok(out);
    }
    state.drift.settled().await;
    let labelled = state.drift.label(
        &truths,
        model_within.as_ref().map(|w| w as &dyn Fn(&str) -> bool),
    );
    out.labelled = labelled.joined.len();
    for (index, why) in labelled.rejected {
        out.rejected.push(reject(index, why));
    }
    if state.drift.kafka.is_none() || restricted.is_some() {
        for (index, t) in &truths {
            let answered =
                labelled.joined.contains(index) || out.rejected.iter().any(|r| r.index == *index);
            if !answered && items[*index].reward.is_none() {
                out.rejected.push(reject(
                    *index,
                    format!("no drift monitor sampled request '{}' (or its prediction expired before its truth came)", t.id),
                ));
            }
        }
    }
    out.rejected.sort_by_key(|r| r.index);
    Ok(out)
}

fn reject(index: usize, reason: String) -> experiments::Rejected {
    experiments::Rejected { index, reason }
}
