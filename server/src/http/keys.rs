//! API keys made and revoked by an admin: `GET /api/keys` (names, scopes, where each is
//! defined; never a secret), `POST /api/keys` `{"name", "scope"}` → 201 with the secret,
//! shown this once, `DELETE /api/keys/{name}` → 204, refused from the next request on. All
//! need `admin` ([`crate::auth::http_need`]).

use std::sync::Arc;

use crate::http::At;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Auth, Reach, Scope};
use crate::error::ApiError;
use crate::http::v2::read_body;

/// A key request is a name and a scope: a few bytes.
const MAX_BODY: usize = 4096;

pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .at("/api/keys", get(list).post(create))
        .at("/api/keys/{name}", delete(revoke))
        .with_state(auth)
}

async fn list(State(auth): State<Arc<Auth>>) -> Json<Value> {
    Json(json!({ "keys": auth.list_keys() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    /// infer, write or admin.
    scope: Scope,
    /// Restrictions (each absent: all).
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    collections: Option<Vec<String>>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
}

async fn create(
    State(auth): State<Arc<Auth>>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = read_body(body, MAX_BODY).await?;
    let body: NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "{e} (expected {{\"name\": \"ranking-service\", \"scope\": \"infer\"}}; scope: infer, write or admin)"
        ))
    })?;
    let reach = Reach {
        models: body.models,
        collections: body.collections,
        feature_views: body.feature_views,
    };
    let secret = auth.create_key(&body.name, body.scope, reach.clone())?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": body.name,
            "scope": body.scope,
            "restricted_to": reach,
            "secret": secret,
            "note": "the secret is shown this once and stored nowhere (only its SHA-256 is)",
        })),
    ))
}

async fn revoke(
    State(auth): State<Arc<Auth>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.revoke_key(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
