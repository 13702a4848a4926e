//! `inferd.v1.ModelRegistry`: the registry over gRPC (uploads are client-streaming).

use std::sync::Arc;

use futures::StreamExt;
use models::registry::ModelMeta;
use models::repository::{ModelEntry, Repository, VersionInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Kind};
use crate::error::{ApiError, ApiResult};
use crate::proto::inferd as pb;
use crate::state::AppState;
use crate::uploads::{self, UploadOptions, blocking};
use pb::model_registry_server::ModelRegistry;

pub use pb::model_registry_server::ModelRegistryServer;

pub struct RegistryService {
    state: Arc<AppState>,
}

impl RegistryService {
    pub fn server(state: Arc<AppState>) -> ModelRegistryServer<RegistryService> {
        ModelRegistryServer::new(RegistryService { state })
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX)
    }
}

fn tensors(ts: &[models::registry::TensorMeta]) -> Vec<pb::TensorInfo> {
    ts.iter()
        .map(|t| pb::TensorInfo {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
        })
        .collect()
}

fn version(v: &VersionInfo) -> pb::ModelVersion {
    let mut out = pb::ModelVersion {
        name: v.model.clone(),
        version: v.version,
        status: "UNKNOWN".into(),
        state: v.state.into(),
        state_reason: v.reason.clone(),
        aliases: v.aliases.clone(),
        ..Default::default()
    };
    if let Some(m) = &v.meta {
        out.status = m.status.as_str().into();
        out.reason = m.reason.clone();
        out.sha256 = m.sha256.clone();
        out.size = m.size;
        out.created_ms = m.created_ms;
        out.backend = m.backend.clone();
        out.labels = m.labels.clone().into_iter().collect();
        out.inputs = tensors(&m.inputs);
        out.outputs = tensors(&m.outputs);
    }
    out
}

fn aliases(meta: &ModelMeta) -> Vec<pb::Alias> {
    meta.aliases
        .iter()
        .map(|(name, a)| pb::Alias {
            name: name.clone(),
            version: a.version,
            history: a
                .history
                .iter()
                .map(|h| pb::AliasMove {
                    version: h.version,
                    at_ms: h.at_ms,
                })
                .collect(),
        })
        .collect()
}

fn model(repo: &Repository, e: &ModelEntry) -> pb::Model {
    pb::Model {
        name: e.name.clone(),
        versions: e
            .versions
            .keys()
            .filter_map(|v| repo.version_info(&e.name, *v).ok())
            .map(|v| version(&v))
            .collect(),
        aliases: aliases(&e.meta),
        default_version: e.default_version(),
        error: e.error.clone().unwrap_or_default(),
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl RegistryService {
    async fn upload(
        &self,
        ext: &tonic::Extensions,
        mut stream: Streaming<pb::UploadVersionRequest>,
    ) -> ApiResult<pb::ModelVersion> {
        use pb::upload_version_request::Part;
        let header = match stream.next().await {
            Some(Ok(pb::UploadVersionRequest {
                part: Some(Part::Header(h)),
            })) => h,
            Some(Err(s)) => {
                return Err(ApiError::BadRequest(format!(
                    "the upload stream failed: {}",
                    s.message()
                )));
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "the first message of an upload must carry the header (name, expected_sha256, ...)".into(),
                ));
            }
        };
        // The header is the stream's first message: nothing of the artifact has been read.
        if let Some(p) = ext.get::<auth::Principal>() {
            p.may_reach(Kind::Model, &header.name)
                .map_err(ApiError::Forbidden)?;
        }
        let mut upload = uploads::begin(&self.state, &header.name).await?;
        let chunks = stream.map(|m| match m {
            Ok(pb::UploadVersionRequest {
                part: Some(Part::Chunk(c)),
            }) => Ok(bytes::Bytes::from(c)),
            Ok(_) => Err("every message after the header must carry a chunk".to_owned()),
            Err(s) => Err(s.message().to_owned()),
        });
        uploads::write_all(&mut upload, Box::pin(chunks)).await?;
        let opts = UploadOptions {
            expected_sha256: Some(header.expected_sha256).filter(|d| !d.is_empty()),
            config_toml: Some(header.config_toml).filter(|c| !c.is_empty()),
            labels: header.labels.into_iter().collect(),
            wait: header.wait,
        };
        Ok(version(
            &uploads::complete(&self.state, &header.name, upload, opts).await?,
        ))
    }
}

#[tonic::async_trait]
impl ModelRegistry for RegistryService {
    async fn upload_version(
        &self,
        r: Request<Streaming<pb::UploadVersionRequest>>,
    ) -> Reply<pb::ModelVersion> {
        let (_, ext, stream) = r.into_parts();
        Ok(Response::new(self.upload(&ext, stream).await?))
    }

    async fn list_models(
        &self,
        r: Request<pb::ListModelsRequest>,
    ) -> Reply<pb::ListModelsResponse> {
        let repo = &self.state.repo;
        Ok(Response::new(pb::ListModelsResponse {
            models: repo
                .models()
                .iter()
                .filter(|e| auth::grpc_visible(r.extensions(), Kind::Model, &e.name))
                .map(|e| model(repo, e))
                .collect(),
        }))
    }

    async fn get_model(&self, r: Request<pb::GetModelRequest>) -> Reply<pb::Model> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let repo = &self.state.repo;
        let e = repo.model(&r.into_inner().name).map_err(ApiError::from)?;
        Ok(Response::new(model(repo, &e)))
    }

    async fn get_version(&self, r: Request<pb::GetVersionRequest>) -> Reply<pb::ModelVersion> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let r = r.into_inner();
        let v = self
            .state
            .repo
            .version_info(&r.name, r.version)
            .map_err(ApiError::from)?;
        Ok(Response::new(version(&v)))
    }

    async fn delete_version(
        &self,
        r: Request<pb::DeleteVersionRequest>,
    ) -> Reply<pb::DeleteVersionResponse> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let r = r.into_inner();
        let repo = Arc::clone(&self.state.repo);
        blocking(move || repo.delete_version(&r.name, r.version)).await?;
        Ok(Response::new(pb::DeleteVersionResponse {}))
    }

    async fn set_alias(&self, r: Request<pb::SetAliasRequest>) -> Reply<pb::Model> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let r = r.into_inner();
        let repo = Arc::clone(&self.state.repo);
        let e = blocking(move || repo.set_alias(&r.name, &r.alias, r.version)).await?;
        Ok(Response::new(model(&self.state.repo, &e)))
    }

    async fn delete_alias(&self, r: Request<pb::DeleteAliasRequest>) -> Reply<pb::Model> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let r = r.into_inner();
        let repo = Arc::clone(&self.state.repo);
        let e = blocking(move || repo.delete_alias(&r.name, &r.alias)).await?;
        Ok(Response::new(model(&self.state.repo, &e)))
    }

    async fn rollback_alias(&self, r: Request<pb::RollbackAliasRequest>) -> Reply<pb::Model> {
        auth::grpc_reach(r.extensions(), Kind::Model, &r.get_ref().name)?;
        let r = r.into_inner();
        let repo = Arc::clone(&self.state.repo);
        let (_, e) = blocking(move || repo.rollback_alias(&r.name, &r.alias)).await?;
        Ok(Response::new(model(&self.state.repo, &e)))
    }
}
