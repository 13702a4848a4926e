//! gRPC specifics not covered by tritonclient: typed `contents` inputs, streaming order and
//! per-request errors, error codes.

use futures::StreamExt;
use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use server::proto::inference::model_infer_request::InferInputTensor;
use server::proto::inference::{InferTensorContents, ModelConfigRequest, ModelInferRequest};

use crate::common::{self, Server};

fn mlp_request(id: &str, shape: Vec<i64>, values: Vec<f32>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape,
            contents: Some(InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn reference_case() -> (Vec<f32>, Vec<f64>) {
    let case = common::reference("mlp").remove(0);
    let input = case["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let output = case["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (input, output)
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() <= 1e-5, "{g} vs {w}");
    }
}

#[tokio::test]
async fn typed_contents_streaming_and_error_codes() {
    let repo = common::repo(&[("mlp", None), ("fixed_shape", None)]);
    let srv = Server::start(repo.path(), &[]).await;
    let mut client = GrpcInferenceServiceClient::connect(srv.grpc_url())
        .await
        .unwrap();
    let (input, want) = reference_case();

    // Typed contents in, raw contents out.
    let resp = client
        .model_infer(mlp_request("a", vec![1, 64], input.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.id, "a");
    assert_eq!(resp.outputs[0].name, "probabilities");
    assert_eq!(resp.outputs[0].shape, vec![1, 10]);
    assert_close(&f32s(&resp.raw_output_contents[0]), &want);

    // Errors: codes and messages.
    let e = client
        .model_infer(mlp_request("b", vec![1, 63], vec![0.0; 63]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("dimension 1 must be 64"),
        "{}",
        e.message()
    );
    let mut unknown = mlp_request("c", vec![1, 64], input.clone());
    unknown.model_name = "nope".into();
    let e = client.model_infer(unknown).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::NotFound, "unknown model 'nope'")
    );
    let e = client
        .model_config(ModelConfigRequest {
            name: "mlp".into(),
            version: "9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A stream: responses in request order, the bad one answered with its error only.
    let requests = vec![
        mlp_request("s1", vec![1, 64], input.clone()),
        mlp_request("s2", vec![1, 3], vec![0.0; 3]),
        mlp_request("s3", vec![1, 64], input.clone()),
    ];
    let mut stream = client
        .model_stream_infer(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(msg) = stream.next().await {
        got.push(msg.unwrap());
    }
    assert_eq!(got.len(), 3);
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m.infer_response.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    assert!(got[0].error_message.is_empty() && got[2].error_message.is_empty());
    assert!(
        got[1].error_message.contains("dimension 1 must be 64"),
        "{}",
        got[1].error_message
    );
    assert_close(
        &f32s(&got[2].infer_response.as_ref().unwrap().raw_output_contents[0]),
        &want,
    );

    // A model without a batch dimension: config says max_batch_size 0, dims are the full shape.
    let cfg = client
        .model_config(ModelConfigRequest {
            name: "fixed_shape".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.max_batch_size, 0);
    assert_eq!(cfg.input[0].dims, vec![2, 3]);
    assert!(cfg.scheduling_choice.is_none());
}
