//! Two-sample tests and distances for one column, with scipy's and Evidently's exact
//! arithmetic. Owned by the stats helper: see the contract in each function's doc.
//!
//! Every numeric input is a slice **sorted ascending, finite, non-empty** (the monitor drops
//! NaN and ±inf first, as Evidently does, and keeps reference samples sorted). Categorical
//! inputs are **aligned counts**: index i of the reference and the current slice count the
//! same category, categories in ascending key order, the union of both sides' keys.

/// Which p-value `ks_2samp` computed (scipy's `method='auto'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    Exact,
    Asymptotic,
}

/// A two-sample Kolmogorov–Smirnov result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ks {
    pub statistic: f64,
    pub pvalue: f64,
    pub method: KsMethod,
}

/// scipy's `ks_2samp(reference, current)` (two-sided, method='auto').
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Ks {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// scipy's `wasserstein_distance(reference, current)` (unweighted).
pub fn wasserstein_distance(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Evidently's normed Wasserstein: `wasserstein_distance / max(std(reference, ddof=0), 0.001)`.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Shares of the reference and the current sample per bin, as Evidently's
/// `get_binned_data` makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// Bin edges (numpy's `histogram_bin_edges(concat, bins="sturges")`) when the values
    /// were binned; `None` when each distinct value is its own bin.
    pub edges: Option<Vec<f64>>,
    /// Distinct values when each is its own bin (ascending); empty when `edges` is `Some`.
    pub values: Vec<f64>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Evidently's `get_binned_data` for a numeric column (`feel_zeroes` = `fill_zeroes`).
pub fn binned_numeric(reference: &[f64], current: &[f64], fill_zeroes: bool) -> Binned {
    let _ = (reference, current, fill_zeroes);
    unimplemented!("stats helper")
}

/// Evidently's `get_binned_data` for a categorical column, from aligned counts.
pub fn binned_categorical(reference: &[u64], current: &[u64], fill_zeroes: bool) -> Binned {
    let _ = (reference, current, fill_zeroes);
    unimplemented!("stats helper")
}

/// Population stability index over binned shares (Evidently's `psi`).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// `scipy.stats.entropy(reference, current)` (Evidently's `kl_div`).
pub fn kl_div(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// `scipy.spatial.distance.jensenshannon(reference, current)` (natural log; Evidently's
/// `jensenshannon`).
pub fn jensenshannon(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Evidently's `hellinger` for a numeric column.
pub fn hellinger_numeric(reference: &[f64], current: &[f64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Evidently's `hellinger` for a categorical column (aligned counts).
pub fn hellinger_categorical(reference: &[u64], current: &[u64]) -> f64 {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Evidently's `chisquare` (goodness of fit of current counts to reference shares):
/// `(statistic, p-value)`.
pub fn chisquare(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Evidently's `z` (pooled two-proportion z-test on the first category vs the rest):
/// `(statistic, p-value)`.
pub fn z_test(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let _ = (reference, current);
    unimplemented!("stats helper")
}

/// Which p-values are significant at `alpha` after Bonferroni's correction.
pub fn bonferroni(pvalues: &[f64], alpha: f64) -> Vec<bool> {
    let _ = (pvalues, alpha);
    unimplemented!("stats helper")
}

/// Which p-values are discoveries at false-discovery rate `q` (Benjamini–Hochberg).
pub fn benjamini_hochberg(pvalues: &[f64], q: f64) -> Vec<bool> {
    let _ = (pvalues, q);
    unimplemented!("stats helper")
}
