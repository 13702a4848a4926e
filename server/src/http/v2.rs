//! KServe V2 / Open Inference Protocol REST endpoints, with Triton's extensions for model
//! configuration, statistics and the model repository.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use models::repository::ServedVersion;
use serde_json::{Value, json};

use super::codec;
use crate::error::{ApiError, ApiResult};
use crate::infer;
use crate::state::{AppState, EXTENSIONS, SERVER_NAME, SERVER_VERSION};
use crate::triton;

type AppStateRef = State<Arc<AppState>>;

/// Reads a request body, refusing more than `limit` bytes with 413.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(s): AppStateRef) -> Response {
    let ready = s.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn served(s: &AppState, model: &str, version: Option<&str>) -> ApiResult<Arc<ServedVersion>> {
    Ok(s.repo.get(model, version)?)
}

async fn metadata(s: &AppState, model: &str, version: Option<&str>) -> ApiResult<Json<Value>> {
    let v = served(s, model, version)?;
    let versions: Vec<String> = match version {
        Some(_) => vec![v.version_label.clone()],
        None => s
            .repo
            .model(model)?
            .ready()
            .map(|r| r.version_label.clone())
            .collect(),
    };
    let tensors = |ts: &[models::TensorSpec]| {
        ts.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
            .collect::<Vec<_>>()
    };
    Ok(Json(json!({
        "name": v.model,
        "versions": versions,
        "platform": v.platform(),
        "inputs": tensors(&v.signature.inputs),
        "outputs": tensors(&v.signature.outputs),
    })))
}

pub async fn model_metadata(
    State(s): AppStateRef,
    Path(m): Path<String>,
) -> ApiResult<Json<Value>> {
    metadata(&s, &m, None).await
}

pub async fn version_metadata(
    State(s): AppStateRef,
    Path((m, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    metadata(&s, &m, Some(&v)).await
}

fn model_ready(s: &AppState, model: &str, version: Option<&str>) -> Response {
    let ready = s.repo.get(model, version).is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "name": model, "ready": ready }))).into_response()
}

pub async fn model_ready_latest(State(s): AppStateRef, Path(m): Path<String>) -> Response {
    model_ready(&s, &m, None)
}

pub async fn model_ready_version(
    State(s): AppStateRef,
    Path((m, v)): Path<(String, String)>,
) -> Response {
    model_ready(&s, &m, Some(&v))
}

async fn do_infer(
    s: Arc<AppState>,
    model: &str,
    version: Option<&str>,
    access: Option<crate::access::Slot>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(body, s.max_request_bytes).await?;
    let (mut req, enc) = codec::decode_request(&headers, &body, model, version)?;
    drop(body);
    req.headers = headers;
    let resp = infer::infer(&s, req).await?;
    crate::access::Slot::served(access.as_ref(), &resp);
    let mut http = codec::encode_response(&resp, &enc);
    http.headers_mut().extend(resp.experiment_headers());
    Ok(http)
}

pub async fn infer_latest(
    State(s): AppStateRef,
    Path(m): Path<String>,
    access: Option<axum::Extension<crate::access::Slot>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    do_infer(s, &m, None, access.map(|a| a.0), headers, body).await
}

pub async fn infer_version(
    State(s): AppStateRef,
    Path((m, v)): Path<(String, String)>,
    access: Option<axum::Extension<crate::access::Slot>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    do_infer(s, &m, Some(&v), access.map(|a| a.0), headers, body).await
}

pub async fn config_latest(State(s): AppStateRef, Path(m): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(triton::model_config_json(&triton::model_config(
        &*served(&s, &m, None)?,
    ))))
}

pub async fn config_version(
    State(s): AppStateRef,
    Path((m, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(triton::model_config_json(&triton::model_config(
        &*served(&s, &m, Some(&v))?,
    ))))
}

fn stats(
    s: &AppState,
    model: Option<&str>,
    version: Option<&str>,
    ext: Option<&axum::http::Extensions>,
) -> ApiResult<Json<Value>> {
    let versions: Vec<Arc<ServedVersion>> = match (model, version) {
        (None, _) => s.repo.ready_versions(),
        (Some(m), None) => s.repo.model(m)?.ready().cloned().collect(),
        (Some(m), Some(v)) => vec![served(s, m, Some(v))?],
    };
    let stats: Vec<Value> = versions
        .iter()
        .filter(|v| {
            ext.is_none_or(|ext| crate::auth::visible(ext, crate::auth::Kind::Model, &v.model))
        })
        .map(|v| triton::model_statistics_json(&triton::model_statistics(v)))
        .collect();
    Ok(Json(json!({ "model_stats": stats })))
}

/// Every ready version's statistics, those of the models the principal may see.
pub async fn stats_all(
    State(s): AppStateRef,
    ext: axum::http::Extensions,
) -> ApiResult<Json<Value>> {
    stats(&s, None, None, Some(&ext))
}

pub async fn stats_model(State(s): AppStateRef, Path(m): Path<String>) -> ApiResult<Json<Value>> {
    stats(&s, Some(&m), None, None)
}

pub async fn stats_version(
    State(s): AppStateRef,
    Path((m, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    stats(&s, Some(&m), Some(&v), None)
}

/// Parses an optional JSON object body (empty = `{}`).
fn optional_json(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the JSON body must be an object".into(),
        ));
    }
    Ok(v)
}

pub async fn repository_index(
    State(s): AppStateRef,
    ext: axum::http::Extensions,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body = optional_json(&read_body(body, s.max_request_bytes).await?)?;
    let ready_only = match body.get("ready") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::BadRequest("'ready' must be a boolean".into()))?,
    };
    let rows: Vec<Value> = s
        .repo
        .index()
        .into_iter()
        .filter(|e| !ready_only || e.state == "READY")
        .filter(|e| crate::auth::visible(&ext, crate::auth::Kind::Model, &e.name))
        .map(|e| {
            let mut row = json!({ "name": e.name, "version": e.version, "state": e.state });
            if !e.reason.is_empty() {
                row["reason"] = json!(e.reason);
            }
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

pub async fn repository_load(
    State(s): AppStateRef,
    Path(m): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body = optional_json(&read_body(body, s.max_request_bytes).await?)?;
    let params = body.get("parameters").and_then(Value::as_object);
    if params.is_some_and(|p| p.keys().any(|k| k == "config" || k.starts_with("file:"))) {
        return Err(ApiError::BadRequest(
            "loading a model from 'config' / 'file:' parameters is not supported: put the model in the \
             repository directory, then call load"
                .into(),
        ));
    }
    let repo = Arc::clone(&s.repo);
    let name = m.clone();
    tokio::task::spawn_blocking(move || repo.load_model(&name))
        .await
        .map_err(|e| ApiError::Unavailable(format!("model load was interrupted: {e}")))??;
    Ok(Json(json!({})))
}

pub async fn repository_unload(
    State(s): AppStateRef,
    Path(m): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    optional_json(&read_body(body, s.max_request_bytes).await?)?;
    s.repo.unload_model(&m)?;
    Ok(Json(json!({})))
}
