//! The REST transport (axum): KServe V2 routes under `/v2` ([`v2`]), their tensor codec
//! ([`codec`]), model management under `/api/models` ([`models`]), A/B experiments under
//! `/api/experiments` and `/api/feedback` ([`experiments`]), drift monitors under
//! `/api/drift` ([`drift`]), and the Prometheus
//! endpoint served on the metrics port ([`metrics_router`]).

pub mod codec;
pub mod collections;
pub mod drift;
pub mod embeddings;
pub mod experiments;
pub mod features;
pub mod keys;
pub mod models;
pub mod v2;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};

use crate::error::ApiError;
use crate::state::AppState;

/// The REST API on the HTTP port.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/stats", get(v2::stats_all))
        .route("/v2/models/{m}", get(v2::model_metadata))
        .route("/v2/models/{m}/ready", get(v2::model_ready_latest))
        .route("/v2/models/{m}/config", get(v2::config_latest))
        .route("/v2/models/{m}/stats", get(v2::stats_model))
        .route("/v2/models/{m}/infer", post(v2::infer_latest))
        .route("/v2/models/{m}/versions/{v}", get(v2::version_metadata))
        .route(
            "/v2/models/{m}/versions/{v}/ready",
            get(v2::model_ready_version),
        )
        .route(
            "/v2/models/{m}/versions/{v}/config",
            get(v2::config_version),
        )
        .route("/v2/models/{m}/versions/{v}/stats", get(v2::stats_version))
        .route("/v2/models/{m}/versions/{v}/infer", post(v2::infer_version))
        .route("/v2/repository/index", post(v2::repository_index))
        .route("/v2/repository/models/{m}/load", post(v2::repository_load))
        .route(
            "/v2/repository/models/{m}/unload",
            post(v2::repository_unload),
        )
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/api/models", get(models::list))
        .route(
            "/api/models/{name}",
            get(models::get_model).delete(models::delete_model),
        )
        .route("/api/models/{name}/versions", post(models::upload))
        .route(
            "/api/models/{name}/versions/{v}",
            get(models::get_version).delete(models::delete_version),
        )
        .route(
            "/api/models/{name}/aliases/{alias}",
            put(models::put_alias).delete(models::delete_alias),
        )
        .route(
            "/api/models/{name}/aliases/{alias}/rollback",
            post(models::rollback_alias),
        )
        .route("/api/experiments", get(experiments::list))
        .route(
            "/api/experiments/{name}",
            get(experiments::get)
                .put(experiments::put)
                .delete(experiments::delete),
        )
        .route("/api/experiments/{name}/stop", post(experiments::stop))
        .route(
            "/api/experiments/{name}/weights",
            post(experiments::weights),
        )
        .route(
            "/api/experiments/{name}/promote",
            post(experiments::promote),
        )
        .route("/api/feedback", post(experiments::feedback))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> impl IntoResponse {
    let e = ApiError::BadRequest(format!("{method} is not allowed on {}", uri.path()));
    let mut r = e.into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// `/metrics` in the Prometheus text format, on the metrics port.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let families = s.registry.gather();
    let body = prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"));
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}
