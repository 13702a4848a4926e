//! The crate's one error type. The server maps every variant to an HTTP status and a gRPC
//! code (`server/src/error.rs`), so a new variant must be mapped on purpose.

use crate::point::PointId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collection '{0}' not found")]
    CollectionNotFound(String),
    #[error("collection '{0}' already exists")]
    CollectionExists(String),
    #[error("point {id} not found in collection '{collection}'")]
    PointNotFound { collection: String, id: PointId },
    /// Malformed parameters: collection settings, ids, payloads, k, ef.
    #[error("{0}")]
    InvalidRequest(String),
    /// A filter that does not parse (Qdrant's shape: must / should / must_not).
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    #[error("{what} has dimension {got}, but collection '{collection}' expects {expected}")]
    Dimension {
        collection: String,
        what: String,
        expected: usize,
        got: usize,
    },
    /// NaN or infinite elements, a zero vector under cosine, an overflowing norm.
    #[error("{0}")]
    InvalidVector(String),
    /// The embedding model could not embed the text (not served, failed, wrong dimension).
    #[error("embedding model '{model}': {message}")]
    Embedding { model: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot or log on disk that cannot be read back.
    #[error("corrupt collection data: {0}")]
    Corrupt(String),
    /// The index failed (a panic inside hnsw_rs, caught); the collection rebuilds its index.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
