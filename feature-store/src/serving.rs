//! [`FeatureStore`]: the views and the online store together — what the transports and the
//! inference path call. Reads follow Feast's `get-online-features`: feature references
//! `"view:feature"`, entity join keys → columns of values, statuses and event times.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::registry::{ViewRegistry, Views};
use crate::store::{OnlineStore, Row};
use crate::value::{EntityKey, Micros, Value, now_micros};
use crate::view::{FeatureView, FeatureViewSpec};

/// At most this many entity rows per read or push.
pub const MAX_ROWS: usize = 100_000;

/// Feast's field statuses (`feast.serving.FieldStatus`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldStatus {
    Present = 1,
    NullValue = 2,
    NotFound = 3,
    OutsideMaxAge = 4,
}

impl FieldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldStatus::Present => "PRESENT",
            FieldStatus::NullValue => "NULL_VALUE",
            FieldStatus::NotFound => "NOT_FOUND",
            FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }
}

/// A read: features `"view:feature"` for the entity rows given column-wise by join key.
#[derive(Debug, Clone, Default)]
pub struct OnlineRequest {
    pub features: Vec<String>,
    /// Join key → one value (JSON string or integer) per entity row.
    pub entities: Vec<(String, Vec<Json>)>,
    /// Name result columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
}

/// One result column: a join key or a feature, one entry per entity row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Column {
    pub values: Vec<Value>,
    pub statuses: Vec<FieldStatus>,
    pub event_timestamps: Vec<Option<Micros>>,
}

/// Column-wise, as Feast: the join keys first, then the features in the order asked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnlineResponse {
    pub feature_names: Vec<String>,
    pub results: Vec<Column>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Rows stored.
    pub written: usize,
    /// Rows skipped: an equal or newer event was already stored.
    pub stale: usize,
}

pub struct FeatureStore {
    views: Arc<ViewRegistry>,
    store: Arc<dyn OnlineStore>,
}

/// Splits `"view:feature"`.
pub fn parse_ref(r: &str) -> Result<(&str, &str)> {
    r.split_once(':')
        .filter(|(v, f)| !v.is_empty() && !f.is_empty())
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "feature reference '{r}' must be written 'view:feature'"
            ))
        })
}

impl FeatureStore {
    pub fn new(views: Arc<ViewRegistry>, store: Arc<dyn OnlineStore>) -> FeatureStore {
        FeatureStore { views, store }
    }

    pub fn views(&self) -> &Arc<ViewRegistry> {
        &self.views
    }

    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    /// Creates or replaces a view; returns it and whether it is new. Rows stored under an
    /// older definition with other features or join keys are dropped where the store can.
    pub fn put_view(&self, name: &str, spec: FeatureViewSpec) -> Result<(Arc<FeatureView>, bool)> {
        let view = FeatureView::new(name, spec)?;
        let prev = self.views.put(view.clone())?;
        if let Some(p) = &prev
            && !p.same_schema(&view)
        {
            self.store.forget_view(name);
        }
        Ok((Arc::new(view), prev.is_none()))
    }

    pub fn delete_view(&self, name: &str) -> Result<()> {
        self.views.delete(name)?;
        self.store.forget_view(name);
        Ok(())
    }

    /// Reads online features (see [`OnlineRequest`]).
    pub async fn get_online_features(&self, req: &OnlineRequest) -> Result<OnlineResponse> {
        let views = self.views.snapshot_full();
        let rows = entity_rows(&req.entities)?;
        let groups = group_by_view(&views, &req.features)?;
        let by_key: HashMap<&str, &[Json]> = req
            .entities
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();

        let mut names = Vec::with_capacity(req.entities.len() + req.features.len());
        let mut results = Vec::with_capacity(names.capacity());
        for (k, vals) in &req.entities {
            names.push(k.clone());
            let mut col = Column {
                values: Vec::with_capacity(rows),
                statuses: vec![FieldStatus::Present; rows],
                event_timestamps: vec![None; rows],
            };
            for v in vals {
                col.values.push(match v {
                    Json::String(s) => Value::String(s.clone()),
                    Json::Number(n) => n.as_i64().map_or(Value::Null, Value::Int64),
                    _ => Value::Null,
                });
            }
            results.push(col);
        }
        let first_feature = results.len();
        for r in &req.features {
            let (v, f) = parse_ref(r)?;
            names.push(if req.full_feature_names {
                format!("{v}__{f}")
            } else {
                f.to_owned()
            });
            results.push(Column::default());
        }

        let keys: Vec<Vec<EntityKey>> = groups
            .iter()
            .map(|g| entity_keys(&g.view, &by_key, rows))
            .collect::<Result<_>>()?;
        let reads = groups
            .iter()
            .zip(&keys)
            .map(|(g, k)| self.store.read(&g.view, k, &g.features));
        let stored = futures::future::try_join_all(reads).await?;

        let now = now_micros();
        for (g, rows_read) in groups.iter().zip(stored) {
            for col in &g.columns {
                let c = &mut results[first_feature + col];
                c.values.reserve(rows);
                c.statuses.reserve(rows);
                c.event_timestamps.reserve(rows);
            }
            for row in rows_read {
                match row {
                    None => {
                        for col in &g.columns {
                            let c = &mut results[first_feature + col];
                            c.values.push(Value::Null);
                            c.statuses.push(FieldStatus::NotFound);
                            c.event_timestamps.push(None);
                        }
                    }
                    Some(r) => {
                        let expired = g.view.is_expired(r.event_ts, now);
                        for (col, value) in g.columns.iter().zip(r.values) {
                            let c = &mut results[first_feature + col];
                            c.statuses.push(if value.is_null() {
                                FieldStatus::NullValue
                            } else if expired {
                                FieldStatus::OutsideMaxAge
                            } else {
                                FieldStatus::Present
                            });
                            c.values.push(value);
                            c.event_timestamps.push(Some(r.event_ts));
                        }
                    }
                }
            }
        }
        Ok(OnlineResponse {
            feature_names: names,
            results,
        })
    }

    /// Writes rows (JSON objects: join keys, timestamp, features) to a view. A row without a
    /// timestamp is stamped now.
    pub async fn push(&self, view: &str, rows: &[Map<String, Json>]) -> Result<PushSummary> {
        let view = Arc::clone(self.views.snapshot().require(view)?);
        if rows.len() > MAX_ROWS {
            return Err(Error::InvalidRequest(format!(
                "{} rows in one push; the limit is {MAX_ROWS}",
                rows.len()
            )));
        }
        let now = now_micros();
        let decoded: Vec<Row> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                view.decode_row(r, Some(now))
                    .map_err(|m| Error::InvalidRequest(format!("row {i}: {m}")))
            })
            .collect::<Result<_>>()?;
        let applied = self.store.write(&view, &decoded).await?;
        let written = applied.iter().filter(|a| **a).count();
        Ok(PushSummary {
            written,
            stale: applied.len() - written,
        })
    }
}

impl FeatureStore {
    /// Feast's `write-to-online-store`: column-wise rows whose event time is the
    /// `event_timestamp` column (naive UTC ISO 8601, as Feast's client sends it) whatever the
    /// view's own timestamp field; Feast's `created` column is not kept.
    pub async fn write_columns(&self, view: &str, df: &Map<String, Json>) -> Result<PushSummary> {
        let ts_field = self
            .views
            .snapshot()
            .require(view)?
            .timestamp_field()
            .to_owned();
        let mut rows = rows_from_columns(df)?;
        if ts_field != crate::view::DEFAULT_TIMESTAMP_FIELD {
            for r in &mut rows {
                if let Some(t) = r.remove(crate::view::DEFAULT_TIMESTAMP_FIELD) {
                    r.entry(ts_field.clone()).or_insert(t);
                }
            }
        }
        self.push(view, &rows).await
    }
}

/// Turns Feast's column-wise `df` (`{"user_id": [1, 2], "clicks": [3, 4]}`) into rows.
pub fn rows_from_columns(df: &Map<String, Json>) -> Result<Vec<Map<String, Json>>> {
    let mut n = None;
    for (k, v) in df {
        let len = v
            .as_array()
            .ok_or_else(|| Error::InvalidRequest(format!("df column '{k}' must be an array")))?
            .len();
        if *n.get_or_insert(len) != len {
            return Err(Error::InvalidRequest(format!(
                "df columns differ in length ('{k}' has {len} values, others {})",
                n.unwrap_or(0)
            )));
        }
    }
    let n = n.unwrap_or(0);
    if n > MAX_ROWS {
        return Err(Error::InvalidRequest(format!(
            "{n} rows in one push; the limit is {MAX_ROWS}"
        )));
    }
    let mut rows = vec![Map::with_capacity(df.len()); n];
    for (k, v) in df {
        for (row, x) in rows.iter_mut().zip(v.as_array().expect("checked")) {
            row.insert(k.clone(), x.clone());
        }
    }
    Ok(rows)
}

/// The requested features of one view: where they go and which they are.
struct Group {
    view: Arc<FeatureView>,
    /// Feature indices in the view, to read.
    features: Vec<usize>,
    /// The matching result columns (among the features).
    columns: Vec<usize>,
}

fn group_by_view(views: &Views, refs: &[String]) -> Result<Vec<Group>> {
    if refs.is_empty() {
        return Err(Error::InvalidRequest(
            "no features requested: list them as \"view:feature\"".into(),
        ));
    }
    let mut groups: Vec<Group> = Vec::new();
    for (col, r) in refs.iter().enumerate() {
        let (v, f) = parse_ref(r)?;
        let view = views.require(v)?;
        let fi = view.require_feature(f)?;
        match groups.iter_mut().find(|g| g.view.name == v) {
            Some(g) => {
                g.features.push(fi);
                g.columns.push(col);
            }
            None => groups.push(Group {
                view: Arc::clone(view),
                features: vec![fi],
                columns: vec![col],
            }),
        }
    }
    Ok(groups)
}

fn entity_rows(entities: &[(String, Vec<Json>)]) -> Result<usize> {
    let Some((_, first)) = entities.first() else {
        return Err(Error::InvalidRequest(
            "no entities given: pass {\"<join key>\": [values...]}".into(),
        ));
    };
    let n = first.len();
    if let Some((k, v)) = entities.iter().find(|(_, v)| v.len() != n) {
        return Err(Error::InvalidRequest(format!(
            "entity key '{k}' has {} values, '{}' has {n}: each needs one per row",
            v.len(),
            entities[0].0
        )));
    }
    if n > MAX_ROWS {
        return Err(Error::InvalidRequest(format!(
            "{n} entity rows in one read; the limit is {MAX_ROWS}"
        )));
    }
    Ok(n)
}

fn entity_keys(
    view: &FeatureView,
    by_key: &HashMap<&str, &[Json]>,
    rows: usize,
) -> Result<Vec<EntityKey>> {
    let cols: Vec<&[Json]> = view
        .entities()
        .iter()
        .map(|e| {
            by_key.get(e.as_str()).copied().ok_or_else(|| {
                let mut given: Vec<&str> = by_key.keys().copied().collect();
                given.sort_unstable();
                Error::InvalidRequest(format!(
                    "feature view '{}' is keyed by {:?}; the request gives entity keys {given:?}",
                    view.name,
                    view.entities()
                ))
            })
        })
        .collect::<Result<_>>()?;
    (0..rows)
        .map(|r| {
            let mut parts = Vec::with_capacity(cols.len());
            for (c, e) in cols.iter().zip(view.entities()) {
                parts.push(
                    EntityKey::part(&c[r])
                        .map_err(|m| Error::InvalidRequest(format!("entity key '{e}': {m}")))?,
                );
            }
            Ok(EntityKey::from_parts(parts.iter().map(|p| p.as_ref())))
        })
        .collect()
}
