//! An experiment's results, as `GET /api/experiments/{name}` and `inferd experiments show`
//! report them: per arm exposures, errors, latency, the outcome's mean with its confidence
//! interval, and against the control the difference, relative lift, the fixed-horizon test
//! and the always-valid p-value; plus the sample-ratio-mismatch check over all arms.

use serde::Serialize;

use crate::arm::ArmStats;
use crate::config::{ExperimentSpec, OutcomeKind, RunState};
use crate::stats::{self, Moments};
use crate::{Event, Target};

/// SRM fires below this p-value (the usual bar, see `../shared/notes/experiments.md`).
pub const SRM_ALPHA: f64 = 0.001;

/// What [`compute`] reads (borrowed from the experiment under its lock).
pub(crate) struct Snapshot<'a> {
    pub name: &'a str,
    pub spec: &'a ExperimentSpec,
    pub weights: &'a [f64],
    pub arms: &'a [ArmStats],
    pub shadows: &'a [ArmStats],
    pub expected: &'a [f64],
    pub tripped: &'a [bool],
    pub events: &'a [Event],
    pub created_ms: u64,
    pub updated_ms: u64,
    pub promoted: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub name: String,
    pub model: String,
    pub state: RunState,
    pub outcome: OutcomeKind,
    pub allocation: crate::config::Allocation,
    pub alpha: f64,
    pub control: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<String>,
    pub arms: Vec<ArmResult>,
    pub shadows: Vec<ShadowResult>,
    pub srm: Option<Srm>,
    /// False when the sample ratio mismatch check fired: the split is not what was
    /// configured, so the comparisons below are not to be trusted.
    pub trustworthy: bool,
    pub events: Vec<Event>,
    /// How the numbers are computed, and what they assume.
    pub method: Method,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub name: String,
    pub target: Target,
    /// Weight in force, as a share of the total (0–1).
    pub weight: f64,
    /// The configured weight (guardrails and the bandit change the one in force).
    pub configured_weight: f64,
    /// Taken out by a guardrail.
    pub stopped_by_guardrail: bool,
    pub exposures: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub outcome: OutcomeSummary,
    /// Against the control arm; `None` for the control itself.
    pub vs_control: Option<VsControl>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutcomeSummary {
    /// Rewards received.
    pub n: u64,
    pub mean: Option<f64>,
    pub std_dev: Option<f64>,
    /// 95% confidence interval of the mean (normal approximation).
    pub ci95: Option<(f64, f64)>,
    /// Rewards equal to 1 (binary outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VsControl {
    pub difference: Option<f64>,
    pub difference_ci95: Option<(f64, f64)>,
    pub relative_lift: Option<f64>,
    pub relative_lift_ci95: Option<(f64, f64)>,
    /// `welch_t` or `two_proportion_z`.
    pub test: &'static str,
    pub statistic: Option<f64>,
    pub df: Option<f64>,
    /// Fixed-horizon p-value: valid only when read once, at a sample size fixed in advance.
    pub p_value: Option<f64>,
    /// Always-valid p-value: may be read at every refresh (its running minimum is kept).
    pub always_valid_p_value: Option<f64>,
    /// Confidence sequence for the difference at 1 − α, valid at every look.
    pub always_valid_ci: Option<(f64, f64)>,
    /// Always-valid p < α.
    pub significant: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowResult {
    pub name: String,
    pub target: Target,
    pub percent: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Srm {
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
    /// p < 0.001.
    pub mismatch: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Method {
    pub test: &'static str,
    pub always_valid: &'static str,
    pub srm: &'static str,
    pub assumptions: Vec<&'static str>,
}

fn method(outcome: OutcomeKind) -> Method {
    Method {
        test: match outcome {
            OutcomeKind::Binary => {
                "two-proportion z-test (pooled variance), two-sided, of arm − control; CI of the difference with the unpooled standard error"
            }
            OutcomeKind::Continuous => {
                "Welch's t-test (unequal variances, Welch–Satterthwaite df), two-sided, of arm − control"
            }
        },
        always_valid: "mixture SPRT (Johari, Pekelis & Walsh 2022) in the asymptotic confidence-sequence form of Waudby-Smith et al. 2023, as GrowthBook computes it (tuning N* = 5000); running minimum over reads",
        srm: "chi-square goodness of fit of exposures against the weights in force at each exposure; mismatch at p < 0.001",
        assumptions: vec![
            "exposures are requests: each request is one observation (with a unit key, a unit's requests all go to one arm; rewards are assumed independent)",
            "the normal approximation holds for each arm's mean (roughly n·p ≥ 5 and n·(1−p) ≥ 5 for binary outcomes)",
            "relative lift uses the delta method (GrowthBook's variance formula)",
            "latency quantiles come from a histogram with buckets 25% apart: within one bucket of the exact value",
        ],
    }
}

fn share(w: &[f64], i: usize) -> f64 {
    let total: f64 = w.iter().sum();
    if total > 0.0 { w[i] / total } else { 0.0 }
}

pub(crate) fn compute(s: &Snapshot<'_>) -> Results {
    let names = s.spec.arm_names();
    let control = s.spec.control_index();
    let configured: Vec<f64> = s.spec.arms.iter().map(|a| a.weight).collect();
    let ctl = &s.arms[control].reward;
    let arms = s
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let target = Target {
                name: names[i].clone(),
                model: s.spec.arms[i]
                    .model
                    .clone()
                    .unwrap_or_else(|| s.spec.model.clone()),
                version: s.spec.arms[i].version.as_string(),
            };
            ArmResult {
                name: names[i].clone(),
                target,
                weight: share(s.weights, i),
                configured_weight: share(&configured, i),
                stopped_by_guardrail: s.tripped[i],
                exposures: a.exposures,
                errors: a.errors,
                error_rate: a.error_rate(),
                latency_p50_ms: a.latency_ms(0.5),
                latency_p99_ms: a.latency_ms(0.99),
                outcome: summary(a, s.spec.outcome),
                vs_control: (i != control).then(|| vs_control(ctl, a, s)),
            }
        })
        .collect();
    let shadows = s
        .shadows
        .iter()
        .zip(&s.spec.shadows)
        .zip(s.spec.shadow_names())
        .map(|((a, spec), name)| ShadowResult {
            target: Target {
                name: name.clone(),
                model: spec.model.clone().unwrap_or_else(|| s.spec.model.clone()),
                version: spec.version.as_string(),
            },
            name,
            percent: spec.percent,
            requests: a.exposures,
            errors: a.errors,
            error_rate: a.error_rate(),
            latency_p50_ms: a.latency_ms(0.5),
            latency_p99_ms: a.latency_ms(0.99),
        })
        .collect();
    let observed: Vec<u64> = s.arms.iter().map(|a| a.exposures).collect();
    let srm = stats::chi_square_gof(&observed, s.expected).map(|t| Srm {
        statistic: t.statistic,
        df: t.df,
        p_value: t.p_value,
        mismatch: t.p_value < SRM_ALPHA,
    });
    Results {
        name: s.name.to_owned(),
        model: s.spec.model.clone(),
        state: s.spec.state,
        outcome: s.spec.outcome,
        allocation: s.spec.allocation,
        alpha: s.spec.alpha,
        control: names[control].clone(),
        created_ms: s.created_ms,
        updated_ms: s.updated_ms,
        promoted: s.promoted.map(str::to_owned),
        arms,
        shadows,
        trustworthy: !srm.as_ref().is_some_and(|x| x.mismatch),
        srm,
        events: s.events.to_vec(),
        method: method(s.spec.outcome),
    }
}

fn summary(a: &ArmStats, kind: OutcomeKind) -> OutcomeSummary {
    let m = &a.reward;
    OutcomeSummary {
        n: m.n,
        mean: (m.n > 0).then_some(m.mean),
        std_dev: (m.n > 1).then(|| m.variance().sqrt()),
        ci95: stats::mean_ci(m, 0.95),
        successes: (kind == OutcomeKind::Binary).then_some(a.successes),
    }
}

fn vs_control(ctl: &Moments, a: &ArmStats, s: &Snapshot<'_>) -> VsControl {
    let m = &a.reward;
    let cmp = stats::compare(ctl, m, 0.95);
    let control = &s.arms[s.spec.control_index()];
    let (test, t) = match s.spec.outcome {
        OutcomeKind::Binary => (
            "two_proportion_z",
            stats::two_proportion_z_test(control.successes, ctl.n, a.successes, m.n),
        ),
        OutcomeKind::Continuous => ("welch_t", stats::welch_t_test(ctl, m)),
    };
    let av = stats::always_valid(ctl, m, s.spec.alpha, stats::DEFAULT_SEQUENTIAL_TUNING);
    VsControl {
        difference: cmp.as_ref().map(|c| c.difference),
        difference_ci95: cmp.as_ref().map(|c| c.difference_ci),
        relative_lift: cmp.as_ref().and_then(|c| c.relative_lift),
        relative_lift_ci95: cmp.as_ref().and_then(|c| c.relative_lift_ci),
        test,
        statistic: t.map(|t| t.statistic),
        df: t.map(|t| t.df).filter(|d| d.is_finite()),
        p_value: t.map(|t| t.p_value),
        always_valid_p_value: av.as_ref().map(|a| a.p_value),
        always_valid_ci: av.as_ref().map(|a| a.ci),
        significant: av.is_some_and(|a| a.p_value < s.spec.alpha),
    }
}
