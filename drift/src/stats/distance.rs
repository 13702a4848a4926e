//! Distances between two samples or two binned distributions: scipy's
//! `wasserstein_distance`, `entropy`, `jensenshannon`, and Evidently's normed Wasserstein,
//! PSI and Hellinger.

use super::binning::{distinct_union_count, histogram_counts, pooled_range, sturges_edges};

/// A compensated (Neumaier) sum: the order-independent answer numpy's pairwise sum
/// approximates, so the result does not depend on the order of the terms.
pub(super) fn sum(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for x in xs {
        let t = s + x;
        c += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    // s is the plain running sum: an infinite or NaN term leaves c NaN, s the IEEE answer.
    if s.is_finite() { s + c } else { s }
}

/// `_cdf_distance(1, u, v)` on sorted samples: `Σ |U(x_k) - V(x_k)| · (x_{k+1} - x_k)` over
/// the pooled sorted values, the CDFs as `count / n` (scipy's arithmetic). O(n1 + n2).
pub(super) fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN; // scipy raises ("Distribution can't be empty")
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut s, mut c) = (0.0f64, 0.0f64);
    let next = |i: usize, j: usize| match (a.get(i), b.get(j)) {
        (Some(&x), Some(&y)) => Some(x.min(y)),
        (Some(&x), None) => Some(x),
        (None, Some(&y)) => Some(y),
        (None, None) => None,
    };
    let Some(mut v) = next(0, 0) else {
        return f64::NAN;
    };
    loop {
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let Some(w) = next(i, j) else { break };
        let term = (i as f64 / n1 - j as f64 / n2).abs() * (w - v);
        let t = s + term;
        c += if s >= term {
            (s - t) + term
        } else {
            (term - t) + s
        };
        s = t;
        v = w;
    }
    s + c
}

/// `np.std(x)` (ddof = 0), two passes as numpy and pandas compute it.
pub(super) fn std_ddof0(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = sum(xs.iter().copied()) / n;
    (sum(xs.iter().map(|&x| (x - mean) * (x - mean))) / n).sqrt()
}

/// scipy's `rel_entr(x, y)`: `x·ln(x/y)`, 0 for `x == 0, y >= 0`, +inf otherwise.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

pub(super) fn psi(r: &[f64], c: &[f64]) -> f64 {
    sum(r.iter().zip(c).map(|(&r, &c)| (r - c) * (r / c).ln()))
}

pub(super) fn kl_div(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (sum(p.iter().copied()), sum(q.iter().copied()));
    sum(p.iter().zip(q).map(|(&p, &q)| rel_entr(p / sp, q / sq)))
}

pub(super) fn jensenshannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (sum(p.iter().copied()), sum(q.iter().copied()));
    let (mut left, mut right) = (Vec::with_capacity(p.len()), Vec::with_capacity(p.len()));
    for (&p, &q) in p.iter().zip(q) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        left.push(rel_entr(p, m));
        right.push(rel_entr(q, m));
    }
    let js = sum(left) + sum(right);
    (js / 2.0).sqrt()
}

/// `sqrt(1 - clip(bc, 0, 1))` for a Bhattacharyya coefficient `bc`.
fn hellinger_from_bc(bc: f64) -> f64 {
    // np.clip: NaN stays NaN, as with f64::clamp.
    (1.0 - bc.clamp(0.0, 1.0)).sqrt()
}

pub(super) fn hellinger_numeric(r: &[f64], c: &[f64]) -> f64 {
    // Evidently bins the *distinct* pooled values with Sturges' rule (its `keys`), then takes
    // numpy's density histograms of each sample on those edges.
    let (lo, hi) = pooled_range(r, c);
    let edges = sturges_edges(lo, hi, distinct_union_count(r, c));
    let density = |xs: &[f64]| {
        let counts = histogram_counts(xs, &edges);
        let total = counts.iter().sum::<u64>() as f64;
        counts
            .iter()
            .zip(edges.windows(2))
            .map(|(&n, e)| n as f64 / (e[1] - e[0]) / total)
            .collect::<Vec<f64>>()
    };
    let (h1, h2) = (density(r), density(c));
    let bins = edges.len().saturating_sub(1).max(1) as f64;
    let bin_width = (edges.last().copied().unwrap_or(f64::NAN)
        - edges.first().copied().unwrap_or(f64::NAN))
        / bins;
    let bc = sum(h1
        .iter()
        .zip(&h2)
        .map(|(&p1, &p2)| (p1 * p2).sqrt() * bin_width));
    hellinger_from_bc(bc)
}

pub(super) fn hellinger_categorical(r: &[u64], c: &[u64]) -> f64 {
    let (nr, nc) = (r.iter().sum::<u64>() as f64, c.iter().sum::<u64>() as f64);
    let bc = sum(r
        .iter()
        .zip(c)
        .map(|(&a, &b)| ((a as f64 / nr) * (b as f64 / nc)).sqrt()));
    hellinger_from_bc(bc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_simple() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5
        assert_eq!(wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), 5.0);
        assert_eq!(wasserstein(&[1.0, 1.0], &[1.0]), 0.0);
        // scipy: wasserstein_distance([0, 1], [0, 0, 1, 1, 2]) = 0.29999999999999993
        let w = wasserstein(&[0.0, 1.0], &[0.0, 0.0, 1.0, 1.0, 2.0]);
        assert!((w - 0.3).abs() < 1e-15, "{w}");
    }

    #[test]
    fn divergences_of_equal_distributions_are_zero() {
        let p = [0.2, 0.3, 0.5];
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(kl_div(&p, &p), 0.0);
        assert_eq!(jensenshannon(&p, &p), 0.0);
        assert_eq!(hellinger_categorical(&[2, 3, 5], &[4, 6, 10]), 0.0);
        assert_eq!(rel_entr(0.0, 0.5), 0.0);
        assert_eq!(rel_entr(0.5, 0.0), f64::INFINITY);
    }
}
