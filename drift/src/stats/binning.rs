//! Evidently's `get_binned_data` (`evidently/legacy/calculations/stattests/utils.py`) and the
//! numpy pieces it relies on: `np.histogram_bin_edges(.., bins="sturges")` and
//! `np.histogram` with an explicit edge array.

use super::Binned;

/// Evidently bins a numeric column when its *reference* has more than this many distinct
/// values; otherwise every distinct value is a bin.
pub const MAX_DISTINCT_BINS: usize = 20;

/// Distinct values of a sorted slice (`-0.0 == 0.0`, as pandas counts them).
pub(super) fn distinct_count(xs: &[f64]) -> usize {
    let mut count = 0;
    let mut last = None;
    for &x in xs {
        if last != Some(x) {
            count += 1;
            last = Some(x);
        }
    }
    count
}

/// The distinct values of the union of two sorted slices, ascending, each with how many
/// times it occurs in `a` and in `b` (one merge pass; `-0.0 == 0.0`).
pub(super) fn union_runs<'a>(
    a: &'a [f64],
    b: &'a [f64],
) -> impl Iterator<Item = (f64, usize, usize)> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => return None,
        };
        let (i0, j0) = (i, j);
        while i < a.len() && a[i] == v {
            i += 1;
        }
        while j < b.len() && b[j] == v {
            j += 1;
        }
        Some((v, i - i0, j - j0))
    })
}

/// Distinct values of the union of two sorted slices, ascending, with each side's count.
fn distinct_union_counts(a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<u64>, Vec<u64>) {
    let (mut values, mut ca, mut cb) = (Vec::new(), Vec::new(), Vec::new());
    for (v, na, nb) in union_runs(a, b) {
        values.push(v);
        ca.push(na as u64);
        cb.push(nb as u64);
    }
    (values, ca, cb)
}

/// Number of distinct values in the union of two sorted slices.
pub(super) fn distinct_union_count(a: &[f64], b: &[f64]) -> usize {
    union_runs(a, b).count()
}

/// `np.histogram_bin_edges(x, bins="sturges")` for float data of `size` values whose
/// minimum is `lo` and maximum `hi`:
/// width `ptp / (log2(size) + 1)`, `ceil((last - first) / width)` bins (1 when the width is
/// 0), the outer edges widened by 0.5 each way when `lo == hi` (`_get_outer_edges`), and the
/// edges from `np.linspace(first, last, bins + 1)` — `first + i·step`, the last edge
/// exactly `last`.
///
/// numpy refuses (ValueError, "Too many bins for data range") when two edges coincide,
/// which needs a range of a few ulps; here the edges are returned as they are.
pub fn sturges_edges(lo: f64, hi: f64, size: usize) -> Vec<f64> {
    let ptp = hi - lo;
    let (first, last) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let width = ptp / ((size as f64).log2() + 1.0);
    let bins = if width != 0.0 {
        ((last - first) / width).ceil().max(1.0) as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `np.linspace(start, stop, num, endpoint=True)` for `num >= 2`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = if step == 0.0 {
        (0..num).map(|i| i as f64 / div * delta + start).collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    if let Some(end) = y.last_mut() {
        *end = stop;
    }
    y
}

/// `np.histogram(x, bins=edges)[0]` for sorted `x` and an explicit edge array: bin i counts
/// `edges[i] <= v < edges[i+1]`, the last bin also `v == edges[last]`; values outside the
/// edges are not counted (numpy's `searchsorted` on the cumulative histogram).
pub(super) fn histogram_counts(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    let Some((&last, inner)) = edges.split_last() else {
        return Vec::new();
    };
    let mut cum: Vec<usize> = inner
        .iter()
        .map(|&e| sorted.partition_point(|&v| v < e))
        .collect();
    cum.push(sorted.partition_point(|&v| v <= last));
    cum.windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as u64)
        .collect()
}

/// Evidently's zero fill (`feel_zeroes`): zeros become `min_nonzero / 1e6` when the smallest
/// non-zero share is at most 1e-4, else 1e-4. Left alone when no share is non-zero (where
/// Python's `min` of an empty sequence raises).
pub(super) fn fill_zeroes(shares: &mut [f64]) {
    let min_nonzero = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_nonzero.is_finite() {
        return;
    }
    let fill = if min_nonzero <= 0.0001 {
        min_nonzero / 1e6
    } else {
        0.0001
    };
    shares
        .iter_mut()
        .filter(|s| **s == 0.0)
        .for_each(|s| *s = fill);
}

fn shares(counts: &[u64], total: f64) -> Vec<f64> {
    counts.iter().map(|&c| c as f64 / total).collect()
}

/// The smallest and largest value of two sorted slices together (NaN when both are empty).
pub(super) fn pooled_range(a: &[f64], b: &[f64]) -> (f64, f64) {
    let ends = |s: &[f64]| s.first().zip(s.last()).map(|(&lo, &hi)| (lo, hi));
    match (ends(a), ends(b)) {
        (Some((l1, h1)), Some((l2, h2))) => (l1.min(l2), h1.max(h2)),
        (Some(e), None) | (None, Some(e)) => e,
        (None, None) => (f64::NAN, f64::NAN),
    }
}

pub(super) fn binned_numeric(reference: &[f64], current: &[f64], fill: bool) -> Binned {
    let mut binned = if distinct_count(reference) > MAX_DISTINCT_BINS {
        let (lo, hi) = pooled_range(reference, current);
        let edges = sturges_edges(lo, hi, reference.len() + current.len());
        let r = shares(&histogram_counts(reference, &edges), reference.len() as f64);
        let c = shares(&histogram_counts(current, &edges), current.len() as f64);
        Binned {
            edges: Some(edges),
            values: Vec::new(),
            reference: r,
            current: c,
        }
    } else {
        let (values, rc, cc) = distinct_union_counts(reference, current);
        Binned {
            edges: None,
            values,
            reference: shares(&rc, reference.len() as f64),
            current: shares(&cc, current.len() as f64),
        }
    };
    if fill {
        fill_zeroes(&mut binned.reference);
        fill_zeroes(&mut binned.current);
    }
    binned
}

pub(super) fn binned_categorical(reference: &[u64], current: &[u64], fill: bool) -> Binned {
    let total = |c: &[u64]| c.iter().sum::<u64>() as f64;
    let mut binned = Binned {
        edges: None,
        values: Vec::new(),
        reference: shares(reference, total(reference)),
        current: shares(current, total(current)),
    };
    if fill {
        fill_zeroes(&mut binned.reference);
        fill_zeroes(&mut binned.current);
    }
    binned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sturges_like_numpy() {
        // np.histogram_bin_edges([0, 1, ..., 9], bins="sturges"): 5 bins (log2(10)+1 = 4.32).
        let e = sturges_edges(0.0, 9.0, 10);
        assert_eq!(e, vec![0.0, 1.8, 3.6, 5.4, 7.2, 9.0]);
        // constant data: one bin of width 1 around the value
        assert_eq!(sturges_edges(3.0, 3.0, 7), vec![2.5, 3.5]);
    }

    #[test]
    fn histogram_last_bin_closed() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(histogram_counts(&[0.0, 0.5, 1.0, 2.0], &edges), vec![2, 2]);
        assert_eq!(histogram_counts(&[-1.0, 3.0], &edges), vec![0, 0]);
    }

    #[test]
    fn zero_fill_rule() {
        let mut s = [0.5, 0.0, 0.5];
        fill_zeroes(&mut s);
        assert_eq!(s, [0.5, 0.0001, 0.5]);
        let mut s = [0.99995, 0.00005, 0.0];
        fill_zeroes(&mut s);
        assert_eq!(s[2], 0.00005 / 1e6);
        let mut s = [0.0, 0.0];
        fill_zeroes(&mut s);
        assert_eq!(s, [0.0, 0.0]);
    }
}
