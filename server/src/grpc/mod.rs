//! The gRPC transport (tonic): `inference.GRPCInferenceService`, wire-compatible with
//! Triton's, so tritonclient and perf_analyzer work unchanged ([`InferenceService`]), and
//! inferd's own services from `proto/inferd.proto` ([`registry`]).

pub mod collections;
pub mod convert;
pub mod drift;
pub mod experiments;
pub mod features;
pub mod keys;
pub mod registry;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Kind};
use crate::error::ApiError;
use crate::infer;
use crate::proto::inference as pb;
use crate::state::{AppState, EXTENSIONS, SERVER_NAME, SERVER_VERSION};
use crate::triton;
use pb::grpc_inference_service_server::GrpcInferenceService;

pub use pb::grpc_inference_service_server::GrpcInferenceServiceServer;

pub struct InferenceService {
    state: Arc<AppState>,
}

impl InferenceService {
    pub fn server(state: Arc<AppState>) -> GrpcInferenceServiceServer<InferenceService> {
        let limit = state.max_request_bytes;
        GrpcInferenceServiceServer::new(InferenceService { state })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }

    fn version(v: &str) -> Option<&str> {
        Some(v).filter(|v| !v.is_empty())
    }

    /// One request; `headers` are the call's metadata (an experiment's unit key may be one).
    /// Returns the experiment's response metadata beside the response.
    async fn infer_one(
        state: &AppState,
        r: pb::ModelInferRequest,
        headers: http::HeaderMap,
        access: Option<&crate::access::Slot>,
    ) -> Result<(pb::ModelInferResponse, http::HeaderMap), ApiError> {
        let mut req = convert::request(r)?;
        req.headers = headers;
        let resp = infer::infer(state, req).await?;
        crate::access::Slot::served(access, &resp);
        let metadata = resp.experiment_headers();
        Ok((convert::response(resp), metadata))
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// A restricted principal's reach over the model a call names ([`auth::grpc_reach`]).
fn reach<T>(r: &Request<T>, model: &str) -> Result<(), Status> {
    auth::grpc_reach(r.extensions(), Kind::Model, model)
}

/// Bound on stream requests in flight per stream; past it the stream stops reading (gRPC
/// flow control pushes back on the client).
const STREAM_IN_FLIGHT: usize = 1024;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Reply<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Reply<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Reply<pb::ModelReadyResponse> {
        reach(&r, &r.get_ref().name)?;
        let r = r.into_inner();
        let ready = self
            .state
            .repo
            .get(&r.name, Self::version(&r.version))
            .is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Reply<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: SERVER_VERSION.into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Reply<pb::ModelMetadataResponse> {
        reach(&r, &r.get_ref().name)?;
        let r = r.into_inner();
        let repo = &self.state.repo;
        let v = repo
            .get(&r.name, Self::version(&r.version))
            .map_err(ApiError::from)?;
        let versions = match Self::version(&r.version) {
            Some(_) => vec![v.version_label.clone()],
            None => repo
                .model(&r.name)
                .map_err(ApiError::from)?
                .ready()
                .map(|x| x.version_label.clone())
                .collect(),
        };
        let meta = |ts: &[models::TensorSpec]| {
            ts.iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().into(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: v.model.clone(),
            versions,
            platform: v.platform().into(),
            inputs: meta(&v.signature.inputs),
            outputs: meta(&v.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Reply<pb::ModelInferResponse> {
        reach(&r, &r.get_ref().model_name)?;
        let (metadata, ext, msg) = r.into_parts();
        let (resp, metadata) = Self::infer_one(
            &self.state,
            msg,
            metadata.into_headers(),
            ext.get::<crate::access::Slot>(),
        )
        .await?;
        Ok(Response::from_parts(
            tonic::metadata::MetadataMap::from_headers(metadata),
            resp,
            Default::default(),
        ))
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

    /// Requests on one stream run concurrently (so they can share batches) and their
    /// responses are sent in request order; an error answers that request only.
    async fn model_stream_infer(
        &self,
        r: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        // The stream's metadata applies to each of its requests, and so does a restricted
        // principal's reach (checked per request: an error answers that request only).
        let (metadata, ext, mut incoming) = r.into_parts();
        let principal = ext.get::<auth::Principal>().cloned();
        let headers = metadata.into_headers();
        let (order_tx, mut order_rx) = mpsc::channel::<
            tokio::task::JoinHandle<pb::ModelStreamInferResponse>,
        >(STREAM_IN_FLIGHT);
        let (out_tx, out_rx) = mpsc::channel(16);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(req)) => {
                        let state = Arc::clone(&state);
                        let id = req.id.clone();
                        let headers = headers.clone();
                        let refused = principal
                            .as_ref()
                            .and_then(|p| p.may_reach(Kind::Model, &req.model_name).err());
                        let task = tokio::spawn(async move {
                            if let Some(error_message) = refused {
                                return pb::ModelStreamInferResponse {
                                    error_message,
                                    infer_response: Some(pb::ModelInferResponse {
                                        id,
                                        ..Default::default()
                                    }),
                                };
                            }
                            match Self::infer_one(&state, req, headers, None).await {
                                Ok((resp, _)) => pb::ModelStreamInferResponse {
                                    error_message: String::new(),
                                    infer_response: Some(resp),
                                },
                                Err(e) => pb::ModelStreamInferResponse {
                                    error_message: e.to_string(),
                                    infer_response: Some(pb::ModelInferResponse {
                                        id,
                                        ..Default::default()
                                    }),
                                },
                            }
                        });
                        if order_tx.send(task).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "inference stream ended with an error");
                        break;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(task) = order_rx.recv().await {
                let msg = task.await.unwrap_or_else(|e| pb::ModelStreamInferResponse {
                    error_message: format!("request failed: {e}"),
                    infer_response: None,
                });
                if out_tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Reply<pb::ModelConfigResponse> {
        reach(&r, &r.get_ref().name)?;
        let r = r.into_inner();
        let v = self
            .state
            .repo
            .get(&r.name, Self::version(&r.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(triton::model_config(&v)),
        }))
    }

    async fn model_statistics(
        &self,
        r: Request<pb::ModelStatisticsRequest>,
    ) -> Reply<pb::ModelStatisticsResponse> {
        if !r.get_ref().name.is_empty() {
            reach(&r, &r.get_ref().name)?;
        }
        let (_, ext, r) = r.into_parts();
        let repo = &self.state.repo;
        let versions = match (r.name.as_str(), Self::version(&r.version)) {
            ("", _) => repo.ready_versions(),
            (m, None) => repo
                .model(m)
                .map_err(ApiError::from)?
                .ready()
                .cloned()
                .collect(),
            (m, Some(v)) => vec![repo.get(m, Some(v)).map_err(ApiError::from)?],
        };
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: versions
                .iter()
                .filter(|v| auth::grpc_visible(&ext, Kind::Model, &v.model))
                .map(|v| triton::model_statistics(v))
                .collect(),
        }))
    }

    async fn repository_index(
        &self,
        r: Request<pb::RepositoryIndexRequest>,
    ) -> Reply<pb::RepositoryIndexResponse> {
        let (_, ext, r) = r.into_parts();
        let ready_only = r.ready;
        let models = self
            .state
            .repo
            .index()
            .into_iter()
            .filter(|e| !ready_only || e.state == "READY")
            .filter(|e| auth::grpc_visible(&ext, Kind::Model, &e.name))
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        r: Request<pb::RepositoryModelLoadRequest>,
    ) -> Reply<pb::RepositoryModelLoadResponse> {
        reach(&r, &r.get_ref().model_name)?;
        let r = r.into_inner();
        if r.parameters
            .keys()
            .any(|k| k == "config" || k.starts_with("file:"))
        {
            return Err(Status::invalid_argument(
                "loading a model from 'config' / 'file:' parameters is not supported: put the model in the \
                 repository directory, then call load",
            ));
        }
        let repo = Arc::clone(&self.state.repo);
        tokio::task::spawn_blocking(move || repo.load_model(&r.model_name))
            .await
            .map_err(|e| Status::unavailable(format!("model load was interrupted: {e}")))?
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        r: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Reply<pb::RepositoryModelUnloadResponse> {
        reach(&r, &r.get_ref().model_name)?;
        self.state
            .repo
            .unload_model(&r.into_inner().model_name)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}
