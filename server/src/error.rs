//! The server's error type and its one mapping to HTTP statuses and gRPC codes.
//!
//! Every `models::Error`, `vector::Error`, `feature_store::Error`, `experiments::Error` and `drift::Error` variant is matched
//! explicitly (no `_` arm), so a new variant must be mapped on purpose.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drift::Error as DriftError;
use experiments::Error as ExperimentError;
use feature_store::Error as FeatureError;
use models::Error as ModelError;
use vector::Error as VectorError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error(transparent)]
    Experiment(#[from] ExperimentError),
    #[error(transparent)]
    Drift(#[from] DriftError),
    /// Malformed request: JSON, protobuf, binary framing, parameters.
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the limit of {limit} bytes (raise --max-request-bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// The request contradicts the state (a name taken, a key defined in a file).
    #[error("{0}")]
    Conflict(String),
    /// Valid credentials that may not reach what the request names (a restricted
    /// principal, [`crate::auth::Reach`]).
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Model(e) => match e {
                ModelError::ModelNotFound(_) | ModelError::VersionNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                ModelError::InvalidInput(_) | ModelError::BadTensor { .. } => {
                    StatusCode::BAD_REQUEST
                }
                ModelError::Load { .. } | ModelError::Config(_) => StatusCode::BAD_REQUEST,
                ModelError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                ModelError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                ModelError::NotReady { .. } | ModelError::ShuttingDown(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ModelError::Execution { .. } | ModelError::Runtime(_) | ModelError::Io(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                ModelError::Conflict(_) => StatusCode::CONFLICT,
                ModelError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            },
            ApiError::Vector(e) => match e {
                VectorError::CollectionNotFound(_) | VectorError::PointNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                VectorError::CollectionExists(_) => StatusCode::CONFLICT,
                VectorError::InvalidRequest(_)
                | VectorError::InvalidFilter(_)
                | VectorError::Dimension { .. }
                | VectorError::InvalidVector(_) => StatusCode::BAD_REQUEST,
                VectorError::Embedding { .. } => StatusCode::SERVICE_UNAVAILABLE,
                VectorError::Io { .. } | VectorError::Corrupt(_) | VectorError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Features(e) => match e {
                FeatureError::ViewNotFound(_) | FeatureError::FeatureNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                FeatureError::InvalidView { .. }
                | FeatureError::InvalidRequest(_)
                | FeatureError::Config(_) => StatusCode::BAD_REQUEST,
                FeatureError::MissingFeature { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                FeatureError::Unavailable(_) | FeatureError::Kafka(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                FeatureError::Store(_) | FeatureError::Io { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Experiment(e) => match e {
                ExperimentError::Invalid(_) => StatusCode::BAD_REQUEST,
                ExperimentError::NotFound(_) => StatusCode::NOT_FOUND,
                ExperimentError::Conflict(_) => StatusCode::CONFLICT,
                ExperimentError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Drift(e) => match e {
                DriftError::Invalid(_) => StatusCode::BAD_REQUEST,
                DriftError::NotFound(_) => StatusCode::NOT_FOUND,
                DriftError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(&self) -> tonic::Code {
        match self {
            ApiError::Model(e) => match e {
                ModelError::ModelNotFound(_) | ModelError::VersionNotFound { .. } => {
                    tonic::Code::NotFound
                }
                ModelError::InvalidInput(_) | ModelError::BadTensor { .. } => {
                    tonic::Code::InvalidArgument
                }
                ModelError::Load { .. } | ModelError::Config(_) => tonic::Code::InvalidArgument,
                ModelError::QueueFull { .. } => tonic::Code::ResourceExhausted,
                ModelError::Timeout { .. } => tonic::Code::DeadlineExceeded,
                ModelError::NotReady { .. } | ModelError::ShuttingDown(_) => {
                    tonic::Code::Unavailable
                }
                ModelError::Execution { .. } | ModelError::Runtime(_) | ModelError::Io(_) => {
                    tonic::Code::Internal
                }
                ModelError::Conflict(_) => tonic::Code::FailedPrecondition,
                ModelError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            },
            ApiError::Vector(e) => match e {
                VectorError::CollectionNotFound(_) | VectorError::PointNotFound { .. } => {
                    tonic::Code::NotFound
                }
                VectorError::CollectionExists(_) => tonic::Code::AlreadyExists,
                VectorError::InvalidRequest(_)
                | VectorError::InvalidFilter(_)
                | VectorError::Dimension { .. }
                | VectorError::InvalidVector(_) => tonic::Code::InvalidArgument,
                VectorError::Embedding { .. } => tonic::Code::Unavailable,
                VectorError::Io { .. } | VectorError::Corrupt(_) | VectorError::Internal(_) => {
                    tonic::Code::Internal
                }
            },
            ApiError::Features(e) => match e {
                FeatureError::ViewNotFound(_) | FeatureError::FeatureNotFound { .. } => {
                    tonic::Code::NotFound
                }
                FeatureError::InvalidView { .. }
                | FeatureError::InvalidRequest(_)
                | FeatureError::Config(_) => tonic::Code::InvalidArgument,
                FeatureError::MissingFeature { .. } => tonic::Code::FailedPrecondition,
                FeatureError::Unavailable(_) | FeatureError::Kafka(_) => tonic::Code::Unavailable,
                FeatureError::Store(_) | FeatureError::Io { .. } => tonic::Code::Internal,
            },
            ApiError::Experiment(e) => match e {
                ExperimentError::Invalid(_) => tonic::Code::InvalidArgument,
                ExperimentError::NotFound(_) => tonic::Code::NotFound,
                ExperimentError::Conflict(_) => tonic::Code::FailedPrecondition,
                ExperimentError::Storage(_) => tonic::Code::Internal,
            },
            ApiError::Drift(e) => match e {
                DriftError::Invalid(_) => tonic::Code::InvalidArgument,
                DriftError::NotFound(_) => tonic::Code::NotFound,
                DriftError::Storage(_) => tonic::Code::Internal,
            },
            ApiError::BadRequest(_) => tonic::Code::InvalidArgument,
            ApiError::PayloadTooLarge { .. } => tonic::Code::ResourceExhausted,
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Conflict(_) => tonic::Code::FailedPrecondition,
            ApiError::Forbidden(_) => tonic::Code::PermissionDenied,
        }
    }

    /// Seconds a client should wait before retrying, for overload errors.
    fn retry_after(&self) -> Option<u32> {
        matches!(
            self,
            ApiError::Model(
                ModelError::QueueFull { .. }
                    | ModelError::ShuttingDown(_)
                    | ModelError::NotReady { .. }
            ) | ApiError::Features(FeatureError::Unavailable(_))
        )
        .then_some(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after();
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
