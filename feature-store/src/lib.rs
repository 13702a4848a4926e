//! inferd's online feature store: feature views, the newest value per entity in an online
//! store, fed by Kafka and read by entity key — by clients (`get-online-features`) and by the
//! inference path (feature enrichment).
//!
//! # Layout
//!
//! - [`view`]: [`view::FeatureView`] — entity join keys, typed features, `ttl`, source topic
//!   and message format; the feature-view file.
//! - [`registry`]: [`registry::ViewRegistry`], the current views (lock-free snapshots),
//!   changed at run time and persisted under the data directory.
//! - [`value`]: feature values and types, entity keys, event timestamps.
//! - [`store`]: the [`store::OnlineStore`] trait and its contract (newest event wins,
//!   atomically); [`store::memory`] (the default, sharded) and [`store::redis`] (Lua
//!   compare-and-set, pipelined).
//! - [`serving`]: [`serving::FeatureStore`] — reads in Feast's shape (values, statuses
//!   `PRESENT` / `NULL_VALUE` / `NOT_FOUND` / `OUTSIDE_MAX_AGE`, event times), pushes, view
//!   changes.
//! - [`ingest`]: [`ingest::kafka`], the consumer-group ingester (at least once, dead-letter
//!   topic, pause/resume), its message [`ingest::decode`]r and [`ingest::metrics`].
//! - [`error`]: [`Error`], mapped to HTTP and gRPC by the server.
//! - `testkit` (feature `testkit`): a real `redis-server` and `tansu` broker for tests.

pub mod error;
pub mod ingest;
pub mod registry;
pub mod serving;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod value;
pub mod view;

pub use error::{Error, Result};
pub use serving::FeatureStore;
