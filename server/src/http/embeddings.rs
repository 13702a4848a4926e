//! OpenAI-compatible embeddings: `POST /v1/embeddings`
//! (`{"model", "input": str | [str]}` → `{"data": [{"embedding", "index"}], "model", "usage"}`),
//! served by a text model (the candle backend) through the same queue and batches as V2.
//! Errors come in OpenAI's shape (`{"error": {"message", "type", "code"}}`) so OpenAI
//! clients report them.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use models::{DataType, Tensor, TensorData};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// An [`ApiError`] rendered the way OpenAI's API renders errors.
pub struct OpenAiError(ApiError);

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let kind = if status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = json!({ "error": { "message": self.0.to_string(), "type": kind, "code": status.as_u16() } });
        (status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn bad(msg: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::BadRequest(msg.into()))
}

pub async fn embeddings(
    State(s): State<Arc<AppState>>,
    ext: axum::http::Extensions,
    body: Body,
) -> Result<Response, OpenAiError> {
    let bytes = super::v2::read_body(body, s.max_request_bytes).await?;
    let req: EmbeddingsRequest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("malformed embeddings request: {e}")))?;
    let _ = req.user;
    if let Some(f) = req.encoding_format.as_deref().filter(|f| *f != "float") {
        return Err(bad(format!(
            "encoding_format '{f}' is not supported; use 'float'"
        )));
    }
    let texts: Vec<Vec<u8>> = match req.input {
        Value::String(t) => vec![t.into_bytes()],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(t) => Ok(t.into_bytes()),
                other => Err(bad(format!(
                    "input[{i}] must be a string, got {}",
                    match other {
                        Value::Number(_) => "a number (token arrays are not supported)",
                        Value::Array(_) => "an array (token arrays are not supported)",
                        Value::Null => "null",
                        Value::Bool(_) => "a boolean",
                        _ => "an object",
                    }
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("'input' must be a string or an array of strings")),
    };
    if texts.is_empty() {
        return Err(bad("'input' is an empty list: send at least one string"));
    }
    crate::auth::check_reach(&ext, crate::auth::Kind::Model, &req.model)?;
    let served = s.repo.get(&req.model, None)?;
    let n = texts.len();
    let tensor = Tensor::new(DataType::Bytes, vec![n as i64], TensorData::Bytes(texts))
        .expect("one element per text");
    let counts = served
        .count_tokens(std::slice::from_ref(&tensor))
        .ok_or_else(|| {
            bad(format!(
                "model '{}' is not a text embedding model",
                req.model
            ))
        })??;
    let rx = served.submit_counted(
        vec![(models::backends::candle::INPUT.to_owned(), tensor)],
        None,
        None,
        Some(&counts),
    )?;
    let out = rx.await?;
    let data: Vec<Value> = out.outputs[0]
        .f32_rows()
        .expect("embeddings are FP32 [n, dim]")
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({ "object": "embedding", "index": i, "embedding": v }))
        .collect();
    let tokens: usize = counts.iter().map(|c| c.tokens).sum();
    let truncated = counts.iter().filter(|c| c.truncated).count();
    let mut resp = Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response();
    resp.headers_mut()
        .insert("x-inferd-truncated", HeaderValue::from(truncated));
    Ok(resp)
}
