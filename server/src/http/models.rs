//! inferd's model-management REST API, under `/api/models`: upload versions, inspect them,
//! move aliases, delete.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/api/models` | every model with its versions and aliases |
//! | GET, DELETE | `/api/models/{name}` | one model; delete (refused while it has aliases) |
//! | POST | `/api/models/{name}/versions` | upload: the raw body, or multipart with a `model` part and an optional `config` part (a `config.toml`); `?sha256=` (or `x-inferd-sha256`) checks the digest, `?label=k=v` adds labels, `?wait=true` answers once validated |
//! | GET, DELETE | `/api/models/{name}/versions/{v}` | one version; delete (refused while an alias points at it) |
//! | PUT, DELETE | `/api/models/{name}/aliases/{alias}` | `{"version": N}` moves the alias (atomically); delete removes it |
//! | POST | `/api/models/{name}/aliases/{alias}/rollback` | moves the alias back to its previous version |

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use models::registry::{ModelMeta, VersionStatus};
use models::repository::{ModelEntry, Repository, VersionInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::uploads::{self, UploadOptions, blocking};

type AppStateRef = State<Arc<AppState>>;

fn version_json(v: &VersionInfo) -> Value {
    let mut out = json!({
        "name": v.model,
        "version": v.version,
        "state": v.state,
        "aliases": v.aliases,
    });
    if !v.reason.is_empty() {
        out["state_reason"] = json!(v.reason);
    }
    match &v.meta {
        Some(m) => {
            out["status"] = json!(m.status.as_str());
            if !m.reason.is_empty() {
                out["reason"] = json!(m.reason);
            }
            out["sha256"] = json!(m.sha256);
            out["size"] = json!(m.size);
            out["created_ms"] = json!(m.created_ms);
            out["backend"] = json!(m.backend);
            out["labels"] = json!(m.labels);
            out["inputs"] = json!(m.inputs);
            out["outputs"] = json!(m.outputs);
        }
        // A version put in place by hand that never loaded: nothing is known yet.
        None => out["status"] = json!("UNKNOWN"),
    }
    out
}

fn aliases_json(meta: &ModelMeta) -> Value {
    Value::Object(
        meta.aliases
            .iter()
            .map(|(name, a)| {
                (
                    name.clone(),
                    json!({
                        "version": a.version,
                        "history": a.history.iter().map(|h| json!({ "version": h.version, "at_ms": h.at_ms })).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect(),
    )
}

fn model_json(repo: &Repository, entry: &ModelEntry) -> Value {
    let versions: Vec<Value> = entry
        .versions
        .keys()
        .filter_map(|v| repo.version_info(&entry.name, *v).ok())
        .map(|v| version_json(&v))
        .collect();
    let mut out = json!({
        "name": entry.name,
        "default_version": entry.default_version(),
        "versions": versions,
        "aliases": aliases_json(&entry.meta),
    });
    if let Some(e) = &entry.error {
        out["error"] = json!(e);
    }
    out
}

fn parse_version(model: &str, v: &str) -> ApiResult<u64> {
    v.parse().map_err(|_| {
        ApiError::Model(models::Error::VersionNotFound {
            model: model.to_owned(),
            version: v.to_owned(),
        })
    })
}

pub async fn list(State(s): AppStateRef, ext: axum::http::Extensions) -> Json<Value> {
    let models: Vec<Value> = s
        .repo
        .models()
        .iter()
        .filter(|e| crate::auth::visible(&ext, crate::auth::Kind::Model, &e.name))
        .map(|e| model_json(&s.repo, e))
        .collect();
    Json(json!({ "models": models }))
}

pub async fn get_model(State(s): AppStateRef, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(model_json(&s.repo, &*s.repo.model(&name)?)))
}

pub async fn delete_model(
    State(s): AppStateRef,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let repo = Arc::clone(&s.repo);
    blocking(move || repo.delete_model(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_version(
    State(s): AppStateRef,
    Path((name, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = parse_version(&name, &v)?;
    Ok(Json(version_json(&s.repo.version_info(&name, v)?)))
}

pub async fn delete_version(
    State(s): AppStateRef,
    Path((name, v)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let v = parse_version(&name, &v)?;
    let repo = Arc::clone(&s.repo);
    blocking(move || repo.delete_version(&name, v)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct AliasBody {
    version: u64,
}

pub async fn put_alias(
    State(s): AppStateRef,
    Path((name, alias)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let bytes = super::v2::read_body(body, 64 * 1024).await?;
    let AliasBody { version } = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"version\": N}}: {e}")))?;
    let repo = Arc::clone(&s.repo);
    let entry = blocking(move || repo.set_alias(&name, &alias, version)).await?;
    Ok(Json(model_json(&s.repo, &entry)))
}

pub async fn delete_alias(
    State(s): AppStateRef,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let repo = Arc::clone(&s.repo);
    let entry = blocking(move || repo.delete_alias(&name, &alias)).await?;
    Ok(Json(model_json(&s.repo, &entry)))
}

pub async fn rollback_alias(
    State(s): AppStateRef,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let repo = Arc::clone(&s.repo);
    let (_, entry) = blocking(move || repo.rollback_alias(&name, &alias)).await?;
    Ok(Json(model_json(&s.repo, &entry)))
}

fn upload_options(
    query: Vec<(String, String)>,
    headers: &axum::http::HeaderMap,
) -> ApiResult<UploadOptions> {
    let mut o = UploadOptions {
        expected_sha256: headers
            .get("x-inferd-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Default::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "sha256" => o.expected_sha256 = Some(v),
            "wait" => {
                o.wait = v
                    .parse()
                    .map_err(|_| ApiError::BadRequest("'wait' must be true or false".into()))?
            }
            "label" => {
                let (lk, lv) = v.split_once('=').ok_or_else(|| {
                    ApiError::BadRequest(format!("label '{v}' must be key=value"))
                })?;
                o.labels.insert(lk.to_owned(), lv.to_owned());
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter '{other}'"
                )));
            }
        }
    }
    if let Some(d) = &o.expected_sha256 {
        uploads::check_digest(d)?;
    }
    Ok(o)
}

pub async fn upload(
    State(s): AppStateRef,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut opts = upload_options(query, req.headers())?;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let mut upload = uploads::begin(&s, &name).await?;
    if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?;
        let mut got_model = false;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?
        {
            match field.name() {
                Some("model") | Some("file") => {
                    uploads::write_all(&mut upload, field).await?;
                    got_model = true;
                }
                Some("config") | Some("config.toml") => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| ApiError::BadRequest(format!("config part: {e}")))?;
                    opts.config_toml = Some(text);
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unexpected multipart part {other:?}: send 'model' (the artifact) and optionally 'config' (config.toml)"
                    )));
                }
            }
        }
        if !got_model {
            return Err(ApiError::BadRequest(
                "the multipart body has no 'model' part".into(),
            ));
        }
    } else {
        uploads::write_all(&mut upload, req.into_body().into_data_stream()).await?;
    }
    let info = uploads::complete(&s, &name, upload, opts).await?;
    let mut body = version_json(&info);
    let status = match info.meta.as_ref().map(|m| m.status) {
        Some(VersionStatus::Ready) => StatusCode::CREATED,
        Some(VersionStatus::Failed) => {
            body["error"] = json!(format!(
                "version {} of model '{name}' failed validation: {}",
                info.version,
                info.meta.as_ref().map_or("", |m| m.reason.as_str())
            ));
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(body)))
}
