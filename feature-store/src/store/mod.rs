//! Online stores: the newest row per (feature view, entity key), behind [`OnlineStore`].
//!
//! Every store keeps the same contract (checked by one test suite run against each, in
//! `tests/integration/store_contract.rs`):
//!
//! - **newest event wins**: a row is written only if its event time is strictly newer than
//!   the stored one's, atomically per key, whatever the order or concurrency of writers; an
//!   equal event time is a no-op, so replaying a stream is idempotent;
//! - a row replaces all of the view's features for its key (absent features are null);
//! - reads return, per key, the event time and the asked-for features, or nothing.
//!
//! [`memory`] is the default (one process); [`redis`] is shared by replicas.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::value::{EntityKey, Micros, Value};
use crate::view::FeatureView;

/// One row to write: every feature of the view, in declaration order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: EntityKey,
    pub event_ts: Micros,
    pub values: Vec<Value>,
}

/// A stored row as read: the event time and the asked-for features, in the order asked.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub event_ts: Micros,
    pub values: Vec<Value>,
}

/// The online store interface.
///
/// Methods return boxed futures so stores can sit behind `Arc<dyn OnlineStore>`: one
/// allocation per call (per batch of rows or keys), not per row.
pub trait OnlineStore: Send + Sync + 'static {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    /// Writes rows, newest event wins per key. Returns, per row, whether it was applied
    /// (`false`: an equal or newer event was already stored).
    fn write<'a>(
        &'a self,
        view: &'a FeatureView,
        rows: &'a [Row],
    ) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// Reads the features at `features` (indices into the view's features) for each key.
    fn read<'a>(
        &'a self,
        view: &'a FeatureView,
        keys: &'a [EntityKey],
        features: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>>>;

    /// Drops what is stored for a view whose schema changed or that was deleted, where the
    /// store can do so cheaply (memory); Redis keeps the hash fields, which a redefined view
    /// reads by name.
    fn forget_view(&self, _view: &str) {}
}

/// Opens the store named by `url`: `memory`, or `redis://host:port[/db]` (also `rediss://`,
/// `redis+unix://`). Redis keys are prefixed with `prefix`.
pub fn open(url: &str, prefix: &str) -> Result<Arc<dyn OnlineStore>> {
    if url == "memory" || url == "memory://" {
        Ok(Arc::new(memory::MemoryStore::new()))
    } else if url.starts_with("redis") {
        Ok(Arc::new(redis::RedisStore::open(url, prefix)?))
    } else {
        Err(Error::Config(format!(
            "online store '{url}': expected 'memory' or a redis:// URL"
        )))
    }
}
