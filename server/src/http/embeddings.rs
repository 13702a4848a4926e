//! OpenAI-compatible embeddings: `POST /v1/embeddings` (`{"model", "input": str | [str] |
//! [id] | [[id]], "encoding_format"?, "dimensions"?, "user"?}` → `{"data": [{"embedding",
//! "index"}], "model", "usage"}`), served by a text model (the candle backend) through the
//! same queue and batches as V2 — token ids are the model's own vocabulary's, used as given,
//! as TEI takes them; and `GET /v1/models`,
//! `GET /v1/models/{model}`, the models as OpenAI lists them. Errors come in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`) so OpenAI clients report them.

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
        let body = json!({ "error": {
            "message": self.0.to_string(), "type": kind, "param": null, "code": status.as_u16(),
        } });
        (status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    /// Fewer dimensions than the model's (OpenAI's text-embedding-3 shortening): only the
    /// model's own number is accepted, for a model that was not trained to be cut.
    #[serde(default)]
    dimensions: Option<usize>,
    /// The caller's end user, for abuse monitoring at OpenAI: accepted and not used.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// How the vectors travel: JSON numbers, or base64 of the little-endian float32 bytes (what
/// OpenAI's Node SDK asks for by default and its Python SDK decodes with numpy).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    Float,
    Base64,
}

fn bad(msg: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::BadRequest(msg.into()))
}

/// A token id of a token array (`input[i]` or `input[i][j]` in `at`).
fn token_id(v: &Value, at: &str) -> Result<u32, OpenAiError> {
    v.as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            bad(format!(
                "{at} must be a token id (an integer from 0 to 2^32 - 1), got {v}"
            ))
        })
}

/// `input` as the `text` elements of the model: a string, an array of strings, an array of
/// token ids (one pre-tokenized input) or an array of such arrays, as OpenAI's API takes them.
fn inputs(input: Value) -> Result<Vec<Vec<u8>>, OpenAiError> {
    use models::backends::candle::token_ids_element;
    let items = match input {
        Value::String(t) => return Ok(vec![t.into_bytes()]),
        Value::Array(items) => items,
        _ => {
            return Err(bad(
                "'input' must be a string, an array of strings, an array of token ids or an array of token arrays",
            ));
        }
    };
    match items.first() {
        None => Err(bad("'input' is an empty list: send at least one string")),
        Some(Value::Number(_)) => {
            let ids = items
                .iter()
                .enumerate()
                .map(|(i, v)| token_id(v, &format!("input[{i}]")))
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(vec![token_ids_element(&ids)])
        }
        Some(Value::Array(_)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Array(ids) if ids.is_empty() => {
                    Err(bad(format!("input[{i}] is an empty token array")))
                }
                Value::Array(ids) => Ok(token_ids_element(
                    &ids.iter()
                        .enumerate()
                        .map(|(j, id)| token_id(id, &format!("input[{i}][{j}]")))
                        .collect::<Result<Vec<u32>, _>>()?,
                )),
                _ => Err(bad(format!(
                    "input[{i}] must be a token array like the other elements (do not mix strings and token arrays)"
                ))),
            })
            .collect(),
        Some(_) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(t) => Ok(t.into_bytes()),
                other => Err(bad(format!(
                    "input[{i}] must be a string like the other elements, got {}",
                    match other {
                        Value::Number(_) => "a number (do not mix strings and token ids)",
                        Value::Array(_) => "an array (do not mix strings and token arrays)",
                        Value::Null => "null",
                        Value::Bool(_) => "a boolean",
                        _ => "an object",
                    }
                ))),
            })
            .collect(),
    }
}

pub async fn embeddings(
    State(s): State<Arc<AppState>>,
    ext: axum::http::Extensions,
    body: Body,
) -> Result<Response, OpenAiError> {
    let bytes = super::v2::read_body(body, s.max_request_bytes).await?;
    let req: EmbeddingsRequest = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "malformed embeddings request: {e} (encoding_format: 'float' or 'base64')"
        ))
    })?;
    let texts = inputs(req.input)?;
    crate::auth::check_reach(&ext, crate::auth::Kind::Model, &req.model)?;
    let served = s.repo.get(&req.model, None)?;
    if let Some(d) = req.dimensions {
        let dim = served
            .signature
            .outputs
            .first()
            .and_then(|o| o.shape.last().copied())
            .filter(|&d| d > 0);
        if dim != Some(d as i64) {
            return Err(bad(format!(
                "model '{}' does not support 'dimensions' {d}: its embeddings have {} dimensions and it was not trained to be shortened; omit 'dimensions'",
                req.model,
                dim.map_or_else(|| "a fixed number of".to_owned(), |d| d.to_string())
            )));
        }
    }
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
    let out = served
        .call_counted(
            vec![(models::backends::candle::INPUT.to_owned(), tensor)],
            None,
            None,
            Some(&counts),
        )
        .await?;
    let data: Vec<Value> = out.outputs[0]
        .f32_rows()
        .expect("embeddings are FP32 [n, dim]")
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match req.encoding_format {
                Some(EncodingFormat::Base64) => {
                    use base64::Engine as _;
                    json!(
                        base64::engine::general_purpose::STANDARD
                            .encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
                    )
                }
                _ => json!(v),
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
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

/// One model as OpenAI's `/v1/models` shows it; created: its first version's upload time.
fn openai_model(e: &models::repository::ModelEntry) -> Value {
    let created = e
        .meta
        .versions
        .values()
        .map(|v| v.created_ms / 1000)
        .min()
        .unwrap_or(0);
    json!({ "id": e.name, "object": "model", "created": created, "owned_by": "inferd" })
}

/// `GET /v1/models`: the models with a version being served, those within the principal's
/// reach.
pub async fn list_models(
    State(s): State<Arc<AppState>>,
    ext: axum::http::Extensions,
) -> Json<Value> {
    let mut models = s.repo.models();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let data: Vec<Value> = models
        .iter()
        .filter(|e| e.ready().next().is_some())
        .filter(|e| crate::auth::visible(&ext, crate::auth::Kind::Model, &e.name))
        .map(|e| openai_model(e))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{model}`.
pub async fn get_model(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let e = s.repo.model(&name)?;
    if e.ready().next().is_none() {
        return Err(OpenAiError(ApiError::NotFound(format!(
            "model '{name}' has no version being served"
        ))));
    }
    Ok(Json(openai_model(&e)))
}
