//! Model quality from predictions joined with their ground truth. Owned by the
//! embedding/performance helper.
//!
//! Every metric equals scikit-learn's (1.7) on the same data, up to rounding:
//!
//! - [`classification`]: `accuracy_score`; `precision_score`, `recall_score`, `f1_score` with
//!   `zero_division=0` — `average="binary", pos_label=1` for two classes, else
//!   `average="macro", labels=list(range(n_classes))`; `roc_auc_score` (see [`roc_auc`]).
//! - [`regression`]: `mean_absolute_error`, `root_mean_squared_error`, `r2_score`.
//!
//! Invalid input is a [`PerformanceError`] from the `try_` functions; the plain functions
//! answer [`Classification::INVALID`] / [`Regression::INVALID`] (NaN metrics) there instead.
//! Empty input is valid: `n = 0`, every metric 0, ROC AUC and R² `None` (scikit-learn has no
//! answer for it).
//!
//! `tests/fixtures/gen_drift_performance.py` calls scikit-learn for the reference values and
//! `drift/tests/performance_conformance.rs` checks them.

/// Classification quality, as scikit-learn computes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// The number of (truth, prediction) pairs.
    pub n: usize,
    /// The share of correct predictions (`accuracy_score`).
    pub accuracy: f64,
    /// `precision_score`: of class 1 for two classes, else the macro average over every class
    /// `0..n_classes` (a class never predicted counts 0).
    pub precision: f64,
    /// `recall_score`: of class 1 for two classes, else the macro average over every class
    /// (a class absent from the truth counts 0).
    pub recall: f64,
    /// `f1_score`: of class 1 for two classes, else the mean of the classes' F1 (a class
    /// absent from both the truth and the predictions counts 0).
    pub f1: f64,
    /// `None` when it is undefined (one class in the truth) or no scores were given.
    pub roc_auc: Option<f64>,
}

impl Classification {
    /// What [`classification`] answers for invalid labels: `n = 0`, NaN metrics, no ROC AUC.
    pub const INVALID: Classification = Classification {
        n: 0,
        accuracy: f64::NAN,
        precision: f64::NAN,
        recall: f64::NAN,
        f1: f64::NAN,
        roc_auc: None,
    };
}

/// Regression quality, as scikit-learn computes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Regression {
    /// The number of (truth, prediction) pairs.
    pub n: usize,
    /// `mean_absolute_error`: the mean of `|truth − predicted|`.
    pub mae: f64,
    /// `root_mean_squared_error`: the square root of the mean of `(truth − predicted)²`.
    pub rmse: f64,
    /// `None` when the truth is constant.
    pub r2: Option<f64>,
}

impl Regression {
    /// What [`regression`] answers for invalid input: `n = 0`, NaN errors, no R².
    pub const INVALID: Regression = Regression {
        n: 0,
        mae: f64::NAN,
        rmse: f64::NAN,
        r2: None,
    };
}

/// Why predictions and truths cannot be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PerformanceError {
    /// `truth` and `predicted` differ in length.
    #[error("{truth} truths but {predicted} predictions")]
    LengthMismatch {
        /// The number of truths.
        truth: usize,
        /// The number of predictions.
        predicted: usize,
    },
    /// A truth or predicted class is not below `n_classes`.
    #[error("class {label} in row {row} is not one of the {n_classes} classes")]
    LabelOutOfRange {
        /// The row.
        row: usize,
        /// The class found there.
        label: u32,
        /// The number of classes.
        n_classes: usize,
    },
    /// The scores are not `rows × n_classes` values.
    #[error("{got} scores, not rows × classes = {expected}")]
    ScoresShape {
        /// `rows × n_classes`.
        expected: usize,
        /// The number of scores given.
        got: usize,
    },
    /// A score is NaN or infinite.
    #[error("the scores of row {row} are not all finite")]
    NonFiniteScore {
        /// The row.
        row: usize,
    },
    /// More than two classes, and a row's scores do not add up to a positive number (they
    /// cannot be normalised to probabilities).
    #[error("the scores of row {row} do not add up to a positive number")]
    ScoreRowSum {
        /// The row.
        row: usize,
    },
    /// A regression truth or prediction is NaN or infinite.
    #[error("row {row} holds a non-finite value")]
    NonFiniteValue {
        /// The row.
        row: usize,
    },
}

/// Metrics of class predictions `predicted` against `truth` (class indices `0..n_classes`);
/// `scores`, when given, is row-major `[n, n_classes]` class probabilities (or scores).
/// Two classes: binary metrics of class 1; more: macro averages, ROC AUC one-vs-rest macro.
///
/// Invalid labels (see [`try_classification`]) give [`Classification::INVALID`]; invalid
/// scores (see [`roc_auc`]) give a `roc_auc` of `None` and the other metrics as usual.
pub fn classification(
    truth: &[u32],
    predicted: &[u32],
    scores: Option<&[f32]>,
    n_classes: usize,
) -> Classification {
    match try_classification(truth, predicted, None, n_classes) {
        Ok(mut c) => {
            c.roc_auc = scores.and_then(|s| roc_auc(truth, s, n_classes).ok().flatten());
            c
        }
        Err(_) => Classification::INVALID,
    }
}

/// [`classification`], or why its input is invalid: `truth` and `predicted` of different
/// lengths, a class `>= n_classes` in either, or (given scores) an error of [`roc_auc`].
///
/// - `n_classes == 2`: scikit-learn's `precision_score`, `recall_score` and `f1_score` with
///   `average="binary", pos_label=1, zero_division=0`: `tp / predicted_1`, `tp / true_1`,
///   `2 tp / (true_1 + predicted_1)`, each 0 where its denominator is 0.
/// - any other `n_classes` (1, or more than 2): `average="macro",
///   labels=list(range(n_classes)), zero_division=0`: the same per class, averaged over all
///   `n_classes` classes. A class absent from both the truth and the predictions has all
///   three 0 and still counts in the averages (it lowers them), as in scikit-learn with those
///   `labels`. With one class every valid row is correct: all three are 1.
/// - `accuracy_score` in all cases; ROC AUC by [`roc_auc`] when scores are given.
/// - No rows: `n = 0`, the four metrics 0, no ROC AUC.
pub fn try_classification(
    truth: &[u32],
    predicted: &[u32],
    scores: Option<&[f32]>,
    n_classes: usize,
) -> Result<Classification, PerformanceError> {
    if truth.len() != predicted.len() {
        return Err(PerformanceError::LengthMismatch {
            truth: truth.len(),
            predicted: predicted.len(),
        });
    }
    check_labels(truth, n_classes)?;
    check_labels(predicted, n_classes)?;
    let roc_auc = match scores {
        Some(s) => roc_auc(truth, s, n_classes)?,
        None => None,
    };
    let n = truth.len();
    if n == 0 {
        return Ok(Classification {
            n,
            accuracy: 0.0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            roc_auc: None,
        });
    }
    // Per class: true positives, predictions of it, truths of it — for the classes up to the
    // largest one seen (those above it count 0 in the averages; `n_classes` may be large).
    let seen = truth
        .iter()
        .chain(predicted)
        .max()
        .map_or(0, |&m| m as usize + 1);
    let width = if n_classes == 2 { 2 } else { seen };
    let mut tp = vec![0u64; width];
    let mut pred = vec![0u64; width];
    let mut true_ = vec![0u64; width];
    let mut correct = 0u64;
    for (&t, &p) in truth.iter().zip(predicted) {
        true_[t as usize] += 1;
        pred[p as usize] += 1;
        if t == p {
            tp[t as usize] += 1;
            correct += 1;
        }
    }
    // 0 where the denominator is 0 (`zero_division=0`); counts below 2^53 are exact f64s.
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let per_class = |c: usize| {
        (
            ratio(tp[c], pred[c]),
            ratio(tp[c], true_[c]),
            ratio(2 * tp[c], true_[c] + pred[c]),
        )
    };
    let (precision, recall, f1) = if n_classes == 2 {
        per_class(1)
    } else {
        let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
        for c in 0..width {
            let (pc, rc, fc) = per_class(c);
            p += pc;
            r += rc;
            f += fc;
        }
        let k = n_classes as f64;
        (p / k, r / k, f / k)
    };
    Ok(Classification {
        n,
        accuracy: correct as f64 / n as f64,
        precision,
        recall,
        f1,
        roc_auc,
    })
}

fn check_labels(labels: &[u32], n_classes: usize) -> Result<(), PerformanceError> {
    match labels.iter().position(|&l| l as usize >= n_classes) {
        Some(row) => Err(PerformanceError::LabelOutOfRange {
            row,
            label: labels[row],
            n_classes,
        }),
        None => Ok(()),
    }
}

/// scikit-learn's `roc_auc_score` of the `[n, n_classes]` row-major `scores` against `truth`
/// (classes `0..n_classes`); `Ok(None)` where it is undefined.
///
/// - `n_classes == 2`: `roc_auc_score(truth, scores[:, 1])` (column 1 as the positive class's
///   score, as is: no normalisation). Tied scores count one half, as scikit-learn's trapezoid
///   over distinct thresholds does (it equals the Mann–Whitney U with midranks over
///   `n_pos · n_neg`, which is what is computed here, exactly in integers). `None` when the
///   truth holds one class only (scikit-learn warns and answers NaN).
/// - `n_classes > 2`: `roc_auc_score(truth, p, multi_class="ovr", average="macro",
///   labels=list(range(n_classes)))` of the row-normalised scores `p = s / Σ_row s` (in f64,
///   the row summed left to right): scikit-learn refuses rows that do not sum to 1, so this
///   also accepts raw scores (not necessarily probabilities). The mean over the classes of
///   the binary AUC of `truth == c` vs `p[:, c]`; `None` when some class is absent from the
///   truth (scikit-learn's average is NaN then). For scores that already sum to 1 in f32,
///   the normalisation can only reorder values within an ulp or two of each other.
/// - `n_classes < 2`, or no rows: `None`.
///
/// Errors: scores not `n × n_classes` values ([`PerformanceError::ScoresShape`]), a
/// non-finite score (scikit-learn rejects them too), a row summing to 0 or less with more
/// than two classes, a class `>= n_classes` in the truth.
pub fn roc_auc(
    truth: &[u32],
    scores: &[f32],
    n_classes: usize,
) -> Result<Option<f64>, PerformanceError> {
    let n = truth.len();
    let expected = n.saturating_mul(n_classes);
    if scores.len() != expected {
        return Err(PerformanceError::ScoresShape {
            expected,
            got: scores.len(),
        });
    }
    check_labels(truth, n_classes)?;
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(PerformanceError::NonFiniteScore { row: i / n_classes });
    }
    if n == 0 || n_classes < 2 {
        return Ok(None);
    }
    if n_classes == 2 {
        let positive: Vec<f64> = scores.chunks_exact(2).map(|r| f64::from(r[1])).collect();
        return Ok(binary_auc(truth.iter().map(|&t| t == 1), &positive));
    }
    let mut probabilities = Vec::with_capacity(scores.len());
    for (row, s) in scores.chunks_exact(n_classes).enumerate() {
        let sum = s.iter().fold(0.0f64, |acc, &v| acc + f64::from(v));
        if sum <= 0.0 || !sum.is_finite() {
            return Err(PerformanceError::ScoreRowSum { row });
        }
        probabilities.extend(s.iter().map(|&v| f64::from(v) / sum));
    }
    let mut total = 0.0;
    let mut column = vec![0.0f64; n];
    for c in 0..n_classes {
        for (v, r) in column.iter_mut().zip(probabilities.chunks_exact(n_classes)) {
            *v = r[c];
        }
        match binary_auc(truth.iter().map(|&t| t as usize == c), &column) {
            Some(auc) => total += auc,
            None => return Ok(None),
        }
    }
    Ok(Some(total / n_classes as f64))
}

/// The area under the ROC curve of `score` for the rows where `positive` is true: the share
/// of (positive, negative) pairs ordered by score, ties counting one half. `None` without a
/// positive or a negative. `score` must not hold NaN (`-0.0` and `0.0` tie).
fn binary_auc(positive: impl Iterator<Item = bool>, score: &[f64]) -> Option<f64> {
    // `+ 0.0` turns -0.0 into 0.0, so that the total order ties them.
    let mut rows: Vec<(f64, bool)> = score.iter().map(|&s| s + 0.0).zip(positive).collect();
    rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let n_pos = rows.iter().filter(|r| r.1).count() as u128;
    let n_neg = rows.len() as u128 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Twice the Mann–Whitney U of the positives: over each group of equal scores,
    // pos · (2 · negatives below + neg).
    let (mut twice_u, mut neg_below) = (0u128, 0u128);
    for group in rows.chunk_by(|a, b| a.0 == b.0) {
        let pos = group.iter().filter(|r| r.1).count() as u128;
        let neg = group.len() as u128 - pos;
        twice_u += pos * (2 * neg_below + neg);
        neg_below += neg;
    }
    Some(twice_u as f64 / (2 * n_pos * n_neg) as f64)
}

/// Metrics of numeric predictions against the truth. Invalid input (see [`try_regression`])
/// gives [`Regression::INVALID`].
pub fn regression(truth: &[f64], predicted: &[f64]) -> Regression {
    try_regression(truth, predicted).unwrap_or(Regression::INVALID)
}

/// [`regression`], or why its input is invalid: lengths that differ, or a NaN or infinite
/// value (scikit-learn rejects those too).
///
/// - `mae`: `mean_absolute_error`, `Σ|t − p| / n`.
/// - `rmse`: `root_mean_squared_error`, `sqrt(Σ(t − p)² / n)`.
/// - `r2`: `r2_score`, `1 − Σ(t − p)² / Σ(t − mean t)²`; `None` when every truth is the same
///   value (also for a single row), or when `Σ(t − mean t)²` underflows to 0. (scikit-learn
///   answers 1.0 there if the predictions are perfect and 0.0 otherwise — or NaN for one row —
///   and for a constant truth whose mean does not round back to it, a meaningless ratio of
///   rounding errors.)
/// - No rows: `n = 0`, `mae` and `rmse` 0, no `r2`.
///
/// Sums are compensated (Neumaier), so they are at least as accurate as NumPy's pairwise sums.
pub fn try_regression(truth: &[f64], predicted: &[f64]) -> Result<Regression, PerformanceError> {
    if truth.len() != predicted.len() {
        return Err(PerformanceError::LengthMismatch {
            truth: truth.len(),
            predicted: predicted.len(),
        });
    }
    if let Some(row) = truth
        .iter()
        .zip(predicted)
        .position(|(t, p)| !t.is_finite() || !p.is_finite())
    {
        return Err(PerformanceError::NonFiniteValue { row });
    }
    let n = truth.len();
    if n == 0 {
        return Ok(Regression {
            n,
            mae: 0.0,
            rmse: 0.0,
            r2: None,
        });
    }
    let k = n as f64;
    let pairs = || truth.iter().zip(predicted);
    let mae = neumaier_sum(pairs().map(|(t, p)| (t - p).abs())) / k;
    let ss_res = neumaier_sum(pairs().map(|(t, p)| (t - p) * (t - p)));
    let rmse = (ss_res / k).sqrt();
    let r2 = if truth.iter().all(|&t| t == truth[0]) {
        None
    } else {
        let mean = neumaier_sum(truth.iter().copied()) / k;
        let ss_tot = neumaier_sum(truth.iter().map(|t| (t - mean) * (t - mean)));
        (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot)
    };
    Ok(Regression { n, mae, rmse, r2 })
}

/// `Σ values` with Neumaier's compensation.
fn neumaier_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        compensation += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + compensation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_metrics_by_hand() {
        // tp = 2, fp = 1, fn = 1, tn = 1.
        let c = classification(&[1, 1, 1, 0, 0], &[1, 1, 0, 1, 0], None, 2);
        assert_eq!(c.n, 5);
        assert_eq!(c.accuracy, 3.0 / 5.0);
        assert_eq!(c.precision, 2.0 / 3.0);
        assert_eq!(c.recall, 2.0 / 3.0);
        assert_eq!(c.f1, 4.0 / 6.0);
        assert_eq!(c.roc_auc, None);
    }

    #[test]
    fn auc_ties_count_half() {
        // Positives at 0.5 and 0.9, negatives at 0.5 and 0.1: the pair (0.5, 0.5) ties.
        let truth = [1, 1, 0, 0];
        let two: Vec<f32> = [0.5f32, 0.9, 0.5, 0.1]
            .iter()
            .flat_map(|&p| [1.0 - p, p])
            .collect();
        assert_eq!(roc_auc(&truth, &two, 2), Ok(Some(3.5 / 4.0)));
        assert_eq!(roc_auc(&[1, 1], &[0.0, 1.0, 0.0, 1.0], 2), Ok(None));
        assert_eq!(roc_auc(&[0, 1], &[0.0, -0.0, 0.0, 0.0], 2), Ok(Some(0.5)));
    }

    #[test]
    fn absent_classes_and_edges() {
        // Class 2 never occurs: it counts 0 in the macro averages.
        let c = classification(&[0, 1, 0, 1], &[0, 1, 0, 1], None, 3);
        assert_eq!(
            (c.precision, c.recall, c.f1),
            (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0)
        );
        let many = classification(&[0, 1], &[0, 1], None, 1 << 40);
        assert_eq!(many.accuracy, 1.0);
        assert_eq!(many.f1, 2.0 / (1u64 << 40) as f64);
        let one = classification(&[0, 0], &[0, 0], Some(&[1.0, 1.0]), 1);
        assert_eq!((one.accuracy, one.precision, one.roc_auc), (1.0, 1.0, None));
        let empty = classification(&[], &[], Some(&[]), 4);
        assert_eq!(
            (empty.n, empty.accuracy, empty.f1, empty.roc_auc),
            (0, 0.0, 0.0, None)
        );
        let bad = classification(&[0, 3], &[0, 1], None, 3);
        assert_eq!(bad.n, 0);
        assert!(bad.accuracy.is_nan());
        assert_eq!(
            try_classification(&[0, 1], &[0], None, 2),
            Err(PerformanceError::LengthMismatch {
                truth: 2,
                predicted: 1
            })
        );
        // Bad scores: no ROC AUC, the rest as usual.
        let c = classification(&[0, 1], &[0, 1], Some(&[0.5, f32::NAN, 0.5, 0.5]), 2);
        assert_eq!((c.accuracy, c.roc_auc), (1.0, None));
        assert_eq!(
            try_classification(&[0, 1], &[0, 1], Some(&[0.5]), 2),
            Err(PerformanceError::ScoresShape {
                expected: 4,
                got: 1
            })
        );
        assert_eq!(
            roc_auc(
                &[0, 1, 2],
                &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                3
            ),
            Err(PerformanceError::ScoreRowSum { row: 1 })
        );
    }

    #[test]
    fn multiclass_auc_normalises_rows() {
        let truth = [0, 1, 2, 2];
        let raw = [
            2.0f32, 1.0, 1.0, 1.0, 3.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0,
        ];
        let scaled: Vec<f32> = raw.iter().map(|v| v * 4.0).collect();
        let a = roc_auc(&truth, &raw, 3).unwrap().unwrap();
        assert_eq!(roc_auc(&truth, &scaled, 3).unwrap(), Some(a));
        assert_eq!(roc_auc(&[0, 1, 1, 0], &raw, 3), Ok(None), "class 2 absent");
    }

    #[test]
    fn regression_by_hand() {
        let r = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert_eq!(r.mae, 2.0 / 3.0);
        assert_eq!(r.rmse, (4.0f64 / 3.0).sqrt());
        assert_eq!(r.r2, Some(1.0 - 4.0 / 2.0));
        assert_eq!(regression(&[0.1; 3], &[0.1; 3]).r2, None);
        assert_eq!(
            regression(&[], &[]),
            Regression {
                n: 0,
                mae: 0.0,
                rmse: 0.0,
                r2: None
            }
        );
        assert_eq!(regression(&[1.0], &[f64::NAN]).n, 0);
        assert_eq!(
            try_regression(&[1.0, f64::INFINITY], &[1.0, 2.0]),
            Err(PerformanceError::NonFiniteValue { row: 1 })
        );
        assert_eq!(neumaier_sum([1e100, 1.0, -1e100].into_iter()), 1.0);
    }
}
