//! A/A experiments by simulation: two arms with the same outcome distribution, read at 20
//! interim looks (every 250 observations per arm up to 5,000). Peeking at a fixed-horizon
//! p-value (Welch's t, the two-proportion z) at every look and stopping at the first
//! p < α declares far more than α of them significant; the always-valid p-value (its running
//! minimum) stays within α. With a real effect, the always-valid test still finds it.
//!
//! Every run is seeded (StdRng, ChaCha12), so the counts are the same on every machine.

use experiments::stats::{self, DEFAULT_SEQUENTIAL_TUNING, Moments};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const ALPHA: f64 = 0.05;
const EXPERIMENTS: usize = 1000;
const LOOKS: usize = 20;
const PER_LOOK: usize = 250; // observations per arm between looks: 5,000 per arm at the end

/// One arm's outcomes so far.
#[derive(Default, Clone, Copy)]
struct Arm {
    moments: Moments,
    successes: u64,
}

impl Arm {
    fn push(&mut self, x: f64) {
        self.moments.push(x);
        self.successes += u64::from(x == 1.0);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    /// 0/1 outcomes with these success rates (a, b).
    Binary(f64, f64),
    /// Normal outcomes, standard deviation 1, with these means (a, b).
    Normal(f64, f64),
}

impl Outcome {
    fn draw(self, arm: usize, rng: &mut StdRng) -> f64 {
        match self {
            Outcome::Binary(pa, pb) => {
                let p = if arm == 0 { pa } else { pb };
                f64::from(u8::from(rng.random::<f64>() < p))
            }
            Outcome::Normal(ma, mb) => {
                let z: f64 = StandardNormal.sample(rng);
                z + if arm == 0 { ma } else { mb }
            }
        }
    }

    /// The fixed-horizon test the results page shows for this kind of outcome.
    fn naive_p(self, a: &Arm, b: &Arm) -> Option<f64> {
        let t = match self {
            Outcome::Binary(..) => {
                stats::two_proportion_z_test(a.successes, a.moments.n, b.successes, b.moments.n)
            }
            Outcome::Normal(..) => stats::welch_t_test(&a.moments, &b.moments),
        };
        t.map(|t| t.p_value)
    }
}

/// Shares of the experiments that the naive test and the always-valid test declared
/// significant at some look (the always-valid one through its running minimum), and the
/// number of looks where the always-valid p-value could not be computed.
struct Rates {
    naive: f64,
    always_valid: f64,
    missing: usize,
}

fn simulate(outcome: Outcome, seed: u64) -> Rates {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut naive_hits, mut av_hits, mut missing) = (0usize, 0usize, 0usize);
    for _ in 0..EXPERIMENTS {
        let mut arms = [Arm::default(); 2];
        let mut naive_rejected = false;
        let mut av_min: Option<f64> = None;
        for _ in 0..LOOKS {
            for _ in 0..PER_LOOK {
                for (i, arm) in arms.iter_mut().enumerate() {
                    arm.push(outcome.draw(i, &mut rng));
                }
            }
            let [a, b] = &arms;
            if outcome.naive_p(a, b).is_some_and(|p| p < ALPHA) {
                naive_rejected = true;
            }
            match stats::always_valid(&a.moments, &b.moments, ALPHA, DEFAULT_SEQUENTIAL_TUNING) {
                Some(av) => av_min = Some(stats::running_min(av_min, av.p_value)),
                None => missing += 1,
            }
        }
        naive_hits += usize::from(naive_rejected);
        av_hits += usize::from(av_min.is_some_and(|p| p < ALPHA));
    }
    Rates {
        naive: naive_hits as f64 / EXPERIMENTS as f64,
        always_valid: av_hits as f64 / EXPERIMENTS as f64,
        missing,
    }
}

/// α plus three standard errors of a rate estimated from `EXPERIMENTS` runs.
fn alpha_tolerance() -> f64 {
    ALPHA + 3.0 * (ALPHA * (1.0 - ALPHA) / EXPERIMENTS as f64).sqrt()
}

fn check_aa(label: &str, outcome: Outcome, seed: u64) {
    let r = simulate(outcome, seed);
    println!(
        "{label}: {EXPERIMENTS} A/A experiments, {LOOKS} looks: peeking at the fixed-horizon p-value: {:.1}% false positives; always-valid p-value: {:.1}% (limit {:.1}%)",
        r.naive * 100.0,
        r.always_valid * 100.0,
        alpha_tolerance() * 100.0
    );
    assert_eq!(
        r.missing, 0,
        "{label}: always_valid gave None at {} looks",
        r.missing
    );
    assert!(
        r.always_valid <= alpha_tolerance(),
        "{label}: the always-valid p-value rejected {:.1}% of A/A experiments (limit {:.1}%)",
        r.always_valid * 100.0,
        alpha_tolerance() * 100.0
    );
    assert!(
        r.naive >= 2.0 * ALPHA,
        "{label}: peeking at the fixed-horizon p-value rejected only {:.1}% of A/A experiments; expected ≥ {:.0}% (the simulation does not show the peeking problem)",
        r.naive * 100.0,
        2.0 * ALPHA * 100.0
    );
}

#[test]
fn binary_aa_always_valid_holds_alpha_and_peeking_does_not() {
    check_aa("binary p = 0.10", Outcome::Binary(0.1, 0.1), 0xA0A0_0001);
}

#[test]
fn continuous_aa_always_valid_holds_alpha_and_peeking_does_not() {
    check_aa("normal", Outcome::Normal(0.0, 0.0), 0xA0A0_0002);
}

fn check_power(label: &str, outcome: Outcome, seed: u64) {
    let r = simulate(outcome, seed);
    println!(
        "{label}: the always-valid test found the effect in {:.1}% of {EXPERIMENTS} experiments by 5,000 per arm (peeking at the fixed-horizon p-value: {:.1}%)",
        r.always_valid * 100.0,
        r.naive * 100.0
    );
    assert_eq!(r.missing, 0);
    // Expected about 95%: z ≈ 4.7 at the end, and the always-valid threshold there is z ≈ 3.
    assert!(
        r.always_valid > 0.5,
        "{label}: the always-valid test found a real effect in only {:.1}% of experiments",
        r.always_valid * 100.0
    );
}

#[test]
fn binary_effect_is_found() {
    check_power(
        "binary p = 0.10 vs 0.13",
        Outcome::Binary(0.10, 0.13),
        0xB0B0_0001,
    );
}

#[test]
fn continuous_effect_is_found() {
    // 0.15 standard deviations: z ≈ 5.3 at 5,000 per arm.
    check_power(
        "normal, shift 0.15 sd",
        Outcome::Normal(0.0, 0.15),
        0xB0B0_0002,
    );
}
