//! The ingester's Prometheus metrics (registered on the server's registry, served on
//! `/metrics`):
//!
//! | metric | labels | |
//! |---|---|---|
//! | `inferd_feature_ingest_events_total` | `view`, `outcome` = applied \| stale | rows written (events/s: `rate()`) |
//! | `inferd_feature_ingest_dlq_total` | `topic` | malformed messages sent to the dead-letter topic |
//! | `inferd_feature_ingest_lag` | `topic`, `partition` | messages behind the partition's end (not yet stored) |
//! | `inferd_feature_freshness_seconds` | `view` | histogram: event time → servable (written to the store) |
//! | `inferd_feature_ingest_store_errors_total` | | failed store writes and dead-letter deliveries (each retried) |
//! | `inferd_feature_ingest_paused` | | 1 while the buffer is full and the partitions are paused |

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct IngestMetrics {
    pub events: IntCounterVec,
    pub dlq: IntCounterVec,
    pub lag: IntGaugeVec,
    pub freshness: HistogramVec,
    pub store_errors: IntCounter,
    pub paused: IntGauge,
}

impl IngestMetrics {
    /// Metrics registered nowhere (tests, benchmarks).
    pub fn unregistered() -> IngestMetrics {
        Self::build().expect("valid metric definitions")
    }

    pub fn new(registry: &Registry) -> prometheus::Result<IngestMetrics> {
        let m = Self::build()?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.dlq.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.freshness.clone()))?;
        registry.register(Box::new(m.store_errors.clone()))?;
        registry.register(Box::new(m.paused.clone()))?;
        Ok(m)
    }

    fn build() -> prometheus::Result<IngestMetrics> {
        Ok(IngestMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "inferd_feature_ingest_events_total",
                    "Feature rows ingested from Kafka, by view and outcome (applied, or stale: an equal or newer event was stored)",
                ),
                &["view", "outcome"],
            )?,
            dlq: IntCounterVec::new(
                Opts::new(
                    "inferd_feature_ingest_dlq_total",
                    "Malformed messages sent to the dead-letter topic, by source topic",
                ),
                &["topic"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "inferd_feature_ingest_lag",
                    "Messages between the partition's end and the ingester's stored offset",
                ),
                &["topic", "partition"],
            )?,
            freshness: HistogramVec::new(
                HistogramOpts::new(
                    "inferd_feature_freshness_seconds",
                    "Seconds from a feature row's event time to its being servable from the online store",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0,
                ]),
                &["view"],
            )?,
            store_errors: IntCounter::new(
                "inferd_feature_ingest_store_errors_total",
                "Failed online-store writes and dead-letter deliveries by the ingester (each is retried)",
            )?,
            paused: IntGauge::new(
                "inferd_feature_ingest_paused",
                "1 while the ingest buffer is full and consumption is paused",
            )?,
        })
    }
}
