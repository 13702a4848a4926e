//! Bad requests get a 4xx with a message naming what to fix, and the server keeps serving.

use serde_json::json;

use crate::common::{self, Server};

fn mlp_input(shape: &[i64], datatype: &str, n: usize) -> serde_json::Value {
    json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": datatype, "data": vec![0.5; n] }] })
}

#[tokio::test]
async fn bad_requests_are_explained_and_nothing_else_breaks() {
    let repo = common::repo(&[("mlp", None), ("two_inputs", None)]);
    let srv = Server::start(repo.path(), &["--max-request-bytes", "65536"]).await;
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "wrong shape",
            mlp_input(&[1, 63], "FP32", 63),
            400,
            "input 'input': shape [1, 63] does not match the model's [-1, 64] (dimension 1 must be 64)",
        ),
        (
            "wrong rank",
            mlp_input(&[64], "FP32", 64),
            400,
            "expected 2 dimensions, got 1",
        ),
        (
            "wrong dtype",
            mlp_input(&[1, 64], "FP64", 64),
            400,
            "input 'input': datatype FP64 does not match the model's FP32",
        ),
        (
            "data/shape disagree",
            mlp_input(&[2, 64], "FP32", 64),
            400,
            "input 'input'",
        ),
        (
            "unknown datatype",
            mlp_input(&[1, 64], "FLOAT", 64),
            400,
            "unknown datatype 'FLOAT'",
        ),
        (
            "extra input",
            json!({ "inputs": [
                { "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 64] },
                { "name": "extra", "shape": [1], "datatype": "FP32", "data": [0.0] }
            ]}),
            400,
            "unexpected input 'extra': the model's inputs are 'input'",
        ),
        (
            "batch too large",
            mlp_input(&[65, 64], "FP32", 65 * 64),
            400,
            "batch size 65 exceeds the model's max_batch_size 64",
        ),
        (
            "unknown output",
            json!({ "inputs": mlp_input(&[1, 64], "FP32", 64)["inputs"], "outputs": [{ "name": "logits" }] }),
            400,
            "unknown output 'logits'",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, resp) = srv.post("/v2/models/mlp/infer", &body).await;
        assert_eq!(got, status, "{what}: {resp}");
        let err = resp["error"].as_str().unwrap_or_default();
        assert!(err.contains(message), "{what}: {err:?} lacks {message:?}");
    }

    let (status, resp) = srv
        .post(
            "/v2/models/two_inputs/infer",
            &json!({ "inputs": [{ "name": "a", "shape": [1, 8], "datatype": "FP32", "data": vec![1.0; 8] }] }),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("missing input 'b' (FP32 [-1, 8])"),
        "{resp}"
    );

    let (status, resp) = srv
        .post("/v2/models/nope/infer", &mlp_input(&[1, 64], "FP32", 64))
        .await;
    assert_eq!(
        (status, resp["error"].as_str().unwrap()),
        (404, "unknown model 'nope'")
    );
    let (status, resp) = srv
        .post(
            "/v2/models/mlp/versions/7/infer",
            &mlp_input(&[1, 64], "FP32", 64),
        )
        .await;
    assert_eq!(
        (status, resp["error"].as_str().unwrap()),
        (404, "model 'mlp' has no version '7'")
    );

    let client = reqwest::Client::new();
    let r = client
        .post(srv.url("/v2/models/mlp/infer"))
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed inference request JSON: EOF"),
        "{body}"
    );

    // Binary extension: the header promises 8 bytes of tensor data, the body carries 7.
    let header = r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend([0u8; 7]);
    let r = client
        .post(srv.url("/v2/models/mlp/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("truncated binary body: input 'input' declares binary_data_size 8 but only 7 bytes remain"), "{body}");

    // Over --max-request-bytes: 413, the limit named.
    let big = mlp_input(&[64, 64], "FP32", 64 * 64 * 4);
    let (status, resp) = srv.post("/v2/models/mlp/infer", &big).await;
    assert_eq!(status, 413, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit of 65536 bytes"),
        "{resp}"
    );

    let r = client
        .get(srv.url("/v2/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // After all of that, the server still answers correctly.
    for case in common::reference("mlp") {
        let (status, resp) = srv
            .post("/v2/models/mlp/infer", &common::request_body(&case))
            .await;
        assert_eq!(status, 200, "{resp}");
        common::assert_outputs_match(&resp, &case);
    }
    // Every bad request was counted, none ran.
    assert_eq!(
        srv.metric(
            "inferd_inference_request_failure_total",
            &[("model", "mlp"), ("reason", "INVALID")]
        )
        .await,
        5.0
    );
}
