//! The in-process online store: 64 shards, each a `RwLock` over view → entity key → row.
//!
//! A key's shard is fixed by its hash, so the compare-and-set of newest-event-wins happens
//! under one shard's write lock, and readers of other shards never wait. Lookups borrow the
//! view name and key (`&str`), so a read allocates only the values it returns.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;

use futures::future::{self, BoxFuture, FutureExt};

use super::{OnlineStore, Row, StoredRow};
use crate::error::Result;
use crate::value::{EntityKey, Micros, Value};
use crate::view::FeatureView;

const SHARDS: usize = 64;

struct Entry {
    event_ts: Micros,
    values: Box<[Value]>,
}

type Shard = HashMap<String, HashMap<String, Entry>>;

pub struct MemoryStore {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &EntityKey) -> &RwLock<Shard> {
        let h = self.hasher.hash_one(key.as_str()) as usize;
        &self.shards[h % SHARDS]
    }

    fn write_now(&self, view: &FeatureView, rows: &[Row]) -> Vec<bool> {
        rows.iter()
            .map(|row| {
                let mut shard = self
                    .shard(&row.key)
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                let by_key = match shard.get_mut(view.name.as_str()) {
                    Some(m) => m,
                    None => shard.entry(view.name.clone()).or_default(),
                };
                match by_key.get_mut(row.key.as_str()) {
                    Some(e) if e.event_ts >= row.event_ts => false,
                    Some(e) => {
                        e.event_ts = row.event_ts;
                        e.values = row.values.clone().into_boxed_slice();
                        true
                    }
                    None => {
                        by_key.insert(
                            row.key.as_str().to_owned(),
                            Entry {
                                event_ts: row.event_ts,
                                values: row.values.clone().into_boxed_slice(),
                            },
                        );
                        true
                    }
                }
            })
            .collect()
    }

    fn read_now(
        &self,
        view: &FeatureView,
        keys: &[EntityKey],
        features: &[usize],
    ) -> Vec<Option<StoredRow>> {
        keys.iter()
            .map(|key| {
                let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
                let e = shard.get(view.name.as_str())?.get(key.as_str())?;
                Some(StoredRow {
                    event_ts: e.event_ts,
                    values: features
                        .iter()
                        .map(|&i| e.values.get(i).cloned().unwrap_or_default())
                        .collect(),
                })
            })
            .collect()
    }
}

impl OnlineStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn write<'a>(
        &'a self,
        view: &'a FeatureView,
        rows: &'a [Row],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        future::ready(Ok(self.write_now(view, rows))).boxed()
    }

    fn read<'a>(
        &'a self,
        view: &'a FeatureView,
        keys: &'a [EntityKey],
        features: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>>> {
        future::ready(Ok(self.read_now(view, keys, features))).boxed()
    }

    fn forget_view(&self, view: &str) {
        for s in self.shards.iter() {
            s.write().unwrap_or_else(|p| p.into_inner()).remove(view);
        }
    }
}
