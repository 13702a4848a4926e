//! The monitor's Prometheus metrics.

use prometheus::{CounterVec, GaugeVec, Opts, Registry};

use crate::evaluate::Report;
use crate::tracker::VersionPerformance;

#[derive(Clone)]
pub struct Metrics {
    /// What each column's test compares with its threshold: the p-value, or the distance.
    pub score: GaugeVec,
    pub detected: GaugeVec,
    pub share: GaugeVec,
    pub windows: CounterVec,
    /// Samples that reached the monitor.
    pub samples: CounterVec,
    /// Samples lost: `queue_full` (the request path's channel), `kafka` (the producer's
    /// queue), `invalid` (a record the monitor could not use).
    pub dropped: CounterVec,
    pub performance: GaugeVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<CounterVec> {
            let c = CounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            score: gauge(
                "inferd_drift_score",
                "Last window's drift score per column: the p-value of p-value tests (ks, chisquare, z, mmd), else the distance",
                &["model", "column", "test"],
            )?,
            detected: gauge(
                "inferd_drift_detected",
                "1 when the last window drifted (dataset drift or embedding drift)",
                &["model"],
            )?,
            share: gauge(
                "inferd_drift_share",
                "Share of the last window's columns that drifted",
                &["model"],
            )?,
            windows: counter(
                "inferd_drift_windows_total",
                "Windows evaluated",
                &["model"],
            )?,
            samples: counter(
                "inferd_drift_samples_total",
                "Sampled requests the monitor received",
                &["model"],
            )?,
            dropped: counter(
                "inferd_drift_samples_dropped_total",
                "Sampled requests dropped, by reason (queue_full, kafka, invalid)",
                &["model", "reason"],
            )?,
            performance: gauge(
                "inferd_model_performance",
                "Quality from ground truth, per version and metric (accuracy, precision, recall, f1, roc_auc, mae, rmse, r2, labelled_share)",
                &["model", "version", "metric"],
            )?,
        })
    }

    pub(crate) fn report(&self, model: &str, r: &Report) {
        for c in &r.columns {
            self.score
                .with_label_values(&[model, &c.name, c.test.name()])
                .set(c.score());
        }
        for e in &r.embeddings {
            let method = match e.method {
                crate::spec::EmbeddingMethod::Mmd => "mmd",
                crate::spec::EmbeddingMethod::Distance => "distance",
            };
            self.score
                .with_label_values(&[model, &e.name, method])
                .set(e.p_value.unwrap_or(e.statistic));
        }
        self.detected
            .with_label_values(&[model])
            .set(f64::from(u8::from(r.drift_detected)));
        self.share.with_label_values(&[model]).set(r.dataset.share);
        self.windows.with_label_values(&[model]).inc();
    }

    pub(crate) fn performance(&self, model: &str, p: &VersionPerformance) {
        for (metric, v) in p.metrics() {
            self.performance
                .with_label_values(&[model, &p.version, metric])
                .set(v);
        }
    }

    /// Removes a deleted monitor's series: those of its last window and of its versions.
    pub(crate) fn forget(&self, model: &str, last: Option<&Report>, perf: &[VersionPerformance]) {
        if let Some(r) = last {
            for c in &r.columns {
                let _ = self
                    .score
                    .remove_label_values(&[model, &c.name, c.test.name()]);
            }
            for e in &r.embeddings {
                for method in ["mmd", "distance"] {
                    let _ = self.score.remove_label_values(&[model, &e.name, method]);
                }
            }
        }
        for p in perf {
            for (metric, _) in p.metrics() {
                let _ = self
                    .performance
                    .remove_label_values(&[model, &p.version, metric]);
            }
        }
        let _ = self.detected.remove_label_values(&[model]);
        let _ = self.share.remove_label_values(&[model]);
    }
}
