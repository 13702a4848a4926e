//! inferd's drift and performance monitoring — no transport types.
//!
//! - [`spec`]: a model's monitor as configured (sampling, windows, tests, thresholds).
//! - [`record`]: what the monitor consumes — sampled requests and ground truth — and the
//!   JSON records of the Kafka topic a fleet publishes to.
//! - [`reference`]: the reference sample, from an upload (JSON, CSV) or captured traffic.
//! - [`window`]: live windows, tumbling (by rows and/or time) or sliding.
//! - [`stats`]: the per-column tests and distances, with scipy's and Evidently's arithmetic.
//! - [`embedding`]: embedding drift (MMD with a permutation p-value; mean distance).
//! - [`evaluate`]: one window against the reference: Evidently's default test choice,
//!   verdicts, the dataset verdict, embedding drift.
//! - [`performance`] and [`tracker`]: predictions joined with their truth; quality metrics.
//! - [`monitor`]: one model's monitor and [`Monitors`], persisted under one directory.
//! - [`metrics`]: the Prometheus metrics.

pub mod embedding;
pub mod evaluate;
pub mod metrics;
pub mod monitor;
pub mod performance;
pub mod record;
pub mod reference;
pub mod spec;
pub mod stats;
pub mod tracker;
pub mod window;

pub use evaluate::Report;
pub use monitor::{Monitors, Sampler, Status};
pub use record::{Message, Predictions, Record, Truth};
pub use reference::Reference;
pub use spec::MonitorSpec;

/// The drift crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a spec, a reference, a record. The message says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("model '{0}' has no drift monitor")]
    NotFound(String),
    /// Reading or writing the persisted state.
    #[error("{0}")]
    Storage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
