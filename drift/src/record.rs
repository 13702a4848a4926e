//! What the monitor consumes: one sampled request with its columns already extracted from
//! the tensors, and ground truth by request id. Both are also the JSON records of the Kafka
//! topic a fleet publishes to (`docs/drift.md` has the schema), so an in-process monitor and
//! `inferd drift watch` see exactly the same data.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One sampled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub model: String,
    pub version: String,
    /// The request id (every response carries one): feedback names it.
    pub id: String,
    /// When it was served, Unix milliseconds.
    pub time_ms: u64,
    /// Rows (the batch size of the request).
    pub rows: usize,
    /// Per-feature columns, each with `rows` values.
    #[serde(default)]
    pub columns: Vec<Column>,
    /// Vector columns, each with `rows` vectors.
    #[serde(default)]
    pub embeddings: Vec<Embedding>,
    /// The model's prediction per row, joined later with the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<Predictions>,
    /// A record of several requests (the server merges what it finds queued):
    /// `(first row, time_ms)` of each, in row order. Empty: every row at `time_ms`. Not on
    /// the topic, which carries one record per request.
    #[serde(skip)]
    pub row_times: Vec<(usize, u64)>,
}

impl Record {
    /// The time of the first of rows `from..to` and the latest of them (a window's start
    /// and end).
    pub fn times(&self, from: usize, to: usize) -> (u64, u64) {
        if self.row_times.is_empty() {
            return (self.time_ms, self.time_ms);
        }
        // The request holding row `from`: the last one starting at or before it.
        let first = self
            .row_times
            .partition_point(|&(row, _)| row <= from)
            .saturating_sub(1);
        let last = self
            .row_times
            .partition_point(|&(row, _)| row < to)
            .max(first + 1);
        let start = self.row_times[first].1;
        let end = self.row_times[first..last]
            .iter()
            .map(|&(_, t)| t)
            .max()
            .unwrap_or(start);
        (start, end)
    }

    /// Rows `from..to` of the record (columns and embeddings; no predictions): where a
    /// record straddles the end of a reference capture.
    pub fn rows_range(&self, from: usize, to: usize) -> Record {
        Record {
            model: self.model.clone(),
            version: self.version.clone(),
            id: self.id.clone(),
            time_ms: self.time_ms,
            rows: to - from,
            columns: self
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    values: match &c.values {
                        Values::Numbers(v) => Values::Numbers(v[from..to].to_vec()),
                        Values::Categories(v) => Values::Categories(v[from..to].to_vec()),
                    },
                })
                .collect(),
            embeddings: self
                .embeddings
                .iter()
                .map(|e| Embedding {
                    name: e.name.clone(),
                    dim: e.dim,
                    values: e.values[from * e.dim..to * e.dim].to_vec(),
                })
                .collect(),
            predictions: None,
            row_times: if self.row_times.is_empty() {
                Vec::new()
            } else {
                let later = self
                    .row_times
                    .iter()
                    .filter(|&&(row, _)| row > from && row < to)
                    .map(|&(row, t)| (row - from, t));
                std::iter::once((0, self.times(from, to).0))
                    .chain(later)
                    .collect()
            },
        }
    }
}

/// One column of a record or an uploaded reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    pub values: Values,
}

/// A column's values: numbers (NaN and ±inf travel as JSON `null`) or categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Values {
    Numbers(
        #[serde(
            serialize_with = "nulls_for_non_finite",
            deserialize_with = "nan_for_nulls"
        )]
        Vec<f64>,
    ),
    Categories(Vec<String>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Categories(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn nulls_for_non_finite<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
}

fn nan_for_nulls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// A vector column: `rows` vectors of `dim` values, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    pub name: String,
    pub dim: usize,
    pub values: Vec<f32>,
}

/// The prediction of each row of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case", deny_unknown_fields)]
pub enum Predictions {
    /// Class indices `0..n_classes`, with the class scores (row-major `[rows, n_classes]`)
    /// when the model gives them.
    Classification {
        classes: Vec<u32>,
        n_classes: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scores: Option<Vec<f32>>,
    },
    Regression {
        values: Vec<f64>,
    },
}

impl Predictions {
    pub fn rows(&self) -> usize {
        match self {
            Predictions::Classification { classes, .. } => classes.len(),
            Predictions::Regression { values } => values.len(),
        }
    }
}

/// Ground truth for a served request: one value per row (a class index or a number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    pub id: String,
    pub values: Vec<f64>,
}

impl Truth {
    /// Reads the truth of a feedback item: a number, or an array of numbers (one per row of
    /// a batched request).
    pub fn from_json(id: &str, v: &serde_json::Value) -> Result<Truth, String> {
        let one = |x: &serde_json::Value| {
            x.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("truth must be a number or an array of numbers, got {x}"))
        };
        let values = match v {
            serde_json::Value::Array(a) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
            x => vec![one(x)?],
        };
        if values.is_empty() {
            return Err("truth is an empty array".into());
        }
        Ok(Truth {
            id: id.to_owned(),
            values,
        })
    }
}

/// A message of the Kafka topic: a sampled prediction or a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    Prediction(Record),
    Truth(Truth),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_json_with_non_finite_values_as_null() {
        let r = Record {
            model: "m".into(),
            version: "1".into(),
            id: "a-1".into(),
            time_ms: 5,
            rows: 2,
            columns: vec![
                Column {
                    name: "x".into(),
                    values: Values::Numbers(vec![1.5, f64::INFINITY]),
                },
                Column {
                    name: "c".into(),
                    values: Values::Categories(vec!["a".into(), "b".into()]),
                },
            ],
            embeddings: vec![Embedding {
                name: "e".into(),
                dim: 1,
                values: vec![0.25, 0.5],
            }],
            predictions: Some(Predictions::Classification {
                classes: vec![0, 1],
                n_classes: 2,
                scores: None,
            }),
            row_times: Vec::new(),
        };
        let json = serde_json::to_string(&Message::Prediction(r.clone())).unwrap();
        assert!(json.contains(r#""values":[1.5,null]"#), "{json}");
        let Message::Prediction(back) = serde_json::from_str(&json).unwrap() else {
            panic!("a prediction")
        };
        assert_eq!(back.columns[1], r.columns[1]);
        let Values::Numbers(x) = &back.columns[0].values else {
            panic!("numbers")
        };
        assert_eq!(x[0], 1.5);
        assert!(x[1].is_nan());
        assert_eq!(back.predictions, r.predictions);
    }

    #[test]
    fn truth_is_a_number_or_an_array_of_numbers() {
        let t = |v: serde_json::Value| Truth::from_json("i", &v);
        assert_eq!(t(serde_json::json!(2)).unwrap().values, vec![2.0]);
        assert_eq!(
            t(serde_json::json!([1, 0.5])).unwrap().values,
            vec![1.0, 0.5]
        );
        assert!(
            t(serde_json::json!("cat"))
                .unwrap_err()
                .contains("must be a number")
        );
        assert!(t(serde_json::json!([])).unwrap_err().contains("empty"));
    }
}
