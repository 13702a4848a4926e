//! scipy's `kstwo` distribution — the two-sided one-sample Kolmogorov–Smirnov statistic
//! `D_n` for a finite `n` — and its survival function, which `ks_2samp`'s asymptotic branch
//! evaluates at `n = round(n1·n2 / (n1 + n2))`.
//!
//! Written by hand because nothing in Rust computes it: statrs has no `kstwo`, and its
//! two-sample KS uses the *limiting* Kolmogorov distribution (`kstwobign`), which differs from
//! scipy's finite-n value by far more than 1e-9 (about 1/√n relative). This is a port of
//! `scipy/stats/_ksstats.py` (`_kolmogn` and the algorithms it picks between, after Simard
//! and L'Ecuyer 2011) and of xsf's `smirnov` (`xsf/cephes/kolmogorov.h`), which `_kolmogn`
//! calls for the upper tail. Every branch and cut-off is scipy's; where scipy computes in
//! double-double (xsf's `smirnov`) this computes in f64 with exact products and powers kept
//! as (significand, exponent), which stays within ~1e-12 of it.

// The constants are the reference implementation's (cephes', scipy's), digit for digit.
#![allow(clippy::excessive_precision)]

use std::f64::consts::PI;

use super::fp::{frexp, ldexp, pow_scaled, two_prod};

const E128: i64 = 128;

fn ep128() -> f64 {
    2f64.powi(128)
}

fn em128() -> f64 {
    2f64.powi(-128)
}

fn clip01(p: f64) -> f64 {
    // np.clip(p, 0, 1): NaN stays NaN, as with f64::clamp.
    p.clamp(0.0, 1.0)
}

/// scipy's `kstwo.sf(x, n)`: `P(D_n >= x)` for the two-sided one-sample KS statistic of `n`
/// observations. 1 for `x <= 0.5/n` (below the support), 0 for `x >= 1`; NaN for NaN `x`
/// or `n == 0`.
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    if x.is_nan() || n == 0 {
        return f64::NAN;
    }
    // rv_continuous.sf: 1 at and below the support's lower end (0.5/n), 0 at and above 1.
    if x <= 0.5 / n as f64 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    kolmogn_sf(n, x)
}

/// `_kolmogn(n, x, cdf=False)`.
fn kolmogn_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        // Ruben–Gambino: 1/2n <= x <= 1/n.
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            let f = 2.0 * t - 1.0;
            (1..=n).fold(1.0, |p, i| p * (i as f64 * (1.0 / nf) * f))
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip01(1.0 - prob);
    }
    if t >= nf - 1.0 {
        // Ruben–Gambino.
        return clip01(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        // Exact: 2 · smirnov.
        return clip01(2.0 * smirnov_sf(n, x));
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip01(1.0 - durbin_mtw_cdf(n, x));
        }
        if nxsquared <= 4.0 {
            return clip01(1.0 - pomeranz_cdf(n, x));
        }
        // Miller's approximation: 2 · smirnov.
        return clip01(2.0 * smirnov_sf(n, x));
    }
    // n > 140: the SF has its own cut-offs.
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip01(2.0 * smirnov_sf(n, x));
    }
    let cdf = if nxsquared >= 18.0 {
        1.0 // (unreachable after the cut-offs above; kept as scipy has it)
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_mtw_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    clip01(1.0 - cdf)
}

/// `log(n! / n^n)` by Stirling's series with `n·log(n)` removed up front.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    const STIRLING: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING.iter().fold(0.0, |p, &c| p * x + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * poly
}

/// Durbin's matrix algorithm as Marsaglia, Tsang and Wang compute it: `P(D_n <= d)`.
fn durbin_mtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    // v: first column (and, reversed, last row) of H; w[j] = 1/j!.
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64; // may underflow: harmless
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r + 1 - i];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }

    let mut pwr = vec![0.0; m * m]; // H^(bits of n so far), scaled by 2^-expnt
    for i in 0..m {
        pwr[i * m + i] = 1.0;
    }
    let mut scratch = vec![0.0; m * m];
    let (mut nn, mut expnt, mut h_expnt) = (n, 0i64, 0i64);
    while nn > 0 {
        if nn % 2 == 1 {
            matmul(&pwr, &hm, &mut scratch, m);
            std::mem::swap(&mut pwr, &mut scratch);
            expnt += h_expnt;
        }
        matmul(&hm, &hm, &mut scratch, m);
        std::mem::swap(&mut hm, &mut scratch);
        h_expnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128() {
            hm.iter_mut().for_each(|x| *x /= ep128());
            h_expnt += E128;
        }
        nn /= 2;
    }
    let mut p = pwr[(k - 1) * m + (k - 1)];

    // Multiply by n!/n^n.
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < em128() {
            p *= ep128();
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    clip01(p)
}

/// `out = a · b` for `m × m` row-major matrices.
fn matmul(a: &[f64], b: &[f64], out: &mut [f64], m: usize) {
    out.iter_mut().for_each(|x| *x = 0.0);
    for i in 0..m {
        let row = &mut out[i * m..(i + 1) * m];
        for (k, &aik) in a[i * m..(i + 1) * m].iter().enumerate() {
            if aik == 0.0 {
                continue;
            }
            for (o, &bkj) in row.iter_mut().zip(&b[k * m..(k + 1) * m]) {
                *o += aik * bkj;
            }
        }
    }
}

/// The endpoints of row `i`'s interval in Pomeranz's recursion.
fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pomeranz's recursion: `P(D_n <= x)` (used for n <= 140).
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let n = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0; npwrs];
    let mut twogpower = vec![1.0; npwrs];
    let mut onem2gpower = vec![1.0; npwrs];
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) =
        (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }

    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i64;
    let (mut j1, _) = pomeranz_j1j2(0, n, ll, ceilf, roundf);
    let mut conv = Vec::with_capacity(2 * npwrs);
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        let (nj1, nj2) = pomeranz_j1j2(i, n, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = nj2 - k1 + 1;
        if ln2 > 0 {
            // np.convolve(V0[k1 - V0s : k1 - V0s + ln2], pwrs[:ln2]) (numpy clips the slices).
            let lo = (k1 - v0s).clamp(0, npwrs as i64) as usize;
            let hi = (k1 - v0s + ln2).clamp(0, npwrs as i64) as usize;
            let a = &v0[lo..hi.max(lo)];
            let b = &pwrs[..(ln2 as usize).min(npwrs)];
            conv.clear();
            if !a.is_empty() && !b.is_empty() {
                conv.resize(a.len() + b.len() - 1, 0.0);
                for (ia, &va) in a.iter().enumerate() {
                    for (ib, &vb) in b.iter().enumerate() {
                        conv[ia + ib] += va * vb;
                    }
                }
            }
            let conv_start = (nj1 - k1).max(0) as usize;
            let conv_len = (nj2 - nj1 + 1).max(0) as usize;
            for (dst, &src) in v1
                .iter_mut()
                .zip(conv.iter().skip(conv_start).take(conv_len))
            {
                *dst = src;
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < em128() {
                v1.iter_mut().for_each(|x| *x *= ep128());
                expnt -= E128;
            }
            v1s = v0s + nj1 - k1;
        }
    }
    // Multiply by n!.
    let mut ans = usize::try_from(n - v1s)
        .ok()
        .and_then(|i| v1.get(i))
        .copied()
        .unwrap_or(0.0);
    for m in 1..=n {
        if ans.abs() > ep128() {
            ans *= em128();
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    clip01(ans)
}

/// The Pelz–Good approximation to `P(D_n <= x)` (unclipped, as scipy returns it).
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI.powf(2.0);
    let pi4 = PI.powf(4.0);
    let pi6 = PI.powf(6.0);
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = n.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z * z, z.powf(3.0), z.powf(4.0), z.powf(6.0));

    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();

    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powf(8.0);

    // Horner over sum c_i q^(i^2), a sum over odd integers.
    let mut k0to3 = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (msquared, mfour, msix) = (m * m, m.powf(4.0), m.powf(6.0));
        let qpower = q.powf((8 * k) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msquared,
            k2a + k2b * msquared + k2c * mfour,
            k3a + k3b * msquared + k3c * mfour + k3d * msix,
        ];
        for (acc, c) in k0to3.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let denoms = [z, 6.0 * zfour, 72.0 * z.powf(7.0), 6480.0 * z.powf(10.0)];
    for (acc, d) in k0to3.iter_mut().zip(denoms) {
        *acc = *acc * q * sqrt2pi / d;
    }

    // The other sum, over all integers k, for K_2 and K_3.
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let ksquared = kf * kf;
        let qpwer = q.powf(ksquared);
        let kspi = PI * kf;
        k2extra += ksquared * qpwer;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer;
    }
    k0to3[2] += k2extra * (pi2 * sqrt2pi / (-36.0 * zthree));
    k0to3[3] += k3extra * (pi2 * sqrt2pi / (216.0 * zsix));
    k0to3
        .iter()
        .enumerate()
        .map(|(i, &k)| k / n.powf(i as f64 / 2.0))
        .sum()
}

// ------------------------------------------------------------------------- smirnov

/// cephes' MINLOG: exp() of anything below underflows.
const MINLOG: f64 = -7.451332191019412076235e2;

/// xsf's `smirnov(n, x)`: `P(D_n^+ >= x)`, the one-sided one-sample KS survival function.
pub(crate) fn smirnov_sf(n: u64, x: f64) -> f64 {
    if !(n > 0 && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let n_i = n as i64;
    let (nxfl, alpha) = mod_nx(nf, x);
    let mut n1mxfl = n_i - nxfl - i64::from(alpha != 0.0);
    let mut n1mxceil = n_i - nxfl;
    // With alpha == 0 the last term belongs to neither summation.
    if alpha == 0.0 {
        n1mxfl -= 1;
        n1mxceil += 1;
    }

    // x <= 1/n.
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let t = ((n - 1) as f64 * x.ln_1p()).exp();
        return 1.0 - x * t;
    }
    // The SF underflows.
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    // x >= 1 - 1/n (1 - x is exact there).
    if nxfl >= n_i - 1 {
        return (1.0 - x).powf(nf);
    }
    // n too large to sum: p ~ e^(-(6nx+1)^2 / 18n).
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powf(2.0) / 18.0 / nf;
        return if logp < -std::f64::consts::LN_2 {
            logp.exp()
        } else {
            1.0 - (-logp.exp_m1())
        };
    }

    // The upper sum when it has few terms and x is small; the lower sum otherwise.
    let n_upper_terms = n_i - n1mxceil + 1;
    let use_upper = (n_upper_terms <= 1 && x < 0.5)
        || (n_i >= 10 && n_upper_terms <= 3 && x <= 0.5 / nf.sqrt());

    let (nx_hi, nx_lo) = two_prod(nf, x);
    let (start, step, n_terms) = if use_upper {
        (n_i, -1i64, n_i - n1mxceil + 1)
    } else {
        (0, 1, n1mxfl + 1)
    };
    let vmid = n_i / 2;
    // The binomial coefficient as significand and exponent: C(n, j) = cman · 2^cexpt.
    let (mut cman, mut cexpt) = (1.0f64, 0i64);
    let first = if use_upper {
        // v = n: (1 + x)^(n-1).
        let (s, e) = pow_scaled(1.0 + x, n - 1);
        ldexp(s, e)
    } else {
        // v = 0: (1 - x)^n / x.
        let (s, e) = pow_scaled(1.0 - x, n);
        ldexp(s, e) / x
    };
    let mut sum = first;
    let mut comp = 0.0; // Neumaier compensation (xsf sums in double-double)
    update_binomial(&mut cman, &mut cexpt, n_i, 0);
    for j in 1..n_terms {
        let v = start + j * step;
        // A_v = C(n, v) (1 - x - v/n)^(n-v) (x + v/n)^(v-1)
        let t2x = (((n_i - v) as f64 - nx_hi) - nx_lo) / nf;
        let t1x = v as f64 / nf + x;
        let (t2, t2e) = pow_scaled(t2x, (n_i - v) as u64);
        // v >= 1 in both sums (the upper one stops at n1mxceil >= 1).
        let (t1, t1e) = pow_scaled(t1x, v.saturating_sub(1) as u64);
        let aj = ldexp(t1 * t2 * cman, cexpt + t1e + t2e);
        if aj.is_finite() && aj != 0.0 {
            let s = sum + aj;
            comp += if sum.abs() >= aj.abs() {
                (sum - s) + aj
            } else {
                (aj - s) + sum
            };
            sum = s;
        }
        if aj != 0.0 {
            if 4.0 * (n_terms - j) as f64 * aj.abs() < f64::EPSILON * (sum + comp)
                && j != n_terms - 1
            {
                break;
            }
        } else if j > vmid {
            break;
        }
        update_binomial(&mut cman, &mut cexpt, n_i, j);
    }
    let prob = x * (sum + comp);
    let sf = if step < 0 { 1.0 - prob } else { prob };
    clip01(sf)
}

/// `floor(n·x)` and the fractional part, exactly (xsf's `modNX`).
fn mod_nx(n: f64, x: f64) -> (i64, f64) {
    let (hi, lo) = two_prod(n, x);
    let fl_hi = hi.floor();
    let (mut fl, mut alpha) = if fl_hi == hi {
        let fl_lo = lo.floor(); // 0 or -1: lo is below half an ulp of hi
        (hi + fl_lo, lo - fl_lo)
    } else {
        (fl_hi, (hi - fl_hi) + lo)
    };
    if alpha >= 1.0 {
        fl += 1.0;
        alpha = 0.0;
    }
    (fl as i64, alpha)
}

/// `C(n, j+1) = C(n, j) · (n - j) / (j + 1)`, renormalised.
fn update_binomial(cman: &mut f64, cexpt: &mut i64, n: i64, j: i64) {
    let rat = (n - j) as f64 / (j + 1) as f64;
    let (m, e) = frexp(*cman * rat);
    *cman = m;
    *cexpt += e;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstwo_sf_edges() {
        assert_eq!(kstwo_sf(10, 0.05), 1.0);
        assert_eq!(kstwo_sf(10, 1.0), 0.0);
        assert_eq!(kstwo_sf(10, 0.0), 1.0);
        assert!(kstwo_sf(10, f64::NAN).is_nan());
        // n = 1: D_1 is uniform on [1/2, 1], sf(x) = 2(1 - x).
        assert!((kstwo_sf(1, 0.7) - 0.6).abs() < 1e-15);
    }

    #[test]
    fn smirnov_small_n_closed_forms() {
        // n = 2: P(D+ >= x) = 1 - x... checked against scipy.special.smirnov(2, x).
        assert!((smirnov_sf(1, 0.3) - 0.7).abs() < 1e-16);
        // x >= 1 - 1/n: (1 - x)^n.
        assert!((smirnov_sf(5, 0.9) - 0.1f64.powi(5)).abs() < 1e-18);
    }
}
