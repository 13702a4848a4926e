//! A collection's settings: dimension, metric, HNSW parameters, embedding model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How vectors are compared. Scores: cosine similarity and dot product (higher is closer),
/// Euclidean distance for `l2` (lower is closer), as in Qdrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Vectors are L2-normalised on the way in; the score is their dot product.
    Cosine,
    L2,
    Dot,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    pub fn parse(s: &str) -> Result<Metric> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" | "euclid" | "euclidean" => Ok(Metric::L2),
            "dot" | "ip" => Ok(Metric::Dot),
            other => Err(Error::InvalidRequest(format!(
                "unknown metric '{other}': use cosine, l2 or dot"
            ))),
        }
    }

    /// Whether a higher score is closer.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

pub const DEFAULT_M: usize = 16;
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
pub const DEFAULT_EF: usize = 64;
pub const MAX_DIM: usize = 65_536;
/// hnsw_rs exits the process above 256; layer 0 keeps 2 × m links.
pub const MAX_M: usize = 128;
pub const MAX_EF: usize = 65_536;

/// `PUT /api/collections/{c}`: every field but `dim` optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub dim: usize,
    #[serde(default, deserialize_with = "metric_opt")]
    pub metric: Option<Metric>,
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef: Option<usize>,
    pub embedding_model: Option<String>,
}

fn metric_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Metric>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| Metric::parse(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A collection's settings as stored (`collection.json`) and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionParams {
    pub dim: usize,
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
    /// Default search `ef`; a request may set its own.
    pub ef: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

impl CreateCollection {
    /// Fills the defaults and checks every bound, with a message naming the field.
    pub fn into_params(self) -> Result<CollectionParams> {
        let p = CollectionParams {
            dim: self.dim,
            metric: self.metric.unwrap_or(Metric::Cosine),
            m: self.m.unwrap_or(DEFAULT_M),
            ef_construction: self.ef_construction.unwrap_or(DEFAULT_EF_CONSTRUCTION),
            ef: self.ef.unwrap_or(DEFAULT_EF),
            embedding_model: self.embedding_model.filter(|m| !m.is_empty()),
        };
        p.validate()?;
        Ok(p)
    }
}

impl CollectionParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.dim == 0 || self.dim > MAX_DIM {
            return bad(format!("dim must be in 1..={MAX_DIM}, got {}", self.dim));
        }
        if self.m < 2 || self.m > MAX_M {
            return bad(format!("m must be in 2..={MAX_M}, got {}", self.m));
        }
        if self.ef_construction < 1 || self.ef_construction > MAX_EF {
            return bad(format!(
                "ef_construction must be in 1..={MAX_EF}, got {}",
                self.ef_construction
            ));
        }
        if self.ef < 1 || self.ef > MAX_EF {
            return bad(format!("ef must be in 1..={MAX_EF}, got {}", self.ef));
        }
        Ok(())
    }
}

/// Valid collection names double as directory names: 1–64 of `[A-Za-z0-9_-]`, not starting
/// with `-` or `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "invalid collection name '{name}': use 1 to 64 letters, digits, '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let p = CreateCollection {
            dim: 8,
            ..Default::default()
        }
        .into_params()
        .unwrap();
        assert_eq!(
            (p.metric, p.m, p.ef),
            (Metric::Cosine, DEFAULT_M, DEFAULT_EF)
        );
        let e = CreateCollection {
            dim: 8,
            m: Some(300),
            ..Default::default()
        }
        .into_params()
        .unwrap_err();
        assert!(e.to_string().contains("m must be"), "{e}");
        assert!(CreateCollection::default().into_params().is_err());
        assert!(validate_name("a-b_1").is_ok());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn metric_names() {
        let c: CreateCollection = serde_json::from_str(r#"{"dim": 3, "metric": "L2"}"#).unwrap();
        assert_eq!(c.metric, Some(Metric::L2));
        let e = serde_json::from_str::<CreateCollection>(r#"{"dim": 3, "metric": "hamming"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown metric"), "{e}");
    }
}
