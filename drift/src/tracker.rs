//! Performance tracking: sampled predictions wait (bounded in number and age) for the
//! ground truth that arrives later by request id; joined rows go into a per-version sliding
//! window of labelled rows, from which the quality metrics are computed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::performance::{self, Classification, Regression};
use crate::record::{Predictions, Truth};

#[derive(Debug)]
struct Pending {
    version: String,
    predictions: Predictions,
}

#[derive(Debug, Clone)]
enum Labelled {
    Class {
        truth: u32,
        predicted: u32,
        n_classes: usize,
        scores: Option<Vec<f32>>,
    },
    Value {
        truth: f64,
        predicted: f64,
    },
}

#[derive(Debug, Default)]
struct VersionLog {
    predicted_rows: u64,
    labelled_rows: u64,
    rows: VecDeque<Labelled>,
}

/// A version's quality, from its last labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionPerformance {
    pub version: String,
    /// Sampled prediction rows so far.
    pub predicted_rows: u64,
    /// Rows that received their truth so far.
    pub labelled_rows: u64,
    /// `labelled_rows / predicted_rows`.
    pub labelled_share: f64,
    /// Labelled rows the metrics are computed on (the last `performance.window`).
    pub window_rows: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

impl VersionPerformance {
    /// `(metric, value)` pairs, for the Prometheus gauges.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut m = vec![("labelled_share", self.labelled_share)];
        if let Some(c) = &self.classification {
            m.extend([
                ("accuracy", c.accuracy),
                ("precision", c.precision),
                ("recall", c.recall),
                ("f1", c.f1),
            ]);
            if let Some(auc) = c.roc_auc {
                m.push(("roc_auc", auc));
            }
        }
        if let Some(r) = &self.regression {
            m.extend([("mae", r.mae), ("rmse", r.rmse)]);
            if let Some(r2) = r.r2 {
                m.push(("r2", r2));
            }
        }
        m
    }
}

#[derive(Debug)]
pub struct Tracker {
    capacity: usize,
    ttl_ms: u64,
    window: usize,
    pending: HashMap<String, Pending>,
    /// `(time, id)` in arrival order, for expiry.
    order: VecDeque<(u64, String)>,
    versions: BTreeMap<String, VersionLog>,
    /// Predictions dropped unlabelled: too many waiting, or too old.
    pub expired: u64,
    /// The truths received, most recent last (label drift), at most `window`.
    truths: VecDeque<f64>,
}

impl Tracker {
    pub fn new(capacity: usize, ttl_ms: u64, window: usize) -> Tracker {
        Tracker {
            capacity,
            ttl_ms,
            window,
            pending: HashMap::new(),
            order: VecDeque::new(),
            versions: BTreeMap::new(),
            expired: 0,
            truths: VecDeque::new(),
        }
    }

    /// Keeps a request's predictions until its truth arrives.
    pub fn remember(&mut self, id: &str, version: &str, time_ms: u64, p: Predictions) {
        self.expire(time_ms);
        self.versions
            .entry(version.to_owned())
            .or_default()
            .predicted_rows += p.rows() as u64;
        while self.pending.len() >= self.capacity {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            if self.pending.remove(&old).is_some() {
                self.expired += 1;
            }
        }
        if self
            .pending
            .insert(
                id.to_owned(),
                Pending {
                    version: version.to_owned(),
                    predictions: p,
                },
            )
            .is_none()
        {
            self.order.push_back((time_ms, id.to_owned()));
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((t, _)) = self.order.front() {
            if now_ms.saturating_sub(*t) < self.ttl_ms {
                break;
            }
            let (_, id) = self.order.pop_front().expect("front exists");
            if self.pending.remove(&id).is_some() {
                self.expired += 1;
            }
        }
    }

    pub fn knows(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    /// Joins a truth with its predictions. `Ok(Some(version))`: joined; `Ok(None)`: the id
    /// is not waiting here; `Err`: the truth does not fit the prediction.
    pub fn label(&mut self, t: &Truth, now_ms: u64) -> Result<Option<String>, String> {
        self.expire(now_ms);
        let Some(p) = self.pending.get(&t.id) else {
            return Ok(None);
        };
        let rows = p.predictions.rows();
        if t.values.len() != rows {
            return Err(format!(
                "request '{}' had {rows} rows; its truth has {} values",
                t.id,
                t.values.len()
            ));
        }
        let labelled: Vec<Labelled> = match &p.predictions {
            Predictions::Classification {
                classes,
                n_classes,
                scores,
            } => t
                .values
                .iter()
                .zip(classes)
                .enumerate()
                .map(|(i, (&truth, &predicted))| {
                    if truth.fract() != 0.0 || truth < 0.0 || truth >= *n_classes as f64 {
                        return Err(format!(
                            "truth {truth} is not a class index of this classifier (0..{n_classes})"
                        ));
                    }
                    Ok(Labelled::Class {
                        truth: truth as u32,
                        predicted,
                        n_classes: *n_classes,
                        scores: scores
                            .as_ref()
                            .map(|s| s[i * n_classes..(i + 1) * n_classes].to_vec()),
                    })
                })
                .collect::<Result<_, _>>()?,
            Predictions::Regression { values } => t
                .values
                .iter()
                .zip(values)
                .map(|(&truth, &predicted)| Labelled::Value { truth, predicted })
                .collect(),
        };
        let p = self.pending.remove(&t.id).expect("looked up above");
        let log = self.versions.entry(p.version.clone()).or_default();
        log.labelled_rows += labelled.len() as u64;
        log.rows.extend(labelled);
        let excess = log.rows.len().saturating_sub(self.window);
        log.rows.drain(..excess);
        self.truths.extend(&t.values);
        let excess = self.truths.len().saturating_sub(self.window);
        self.truths.drain(..excess);
        Ok(Some(p.version))
    }

    /// The truths received lately (for label drift).
    pub fn recent_truths(&self) -> Vec<f64> {
        self.truths.iter().copied().collect()
    }

    /// Each version's quality.
    pub fn performance(&self) -> Vec<VersionPerformance> {
        self.versions
            .iter()
            .map(|(v, log)| version_performance(v, log))
            .collect()
    }

    pub fn version(&self, version: &str) -> Option<VersionPerformance> {
        self.versions
            .get(version)
            .map(|log| version_performance(version, log))
    }
}

fn version_performance(version: &str, log: &VersionLog) -> VersionPerformance {
    let (mut classification, mut regression) = (None, None);
    let (mut truth, mut predicted, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut yt, mut yp) = (Vec::new(), Vec::new());
    let mut n_classes = 0;
    let mut all_scored = true;
    for row in &log.rows {
        match row {
            Labelled::Class {
                truth: t,
                predicted: p,
                n_classes: k,
                scores: s,
            } => {
                truth.push(*t);
                predicted.push(*p);
                n_classes = n_classes.max(*k);
                match s {
                    Some(s) if s.len() == n_classes => scores.extend_from_slice(s),
                    _ => all_scored = false,
                }
            }
            Labelled::Value {
                truth: t,
                predicted: p,
            } => {
                yt.push(*t);
                yp.push(*p);
            }
        }
    }
    if !truth.is_empty() {
        let s = (all_scored && scores.len() == truth.len() * n_classes).then_some(&scores[..]);
        classification = Some(performance::classification(
            &truth, &predicted, s, n_classes,
        ));
    }
    if !yt.is_empty() {
        regression = Some(performance::regression(&yt, &yp));
    }
    VersionPerformance {
        version: version.to_owned(),
        predicted_rows: log.predicted_rows,
        labelled_rows: log.labelled_rows,
        labelled_share: if log.predicted_rows == 0 {
            0.0
        } else {
            log.labelled_rows as f64 / log.predicted_rows as f64
        },
        window_rows: log.rows.len(),
        classification,
        regression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(c: &[u32]) -> Predictions {
        Predictions::Classification {
            classes: c.to_vec(),
            n_classes: 3,
            scores: None,
        }
    }

    #[test]
    fn truths_join_their_predictions_by_id_and_bad_ones_are_refused() {
        let mut t = Tracker::new(10, 1000, 100);
        t.remember("a", "1", 0, class(&[0, 1]));
        t.remember("b", "1", 0, class(&[2]));
        let truth = |id: &str, v: &[f64]| Truth {
            id: id.into(),
            values: v.to_vec(),
        };
        assert!(
            t.label(&truth("a", &[0.0]), 1)
                .unwrap_err()
                .contains("had 2 rows")
        );
        assert!(
            t.label(&truth("b", &[3.0]), 1)
                .unwrap_err()
                .contains("not a class index")
        );
        assert_eq!(
            t.label(&truth("a", &[0.0, 2.0]), 1).unwrap(),
            Some("1".into())
        );
        assert_eq!(
            t.label(&truth("a", &[0.0, 2.0]), 1).unwrap(),
            None,
            "joined once"
        );
        let p = t.version("1").unwrap();
        assert_eq!(
            (p.predicted_rows, p.labelled_rows, p.window_rows),
            (3, 2, 2)
        );
        assert_eq!(p.classification.unwrap().accuracy, 0.5);
    }

    #[test]
    fn predictions_expire_by_age_and_by_count() {
        let mut t = Tracker::new(2, 1000, 100);
        t.remember("a", "1", 0, class(&[0]));
        t.remember("b", "1", 10, class(&[0]));
        t.remember("c", "1", 20, class(&[0]));
        assert!(!t.knows("a") && t.knows("b") && t.knows("c"));
        t.remember("d", "1", 1025, class(&[0]));
        assert!(!t.knows("b") && !t.knows("c") && t.knows("d"));
        assert_eq!(t.expired, 3);
    }
}
