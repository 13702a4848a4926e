//! What an experiment accumulates per arm: sufficient statistics only (counts, moments, a
//! fixed-bucket latency histogram), so the numbers can be persisted, merged and — on a fleet —
//! summed across replicas.

use serde::{Deserialize, Serialize};

use crate::stats::Moments;

/// Upper bounds of the latency histogram, in milliseconds: 50 µs × 1.25^k, k = 0..63
/// (50 µs to ~65 s). Quantiles interpolate inside a bucket, so p50/p99 are within one
/// bucket's width (±12.5%) of the exact value.
pub fn latency_bounds_ms() -> &'static [f64] {
    static BOUNDS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| (0..64).map(|k| 0.05 * 1.25f64.powi(k)).collect())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Requests this arm answered (successfully or with a server-side error).
    pub exposures: u64,
    /// Of those, answered with a server-side error (5xx, overload, timeout).
    pub errors: u64,
    /// Latency histogram counts per bucket of [`latency_bounds_ms`]; the last entry counts
    /// what is above the last bound.
    pub latency: Vec<u64>,
    /// Rewards fed back.
    pub reward: Moments,
    /// Rewards equal to 1 (binary outcomes).
    pub successes: u64,
}

impl ArmStats {
    pub fn record(&mut self, latency_ms: f64, error: bool) {
        let bounds = latency_bounds_ms();
        if self.latency.len() != bounds.len() + 1 {
            self.latency.resize(bounds.len() + 1, 0);
        }
        self.exposures += 1;
        self.errors += u64::from(error);
        let i = bounds.partition_point(|&b| b < latency_ms);
        self.latency[i] += 1;
    }

    /// Adds another replica's (or period's) statistics: counts and histogram buckets summed,
    /// reward moments merged exactly (Chan et al.'s pairwise update).
    pub fn merge(&mut self, other: &ArmStats) {
        self.exposures += other.exposures;
        self.errors += other.errors;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
        self.reward.merge(&other.reward);
        self.successes += other.successes;
    }

    pub fn reward(&mut self, r: f64) {
        self.reward.push(r);
        self.successes += u64::from(r == 1.0);
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.exposures > 0).then(|| self.errors as f64 / self.exposures as f64)
    }

    /// Latency quantile in milliseconds (`q` in 0–1).
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latency.is_empty() {
            return None;
        }
        let bounds = latency_bounds_ms();
        let mut ub: Vec<f64> = bounds.to_vec();
        ub.push(f64::INFINITY);
        crate::stats::histogram_quantile(&ub, &self.latency, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            ArmStats::default(),
            ArmStats::default(),
            ArmStats::default(),
        );
        for i in 0..300 {
            let (ms, err, r) = (i as f64 * 0.7, i % 7 == 0, (i % 3) as f64);
            let one = if i % 2 == 0 { &mut a } else { &mut b };
            one.record(ms, err);
            one.reward(r);
            all.record(ms, err);
            all.reward(r);
        }
        let mut merged = ArmStats::default();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.exposures, all.exposures);
        assert_eq!(merged.errors, all.errors);
        assert_eq!(merged.latency, all.latency);
        assert_eq!(merged.successes, all.successes);
        assert_eq!(merged.reward.n, all.reward.n);
        assert!((merged.reward.mean - all.reward.mean).abs() < 1e-12);
        assert!((merged.reward.variance() - all.reward.variance()).abs() < 1e-9);
    }

    #[test]
    fn quantiles_within_a_bucket() {
        let mut a = ArmStats::default();
        for i in 1..=1000 {
            a.record(i as f64 / 100.0, i % 10 == 0); // 0.01 .. 10 ms
        }
        assert_eq!(a.exposures, 1000);
        assert_eq!(a.errors, 100);
        let p50 = a.latency_ms(0.5).unwrap();
        let p99 = a.latency_ms(0.99).unwrap();
        assert!((p50 / 5.0 - 1.0).abs() < 0.125, "{p50}");
        assert!((p99 / 9.9 - 1.0).abs() < 0.125, "{p99}");
    }
}
