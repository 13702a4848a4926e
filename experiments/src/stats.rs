//! The statistics of experiments: sufficient statistics ([`Moments`]), the fixed-horizon
//! tests (Welch's t, the two-proportion z, chi-square goodness of fit for the sample-ratio
//! check), confidence intervals, the always-valid p-value, histogram quantiles and Thompson
//! sampling.
//!
//! Everything here is a pure function of counts and moments; `tests/stats_conformance.rs`
//! checks the tests and intervals against scipy within 1e-9 relative.
//!
//! Special functions and distributions come from `statrs`, used where it is accurate:
//! - Two-sided p-values are survival functions computed straight from the special functions,
//!   never `1 − cdf` (which cancels to 0 below p ≈ 1e-16): t through the regularized
//!   incomplete beta, z and chi-square through the regularized upper incomplete gamma
//!   `Q(a, x)` (scipy does the same through its `sf` functions).
//! - statrs's incomplete beta loses digits at large df (8e-11 relative at df = 1e5, 2e-8 at
//!   1e7, 1e-7 at 1e8 against scipy), so from df = 1e4 on the t tail comes from Hill's
//!   normalizing transformation (`t_two_sided_hill`), within 2e-13 of scipy there.
//! - The normal p-value is `Q(1/2, z²/2)`, not `erfc(|z|/√2)`: statrs 0.19's `erfc` is off
//!   by up to 1e-10 relative on [0.5, 0.75) and [2.25, 3.5) (its rational approximations
//!   there are older than Boost's), while its `gamma_ur` agrees with scipy to ~1e-13 down to
//!   1e-308.
//! - statrs's t quantile (through its inverse incomplete beta, AS 109) is off by up to 2e-7
//!   at large df; `t_quantile` polishes it with Newton steps on the accurate tail.
//! - Its normal quantile is accurate (~3e-16) and used as it is.
//!
//! Nothing here panics on odd input (NaN or infinite moments, levels outside (0, 1)): the
//! functions answer `None` or NaN.

use rand::Rng;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Continuous, ContinuousCDF, Normal, StudentsT};
use statrs::function::beta::checked_beta_reg;
use statrs::function::gamma::checked_gamma_ur;

/// Count, mean and sum of squared deviations from the mean (`m2`) of a stream of
/// observations: Welford's update, Chan et al.'s merge. Stable where the textbook
/// `Σx² − (Σx)²/n` cancels (large means), and mergeable across replicas.
///
/// A streamed mean is rounded at every update, so after n updates it is off by up to about
/// `√n` ulps of itself (4e-9 for 10,000 values around 1e6): it matters only to a difference
/// of two means that is itself a tiny fraction of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Adds one observation (Welford).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Adds the observations `other` summarizes (Chan, Golub & LeVeque's pairwise update).
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let d = other.mean - self.mean;
        self.mean += d * (nb / n);
        self.m2 += other.m2 + d * d * (na * nb / n);
        self.n += other.n;
    }

    /// Sample variance (n − 1 in the denominator); 0 below two observations.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        // m2 is never negative from push or merge; NaN stays NaN.
        let v = self.m2 / (self.n - 1) as f64;
        if v < 0.0 { 0.0 } else { v }
    }

    /// Standard error of the mean, `√(variance/n)`; 0 without observations.
    pub fn std_err(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.variance() / self.n as f64).sqrt()
        }
    }

    /// The moments of a whole slice, in two passes since it is all at hand: the mean from a
    /// compensated (Neumaier) sum — within about an ulp, like numpy's pairwise sum, where a
    /// stream of [`push`](Self::push)es drifts by `√n` ulps — then `m2` from the deviations
    /// with the corrected two-pass formula `Σd² − (Σd)²/n`. The result equals pushing every
    /// value up to those rounding differences.
    pub fn from_slice(xs: &[f64]) -> Moments {
        if xs.is_empty() {
            return Moments::default();
        }
        let n = xs.len() as f64;
        let mean = neumaier_sum(xs) / n;
        let (mut s, mut s2, mut constant) = (0.0, 0.0, true);
        for &x in xs {
            let d = x - mean;
            s += d;
            s2 += d * d;
            constant &= x == xs[0];
        }
        if constant {
            // Exactly 0, as the stream gives (the mean may be an ulp off the constant).
            return Moments {
                n: xs.len() as u64,
                mean: xs[0],
                m2: 0.0,
            };
        }
        let m2 = s2 - s * s / n;
        Moments {
            n: xs.len() as u64,
            mean,
            m2: if m2.is_nan() { s2 } else { m2.max(0.0) },
        }
    }
}

/// Σ xs with Neumaier's compensation (error about one rounding of the result).
fn neumaier_sum(xs: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for &x in xs {
        let t = sum + x;
        c += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    sum + c
}

/// A test's statistic, degrees of freedom (NaN where there are none) and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestResult {
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
}

/// `Q(a, x)`, the regularized upper incomplete gamma function, for `x ≥ 0` (statrs refuses
/// `x = 0`, where it is 1, and `x = ∞`, where it is 0).
fn upper_gamma(a: f64, x: f64) -> f64 {
    if x.is_nan() || a.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    checked_gamma_ur(a, x).unwrap_or(f64::NAN)
}

/// From this many degrees of freedom on, the t tail comes from Hill's normalizing
/// transformation rather than the incomplete beta function.
const HILL_MIN_DF: f64 = 1e4;

/// Two-sided p-value of Student's t with `df` degrees of freedom, `P(|T| ≥ |t|)`.
///
/// Below [`HILL_MIN_DF`] it is `I_x(df/2, 1/2)` with `x = df/(df + t²)`, from statrs's
/// `beta_reg`. That function evaluates `1 − x` itself, and past the mean of the beta
/// distribution it works on `1 − I_{1−x}(b, a)`; with `t² ≪ df`, `x` rounds close to 1 and
/// `1 − x` keeps few correct digits (4e-9 relative at df = 1e5, t = 0.001), so there we make
/// that swap ourselves, with `1 − x = t²/(df + t²)` computed directly (the result is then
/// large and `1 − I` costs nothing).
///
/// At large df statrs's incomplete beta loses digits however it is called (its prefactor
/// takes `ln Γ(a + 1/2) − ln Γ(a)` as a difference of two large numbers and `a·ln x` from a
/// rounded `x`, and its continued fraction stops at 140 terms where `√a` are needed): against
/// scipy it is off by 8e-11 at df = 1e5, 4e-10 at 1e6, 2e-8 at 1e7, 1e-7 at 1e8. There we use
/// [`t_two_sided_hill`], which agrees with scipy to 2e-13 for every df ≥ 1e4.
fn t_two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    let t2 = t * t;
    if t2 == 0.0 {
        return 1.0;
    }
    if t2.is_infinite() {
        return 0.0;
    }
    if df.is_infinite() {
        return upper_gamma(0.5, t2 / 2.0);
    }
    if df >= HILL_MIN_DF {
        return t_two_sided_hill(t2, df);
    }
    let (a, b) = (df / 2.0, 0.5);
    let x = df / (df + t2);
    let y = t2 / (df + t2);
    if x < (a + 1.0) / (a + b + 2.0) {
        checked_beta_reg(a, b, x).unwrap_or(f64::NAN)
    } else {
        1.0 - checked_beta_reg(b, a, y).unwrap_or(f64::NAN)
    }
}

/// The t tail at large df through Hill's transformation to a normal deviate (G. W. Hill,
/// "Algorithm 395: Student's t-distribution", CACM 13(10), 1970, its large-df branch):
/// with `a = df − 1/2`, `z² = a·ln(1 + t²/df)` and
/// `y = z·(1 + (z² + 3 + (−0.4z⁶ − 3.3z⁴ − 24z² − 85.5)/(0.8z⁴ + 100 + 48a²))/(48a²))`,
/// `P(|T| ≥ |t|) ≈ P(|Z| ≥ y)`, with an error that falls quickly with df: within 2e-13
/// relative of scipy for df from 1e4 to 1e9 and t up to where the tail underflows (checked
/// with scipy 1.17; the conformance fixture covers df up to 2e8).
fn t_two_sided_hill(t2: f64, df: f64) -> f64 {
    let a = df - 0.5;
    let b = 48.0 * a * a;
    let z2 = a * (t2 / df).ln_1p();
    let y = z2.sqrt()
        * (1.0
            + ((((-0.4 * z2 - 3.3) * z2 - 24.0) * z2 - 85.5) / (0.8 * z2 * z2 + 100.0 + b)
                + z2
                + 3.0)
                / b);
    upper_gamma(0.5, y * y / 2.0)
}

/// Two-sided p-value of a standard normal z: `P(|Z| ≥ |z|) = Q(1/2, z²/2)`
/// (= `erfc(|z|/√2)`; see the module comment for why not statrs's `erfc`).
fn z_two_sided(z: f64) -> f64 {
    upper_gamma(0.5, z * z / 2.0)
}

/// Whether `level` is a usable confidence level.
fn valid_level(level: f64) -> bool {
    level > 0.0 && level < 1.0
}

/// The normal quantile for a two-sided interval at `level` (1.96 for 0.95).
fn z_quantile(level: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - (1.0 - level) / 2.0)
}

/// The t quantile for a two-sided interval at `level` with `df` degrees of freedom: a first
/// guess (statrs's quantile below [`HILL_MIN_DF`], the normal quantile with its first
/// Cornish–Fisher term above), then Newton steps on `P(|T| ≥ t) = 1 − level` with the
/// accurate tail of [`t_two_sided`]. statrs's quantile alone (its inverse incomplete beta,
/// AS 109) is off by up to 2e-7 relative at df ≈ 2e4.
fn t_quantile(level: f64, df: f64) -> Option<f64> {
    if df.is_infinite() {
        return Some(z_quantile(level));
    }
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let tail = 1.0 - (1.0 - level) / 2.0;
    let target = 2.0 * (1.0 - tail);
    let mut t = if df >= HILL_MIN_DF {
        let z = z_quantile(level);
        z + (z * z * z + z) / (4.0 * df)
    } else {
        dist.inverse_cdf(tail)
    };
    if !t.is_finite() || t <= 0.0 {
        return None;
    }
    for _ in 0..20 {
        let step = (t_two_sided(t, df) - target) / (2.0 * dist.pdf(t));
        if !step.is_finite() {
            break;
        }
        t = (t + step).max(t / 2.0);
        if step.abs() <= 4.0 * f64::EPSILON * t {
            break;
        }
    }
    Some(t)
}

/// Welch's two-sample t-test of b − a, two-sided, as `scipy.stats.ttest_ind(b, a,
/// equal_var=False)`: statistic `(mean_b − mean_a)/√(s_a²/n_a + s_b²/n_b)` with the
/// Welch–Satterthwaite df. `None` below two observations per side or with no variance at
/// all.
pub fn welch_t_test(a: &Moments, b: &Moments) -> Option<TestResult> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let se2 = a.variance() / a.n as f64 + b.variance() / b.n as f64;
    if se2.is_nan() || se2 <= 0.0 {
        return None;
    }
    let t = (b.mean - a.mean) / se2.sqrt();
    let df = welch_df(a, b);
    Some(TestResult {
        statistic: t,
        df,
        p_value: t_two_sided(t, df),
    })
}

/// Welch–Satterthwaite degrees of freedom, `(v_a + v_b)² / (v_a²/(n_a−1) + v_b²/(n_b−1))`
/// with `v = s²/n`, computed on the shares `v/(v_a + v_b)` so that huge variances do not
/// overflow. Needs `n ≥ 2` on both sides and some variance.
fn welch_df(a: &Moments, b: &Moments) -> f64 {
    let (va, vb) = (a.variance() / a.n as f64, b.variance() / b.n as f64);
    let (wa, wb) = (va / (va + vb), vb / (va + vb));
    1.0 / (wa * wa / (a.n - 1) as f64 + wb * wb / (b.n - 1) as f64)
}

/// Two-proportion z-test with the pooled variance, two-sided, of p_b − p_a:
/// `z = (p_b − p_a)/√(p(1−p)(1/n_a + 1/n_b))` with p the pooled proportion (z² is the
/// chi-square of the 2×2 table without continuity correction). `df` is NaN. `None` when a
/// side is empty or the pooled proportion is 0 or 1.
pub fn two_proportion_z_test(
    successes_a: u64,
    n_a: u64,
    successes_b: u64,
    n_b: u64,
) -> Option<TestResult> {
    if n_a == 0 || n_b == 0 || successes_a > n_a || successes_b > n_b {
        return None;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let p = (successes_a as f64 + successes_b as f64) / (na + nb);
    if p <= 0.0 || p >= 1.0 {
        return None;
    }
    let z = (successes_b as f64 / nb - successes_a as f64 / na)
        / (p * (1.0 - p) * (1.0 / na + 1.0 / nb)).sqrt();
    Some(TestResult {
        statistic: z,
        df: f64::NAN,
        p_value: z_two_sided(z),
    })
}

/// Chi-square goodness of fit of `observed` against expected counts proportional to
/// `weights` (any positive scale), as `scipy.stats.chisquare(observed, f_exp=total·w/Σw)`
/// over the arms of positive weight; `df` = those arms − 1. An arm of weight 0 (or a
/// negative or NaN weight) is expected to get nothing: it is left out when it got nothing,
/// and when it got something the mismatch is certain (statistic +∞, p-value 0). `None`
/// without observations or with fewer than two arms of positive weight. Arms past the end
/// of the shorter slice are ignored.
pub fn chi_square_gof(observed: &[u64], weights: &[f64]) -> Option<TestResult> {
    let k = observed.len().min(weights.len());
    let (observed, weights) = (&observed[..k], &weights[..k]);
    let total: u64 = observed.iter().sum();
    let arms = weights.iter().filter(|&&w| w > 0.0).count();
    if total == 0 || arms < 2 {
        return None;
    }
    let df = (arms - 1) as f64;
    let wsum: f64 = weights.iter().filter(|&&w| w > 0.0).sum();
    let mut stat = 0.0;
    for (&o, &w) in observed.iter().zip(weights) {
        if w > 0.0 {
            let e = total as f64 * w / wsum;
            let d = o as f64 - e;
            stat += d * d / e;
        } else if o > 0 {
            return Some(TestResult {
                statistic: f64::INFINITY,
                df,
                p_value: 0.0,
            });
        }
    }
    Some(TestResult {
        statistic: stat,
        df,
        p_value: upper_gamma(df / 2.0, stat / 2.0),
    })
}

/// Confidence interval of a mean at `level` (e.g. 0.95), normal approximation:
/// `mean ± z·√(s²/n)`. For a proportion, pass the moments of its 0/1 outcomes. `None` below
/// two observations or for a level outside (0, 1).
pub fn mean_ci(m: &Moments, level: f64) -> Option<(f64, f64)> {
    if m.n < 2 || !valid_level(level) {
        return None;
    }
    let h = z_quantile(level) * m.std_err();
    Some((m.mean - h, m.mean + h))
}

/// b against a: the difference and the relative lift, each with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    pub difference: f64,
    pub difference_ci: (f64, f64),
    /// `(mean_b − mean_a)/mean_a`; `None` when `mean_a` is 0.
    pub relative_lift: Option<f64>,
    pub relative_lift_ci: Option<(f64, f64)>,
}

/// The difference `mean_b − mean_a` with a Welch interval (t quantile at the
/// Welch–Satterthwaite df; a zero-width interval when neither side varies), and the
/// relative lift `(mean_b − mean_a)/mean_a` with the delta-method interval GrowthBook uses,
/// `var = s_b²/(μ_a² n_b) + s_a² μ_b²/(μ_a⁴ n_a)` with the normal quantile. `None` below two
/// observations per side or for a level outside (0, 1).
pub fn compare(a: &Moments, b: &Moments, level: f64) -> Option<Comparison> {
    if a.n < 2 || b.n < 2 || !valid_level(level) {
        return None;
    }
    let difference = b.mean - a.mean;
    let se2 = a.variance() / a.n as f64 + b.variance() / b.n as f64;
    let difference_ci = if se2 > 0.0 {
        let h = t_quantile(level, welch_df(a, b))? * se2.sqrt();
        (difference - h, difference + h)
    } else {
        (difference, difference)
    };
    let (ma, mb) = (a.mean, b.mean);
    let (relative_lift, relative_lift_ci) = if ma != 0.0 {
        let lift = difference / ma;
        let var = b.variance() / (ma * ma * b.n as f64)
            + a.variance() * mb * mb / (ma * ma * ma * ma * a.n as f64);
        let h = z_quantile(level) * var.sqrt();
        (Some(lift), Some((lift - h, lift + h)))
    } else {
        (None, None)
    };
    Some(Comparison {
        difference,
        difference_ci,
        relative_lift,
        relative_lift_ci,
    })
}

/// GrowthBook's default tuning N* of the sequential test: the sample size at which its
/// confidence sequence is tightest.
pub const DEFAULT_SEQUENTIAL_TUNING: f64 = 5000.0;

/// The always-valid p-value at one look and the matching confidence sequence for b − a.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlwaysValid {
    pub p_value: f64,
    pub ci: (f64, f64),
}

/// Mixture SPRT (Johari, Pekelis & Walsh 2022) for b − a in the asymptotic
/// confidence-sequence form of Waudby-Smith et al. 2023, as GrowthBook computes it.
/// With θ̂ = mean_b − mean_a, V = s_a²/n_a + s_b²/n_b, z = θ̂/√V, the effective sample size
/// n = (s_a² + s_b²)/V and ρ² = (−2 ln α + ln(−2 ln α + 1))/N* (`tuning` = N*):
///
/// log Λ = nρ² z² / (2(nρ² + 1)) − ½ ln(nρ² + 1), p = min(1, 1/Λ),
///
/// and the confidence sequence θ̂ ± √V·√(2(nρ² + 1)/(nρ²) · ln(√(nρ² + 1)/α)), which is the
/// set of θ whose log Λ stays below ln(1/α): it excludes 0 exactly when p < α.
///
/// This is one look's value; the p-value that stays valid under continuous monitoring is the
/// running minimum over looks ([`running_min`]). `None` below two observations per side,
/// without variance, or for α outside (0, 1) or a tuning that is not positive.
pub fn always_valid(a: &Moments, b: &Moments, alpha: f64, tuning: f64) -> Option<AlwaysValid> {
    if a.n < 2 || b.n < 2 || !valid_level(alpha) || !(tuning > 0.0 && tuning.is_finite()) {
        return None;
    }
    let (sa, sb) = (a.variance(), b.variance());
    let v = sa / a.n as f64 + sb / b.n as f64;
    if !(v > 0.0 && v.is_finite()) {
        return None;
    }
    let theta = b.mean - a.mean;
    let z = theta / v.sqrt();
    let n_eff = (sa + sb) / v;
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (l + 1.0).ln()) / tuning;
    let nr = n_eff * rho2;
    let log_lambda = nr * z * z / (2.0 * (nr + 1.0)) - 0.5 * nr.ln_1p();
    let p_value = (-log_lambda).exp().min(1.0);
    let half = v.sqrt() * (2.0 * (nr + 1.0) / nr * (0.5 * nr.ln_1p() - alpha.ln())).sqrt();
    Some(AlwaysValid {
        p_value,
        ci: (theta - half, theta + half),
    })
}

/// The always-valid p-value's running minimum: `now` at the first look, then the smallest
/// value seen.
pub fn running_min(prev: Option<f64>, now: f64) -> f64 {
    match prev {
        Some(p) if !now.is_nan() => p.min(now),
        Some(p) => p,
        None => now,
    }
}

/// Quantile `q` (0–1) of a histogram, as Prometheus's `histogram_quantile`: `upper_bounds`
/// are the buckets' upper bounds (`le`, ascending; the last is normally +∞), `counts` the
/// observations per bucket (not cumulative). The quantile's bucket is the first whose
/// cumulative count reaches `q·total`; the value is interpolated linearly inside it, the
/// first bucket starting at 0 (or answering its upper bound when that is ≤ 0); a quantile
/// that falls in the +∞ bucket answers the last finite bound. Empty buckets are skipped, so
/// `q = 0` answers the lower bound of the first non-empty bucket. `None` without
/// observations, with slices of different lengths, or for `q` outside [0, 1].
pub fn histogram_quantile(upper_bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || upper_bounds.len() != counts.len() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, (&ub, &c)) in upper_bounds.iter().zip(counts).enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            if i == 0 && ub <= 0.0 {
                return Some(ub);
            }
            let lower = if i == 0 { 0.0 } else { upper_bounds[i - 1] };
            if ub.is_infinite() {
                return (i > 0).then_some(lower);
            }
            return Some(lower + (ub - lower) * ((rank - below as f64) / c as f64));
        }
        below += c;
    }
    None
}

/// An arm's reward posterior for Thompson sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Posterior {
    /// Binary rewards: Beta(1 + successes, 1 + failures), the posterior of a uniform prior.
    Beta { successes: u64, failures: u64 },
    /// Continuous rewards: Normal(mean, s²/n), the large-sample posterior of the mean under a
    /// flat prior. Below two rewards there is no s²: it is taken as 1 (and n as 1, the mean as
    /// observed, 0 without rewards), so a new arm is explored widely — callers that know the
    /// reward's scale should wait for a few rewards per arm before trusting the shares.
    Normal { moments: Moments },
}

impl Posterior {
    /// One draw; NaN when the parameters are not finite (such a draw never wins).
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            Posterior::Beta {
                successes,
                failures,
            } => rand_distr::Beta::new(1.0 + successes as f64, 1.0 + failures as f64)
                .map_or(f64::NAN, |d| d.sample(rng)),
            Posterior::Normal { moments } => {
                let var = if moments.n < 2 {
                    1.0
                } else {
                    moments.variance()
                };
                let sd = (var / moments.n.max(1) as f64).sqrt();
                if sd > 0.0 {
                    rand_distr::Normal::new(moments.mean, sd).map_or(f64::NAN, |d| d.sample(rng))
                } else {
                    moments.mean
                }
            }
        }
    }
}

/// Probability that each arm is the best, estimated from `draws` joint draws of the
/// posteriors: the share of draws each arm wins (ties to the lower index). Sums to 1 (all
/// zeros without posteriors or draws). With one draw this is plain Thompson sampling: the
/// winner is the arm to play.
pub fn thompson_shares<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    draws: usize,
    rng: &mut R,
) -> Vec<f64> {
    let mut wins = vec![0usize; posteriors.len()];
    if posteriors.is_empty() || draws == 0 {
        return vec![0.0; posteriors.len()];
    }
    for _ in 0..draws {
        let mut best = (0, f64::NEG_INFINITY);
        for (i, p) in posteriors.iter().enumerate() {
            let x = p.sample(rng);
            if x > best.1 {
                best = (i, x);
            }
        }
        wins[best.0] += 1;
    }
    wins.into_iter().map(|w| w as f64 / draws as f64).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn pushed(xs: &[f64]) -> Moments {
        let mut m = Moments::default();
        for &x in xs {
            m.push(x);
        }
        m
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / a.abs().max(b.abs())
    }

    #[test]
    fn merge_equals_pushing_everything() {
        let xs: Vec<f64> = (0..1000).map(|i| 1e6 + (i as f64 * 0.37).sin()).collect();
        let all = pushed(&xs);
        for cut in [0, 1, 313, 999, 1000] {
            let mut m = pushed(&xs[..cut]);
            m.merge(&pushed(&xs[cut..]));
            assert_eq!(m.n, all.n);
            assert!((m.mean - all.mean).abs() < 1e-8, "cut {cut}: {m:?} {all:?}");
            assert!(
                rel(m.variance(), all.variance()) < 1e-9,
                "cut {cut}: {m:?} {all:?}"
            );
        }
        // Many small parts, as replicas would send them.
        let mut m = Moments::default();
        for chunk in xs.chunks(7) {
            m.merge(&pushed(chunk));
        }
        assert_eq!(m.n, 1000);
        assert!(rel(m.variance(), all.variance()) < 1e-9);
        // from_slice agrees with the stream.
        let s = Moments::from_slice(&xs);
        assert_eq!(s.n, 1000);
        assert!((s.mean - all.mean).abs() < 1e-8);
        assert!(rel(s.variance(), all.variance()) < 1e-9);
    }

    #[test]
    fn welford_is_stable_where_sums_of_squares_cancel() {
        // A spread of 0.01 around 1e9: Σx² − (Σx)²/n loses everything there.
        let xs: Vec<f64> = (0..10_000).map(|i| 1e9 + (i % 100) as f64 * 1e-4).collect();
        // The reference: x − 1e9 is exact (Sterbenz), and small numbers do not cancel.
        let exact = {
            let d: Vec<f64> = xs.iter().map(|x| x - 1e9).collect();
            let mean = d.iter().sum::<f64>() / d.len() as f64;
            d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 9999.0
        };
        let (s, s2) = xs.iter().fold((0.0, 0.0), |(s, s2), x| (s + x, s2 + x * x));
        let naive = (s2 - s * s / 1e4) / 9999.0;
        assert!(rel(naive, exact) > 0.5, "naive {naive} exact {exact}");
        assert!(
            rel(pushed(&xs).variance(), exact) < 1e-4,
            "{:?}",
            pushed(&xs)
        );
        assert!(rel(Moments::from_slice(&xs).variance(), exact) < 1e-4);
    }

    #[test]
    fn constants_have_zero_variance() {
        for c in [3.0, 0.1, -7.25e8, 1e-300] {
            for n in [1, 2, 10, 1001] {
                let xs = vec![c; n];
                assert_eq!(pushed(&xs).variance(), 0.0, "{c} x {n}");
                assert_eq!(Moments::from_slice(&xs).variance(), 0.0, "{c} x {n}");
            }
        }
        assert_eq!(Moments::default().variance(), 0.0);
        assert_eq!(Moments::default().std_err(), 0.0);
        assert_eq!(Moments::from_slice(&[]), Moments::default());
    }

    #[test]
    fn degenerate_inputs_give_none() {
        let one = Moments::from_slice(&[1.0]);
        let two = Moments::from_slice(&[1.0, 2.0]);
        let flat = Moments::from_slice(&[1.0, 1.0]);
        let other_flat = Moments::from_slice(&[4.0, 4.0, 4.0]);
        assert!(welch_t_test(&one, &two).is_none());
        assert!(welch_t_test(&two, &one).is_none());
        assert!(welch_t_test(&Moments::default(), &two).is_none());
        assert!(welch_t_test(&flat, &other_flat).is_none());
        // One side constant is fine.
        assert!(welch_t_test(&flat, &two).is_some());
        assert!(two_proportion_z_test(0, 10, 0, 10).is_none());
        assert!(two_proportion_z_test(10, 10, 5, 5).is_none());
        assert!(two_proportion_z_test(1, 0, 0, 10).is_none());
        assert!(two_proportion_z_test(11, 10, 0, 10).is_none());
        assert!(chi_square_gof(&[0, 0], &[1.0, 1.0]).is_none());
        assert!(chi_square_gof(&[5, 5], &[1.0, 0.0]).is_none());
        assert!(chi_square_gof(&[], &[]).is_none());
        assert!(mean_ci(&one, 0.95).is_none());
        for level in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(mean_ci(&two, level).is_none(), "{level}");
            assert!(compare(&two, &two, level).is_none(), "{level}");
            assert!(
                always_valid(&flat, &two, level, 5000.0).is_none(),
                "{level}"
            );
        }
        assert!(always_valid(&flat, &other_flat, 0.05, 5000.0).is_none());
        assert!(always_valid(&two, &two, 0.05, 0.0).is_none());
    }

    #[test]
    fn odd_values_do_not_panic() {
        let huge = Moments::from_slice(&[1e150, -1e150, 1e150]);
        let nan = Moments {
            n: 3,
            mean: f64::NAN,
            m2: f64::NAN,
        };
        let inf = Moments {
            n: 3,
            mean: 1.0,
            m2: f64::INFINITY,
        };
        let two = Moments::from_slice(&[1.0, 2.0]);
        for (a, b) in [(huge, two), (nan, two), (inf, two), (two, inf), (nan, nan)] {
            let _ = welch_t_test(&a, &b);
            let _ = compare(&a, &b, 0.95);
            let _ = always_valid(&a, &b, 0.05, 5000.0);
            let _ = mean_ci(&a, 0.95);
            let _ = thompson_shares(
                &[
                    Posterior::Normal { moments: a },
                    Posterior::Normal { moments: b },
                ],
                10,
                &mut rand::rngs::StdRng::seed_from_u64(0),
            );
        }
        assert_eq!(t_two_sided(f64::INFINITY, 3.0), 0.0);
        assert_eq!(t_two_sided(0.0, 3.0), 1.0);
        assert!(t_two_sided(f64::NAN, 3.0).is_nan());
        assert_eq!(z_two_sided(f64::INFINITY), 0.0);
        assert_eq!(z_two_sided(0.0), 1.0);
        assert_eq!(z_two_sided(1e-200), 1.0);
        // Welch df does not overflow with huge variances.
        let t = welch_t_test(&huge, &Moments::from_slice(&[1e150, -1e150])).unwrap();
        assert!(t.df.is_finite() && t.df > 0.0, "{t:?}");
    }

    #[test]
    fn tails_do_not_cancel() {
        // 1 − cdf would be 0 far below p = 1e-16.
        let p = t_two_sided(1e3, 10.0);
        assert!(p > 0.0 && p < 1e-25, "{p}");
        assert!(t_two_sided(12.0, 2e4) > 0.0);
        // z = 37: p ≈ 5.7e-300, not 0 (statrs flushes results below ~1e-308 to 0).
        assert!(z_two_sided(37.0) > 0.0);
        // A t far in the tail of a large df is close to the normal's (by about t⁴/(4 df)).
        let (pt, pz) = (t_two_sided(8.0, 1e7), z_two_sided(8.0));
        assert!(pt > pz && rel(pt, pz) < 3e-4, "{pt} {pz}");
        // The two methods meet at HILL_MIN_DF.
        for t in [0.01, 1.0, 2.0, 5.0, 20.0] {
            let below = t_two_sided(t, HILL_MIN_DF * (1.0 - 1e-12));
            let above = t_two_sided(t, HILL_MIN_DF);
            assert!(rel(below, above) < 1e-10, "t {t}: {below} {above}");
        }
    }

    #[test]
    fn t_quantile_inverts_the_tail() {
        for df in [1.0, 1.5, 3.0, 30.0, 2e4, 1e6] {
            for level in [0.5, 0.8, 0.95, 0.999] {
                let t = t_quantile(level, df).unwrap();
                let p = t_two_sided(t, df);
                assert!(
                    rel(p, 1.0 - level) < 1e-12,
                    "df {df} level {level}: t {t} p {p}"
                );
            }
        }
        // The normal limit.
        assert!(rel(t_quantile(0.95, 1e12).unwrap(), 1.959963984540054) < 1e-9);
    }

    #[test]
    fn zero_weight_arms_are_skipped_unless_observed() {
        let t = chi_square_gof(&[50, 50, 0], &[1.0, 1.0, 0.0]).unwrap();
        assert_eq!((t.statistic, t.df, t.p_value), (0.0, 1.0, 1.0));
        let t = chi_square_gof(&[50, 60, 0, 0], &[1.0, 1.0, 0.0, 1.0]).unwrap();
        assert_eq!(t.df, 2.0);
        let t = chi_square_gof(&[50, 50, 1], &[1.0, 1.0, 0.0]).unwrap();
        assert_eq!((t.statistic, t.df, t.p_value), (f64::INFINITY, 1.0, 0.0));
        // Weights need not sum to 1.
        let a = chi_square_gof(&[700, 300], &[70.0, 30.0]).unwrap();
        let b = chi_square_gof(&[700, 300], &[0.7, 0.3]).unwrap();
        assert!(a.statistic < 1e-20 && b.statistic < 1e-20, "{a:?} {b:?}");
    }

    #[test]
    fn confidence_sequence_agrees_with_the_p_value() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut both = [0usize; 2];
        for shift in [0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2] {
            for n in [20, 50, 500, 2000, 5000] {
                for alpha in [0.01, 0.05, 0.1] {
                    let a: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
                    let b: Vec<f64> = (0..n).map(|_| rng.random::<f64>() + shift).collect();
                    let (ma, mb) = (Moments::from_slice(&a), Moments::from_slice(&b));
                    let av = always_valid(&ma, &mb, alpha, DEFAULT_SEQUENTIAL_TUNING).unwrap();
                    let excludes_zero = av.ci.0 > 0.0 || av.ci.1 < 0.0;
                    assert_eq!(
                        excludes_zero,
                        av.p_value < alpha,
                        "{shift} {n} {alpha}: {av:?}"
                    );
                    both[usize::from(excludes_zero)] += 1;
                    // The sequence is wider than the fixed-horizon interval.
                    let fixed = compare(&ma, &mb, 1.0 - alpha).unwrap().difference_ci;
                    assert!(av.ci.1 - av.ci.0 > fixed.1 - fixed.0);
                }
            }
        }
        // Both outcomes occurred, so the equivalence was tested both ways.
        assert!(both[0] > 10 && both[1] > 10, "{both:?}");
        // At the boundary: θ̂ exactly at the half-width gives p = α.
        let a = Moments::from_slice(&[0.0, 1.0, 2.0, 3.0]);
        let probe = always_valid(&a, &a, 0.05, 5000.0).unwrap();
        let half = probe.ci.1;
        let b = Moments {
            mean: a.mean + half,
            ..a
        };
        let av = always_valid(&a, &b, 0.05, 5000.0).unwrap();
        assert!(rel(av.p_value, 0.05) < 1e-12, "{av:?}");
    }

    #[test]
    fn running_min_keeps_the_smallest() {
        assert_eq!(running_min(None, 0.3), 0.3);
        assert_eq!(running_min(Some(0.3), 0.5), 0.3);
        assert_eq!(running_min(Some(0.3), 0.1), 0.1);
        assert_eq!(running_min(Some(0.3), f64::NAN), 0.3);
    }

    #[test]
    fn thompson_picks_a_clearly_better_arm() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let shares = thompson_shares(
            &[
                Posterior::Beta {
                    successes: 10,
                    failures: 90,
                },
                Posterior::Beta {
                    successes: 40,
                    failures: 60,
                },
                Posterior::Beta {
                    successes: 12,
                    failures: 88,
                },
            ],
            4000,
            &mut rng,
        );
        assert!(
            (shares.iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "{shares:?}"
        );
        assert!(shares[1] > 0.95, "{shares:?}");

        let normal = |xs: &[f64]| Posterior::Normal {
            moments: Moments::from_slice(xs),
        };
        let lo: Vec<f64> = (0..200).map(|i| (i % 10) as f64).collect();
        let hi: Vec<f64> = lo.iter().map(|x| x + 2.0).collect();
        let shares = thompson_shares(&[normal(&lo), normal(&hi)], 4000, &mut rng);
        assert!(
            (shares.iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "{shares:?}"
        );
        assert!(shares[1] > 0.95, "{shares:?}");

        // Equal posteriors split evenly; an arm without rewards still gets explored.
        let same = [normal(&lo), normal(&lo)];
        let shares = thompson_shares(&same, 4000, &mut rng);
        assert!((shares[0] - 0.5).abs() < 0.05, "{shares:?}");
        let fresh = Posterior::Normal {
            moments: Moments::default(),
        };
        let shares = thompson_shares(&[normal(&[0.5, 0.4, 0.6]), fresh], 4000, &mut rng);
        assert!(shares[1] > 0.2, "{shares:?}");
        assert_eq!(thompson_shares(&[], 10, &mut rng), Vec::<f64>::new());
        assert_eq!(thompson_shares(&same, 0, &mut rng), vec![0.0, 0.0]);
    }

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let ub = [1.0, 2.0, 4.0, f64::INFINITY];
        // 10 in (0,1], 10 in (1,2], 20 in (2,4], 0 above.
        let c = [10, 10, 20, 0];
        assert_eq!(histogram_quantile(&ub, &c, 0.25), Some(1.0));
        assert_eq!(histogram_quantile(&ub, &c, 0.5), Some(2.0));
        assert_eq!(histogram_quantile(&ub, &c, 0.75), Some(3.0));
        assert_eq!(histogram_quantile(&ub, &c, 1.0), Some(4.0));
        assert_eq!(histogram_quantile(&ub, &c, 0.0), Some(0.0));
        assert_eq!(histogram_quantile(&ub, &[0, 0, 0, 5], 0.5), Some(4.0));
        assert_eq!(histogram_quantile(&ub, &[0, 3, 0, 5], 0.0), Some(1.0));
        assert_eq!(histogram_quantile(&ub, &[0; 4], 0.5), None);
        assert_eq!(histogram_quantile(&ub, &c, 1.5), None);
        assert_eq!(histogram_quantile(&ub, &c, f64::NAN), None);
        assert_eq!(histogram_quantile(&ub, &c[..3], 0.5), None);
        assert_eq!(histogram_quantile(&[f64::INFINITY], &[3], 0.5), None);
        assert_eq!(
            histogram_quantile(&[-1.0, 1.0, f64::INFINITY], &[2, 2, 0], 0.25),
            Some(-1.0)
        );
    }
}
