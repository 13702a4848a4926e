//! One inference request through the request path, independent of the transport:
//!
//! ```text
//! REST/gRPC ─▶ [auth] ─▶ [experiment router] ─▶ [feature enrichment] ─▶ batcher ─▶ backend
//!                                                        response ◀─┤
//!                                   drift sampler (a copy, lossy) ◀─┘
//! ```
//!
//! The bracketed stages come with their own issues; each gets its place in [`infer`] below,
//! between resolving the model and queueing the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use experiments::{Assignment, Experiment, Outcome};
use models::Tensor;
use models::batcher::Timing;
use models::repository::ServedVersion;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An inference request, decoded from REST or gRPC.
#[derive(Debug, Default)]
pub struct InferRequest {
    pub model: String,
    /// `None` or empty: the model's default version.
    pub version: Option<String>,
    pub id: Option<String>,
    /// V2 reserved parameter `priority`: 1 = highest; 0/absent = the model's default.
    pub priority: Option<u32>,
    /// V2 reserved parameter `timeout`: longest wait in the queue.
    pub timeout: Option<Duration>,
    pub inputs: Vec<(String, Tensor)>,
    /// Outputs asked for, by name; empty = every output.
    pub outputs: Vec<String>,
    /// The request parameters that are not reserved: entity keys for feature enrichment
    /// (`crate::enrich`), unit keys for experiments, and the client's own.
    pub parameters: Vec<(String, ParamValue)>,
    /// The request's HTTP headers or gRPC metadata (moved, not copied): an experiment's unit
    /// key may be one.
    pub headers: http::HeaderMap,
}

#[derive(Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    /// `(name, tensor)` in the order asked for (model order when none were named).
    pub outputs: Vec<(String, Tensor)>,
    pub timing: Timing,
    pub batch_rows: usize,
    /// Response parameters: what feature enrichment filled in and defaulted, and the
    /// experiment and arm that served the request.
    pub parameters: Vec<(String, ParamValue)>,
    /// `(experiment, arm)` when an experiment routed the request.
    pub experiment: Option<(String, String)>,
}

/// Response header (REST) and metadata entry (gRPC) naming the experiment arm that served
/// a request; `inferd-experiment` names the experiment.
pub const ARM_HEADER: &str = "inferd-experiment-arm";
pub const EXPERIMENT_HEADER: &str = "inferd-experiment";

impl InferResponse {
    /// The `inferd-experiment` / `inferd-experiment-arm` headers (REST) or metadata (gRPC)
    /// of a request an experiment routed; empty otherwise.
    pub fn experiment_headers(&self) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some((exp, arm)) = &self.experiment {
            for (name, value) in [(EXPERIMENT_HEADER, exp), (ARM_HEADER, arm)] {
                if let Ok(v) = http::HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
        }
        h
    }
}

/// A request parameter value, whatever the transport's encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
}

impl InferRequest {
    /// Applies one request-level parameter. Reserved names are checked; others are ignored
    /// (they are the client's, e.g. `headers` or `triton_*`).
    pub fn set_parameter(&mut self, name: &str, value: ParamValue) -> ApiResult<()> {
        match name {
            "priority" => {
                let p = as_u64(name, &value)?;
                self.priority =
                    Some(u32::try_from(p).map_err(|_| bad_param(name, "is too large"))?);
            }
            "timeout" => {
                let us = as_u64(name, &value)?;
                self.timeout = (us > 0).then(|| Duration::from_micros(us));
            }
            "sequence_id" | "sequence_start" | "sequence_end" => {
                return Err(ApiError::BadRequest(format!(
                    "parameter '{name}': sequence batching is not supported by inferd"
                )));
            }
            _ => self.parameters.push((name.to_owned(), value)),
        }
        Ok(())
    }
}

fn as_u64(name: &str, v: &ParamValue) -> ApiResult<u64> {
    match v {
        ParamValue::Int(i) if *i >= 0 => Ok(*i as u64),
        ParamValue::Uint(u) => Ok(*u),
        ParamValue::Double(d) if *d >= 0.0 && d.fract() == 0.0 && *d < u64::MAX as f64 => {
            Ok(*d as u64)
        }
        _ => Err(bad_param(name, "must be a non-negative integer")),
    }
}

fn bad_param(name: &str, what: &str) -> ApiError {
    ApiError::BadRequest(format!("parameter '{name}' {what}"))
}

/// Runs one request: route it (experiment), resolve the version, enrich it, queue it,
/// wait for the batch.
pub async fn infer(state: &AppState, mut req: InferRequest) -> ApiResult<InferResponse> {
    if state.is_draining() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let started = Instant::now();
    // Every response carries an id: the client's, or one assigned here, so feedback can
    // name the request.
    let id = req.id.take().unwrap_or_else(next_request_id);
    // A request that names a version bypasses experiments; one that does not goes through
    // the model's running experiment, if any.
    let routed = match req.version.as_deref() {
        Some(v) if !v.is_empty() => None,
        _ => state.experiments.for_model(&req.model),
    };
    let (served, routed) = match routed {
        Some(exp) => route(state, exp, &req)?,
        // The version is held (an `Arc`) until the response is built, so a reload or unload
        // in the meantime lets this request finish on the version it started on.
        None => (state.repo.get(&req.model, req.version.as_deref())?, None),
    };
    // Asked before the inputs are queued: a sampled request's inputs are copied for the
    // drift monitor (after enrichment, so it sees what the model saw).
    let sampled = state.drift.wants(&served.model);
    let result = run(state, &served, req, routed.as_ref(), sampled.is_some()).await;
    if let Some((exp, a)) = &routed {
        let error = match &result {
            Ok(_) => Some(false),
            Err(e) => (e.status().is_server_error() || e.status().as_u16() == 429).then_some(true),
        };
        // `None`: refused as malformed, it never reached the arm's model.
        if let Some(error) = error {
            let latency = started.elapsed();
            exp.record(*a, Outcome { latency, error });
            if !error {
                state.experiments.remember(&id, exp, *a);
            }
        }
    }
    let (out, selected, mut parameters, copied) = result?;
    if let (Some(spec), Some(inputs)) = (sampled, copied) {
        state.drift.offer(spec, &served, &id, inputs, &out.outputs);
    }
    let mut outputs: Vec<Option<Tensor>> = out.outputs.into_iter().map(Some).collect();
    let outputs = selected
        .into_iter()
        .map(|i| {
            let t = outputs[i].take().expect("each output selected once");
            (served.signature.outputs[i].name.clone(), t)
        })
        .collect();
    let experiment = routed.map(|(exp, a)| {
        let arm = exp.target(a).name.clone();
        parameters.push(("experiment".into(), ParamValue::Str(exp.name.clone())));
        parameters.push(("experiment_arm".into(), ParamValue::Str(arm.clone())));
        (exp.name.clone(), arm)
    });
    Ok(InferResponse {
        model_name: served.model.clone(),
        model_version: served.version_label.clone(),
        id: Some(id),
        outputs,
        timing: out.timing,
        batch_rows: out.batch_rows,
        parameters,
        experiment,
    })
}

type Routed = (Arc<Experiment>, Assignment);

/// Picks the request's arm and the version it runs on. An arm whose version cannot serve
/// right now (an alias moved away, a version unloaded between the choice and the lookup)
/// sends the request to the model's default version instead, unrouted: the caller is served
/// and the arm's numbers are not skewed by a failure that is not the arm's.
fn route(
    state: &AppState,
    exp: Arc<Experiment>,
    req: &InferRequest,
) -> ApiResult<(Arc<ServedVersion>, Option<Routed>)> {
    let unit = exp.unit_key().and_then(|u| {
        let from_header = u
            .header
            .as_deref()
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        from_header.or_else(|| {
            let p = u.parameter.as_deref()?;
            req.parameters
                .iter()
                .find(|(k, _)| k == p)
                .map(|(_, v)| match v {
                    ParamValue::Str(s) => s.clone(),
                    ParamValue::Int(i) => i.to_string(),
                    ParamValue::Uint(u) => u.to_string(),
                    ParamValue::Double(d) => d.to_string(),
                    ParamValue::Bool(b) => b.to_string(),
                })
        })
    });
    let a = exp.assign(unit.as_deref());
    let target = exp.target(a);
    match state.repo.get(&target.model, Some(&target.version)) {
        Ok(served) => Ok((served, Some((exp, a)))),
        Err(e) => {
            tracing::debug!(experiment = %exp.name, arm = %target.name, error = %e, "arm cannot serve; request sent to the default version");
            Ok((state.repo.get(&req.model, None)?, None))
        }
    }
}

type RunOutput = (
    models::batcher::JobOutput,
    Vec<usize>,
    Vec<(String, ParamValue)>,
    Option<Vec<(String, Tensor)>>,
);

/// Enrichment, shadow copies, the queue and the wait: the part whose failure counts against
/// the arm. `copy`: also returns a copy of the inputs as queued (for the drift monitor).
async fn run(
    state: &AppState,
    served: &Arc<ServedVersion>,
    mut req: InferRequest,
    routed: Option<&Routed>,
    copy: bool,
) -> ApiResult<RunOutput> {
    let parameters = match &state.features {
        Some(fs) if !served.config.features.inputs.is_empty() => {
            crate::enrich::enrich(fs, served, &mut req).await?
        }
        _ => Vec::new(),
    };
    let selected = select_outputs(served, &req.outputs)?;
    if let Some((exp, _)) = routed {
        for i in exp.shadows_for_request() {
            shadow(state, exp, i, &req);
        }
    }
    let copied = copy.then(|| req.inputs.clone());
    let out = served.call(req.inputs, req.priority, req.timeout).await?;
    Ok((out, selected, parameters, copied))
}

/// Sends a copy of the request to shadow arm `i` and forgets it: the response is dropped,
/// and nothing the shadow does (fail, queue, take long) reaches the caller.
fn shadow(state: &AppState, exp: &Arc<Experiment>, i: usize, req: &InferRequest) {
    let target = exp.shadow_target(i);
    let started = Instant::now();
    let served = match state.repo.get(&target.model, Some(&target.version)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(experiment = %exp.name, shadow = %target.name, error = %e, "shadow arm cannot serve");
            exp.record_shadow(
                i,
                Outcome {
                    latency: Duration::ZERO,
                    error: true,
                },
            );
            return;
        }
    };
    // The lowest priority level, so a busy shadow version serves its own callers first.
    let lowest = served.batch_settings().priority_levels.max(1);
    let rx = served.submit(req.inputs.clone(), Some(lowest), req.timeout);
    let exp = Arc::clone(exp);
    tokio::spawn(async move {
        let ok = match rx {
            Ok(rx) => rx.await.is_ok(),
            Err(_) => false,
        };
        exp.record_shadow(
            i,
            Outcome {
                latency: started.elapsed(),
                error: !ok,
            },
        );
        drop(served);
    });
}

/// A request id unique to this process's run: a random prefix and a counter.
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(rand_u32);
    format!("{prefix:08x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn rand_u32() -> u32 {
    // std's SipHash keys are random per process: hashing the time with them gives a
    // prefix no other run repeats (no RNG crate needed here).
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// Indices of the requested outputs in the signature, in request order.
fn select_outputs(served: &ServedVersion, names: &[String]) -> ApiResult<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..served.signature.outputs.len()).collect());
    }
    let mut seen = Vec::with_capacity(names.len());
    for n in names {
        let i = served.signature.output_index(n).ok_or_else(|| {
            let known: Vec<&str> = served
                .signature
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            ApiError::BadRequest(format!(
                "unknown output '{n}' requested: model '{}' has outputs {known:?}",
                served.model
            ))
        })?;
        if seen.contains(&i) {
            return Err(ApiError::BadRequest(format!(
                "output '{n}' is requested more than once"
            )));
        }
        seen.push(i);
    }
    Ok(seen)
}
