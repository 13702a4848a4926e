//! Points: ids (unsigned integers or strings), what an upsert carries, what a read returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A point's id: an unsigned integer or a string (`7` and `"7"` are different ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    Num(u64),
    Str(String),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Str(s) => write!(f, "'{s}'"),
        }
    }
}

impl From<u64> for PointId {
    fn from(n: u64) -> Self {
        PointId::Num(n)
    }
}

impl From<&str> for PointId {
    fn from(s: &str) -> Self {
        PointId::Str(s.to_owned())
    }
}

pub const MAX_ID_BYTES: usize = 512;

impl PointId {
    /// An id from a URL path segment: digits are a number, anything else a string.
    pub fn from_path(s: &str) -> PointId {
        s.parse()
            .map_or_else(|_| PointId::Str(s.to_owned()), PointId::Num)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            PointId::Num(_) => Ok(()),
            PointId::Str(s) if s.is_empty() || s.len() > MAX_ID_BYTES => {
                Err(Error::InvalidRequest(format!(
                    "string point ids must be 1 to {MAX_ID_BYTES} bytes long"
                )))
            }
            PointId::Str(_) => Ok(()),
        }
    }
}

/// One point of an upsert: `vector`, or `text` that the collection's embedding model embeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointInput {
    pub id: PointId,
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    #[serde(default)]
    pub text: Option<String>,
    /// A JSON object (or absent).
    #[serde(default)]
    pub payload: Option<Value>,
}

impl PointInput {
    pub fn new(id: impl Into<PointId>, vector: Vec<f32>, payload: Option<Value>) -> Self {
        PointInput {
            id: id.into(),
            vector: Some(vector),
            text: None,
            payload,
        }
    }
}

/// A stored point, as `GET .../points/{id}` returns it (cosine vectors come back normalised).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: PointId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

/// The answer to a write: it is in the write-ahead log (fsynced) and visible to searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpdateResult {
    /// The operation's sequence number in the collection's log.
    pub operation_id: u64,
    /// Always `completed`: writes are durable and indexed when acknowledged.
    pub status: &'static str,
}

/// Checks a payload is a JSON object (or absent / null, stored as none).
pub(crate) fn check_payload(id: &PointId, payload: Option<Value>) -> Result<Option<Value>> {
    match payload {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(Error::InvalidRequest(format!(
            "point {id}: payload must be a JSON object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_both_ways() {
        let ids: Vec<PointId> = serde_json::from_str(r#"[1, "a", 18446744073709551615]"#).unwrap();
        assert_eq!(
            ids,
            vec![PointId::Num(1), "a".into(), PointId::Num(u64::MAX)]
        );
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert_eq!(PointId::from_path("12"), PointId::Num(12));
        assert_eq!(PointId::from_path("x1"), "x1".into());
        assert!(PointId::Str(String::new()).validate().is_err());
    }

    #[test]
    fn payload_must_be_object() {
        let id = PointId::Num(1);
        assert!(check_payload(&id, Some(serde_json::json!([1]))).is_err());
        assert_eq!(check_payload(&id, Some(Value::Null)).unwrap(), None);
    }
}
