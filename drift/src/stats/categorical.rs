//! Evidently's tests for categorical columns on aligned counts: `chisquare`
//! (`chisquare_stattest.py`) and `z` (`z_stattest.py`), with scipy's special functions.

// The constants are the reference implementation's (cephes', scipy's), digit for digit.
#![allow(clippy::excessive_precision)]

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Indices of the categories present on at least one side (the union Evidently iterates).
fn present(reference: &[u64], current: &[u64]) -> impl Iterator<Item = (u64, u64)> {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| (r, c))
        .filter(|&(r, c)| r != 0 || c != 0)
}

pub(super) fn chisquare(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let n_ref = reference.iter().sum::<u64>() as f64;
    let n_cur = current.iter().sum::<u64>() as f64;
    let k_norm = n_cur / n_ref;
    let mut k = 0usize;
    let stat = super::distance::sum(present(reference, current).map(|(r, c)| {
        k += 1;
        let exp = r as f64 * k_norm;
        let d = c as f64 - exp;
        d * d / exp
    }));
    (stat, chi2_sf(k.saturating_sub(1) as f64, stat))
}

/// scipy's `chdtrc(df, x)` (the chi-square survival function `_SimpleChi2(df).sf`), with its
/// edge cases: `df == 0` gives 0 for `x > 0` and NaN for `x == 0` (xsf's `igamc(0, x)`);
/// 1 at `x == 0`, 0 at `x == inf`, NaN for NaN.
pub(super) fn chi2_sf(df: f64, x: f64) -> f64 {
    if x.is_nan() || df.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if df == 0.0 {
        return if x > 0.0 { 0.0 } else { f64::NAN };
    }
    if x == 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    match ChiSquared::new(df) {
        Ok(d) => d.sf(x),
        Err(_) => f64::NAN,
    }
}

pub(super) fn z_test(reference: &[u64], current: &[u64]) -> (f64, f64) {
    // Both sides constant on the same category: Evidently answers p = 1 without a statistic.
    let ref_present = reference.iter().filter(|&&r| r != 0).count();
    let cur_present = current.iter().filter(|&&c| c != 0).count();
    let same_single = ref_present == 1
        && cur_present == 1
        && reference
            .iter()
            .zip(current)
            .any(|(&r, &c)| r != 0 && c != 0);
    if same_single {
        return (0.0, 1.0);
    }
    // The first key of the sorted union is category "0", every other key "1".
    let first = reference
        .iter()
        .zip(current)
        .position(|(&r, &c)| r != 0 || c != 0);
    let (r0, c0) = first.map_or((0, 0), |i| (reference[i], current[i]));
    let n1 = reference.iter().sum::<u64>();
    let n2 = current.iter().sum::<u64>();
    // proportions_diff_z_stat_ind, Evidently's arithmetic.
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let p1 = (n1 - r0) as f64 / n1f;
    let p2 = (n2 - c0) as f64 / n2f;
    let pooled = (p1 * n1f + p2 * n2f) / (n1f + n2f);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    // proportions_diff_z_test: 2 · (1 - Φ(|z|)), as written (not 2·sf: it reaches 0 at
    // |z| ~ 8.3 where the survival function would not).
    (z, 2.0 * (1.0 - ndtr(z.abs())))
}

// ----------------------------------------------------------------- cephes ndtr
// scipy.special.ndtr is cephes' (xsf/cephes/ndtr.h); ported so that 1 - ndtr(|z|) rounds as
// scipy's does (statrs' erf is a different approximation: equal to ~1e-16, but 1 - Φ
// amplifies the last bit of Φ into the p-value's leading digits for large |z|).

const NDTR_P: [f64; 9] = [
    2.46196981473530512524E-10,
    5.64189564831068821977E-1,
    7.46321056442269912687E0,
    4.86371970985681366614E1,
    1.96520832956077098242E2,
    5.26445194995477358631E2,
    9.34528527171957607540E2,
    1.02755188689515710272E3,
    5.57535335369399327526E2,
];
const NDTR_Q: [f64; 8] = [
    1.32281951154744992508E1,
    8.67072140885989742329E1,
    3.54937778887819891062E2,
    9.75708501743205489753E2,
    1.82390916687909736289E3,
    2.24633760818710981792E3,
    1.65666309194161350182E3,
    5.57535340817727675546E2,
];
const NDTR_R: [f64; 6] = [
    5.64189583547755073984E-1,
    1.27536670759978104416E0,
    5.01905042251180477414E0,
    6.16021097993053585195E0,
    7.40974269950448939160E0,
    2.97886665372100240670E0,
];
const NDTR_S: [f64; 6] = [
    2.26052863220117276590E0,
    9.39603524938001434673E0,
    1.20489539808096656605E1,
    1.70814450747565897222E1,
    9.60896809063285878198E0,
    3.36907645100081516050E0,
];
const NDTR_T: [f64; 5] = [
    9.60497373987051638749E0,
    9.00260197203842689217E1,
    2.23200534594684319226E3,
    7.00332514112805075473E3,
    5.55923013010394962768E4,
];
const NDTR_U: [f64; 5] = [
    3.35617141647503099647E1,
    5.21357949780152679795E2,
    4.59432382970980127987E3,
    2.26290000613890934246E4,
    4.92673942608635921086E4,
];
/// cephes' MAXLOG.
const MAXLOG: f64 = 7.09782712893383996843E2;

/// cephes `polevl`: `c[0]·x^N + ... + c[N]`.
fn polevl(x: f64, c: &[f64]) -> f64 {
    c.iter().fold(0.0, |acc, &k| acc * x + k)
}

/// cephes `p1evl`: as `polevl` with an implicit leading coefficient 1.
fn p1evl(x: f64, c: &[f64]) -> f64 {
    c.iter().fold(1.0, |acc, &k| acc * x + k)
}

fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x.abs() > 1.0 {
        return 1.0 - erfc(x);
    }
    let z = x * x;
    x * polevl(z, &NDTR_T) / p1evl(z, &NDTR_U)
}

fn erfc(a: f64) -> f64 {
    if a.is_nan() {
        return f64::NAN;
    }
    let x = a.abs();
    if x < 1.0 {
        return 1.0 - erf(a);
    }
    let z = -a * a;
    let under = if a < 0.0 { 2.0 } else { 0.0 };
    if z < -MAXLOG {
        return under;
    }
    let z = z.exp();
    let (p, q) = if x < 8.0 {
        (polevl(x, &NDTR_P), p1evl(x, &NDTR_Q))
    } else {
        (polevl(x, &NDTR_R), p1evl(x, &NDTR_S))
    };
    let mut y = (z * p) / q;
    if a < 0.0 {
        y = 2.0 - y;
    }
    if y != 0.0 { y } else { under }
}

/// scipy's `ndtr` (= `norm.cdf`).
pub(super) fn ndtr(a: f64) -> f64 {
    if a.is_nan() {
        return f64::NAN;
    }
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < 1.0 {
        0.5 + 0.5 * erf(x)
    } else {
        let y = 0.5 * erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndtr_values() {
        assert_eq!(ndtr(0.0), 0.5);
        // scipy.special.ndtr(1.96) = 0.9750021048517795, ndtr(-3) = 0.0013498980316300933
        assert_eq!(ndtr(1.96), 0.9750021048517795);
        assert_eq!(ndtr(-3.0), 0.0013498980316300933);
        assert_eq!(ndtr(40.0), 1.0);
        assert_eq!(ndtr(-40.0), 0.0);
    }

    #[test]
    fn chi2_sf_edges() {
        assert_eq!(chi2_sf(3.0, 0.0), 1.0);
        assert_eq!(chi2_sf(3.0, f64::INFINITY), 0.0);
        assert!(chi2_sf(0.0, 0.0).is_nan());
        assert_eq!(chi2_sf(0.0, 1e-30), 0.0);
        // scipy.special.chdtrc(2, 3) = 0.22313016014842982 (= exp(-1.5))
        let p = chi2_sf(2.0, 3.0);
        assert!((p - 0.22313016014842982).abs() <= 1e-15 * p, "{p}");
    }
}
