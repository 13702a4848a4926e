//! Feature views: a named group of typed features about one kind of entity (its join keys),
//! with a `ttl` after which values are reported `OUTSIDE_MAX_AGE`, and optionally the Kafka
//! topic that feeds it.
//!
//! In the feature-view file (`--feature-views`), one table per view:
//!
//! ```toml
//! [views.user_stats]
//! entities = ["user_id"]            # join keys; several make a composite key
//! ttl = "1h"                        # humantime ("90s", "1h 30m") or seconds; absent/0 = never
//! features = [
//!   { name = "clicks", type = "int64" },
//!   { name = "ctr", type = "float32" },
//!   { name = "embedding", type = "float32_list" },
//! ]
//! [views.user_stats.source]
//! topic = "user_stats"
//! format = "json"                   # the only format so far
//! timestamp_field = "event_timestamp"
//! dlq_topic = "user_stats.dlq"      # default: "<topic>.dlq"
//! ```
//!
//! `PUT /api/feature-views/{name}` takes the same table as JSON. A JSON message (or pushed
//! row) is one object holding the join keys, the timestamp field and any of the features;
//! a feature it leaves out is stored as null.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::store::Row;
use crate::value::{EntityKey, Micros, Value, ValueType, parse_timestamp};

/// The default name of the event-time field in messages and pushed rows.
pub const DEFAULT_TIMESTAMP_FIELD: &str = "event_timestamp";

/// A view as written in the file or a `PUT` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewSpec {
    pub entities: Vec<String>,
    pub features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
}

/// `ttl` as seconds or a humantime string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ttl {
    Seconds(u64),
    Text(String),
}

impl Ttl {
    fn duration(&self) -> std::result::Result<Option<Duration>, String> {
        let d = match self {
            Ttl::Seconds(s) => Duration::from_secs(*s),
            Ttl::Text(t) if t.trim() == "0" => Duration::ZERO,
            Ttl::Text(t) => humantime::parse_duration(t).map_err(|e| {
                format!("ttl '{t}' is not a duration such as \"90s\" or \"1h\": {e}")
            })?,
        };
        Ok((!d.is_zero()).then_some(d))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub topic: String,
    #[serde(default)]
    pub format: MessageFormat,
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Where malformed messages go. Default: `<topic>.dlq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_topic: Option<String>,
}

fn default_timestamp_field() -> String {
    DEFAULT_TIMESTAMP_FIELD.into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    #[default]
    Json,
}

/// A validated view, shared (`Arc`) by the readers, the ingester and the stores.
#[derive(Debug, Clone)]
pub struct FeatureView {
    pub name: String,
    pub spec: FeatureViewSpec,
    pub ttl: Option<Duration>,
    /// `"<view>:<feature>"` per feature, in declaration order.
    pub refs: Vec<String>,
    /// The join keys joined with `,`: views with the same entities share a Redis hash.
    pub entity_group: String,
    index: HashMap<String, usize>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl FeatureView {
    pub fn new(name: &str, spec: FeatureViewSpec) -> Result<FeatureView> {
        let bad = |reason: String| Error::InvalidView {
            view: name.into(),
            reason,
        };
        if !valid_name(name) {
            return Err(bad(
                "a view name is 1-128 characters of letters, digits, '_', '-' and '.'".into(),
            ));
        }
        if spec.entities.is_empty() {
            return Err(bad("it needs at least one entity join key".into()));
        }
        if spec.features.is_empty() {
            return Err(bad("it needs at least one feature".into()));
        }
        let mut index = HashMap::with_capacity(spec.features.len());
        for (i, f) in spec.features.iter().enumerate() {
            if !valid_name(&f.name) {
                return Err(bad(format!(
                    "feature name '{}': use letters, digits, '_', '-' and '.'",
                    f.name
                )));
            }
            if index.insert(f.name.clone(), i).is_some() {
                return Err(bad(format!("feature '{}' is declared twice", f.name)));
            }
        }
        for (i, e) in spec.entities.iter().enumerate() {
            if !valid_name(e) {
                return Err(bad(format!(
                    "join key '{e}': use letters, digits, '_', '-' and '.'"
                )));
            }
            if spec.entities[..i].contains(e) {
                return Err(bad(format!("join key '{e}' is listed twice")));
            }
            if index.contains_key(e) {
                return Err(bad(format!("'{e}' is both a join key and a feature")));
            }
        }
        if let Some(src) = &spec.source {
            if src.topic.is_empty() {
                return Err(bad("source.topic is empty".into()));
            }
            if index.contains_key(&src.timestamp_field)
                || spec.entities.contains(&src.timestamp_field)
            {
                return Err(bad(format!(
                    "source.timestamp_field '{}' is also a feature or join key",
                    src.timestamp_field
                )));
            }
            if src.dlq_topic.as_deref() == Some(src.topic.as_str()) {
                return Err(bad("source.dlq_topic is the source topic itself".into()));
            }
        }
        let ttl = spec
            .ttl
            .as_ref()
            .map(Ttl::duration)
            .transpose()
            .map_err(bad)?;
        Ok(FeatureView {
            name: name.into(),
            refs: spec
                .features
                .iter()
                .map(|f| format!("{name}:{}", f.name))
                .collect(),
            entity_group: spec.entities.join(","),
            ttl: ttl.flatten(),
            spec,
            index,
        })
    }

    pub fn features(&self) -> &[FeatureSpec] {
        &self.spec.features
    }

    pub fn entities(&self) -> &[String] {
        &self.spec.entities
    }

    pub fn feature_index(&self, feature: &str) -> Option<usize> {
        self.index.get(feature).copied()
    }

    /// The index of `feature`, or a [`Error::FeatureNotFound`] naming the known ones.
    pub fn require_feature(&self, feature: &str) -> Result<usize> {
        self.feature_index(feature)
            .ok_or_else(|| Error::FeatureNotFound {
                view: self.name.clone(),
                feature: feature.into(),
                known: self.spec.features.iter().map(|f| f.name.clone()).collect(),
            })
    }

    pub fn timestamp_field(&self) -> &str {
        self.spec
            .source
            .as_ref()
            .map_or(DEFAULT_TIMESTAMP_FIELD, |s| s.timestamp_field.as_str())
    }

    pub fn topic(&self) -> Option<&str> {
        self.spec.source.as_ref().map(|s| s.topic.as_str())
    }

    pub fn dlq_topic(&self) -> Option<String> {
        let s = self.spec.source.as_ref()?;
        Some(
            s.dlq_topic
                .clone()
                .unwrap_or_else(|| format!("{}.dlq", s.topic)),
        )
    }

    /// Whether a value with event time `ts` is older than the ttl at `now`.
    pub fn is_expired(&self, ts: Micros, now: Micros) -> bool {
        self.ttl
            .is_some_and(|ttl| now.saturating_sub(ts) > ttl.as_micros() as i64)
    }

    /// The same features, join keys and types (stored rows stay readable).
    pub fn same_schema(&self, other: &FeatureView) -> bool {
        self.spec.entities == other.spec.entities && self.spec.features == other.spec.features
    }

    /// Decodes one message or pushed row (a JSON object). Without a timestamp field, `now`
    /// is used when given, else it is an error.
    pub fn decode_row(&self, obj: &Map<String, Json>, now: Option<Micros>) -> Result<Row, String> {
        let mut parts = Vec::with_capacity(self.spec.entities.len());
        for e in &self.spec.entities {
            let v = obj
                .get(e)
                .ok_or_else(|| format!("join key '{e}' is missing"))?;
            parts.push(EntityKey::part(v).map_err(|m| format!("join key '{e}': {m}"))?);
        }
        let key = EntityKey::from_parts(parts.iter().map(|p| p.as_ref()));
        let ts_field = self.timestamp_field();
        let event_ts = match (obj.get(ts_field), now) {
            (Some(v), _) => parse_timestamp(v).map_err(|m| format!("'{ts_field}': {m}"))?,
            (None, Some(now)) => now,
            (None, None) => return Err(format!("timestamp field '{ts_field}' is missing")),
        };
        let mut values = Vec::with_capacity(self.spec.features.len());
        for f in &self.spec.features {
            values.push(match obj.get(&f.name) {
                None => Value::Null,
                Some(v) => {
                    Value::from_json(f.ty, v).map_err(|m| format!("feature '{}': {m}", f.name))?
                }
            });
        }
        Ok(Row {
            key,
            event_ts,
            values,
        })
    }
}

/// The feature-view file: `[views.<name>]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsFile {
    #[serde(default)]
    pub views: BTreeMap<String, FeatureViewSpec>,
}

impl ViewsFile {
    pub fn parse(text: &str, origin: &str) -> Result<Vec<FeatureView>> {
        let file: ViewsFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        file.views
            .into_iter()
            .map(|(name, spec)| FeatureView::new(&name, spec))
            .collect()
    }

    pub fn load(path: &std::path::Path) -> Result<Vec<FeatureView>> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FILE: &str = r#"
        [views.user_stats]
        entities = ["user_id"]
        ttl = "1h"
        features = [{ name = "clicks", type = "int64" }, { name = "emb", type = "float32_list" }]
        [views.user_stats.source]
        topic = "users"
        timestamp_field = "ts"
    "#;

    #[test]
    fn parses_the_file_and_decodes_rows() {
        let views = ViewsFile::parse(FILE, "f.toml").unwrap();
        let v = &views[0];
        assert_eq!(v.name, "user_stats");
        assert_eq!(v.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(v.refs, ["user_stats:clicks", "user_stats:emb"]);
        assert_eq!(v.dlq_topic().unwrap(), "users.dlq");
        let obj = json!({"user_id": 7, "ts": 1_700_000_000, "clicks": 3});
        let row = v.decode_row(obj.as_object().unwrap(), None).unwrap();
        assert_eq!(row.key.as_str(), "7");
        assert_eq!(row.event_ts, 1_700_000_000_000_000);
        assert_eq!(row.values, vec![Value::Int64(3), Value::Null]);
        let e = |o: Json| v.decode_row(o.as_object().unwrap(), None).unwrap_err();
        assert!(e(json!({"ts": 1})).contains("join key 'user_id' is missing"));
        assert!(e(json!({"user_id": 1})).contains("'ts' is missing"));
        assert!(e(json!({"user_id": 1, "ts": 1, "clicks": "x"})).contains("feature 'clicks'"));
    }

    #[test]
    fn rejects_bad_views_with_the_reason() {
        let e = |s: &str| ViewsFile::parse(s, "f").unwrap_err().to_string();
        assert!(
            e("[views.v]\nentities = []\nfeatures = [{name = \"a\", type = \"int64\"}]")
                .contains("join key")
        );
        assert!(e("[views.v]\nentities = [\"k\"]\nfeatures = []").contains("at least one feature"));
        assert!(
            e("[views.v]\nentities = [\"k\"]\nfeatures = [{name = \"a\", type = \"int8\"}]")
                .contains("unknown variant")
        );
        assert!(
            e("[views.v]\nentities = [\"k\"]\nttl = \"soon\"\nfeatures = [{name = \"a\", type = \"int64\"}]")
                .contains("ttl 'soon'")
        );
        assert!(
            e("[views.v]\nentities = [\"a\"]\nfeatures = [{name = \"a\", type = \"int64\"}]")
                .contains("both a join key and a feature")
        );
        assert!(
            e("[views.\"a b\"]\nentities = [\"k\"]\nfeatures = [{name = \"a\", type = \"int64\"}]")
                .contains("view name")
        );
    }
}
