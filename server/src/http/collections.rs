//! Vector search over REST, under `/api/collections` (the domain lives in the `vector` crate;
//! every call into it runs on `spawn_blocking`: fsyncs, index builds and scans block).
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/api/collections` | → `{"collections": [info...]}` |
//! | PUT | `/api/collections/{c}` | `{"dim", "metric", "m", "ef_construction", "ef", "embedding_model"}` → info (409 if it exists) |
//! | GET, DELETE | `/api/collections/{c}` | → info / `{"deleted": true}` |
//! | PUT | `/api/collections/{c}/points` | `{"points": [{"id", "vector" \| "text", "payload"}]}` → `{"operation_id", "status"}` |
//! | POST | `/api/collections/{c}/points/delete` | `{"ids": [...]}` → `{"operation_id", "status"}` |
//! | GET | `/api/collections/{c}/points/{id}` | → `{"id", "payload", "vector"}` |
//! | POST | `/api/collections/{c}/search` | `{"vector" \| "text", "k", "ef", "filter", "with_payload", "with_vector", "score_threshold", "exact"}` → `{"result": [{"id", "score", "payload"}]}` |
//! | POST | `/api/collections/{c}/search/batch` | `{"searches": [...]}` → `{"results": [[...], ...]}` |

use std::sync::Arc;

use crate::http::At;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vector::{CreateCollection, PointId, PointInput, SearchRequest, Store};

use crate::error::{ApiError, ApiResult};

/// Request bodies larger than this get 413, unless [`router_with_limit`] sets another limit.
const DEFAULT_LIMIT: usize = 64 << 20;

#[derive(Clone)]
struct Ctx {
    store: Arc<Store>,
    limit: usize,
}

type St = State<Ctx>;

/// The collections API with its state applied, ready to `.merge()` into the HTTP app.
pub fn router(store: Arc<Store>) -> Router {
    router_with_limit(store, DEFAULT_LIMIT)
}

/// [`router`] with the server's `--max-request-bytes`.
pub fn router_with_limit(store: Arc<Store>, max_request_bytes: usize) -> Router {
    Router::new()
        .at("/api/collections", get(list))
        .at(
            "/api/collections/{c}",
            put(create).get(info).delete(delete_collection),
        )
        .at("/api/collections/{c}/points", put(upsert))
        .at("/api/collections/{c}/points/delete", post(delete_points))
        .at("/api/collections/{c}/points/{id}", get(get_point))
        .at("/api/collections/{c}/search", post(search))
        .at("/api/collections/{c}/search/batch", post(search_batch))
        .with_state(Ctx {
            store,
            limit: max_request_bytes,
        })
}

/// Runs a store call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> vector::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request was interrupted: {e}")))?
        .map_err(ApiError::from)
}

/// Reads and parses a JSON body, with a 400 that says what is wrong. JSON has no NaN or
/// Infinity, so a body carrying them (as Python's `json.dumps` writes) is named as such.
async fn body<T: DeserializeOwned>(ctx: &Ctx, body: Body) -> ApiResult<T> {
    let bytes: Bytes = super::v2::read_body(body, ctx.limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes);
        let non_finite = ["NaN", "Infinity"].iter().find(|t| text.contains(**t));
        match non_finite {
            Some(t) if e.is_syntax() => ApiError::BadRequest(format!(
                "invalid JSON body: {e}: {t} is not a JSON number, and vectors must be finite"
            )),
            _ => ApiError::BadRequest(format!("invalid JSON body: {e}")),
        }
    })
}

async fn list(State(ctx): St, ext: axum::http::Extensions) -> ApiResult<Json<Value>> {
    let store = Arc::clone(&ctx.store);
    let mut all = blocking(move || Ok(store.list())).await?;
    all.retain(|c| crate::auth::visible(&ext, crate::auth::Kind::Collection, &c.name));
    Ok(Json(json!({ "collections": all })))
}

async fn create(State(ctx): St, Path(c): Path<String>, b: Body) -> ApiResult<Json<Value>> {
    let req: CreateCollection = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    let info = blocking(move || store.create(&c, req)).await?;
    Ok(Json(json!(info)))
}

async fn info(State(ctx): St, Path(c): Path<String>) -> ApiResult<Json<Value>> {
    let store = Arc::clone(&ctx.store);
    Ok(Json(json!(blocking(move || store.info(&c)).await?)))
}

async fn delete_collection(State(ctx): St, Path(c): Path<String>) -> ApiResult<Json<Value>> {
    let store = Arc::clone(&ctx.store);
    blocking(move || store.delete(&c)).await?;
    Ok(Json(json!({ "deleted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertBody {
    points: Vec<PointInput>,
}

async fn upsert(State(ctx): St, Path(c): Path<String>, b: Body) -> ApiResult<Json<Value>> {
    let req: UpsertBody = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    Ok(Json(json!(
        blocking(move || store.upsert(&c, req.points)).await?
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    ids: Vec<PointId>,
}

async fn delete_points(State(ctx): St, Path(c): Path<String>, b: Body) -> ApiResult<Json<Value>> {
    let req: DeleteBody = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    Ok(Json(json!(
        blocking(move || store.delete_points(&c, req.ids)).await?
    )))
}

async fn get_point(
    State(ctx): St,
    Path((c, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let store = Arc::clone(&ctx.store);
    let rec = blocking(move || store.get_point(&c, &PointId::from_path(&id), true)).await?;
    Ok(Json(json!(rec)))
}

async fn search(State(ctx): St, Path(c): Path<String>, b: Body) -> ApiResult<Json<Value>> {
    let req: SearchRequest = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    let result = blocking(move || store.search(&c, req)).await?;
    Ok(Json(json!({ "result": result })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    searches: Vec<SearchRequest>,
}

async fn search_batch(State(ctx): St, Path(c): Path<String>, b: Body) -> ApiResult<Json<Value>> {
    let req: BatchBody = body(&ctx, b).await?;
    let store = Arc::clone(&ctx.store);
    let results = blocking(move || store.search_batch(&c, req.searches)).await?;
    Ok(Json(json!({ "results": results })))
}
