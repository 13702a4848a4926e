//! `inferd.v1.Experiments`: A/B experiments and feedback over gRPC — the same operations
//! as REST `/api/experiments` and `/api/feedback`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::experiments::Feedback;
use ::experiments::config::ExperimentSpec;
use ::experiments::results::Results;

use crate::drift::FeedbackOutcome;
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};

use crate::ab;
use crate::error::ApiError;
use crate::proto::inferd as pb;
use crate::state::AppState;
use pb::experiments_server::Experiments;

pub use pb::experiments_server::ExperimentsServer;

pub struct ExperimentsService {
    state: Arc<AppState>,
}

impl ExperimentsService {
    pub fn server(state: Arc<AppState>) -> ExperimentsServer<ExperimentsService> {
        let limit = state.max_request_bytes;
        ExperimentsServer::new(ExperimentsService { state }).max_decoding_message_size(limit)
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Inserts `v` under `k` unless it is the proto default (absent in proto3).
fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = match &v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    };
    if !empty {
        m.insert(k.into(), v);
    }
}

/// The message as the JSON configuration REST takes, so both transports share one parser
/// and one set of checks (defaults for the fields left out, unknown values refused).
fn spec(s: pb::ExperimentSpec) -> Result<ExperimentSpec, ApiError> {
    let mut m = Map::new();
    set(&mut m, "model", json!(s.model));
    let arm = |name: String, model: String, version: String, share: (&str, f64)| {
        let mut a = Map::new();
        set(&mut a, "name", json!(name));
        set(&mut a, "model", json!(model));
        a.insert("version".into(), json!(version));
        a.insert(share.0.into(), json!(share.1));
        Value::Object(a)
    };
    m.insert(
        "arms".into(),
        s.arms
            .into_iter()
            .map(|a| arm(a.name, a.model, a.version, ("weight", a.weight)))
            .collect(),
    );
    m.insert(
        "shadows".into(),
        s.shadows
            .into_iter()
            .map(|a| arm(a.name, a.model, a.version, ("percent", a.percent)))
            .collect(),
    );
    if let Some(u) = s.unit {
        let mut k = Map::new();
        set(&mut k, "header", json!(u.header));
        set(&mut k, "parameter", json!(u.parameter));
        m.insert("unit".into(), Value::Object(k));
    }
    set(&mut m, "outcome", json!(s.outcome));
    set(&mut m, "control", json!(s.control));
    set(&mut m, "alpha", json!(s.alpha));
    set(&mut m, "allocation", json!(s.allocation));
    if let Some(b) = s.bandit {
        let mut k = Map::new();
        set(&mut k, "min_exposures", json!(b.min_exposures));
        set(&mut k, "floor", json!(b.floor));
        set(&mut k, "update_every", json!(b.update_every));
        m.insert("bandit".into(), Value::Object(k));
    }
    let guardrails: Vec<Value> = s
        .guardrails
        .into_iter()
        .map(|g| {
            let mut k = Map::new();
            k.insert("rule".into(), json!(g.rule));
            match g.rule.as_str() {
                "error_rate" => {
                    k.insert("max".into(), json!(g.max));
                    set(&mut k, "min_requests", json!(g.min_requests));
                }
                "latency_p99" => {
                    k.insert("max_ms".into(), json!(g.max_ms));
                    set(&mut k, "min_requests", json!(g.min_requests));
                }
                _ => set(&mut k, "min_samples", json!(g.min_requests)),
            }
            Value::Object(k)
        })
        .collect();
    m.insert("guardrails".into(), Value::Array(guardrails));
    set(&mut m, "seed", json!(s.seed));
    set(&mut m, "state", json!(s.state));
    Ok(ExperimentSpec::from_json(
        &serde_json::to_vec(&Value::Object(m)).expect("JSON"),
    )?)
}

fn word<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn interval(i: Option<(f64, f64)>) -> Option<pb::Interval> {
    i.map(|(low, high)| pb::Interval { low, high })
}

fn results(r: Results) -> pb::ExperimentResults {
    pb::ExperimentResults {
        state: word(&r.state),
        outcome: word(&r.outcome),
        allocation: word(&r.allocation),
        alpha: r.alpha,
        control: r.control,
        arms: r
            .arms
            .into_iter()
            .map(|a| {
                let vs = a.vs_control;
                pb::ArmResult {
                    name: a.name,
                    model: a.target.model,
                    version: a.target.version,
                    weight: a.weight,
                    configured_weight: a.configured_weight,
                    stopped_by_guardrail: a.stopped_by_guardrail,
                    exposures: a.exposures,
                    errors: a.errors,
                    error_rate: a.error_rate,
                    latency_p50_ms: a.latency_p50_ms,
                    latency_p99_ms: a.latency_p99_ms,
                    rewards: a.outcome.n,
                    mean: a.outcome.mean,
                    mean_ci95: interval(a.outcome.ci95),
                    successes: a.outcome.successes.unwrap_or(0),
                    difference: vs.as_ref().and_then(|v| v.difference),
                    difference_ci95: interval(vs.as_ref().and_then(|v| v.difference_ci95)),
                    relative_lift: vs.as_ref().and_then(|v| v.relative_lift),
                    relative_lift_ci95: interval(vs.as_ref().and_then(|v| v.relative_lift_ci95)),
                    test: vs.as_ref().map(|v| v.test.to_owned()).unwrap_or_default(),
                    statistic: vs.as_ref().and_then(|v| v.statistic),
                    df: vs.as_ref().and_then(|v| v.df),
                    p_value: vs.as_ref().and_then(|v| v.p_value),
                    always_valid_p_value: vs.as_ref().and_then(|v| v.always_valid_p_value),
                    always_valid_ci: interval(vs.as_ref().and_then(|v| v.always_valid_ci)),
                    significant: vs.as_ref().is_some_and(|v| v.significant),
                }
            })
            .collect(),
        shadows: r
            .shadows
            .into_iter()
            .map(|s| pb::ShadowResult {
                name: s.name,
                model: s.target.model,
                version: s.target.version,
                percent: s.percent,
                requests: s.requests,
                errors: s.errors,
                latency_p50_ms: s.latency_p50_ms,
                latency_p99_ms: s.latency_p99_ms,
            })
            .collect(),
        srm: r.srm.map(|s| pb::Srm {
            statistic: s.statistic,
            df: s.df,
            p_value: s.p_value,
            mismatch: s.mismatch,
        }),
        trustworthy: r.trustworthy,
        events: r
            .events
            .into_iter()
            .map(|e| pb::ExperimentEvent {
                time_ms: e.time_ms,
                kind: e.kind,
                arm: e.arm.unwrap_or_default(),
                rule: e.rule.unwrap_or_default(),
                value: e.value,
                threshold: e.threshold,
                message: e.message,
            })
            .collect(),
        promoted: r.promoted.unwrap_or_default(),
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        name: r.name,
        model: r.model,
    }
}

fn report(r: FeedbackOutcome) -> pb::SendFeedbackResponse {
    pb::SendFeedbackResponse {
        accepted: r.accepted as u64,
        labelled: r.labelled as u64,
        rejected: r
            .rejected
            .into_iter()
            .map(|x| pb::RejectedFeedback {
                index: x.index as u64,
                reason: x.reason,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Experiments for ExperimentsService {
    async fn put_experiment(
        &self,
        r: Request<pb::PutExperimentRequest>,
    ) -> Reply<pb::ExperimentResults> {
        let (_, ext, r) = r.into_parts();
        let s = spec(r.spec.ok_or_else(|| {
            Status::invalid_argument("spec is missing: give the experiment's configuration")
        })?)?;
        ab::check_reach(&self.state, ext.get(), &r.name, Some(&s))?;
        ab::put(&self.state, &r.name, s).await?;
        let exp = self
            .state
            .experiments
            .get(&r.name)
            .map_err(ApiError::from)?;
        Ok(Response::new(results(exp.results())))
    }

    async fn get_experiment(
        &self,
        r: Request<pb::GetExperimentRequest>,
    ) -> Reply<pb::ExperimentResults> {
        let (_, ext, r) = r.into_parts();
        ab::check_reach(&self.state, ext.get(), &r.name, None)?;
        let exp = self
            .state
            .experiments
            .get(&r.name)
            .map_err(ApiError::from)?;
        Ok(Response::new(results(exp.results())))
    }

    async fn list_experiments(
        &self,
        r: Request<pb::ListExperimentsRequest>,
    ) -> Reply<pb::ListExperimentsResponse> {
        let experiments = self
            .state
            .experiments
            .list()
            .iter()
            .filter(|e| ab::within(r.extensions().get(), e.models()))
            .map(|e| results(e.results()))
            .collect();
        Ok(Response::new(pb::ListExperimentsResponse { experiments }))
    }

    async fn stop_experiment(
        &self,
        r: Request<pb::StopExperimentRequest>,
    ) -> Reply<pb::ExperimentResults> {
        let (_, ext, r) = r.into_parts();
        ab::check_reach(&self.state, ext.get(), &r.name, None)?;
        let exp = self
            .state
            .experiments
            .stop(&r.name, "stopped through the API")
            .map_err(ApiError::from)?;
        Ok(Response::new(results(exp.results())))
    }

    async fn set_weights(&self, r: Request<pb::SetWeightsRequest>) -> Reply<pb::ExperimentResults> {
        let (_, ext, r) = r.into_parts();
        ab::check_reach(&self.state, ext.get(), &r.name, None)?;
        let weights: BTreeMap<String, f64> = r.weights.into_iter().collect();
        let exps = &self.state.experiments;
        exps.set_weights(&r.name, &weights)
            .map_err(ApiError::from)?;
        let exp = exps.get(&r.name).map_err(ApiError::from)?;
        Ok(Response::new(results(exp.results())))
    }

    async fn promote_arm(
        &self,
        r: Request<pb::PromoteArmRequest>,
    ) -> Reply<pb::PromoteArmResponse> {
        let (_, ext, r) = r.into_parts();
        ab::check_reach(&self.state, ext.get(), &r.name, None)?;
        let p = ab::promote(&self.state, &r.name, &r.arm).await?;
        Ok(Response::new(pb::PromoteArmResponse {
            experiment: p.experiment,
            arm: p.arm,
            model: p.model,
            alias: p.alias.into(),
            version: p.version,
        }))
    }

    async fn delete_experiment(
        &self,
        r: Request<pb::DeleteExperimentRequest>,
    ) -> Reply<pb::DeleteExperimentResponse> {
        let (_, ext, r) = r.into_parts();
        ab::check_reach(&self.state, ext.get(), &r.name, None)?;
        ab::delete(&self.state, &r.name).await?;
        Ok(Response::new(pb::DeleteExperimentResponse {}))
    }

    async fn send_feedback(
        &self,
        r: Request<pb::SendFeedbackRequest>,
    ) -> Reply<pb::SendFeedbackResponse> {
        let (_, ext, r) = r.into_parts();
        let items = r.feedback;
        let mut feedback = Vec::with_capacity(items.len());
        for (i, f) in items.into_iter().enumerate() {
            let truth = match f.truth_json.as_str() {
                "" => None,
                t => Some(serde_json::from_str(t).map_err(|e| {
                    Status::invalid_argument(format!("feedback[{i}].truth_json is not JSON: {e}"))
                })?),
            };
            let some = |s: String| Some(s).filter(|s| !s.is_empty());
            feedback.push(Feedback {
                id: some(f.id),
                experiment: some(f.experiment),
                unit: some(f.unit),
                reward: f.reward,
                truth,
            });
        }
        Ok(Response::new(report(
            crate::drift::feedback(&self.state, ext.get(), &feedback).await?,
        )))
    }
}
