//! Distance kernels and the distance the HNSW graph is built on.
//!
//! The kernels are plain Rust written so that LLVM vectorises them (16 independent
//! accumulators), compiled twice: for the baseline target and, selected once at run time, for
//! AVX2 + FMA. hnsw_rs's own SIMD (`simdeez_f`) is left off.
//!
//! hnsw_rs needs distances that are `>= 0` and never NaN (it asserts the sign and panics on
//! NaN), so [`IndexDistance`] maps every metric into `[0, inf)` and turns a NaN into `f32::MAX`.
//! Inputs are validated before they get here ([`prepare_vector`]), so that is a last resort.

use hnsw_rs::anndists::dist::Distance;

use crate::config::Metric;
use crate::error::{Error, Result};

const LANES: usize = 16;

/// The loop every kernel shares: `step(x, y, acc)` folds one pair of coordinates into an
/// accumulator, over `LANES` independent accumulators (so LLVM vectorises it), then the tail.
#[inline(always)]
fn fold(a: &[f32], b: &[f32], step: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = step(x[i], y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = step(*x, *y, s);
    }
    s
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    fold(a, b, |x, y, acc| x.mul_add(y, acc))
}

#[inline(always)]
fn l2sq_portable(a: &[f32], b: &[f32]) -> f32 {
    fold(a, b, |x, y, acc| (x - y).mul_add(x - y, acc))
}

// Without the `fma` target feature, `mul_add` is a libm call: the baseline kernels use a plain
// multiply-add instead.
#[inline(always)]
fn dot_baseline(a: &[f32], b: &[f32]) -> f32 {
    fold(a, b, |x, y, acc| acc + x * y)
}

#[inline(always)]
fn l2sq_baseline(a: &[f32], b: &[f32]) -> f32 {
    fold(a, b, |x, y, acc| acc + (x - y) * (x - y))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot_portable(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        super::l2sq_portable(a, b)
    }
}

type Kernel = fn(&[f32], &[f32]) -> f32;

/// The dot-product and squared-L2 kernels for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub dot: Kernel,
    pub l2sq: Kernel,
}

impl Kernels {
    pub fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: both features were detected on this CPU just above, and these wrappers
            // are only ever selected here.
            fn dot(a: &[f32], b: &[f32]) -> f32 {
                unsafe { avx2::dot(a, b) }
            }
            fn l2sq(a: &[f32], b: &[f32]) -> f32 {
                unsafe { avx2::l2sq(a, b) }
            }
            return Kernels { dot, l2sq };
        }
        Kernels {
            dot: dot_baseline,
            l2sq: l2sq_baseline,
        }
    }
}

/// Dot product with the fastest kernel for this CPU.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance with the fastest kernel for this CPU.
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2sq)(a, b)
}

fn kernels() -> &'static Kernels {
    static K: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    K.get_or_init(Kernels::detect)
}

/// The distance the graph is built and searched on: lower is closer, always in `[0, inf)`.
///
/// - cosine: `1 - dot` of normalised vectors;
/// - l2: squared Euclidean distance;
/// - dot: a strictly decreasing map of the dot product into `(0, inf)` (`1 / (1 + d)` for
///   `d >= 0`, `1 - d` below), so the order is exactly that of `-dot`.
#[derive(Clone, Copy)]
pub struct IndexDistance {
    metric: Metric,
    k: Kernels,
}

impl IndexDistance {
    pub fn new(metric: Metric) -> IndexDistance {
        IndexDistance {
            metric,
            k: *kernels(),
        }
    }

    #[inline]
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = match self.metric {
            Metric::Cosine => 1.0 - (self.k.dot)(a, b),
            Metric::L2 => (self.k.l2sq)(a, b),
            Metric::Dot => {
                let d = (self.k.dot)(a, b);
                if d >= 0.0 { 1.0 / (1.0 + d) } else { 1.0 - d }
            }
        };
        if d >= 0.0 {
            d
        } else if d.is_nan() {
            f32::MAX
        } else {
            0.0
        }
    }

    /// The score reported to users for a stored vector `v` and query `q`.
    pub fn score(&self, q: &[f32], v: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine | Metric::Dot => (self.k.dot)(q, v),
            Metric::L2 => (self.k.l2sq)(q, v).sqrt(),
        }
    }
}

impl Distance<f32> for IndexDistance {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        self.distance(va, vb)
    }
}

/// Largest accepted norm: keeps every dot product and squared distance finite in f32.
const MAX_NORM: f64 = 1e15;

/// Checks a vector before it reaches the index — dimension, NaN / infinity, norm (zero under
/// cosine, overflow) — and normalises it for cosine. `what` names it in the error
/// ("point 7", "query").
pub fn prepare_vector(
    collection: &str,
    metric: Metric,
    dim: usize,
    mut v: Vec<f32>,
    what: &dyn std::fmt::Display,
) -> Result<Vec<f32>> {
    if v.len() != dim {
        return Err(Error::Dimension {
            collection: collection.to_owned(),
            what: what.to_string(),
            expected: dim,
            got: v.len(),
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        let kind = if v[i].is_nan() { "NaN" } else { "infinite" };
        return Err(Error::InvalidVector(format!(
            "{what}: vector element {i} is {kind}; vectors must be finite"
        )));
    }
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > MAX_NORM {
        return Err(Error::InvalidVector(format!(
            "{what}: vector norm {norm:e} is too large (at most {MAX_NORM:e})"
        )));
    }
    if metric == Metric::Cosine {
        if norm == 0.0 || !((norm as f32).is_normal()) {
            return Err(Error::InvalidVector(format!(
                "{what}: zero vector: cosine similarity is undefined for a vector of norm 0"
            )));
        }
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_agree_with_naive() {
        for n in [1, 3, 15, 16, 17, 33, 128, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
            let want = naive_dot(&a, &b);
            assert!(
                (dot(&a, &b) - want).abs() <= 1e-3 * want.abs().max(1.0),
                "n={n}"
            );
            assert!((dot_baseline(&a, &b) - want).abs() <= 1e-3 * want.abs().max(1.0));
            let want: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((l2sq(&a, &b) - want).abs() <= 1e-3 * want.max(1.0), "n={n}");
            assert!((l2sq_baseline(&a, &b) - want).abs() <= 1e-3 * want.max(1.0));
        }
    }

    #[test]
    fn dot_distance_is_positive_and_order_preserving() {
        let d = IndexDistance::new(Metric::Dot);
        let q = [1.0f32, 0.0];
        let vs = [
            [-50.0f32, 0.0],
            [-1.0, 0.0],
            [0.0, 1.0],
            [0.5, 0.0],
            [3.0, 0.0],
            [1e6, 0.0],
        ];
        let ds: Vec<f32> = vs.iter().map(|v| d.distance(&q, v)).collect();
        assert!(ds.iter().all(|x| *x > 0.0), "{ds:?}");
        assert!(ds.windows(2).all(|w| w[0] > w[1]), "{ds:?}");
    }

    #[test]
    fn nan_never_escapes() {
        let d = IndexDistance::new(Metric::L2);
        assert_eq!(d.distance(&[f32::NAN], &[1.0]), f32::MAX);
        let c = IndexDistance::new(Metric::Cosine);
        assert!(c.distance(&[1.0000001, 0.0], &[1.0, 0.0]) >= 0.0);
    }

    #[test]
    fn prepare_checks() {
        let p = |m, v: Vec<f32>| prepare_vector("c", m, 3, v, &"point 1");
        let e = p(Metric::L2, vec![1.0, 2.0]).unwrap_err();
        assert!(
            e.to_string().contains("dimension 2") && e.to_string().contains("expects 3"),
            "{e}"
        );
        let e = p(Metric::L2, vec![1.0, f32::NAN, 0.0]).unwrap_err();
        assert!(e.to_string().contains("element 1 is NaN"), "{e}");
        let e = p(Metric::Dot, vec![1.0, f32::INFINITY, 0.0]).unwrap_err();
        assert!(e.to_string().contains("infinite"), "{e}");
        let e = p(Metric::Cosine, vec![0.0; 3]).unwrap_err();
        assert!(e.to_string().contains("zero vector"), "{e}");
        assert!(p(Metric::L2, vec![0.0; 3]).is_ok());
        let e = p(Metric::Dot, vec![1e30, 0.0, 0.0]).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        let v = p(Metric::Cosine, vec![3.0, 4.0, 0.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
