//! Drift monitoring over REST, under `/api/drift`: a model's monitor (spec, windows,
//! verdicts, performance), its reference (JSON columns or CSV), and the list. The same
//! router serves `inferd serve` and `inferd drift watch`.

use std::sync::Arc;

use crate::http::At;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drift::Monitors;
use serde::Deserialize;
use serde_json::{Value, json};

use super::v2::read_body;
use crate::error::{ApiError, ApiResult};

#[derive(Clone)]
struct Ctx {
    monitors: Arc<Monitors>,
    limit: usize,
}

type St = State<Ctx>;

/// The drift API with its state applied, ready to `.merge()` into an HTTP app.
pub fn router(monitors: Arc<Monitors>, max_request_bytes: usize) -> Router {
    Router::new()
        .at("/api/drift", get(list))
        .at("/api/drift/{model}", get(status).put(put).delete(delete))
        .at(
            "/api/drift/{model}/reference",
            get(reference).put(put_reference).delete(delete_reference),
        )
        .with_state(Ctx {
            monitors,
            limit: max_request_bytes,
        })
}

/// Runs a monitor call off the async runtime (evaluation holds a monitor's lock; writes
/// fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> drift::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request was interrupted: {e}")))?
        .map_err(ApiError::from)
}

/// `GET /api/drift`: every monitored model with its last verdict.
async fn list(State(c): St, ext: axum::http::Extensions) -> ApiResult<Json<Value>> {
    let m = Arc::clone(&c.monitors);
    let rows = blocking(move || {
        Ok(m.models()
            .iter()
            .filter(|name| crate::auth::visible(&ext, crate::auth::Kind::Model, name))
            .filter_map(|name| m.status(name, 0))
            .map(|s| {
                json!({
                    "model": s.model,
                    "reference": s.reference.as_ref().map(|r| json!({"rows": r.rows, "source": r.source})),
                    "windows": s.windows,
                    "drift_detected": s.drift_detected,
                })
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({ "monitors": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    /// The last evaluated windows to show (default: all kept).
    windows: Option<usize>,
}

/// `GET /api/drift/{model}`: spec, reference profile, the last windows' per-column
/// results, performance per version.
async fn status(
    State(c): St,
    Path(model): Path<String>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let m = Arc::clone(&c.monitors);
    let last = q.windows.unwrap_or(usize::MAX);
    let s = blocking(move || m.status(&model, last).ok_or(drift::Error::NotFound(model))).await?;
    Ok(Json(s).into_response())
}

/// `PUT /api/drift/{model}`: creates or changes the monitor (an empty body: the defaults).
async fn put(State(c): St, Path(model): Path<String>, body: Body) -> ApiResult<Response> {
    let bytes = read_body(body, c.limit).await?;
    let m = Arc::clone(&c.monitors);
    let (created, s) = blocking(move || {
        let created = m.put_json(&model, &bytes)?;
        Ok((created, m.status(&model, 0)))
    })
    .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(s)).into_response())
}

async fn delete(State(c): St, Path(model): Path<String>) -> ApiResult<StatusCode> {
    let m = Arc::clone(&c.monitors);
    let name = model.clone();
    match blocking(move || m.delete(&name)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(drift::Error::NotFound(model).into()),
    }
}

/// `PUT /api/drift/{model}/reference`: JSON (`{"columns": {...}, "embeddings": {...}}`) or
/// CSV (`Content-Type: text/csv`). Creates a default monitor when the model has none.
async fn put_reference(
    State(c): St,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = read_body(body, c.limit).await?;
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/csv"));
    let m = Arc::clone(&c.monitors);
    let p = blocking(move || m.upload_reference(&model, &bytes, csv)).await?;
    Ok(Json(json!({ "reference": p })).into_response())
}

/// `GET /api/drift/{model}/reference`: the stored reference itself (sorted values per
/// numeric column, counts per category, the embedding vectors).
async fn reference(State(c): St, Path(model): Path<String>) -> ApiResult<Response> {
    let m = Arc::clone(&c.monitors);
    let r = blocking(move || {
        m.reference(&model).ok_or_else(|| {
            drift::Error::Invalid(format!(
                "model '{model}' has no drift reference (PUT one, or set capture_reference)"
            ))
        })
    })
    .await?;
    Ok(Json(r.as_ref()).into_response())
}

async fn delete_reference(State(c): St, Path(model): Path<String>) -> ApiResult<StatusCode> {
    let m = Arc::clone(&c.monitors);
    let name = model.clone();
    match blocking(move || m.clear_reference(&name)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound(format!(
            "model '{model}' has no drift reference"
        ))),
    }
}
