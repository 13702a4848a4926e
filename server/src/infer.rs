//! One inference request through the request path, independent of the transport:
//!
//! ```text
//! REST/gRPC ─▶ [auth] ─▶ [experiment router] ─▶ [feature enrichment] ─▶ batcher ─▶ backend
//! ```
//!
//! The bracketed stages come with their own issues; each gets its place in [`infer`] below,
//! between resolving the model and queueing the job.

use std::sync::Arc;
use std::time::Duration;

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
    /// (`crate::enrich`), and the client's own.
    pub parameters: Vec<(String, ParamValue)>,
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
    /// Response parameters: what feature enrichment filled in and defaulted.
    pub parameters: Vec<(String, ParamValue)>,
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

/// Runs one request: resolve the version, check it, queue it, wait for the batch.
pub async fn infer(state: &AppState, mut req: InferRequest) -> ApiResult<InferResponse> {
    if state.is_draining() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    // The version is held (an `Arc`) until the response is built, so a reload or unload in
    // the meantime lets this request finish on the version it started on.
    let served: Arc<ServedVersion> = state.repo.get(&req.model, req.version.as_deref())?;
    // Experiment routing (arm choice, shadow copies) and feature enrichment (entity keys →
    // online store) plug in here, before the job is queued.
    let parameters = match &state.features {
        Some(fs) if !served.config.features.inputs.is_empty() => {
            crate::enrich::enrich(fs, &served, &mut req).await?
        }
        _ => Vec::new(),
    };
    let selected = select_outputs(&served, &req.outputs)?;
    let rx = served.submit(req.inputs, req.priority, req.timeout)?;
    let out = rx.await?;
    let mut outputs: Vec<Option<Tensor>> = out.outputs.into_iter().map(Some).collect();
    let outputs = selected
        .into_iter()
        .map(|i| {
            let t = outputs[i].take().expect("each output selected once");
            (served.signature.outputs[i].name.clone(), t)
        })
        .collect();
    Ok(InferResponse {
        model_name: served.model.clone(),
        model_version: served.version_label.clone(),
        id: req.id,
        outputs,
        timing: out.timing,
        batch_rows: out.batch_rows,
        parameters,
    })
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
