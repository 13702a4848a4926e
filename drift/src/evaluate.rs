//! One window against the reference: per column Evidently's default test (or the configured
//! one), its verdict, the dataset verdict with the optional multiple-testing correction, and
//! embedding drift.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::embedding;
use crate::record::Values;
use crate::reference::{RefColumn, RefEmbedding, Reference, category_counts, finite_sorted};
use crate::spec::{ColumnSpec, Correction, EmbeddingMethod, EmbeddingSpec, MonitorSpec, TestKind};
use crate::stats;
use crate::window::Current;

/// Reference rows up to which Evidently picks the small-sample tests (KS, chi-square, z).
pub const SMALL_REFERENCE_ROWS: usize = 1000;

/// The evaluation of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The window's number, counting from 1 since the monitor was created.
    pub window: u64,
    pub rows: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub versions: BTreeMap<String, usize>,
    pub columns: Vec<ColumnReport>,
    pub embeddings: Vec<EmbeddingReport>,
    pub dataset: DatasetVerdict,
    /// The feedback's truth against the reference's `target` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_drift: Option<ColumnReport>,
    /// Dataset drift or any embedding drift.
    pub drift_detected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnReport {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    pub test: TestKind,
    /// KS's D, chi-square's statistic, z, or the distance.
    pub statistic: f64,
    /// The p-value of the p-value tests.
    pub p_value: Option<f64>,
    /// What the p-value (below it) or the distance (at or above it) is compared with,
    /// after the correction.
    pub threshold: f64,
    pub drifted: bool,
    pub reference: Summary,
    pub current: Summary,
    /// Reference-vs-current shares, ready to plot.
    pub histogram: Histogram,
}

impl ColumnReport {
    /// What is compared with the threshold: the p-value, or the distance.
    pub fn score(&self) -> f64 {
        self.p_value.unwrap_or(self.statistic)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values used (finite numbers, non-empty categories).
    pub count: usize,
    /// NaN, ±inf or empty values left out.
    pub missing: usize,
    pub unique: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Minimum, 25th, 50th, 75th percentile, maximum (numpy's linear interpolation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<[f64; 5]>,
    /// The most frequent category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<String>,
}

/// Shares per bin of the reference and the current window: equal-width bins (`edges`,
/// Sturges' rule over both samples) or one bin per value (`bins`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<String>>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingReport {
    pub name: String,
    pub method: EmbeddingMethod,
    /// MMD² or the distance of the mean embeddings.
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    /// Rows each side of the test used.
    pub reference_rows: usize,
    pub current_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetVerdict {
    pub columns: usize,
    pub drifted: usize,
    pub share: f64,
    /// Drift when `share >= drift_share`.
    pub drift_share: f64,
    pub correction: Correction,
    pub detected: bool,
}

/// Compares a window with the reference. Columns absent from either side, or with no
/// usable value in the window, are left out.
pub fn evaluate(spec: &MonitorSpec, reference: &Reference, cur: &Current, window: u64) -> Report {
    let mut columns = Vec::new();
    for (name, values) in &cur.columns {
        let cs = spec.column(name);
        if cs.ignore {
            continue;
        }
        if let Some(r) = reference.columns.get(name)
            && let Some(rep) = column(name, &cs, r, values)
        {
            columns.push(rep);
        }
    }
    correct(spec, &mut columns);
    let drifted = columns.iter().filter(|c| c.drifted).count();
    let share = if columns.is_empty() {
        0.0
    } else {
        drifted as f64 / columns.len() as f64
    };
    let dataset = DatasetVerdict {
        columns: columns.len(),
        drifted,
        share,
        drift_share: spec.drift_share,
        correction: spec.correction,
        detected: !columns.is_empty() && share >= spec.drift_share,
    };
    let embeddings: Vec<EmbeddingReport> = cur
        .embeddings
        .iter()
        .filter_map(|(name, (dim, values))| {
            let r = reference.embeddings.get(name)?;
            (r.dim == *dim).then(|| embedding_drift(&spec.embedding, name, r, values))?
        })
        .collect();
    let drift_detected = dataset.detected || embeddings.iter().any(|e| e.drifted);
    Report {
        window,
        rows: cur.rows,
        start_ms: cur.start_ms,
        end_ms: cur.end_ms,
        versions: cur.versions.clone(),
        columns,
        embeddings,
        dataset,
        label_drift: None,
        drift_detected,
    }
}

/// One column's test, or `None` when the window has no usable value for it.
pub fn column(
    name: &str,
    cs: &ColumnSpec,
    reference: &RefColumn,
    values: &Values,
) -> Option<ColumnReport> {
    match (reference, values) {
        (RefColumn::Numeric { sorted, missing }, Values::Numbers(v)) => {
            let (cur, cur_missing) = finite_sorted(v.iter().copied());
            if cur.is_empty() || sorted.is_empty() {
                return None;
            }
            Some(numeric(name, cs, sorted, *missing, &cur, cur_missing))
        }
        (RefColumn::Categorical { counts, missing }, Values::Categories(v)) => {
            let (cur, cur_missing) = category_counts(v.iter().map(String::as_str));
            if cur.is_empty() || counts.is_empty() {
                return None;
            }
            Some(categorical(name, cs, counts, *missing, &cur, cur_missing))
        }
        // A numeric window against a categorical reference (or the reverse): compare the
        // values as categories, by their text.
        (RefColumn::Categorical { counts, missing }, Values::Numbers(v)) => {
            let text: Vec<String> = v
                .iter()
                .filter(|x| x.is_finite())
                .map(f64::to_string)
                .collect();
            let (cur, _) = category_counts(text.iter().map(String::as_str));
            let cur_missing = v.len() - text.len();
            (!cur.is_empty()).then(|| categorical(name, cs, counts, *missing, &cur, cur_missing))
        }
        (RefColumn::Numeric { .. }, Values::Categories(_)) => None,
    }
}

fn numeric(
    name: &str,
    cs: &ColumnSpec,
    r: &[f64],
    r_missing: usize,
    c: &[f64],
    c_missing: usize,
) -> ColumnReport {
    let (values, rc, cc) = aligned_values(r, c);
    if cs.categorical {
        let bins: Vec<String> = values.iter().map(f64::to_string).collect();
        let mut rep = categorical_test(name, cs, r.len(), &bins, &rc, &cc);
        rep.reference = numeric_summary(r, r_missing, nonzero(&rc));
        rep.current = numeric_summary(c, c_missing, nonzero(&cc));
        return rep;
    }
    let n_values = values.len();
    let test = cs.test.unwrap_or(if r.len() <= SMALL_REFERENCE_ROWS {
        match n_values {
            0..=2 => TestKind::Z,
            3..=5 => TestKind::Chisquare,
            _ => TestKind::Ks,
        }
    } else if n_values <= 5 {
        TestKind::Jensenshannon
    } else {
        TestKind::Wasserstein
    });
    let (statistic, p_value) = match test {
        TestKind::Ks => {
            let ks = stats::ks_2samp(r, c);
            (ks.statistic, Some(ks.pvalue))
        }
        TestKind::Wasserstein => (stats::wasserstein_normed(r, c), None),
        TestKind::Psi => {
            let b = stats::binned_numeric(r, c, true);
            (stats::psi(&b.reference, &b.current), None)
        }
        TestKind::KlDiv => {
            let b = stats::binned_numeric(r, c, true);
            (stats::kl_div(&b.reference, &b.current), None)
        }
        TestKind::Jensenshannon => {
            let b = stats::binned_numeric(r, c, false);
            (stats::jensenshannon(&b.reference, &b.current), None)
        }
        TestKind::Hellinger => (stats::hellinger_numeric(r, c), None),
        TestKind::Chisquare => {
            let (s, p) = stats::chisquare(&rc, &cc);
            (s, Some(p))
        }
        TestKind::Z => {
            let (s, p) = stats::z_test(&rc, &cc);
            (s, Some(p))
        }
    };
    let threshold = cs.threshold.unwrap_or(test.default_threshold());
    let b = stats::binned_numeric(r, c, false);
    let histogram = Histogram {
        bins: b
            .edges
            .is_none()
            .then(|| b.values.iter().map(f64::to_string).collect()),
        edges: b.edges,
        reference: b.reference,
        current: b.current,
    };
    ColumnReport {
        name: name.to_owned(),
        kind: "numeric".into(),
        test,
        statistic,
        p_value,
        threshold,
        drifted: verdict(test, statistic, p_value, threshold),
        reference: numeric_summary(r, r_missing, nonzero(&rc)),
        current: numeric_summary(c, c_missing, nonzero(&cc)),
        histogram,
    }
}

fn categorical(
    name: &str,
    cs: &ColumnSpec,
    r: &BTreeMap<String, u64>,
    r_missing: usize,
    c: &BTreeMap<String, u64>,
    c_missing: usize,
) -> ColumnReport {
    let mut bins: Vec<&String> = r.keys().chain(c.keys()).collect();
    bins.sort();
    bins.dedup();
    let rc: Vec<u64> = bins
        .iter()
        .map(|k| r.get(*k).copied().unwrap_or(0))
        .collect();
    let cc: Vec<u64> = bins
        .iter()
        .map(|k| c.get(*k).copied().unwrap_or(0))
        .collect();
    let bins: Vec<String> = bins.into_iter().cloned().collect();
    let r_rows = rc.iter().sum::<u64>() as usize;
    let mut rep = categorical_test(name, cs, r_rows, &bins, &rc, &cc);
    rep.reference = categorical_summary(r, r_missing);
    rep.current = categorical_summary(c, c_missing);
    rep
}

/// A categorical test over aligned counts (ascending category order).
fn categorical_test(
    name: &str,
    cs: &ColumnSpec,
    r_rows: usize,
    bins: &[String],
    rc: &[u64],
    cc: &[u64],
) -> ColumnReport {
    let test = match cs.test {
        // KS and Wasserstein need numbers: a categorical column gets the default instead
        // (the spec refuses the combination where it can see it).
        Some(t) if !t.numeric_only() => t,
        _ if r_rows <= SMALL_REFERENCE_ROWS && bins.len() <= 2 => TestKind::Z,
        _ if r_rows <= SMALL_REFERENCE_ROWS => TestKind::Chisquare,
        _ => TestKind::Jensenshannon,
    };
    let binned = |fill| stats::binned_categorical(rc, cc, fill);
    let (statistic, p_value) = match test {
        TestKind::Chisquare => {
            let (s, p) = stats::chisquare(rc, cc);
            (s, Some(p))
        }
        TestKind::Z => {
            let (s, p) = stats::z_test(rc, cc);
            (s, Some(p))
        }
        TestKind::Psi => {
            let b = binned(true);
            (stats::psi(&b.reference, &b.current), None)
        }
        TestKind::KlDiv => {
            let b = binned(true);
            (stats::kl_div(&b.reference, &b.current), None)
        }
        TestKind::Hellinger => (stats::hellinger_categorical(rc, cc), None),
        _ => {
            let b = binned(false);
            (stats::jensenshannon(&b.reference, &b.current), None)
        }
    };
    let threshold = cs.threshold.unwrap_or(test.default_threshold());
    let b = binned(false);
    ColumnReport {
        name: name.to_owned(),
        kind: "categorical".into(),
        test,
        statistic,
        p_value,
        threshold,
        drifted: verdict(test, statistic, p_value, threshold),
        reference: Summary::default(),
        current: Summary::default(),
        histogram: Histogram {
            edges: None,
            bins: Some(bins.to_vec()),
            reference: b.reference,
            current: b.current,
        },
    }
}

/// Evidently's verdicts: KS drifts at `p <= threshold`, the other tests at `p < threshold`,
/// distances at `distance >= threshold`.
fn verdict(test: TestKind, statistic: f64, p: Option<f64>, threshold: f64) -> bool {
    match (test, p) {
        (TestKind::Ks, Some(p)) => p <= threshold,
        (_, Some(p)) => p < threshold,
        (_, None) => statistic >= threshold,
    }
}

/// The distinct values of two sorted samples and each side's count of them.
fn aligned_values(r: &[f64], c: &[f64]) -> (Vec<f64>, Vec<u64>, Vec<u64>) {
    let (mut values, mut rc, mut cc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < r.len() || j < c.len() {
        let v = match (r.get(i), c.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => unreachable!("the loop condition"),
        };
        let i0 = i;
        while i < r.len() && r[i] == v {
            i += 1;
        }
        let j0 = j;
        while j < c.len() && c[j] == v {
            j += 1;
        }
        values.push(v);
        rc.push((i - i0) as u64);
        cc.push((j - j0) as u64);
    }
    (values, rc, cc)
}

/// Applies the correction to the p-value tests (distances keep their own thresholds).
fn correct(spec: &MonitorSpec, columns: &mut [ColumnReport]) {
    let idx: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].p_value.is_some())
        .collect();
    if idx.is_empty() {
        return;
    }
    let p: Vec<f64> = idx
        .iter()
        .map(|&i| columns[i].p_value.unwrap_or(1.0))
        .collect();
    let rejected = match spec.correction {
        Correction::None => return,
        Correction::Bonferroni => stats::bonferroni(&p, spec.alpha),
        Correction::BenjaminiHochberg => stats::benjamini_hochberg(&p, spec.alpha),
    };
    let threshold = match spec.correction {
        Correction::Bonferroni => spec.alpha / idx.len() as f64,
        _ => spec.alpha,
    };
    for (k, &i) in idx.iter().enumerate() {
        columns[i].drifted = rejected[k];
        columns[i].threshold = threshold;
    }
}

fn nonzero(counts: &[u64]) -> usize {
    counts.iter().filter(|&&k| k > 0).count()
}

/// Distinct values of a sorted sample.
pub(crate) fn distinct(sorted: &[f64]) -> usize {
    sorted.chunk_by(|a, b| a == b).count()
}

pub(crate) fn numeric_summary(sorted: &[f64], missing: usize, unique: usize) -> Summary {
    let n = sorted.len();
    if n == 0 {
        return Summary {
            missing,
            ..Summary::default()
        };
    }
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    let q = |p: f64| {
        let h = (n - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
    };
    Summary {
        count: n,
        missing,
        unique,
        mean: Some(mean),
        std: Some(var.sqrt()),
        quantiles: Some([sorted[0], q(0.25), q(0.5), q(0.75), sorted[n - 1]]),
        top: None,
    }
}

pub(crate) fn categorical_summary(counts: &BTreeMap<String, u64>, missing: usize) -> Summary {
    Summary {
        count: counts.values().sum::<u64>() as usize,
        missing,
        unique: counts.len(),
        // The most frequent; ties go to the first in order.
        top: counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, _)| k.clone()),
        ..Summary::default()
    }
}

/// Evenly spaced rows (at most `max`) of a row-major sample, so the quadratic MMD stays
/// bounded and the choice is deterministic.
fn spaced_rows(values: &[f32], dim: usize, max: usize) -> Vec<f32> {
    let n = values.len() / dim;
    if n <= max {
        return values.to_vec();
    }
    (0..max)
        .flat_map(|k| {
            let i = k * n / max;
            values[i * dim..(i + 1) * dim].iter().copied()
        })
        .collect()
}

fn embedding_drift(
    spec: &EmbeddingSpec,
    name: &str,
    r: &RefEmbedding,
    cur: &[f32],
) -> Option<EmbeddingReport> {
    let dim = r.dim;
    let rv = spaced_rows(&r.values, dim, spec.max_rows);
    let cv = spaced_rows(cur, dim, spec.max_rows);
    let (nr, nc) = (rv.len() / dim, cv.len() / dim);
    if nr < 2 || nc < 2 {
        return None;
    }
    let threshold = spec.threshold();
    let (statistic, p_value, drifted) = match spec.method {
        EmbeddingMethod::Mmd => {
            let m = embedding::mmd_test(&rv, &cv, dim, spec.permutations, spec.seed);
            (m.mmd2, Some(m.pvalue), m.pvalue < threshold)
        }
        EmbeddingMethod::Distance => {
            let d = embedding::mean_distance(&rv, &cv, dim);
            (d, None, d > threshold)
        }
    };
    Some(EmbeddingReport {
        name: name.to_owned(),
        method: spec.method,
        statistic,
        p_value,
        threshold,
        drifted,
        reference_rows: nr,
        current_rows: nc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_values_count_each_distinct_value_per_side() {
        let (v, r, c) = aligned_values(&[1.0, 1.0, 2.0, 5.0], &[0.0, 2.0, 2.0, 7.0]);
        assert_eq!(v, [0.0, 1.0, 2.0, 5.0, 7.0]);
        assert_eq!(r, [0, 2, 1, 1, 0]);
        assert_eq!(c, [1, 0, 2, 0, 1]);
    }

    #[test]
    fn summaries_match_numpy() {
        // numpy: np.percentile([1, 2, 3, 4, 10], [0, 25, 50, 75, 100]) = [1, 2, 3, 4, 10];
        // np.std(...) = 3.1622776601683795.
        let s = numeric_summary(&[1.0, 2.0, 3.0, 4.0, 10.0], 2, 5);
        assert_eq!(s.quantiles, Some([1.0, 2.0, 3.0, 4.0, 10.0]));
        assert_eq!(s.mean, Some(4.0));
        assert!((s.std.unwrap() - 3.1622776601683795).abs() < 1e-15);
        // np.percentile([1, 2, 3, 4], 25) = 1.75
        assert_eq!(
            numeric_summary(&[1.0, 2.0, 3.0, 4.0], 0, 4)
                .quantiles
                .unwrap()[1],
            1.75
        );
    }

    #[test]
    fn evenly_spaced_rows_bound_the_sample() {
        let v: Vec<f32> = (0..20).map(|x| x as f32).collect();
        assert_eq!(
            spaced_rows(&v, 2, 4),
            [0.0, 1.0, 4.0, 5.0, 10.0, 11.0, 14.0, 15.0]
        );
        assert_eq!(spaced_rows(&v, 2, 10), v);
    }
}
