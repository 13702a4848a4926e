//! Prometheus metrics, labelled by `collection`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// Live points (`inferd_vector_points`).
    pub points: IntGaugeVec,
    /// Tombstones awaiting compaction (`inferd_vector_deleted_points`).
    pub deleted: IntGaugeVec,
    /// Queries answered, a batch counting each of its queries (`inferd_vector_searches_total`).
    pub searches: IntCounterVec,
    /// Time per query, filters and payload included (`inferd_vector_search_duration_seconds`).
    pub search_seconds: HistogramVec,
    /// Index rebuilds: compactions and repairs (`inferd_vector_rebuilds_total`).
    pub rebuilds: IntCounterVec,
    /// Points written since the last freeze, searched by exact scan
    /// (`inferd_vector_unfrozen_points`).
    pub unfrozen: IntGaugeVec,
    /// Estimated resident memory of a collection (`inferd_vector_memory_bytes`), as
    /// `GET /api/collections/{c}` reports it.
    pub memory: IntGaugeVec,
    /// Graph freezes (`inferd_vector_freezes_total`).
    pub freezes: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them (`None`: unregistered, for tests and benches).
    pub fn new(registry: Option<&Registry>) -> prometheus::Result<Metrics> {
        let l = &["collection"];
        let m = Metrics {
            points: IntGaugeVec::new(
                Opts::new("inferd_vector_points", "Live points per collection"),
                l,
            )?,
            deleted: IntGaugeVec::new(
                Opts::new(
                    "inferd_vector_deleted_points",
                    "Deleted or replaced points not yet compacted away",
                ),
                l,
            )?,
            searches: IntCounterVec::new(
                Opts::new(
                    "inferd_vector_searches_total",
                    "Vector searches (each query of a batch counts)",
                ),
                l,
            )?,
            search_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "inferd_vector_search_duration_seconds",
                    "Time to answer one vector query",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ]),
                l,
            )?,
            rebuilds: IntCounterVec::new(
                Opts::new(
                    "inferd_vector_rebuilds_total",
                    "HNSW index rebuilds (compactions and repairs)",
                ),
                l,
            )?,
            unfrozen: IntGaugeVec::new(
                Opts::new(
                    "inferd_vector_unfrozen_points",
                    "Points written since the graph was last frozen (searched by exact scan)",
                ),
                l,
            )?,
            memory: IntGaugeVec::new(
                Opts::new(
                    "inferd_vector_memory_bytes",
                    "Estimated resident memory of a collection: vectors, graph links, payloads, ids",
                ),
                l,
            )?,
            freezes: IntCounterVec::new(
                Opts::new(
                    "inferd_vector_freezes_total",
                    "Freezes of the graph searches walk (copy, refine, renumber)",
                ),
                l,
            )?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.points.clone()))?;
            r.register(Box::new(m.deleted.clone()))?;
            r.register(Box::new(m.searches.clone()))?;
            r.register(Box::new(m.search_seconds.clone()))?;
            r.register(Box::new(m.rebuilds.clone()))?;
            r.register(Box::new(m.unfrozen.clone()))?;
            r.register(Box::new(m.freezes.clone()))?;
            r.register(Box::new(m.memory.clone()))?;
        }
        Ok(m)
    }

    /// Drops a deleted collection's series.
    pub fn forget(&self, collection: &str) {
        let _ = self.points.remove_label_values(&[collection]);
        let _ = self.deleted.remove_label_values(&[collection]);
        let _ = self.searches.remove_label_values(&[collection]);
        let _ = self.search_seconds.remove_label_values(&[collection]);
        let _ = self.rebuilds.remove_label_values(&[collection]);
        let _ = self.unfrozen.remove_label_values(&[collection]);
        let _ = self.freezes.remove_label_values(&[collection]);
        let _ = self.memory.remove_label_values(&[collection]);
    }
}
