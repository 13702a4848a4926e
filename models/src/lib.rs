//! Tensors, models and the machinery that runs them.
//!
//! # Layout
//!
//! - [`datatype`]: the V2 datatypes (`FP32`, `BYTES`, ...) with sizes and Triton's names.
//! - [`tensor`]: [`Tensor`], a datatype + shape + packed little-endian data; concatenation
//!   and splitting along the batch dimension.
//! - [`signature`]: a model's inputs and outputs, and the checks that a request fits them.
//! - [`model`]: the [`Model`] trait a backend implements.
//! - [`backends`]: `onnx` (ONNX Runtime through `ort`, the shared library loaded at run time).
//! - [`batcher`]: the dynamic batcher: one bounded queue per model version, one worker thread
//!   per model instance, deadlines, priorities, cancellation.
//! - [`config`]: a model's optional `config.toml`.
//! - [`repository`]: the model repository on disk (Triton's layout) and the set of loaded
//!   versions that requests are routed to; uploads, aliases, hot swaps.
//! - [`registry`]: the registry's record beside each model (`registry.json`): version
//!   metadata, aliases and their history; streamed, hashed uploads.
//! - [`remote`]: the registry on S3-compatible object storage, shared by a fleet: records
//!   changed by conditional writes, content-addressed artifacts, a local cache per replica.
//! - [`stats`], [`metrics`]: Triton-shaped statistics and Prometheus metrics of the request path.
//! - [`error`]: the crate's one error type.
//!
//! Nothing here knows about HTTP or gRPC; the `server` crate translates.

pub mod backends;
pub mod batcher;
pub mod config;
pub mod datatype;
pub mod error;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod remote;
pub mod repository;
pub mod signature;
pub mod stats;
pub mod tensor;

pub use datatype::DataType;

/// Where inferd's scripts install what it needs (the ONNX Runtime venv, model files):
/// `INFERD_CACHE`, else `~/.cache/inferd`.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("INFERD_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/inferd"))
        })
}
pub use error::{Error, Result};
pub use model::Model;
pub use signature::{Signature, TensorSpec};
pub use tensor::{Tensor, TensorData};
