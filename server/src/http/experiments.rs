//! A/B experiments over REST: `/api/experiments` (configure, read results, stop, change
//! weights, promote) and `/api/feedback` (rewards by request id or unit key).

use std::collections::BTreeMap;
use std::sync::Arc;

use ::experiments::config::ExperimentSpec;
use ::experiments::{Experiment, Feedback};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::v2::read_body;
use crate::ab;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

type AppStateRef = State<Arc<AppState>>;

/// The handlers' principal when it is restricted (the access layer sets it only then).
fn principal(ext: &Extensions) -> Option<&Principal> {
    ext.get::<Principal>()
}

/// One line of the experiment list.
#[derive(Serialize)]
struct Summary {
    name: String,
    model: String,
    state: ::experiments::config::RunState,
    allocation: ::experiments::config::Allocation,
    arms: Vec<ArmSummary>,
    trustworthy: bool,
}

#[derive(Serialize)]
struct ArmSummary {
    name: String,
    version: String,
    weight: f64,
    exposures: u64,
}

fn summary(e: &Experiment) -> Summary {
    let r = e.results();
    Summary {
        arms: r
            .arms
            .iter()
            .map(|a| ArmSummary {
                name: a.name.clone(),
                version: a.target.version.clone(),
                weight: a.weight,
                exposures: a.exposures,
            })
            .collect(),
        name: r.name,
        model: r.model,
        state: r.state,
        allocation: r.allocation,
        trustworthy: r.trustworthy,
    }
}

pub async fn list(State(s): AppStateRef, ext: Extensions) -> Json<Value> {
    let list: Vec<Summary> = s
        .experiments
        .list()
        .iter()
        .filter(|e| ab::within(principal(&ext), e.models()))
        .map(|e| summary(e))
        .collect();
    Json(json!({ "experiments": list }))
}

pub async fn get(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    ab::check_reach(&s, principal(&ext), &name, None)?;
    Ok(Json(json!(s.experiments.get(&name)?.results())))
}

/// Creates (201) or changes (200) an experiment; answers with its results.
pub async fn put(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(body, s.max_request_bytes).await?;
    let spec = ExperimentSpec::from_json(&body)?;
    ab::check_reach(&s, principal(&ext), &name, Some(&spec))?;
    let created = ab::put(&s, &name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(s.experiments.get(&name)?.results()))).into_response())
}

pub async fn delete(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    ab::check_reach(&s, principal(&ext), &name, None)?;
    ab::delete(&s, &name).await?;
    Ok(Json(json!({})))
}

pub async fn stop(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    ab::check_reach(&s, principal(&ext), &name, None)?;
    let exp = s.experiments.stop(&name, "stopped through the API")?;
    Ok(Json(json!(exp.results())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsBody {
    weights: BTreeMap<String, f64>,
}

/// `{"weights": {"arm": 60, ...}}`: arms not named keep their weight.
pub async fn weights(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    ab::check_reach(&s, principal(&ext), &name, None)?;
    let body = read_body(body, s.max_request_bytes).await?;
    let w: WeightsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"weights\": {{\"<arm>\": <number>, ...}}}}: {e}"
        ))
    })?;
    s.experiments.set_weights(&name, &w.weights)?;
    Ok(Json(json!(s.experiments.get(&name)?.results())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    arm: String,
}

pub async fn promote(
    State(s): AppStateRef,
    ext: Extensions,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    ab::check_reach(&s, principal(&ext), &name, None)?;
    let body = read_body(body, s.max_request_bytes).await?;
    let p: PromoteBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"arm\": \"<arm name>\"}}: {e}")))?;
    Ok(Json(json!(ab::promote(&s, &name, &p.arm).await?)))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FeedbackBody {
    Wrapped { feedback: Vec<Feedback> },
    Bare(Vec<Feedback>),
}

/// `POST /api/feedback`: `{"feedback": [{"id": "...", "reward": 1}, {"experiment": "e",
/// "unit": "user-7", "reward": 0}, {"id": "...", "truth": 2}, ...]}` (or the bare array).
/// Each item stands alone; the answer counts the rewards accepted and the truths labelled,
/// and says why each other item was not.
pub async fn feedback(
    State(s): AppStateRef,
    ext: Extensions,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body = read_body(body, s.max_request_bytes).await?;
    let items = match serde_json::from_slice::<FeedbackBody>(&body) {
        Ok(FeedbackBody::Wrapped { feedback } | FeedbackBody::Bare(feedback)) => feedback,
        Err(_) => {
            // Untagged enums hide the real error: parse as the documented shape for it.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            #[allow(dead_code)]
            struct Wrapped {
                feedback: Vec<Feedback>,
            }
            let e = serde_json::from_slice::<Wrapped>(&body).err();
            return Err(ApiError::BadRequest(format!(
                "expected {{\"feedback\": [{{\"id\": \"<request id>\", \"reward\": <number>}}, ...]}}: {}",
                e.map_or_else(|| "malformed body".into(), |e| e.to_string())
            )));
        }
    };
    Ok(Json(json!(
        crate::drift::feedback(&s, principal(&ext), &items).await?
    )))
}
