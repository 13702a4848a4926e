//! A model's monitor, as configured: sampling, windows, reference capture, per-column tests
//! and thresholds, the dataset verdict, embeddings and performance. Strict serde (unknown
//! keys are refused, so a typo is an error and not a silently ignored setting); every key
//! has a default, so `{}` is a working monitor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The most rows a window may hold.
pub const MAX_WINDOW_ROWS: usize = 1_000_000;
/// The most values a reference keeps per column: every one, sorted (no sketch), so the
/// tests run on the real values exactly as scipy would; a larger upload is refused with a
/// message to subsample it.
pub const MAX_REFERENCE_ROWS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSpec {
    /// Share of the model's requests copied to the monitor, in (0, 1]. Sampling is
    /// systematic (every 1/rate-th request), so it is deterministic and needs no RNG.
    pub sample_rate: f64,
    pub window: WindowSpec,
    /// Rows captured from live traffic as the reference while none is set; 0 = wait for an
    /// uploaded reference.
    pub capture_reference: usize,
    /// Capture the reference from this version's traffic only (and, once set, compare the
    /// other versions' traffic with it). `None`: every version's.
    pub reference_version: Option<String>,
    /// Column names of the features of a 2-D input or output, by tensor name:
    /// `{"float_input": ["sepal_length", ...]}`. Default: `name[i]`.
    pub names: BTreeMap<String, Vec<String>>,
    /// Tensors monitored as embeddings (one vector per row) instead of per-feature columns.
    /// Default: the outputs of models that take text (sentence encoders).
    pub embeddings: Option<Vec<String>>,
    /// Per-column settings, by column name.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Multiple-testing correction of the p-value tests for the dataset verdict.
    pub correction: Correction,
    /// The false-discovery rate (Benjamini–Hochberg) or family-wise level (Bonferroni) of
    /// the correction.
    pub alpha: f64,
    /// Dataset drift when the share of drifted columns reaches this (Evidently's default).
    pub drift_share: f64,
    pub embedding: EmbeddingSpec,
    pub performance: PerformanceSpec,
    /// The reference column holding the true labels or values: label drift compares the
    /// feedback's truth with it.
    pub target: Option<String>,
    /// Evaluated windows kept (API and restarts).
    pub history: usize,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        MonitorSpec {
            sample_rate: 1.0,
            window: WindowSpec::default(),
            capture_reference: 0,
            reference_version: None,
            names: BTreeMap::new(),
            embeddings: None,
            columns: BTreeMap::new(),
            correction: Correction::None,
            alpha: 0.05,
            drift_share: 0.5,
            embedding: EmbeddingSpec::default(),
            performance: PerformanceSpec::default(),
            target: None,
            history: 20,
        }
    }
}

/// When a window is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSpec {
    /// Rows per window (tumbling), or rows kept (sliding). 0: no count limit (then
    /// `seconds` must be set).
    pub rows: usize,
    /// A tumbling window also closes this many seconds after its first row. 0: off.
    pub seconds: u64,
    /// Sliding windows: evaluate the last `rows` rows every `slide` new rows. `None`:
    /// tumbling (each row in one window).
    pub slide: Option<usize>,
    /// A window closed by time with fewer rows than this is not evaluated (its rows carry
    /// over to the next).
    pub min_rows: usize,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            rows: 1000,
            seconds: 0,
            slide: None,
            min_rows: 30,
        }
    }
}

/// A column's own settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnSpec {
    /// The test; default: Evidently's choice from the reference size and unique values.
    pub test: Option<TestKind>,
    /// Drift threshold: a p-value below it (tests) or a distance at or above it.
    /// Default: the test's own.
    pub threshold: Option<f64>,
    /// Treat the column as categorical (each value a category) even though it is numeric.
    pub categorical: bool,
    /// Leave the column out of the monitor.
    pub ignore: bool,
}

/// Multiple-testing correction for the dataset verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// Each column against its own threshold (Evidently).
    #[default]
    None,
    /// p < alpha / m over the m p-value tests.
    Bonferroni,
    /// Benjamini–Hochberg at false-discovery rate alpha.
    BenjaminiHochberg,
}

/// The per-column tests and distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// Two-sample Kolmogorov–Smirnov (numeric): p-value.
    Ks,
    /// Wasserstein-1 divided by the reference's standard deviation (numeric): distance.
    Wasserstein,
    /// Population stability index over Evidently's bins: distance.
    Psi,
    /// Kullback–Leibler divergence over Evidently's bins: distance.
    KlDiv,
    /// Jensen–Shannon distance over Evidently's bins: distance.
    Jensenshannon,
    /// Hellinger distance: distance.
    Hellinger,
    /// Chi-square goodness of fit of the current counts to the reference shares: p-value.
    Chisquare,
    /// Two-proportion z-test, first category against the rest: p-value.
    Z,
}

impl TestKind {
    /// Evidently's default threshold of the test.
    pub fn default_threshold(self) -> f64 {
        match self {
            TestKind::Ks | TestKind::Chisquare | TestKind::Z => 0.05,
            _ => 0.1,
        }
    }

    /// True for tests whose score is a p-value (drift when it is small).
    pub fn is_p_value(self) -> bool {
        matches!(self, TestKind::Ks | TestKind::Chisquare | TestKind::Z)
    }

    /// True when the test works on numeric values only.
    pub fn numeric_only(self) -> bool {
        matches!(self, TestKind::Ks | TestKind::Wasserstein)
    }

    pub fn name(self) -> &'static str {
        match self {
            TestKind::Ks => "ks",
            TestKind::Wasserstein => "wasserstein",
            TestKind::Psi => "psi",
            TestKind::KlDiv => "kl_div",
            TestKind::Jensenshannon => "jensenshannon",
            TestKind::Hellinger => "hellinger",
            TestKind::Chisquare => "chisquare",
            TestKind::Z => "z",
        }
    }
}

/// Embedding drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSpec {
    pub method: EmbeddingMethod,
    /// Permutations of the MMD p-value.
    pub permutations: usize,
    /// Rows per side the test uses (evenly spaced over the window and the reference): the
    /// cost is quadratic in it.
    pub max_rows: usize,
    /// Drift when the MMD p-value is below it (`mmd`, default 0.05), or the distance
    /// exceeds it (`distance`, default Evidently's 0.2; Evidently compares with `>`).
    pub threshold: Option<f64>,
    /// Seed of the permutations: the same traffic gives the same p-value.
    pub seed: u64,
}

impl Default for EmbeddingSpec {
    fn default() -> Self {
        EmbeddingSpec {
            method: EmbeddingMethod::Mmd,
            permutations: 100,
            max_rows: 500,
            threshold: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingMethod {
    /// Maximum mean discrepancy, Gaussian kernel, permutation p-value (Alibi Detect's).
    #[default]
    Mmd,
    /// Euclidean distance between the mean embeddings (Evidently's `distance`).
    Distance,
}

impl EmbeddingSpec {
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(match self.method {
            EmbeddingMethod::Mmd => 0.05,
            EmbeddingMethod::Distance => 0.2,
        })
    }
}

/// Performance tracking from ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceSpec {
    /// What the model predicts. `auto`: a classifier when it has an integer `[batch]` output
    /// (labels) or a float `[batch, k]` output named like `prob*` (argmax); a regressor
    /// when its first output is `[batch]` or `[batch, 1]` float.
    pub task: Task,
    /// The output holding the prediction. Default: chosen as `task` says.
    pub output: Option<String>,
    /// Labelled rows kept per version for the metrics (a sliding window).
    pub window: usize,
    /// Predictions kept waiting for their labels.
    pub capacity: usize,
    /// Seconds a prediction waits for its label.
    pub ttl_secs: u64,
}

impl Default for PerformanceSpec {
    fn default() -> Self {
        PerformanceSpec {
            task: Task::Auto,
            output: None,
            window: 10_000,
            capacity: 100_000,
            ttl_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Auto,
    Classification,
    Regression,
    /// No performance tracking.
    None,
}

impl MonitorSpec {
    /// Parses a spec from JSON, with a message that says what to fix.
    pub fn from_json(text: &[u8]) -> Result<MonitorSpec> {
        let spec: MonitorSpec = serde_json::from_slice(text)
            .map_err(|e| Error::Invalid(format!("monitor spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The checks serde cannot make.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return bad(format!(
                "sample_rate must be in (0, 1], got {}",
                self.sample_rate
            ));
        }
        let w = &self.window;
        if w.rows == 0 && w.seconds == 0 {
            return bad("window: set rows, seconds, or both".into());
        }
        if w.rows > MAX_WINDOW_ROWS {
            return bad(format!(
                "window.rows is {}; at most {MAX_WINDOW_ROWS}",
                w.rows
            ));
        }
        if let Some(step) = w.slide {
            if w.rows == 0 || step == 0 || step > w.rows {
                return bad("window.slide needs window.rows and 1 <= slide <= rows".into());
            }
            if w.seconds != 0 {
                return bad("a sliding window slides by rows: leave window.seconds at 0".into());
            }
        }
        if self.capture_reference > MAX_REFERENCE_ROWS {
            return bad(format!(
                "capture_reference is {}; at most {MAX_REFERENCE_ROWS}",
                self.capture_reference
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad(format!("alpha must be in (0, 1), got {}", self.alpha));
        }
        if !(self.drift_share > 0.0 && self.drift_share <= 1.0) {
            return bad(format!(
                "drift_share must be in (0, 1], got {}",
                self.drift_share
            ));
        }
        for (name, c) in &self.columns {
            if let Some(t) = c.threshold
                && !(t.is_finite() && t > 0.0)
            {
                return bad(format!(
                    "columns.{name}.threshold must be a positive number, got {t}"
                ));
            }
            if c.categorical && c.test.is_some_and(TestKind::numeric_only) {
                return bad(format!(
                    "columns.{name}: test '{}' needs numeric values, but the column is categorical",
                    c.test.map_or("", TestKind::name)
                ));
            }
        }
        let e = &self.embedding;
        if e.method == EmbeddingMethod::Mmd && !(1..=10_000).contains(&e.permutations) {
            return bad(format!(
                "embedding.permutations must be in 1..=10000, got {}",
                e.permutations
            ));
        }
        if !(2..=10_000).contains(&e.max_rows) {
            return bad(format!(
                "embedding.max_rows must be in 2..=10000, got {}",
                e.max_rows
            ));
        }
        let p = &self.performance;
        if p.window == 0 || p.capacity == 0 || p.ttl_secs == 0 {
            return bad("performance.window, capacity and ttl_secs must be positive".into());
        }
        if self.history == 0 {
            return bad("history must be at least 1".into());
        }
        Ok(())
    }

    /// The column's settings (defaults when it has none).
    pub fn column(&self, name: &str) -> ColumnSpec {
        self.columns.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_is_the_default() {
        assert_eq!(
            MonitorSpec::from_json(b"{}").unwrap(),
            MonitorSpec::default()
        );
    }

    #[test]
    fn typos_and_bad_values_say_what_to_fix() {
        let err = |j: &str| {
            MonitorSpec::from_json(j.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"sample_rat": 1}"#).contains("unknown field `sample_rat`"));
        assert!(err(r#"{"sample_rate": 0}"#).contains("sample_rate must be in (0, 1]"));
        assert!(err(r#"{"window": {"rows": 0}}"#).contains("set rows, seconds"));
        assert!(err(r#"{"window": {"rows": 10, "slide": 11}}"#).contains("slide <= rows"));
        assert!(
            err(r#"{"columns": {"a": {"test": "ks", "categorical": true}}}"#)
                .contains("needs numeric values")
        );
        assert!(err(r#"{"columns": {"a": {"test": "tvd"}}}"#).contains("unknown variant"));
        assert!(err(r#"{"correction": "holm"}"#).contains("unknown variant"));
    }
}
