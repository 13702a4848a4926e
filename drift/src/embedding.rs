//! Drift of vector columns (embeddings). Owned by the embedding/performance helper.
//!
//! Samples are row-major `[n, dim]` `f32` slices (what the models output): `n = len / dim`
//! rows of `dim` values. Everything is computed in `f64` (each `f32` converts exactly).
//!
//! Two methods:
//!
//! - [`mmd_test`]: the maximum mean discrepancy test of Alibi Detect's `MMDDrift` (Gaussian RBF
//!   kernel, median-heuristic bandwidth, permutation p-value), at least two rows per side.
//! - [`mean_distance`]: Evidently's embeddings `distance` drift method with its defaults (the
//!   euclidean distance between the mean embeddings, drift when it exceeds
//!   [`MEAN_DISTANCE_THRESHOLD`]), at least one row per side.
//!
//! Invalid input (a `dim` of 0, a length that is not a multiple of `dim`, too few rows, a
//! non-finite value) is an [`EmbeddingError`] from the `try_` functions; the plain functions
//! answer NaN there instead.
//!
//! `tests/fixtures/gen_drift_embedding.py` is the reference (NumPy transcriptions of Alibi's
//! and Evidently's code, and Evidently's own function) and `drift/tests/embedding_conformance.rs`
//! the check.

use std::fmt;

/// A maximum mean discrepancy test with a Gaussian kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mmd {
    /// The unbiased MMD² estimate of reference vs current.
    pub mmd2: f64,
    /// Permutation p-value.
    pub pvalue: f64,
    /// Kernel bandwidth (median heuristic).
    pub sigma: f64,
}

impl Mmd {
    /// What the plain [`mmd_test`] answers for invalid input: every field NaN.
    pub const INVALID: Mmd = Mmd {
        mmd2: f64::NAN,
        pvalue: f64::NAN,
        sigma: f64::NAN,
    };
}

/// Which of the two samples an [`EmbeddingError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// The reference sample.
    Reference,
    /// The current sample.
    Current,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sample::Reference => "the reference sample",
            Sample::Current => "the current sample",
        })
    }
}

/// Why two samples cannot be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingError {
    /// `dim` is 0.
    #[error("the embedding dimension must be positive")]
    ZeroDim,
    /// A sample's length is not a multiple of `dim`.
    #[error("{sample} has {len} values, not a multiple of the dimension {dim}")]
    Ragged {
        /// The sample.
        sample: Sample,
        /// Its number of values.
        len: usize,
        /// The dimension.
        dim: usize,
    },
    /// A sample has fewer rows than the method needs.
    #[error("{sample} has {rows} rows; at least {min} are needed")]
    TooFewRows {
        /// The sample.
        sample: Sample,
        /// Its number of rows.
        rows: usize,
        /// The least number of rows the method accepts.
        min: usize,
    },
    /// A sample holds a NaN or an infinity.
    #[error("{sample} holds a non-finite value in row {row}")]
    NonFinite {
        /// The sample.
        sample: Sample,
        /// The first row with a non-finite value.
        row: usize,
    },
}

/// The rows of a valid sample (`len / dim`), or why it is not one.
fn rows_of(
    sample: Sample,
    values: &[f32],
    dim: usize,
    min: usize,
) -> Result<usize, EmbeddingError> {
    if dim == 0 {
        return Err(EmbeddingError::ZeroDim);
    }
    if !values.len().is_multiple_of(dim) {
        return Err(EmbeddingError::Ragged {
            sample,
            len: values.len(),
            dim,
        });
    }
    let rows = values.len() / dim;
    if rows < min {
        return Err(EmbeddingError::TooFewRows { sample, rows, min });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(EmbeddingError::NonFinite {
            sample,
            row: i / dim,
        });
    }
    Ok(rows)
}

// ------------------------------------------------------------------------------------ MMD

/// The least squared distance: Alibi's `squared_pairwise_distance` clamps at `a_min = 1e-30`
/// (so that two equal rows are at 1e-30, not 0).
pub const MMD_MIN_SQUARED_DISTANCE: f64 = 1e-30;

/// The permutations' random numbers: SplitMix64 (Steele, Lea and Flood 2014; Vigna's
/// `splitmix64.c`), seeded with the `seed` of [`mmd_test`]:
///
/// ```text
/// state = state + 0x9E3779B97F4A7C15            (mod 2^64)
/// z = state
/// z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9      (mod 2^64)
/// z = (z ^ (z >> 27)) * 0x94D049BB133111EB      (mod 2^64)
/// next_u64 = z ^ (z >> 31)
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator whose first draw mixes `seed + 0x9E3779B97F4A7C15`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index in `0..bound` (`bound > 0`): `(next_u64() · bound) >> 64` in 128-bit
    /// integers (Lemire's multiply, without the rejection step: an index is drawn with
    /// probability `1/bound ± 2^-64`).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Fisher–Yates (Durstenfeld): for `i` from `len − 1` down to 1, swap `items[i]` with
    /// `items[below(i + 1)]`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// `Σ (a_k − b_k)²` over 8 lanes: lane `l` sums the terms `k ≡ l (mod 8)` in order of `k`, and
/// the lanes add up as `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))` (a fixed order the
/// fixture's NumPy repeats, and one the compiler vectorises).
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        let d = x - y;
        acc[l] += d * d;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The strict upper triangle of a symmetric `n × n` matrix, row by row: row `i` holds the
/// entries `(i, j)` for `j` in `i + 1..n`.
struct UpperTriangle {
    n: usize,
    values: Vec<f64>,
}

impl UpperTriangle {
    fn row_start(&self, i: usize) -> usize {
        // Rows 0..i hold (n − 1) + (n − 2) + … + (n − i) entries.
        i * (2 * self.n - i - 1) / 2
    }

    /// The entries `(i, j)`, `j > i`.
    fn row(&self, i: usize) -> &[f64] {
        let start = self.row_start(i);
        &self.values[start..start + (self.n - 1 - i)]
    }
}

/// The MMD² of the split `in_x` (1.0: the row is in the reference group of `nx` rows, 0.0: in
/// the current group of `ny`) from the kernel's upper triangle: Alibi's
/// `mmd2_from_kernel_matrix` with a zero diagonal,
/// `c_xx · ΣK_xx + c_yy · ΣK_yy − 2 · mean K_xy`, `c = 1 / (n (n − 1))`.
///
/// The sums run in a fixed order that depends only on the split, not on the permutation
/// that made it: rows `i` ascending, and within a row the entries `j > i` ascending, each
/// row's `x` and `y` partial sums (`Σ_j K_ij · in_x[j]`, `Σ_j K_ij · (1 − in_x[j])`) added to
/// `S_xx`, `S_yy` or `S_xy` by the group of `i`. So two permutations making the same split
/// give the same bits, and with `nx == ny` so do mirrored splits.
fn split_mmd2(kernel: &UpperTriangle, in_x: &[f64], nx: usize, ny: usize) -> f64 {
    let (mut sxx, mut syy, mut sxy) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..kernel.n.saturating_sub(1) {
        let (mut rx, mut ry) = (0.0f64, 0.0f64);
        for (&k, &m) in kernel.row(i).iter().zip(&in_x[i + 1..]) {
            rx += k * m;
            ry += k * (1.0 - m);
        }
        if in_x[i] == 1.0 {
            sxx += rx;
            sxy += ry;
        } else {
            syy += ry;
            sxy += rx;
        }
    }
    let (nx, ny) = (nx as f64, ny as f64);
    let (cxx, cyy) = (1.0 / (nx * (nx - 1.0)), 1.0 / (ny * (ny - 1.0)));
    // ΣK_xx over the full block is twice the upper triangle's sum (a doubling, exact).
    cxx * (2.0 * sxx) + cyy * (2.0 * syy) - 2.0 * (sxy / (nx * ny))
}

/// MMD² with a Gaussian RBF kernel, bandwidth by the median heuristic, p-value from
/// `n_permutations` permutations drawn from `seed`. Invalid input (see [`try_mmd_test`])
/// gives [`Mmd::INVALID`] (all NaN).
pub fn mmd_test(
    reference: &[f32],
    current: &[f32],
    dim: usize,
    n_permutations: usize,
    seed: u64,
) -> Mmd {
    try_mmd_test(reference, current, dim, n_permutations, seed).unwrap_or(Mmd::INVALID)
}

/// Alibi Detect's MMD drift test (`alibi_detect.cd.MMDDrift` with its defaults:
/// `kernel=GaussianRBF`, `sigma=None`, `n_permutations`) with the bandwidth inferred from the
/// data under test (`configure_kernel_from_x_ref=False`; Alibi's default, `True`, takes it
/// from the reference against itself when the detector is made), in `f64`.
///
/// With the pooled rows `z = reference ++ current` (`nx` then `ny` rows, each side at least 2):
///
/// 1. Squared distances `d_ij = max(‖z_i − z_j‖², 1e-30)` (Alibi's clamp,
///    [`MMD_MIN_SQUARED_DISTANCE`]).
/// 2. `sigma` by Alibi's `sigma_median` on the `nx · ny` reference-vs-current distances: with
///    `s = nx` when the two samples are equal element by element (and of the same size), else
///    `s = 0`, the value at 0-based index `s + (nx·ny − s) div 2 − 1` of the sorted distances
///    `d`, and `sigma = sqrt(0.5 · d)`. (This skips the `s` zero self-distances of identical
///    samples; its index is the lower median, one below it for an odd count.)
/// 3. The kernel `K_ij = exp(−d_ij / (2 sigma²))` (as `exp(−(γ · d))`, `γ = 1 / (2 σ σ)`), its
///    diagonal zeroed, and `mmd2 = c_xx ΣK_xx + c_yy ΣK_yy − 2 mean(K_xy)` with
///    `c = 1 / (n (n − 1))` (Alibi's `mmd2_from_kernel_matrix`: the unbiased MMD²).
/// 4. `n_permutations` times: a uniform permutation of the pooled indices `0..nx+ny`, made by
///    [`SplitMix64::shuffle`] of the identity with one generator `SplitMix64::new(seed)` for
///    the whole test (the permutations follow one another in its stream); the first `nx`
///    indices form the reference group, the rest the current one, and their MMD² is taken as
///    in 3. `pvalue = #(mmd2 ≤ mmd2_permuted) / n_permutations` (Alibi's
///    `(mmd2 <= mmd2_permuted).float().mean()`); NaN for `n_permutations == 0`.
///
/// Where it differs from Alibi: Alibi computes in the inputs' precision (`float32` for
/// `f32` embeddings), draws its permutations from torch's generator, and takes distances
/// as `‖x‖² + ‖y‖² − 2 x·y` (which loses digits for near rows); here everything is `f64`,
/// the distances are sums of squared differences (in the 8-lane order of a private helper,
/// which the fixture repeats), the permutations come from the SplitMix64 stream above, and
/// the sums of step 3 run in an order fixed by the split (see the fixture script), so
/// `tests/fixtures/gen_drift_embedding.py`'s NumPy transcription gives the same p-value
/// exactly (and the same bits throughout when both use the same libm `exp`). The test is
/// `O((nx + ny)² · dim)` once for the distances and `O((nx + ny)²)` per permutation, and
/// holds `(nx + ny)² / 2` f64s (16 MB for 1,000 rows a side): bound the rows before calling
/// (about 95 ms for 500 + 500 rows of 384 dims and 100 permutations, on one core).
pub fn try_mmd_test(
    reference: &[f32],
    current: &[f32],
    dim: usize,
    n_permutations: usize,
    seed: u64,
) -> Result<Mmd, EmbeddingError> {
    let nx = rows_of(Sample::Reference, reference, dim, 2)?;
    let ny = rows_of(Sample::Current, current, dim, 2)?;
    let n = nx + ny;
    let pooled: Vec<f64> = reference
        .iter()
        .chain(current)
        .map(|&v| f64::from(v))
        .collect();
    let row = |i: usize| &pooled[i * dim..(i + 1) * dim];

    // 1. The squared distances, i < j.
    let mut kernel = UpperTriangle {
        n,
        values: Vec::with_capacity(n * (n - 1) / 2),
    };
    for i in 0..n {
        let zi = row(i);
        for j in i + 1..n {
            let d = squared_distance(zi, row(j));
            kernel.values.push(d.max(MMD_MIN_SQUARED_DISTANCE));
        }
    }

    // 2. The median heuristic on the reference-vs-current block (i < nx ≤ j).
    let mut cross: Vec<f64> = (0..nx)
        .flat_map(|i| kernel.row(i)[nx - 1 - i..].iter().copied())
        .collect();
    let skip = if reference == current { nx } else { 0 };
    let at = skip + (nx * ny - skip) / 2 - 1;
    let (_, &mut median, _) = cross.select_nth_unstable_by(at, f64::total_cmp);
    let sigma = (0.5 * median).sqrt();

    // 3. The kernel and the observed statistic.
    let gamma = 1.0 / (2.0 * sigma * sigma);
    for k in &mut kernel.values {
        *k = (-(gamma * *k)).exp();
    }
    let mut in_x: Vec<f64> = (0..n).map(|i| if i < nx { 1.0 } else { 0.0 }).collect();
    let mmd2 = split_mmd2(&kernel, &in_x, nx, ny);

    // 4. The permutations.
    let mut rng = SplitMix64::new(seed);
    let mut perm: Vec<usize> = Vec::with_capacity(n);
    let mut at_least = 0usize;
    for _ in 0..n_permutations {
        perm.clear();
        perm.extend(0..n);
        rng.shuffle(&mut perm);
        for (k, &p) in perm.iter().enumerate() {
            in_x[p] = if k < nx { 1.0 } else { 0.0 };
        }
        if mmd2 <= split_mmd2(&kernel, &in_x, nx, ny) {
            at_least += 1;
        }
    }
    let pvalue = if n_permutations == 0 {
        f64::NAN
    } else {
        at_least as f64 / n_permutations as f64
    };
    Ok(Mmd {
        mmd2,
        pvalue,
        sigma,
    })
}

// -------------------------------------------------------------------------- mean distance

/// Evidently's default threshold of the `distance` method (`DistanceDriftMethod.threshold`).
pub const MEAN_DISTANCE_THRESHOLD: f64 = 0.2;

/// Evidently's verdict of the `distance` method with its defaults: drift when the score is
/// strictly above [`MEAN_DISTANCE_THRESHOLD`] (`res > self.threshold`; a score of exactly 0.2
/// is no drift). NaN (invalid input) is no drift.
pub fn mean_distance_drifted(score: f64) -> bool {
    score > MEAN_DISTANCE_THRESHOLD
}

/// Evidently's embeddings `distance` method: the euclidean distance between the mean
/// embeddings (the score; its verdict is [`mean_distance_drifted`]). Invalid input (see
/// [`try_mean_distance`]) gives NaN.
pub fn mean_distance(reference: &[f32], current: &[f32], dim: usize) -> f64 {
    try_mean_distance(reference, current, dim).unwrap_or(f64::NAN)
}

/// The score of Evidently's embeddings drift method `distance()` with its defaults
/// (`evidently.legacy.metrics.data_drift.embedding_drift_methods.DistanceDriftMethod`:
/// `dist="euclidean"`, `threshold=0.2`, `bootstrap=None`, `pca_components=None`): with no
/// bootstrap and no PCA it is `scipy.spatial.distance.euclidean(reference.mean(axis=0),
/// current.mean(axis=0))`, deterministic; here in `f64` (`‖mean_ref − mean_cur‖₂`, each mean
/// a plain sum over the rows divided by their count). At least one row per side.
pub fn try_mean_distance(
    reference: &[f32],
    current: &[f32],
    dim: usize,
) -> Result<f64, EmbeddingError> {
    let nx = rows_of(Sample::Reference, reference, dim, 1)?;
    let ny = rows_of(Sample::Current, current, dim, 1)?;
    let mean = |values: &[f32], rows: usize| {
        let mut sum = vec![0.0f64; dim];
        for r in values.chunks_exact(dim) {
            for (s, &v) in sum.iter_mut().zip(r) {
                *s += f64::from(v);
            }
        }
        sum.iter_mut().for_each(|s| *s /= rows as f64);
        sum
    };
    let (mx, my) = (mean(reference, nx), mean(current, ny));
    Ok(mx
        .iter()
        .zip(&my)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of Vigna's splitmix64.c from state 0 (the fixture script checks its
    /// own SplitMix64 against the same values).
    #[test]
    fn splitmix64_stream() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn shuffle_is_a_permutation_and_below_stays_in_range() {
        let mut r = SplitMix64::new(7);
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
        for b in 1..50 {
            assert!(r.below(b) < b);
        }
    }

    #[test]
    fn upper_triangle_rows() {
        let t = UpperTriangle {
            n: 4,
            values: (0..6).map(f64::from).collect(),
        };
        assert_eq!(t.row(0), &[0.0, 1.0, 2.0]);
        assert_eq!(t.row(1), &[3.0, 4.0]);
        assert_eq!(t.row(2), &[5.0]);
        assert!(t.row(3).is_empty());
    }

    #[test]
    fn squared_distance_matches_the_plain_sum() {
        for dim in [1usize, 7, 8, 9, 384] {
            let a: Vec<f64> = (0..dim).map(|k| (k as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..dim).map(|k| (k as f64 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            let got = squared_distance(&a, &b);
            assert!(
                (got - plain).abs() <= 1e-12 * plain,
                "{dim}: {got} vs {plain}"
            );
        }
    }

    #[test]
    fn invalid_input() {
        let two = [0.0f32, 1.0];
        assert_eq!(
            try_mmd_test(&two, &two, 0, 10, 1),
            Err(EmbeddingError::ZeroDim)
        );
        assert_eq!(
            try_mmd_test(&[0.0, 1.0, 2.0], &two, 2, 10, 1),
            Err(EmbeddingError::Ragged {
                sample: Sample::Reference,
                len: 3,
                dim: 2
            })
        );
        assert_eq!(
            try_mmd_test(&two, &[0.5], 1, 10, 1),
            Err(EmbeddingError::TooFewRows {
                sample: Sample::Current,
                rows: 1,
                min: 2
            })
        );
        assert_eq!(
            try_mmd_test(&two, &[0.5, f32::NAN], 1, 10, 1),
            Err(EmbeddingError::NonFinite {
                sample: Sample::Current,
                row: 1
            })
        );
        assert!(mmd_test(&two, &[1.0], 1, 10, 1).mmd2.is_nan());
        assert_eq!(try_mean_distance(&[1.0], &[4.0], 1), Ok(3.0));
        assert!(mean_distance(&[], &[4.0], 1).is_nan());
        assert!(mean_distance(&[1.0, 2.0], &[4.0], 2).is_nan());
    }

    #[test]
    fn mmd_basics() {
        let x = [0.0f32, 1.0, 2.0, 3.0];
        let y = [10.0f32, 11.0, 12.0];
        let m = mmd_test(&x, &y, 1, 50, 3);
        assert!(m.mmd2 > 0.0 && m.sigma > 0.0);
        assert!((0.0..=1.0).contains(&m.pvalue));
        assert_eq!(m, mmd_test(&x, &y, 1, 50, 3), "reproducible");
        assert!(mmd_test(&x, &y, 1, 0, 3).pvalue.is_nan());
    }

    #[test]
    fn mean_distance_threshold_is_strict() {
        assert!(!mean_distance_drifted(0.2));
        assert!(mean_distance_drifted(0.2000001));
        assert!(!mean_distance_drifted(f64::NAN));
    }
}
