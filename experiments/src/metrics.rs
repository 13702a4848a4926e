//! Prometheus series of the experiments, labelled `{experiment, arm}`. Each arm's handles
//! are resolved once when the experiment is built, so the request path does no label
//! lookups.

use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry,
};

use crate::feedback::Eviction;

#[derive(Clone)]
pub(crate) struct Metrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    rewards: IntCounterVec,
    reward_sum: CounterVec,
    weight: GaugeVec,
    pub guardrail_trips: IntCounterVec,
    pub feedback_items: IntCounterVec,
    feedback_evicted: IntCounterVec,
    pub feedback_pending: IntGauge,
}

/// One arm's series.
pub(crate) struct ArmMetrics {
    pub requests: IntCounter,
    pub errors: IntCounter,
    pub latency: Histogram,
    pub rewards: IntCounter,
    pub reward_sum: Counter,
    pub weight: Gauge,
}

impl Metrics {
    pub fn new(r: &Registry) -> prometheus::Result<Metrics> {
        let arm = ["experiment", "arm"];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "inferd_experiment_requests_total",
                    "Requests an experiment arm answered (shadow arms included)",
                ),
                &arm,
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "inferd_experiment_errors_total",
                    "Requests an experiment arm answered with a server-side error",
                ),
                &arm,
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "inferd_experiment_request_duration_seconds",
                    "Latency of the requests an experiment arm answered",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
                &arm,
            )?,
            rewards: IntCounterVec::new(
                Opts::new(
                    "inferd_experiment_rewards_total",
                    "Rewards fed back for an experiment arm",
                ),
                &arm,
            )?,
            reward_sum: CounterVec::new(
                Opts::new(
                    "inferd_experiment_reward_sum",
                    "Sum of the rewards fed back for an experiment arm",
                ),
                &arm,
            )?,
            weight: GaugeVec::new(
                Opts::new(
                    "inferd_experiment_arm_weight",
                    "An experiment arm's weight in force (guardrails and bandits change it)",
                ),
                &arm,
            )?,
            guardrail_trips: IntCounterVec::new(
                Opts::new(
                    "inferd_experiment_guardrail_trips_total",
                    "Arms taken out of an experiment by a guardrail",
                ),
                &["experiment", "arm", "rule"],
            )?,
            feedback_items: IntCounterVec::new(
                Opts::new(
                    "inferd_feedback_items_total",
                    "Feedback items received, by result",
                ),
                &["result"],
            )?,
            feedback_evicted: IntCounterVec::new(
                Opts::new(
                    "inferd_feedback_log_evictions_total",
                    "Requests dropped from the feedback log before feedback came, by reason (capacity, age)",
                ),
                &["reason"],
            )?,
            feedback_pending: IntGauge::new(
                "inferd_feedback_log_requests",
                "Requests held in the feedback log, waiting for feedback",
            )?,
        };
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.errors.clone()))?;
        r.register(Box::new(m.latency.clone()))?;
        r.register(Box::new(m.rewards.clone()))?;
        r.register(Box::new(m.reward_sum.clone()))?;
        r.register(Box::new(m.weight.clone()))?;
        r.register(Box::new(m.guardrail_trips.clone()))?;
        r.register(Box::new(m.feedback_items.clone()))?;
        r.register(Box::new(m.feedback_evicted.clone()))?;
        r.register(Box::new(m.feedback_pending.clone()))?;
        Ok(m)
    }

    pub fn arm(&self, experiment: &str, arm: &str) -> ArmMetrics {
        let l = [experiment, arm];
        ArmMetrics {
            requests: self.requests.with_label_values(&l),
            errors: self.errors.with_label_values(&l),
            latency: self.latency.with_label_values(&l),
            rewards: self.rewards.with_label_values(&l),
            reward_sum: self.reward_sum.with_label_values(&l),
            weight: self.weight.with_label_values(&l),
        }
    }

    pub fn remove_arm(&self, experiment: &str, arm: &str) {
        let l = [experiment, arm];
        let _ = self.requests.remove_label_values(&l);
        let _ = self.errors.remove_label_values(&l);
        let _ = self.latency.remove_label_values(&l);
        let _ = self.rewards.remove_label_values(&l);
        let _ = self.reward_sum.remove_label_values(&l);
        let _ = self.weight.remove_label_values(&l);
    }

    pub fn feedback_evicted(&self, why: Eviction) {
        let reason = match why {
            Eviction::Capacity => "capacity",
            Eviction::Age => "age",
        };
        self.feedback_evicted.with_label_values(&[reason]).inc();
    }
}
