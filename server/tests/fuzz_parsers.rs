//! Property-based fuzzing of the request parsers that take a caller's bytes in process: the
//! V2 JSON codec, the binary tensor extension and gRPC's `ModelInferRequest`. Each gets
//! arbitrary and mutated-valid inputs; the property is that a parser returns (a value or a
//! clear error) — it never panics, never allocates past what the input declares, and an
//! error names what is wrong. Bounded for CI: `PROPTEST_CASES` (default 512 per target).
//! The server-side parsers behind HTTP (uploads, feature pushes, vector upserts, experiment
//! configs) are fuzzed through the real binary in `tests/e2e/fuzz.rs`.

use bytes::Bytes;
use http::HeaderMap;
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};
use server::http::codec::decode_request;
use server::proto::inference::ModelInferRequest;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        // Failures print their input; they become regression tests below.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[path = "support/json_fuzz.rs"]
mod json_fuzz;

use json_fuzz::mutate;

/// Any JSON value, with the V2 request's field names and datatypes among its keys and strings.
fn any_json() -> impl Strategy<Value = Value> {
    json_fuzz::any_json(
        &[
            "inputs",
            "outputs",
            "name",
            "shape",
            "datatype",
            "data",
            "parameters",
            "binary_data_size",
            "binary_data",
            "id",
        ],
        &["FP32", "BYTES", "INT64", "input"],
    )
}

fn valid_request() -> Value {
    json!({"id": "r1", "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}],
           "outputs": [{"name": "probabilities"}], "parameters": {"timeout": 1000}})
}

fn decode_json(body: &[u8]) -> Result<String, String> {
    decode_request(
        &HeaderMap::new(),
        &Bytes::copy_from_slice(body),
        "mlp",
        None,
    )
    .map(|(r, _)| format!("{} inputs", r.inputs.len()))
    .map_err(|e| e.to_string())
}

fn decode_binary(header_len: &str, body: &[u8]) -> Result<String, String> {
    let mut h = HeaderMap::new();
    h.insert(
        "inference-header-content-length",
        header_len.parse().unwrap_or_else(|_| "0".parse().unwrap()),
    );
    decode_request(&h, &Bytes::copy_from_slice(body), "mlp", None)
        .map(|(r, _)| format!("{} inputs", r.inputs.len()))
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn v2_json_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_json(&body) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn v2_json_arbitrary_documents(doc in any_json()) {
        if let Err(e) = decode_json(doc.to_string().as_bytes()) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn v2_json_mutated_valid_requests(
        path in prop::collection::vec(any::<usize>(), 0..5),
        with in any_json(),
    ) {
        let mut doc = valid_request();
        mutate(&mut doc, &path, with);
        if let Err(e) = decode_json(doc.to_string().as_bytes()) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn v2_binary_extension(
        size in prop_oneof![any::<i64>().prop_map(|v| v.to_string()), Just("18446744073709551615".to_owned()), Just("-1".to_owned())],
        datatype in prop_oneof![Just("FP32"), Just("BYTES"), Just("INT8"), Just("BOOL"), Just("FP16")],
        shape in prop::collection::vec(prop_oneof![any::<i64>(), 0i64..70], 0..4),
        tail in prop::collection::vec(any::<u8>(), 0..600),
        header_len_delta in -8i64..8,
    ) {
        let header = json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                        "parameters": {"binary_data_size": size.parse::<i64>().ok()}}]}).to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&tail);
        let declared = (header.len() as i64 + header_len_delta).to_string();
        if let Err(e) = decode_binary(&declared, &body) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn grpc_model_infer_request_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = ModelInferRequest::decode(bytes.as_slice())
            && let Err(e) = server::grpc::convert::request(req)
        {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn grpc_model_infer_request_structured(
        shape in prop::collection::vec(prop_oneof![any::<i64>(), -2i64..70], 0..4),
        datatype in prop_oneof![Just("FP32"), Just("BYTES"), Just("INT64"), Just("UINT8"), Just("FP64"), Just("NOPE")],
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..3),
        ninputs in 0usize..3,
    ) {
        use server::proto::inference::model_infer_request::InferInputTensor;
        let req = ModelInferRequest {
            model_name: "mlp".into(),
            inputs: (0..ninputs).map(|i| InferInputTensor {
                name: format!("in{i}"),
                datatype: datatype.into(),
                shape: shape.clone(),
                ..Default::default()
            }).collect(),
            raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            ..Default::default()
        };
        if let Err(e) = server::grpc::convert::request(req) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// Shapes whose element count overflows: refused with a message, never an allocation.
#[test]
fn overflowing_shapes_are_refused_before_allocating() {
    let huge = json!({"inputs": [{"name": "input", "shape": [i64::MAX, i64::MAX], "datatype": "FP32", "data": [1.0]}]});
    let e = decode_json(huge.to_string().as_bytes()).unwrap_err();
    assert!(!e.is_empty());
    let e = decode_binary(
        "90",
        format!(
            "{:<90}",
            json!({"inputs": [{"name": "input", "shape": [4611686018427387904i64, 8], "datatype": "FP32",
                               "parameters": {"binary_data_size": 0}}]})
        )
        .as_bytes(),
    );
    assert!(e.is_err(), "{e:?}");
}

/// The mutations start from a request that decodes: they probe the edges of a valid one.
#[test]
fn the_valid_request_decodes() {
    assert_eq!(
        decode_json(valid_request().to_string().as_bytes()),
        Ok("1 inputs".into())
    );
}
