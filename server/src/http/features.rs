//! The online feature store over REST (the domain lives in the `feature-store` crate):
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/api/feature-views` | → `{"feature_views": [view...]}` |
//! | PUT | `/api/feature-views/{name}` | `{"entities", "features", "ttl", "source", "description"}` → view (201 when new) |
//! | GET, DELETE | `/api/feature-views/{name}` | → view / `{"deleted": true}` |
//! | POST | `/api/features/get-online-features` | `{"features": ["view:feature"], "entities": {"user_id": [..]}, "full_feature_names"}` → Feast's shape |
//! | POST | `/api/features/push` | `{"feature_view", "df": {column: [..]}}` or `{"feature_view", "rows": [{..}]}` → `{"written", "stale"}` |
//!
//! A read answers column-wise, as Feast's feature server does: `results[i]` is the i-th of
//! `metadata.feature_names` (the join keys, sorted, then the features asked for), with one
//! value, status (`PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`) and event time
//! (RFC 3339, null when not found) per entity row.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::http::At;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feature_store::FeatureStore;
use feature_store::serving::{OnlineRequest, OnlineResponse, rows_from_columns};
use feature_store::value::{Value, format_timestamp};
use feature_store::view::{FeatureView, FeatureViewSpec};
use serde::de::DeserializeOwned;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value as JsonValue, json};

use crate::error::{ApiError, ApiResult};

/// Request bodies larger than this get 413, unless [`router_with_limit`] sets another.
const DEFAULT_LIMIT: usize = 64 << 20;

#[derive(Clone)]
struct Ctx {
    fs: Arc<FeatureStore>,
    limit: usize,
}

type St = State<Ctx>;

/// The feature-store API with its state applied, ready to `.merge()` into the HTTP app.
pub fn router(fs: Arc<FeatureStore>) -> Router {
    router_with_limit(fs, DEFAULT_LIMIT)
}

/// [`router`] with the server's `--max-request-bytes`.
pub fn router_with_limit(fs: Arc<FeatureStore>, max_request_bytes: usize) -> Router {
    Router::new()
        .at("/api/feature-views", get(list_views))
        .at(
            "/api/feature-views/{name}",
            get(get_view).put(put_view).delete(delete_view),
        )
        .at(
            "/api/features/get-online-features",
            post(get_online_features),
        )
        .at("/api/features/push", post(push))
        .at(
            "/api/features/write-to-online-store",
            post(write_to_online_store),
        )
        .with_state(Ctx {
            fs,
            limit: max_request_bytes,
        })
}

async fn body<T: DeserializeOwned>(ctx: &Ctx, body: Body, what: &str) -> ApiResult<T> {
    let bytes = super::v2::read_body(body, ctx.limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed {what}: {e}")))
}

fn view_json(v: &FeatureView) -> JsonValue {
    let mut j = serde_json::to_value(&v.spec).expect("a view serialises");
    if let Some(o) = j.as_object_mut() {
        o.insert("name".into(), v.name.clone().into());
    }
    j
}

async fn list_views(State(ctx): St, ext: axum::http::Extensions) -> Json<JsonValue> {
    let views: Vec<JsonValue> = ctx
        .fs
        .views()
        .snapshot()
        .iter()
        .filter(|v| crate::auth::visible(&ext, crate::auth::Kind::FeatureView, &v.name))
        .map(|v| view_json(v))
        .collect();
    Json(json!({ "feature_views": views }))
}

async fn get_view(State(ctx): St, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let views = ctx.fs.views().snapshot();
    Ok(Json(view_json(views.require(&name)?)))
}

async fn put_view(State(ctx): St, Path(name): Path<String>, b: Body) -> ApiResult<Response> {
    let spec: FeatureViewSpec = body(&ctx, b, "feature view").await?;
    // Persisting the view fsyncs: off the runtime.
    let fs = Arc::clone(&ctx.fs);
    let (view, created) = tokio::task::spawn_blocking(move || fs.put_view(&name, spec))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request was interrupted: {e}")))??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view_json(&view))).into_response())
}

async fn delete_view(State(ctx): St, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let fs = Arc::clone(&ctx.fs);
    tokio::task::spawn_blocking(move || fs.delete_view(&name))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the request was interrupted: {e}")))??;
    Ok(Json(json!({ "deleted": true })))
}

/// Feast's request. Fields Feast's feature server ignores are ignored here too (its SDK
/// sends `include_feature_view_version_metadata`, newer ones may send more).
#[derive(Deserialize)]
struct ReadBody {
    #[serde(default)]
    features: Option<Vec<String>>,
    /// Feast's feature services are not defined in inferd: refused with what to send instead.
    #[serde(default)]
    feature_service: Option<String>,
    entities: BTreeMap<String, Vec<JsonValue>>,
    #[serde(default)]
    full_feature_names: bool,
}

async fn get_online_features(
    State(ctx): St,
    ext: axum::http::Extensions,
    b: Body,
) -> ApiResult<Response> {
    let req: ReadBody = body(&ctx, b, "get-online-features request").await?;
    let features = match (req.features, req.feature_service) {
        (Some(f), None) => f,
        (None, Some(service)) => {
            return Err(ApiError::BadRequest(format!(
                "feature service '{service}': inferd has no feature services; name the features (\"features\": [\"view:feature\", ...])"
            )));
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give \"features\": [\"view:feature\", ...]".into(),
            ));
        }
    };
    for f in &features {
        let (view, _) = feature_store::serving::parse_ref(f)?;
        crate::auth::check_reach(&ext, crate::auth::Kind::FeatureView, view)?;
    }
    let resp = ctx
        .fs
        .get_online_features(&OnlineRequest {
            features,
            entities: req.entities.into_iter().collect(),
            full_feature_names: req.full_feature_names,
        })
        .await?;
    // Serialised straight from the response (no JSON tree): the read path's one allocation
    // of note is the body itself.
    let mut buf = Vec::with_capacity(128 + 64 * resp.results.len());
    serde_json::to_writer(&mut buf, &Feast(&resp)).expect("serialising to a Vec");
    let mut r = buf.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Feast's `get-online-features` response shape.
struct Feast<'a>(&'a OnlineResponse);

impl Serialize for Feast<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Meta<'a>(&'a [String]);
        impl Serialize for Meta<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("feature_names", self.0)?;
                m.end()
            }
        }
        /// A column, with the rows' event times formatted once per read (every feature of a
        /// row shares its time).
        struct Col<'a>(&'a feature_store::serving::Column, &'a HashMap<i64, String>);
        impl Serialize for Col<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (c, stamps) = (self.0, self.1);
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("values", &Values(&c.values))?;
                m.serialize_entry(
                    "statuses",
                    &c.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                )?;
                m.serialize_entry(
                    "event_timestamps",
                    &c.event_timestamps
                        .iter()
                        .map(|t| t.and_then(|t| stamps.get(&t)))
                        .collect::<Vec<_>>(),
                )?;
                m.end()
            }
        }
        struct Values<'a>(&'a [Value]);
        impl Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for v in self.0 {
                    match v {
                        Value::Null => seq.serialize_element(&())?,
                        Value::Bool(b) => seq.serialize_element(b)?,
                        Value::Int32(i) => seq.serialize_element(i)?,
                        Value::Int64(i) => seq.serialize_element(i)?,
                        Value::Float32(f) => seq.serialize_element(f)?,
                        Value::Float64(f) => seq.serialize_element(f)?,
                        Value::String(x) => seq.serialize_element(x)?,
                        Value::Int64List(x) => seq.serialize_element(x)?,
                        Value::Float32List(x) => seq.serialize_element(x)?,
                        Value::Float64List(x) => seq.serialize_element(x)?,
                    }
                }
                seq.end()
            }
        }
        let mut stamps = HashMap::new();
        for c in &self.0.results {
            for t in c.event_timestamps.iter().flatten() {
                stamps.entry(*t).or_insert_with(|| format_timestamp(*t));
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metadata", &Meta(&self.0.feature_names))?;
        m.serialize_entry(
            "results",
            &self
                .0
                .results
                .iter()
                .map(|c| Col(c, &stamps))
                .collect::<Vec<_>>(),
        )?;
        m.end()
    }
}

/// Feast's feature-server push (its fields but these ignored, as Feast's server does).
#[derive(Deserialize)]
struct PushBody {
    /// Feast calls it `push_source_name`.
    #[serde(alias = "push_source_name")]
    feature_view: String,
    #[serde(default)]
    df: Option<Map<String, JsonValue>>,
    #[serde(default)]
    rows: Option<Vec<Map<String, JsonValue>>>,
    /// Only `online` (Feast's default) is meaningful here.
    #[serde(default)]
    to: Option<String>,
}

async fn push(State(ctx): St, ext: axum::http::Extensions, b: Body) -> ApiResult<Json<JsonValue>> {
    let req: PushBody = body(&ctx, b, "push request").await?;
    crate::auth::check_reach(&ext, crate::auth::Kind::FeatureView, &req.feature_view)?;
    if let Some(to) = req.to.as_deref().filter(|t| *t != "online") {
        return Err(ApiError::BadRequest(format!(
            "push to '{to}': inferd has an online store only (use \"online\")"
        )));
    }
    let rows = match (req.df, req.rows) {
        (Some(df), None) => rows_from_columns(&df)?,
        (None, Some(rows)) => rows,
        _ => {
            return Err(ApiError::BadRequest(
                "give the rows either column-wise as 'df' or as 'rows', one of them".into(),
            ));
        }
    };
    let s = ctx.fs.push(&req.feature_view, &rows).await?;
    Ok(Json(json!({ "written": s.written, "stale": s.stale })))
}

/// Feast's `write_to_online_store` (what its SDK's remote online store posts).
#[derive(Deserialize)]
struct WriteBody {
    feature_view_name: String,
    df: Map<String, JsonValue>,
}

async fn write_to_online_store(
    State(ctx): St,
    ext: axum::http::Extensions,
    b: Body,
) -> ApiResult<Json<JsonValue>> {
    let req: WriteBody = body(&ctx, b, "write-to-online-store request").await?;
    crate::auth::check_reach(&ext, crate::auth::Kind::FeatureView, &req.feature_view_name)?;
    let s = ctx
        .fs
        .write_columns(&req.feature_view_name, &req.df)
        .await?;
    Ok(Json(json!({ "written": s.written, "stale": s.stale })))
}
