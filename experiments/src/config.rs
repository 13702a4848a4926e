//! An experiment's configuration as users write it (REST JSON, the start-up TOML file, the
//! CLI), and the checks that need nothing but the configuration itself. Checks against the
//! model registry (arms exist, are READY, share a signature) go through
//! [`crate::Catalog`].

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a user submits for one experiment. Unknown keys are refused (a typo such as
/// `wieght` must not silently mean "weight 0").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The model whose requests without an explicit version are split.
    pub model: String,
    /// Two or more arms the traffic is split between.
    pub arms: Vec<ArmSpec>,
    /// Arms that get a copy of a share of the traffic; their responses are discarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<ShadowSpec>,
    /// Where the unit key comes from; none: every request is assigned on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitKey>,
    /// The outcome metric fed back through `/api/feedback`.
    #[serde(default)]
    pub outcome: OutcomeKind,
    /// The arm the others are compared with (by name); default: the first arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Significance level of the tests and the always-valid p-values.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Fixed weights, or Thompson sampling over the arms' rewards.
    #[serde(default)]
    pub allocation: Allocation,
    /// Thompson sampling's settings (only with `allocation = "thompson"`).
    #[serde(default)]
    pub bandit: BanditSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<Guardrail>,
    /// Mixed into the assignment hash; default: the experiment's name. Two experiments with
    /// the same seed assign a unit the same bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// `running` (default) or `stopped`.
    #[serde(default)]
    pub state: RunState,
}

fn default_alpha() -> f64 {
    0.05
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    /// Default: the version as written (`"2"`, `"candidate"`), prefixed by the model when
    /// the arm names another model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Another model with the same signature; default: the experiment's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A version number or an alias.
    pub version: VersionRef,
    /// Relative share of the traffic (the weights need not sum to 1 or 100).
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub version: VersionRef,
    /// Share of the experiment's requests copied to this arm, in percent (0–100).
    pub percent: f64,
}

/// A version number or an alias; JSON and TOML may write either `2` or `"2"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VersionRef {
    Number(u64),
    Name(String),
}

impl VersionRef {
    pub fn as_string(&self) -> String {
        match self {
            VersionRef::Number(n) => n.to_string(),
            VersionRef::Name(s) => s.clone(),
        }
    }
}

/// Where a request's unit key is read: a header (REST) / metadata entry (gRPC) of that
/// name, else a V2 request parameter of that name. Both may be given; the header wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Rewards are 0 or 1 (a click, a conversion): two-proportion z-test.
    #[default]
    Binary,
    /// Any finite number (revenue, a score): Welch's t-test.
    Continuous,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    #[default]
    Fixed,
    Thompson,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    #[default]
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanditSpec {
    /// Rewards each arm must have before the weights move off the configured ones.
    #[serde(default = "default_min_exposures")]
    pub min_exposures: u64,
    /// The smallest share an arm keeps (keeps learning about it), 0–1 divided by the arms.
    #[serde(default = "default_floor")]
    pub floor: f64,
    /// Rewards between reallocations.
    #[serde(default = "default_update_every")]
    pub update_every: u64,
}

fn default_min_exposures() -> u64 {
    100
}
fn default_floor() -> f64 {
    0.05
}
fn default_update_every() -> u64 {
    50
}

impl Default for BanditSpec {
    fn default() -> Self {
        BanditSpec {
            min_exposures: default_min_exposures(),
            floor: default_floor(),
            update_every: default_update_every(),
        }
    }
}

/// A rule that takes an arm out of the experiment (its weight drops to 0 at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Guardrail {
    /// The arm's share of failed requests exceeds `max` (0–1) over at least `min_requests`.
    ErrorRate {
        max: f64,
        #[serde(default = "default_min_requests")]
        min_requests: u64,
    },
    /// The arm's p99 latency exceeds `max_ms` over at least `min_requests`.
    LatencyP99 {
        max_ms: f64,
        #[serde(default = "default_min_requests")]
        min_requests: u64,
    },
    /// The arm's reward is significantly worse than the control's (always-valid p < α and
    /// a negative difference), with at least `min_samples` rewards on each side.
    RewardWorse {
        #[serde(default = "default_min_requests")]
        min_samples: u64,
    },
}

fn default_min_requests() -> u64 {
    100
}

impl Guardrail {
    pub fn name(&self) -> &'static str {
        match self {
            Guardrail::ErrorRate { .. } => "error_rate",
            Guardrail::LatencyP99 { .. } => "latency_p99",
            Guardrail::RewardWorse { .. } => "reward_worse",
        }
    }
}

/// The largest number of arms (and of shadow arms) an experiment may have.
pub const MAX_ARMS: usize = 16;

/// Names of experiments and arms: what registry names allow (they end up in file names,
/// URLs and metric labels).
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} name '{name}' is not allowed: use 1-128 letters, digits, '_', '-', '.' or ':', not starting with '.'"
        )))
    }
}

impl ExperimentSpec {
    /// Parses JSON, turning serde's message into one that names the problem.
    pub fn from_json(bytes: &[u8]) -> Result<ExperimentSpec, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("invalid experiment configuration: {e}")))
    }

    /// The arms' names, defaults filled in.
    pub fn arm_names(&self) -> Vec<String> {
        self.arms
            .iter()
            .map(|a| default_arm_name(a.name.as_deref(), a.model.as_deref(), &a.version))
            .collect()
    }

    pub fn shadow_names(&self) -> Vec<String> {
        self.shadows
            .iter()
            .map(|a| default_arm_name(a.name.as_deref(), a.model.as_deref(), &a.version))
            .collect()
    }

    /// Every model the experiment serves: its own and any other an arm or a shadow names.
    pub fn models(&self) -> std::collections::BTreeSet<&str> {
        let others = self.arms.iter().filter_map(|a| a.model.as_deref());
        let shadows = self.shadows.iter().filter_map(|a| a.model.as_deref());
        std::iter::once(self.model.as_str())
            .chain(others)
            .chain(shadows)
            .collect()
    }

    /// Index of the control arm.
    pub fn control_index(&self) -> usize {
        let names = self.arm_names();
        self.control
            .as_ref()
            .and_then(|c| names.iter().position(|n| n == c))
            .unwrap_or(0)
    }

    /// Everything that can be checked without the registry.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Invalid(m));
        crate::config::validate_name("model", &self.model)?;
        if self.arms.len() < 2 {
            return bad(format!(
                "an experiment needs at least 2 arms, this one has {}",
                self.arms.len()
            ));
        }
        if self.arms.len() > MAX_ARMS || self.shadows.len() > MAX_ARMS {
            return bad(format!(
                "at most {MAX_ARMS} arms and {MAX_ARMS} shadow arms"
            ));
        }
        let names = self.arm_names();
        let shadow_names = self.shadow_names();
        for (i, n) in names.iter().chain(&shadow_names).enumerate() {
            validate_name("arm", n)?;
            if names.iter().chain(&shadow_names).take(i).any(|m| m == n) {
                return bad(format!(
                    "arm name '{n}' is used twice: give the arms distinct 'name's"
                ));
            }
        }
        for (a, n) in self.arms.iter().zip(&names) {
            if !a.weight.is_finite() || a.weight < 0.0 {
                return bad(format!(
                    "arm '{n}': weight must be a finite number >= 0, got {}",
                    a.weight
                ));
            }
        }
        if self.arms.iter().map(|a| a.weight).sum::<f64>() <= 0.0 {
            return bad("the arms' weights must have a positive sum".into());
        }
        for (s, n) in self.shadows.iter().zip(&shadow_names) {
            if !(s.percent.is_finite() && (0.0..=100.0).contains(&s.percent)) {
                return bad(format!(
                    "shadow arm '{n}': percent must be between 0 and 100, got {}",
                    s.percent
                ));
            }
        }
        if let Some(c) = &self.control
            && !names.contains(c)
        {
            return bad(format!("control '{c}' is not one of the arms {names:?}"));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad(format!("alpha must be in (0, 0.5), got {}", self.alpha));
        }
        if let Some(u) = &self.unit {
            if u.header.is_none() && u.parameter.is_none() {
                return bad("unit: give a 'header', a 'parameter' or both".into());
            }
            if let Some(h) = &u.header
                && (h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            {
                return bad(format!(
                    "unit.header '{h}' is not a valid header name (letters, digits, '-', '_')"
                ));
            }
            if u.parameter.as_deref() == Some("") {
                return bad("unit.parameter must not be empty".into());
            }
        }
        let b = &self.bandit;
        if !(b.floor.is_finite() && (0.0..1.0).contains(&b.floor)) {
            return bad(format!("bandit.floor must be in [0, 1), got {}", b.floor));
        }
        if b.update_every == 0 {
            return bad("bandit.update_every must be at least 1".into());
        }
        for g in &self.guardrails {
            match g {
                Guardrail::ErrorRate { max, .. }
                    if !(max.is_finite() && (0.0..1.0).contains(max)) =>
                {
                    return bad(format!(
                        "guardrail error_rate: max must be in [0, 1), got {max}"
                    ));
                }
                Guardrail::LatencyP99 { max_ms, .. } if !(max_ms.is_finite() && *max_ms > 0.0) => {
                    return bad(format!(
                        "guardrail latency_p99: max_ms must be > 0, got {max_ms}"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn default_arm_name(name: Option<&str>, model: Option<&str>, version: &VersionRef) -> String {
    match (name, model) {
        (Some(n), _) => n.to_owned(),
        (None, Some(m)) => format!("{m}:{}", version.as_string()),
        (None, None) => version.as_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ExperimentSpec, Error> {
        let s = ExperimentSpec::from_json(json.as_bytes())?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn defaults_and_names() {
        let s = spec(
            r#"{"model":"m","arms":[{"version":1,"weight":70},{"version":"candidate","weight":30},
               {"model":"other","version":2,"weight":0}]}"#,
        )
        .unwrap();
        assert_eq!(s.arm_names(), ["1", "candidate", "other:2"]);
        assert_eq!(s.alpha, 0.05);
        assert_eq!(s.outcome, OutcomeKind::Binary);
        assert_eq!(s.allocation, Allocation::Fixed);
        assert_eq!(s.state, RunState::Running);
        assert_eq!(s.control_index(), 0);
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let cases = [
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1}]}"#,
                "at least 2 arms",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"wieght":1},{"version":2,"weight":1}]}"#,
                "unknown field `wieght`",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":-1},{"version":2,"weight":1}]}"#,
                "weight must be",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":0},{"version":2,"weight":0}]}"#,
                "positive sum",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":1,"weight":1}]}"#,
                "used twice",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"control":"9"}"#,
                "control '9'",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"alpha":0.7}"#,
                "alpha",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"shadows":[{"version":3,"percent":120}]}"#,
                "percent",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"unit":{}}"#,
                "unit:",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"unit":{"header":"x y"}}"#,
                "header",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"guardrails":[{"rule":"error_rate","max":2}]}"#,
                "error_rate",
            ),
            (
                r#"{"model":"m","arms":[{"version":1,"weight":1},{"version":2,"weight":1}],"guardrails":[{"rule":"nope"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"model":"../x","arms":[{"version":1,"weight":1},{"version":2,"weight":1}]}"#,
                "not allowed",
            ),
        ];
        for (json, want) in cases {
            let e = spec(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
