//! The gRPC stack's own limit, for the load benchmark (issue 14): a tonic server with Triton's
//! `inference.GRPCInferenceService`, on the same runtime settings as inferd, answering what
//! perf_analyzer asks before it measures — server and model readiness, model metadata and
//! config for the `mlp` fixture (FP32 [-1, 64] → [-1, 10]) — and every `ModelInfer` with a
//! fixed 10-float reply after checking the request names the input and carries its bytes,
//! without running any model. Beside bare_axum, it is what "inferd vs its transport" is
//! measured against over gRPC.
//!
//! `cargo run --release --example bare_tonic -- PORT`

use server::proto::inference as pb;
use server::proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use tonic::{Request, Response, Status, Streaming};

type Reply<T> = Result<Response<T>, Status>;

struct Bare;

const MODEL: &str = "mlp";
/// `TYPE_FP32` in model_config.proto's DataType.
const TYPE_FP32: i32 = 11;

fn tensor(name: &str, width: i64) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![-1, width],
    }
}

fn known(name: &str) -> Result<(), Status> {
    if name == MODEL {
        Ok(())
    } else {
        Err(Status::not_found(format!("unknown model '{name}'")))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
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
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Reply<pb::ModelReadyResponse> {
        Ok(Response::new(pb::ModelReadyResponse {
            ready: r.get_ref().name == MODEL,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Reply<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "bare_tonic".into(),
            version: "0".into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Reply<pb::ModelMetadataResponse> {
        known(&r.get_ref().name)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: MODEL.into(),
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![tensor("input", 64)],
            outputs: vec![tensor("probabilities", 10)],
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Reply<pb::ModelInferResponse> {
        let r = r.into_inner();
        known(&r.model_name)?;
        let ok = r.inputs.len() == 1
            && r.inputs[0].name == "input"
            && r.raw_input_contents
                .first()
                .is_some_and(|b| b.len() % (64 * 4) == 0);
        if !ok {
            return Err(Status::invalid_argument(
                "expected one FP32 [n, 64] input 'input' as raw bytes",
            ));
        }
        let rows = (r.raw_input_contents[0].len() / (64 * 4)) as i64;
        let out: Vec<u8> = (0..rows * 10).flat_map(|_| 0.1f32.to_le_bytes()).collect();
        Ok(Response::new(pb::ModelInferResponse {
            model_name: MODEL.into(),
            model_version: "1".into(),
            id: r.id,
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![rows, 10],
                ..Default::default()
            }],
            raw_output_contents: vec![out.into()],
            ..Default::default()
        }))
    }

    type ModelStreamInferStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>,
    >;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        Err(Status::unimplemented(
            "bare_tonic answers unary ModelInfer only",
        ))
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Reply<pb::ModelConfigResponse> {
        known(&r.get_ref().name)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: MODEL.into(),
                platform: "onnxruntime_onnx".into(),
                backend: "onnxruntime".into(),
                max_batch_size: 64,
                input: vec![pb::ModelInput {
                    name: "input".into(),
                    data_type: TYPE_FP32,
                    dims: vec![64],
                    ..Default::default()
                }],
                output: vec![pb::ModelOutput {
                    name: "probabilities".into(),
                    data_type: TYPE_FP32,
                    dims: vec![10],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Reply<pb::ModelStatisticsResponse> {
        Ok(Response::new(pb::ModelStatisticsResponse::default()))
    }

    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Reply<pb::RepositoryIndexResponse> {
        Ok(Response::new(pb::RepositoryIndexResponse::default()))
    }

    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Reply<pb::RepositoryModelLoadResponse> {
        Err(Status::unimplemented("bare_tonic serves one fixed model"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Reply<pb::RepositoryModelUnloadResponse> {
        Err(Status::unimplemented("bare_tonic serves one fixed model"))
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8101);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eprintln!("bare_tonic listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(GrpcInferenceServiceServer::new(Bare))
        .serve(addr)
        .await
        .expect("serve");
}
