//! REST tensor encoding: V2 JSON tensors (flat or nested `data`) and Triton's binary tensor
//! extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`,
//! `binary_data_output`).
//!
//! `data` is captured as raw JSON text during the first parse and decoded afterwards straight
//! into the tensor's packed bytes by a visitor that knows the datatype, so a tensor of numbers
//! never becomes a tree of `serde_json::Value`s.

use std::collections::HashMap;
use std::fmt;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use models::{DataType, Tensor, TensorData};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ApiError, ApiResult};
use crate::infer::{InferRequest, InferResponse, ParamValue};

pub const HEADER_LEN: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<HashMap<String, serde_json::Value>>,
    #[serde(borrow)]
    inputs: Vec<JsonInput<'a>>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Deserialize)]
struct JsonInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<HashMap<String, serde_json::Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Option<HashMap<String, serde_json::Value>>,
}

/// How the client wants outputs encoded.
#[derive(Debug, Default)]
pub struct OutputEncoding {
    /// Request-level `binary_data_output`.
    pub binary_default: bool,
    /// Per requested output, its own `binary_data` if set.
    pub per_output: Vec<(String, Option<bool>)>,
}

impl OutputEncoding {
    fn binary(&self, name: &str) -> bool {
        self.per_output
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, b)| *b)
            .unwrap_or(self.binary_default)
    }
}

/// Decodes an infer request body, JSON or JSON + binary tensors.
pub fn decode_request(
    headers: &HeaderMap,
    body: &Bytes,
    model: &str,
    version: Option<&str>,
) -> ApiResult<(InferRequest, OutputEncoding)> {
    let (json, mut binary) = match headers.get(HEADER_LEN) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Inference-Header-Content-Length must be a non-negative integer".into(),
                    )
                })?;
            if n == 0 {
                return Err(ApiError::BadRequest(
                    "Inference-Header-Content-Length 0 (a raw body without a JSON header) is not supported; \
                     send the JSON inference header before the binary tensors"
                        .into(),
                ));
            }
            if n > body.len() {
                return Err(ApiError::BadRequest(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            (&body[..n], &body[n..])
        }
        None => (&body[..], &[][..]),
    };
    let json = std::str::from_utf8(json).map_err(|e| {
        ApiError::BadRequest(format!("the JSON inference header is not valid UTF-8: {e}"))
    })?;
    let parsed: JsonRequest<'_> = serde_json::from_str(json)
        .map_err(|e| ApiError::BadRequest(format!("malformed inference request JSON: {e}")))?;

    let mut req = InferRequest {
        model: model.to_owned(),
        version: version.map(str::to_owned),
        id: parsed.id,
        ..Default::default()
    };
    let mut enc = OutputEncoding::default();
    for (k, v) in parsed.parameters.into_iter().flatten() {
        if k == "binary_data_output" {
            enc.binary_default = v.as_bool().ok_or_else(|| {
                ApiError::BadRequest("parameter 'binary_data_output' must be a boolean".into())
            })?;
        } else {
            req.set_parameter(&k, param(&k, v)?)?;
        }
    }
    req.inputs.reserve(parsed.inputs.len());
    for input in parsed.inputs {
        let datatype: DataType = input
            .datatype
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", input.name)))?;
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64().map(|n| n as usize).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "input '{}': binary_data_size must be a non-negative integer",
                        input.name
                    ))
                })
            })
            .transpose()?;
        let bad_tensor = |source| {
            ApiError::Model(models::Error::BadTensor {
                name: input.name.clone(),
                source,
            })
        };
        let tensor = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "input '{}' has both 'data' and binary_data_size; send one",
                    input.name
                )));
            }
            (Some(n), None) => {
                if n > binary.len() {
                    return Err(ApiError::BadRequest(format!(
                        "truncated binary body: input '{}' declares binary_data_size {n} but only {} bytes remain",
                        input.name,
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(n);
                binary = rest;
                Tensor::from_raw(datatype, input.shape, mine).map_err(bad_tensor)?
            }
            (None, Some(raw)) => {
                let data = decode_json_data(&input.name, datatype, raw)?;
                Tensor::new(datatype, input.shape, data).map_err(bad_tensor)?
            }
            (None, None) => {
                return Err(ApiError::BadRequest(format!(
                    "input '{}' has no 'data' and no binary_data_size parameter",
                    input.name
                )));
            }
        };
        req.inputs.push((input.name, tensor));
    }
    if !binary.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "the body has {} bytes of binary data beyond what the inputs' binary_data_size declare",
            binary.len()
        )));
    }
    for out in parsed.outputs {
        let b = out
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data"))
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "output '{}': binary_data must be a boolean",
                        out.name
                    ))
                })
            })
            .transpose()?;
        req.outputs.push(out.name.clone());
        enc.per_output.push((out.name, b));
    }
    Ok((req, enc))
}

fn param(name: &str, v: serde_json::Value) -> ApiResult<ParamValue> {
    Ok(match v {
        serde_json::Value::Bool(b) => ParamValue::Bool(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ParamValue::Int(i),
            (_, Some(u), _) => ParamValue::Uint(u),
            (_, _, Some(f)) => ParamValue::Double(f),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "parameter '{name}' is not a usable number"
                )));
            }
        },
        serde_json::Value::String(s) => ParamValue::Str(s),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "parameter '{name}' must be a boolean, number or string"
            )));
        }
    })
}

fn param_json(v: &ParamValue) -> serde_json::Value {
    match v {
        ParamValue::Bool(b) => (*b).into(),
        ParamValue::Int(i) => (*i).into(),
        ParamValue::Uint(u) => (*u).into(),
        ParamValue::Double(d) => (*d).into(),
        ParamValue::Str(s) => s.as_str().into(),
    }
}

/// Decodes a JSON `data` array (flat or nested) into packed elements of `dt`.
fn decode_json_data(name: &str, dt: DataType, raw: &RawValue) -> ApiResult<TensorData> {
    let mut sink = Sink {
        dt,
        raw: Vec::new(),
        items: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Elements {
        sink: &mut sink,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| ApiError::BadRequest(format!("input '{name}': {e}")))?;
    Ok(match dt {
        DataType::Bytes => TensorData::Bytes(sink.items),
        _ => TensorData::Raw(sink.raw.into()),
    })
}

struct Sink {
    dt: DataType,
    raw: Vec<u8>,
    items: Vec<Vec<u8>>,
}

/// JSON numbers as they come: exact integers stay integers.
#[derive(Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::U(v) => write!(f, "{v}"),
            Num::I(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

impl Sink {
    fn number<E: de::Error>(&mut self, n: Num) -> Result<(), E> {
        let dt = self.dt;
        let out_of_range = || E::custom(format_args!("value {n} is out of range for {dt}"));
        macro_rules! int {
            ($t:ty) => {{
                let v: $t = match n {
                    Num::U(u) => <$t>::try_from(u).map_err(|_| out_of_range())?,
                    Num::I(i) => <$t>::try_from(i).map_err(|_| out_of_range())?,
                    Num::F(f)
                        if f.fract() == 0.0 && f >= <$t>::MIN as f64 && f <= <$t>::MAX as f64 =>
                    {
                        f as $t
                    }
                    Num::F(_) => {
                        return Err(E::custom(format_args!(
                            "value {n} is not an integer, as {dt} needs"
                        )));
                    }
                };
                self.raw.extend_from_slice(&v.to_le_bytes());
            }};
        }
        let as_f64 = match n {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        };
        match dt {
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Fp16 => self
                .raw
                .extend_from_slice(&half::f16::from_f64(as_f64).to_le_bytes()),
            DataType::Bf16 => self
                .raw
                .extend_from_slice(&half::bf16::from_f64(as_f64).to_le_bytes()),
            DataType::Fp32 => self.raw.extend_from_slice(&(as_f64 as f32).to_le_bytes()),
            DataType::Fp64 => self.raw.extend_from_slice(&as_f64.to_le_bytes()),
            DataType::Bool | DataType::Bytes => {
                return Err(E::custom(format_args!(
                    "got the number {n} where {dt} data was expected"
                )));
            }
        }
        Ok(())
    }
}

/// Visits a (possibly nested) array of scalars, appending each to the sink.
struct Elements<'s> {
    sink: &'s mut Sink,
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} values", self.sink.dt)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > 32 {
            return Err(de::Error::custom(
                "'data' is nested more than 32 levels deep",
            ));
        }
        while seq
            .next_element_seed(Elements {
                sink: &mut *self.sink,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.sink.dt != DataType::Bool {
            return Err(E::custom(format_args!(
                "got a boolean where {} data was expected",
                self.sink.dt
            )));
        }
        self.sink.raw.push(v as u8);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.number(Num::U(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.number(Num::I(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.number(Num::F(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.sink.dt != DataType::Bytes {
            return Err(E::custom(format_args!(
                "got a string where {} data was expected",
                self.sink.dt
            )));
        }
        self.sink.items.push(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(format_args!(
            "got null where {} data was expected",
            self.sink.dt
        )))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format_args!(
            "got an object where {} data was expected",
            self.sink.dt
        )))
    }
}

#[derive(Serialize)]
struct JsonResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    outputs: Vec<JsonOutTensor<'a>>,
}

#[derive(Serialize)]
struct JsonOutTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Serialises a tensor's elements as a flat JSON array. Non-finite floats become `null`
/// (JSON has no NaN); ask for binary outputs to get them exactly.
struct JsonData<'a>(&'a Tensor);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.len()))?;
        macro_rules! each {
            ($t:ty, $n:literal, $conv:expr) => {{
                let TensorData::Raw(b) = t.data() else {
                    unreachable!("fixed-size datatype")
                };
                for c in b.chunks_exact($n) {
                    let v = <$t>::from_le_bytes(c.try_into().expect("chunk size"));
                    seq.serialize_element(&$conv(v))?;
                }
            }};
        }
        match t.datatype() {
            DataType::Bool => each!(u8, 1, |v: u8| v != 0),
            DataType::Uint8 => each!(u8, 1, |v| v),
            DataType::Uint16 => each!(u16, 2, |v| v),
            DataType::Uint32 => each!(u32, 4, |v| v),
            DataType::Uint64 => each!(u64, 8, |v| v),
            DataType::Int8 => each!(i8, 1, |v| v),
            DataType::Int16 => each!(i16, 2, |v| v),
            DataType::Int32 => each!(i32, 4, |v| v),
            DataType::Int64 => each!(i64, 8, |v| v),
            DataType::Fp16 => each!(half::f16, 2, |v: half::f16| v.to_f32()),
            DataType::Bf16 => each!(half::bf16, 2, |v: half::bf16| v.to_f32()),
            DataType::Fp32 => each!(f32, 4, |v| v),
            DataType::Fp64 => each!(f64, 8, |v| v),
            DataType::Bytes => {
                let TensorData::Bytes(items) = t.data() else {
                    unreachable!("BYTES")
                };
                for item in items {
                    match std::str::from_utf8(item) {
                        Ok(s) => seq.serialize_element(s)?,
                        // Not text: JSON can only carry it as a list of byte values.
                        Err(_) => seq.serialize_element(item)?,
                    }
                }
            }
        }
        seq.end()
    }
}

/// Encodes an infer response: plain JSON, or JSON + binary outputs when any is binary.
pub fn encode_response(resp: &InferResponse, enc: &OutputEncoding) -> Response {
    let mut binary_len = 0;
    let outputs: Vec<JsonOutTensor<'_>> = resp
        .outputs
        .iter()
        .map(|(name, t)| {
            let binary = enc.binary(name);
            if binary {
                binary_len += t.raw_len();
            }
            JsonOutTensor {
                name,
                datatype: t.datatype().as_str(),
                shape: t.shape(),
                parameters: binary.then(|| BinarySize {
                    binary_data_size: t.raw_len(),
                }),
                data: (!binary).then_some(JsonData(t)),
            }
        })
        .collect();
    let body = JsonResponse {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: resp.id.as_deref(),
        parameters: (!resp.parameters.is_empty()).then(|| {
            resp.parameters
                .iter()
                .map(|(k, v)| (k.clone(), param_json(v)))
                .collect()
        }),
        outputs,
    };
    let mut buf = Vec::with_capacity(256 + binary_len);
    serde_json::to_writer(&mut buf, &body).expect("serialising to a Vec cannot fail");
    let mut response = if binary_len > 0 {
        let json_len = buf.len();
        for (name, t) in &resp.outputs {
            if enc.binary(name) {
                t.write_raw(&mut buf);
            }
        }
        let mut r = buf.into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(HEADER_LEN, HeaderValue::from(json_len));
        r
    } else {
        let mut r = buf.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(
        "x-inferd-queue-us",
        HeaderValue::from(resp.timing.queue.as_micros() as u64),
    );
    h.insert(
        "x-inferd-compute-us",
        HeaderValue::from(
            (resp.timing.compute_input + resp.timing.compute_infer + resp.timing.compute_output)
                .as_micros() as u64,
        ),
    );
    h.insert("x-inferd-batch-size", HeaderValue::from(resp.batch_rows));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> ApiResult<(InferRequest, OutputEncoding)> {
        decode_request(&HeaderMap::new(), &Bytes::from(body.to_owned()), "m", None)
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        let TensorData::Raw(b) = t.data() else {
            panic!()
        };
        b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#,
        )
        .unwrap();
        let nested = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}]}"#,
        )
        .unwrap();
        assert_eq!(f32s(&flat.0.inputs[0].1), vec![1.0, 2.5, 3.0, 4.0]);
        assert_eq!(flat.0.inputs[0].1, nested.0.inputs[0].1);
    }

    #[test]
    fn every_datatype_decodes_from_json() {
        for (dt, data) in [
            ("BOOL", "[true,false]"),
            ("UINT8", "[0,255]"),
            ("UINT16", "[0,65535]"),
            ("UINT32", "[0,4294967295]"),
            ("UINT64", "[0,18446744073709551615]"),
            ("INT8", "[-128,127]"),
            ("INT16", "[-32768,32767]"),
            ("INT32", "[-2147483648,2147483647]"),
            ("INT64", "[-9223372036854775808,9223372036854775807]"),
            ("FP16", "[0.5,-2]"),
            ("BF16", "[0.5,-2]"),
            ("FP32", "[0.5,-2]"),
            ("FP64", "[0.5,-2]"),
            ("BYTES", r#"["a","日本"]"#),
        ] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{dt}","data":{data}}}]}}"#
            );
            let (req, _) = decode(&body).unwrap_or_else(|e| panic!("{dt}: {e}"));
            assert_eq!(req.inputs[0].1.len(), 2, "{dt}");
        }
    }

    #[test]
    fn bad_json_is_explained() {
        let e = |b: &str| decode(b).unwrap_err().to_string();
        assert!(e("{not json").contains("malformed inference request JSON"));
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP33","data":[1]}]}"#)
                .contains("unknown datatype 'FP33'")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#)
                .contains("value 256 is out of range for UINT8")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#)
                .contains("not an integer")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#)
                .contains("got a string where FP32")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#)
                .contains("input 'x'")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#).contains("no 'data'")
        );
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[null]}]}"#)
                .contains("got null")
        );
        assert!(e(r#"{"parameters":{"timeout":-1},"inputs":[]}"#).contains("'timeout'"));
    }

    #[test]
    fn binary_inputs_are_framed_by_the_header_length() {
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend(2.5f32.to_le_bytes());
        let mut h = HeaderMap::new();
        h.insert(HEADER_LEN, HeaderValue::from(json.len()));
        let (req, enc) = decode_request(&h, &Bytes::from(body.clone()), "m", None).unwrap();
        assert_eq!(f32s(&req.inputs[0].1), vec![1.5, 2.5]);
        assert!(enc.binary("y"));

        let truncated = Bytes::from(body[..body.len() - 1].to_vec());
        let e = decode_request(&h, &truncated, "m", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated binary body: input 'x' declares binary_data_size 8 but only 7 bytes remain"), "{e}");

        let mut long = body.clone();
        long.push(0);
        let e = decode_request(&h, &Bytes::from(long), "m", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 bytes of binary data beyond"), "{e}");

        h.insert(HEADER_LEN, HeaderValue::from(body.len() + 1));
        let e = decode_request(&h, &Bytes::from(body), "m", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("but the body has only"), "{e}");
    }
}
