//! Multiple-testing corrections over the p-values of a window's columns.

pub(super) fn bonferroni(pvalues: &[f64], alpha: f64) -> Vec<bool> {
    let m = pvalues.len() as f64;
    let level = alpha / m;
    pvalues.iter().map(|&p| p < level).collect()
}

pub(super) fn benjamini_hochberg(pvalues: &[f64], q: f64) -> Vec<bool> {
    let m = pvalues.len();
    let mut order: Vec<usize> = (0..m).collect();
    // NaN sorts last (total order on the non-NaN ones; NaN is never rejected below).
    order.sort_by(|&i, &j| {
        let (a, b) = (pvalues[i], pvalues[j]);
        match (a.is_nan(), b.is_nan()) {
            (false, false) => a.total_cmp(&b),
            (a_nan, b_nan) => a_nan.cmp(&b_nan),
        }
    });
    // The largest rank k (1-based) with p_(k) <= (k/m)·q (statsmodels' `ecdffactor * alpha`).
    let cutoff = order
        .iter()
        .enumerate()
        .rev()
        .find(|&(rank, &i)| pvalues[i] <= (rank + 1) as f64 / m as f64 * q)
        .map_or(0, |(rank, _)| rank + 1);
    let mut rejected = vec![false; m];
    for &i in &order[..cutoff] {
        rejected[i] = true;
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bonferroni_is_strict() {
        assert_eq!(
            bonferroni(&[0.01, 0.0125, 0.02, 0.5], 0.05),
            vec![true, false, false, false]
        );
        assert_eq!(bonferroni(&[f64::NAN, 0.001], 0.05), vec![false, true]);
        assert!(bonferroni(&[], 0.05).is_empty());
    }

    #[test]
    fn benjamini_hochberg_step_up() {
        // Sorted: 0.001 (k=1, 0.01), 0.008 (0.02), 0.039 (0.03), 0.041 (0.04), 0.042 (0.05),
        // 0.055 (0.06), 0.074 (0.07), 0.205 (0.08), 0.212 (0.09), 0.216 (0.10) at q = 0.1.
        // Largest k with p_(k) <= k/10·0.1: p_(6) = 0.055 <= 0.06, so the first six.
        let p = [
            0.205, 0.001, 0.039, 0.042, 0.008, 0.055, 0.041, 0.074, 0.212, 0.216,
        ];
        let got = benjamini_hochberg(&p, 0.1);
        let want: Vec<bool> = p.iter().map(|&x| x <= 0.06).collect();
        assert_eq!(got, want);
        // Step-up: p_(2) passes although p_(1) fails its own bound (0.03 > 0.025).
        assert_eq!(benjamini_hochberg(&[0.03, 0.04], 0.05), vec![true, true]);
        // Nothing passes.
        assert_eq!(benjamini_hochberg(&[0.5, 0.9], 0.05), vec![false, false]);
        // NaN is never a discovery and sorts last.
        assert_eq!(
            benjamini_hochberg(&[f64::NAN, 0.01, 0.02], 0.05),
            vec![false, true, true]
        );
        // Ties share a fate.
        assert_eq!(
            benjamini_hochberg(&[0.04, 0.04, 0.9], 0.1),
            vec![true, true, false]
        );
        assert!(benjamini_hochberg(&[], 0.05).is_empty());
    }

    /// statsmodels' `multipletests(method="fdr_bh")` transcribed (reject = p_sorted <=
    /// ecdffactor·alpha; everything up to the last True), on random p-values.
    #[test]
    fn benjamini_hochberg_matches_statsmodels_logic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for trial in 0..500 {
            let m = 1 + trial % 17;
            let p: Vec<f64> = (0..m).map(|_| next().powi(3)).collect();
            let mut sorted: Vec<(f64, usize)> = p.iter().copied().zip(0..).collect();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let ecdf: Vec<f64> = (1..=m).map(|k| k as f64 / m as f64).collect();
            let reject: Vec<bool> = sorted
                .iter()
                .zip(&ecdf)
                .map(|(&(p, _), &e)| p <= e * 0.1)
                .collect();
            let last = reject.iter().rposition(|&r| r);
            let mut want = vec![false; m];
            if let Some(last) = last {
                for &(_, i) in &sorted[..=last] {
                    want[i] = true;
                }
            }
            assert_eq!(benjamini_hochberg(&p, 0.1), want, "{p:?}");
        }
    }
}
