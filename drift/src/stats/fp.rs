//! Floating-point building blocks the ports need and `std` lacks: C's `frexp` / `ldexp`, an
//! exact product, and powers far below f64's range kept as (significand, exponent).

/// C's `frexp`: `x = m · 2^e` with `0.5 <= |m| < 1` (`m = x`, `e = 0` for 0, ±inf and NaN).
pub(crate) fn frexp(x: f64) -> (f64, i64) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let (x, bias) = if x.abs() < f64::MIN_POSITIVE {
        (x * 2f64.powi(64), -64) // subnormal: scale into the normal range first
    } else {
        (x, 0)
    };
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let man = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (man, exp + bias)
}

/// C's `ldexp`: `x · 2^e`, for any `e` (over- and underflows as the product would).
pub(crate) fn ldexp(mut x: f64, mut e: i64) -> f64 {
    const STEP: i64 = 1000;
    while e > STEP && x.is_finite() && x != 0.0 {
        x *= 2f64.powi(STEP as i32);
        e -= STEP;
    }
    while e < -STEP && x != 0.0 && x.is_finite() {
        x *= 2f64.powi(-STEP as i32);
        e += STEP;
    }
    x * 2f64.powi(e as i32)
}

/// `a · b = hi + lo` exactly (for products that neither over- nor underflow).
pub(crate) fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let hi = a * b;
    (hi, a.mul_add(b, -hi))
}

/// `y^m` as `(significand, exponent)`, `y^m = s · 2^e`, for `y` of any sign and magnitude and
/// `m` large enough that the power leaves f64's range (xsf's `pow2Scaled_D`, in f64).
///
/// The significand of `y` is raised with libm's `pow` in chunks that stay above 2^-1000, so
/// the error is that of `pow` (under an ulp) per chunk, plus the input's own relative error
/// times `m` (which no method avoids).
pub(crate) fn pow_scaled(y: f64, m: u64) -> (f64, i64) {
    if m == 0 {
        return (1.0, 0);
    }
    if y == 0.0 {
        return (0.0, 0);
    }
    let (f, e) = frexp(y.abs());
    let (s, se) = pow_significand(f, m);
    let sign = if y < 0.0 && m % 2 == 1 { -1.0 } else { 1.0 };
    (sign * s, se + e * m as i64)
}

/// `f^m` for `0.5 <= f < 1` as `(significand, exponent)`.
fn pow_significand(f: f64, m: u64) -> (f64, i64) {
    let lg = -f.log2(); // in (0, 1]
    if lg * m as f64 <= 1000.0 {
        return frexp(f.powf(m as f64));
    }
    // f^chunk >= 2^-1000: f^m = (f^chunk)^q · f^r.
    let chunk = ((1000.0 / lg).floor() as u64).max(1);
    let (q, r) = (m / chunk, m % chunk);
    let (c, ce) = frexp(f.powf(chunk as f64));
    let (cq, cqe) = pow_significand(c, q);
    let (rr, re) = frexp(f.powf(r as f64));
    let (s, se) = frexp(cq * rr);
    (s, se + cqe + ce * q as i64 + re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_ldexp_round_trip() {
        for x in [1.0, 0.75, 3.0e-310, 1.5e300, -6.0, 2f64.powi(-1074)] {
            let (m, e) = frexp(x);
            assert!((0.5..1.0).contains(&m.abs()), "{x}: {m}");
            assert_eq!(ldexp(m, e), x);
        }
        assert_eq!(ldexp(1.0, -1074), 2f64.powi(-1074));
        assert_eq!(ldexp(0.75, 2000), f64::INFINITY);
        assert_eq!(ldexp(0.75, -2000), 0.0);
    }

    #[test]
    fn pow_scaled_matches_logs() {
        for (y, m) in [
            (0.3, 5u64),
            (0.999, 200_000),
            (0.51, 50_000),
            (-0.7, 3),
            (1.7, 4000),
        ] {
            let (s, e) = pow_scaled(y, m);
            let got = s.abs().ln() + e as f64 * std::f64::consts::LN_2;
            let want = m as f64 * y.abs().ln();
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{y}^{m}");
            assert_eq!(s < 0.0, y < 0.0 && m % 2 == 1);
        }
        assert_eq!(pow_scaled(0.25, 3), (0.5, -5));
    }
}
