//! One model upload, whatever the transport: stream the artifact into the registry, turn it
//! into a version, optionally wait for its validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use models::registry::{Upload, VersionStatus};
use models::repository::VersionInfo;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What comes with an artifact.
#[derive(Debug, Default)]
pub struct UploadOptions {
    pub expected_sha256: Option<String>,
    pub config_toml: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Answer once validation is over (READY or FAILED), not once stored.
    pub wait: bool,
}

/// Checks a client-given digest's form.
pub fn check_digest(d: &str) -> ApiResult<()> {
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(format!(
            "sha256 '{d}' must be 64 hex digits"
        )));
    }
    Ok(())
}

/// Runs blocking repository work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> models::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the operation was interrupted: {e}")))?
        .map_err(ApiError::from)
}

/// Opens an upload for a new version of `name` (the model is created if new).
pub async fn begin(state: &AppState, name: &str) -> ApiResult<Upload> {
    let (repo, name, limit) = (
        Arc::clone(&state.repo),
        name.to_owned(),
        state.max_upload_bytes,
    );
    blocking(move || repo.begin_upload(&name, limit)).await
}

/// Streams chunks into the upload file; file writes leave the async workers through
/// `block_in_place`, and the size limit is enforced as the bytes arrive.
pub async fn write_all<S, E>(upload: &mut Upload, mut chunks: S) -> ApiResult<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
        tokio::task::block_in_place(|| upload.write(&chunk))?;
    }
    Ok(())
}

/// Completes an upload: checks the digest, creates the version, and with `wait` waits for
/// its validation. A failed digest discards the bytes; no version is created.
pub async fn complete(
    state: &AppState,
    name: &str,
    upload: Upload,
    opts: UploadOptions,
) -> ApiResult<VersionInfo> {
    if let Some(d) = &opts.expected_sha256 {
        check_digest(d)?;
    }
    let staged = tokio::task::block_in_place(|| upload.finish(opts.expected_sha256.as_deref()))?;
    let version = {
        let (repo, name) = (Arc::clone(&state.repo), name.to_owned());
        let (config, labels) = (opts.config_toml, opts.labels);
        blocking(move || repo.add_version(&name, staged, config.as_deref(), labels)).await?
    };
    let mut info = state.repo.version_info(name, version)?;
    while opts.wait
        && info
            .meta
            .as_ref()
            .is_some_and(|m| m.status == VersionStatus::Pending)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        info = state.repo.version_info(name, version)?;
    }
    Ok(info)
}
