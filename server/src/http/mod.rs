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
pub mod qdrant;
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
        .at("/v2", get(v2::server_metadata))
        .at("/v2/health/live", get(v2::live))
        .at("/v2/health/ready", get(v2::ready))
        .at("/v2/models/stats", get(v2::stats_all))
        .at("/v2/models/{m}", get(v2::model_metadata))
        .at("/v2/models/{m}/ready", get(v2::model_ready_latest))
        .at("/v2/models/{m}/config", get(v2::config_latest))
        .at("/v2/models/{m}/stats", get(v2::stats_model))
        .at("/v2/models/{m}/infer", post(v2::infer_latest))
        .at("/v2/models/{m}/versions/{v}", get(v2::version_metadata))
        .at(
            "/v2/models/{m}/versions/{v}/ready",
            get(v2::model_ready_version),
        )
        .at(
            "/v2/models/{m}/versions/{v}/config",
            get(v2::config_version),
        )
        .at("/v2/models/{m}/versions/{v}/stats", get(v2::stats_version))
        .at("/v2/models/{m}/versions/{v}/infer", post(v2::infer_version))
        .at("/v2/repository/index", post(v2::repository_index))
        .at("/v2/repository/models/{m}/load", post(v2::repository_load))
        .at(
            "/v2/repository/models/{m}/unload",
            post(v2::repository_unload),
        )
        .at("/v1/embeddings", post(embeddings::embeddings))
        .at("/v1/models", get(embeddings::list_models))
        .at("/v1/models/{model}", get(embeddings::get_model))
        .at("/api/models", get(models::list))
        .at(
            "/api/models/{name}",
            get(models::get_model).delete(models::delete_model),
        )
        .at("/api/models/{name}/versions", post(models::upload))
        .at(
            "/api/models/{name}/versions/{v}",
            get(models::get_version).delete(models::delete_version),
        )
        .at(
            "/api/models/{name}/aliases/{alias}",
            put(models::put_alias).delete(models::delete_alias),
        )
        .at(
            "/api/models/{name}/aliases/{alias}/rollback",
            post(models::rollback_alias),
        )
        .at("/api/experiments", get(experiments::list))
        .at(
            "/api/experiments/{name}",
            get(experiments::get)
                .put(experiments::put)
                .delete(experiments::delete),
        )
        .at("/api/experiments/{name}/stop", post(experiments::stop))
        .at(
            "/api/experiments/{name}/weights",
            post(experiments::weights),
        )
        .at(
            "/api/experiments/{name}/promote",
            post(experiments::promote),
        )
        .at("/api/feedback", post(experiments::feedback))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// A 405 for a path served with other methods (the app's method-not-allowed fallback, after
/// [`crate::auth::method_not_allowed`] has authenticated the caller).
pub fn method_not_allowed(method: &Method, uri: &Uri) -> axum::response::Response {
    let e = ApiError::BadRequest(format!("{method} is not allowed on {}", uri.path()));
    let mut r = e.into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Every REST path template the HTTP port's routers serve, recorded as they are built
/// ([`At::at`]): `GET /api/routes` lists them, and the e2e test walks each against every
/// scope, so a route added without a decision in its table fails it.
static PATHS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// `Router::route`, recording the path in the route list.
pub trait At<S> {
    fn at(self, path: &'static str, method_router: axum::routing::MethodRouter<S>) -> Self;
}

impl<S: Clone + Send + Sync + 'static> At<S> for Router<S> {
    fn at(self, path: &'static str, method_router: axum::routing::MethodRouter<S>) -> Self {
        PATHS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path);
        self.route(path, method_router)
    }
}

/// The REST paths recorded so far (all of them once the app is built).
pub fn paths() -> Vec<&'static str> {
    PATHS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .copied()
        .collect()
}

/// `GET /api/routes` (admin): the REST path templates and the gRPC methods this server
/// answers.
pub fn routes_router() -> Router {
    Router::new().at(
        "/api/routes",
        get(|| async {
            axum::Json(serde_json::json!({
                "http": paths(),
                "grpc": crate::proto::GRPC_METHODS
                    .iter()
                    .map(|(path, client_streaming, server_streaming)| serde_json::json!({
                        "method": path,
                        "client_streaming": client_streaming,
                        "server_streaming": server_streaming,
                    }))
                    .collect::<Vec<_>>(),
            }))
        }),
    )
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
