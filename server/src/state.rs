//! State shared by every transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use experiments::Experiments;

use crate::drift::Drift;
use feature_store::FeatureStore;
use models::repository::Repository;

pub struct AppState {
    pub repo: Arc<Repository>,
    pub registry: prometheus::Registry,
    pub max_request_bytes: usize,
    pub max_upload_bytes: u64,
    /// The online feature store, for feature enrichment (`None`: requests are not enriched).
    pub features: Option<Arc<FeatureStore>>,
    /// A/B experiments: the request path routes through the running ones.
    pub experiments: Arc<Experiments>,
    /// Drift monitors: the request path hands them sampled copies.
    pub drift: Arc<Drift>,
    /// Experiment statistics shared with the fleet (`--state`); `None`: this replica's own.
    pub fleet: Option<Arc<crate::ab::Fleet>>,
    /// Initial model loading is done.
    loaded: AtomicBool,
    /// SIGTERM received: refuse new work, finish what is in flight.
    draining: AtomicBool,
}

pub const SERVER_NAME: &str = "inferd";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The V2 / Triton protocol extensions inferd implements (`GET /v2`, `ServerMetadata`).
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
    "schedule_policy",
];

impl AppState {
    pub fn new(
        repo: Arc<Repository>,
        registry: prometheus::Registry,
        max_request_bytes: usize,
        max_upload_bytes: u64,
        features: Option<Arc<FeatureStore>>,
        experiments: Arc<Experiments>,
        drift: Arc<Drift>,
    ) -> Self {
        AppState {
            repo,
            registry,
            max_request_bytes,
            max_upload_bytes,
            features,
            experiments,
            drift,
            fleet: None,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// Shares the experiments' statistics with the fleet (`--state`).
    pub fn with_fleet(mut self, fleet: Option<Arc<crate::ab::Fleet>>) -> Self {
        self.fleet = fleet;
        self
    }

    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready to take inference requests: initial loads finished and not shutting down.
    /// (A model that failed to load is reported by its own readiness, not here.)
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.is_draining()
    }
}
