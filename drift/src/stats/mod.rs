//! Two-sample tests and distances for one column, with scipy's and Evidently's exact
//! arithmetic. Owned by the stats helper: see the contract in each function's doc.
//!
//! Every numeric input is a slice **sorted ascending, finite, non-empty** (the monitor drops
//! NaN and ±inf first, as Evidently does, and keeps reference samples sorted). Categorical
//! inputs are **aligned counts**: index i of the reference and the current slice count the
//! same category, categories in ascending key order, the union of both sides' keys.
//!
//! Each function equals its scipy 1.17 / Evidently 0.7.23 counterpart to 1e-9 relative
//! (`drift/tests/stats_conformance.rs` checks it case by case against
//! `tests/fixtures/drift_stats.json`, recorded from scipy and from Evidently's own stattest
//! functions by `tests/fixtures/gen_drift_stats.py`). Nothing panics on valid input; inputs
//! outside the contract (empty slices, counts summing to 0) give NaN where Python raises.
//!
//! Which binning each Evidently score uses (`get_binned_data`'s `feel_zeroes` flag):
//!
//! | Evidently stattest | here                                                              |
//! |--------------------|-------------------------------------------------------------------|
//! | `psi`              | [`psi`] of [`binned_numeric`] / [`binned_categorical`], fill `true` |
//! | `kl_div`           | [`kl_div`] of the binned shares, fill `true`                       |
//! | `jensenshannon`    | [`jensenshannon`] of the binned shares, fill `false`               |
//! | `hellinger`        | [`hellinger_numeric`] / [`hellinger_categorical`] (own binning)    |
//! | `wasserstein`      | [`wasserstein_normed`]                                             |
//! | `ks`               | [`ks_2samp`]`.pvalue`                                              |
//! | `chisquare`, `z`   | [`chisquare`], [`z_test`] (the p-value)                            |

mod binning;
mod categorical;
mod correction;
mod distance;
mod fp;
mod ks;
mod kstwo;

pub use binning::{MAX_DISTINCT_BINS, sturges_edges};
pub use ks::MAX_AUTO_N;
pub use kstwo::kstwo_sf;

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

/// The finite values of `values`, sorted ascending, and how many were dropped (NaN, ±inf) —
/// what Evidently's `column.replace([-np.inf, np.inf], np.nan).dropna()` keeps, in the
/// order these functions need.
pub fn finite_sorted(values: &[f64]) -> (Vec<f64>, usize) {
    let mut kept: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    kept.sort_unstable_by(f64::total_cmp);
    let dropped = values.len() - kept.len();
    (kept, dropped)
}

/// scipy's `ks_2samp(reference, current)` (two-sided, method='auto').
///
/// - `statistic`: `max |F_ref - F_cur|` over the pooled values, each ECDF as
///   `searchsorted(side='right') / n` (ties count fully). O(n1 + n2) on the sorted inputs.
/// - `Exact` when both samples have at most [`MAX_AUTO_N`] (10,000) rows: the statistic is
///   then rounded to `h / lcm(n1, n2)` as scipy does, and the p-value is
///   `_compute_prob_outside_square` (n1 == n2) or `_compute_outer_prob_inside_method`.
/// - `Asymptotic` otherwise — and where scipy's exact computation fails (a probability
///   outside [0, 1] from rounding; scipy warns and keeps the rounded statistic):
///   `kstwo.sf(D, round(n1·n2/(n1+n2)))` ([`kstwo_sf`]), clipped to [0, 1].
///
/// D = 0 (e.g. both samples the same constant) gives p = 1; disjoint samples give D = 1.
/// An empty slice (scipy raises) gives NaN for both.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Ks {
    ks::ks_2samp(reference, current)
}

/// scipy's `wasserstein_distance(reference, current)` (unweighted): the integral of
/// `|F_ref - F_cur|` (scipy's `_cdf_distance(1, ..)`), O(n1 + n2) on the sorted inputs.
/// 0 for identical samples; NaN if a slice is empty (scipy raises).
pub fn wasserstein_distance(reference: &[f64], current: &[f64]) -> f64 {
    distance::wasserstein(reference, current)
}

/// Evidently's normed Wasserstein: `wasserstein_distance / max(std(reference, ddof=0), 0.001)`.
///
/// Evidently's `_wasserstein_distance_norm` (`wasserstein_distance_norm.py`): a constant
/// reference divides by 0.001, not by 0.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    let norm = distance::std_ddof0(reference).max(0.001);
    distance::wasserstein(reference, current) / norm
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
///
/// - More than [`MAX_DISTINCT_BINS`] (20) distinct values in the *reference*: Sturges bins
///   over reference and current pooled ([`sturges_edges`] with `n1 + n2` values), each
///   share `np.histogram(sample, edges)[0] / len(sample)` (bins half-open, the last one
///   closed).
/// - Otherwise every distinct value of the union is a bin (`values`, ascending; Evidently
///   iterates a Python set, which only reorders the same bins), shares `count / len`.
/// - `fill_zeroes`: in each side separately, zero shares become `min_nonzero / 1e6` when
///   the smallest non-zero share is at most 1e-4, else 1e-4 (the shares then no longer sum
///   to 1, exactly as in Evidently).
///
/// Note: pandas integer columns would get numpy's integer rule (width at least 1); these are
/// float samples, as the monitor holds them.
pub fn binned_numeric(reference: &[f64], current: &[f64], fill_zeroes: bool) -> Binned {
    binning::binned_numeric(reference, current, fill_zeroes)
}

/// Evidently's `get_binned_data` for a categorical column, from aligned counts: each
/// category is a bin, shares `count / total` per side, zero fill as in [`binned_numeric`].
/// `edges` is `None` and `values` empty (index i is the caller's key i).
pub fn binned_categorical(reference: &[u64], current: &[u64], fill_zeroes: bool) -> Binned {
    binning::binned_categorical(reference, current, fill_zeroes)
}

/// Population stability index over binned shares (Evidently's `psi`):
/// `Σ (r - c) · ln(r / c)`.
///
/// Evidently's `_psi` bins with `fill_zeroes = true`: `psi(&b.reference, &b.current)` of
/// `binned_numeric(.., true)` / `binned_categorical(.., true)` is its score. Unfilled zeros
/// give +inf (one side 0) or NaN (both 0), as numpy does.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    distance::psi(reference, current)
}

/// `scipy.stats.entropy(reference, current)` (Evidently's `kl_div`): both renormalised to
/// sum 1, then `Σ rel_entr(p, q)` (`p·ln(p/q)`; 0 where `p == 0`; +inf where `q == 0 < p`).
///
/// Evidently's `_kl_div` bins with `fill_zeroes = true`.
pub fn kl_div(reference: &[f64], current: &[f64]) -> f64 {
    distance::kl_div(reference, current)
}

/// `scipy.spatial.distance.jensenshannon(reference, current)` (natural log; Evidently's
/// `jensenshannon`): both renormalised to sum 1, `m = (p + q)/2`,
/// `sqrt((Σ rel_entr(p, m) + Σ rel_entr(q, m)) / 2)`. 0 for equal distributions; at most
/// `sqrt(ln 2)`.
///
/// Evidently's `_jensenshannon` bins with `fill_zeroes = false`.
pub fn jensenshannon(reference: &[f64], current: &[f64]) -> f64 {
    distance::jensenshannon(reference, current)
}

/// Evidently's `hellinger` for a numeric column (`_hellinger_distance`, numeric branch).
///
/// Its own binning, not `get_binned_data`: Sturges edges over the *distinct* values of both
/// samples pooled (`np.histogram_bin_edges(keys, "sturges")`, so the bin count follows the
/// number of distinct values), numpy density histograms of each sample on them,
/// `bc = Σ sqrt(h1·h2) · (last - first) / bins`, distance `sqrt(1 - clip(bc, 0, 1))`.
/// Both samples one and the same constant give 0.
pub fn hellinger_numeric(reference: &[f64], current: &[f64]) -> f64 {
    distance::hellinger_numeric(reference, current)
}

/// Evidently's `hellinger` for a categorical column (aligned counts):
/// `sqrt(1 - clip(Σ sqrt(r_i/n_r · c_i/n_c), 0, 1))` — shares without zero fill.
pub fn hellinger_categorical(reference: &[u64], current: &[u64]) -> f64 {
    distance::hellinger_categorical(reference, current)
}

/// Evidently's `chisquare` (goodness of fit of current counts to reference shares):
/// `(statistic, p-value)`.
///
/// `f_exp = ref_count · (n_cur / n_ref)`, `scipy.stats.chisquare(f_obs=cur_count, f_exp)`:
/// `Σ (obs - exp)² / exp`, p = chi-square survival function with K - 1 degrees of freedom
/// (K = categories present on either side; entries zero on both sides are skipped). Edge
/// cases as scipy's: a category absent from the reference makes the statistic +inf and
/// p = 0; a single category (df = 0) gives p = NaN when the statistic is exactly 0 and p = 0
/// when `n_ref · (n_cur / n_ref)` rounds off `n_cur` (e.g. 7 vs 29 rows: statistic ~4e-31),
/// which Evidently then reports as drift.
pub fn chisquare(reference: &[u64], current: &[u64]) -> (f64, f64) {
    categorical::chisquare(reference, current)
}

/// Evidently's `z` (pooled two-proportion z-test on the first category vs the rest):
/// `(statistic, p-value)`.
///
/// `proportions_diff_z_stat_ind` with every category but the first (lowest key present)
/// coded 1: `z = (p_ref - p_cur) / sqrt(P(1-P)(1/n_ref + 1/n_cur))`, `p_*` the shares of
/// "not the first category"; p = `2·(1 - Φ(|z|))` exactly as Evidently writes it (so p is 0
/// from |z| ≈ 8.3 on). Both sides constant on the same category: Evidently returns p = 1
/// without computing z; here `(0.0, 1.0)`.
pub fn z_test(reference: &[u64], current: &[u64]) -> (f64, f64) {
    categorical::z_test(reference, current)
}

/// Which p-values are significant at `alpha` after Bonferroni's correction:
/// `p < alpha / m`, `m = pvalues.len()` (NaN never is). Empty in, empty out.
pub fn bonferroni(pvalues: &[f64], alpha: f64) -> Vec<bool> {
    correction::bonferroni(pvalues, alpha)
}

/// Which p-values are discoveries at false-discovery rate `q` (Benjamini–Hochberg).
///
/// The step-up procedure (statsmodels' `multipletests(method="fdr_bh")` decisions): with
/// `p_(1) <= ... <= p_(m)`, reject every hypothesis of rank `<= k` for the largest `k` with
/// `p_(k) <= (k/m)·q` — including ranks whose own p exceeds their bound. NaN p-values count
/// in `m`, sort last and are never rejected. Empty in, empty out.
pub fn benjamini_hochberg(pvalues: &[f64], q: f64) -> Vec<bool> {
    correction::benjamini_hochberg(pvalues, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_sorted_drops_and_sorts() {
        let (v, dropped) =
            finite_sorted(&[3.0, f64::NAN, -1.0, f64::INFINITY, 2.0, f64::NEG_INFINITY]);
        assert_eq!(v, vec![-1.0, 2.0, 3.0]);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let ks = ks_2samp(&[], &[1.0]);
        assert!(ks.statistic.is_nan() && ks.pvalue.is_nan());
        assert!(wasserstein_distance(&[], &[1.0]).is_nan());
        let b = binned_categorical(&[0, 0], &[1, 2], true);
        assert!(b.reference.iter().all(|s| s.is_nan()));
        let _ = chisquare(&[0], &[0]);
        let _ = z_test(&[], &[]);
        let _ = hellinger_numeric(&[], &[]);
        let _ = binned_numeric(&[], &[], true);
    }

    #[test]
    fn constants() {
        let ks = ks_2samp(&[5.0; 4], &[5.0; 3]);
        assert_eq!(
            (ks.statistic, ks.pvalue, ks.method),
            (0.0, 1.0, KsMethod::Exact)
        );
        let ks = ks_2samp(&[5.0; 4], &[6.0; 3]);
        assert_eq!(ks.statistic, 1.0);
        assert_eq!(wasserstein_normed(&[5.0; 4], &[6.0; 3]), 1000.0);
        assert_eq!(hellinger_numeric(&[5.0; 4], &[5.0; 3]), 0.0);
        assert_eq!(z_test(&[0, 7], &[0, 9]), (0.0, 1.0));
    }
}
