//! scipy's two-sample Kolmogorov–Smirnov test (`scipy.stats.ks_2samp`, two-sided,
//! `method='auto'`), ported from `scipy/stats/_stats_py.py` (`ks_2samp`,
//! `_attempt_exact_2kssamp`, `_compute_prob_outside_square`) and `_stats_pythran.py`
//! (`_compute_outer_prob_inside_method`).
//!
//! Written by hand because statrs' KS does not match scipy: its exact path refuses
//! `m·n > 10,000` and its asymptotic p-value is the limiting Kolmogorov distribution, not
//! scipy's finite-n `kstwo` (see [`super::kstwo`]).

use super::kstwo::kstwo_sf;
use super::{Ks, KsMethod};

/// scipy's `MAX_AUTO_N`: `method='auto'` is exact when both samples have at most this many
/// rows.
pub const MAX_AUTO_N: usize = 10_000;

pub(super) fn ks_2samp(a: &[f64], b: &[f64]) -> Ks {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        // scipy raises ValueError ("must not be empty").
        return Ks {
            statistic: f64::NAN,
            pvalue: f64::NAN,
            method: KsMethod::Asymptotic,
        };
    }
    let mut d = statistic(a, b);
    if n1.max(n2) <= MAX_AUTO_N {
        let g = gcd(n1 as u64, n2 as u64);
        let exact = attempt_exact(n1 as u64, n2 as u64, g, d);
        // scipy keeps the rounded statistic h/lcm even when it falls back.
        d = exact.d;
        if let Some(pvalue) = exact.prob {
            return Ks {
                statistic: d,
                pvalue,
                method: KsMethod::Exact,
            };
        }
    }
    // Smirnov's asymptotic: kstwo.sf(d, round(n1·n2/(n1+n2))).
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = (m * n / (m + n)).round_ties_even();
    let pvalue = kstwo_sf(en as u64, d).clamp(0.0, 1.0);
    Ks {
        statistic: d,
        pvalue,
        method: KsMethod::Asymptotic,
    }
}

/// `max |F_a - F_b|` over the pooled values, with scipy's arithmetic: at each distinct value
/// (ties included, as `searchsorted(side='right')` counts them) the difference
/// `i/n1 - j/n2`; the larger of its maximum and the negated minimum (clipped to [0, 1]).
/// O(n1 + n2) on sorted inputs.
pub(super) fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    // Each side's ECDF after every distinct pooled value (searchsorted side='right').
    for (_, na, nb) in super::binning::union_runs(a, b) {
        i += na;
        j += nb;
        let diff = i as f64 / n1 - j as f64 / n2;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s { min_s } else { max_s }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What `_attempt_exact_2kssamp` returns: the statistic rounded to `h/lcm(n1, n2)` and the
/// exact p-value, `None` where scipy's computation fails (a probability outside [0, 1]).
struct Exact {
    d: f64,
    prob: Option<f64>,
}

fn attempt_exact(n1: u64, n2: u64, g: u64, d: f64) -> Exact {
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Exact { d, prob: Some(1.0) };
    }
    let prob = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    Exact {
        d,
        prob: (0.0..=1.0).contains(&prob).then_some(prob),
    }
}

/// `P(D_{n,n} >= h/n)` (`_compute_prob_outside_square`):
/// `2 · (A0 (1 - A1 (1 - A2 (1 - ...))))`, each `A_k` a ratio of binomials as a product of
/// `h` factors.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// The proportion of lattice paths from (0, 0) to (m, n) that leave the band
/// `|x/m - y/n| < h/lcm(m, n)` (`_compute_outer_prob_inside_method`: Hodges' inside method
/// with Viehmann's recursion for 1 - p), in O(m · band width) time and O(band) memory.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let (mg, ng) = (m / g, n / g);
    let ceil_div = |a: i64, b: i64| a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0);

    let mut minj = 0i64;
    let mut maxj = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    a[minj as usize..(maxj as usize).min(len_a)]
        .iter_mut()
        .for_each(|x| *x = 0.0);
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((ng * i - h).div_euclid(mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            // In range: minj - lastminj <= 1 and the window never outgrows `a`.
            let prev = a
                .get((jj + minj - lastminj) as usize)
                .copied()
                .unwrap_or(1.0);
            val = (prev * fi + val * j as f64) / (i + j) as f64;
            if let Some(slot) = a.get_mut(jj as usize) {
                *slot = val;
            }
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            // Carried-over elements outside the new window are "out of the band".
            let lo = (maxj - minj) as usize;
            let hi = ((maxj - minj + (lastlen - curlen)) as usize).min(len_a);
            a[lo.min(hi)..hi].iter_mut().for_each(|x| *x = 1.0);
        }
    }
    a.get((maxj - minj - 1) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact two-sided p-values by brute force over all C(m+n, n) paths (tiny sizes).
    fn brute_force(m: usize, n: usize, h: u64) -> f64 {
        let lcm = (m / gcd(m as u64, n as u64) as usize * n) as i64;
        let total = m + n;
        let (mut outside, mut all) = (0u64, 0u64);
        for mask in 0u32..(1 << total) {
            if mask.count_ones() as usize != n {
                continue;
            }
            all += 1;
            let (mut x, mut y, mut hit) = (0i64, 0i64, false);
            for k in 0..total {
                if mask >> k & 1 == 1 {
                    y += 1;
                } else {
                    x += 1;
                }
                // |x/m - y/n| * lcm >= h
                let dev = (x * (lcm / m as i64) - y * (lcm / n as i64)).abs();
                if dev >= h as i64 {
                    hit = true;
                }
            }
            outside += u64::from(hit);
        }
        outside as f64 / all as f64
    }

    #[test]
    fn exact_paths_match_brute_force() {
        for (m, n) in [
            (3, 3),
            (4, 4),
            (5, 3),
            (6, 4),
            (7, 5),
            (8, 6),
            (5, 5),
            (9, 6),
        ] {
            let g = gcd(m as u64, n as u64);
            let lcm = (m as u64 / g) * n as u64;
            for h in 1..=lcm {
                let want = brute_force(m, n, h);
                let got = if m == n {
                    prob_outside_square(m as u64, h)
                } else {
                    outer_prob_inside(m as u64, n as u64, g, h)
                };
                assert!(
                    (got - want).abs() <= 1e-13,
                    "m={m} n={n} h={h}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn statistic_handles_ties_and_sides() {
        assert_eq!(statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(statistic(&[0.0], &[1.0]), 1.0);
        assert_eq!(statistic(&[1.0], &[0.0]), 1.0);
        // ties across samples: F_a(1) = 2/3, F_b(1) = 1/2
        let d = statistic(&[1.0, 1.0, 2.0], &[1.0, 2.0]);
        assert_eq!(d, 2.0 / 3.0 - 1.0 / 2.0);
    }
}
