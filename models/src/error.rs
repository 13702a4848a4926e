//! The one error type of the `models` crate. Transports map each variant to an HTTP status
//! and a gRPC code in one place (`server::error`).

use crate::tensor::TensorError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No model of that name is in the repository.
    #[error("unknown model '{0}'")]
    ModelNotFound(String),
    /// The model exists but not that version.
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    /// The model or version exists but cannot serve (loading, failed, unloaded).
    #[error("model '{model}' version {version} is not ready: {reason}")]
    NotReady {
        model: String,
        version: String,
        reason: String,
    },
    /// The request does not fit the model's signature.
    #[error("{0}")]
    InvalidInput(String),
    /// A tensor's data does not agree with its own shape and datatype.
    #[error("input '{name}': {source}")]
    BadTensor { name: String, source: TensorError },
    /// The model's queue is at `max_queue_size`; the request was not queued.
    #[error(
        "model '{model}' version {version} is overloaded: its queue is full ({max_queue_size} requests waiting); retry later"
    )]
    QueueFull {
        model: String,
        version: String,
        max_queue_size: usize,
    },
    /// The request's `timeout` passed while it waited in the queue; it did not run.
    #[error(
        "request timed out after {waited_us} µs in the queue of model '{model}' (timeout {timeout_us} µs); it was not run"
    )]
    Timeout {
        model: String,
        waited_us: u64,
        timeout_us: u64,
    },
    /// The model is being unloaded or the server is shutting down.
    #[error("model '{0}' is shutting down and takes no new requests")]
    ShuttingDown(String),
    /// ONNX Runtime (or another backend) failed while running the model.
    #[error("model '{model}' failed to run: {message}")]
    Execution { model: String, message: String },
    /// The artifact could not be loaded.
    #[error("failed to load model '{model}': {message}")]
    Load { model: String, message: String },
    /// The backend's runtime library is missing or unusable.
    #[error("{0}")]
    Runtime(String),
    /// A model configuration or repository problem (bad `config.toml`, bad layout).
    #[error("{0}")]
    Config(String),
    /// The operation conflicts with the registry's state (e.g. deleting an aliased version).
    #[error("{0}")]
    Conflict(String),
    /// An upload exceeded the size limit.
    #[error("the upload is larger than the limit of {limit} bytes (raise --max-upload-bytes)")]
    TooLarge { limit: u64 },
    /// Reading or writing the repository failed.
    #[error("{0}")]
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
