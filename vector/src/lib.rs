//! Vector search: collections of points (a vector, an id, a JSON payload) indexed with HNSW
//! (`hnsw_rs`), searched by vector or text with Qdrant-shaped payload filters, and kept on disk
//! with a write-ahead log and snapshots.
//!
//! # Layout
//!
//! - [`store`]: [`Store`], the collections under one directory; create, list, delete; the
//!   maintenance thread that freezes graphs, compacts and snapshots.
//! - [`collection`]: [`Collection`]: slots, tombstones, upsert / delete / get, the query
//!   planner (graph, filtered graph, exact scan) and the background rebuild (compaction).
//! - [`index`]: the HNSW index: hnsw_rs builds the graph, behind a panic-proof API.
//! - [`graph`]: the frozen flat copy of the graph that searches walk.
//! - [`distance`]: SIMD distance kernels, the graph's distance, input checks.
//! - [`filter`]: payload filters (must / should / must_not, match, range, ...).
//! - [`search`]: search requests and results, top-k.
//! - [`point`]: ids, upsert inputs, records.
//! - [`config`]: metrics (cosine, l2, dot) and collection parameters.
//! - [`embed`]: the [`Embedder`] trait that turns `text` into vectors.
//! - [`wal`], [`snapshot`], [`codec`]: the write-ahead log, snapshots, their encoding.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: the crate's one error type.
//!
//! Nothing here knows about HTTP or gRPC; the `server` crate translates. Every call may block
//! (fsync, index builds, scans): async callers run it on `spawn_blocking`.

pub mod codec;
pub mod collection;
pub mod config;
pub mod distance;
pub mod embed;
pub mod error;
pub mod filter;
pub mod graph;
pub mod index;
pub mod metrics;
pub mod point;
pub mod search;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use collection::{Collection, CollectionInfo};
pub use config::{CollectionParams, CreateCollection, Metric};
pub use embed::{Embedder, NoEmbedder};
pub use error::{Error, Result};
pub use filter::Filter;
pub use metrics::Metrics;
pub use point::{PointId, PointInput, Record, UpdateResult};
pub use search::{ScoredPoint, SearchRequest};
pub use store::{Store, StoreOptions};
