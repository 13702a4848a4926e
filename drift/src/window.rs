//! Live windows: the sampled rows gathered between evaluations. Tumbling windows (each row
//! in one window) close by row count and/or time; sliding windows keep the last `rows` rows
//! and are evaluated every `slide` new rows. A request whose rows straddle a tumbling
//! window's end is split, so every window has exactly `rows` rows and the same traffic
//! always gives the same windows, in process or from Kafka.

use std::collections::{BTreeMap, VecDeque};

use crate::record::{Record, Values};
use crate::spec::WindowSpec;

/// The rows of one window, ready to be compared with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub rows: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Rows per model version.
    pub versions: BTreeMap<String, usize>,
    pub columns: BTreeMap<String, Values>,
    /// `(dim, row-major values)` per embedding.
    pub embeddings: BTreeMap<String, (usize, Vec<f32>)>,
}

#[derive(Debug)]
enum Col {
    Numbers(VecDeque<f64>),
    Categories(VecDeque<String>),
}

#[derive(Debug, Default)]
pub struct Window {
    rows: usize,
    start_ms: Option<u64>,
    end_ms: u64,
    columns: BTreeMap<String, Col>,
    embeddings: BTreeMap<String, (usize, VecDeque<f32>)>,
    /// `(version, rows)` runs in arrival order (trimmed with the rows of a sliding window).
    versions: VecDeque<(String, usize)>,
    /// Rows since the last evaluation (sliding windows).
    fresh: usize,
}

impl Window {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds a record's rows; returns the windows that closed.
    pub fn push(&mut self, spec: &WindowSpec, r: &Record) -> Vec<Current> {
        let mut closed = Vec::new();
        let mut from = 0;
        while from < r.rows {
            let room = match spec.slide {
                Some(step) => step - self.fresh,
                None if spec.rows > 0 => spec.rows - self.rows,
                None => usize::MAX,
            };
            let n = room.min(r.rows - from);
            self.append(r, from, n);
            from += n;
            match spec.slide {
                Some(step) => {
                    self.trim(spec.rows);
                    self.fresh += n;
                    if self.fresh == step && self.rows == spec.rows {
                        self.fresh = 0;
                        closed.push(self.snapshot());
                    } else if self.fresh == step {
                        self.fresh = 0;
                    }
                }
                None if spec.rows > 0 && self.rows == spec.rows => closed.push(self.take()),
                None => {}
            }
        }
        closed
    }

    /// Closes a tumbling window that has been open `spec.seconds`, if it has enough rows
    /// (otherwise its rows carry over and the clock restarts).
    pub fn tick(&mut self, spec: &WindowSpec, now_ms: u64) -> Option<Current> {
        let start = self.start_ms?;
        if spec.seconds == 0 || spec.slide.is_some() || now_ms < start + spec.seconds * 1000 {
            return None;
        }
        if self.rows < spec.min_rows.max(1) {
            self.start_ms = Some(now_ms);
            return None;
        }
        Some(self.take())
    }

    fn append(&mut self, r: &Record, from: usize, n: usize) {
        if n == 0 {
            return;
        }
        let to = from + n;
        let (start, end) = r.times(from, to);
        self.start_ms.get_or_insert(start);
        self.end_ms = self.end_ms.max(end);
        for c in &r.columns {
            // Looked up before inserting: no copy of the name for a column already here.
            if !self.columns.contains_key(&c.name) {
                let empty = match &c.values {
                    Values::Numbers(_) => Col::Numbers(VecDeque::new()),
                    Values::Categories(_) => Col::Categories(VecDeque::new()),
                };
                self.columns.insert(c.name.clone(), empty);
            }
            let col = self.columns.get_mut(&c.name).expect("inserted above");
            match (col, &c.values) {
                (Col::Numbers(d), Values::Numbers(v)) => d.extend(&v[from..to]),
                (Col::Categories(d), Values::Categories(v)) => {
                    d.extend(v[from..to].iter().cloned())
                }
                // A column that changed type (two versions disagree): its numbers count as
                // missing, so the test sees only the values of the type it started with.
                (Col::Numbers(d), Values::Categories(_)) => {
                    d.extend(std::iter::repeat_n(f64::NAN, n))
                }
                (Col::Categories(d), Values::Numbers(_)) => {
                    d.extend(std::iter::repeat_n(String::new(), n))
                }
            }
        }
        for e in &r.embeddings {
            if !self.embeddings.contains_key(&e.name) {
                self.embeddings
                    .insert(e.name.clone(), (e.dim, VecDeque::new()));
            }
            let (dim, d) = self.embeddings.get_mut(&e.name).expect("inserted above");
            if *dim == e.dim {
                d.extend(&e.values[from * e.dim..to * e.dim]);
            }
        }
        match self.versions.back_mut() {
            Some((v, k)) if *v == r.version => *k += n,
            _ => self.versions.push_back((r.version.clone(), n)),
        }
        self.rows += n;
    }

    /// Keeps the last `rows` rows of a sliding window.
    fn trim(&mut self, rows: usize) {
        for col in self.columns.values_mut() {
            match col {
                Col::Numbers(d) => drop(d.drain(..d.len().saturating_sub(rows))),
                Col::Categories(d) => drop(d.drain(..d.len().saturating_sub(rows))),
            }
        }
        for (dim, d) in self.embeddings.values_mut() {
            d.drain(..d.len().saturating_sub(rows * *dim));
        }
        let mut excess = self.rows.saturating_sub(rows);
        self.rows -= excess;
        while excess > 0 {
            let Some((_, k)) = self.versions.front_mut() else {
                break;
            };
            let cut = excess.min(*k);
            *k -= cut;
            excess -= cut;
            if *k == 0 {
                self.versions.pop_front();
            }
        }
    }

    fn snapshot(&self) -> Current {
        let mut versions = BTreeMap::new();
        for (v, k) in &self.versions {
            *versions.entry(v.clone()).or_insert(0) += k;
        }
        Current {
            rows: self.rows,
            start_ms: self.start_ms.unwrap_or(self.end_ms),
            end_ms: self.end_ms,
            versions,
            columns: self
                .columns
                .iter()
                .map(|(k, c)| {
                    let v = match c {
                        Col::Numbers(d) => Values::Numbers(d.iter().copied().collect()),
                        Col::Categories(d) => Values::Categories(d.iter().cloned().collect()),
                    };
                    (k.clone(), v)
                })
                .collect(),
            embeddings: self
                .embeddings
                .iter()
                .map(|(k, (dim, d))| (k.clone(), (*dim, d.iter().copied().collect())))
                .collect(),
        }
    }

    /// Takes the rows out (a tumbling window closing).
    fn take(&mut self) -> Current {
        let c = self.snapshot();
        *self = Window::default();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Column;

    fn rec(version: &str, t: u64, xs: &[f64]) -> Record {
        Record {
            model: "m".into(),
            version: version.into(),
            id: format!("{t}"),
            time_ms: t,
            rows: xs.len(),
            columns: vec![Column {
                name: "x".into(),
                values: Values::Numbers(xs.to_vec()),
            }],
            embeddings: vec![],
            predictions: None,
            row_times: Vec::new(),
        }
    }

    fn xs(c: &Current) -> Vec<f64> {
        match &c.columns["x"] {
            Values::Numbers(v) => v.clone(),
            Values::Categories(_) => panic!("numbers"),
        }
    }

    #[test]
    fn tumbling_windows_split_a_request_at_the_window_end() {
        let spec = WindowSpec {
            rows: 3,
            ..WindowSpec::default()
        };
        let mut w = Window::default();
        assert!(w.push(&spec, &rec("1", 1, &[1.0, 2.0])).is_empty());
        let closed = w.push(&spec, &rec("2", 2, &[3.0, 4.0, 5.0, 6.0, 7.0]));
        assert_eq!(closed.len(), 2);
        assert_eq!(xs(&closed[0]), [1.0, 2.0, 3.0]);
        assert_eq!(
            closed[0].versions,
            BTreeMap::from([("1".into(), 2), ("2".into(), 1)])
        );
        assert_eq!(xs(&closed[1]), [4.0, 5.0, 6.0]);
        assert_eq!(w.rows(), 1);
    }

    #[test]
    fn sliding_windows_keep_the_last_rows_and_step() {
        let spec = WindowSpec {
            rows: 4,
            slide: Some(2),
            ..WindowSpec::default()
        };
        let mut w = Window::default();
        let all: Vec<Current> = (0..8)
            .flat_map(|i| w.push(&spec, &rec(if i < 5 { "1" } else { "2" }, i, &[i as f64])))
            .collect();
        let got: Vec<Vec<f64>> = all.iter().map(xs).collect();
        assert_eq!(
            got,
            [
                vec![0.0, 1.0, 2.0, 3.0],
                vec![2.0, 3.0, 4.0, 5.0],
                vec![4.0, 5.0, 6.0, 7.0]
            ]
        );
        assert_eq!(
            all[2].versions,
            BTreeMap::from([("1".into(), 1), ("2".into(), 3)])
        );
    }

    #[test]
    fn a_timed_window_closes_after_its_seconds_with_enough_rows() {
        let spec = WindowSpec {
            rows: 0,
            seconds: 10,
            min_rows: 2,
            slide: None,
        };
        let mut w = Window::default();
        assert!(w.push(&spec, &rec("1", 1_000, &[1.0])).is_empty());
        assert!(w.tick(&spec, 5_000).is_none());
        // Too few rows: carried over, the clock restarts.
        assert!(w.tick(&spec, 11_000).is_none());
        w.push(&spec, &rec("1", 12_000, &[2.0]));
        assert!(w.tick(&spec, 20_000).is_none());
        let c = w.tick(&spec, 21_000).expect("closed");
        assert_eq!(xs(&c), [1.0, 2.0]);
        assert_eq!(w.rows(), 0);
    }
}
