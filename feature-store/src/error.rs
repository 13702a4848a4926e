//! The feature store's one error type. The server maps each variant to an HTTP status and a
//! gRPC code (`server::error`), explicitly, so a new variant must be mapped on purpose.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A feature view definition that cannot be used (config file or `PUT`).
    #[error("feature view '{view}': {reason}")]
    InvalidView { view: String, reason: String },
    #[error("feature view '{0}' does not exist")]
    ViewNotFound(String),
    #[error("feature view '{view}' has no feature '{feature}' (it has {known:?})")]
    FeatureNotFound {
        view: String,
        feature: String,
        known: Vec<String>,
    },
    /// A malformed read or write request: feature references, entity keys, pushed rows.
    #[error("{0}")]
    InvalidRequest(String),
    /// A feature the caller needs is absent (not found, null or older than the view's ttl)
    /// and its policy is to fail rather than use a default.
    #[error(
        "feature '{feature}' is {status} for entity {entity} and has no default (on_missing = \"error\")"
    )]
    MissingFeature {
        feature: String,
        entity: String,
        status: &'static str,
    },
    /// The online store cannot be reached (connection refused, timed out, reset).
    #[error("the online store is unavailable: {0}")]
    Unavailable(String),
    /// The online store answered with an error.
    #[error("the online store failed: {0}")]
    Store(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
