//! The reference a model's live traffic is compared with: per numeric column every finite
//! value, sorted (no sketch: up to [`MAX_REFERENCE_ROWS`] rows the tests run on the real
//! values, exactly as scipy and Evidently would); per categorical column the counts; per
//! embedding the vectors. Built from an upload (JSON columns or CSV) or from captured
//! traffic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{Column, Record, Values};
use crate::spec::MAX_REFERENCE_ROWS;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Rows it was built from.
    pub rows: usize,
    /// `upload`, `capture`, or `capture:<version>`.
    pub source: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub columns: BTreeMap<String, RefColumn>,
    pub embeddings: BTreeMap<String, RefEmbedding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefColumn {
    /// Finite values, ascending; `missing` counts the NaN and ±inf left out (as Evidently
    /// drops them).
    Numeric { sorted: Vec<f64>, missing: usize },
    Categorical {
        counts: BTreeMap<String, u64>,
        missing: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefEmbedding {
    pub dim: usize,
    /// Row-major `[n, dim]`.
    pub values: Vec<f32>,
}

impl RefEmbedding {
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }
}

/// Numbers split into the finite ones, sorted, and a count of the rest.
pub fn finite_sorted(values: impl IntoIterator<Item = f64>) -> (Vec<f64>, usize) {
    let mut missing = 0;
    let mut v: Vec<f64> = values
        .into_iter()
        .filter(|x| {
            let keep = x.is_finite();
            missing += usize::from(!keep);
            keep
        })
        .collect();
    v.sort_unstable_by(f64::total_cmp);
    (v, missing)
}

/// Categories counted; the empty string counts as missing.
pub fn category_counts<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> (BTreeMap<String, u64>, usize) {
    let mut counts = BTreeMap::new();
    let mut missing = 0;
    for v in values {
        if v.is_empty() {
            missing += 1;
        } else if let Some(c) = counts.get_mut(v) {
            *c += 1;
        } else {
            counts.insert(v.to_owned(), 1);
        }
    }
    (counts, missing)
}

/// Gathers columns row by row (a capture) or all at once (an upload).
#[derive(Debug, Default)]
pub struct ReferenceBuilder {
    rows: usize,
    columns: BTreeMap<String, Values>,
    embeddings: BTreeMap<String, RefEmbedding>,
}

impl ReferenceBuilder {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds a sampled request's rows (a column whose type changed is an error).
    pub fn push_record(&mut self, r: &Record) -> Result<()> {
        for c in &r.columns {
            self.push_column(c)?;
        }
        for e in &r.embeddings {
            let slot = self
                .embeddings
                .entry(e.name.clone())
                .or_insert_with(|| RefEmbedding {
                    dim: e.dim,
                    values: Vec::new(),
                });
            if slot.dim != e.dim {
                return Err(Error::Invalid(format!(
                    "embedding '{}' has dimension {} here and {} before",
                    e.name, e.dim, slot.dim
                )));
            }
            slot.values.extend_from_slice(&e.values);
        }
        self.rows += r.rows;
        Ok(())
    }

    fn push_column(&mut self, c: &Column) -> Result<()> {
        match (self.columns.get_mut(&c.name), &c.values) {
            (None, v) => {
                self.columns.insert(c.name.clone(), v.clone());
            }
            (Some(Values::Numbers(a)), Values::Numbers(b)) => a.extend_from_slice(b),
            (Some(Values::Categories(a)), Values::Categories(b)) => a.extend_from_slice(b),
            _ => {
                return Err(Error::Invalid(format!(
                    "column '{}' mixes numbers and categories",
                    c.name
                )));
            }
        }
        Ok(())
    }

    /// The reference, or why the data cannot be one.
    pub fn finish(self, source: &str, now_ms: u64) -> Result<Reference> {
        if self.columns.is_empty() && self.embeddings.is_empty() {
            return Err(Error::Invalid("the reference has no columns".into()));
        }
        let mut columns = BTreeMap::new();
        for (name, values) in self.columns {
            if values.len() > MAX_REFERENCE_ROWS {
                return Err(Error::Invalid(format!(
                    "column '{name}' has {} values; a reference keeps at most {MAX_REFERENCE_ROWS}: subsample it",
                    values.len()
                )));
            }
            let col = match values {
                Values::Numbers(v) => {
                    let (sorted, missing) = finite_sorted(v);
                    RefColumn::Numeric { sorted, missing }
                }
                Values::Categories(v) => {
                    let (counts, missing) = category_counts(v.iter().map(String::as_str));
                    RefColumn::Categorical { counts, missing }
                }
            };
            columns.insert(name, col);
        }
        let rows = self.rows.max(
            columns
                .values()
                .map(|c| match c {
                    RefColumn::Numeric { sorted, missing } => sorted.len() + missing,
                    RefColumn::Categorical { counts, missing } => {
                        counts.values().sum::<u64>() as usize + missing
                    }
                })
                .max()
                .unwrap_or(0),
        );
        Ok(Reference {
            rows,
            source: source.to_owned(),
            created_ms: now_ms,
            columns,
            embeddings: self.embeddings,
        })
    }
}

/// The JSON body of `PUT /api/drift/{model}/reference`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    #[serde(default)]
    columns: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    embeddings: BTreeMap<String, Vec<Vec<f32>>>,
}

impl Reference {
    /// A reference from JSON: `{"columns": {"age": [31, 45, null], "city": ["a", "b"]},
    /// "embeddings": {"emb": [[0.1, 0.2], ...]}}`. A column of numbers (null for missing)
    /// is numeric; a column with any string is categorical (numbers in it become their
    /// text).
    pub fn from_json(body: &[u8], now_ms: u64) -> Result<Reference> {
        let up: Upload = serde_json::from_slice(body).map_err(|e| {
            Error::Invalid(format!(
                "reference: {e}; expected {{\"columns\": {{\"<name>\": [values...]}}, \"embeddings\": {{\"<name>\": [[...], ...]}}}}"
            ))
        })?;
        let mut b = ReferenceBuilder::default();
        for (name, values) in up.columns {
            let categorical = values.iter().any(serde_json::Value::is_string);
            let values = if categorical {
                Values::Categories(
                    values
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        })
                        .collect(),
                )
            } else {
                Values::Numbers(
                    values
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::Null => Ok(f64::NAN),
                            v => v.as_f64().ok_or_else(|| {
                                Error::Invalid(format!(
                                    "column '{name}': {v} is neither a number, a string nor null"
                                ))
                            }),
                        })
                        .collect::<Result<_>>()?,
                )
            };
            b.push_column(&Column { name, values })?;
        }
        for (name, rows) in up.embeddings {
            let dim = rows.first().map_or(0, Vec::len);
            if dim == 0 || rows.iter().any(|r| r.len() != dim) {
                return Err(Error::Invalid(format!(
                    "embedding '{name}': every row must have the same, non-zero length"
                )));
            }
            b.embeddings.insert(
                name,
                RefEmbedding {
                    dim,
                    values: rows.into_iter().flatten().collect(),
                },
            );
        }
        b.finish("upload", now_ms)
    }

    /// A reference from CSV with a header row. A column whose every non-empty cell is a
    /// number is numeric (empty cells are missing); any other is categorical.
    pub fn from_csv(body: &[u8], now_ms: u64) -> Result<Reference> {
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body);
        let bad = |e: csv::Error| Error::Invalid(format!("reference CSV: {e}"));
        let names: Vec<String> = rd
            .headers()
            .map_err(bad)?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); names.len()];
        for rec in rd.records() {
            let rec = rec.map_err(bad)?;
            for (i, cell) in rec.iter().enumerate() {
                cells[i].push(cell.trim().to_owned());
            }
        }
        let mut b = ReferenceBuilder::default();
        for (name, col) in names.into_iter().zip(cells) {
            let numbers: Option<Vec<f64>> = col
                .iter()
                .map(|c| {
                    if c.is_empty() {
                        Some(f64::NAN)
                    } else {
                        c.parse::<f64>().ok()
                    }
                })
                .collect();
            let values = match numbers {
                Some(v) => Values::Numbers(v),
                None => Values::Categories(col),
            };
            b.push_column(&Column { name, values })?;
        }
        b.finish("upload", now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_uploads_give_the_same_reference() {
        let j = Reference::from_json(
            br#"{"columns": {"x": [3, 1, null, 2], "c": ["a", "b", "a", ""]}}"#,
            7,
        )
        .unwrap();
        let c = Reference::from_csv(b"x,c\n3,a\n1,b\n,a\n2,\n", 7).unwrap();
        assert_eq!(j, c);
        assert_eq!(j.rows, 4);
        assert_eq!(
            j.columns["x"],
            RefColumn::Numeric {
                sorted: vec![1.0, 2.0, 3.0],
                missing: 1
            }
        );
        let RefColumn::Categorical { counts, missing } = &j.columns["c"] else {
            panic!("categorical")
        };
        assert_eq!((counts["a"], counts["b"], *missing), (2, 1, 1));
    }

    #[test]
    fn bad_uploads_say_what_is_wrong() {
        let e = |b: &[u8]| Reference::from_json(b, 0).unwrap_err().to_string();
        assert!(e(br#"{"columns": {"x": [true]}}"#).contains("neither a number"));
        assert!(e(br#"{"colums": {}}"#).contains("unknown field"));
        assert!(e(br#"{}"#).contains("no columns"));
        assert!(e(br#"{"embeddings": {"e": [[1, 2], [3]]}}"#).contains("same, non-zero length"));
        let c = Reference::from_csv(b"x,y\n1,2\n3\n", 0)
            .unwrap_err()
            .to_string();
        assert!(c.contains("reference CSV"), "{c}");
    }
}
