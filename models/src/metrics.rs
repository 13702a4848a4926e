//! Prometheus metrics of the request path, named after Triton's where the meaning is the
//! same (`nv_inference_request_success` → `inferd_inference_request_success_total`), but with
//! latency histograms instead of cumulative counters.
//!
//! Label values are resolved once per loaded version ([`Metrics::for_version`]), so the hot
//! path touches pre-bound counters and histograms only — no label lookup per request.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Why a request failed, the `reason` label of `inferd_inference_request_failure_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused at the door: queue full (Triton's REJECTED).
    Rejected,
    /// Its queue timeout passed before it ran.
    Timeout,
    /// The client went away before it ran.
    Canceled,
    /// The backend failed to run it.
    Backend,
    /// The request did not fit the model (shape, datatype, ...).
    Invalid,
}

impl FailureReason {
    const ALL: [FailureReason; 5] = [
        FailureReason::Rejected,
        FailureReason::Timeout,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Timeout => "TIMEOUT",
            FailureReason::Canceled => "CANCELED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Invalid => "INVALID",
        }
    }
}

/// The metric families, registered once per server.
#[derive(Clone)]
pub struct Metrics {
    success: IntCounterVec,
    failure: IntCounterVec,
    inference_count: IntCounterVec,
    exec_count: IntCounterVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    compute_input: HistogramVec,
    compute_infer: HistogramVec,
    compute_output: HistogramVec,
    batch_size: HistogramVec,
    pending: IntGaugeVec,
    load_duration: GaugeVec,
}

/// The metrics of one model version, labels already bound.
#[derive(Clone)]
pub struct VersionMetrics {
    pub success: IntCounter,
    failures: [IntCounter; 5],
    pub inference_count: IntCounter,
    pub exec_count: IntCounter,
    pub request_duration: prometheus::Histogram,
    pub queue_duration: prometheus::Histogram,
    pub compute_input: prometheus::Histogram,
    pub compute_infer: prometheus::Histogram,
    pub compute_output: prometheus::Histogram,
    pub batch_size: prometheus::Histogram,
    pub pending: IntGauge,
    pub load_duration: prometheus::Gauge,
}

impl VersionMetrics {
    pub fn failure(&self, reason: FailureReason) -> &IntCounter {
        &self.failures[reason as usize]
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["model", "version"],
    )
    .expect("valid histogram")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let mv = &["model", "version"];
        let m = Metrics {
            success: counter(
                "inferd_inference_request_success_total",
                "Inference requests that succeeded.",
                mv,
            ),
            failure: counter(
                "inferd_inference_request_failure_total",
                "Inference requests that failed, by reason (REJECTED, TIMEOUT, CANCELED, BACKEND, INVALID).",
                &["model", "version", "reason"],
            ),
            inference_count: counter(
                "inferd_inference_count_total",
                "Inferences performed (a request of batch n counts n).",
                mv,
            ),
            exec_count: counter(
                "inferd_inference_exec_count_total",
                "Model executions (batches run).",
                mv,
            ),
            request_duration: histogram(
                "inferd_inference_request_duration_seconds",
                "Time from entering the queue to the response being ready.",
                LATENCY_BUCKETS,
            ),
            queue_duration: histogram(
                "inferd_inference_queue_duration_seconds",
                "Time requests waited in the batcher's queue.",
                LATENCY_BUCKETS,
            ),
            compute_input: histogram(
                "inferd_inference_compute_input_duration_seconds",
                "Time to assemble a batch's input tensors.",
                LATENCY_BUCKETS,
            ),
            compute_infer: histogram(
                "inferd_inference_compute_infer_duration_seconds",
                "Time the backend spent running a batch.",
                LATENCY_BUCKETS,
            ),
            compute_output: histogram(
                "inferd_inference_compute_output_duration_seconds",
                "Time to split a batch's outputs into responses.",
                LATENCY_BUCKETS,
            ),
            batch_size: histogram(
                "inferd_inference_batch_size",
                "Rows per model execution.",
                BATCH_BUCKETS,
            ),
            pending: IntGaugeVec::new(
                Opts::new(
                    "inferd_inference_pending_request_count",
                    "Requests waiting in the batcher's queue.",
                ),
                mv,
            )?,
            load_duration: GaugeVec::new(
                Opts::new(
                    "inferd_model_load_duration_seconds",
                    "Time the last load of the model version took, warmup included.",
                ),
                mv,
            )?,
        };
        registry.register(Box::new(m.success.clone()))?;
        registry.register(Box::new(m.failure.clone()))?;
        registry.register(Box::new(m.inference_count.clone()))?;
        registry.register(Box::new(m.exec_count.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.queue_duration.clone()))?;
        registry.register(Box::new(m.compute_input.clone()))?;
        registry.register(Box::new(m.compute_infer.clone()))?;
        registry.register(Box::new(m.compute_output.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.load_duration.clone()))?;
        Ok(m)
    }

    /// Metrics not registered anywhere, for tests and benchmarks.
    pub fn unregistered() -> Self {
        Metrics::new(&Registry::new()).expect("fresh registry")
    }

    pub fn for_version(&self, model: &str, version: &str) -> VersionMetrics {
        let l = &[model, version];
        VersionMetrics {
            success: self.success.with_label_values(l),
            failures: FailureReason::ALL.map(|r| {
                self.failure
                    .with_label_values(&[model, version, r.as_str()])
            }),
            inference_count: self.inference_count.with_label_values(l),
            exec_count: self.exec_count.with_label_values(l),
            request_duration: self.request_duration.with_label_values(l),
            queue_duration: self.queue_duration.with_label_values(l),
            compute_input: self.compute_input.with_label_values(l),
            compute_infer: self.compute_infer.with_label_values(l),
            compute_output: self.compute_output.with_label_values(l),
            batch_size: self.batch_size.with_label_values(l),
            pending: self.pending.with_label_values(l),
            load_duration: self.load_duration.with_label_values(l),
        }
    }
}
