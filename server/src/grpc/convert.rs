//! Protobuf tensors ⇄ `models::Tensor`.
//!
//! Inputs arrive either all in `raw_input_contents` (what tritonclient and perf_analyzer
//! send; packed tensors keep those buffers, uncopied) or each in its typed `contents`;
//! outputs always leave in `raw_output_contents` (the output tensors' own buffers), the only
//! form tritonclient's `as_numpy` decodes.

use models::{DataType, Tensor, TensorData};

use crate::error::{ApiError, ApiResult};
use crate::infer::{InferRequest, InferResponse, ParamValue};
use crate::proto::inference as pb;
use pb::infer_parameter::ParameterChoice;

pub fn param(p: &pb::InferParameter) -> Option<ParamValue> {
    Some(match p.parameter_choice.as_ref()? {
        ParameterChoice::BoolParam(b) => ParamValue::Bool(*b),
        ParameterChoice::Int64Param(i) => ParamValue::Int(*i),
        ParameterChoice::StringParam(s) => ParamValue::Str(s.clone()),
        ParameterChoice::DoubleParam(d) => ParamValue::Double(*d),
        ParameterChoice::Uint64Param(u) => ParamValue::Uint(*u),
    })
}

pub fn request(r: pb::ModelInferRequest) -> ApiResult<InferRequest> {
    let mut req = InferRequest {
        model: r.model_name,
        version: Some(r.model_version).filter(|v| !v.is_empty()),
        id: Some(r.id).filter(|v| !v.is_empty()),
        ..Default::default()
    };
    for (k, v) in &r.parameters {
        if let Some(p) = param(v) {
            req.set_parameter(k, p)?;
        }
    }
    let mut raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(ApiError::BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            raw.len(),
            r.inputs.len()
        )));
    }
    for (i, input) in r.inputs.into_iter().enumerate() {
        let dt: DataType = input
            .datatype
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", input.name)))?;
        let bad = |source| {
            ApiError::Model(models::Error::BadTensor {
                name: input.name.clone(),
                source,
            })
        };
        let tensor = if raw.is_empty() {
            let contents = input.contents.as_ref().ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "input '{}' has no contents and the request has no raw_input_contents",
                    input.name
                ))
            })?;
            let data = typed(&input.name, dt, contents)?;
            Tensor::new(dt, input.shape, data).map_err(bad)?
        } else {
            if input.contents.is_some() {
                return Err(ApiError::BadRequest(format!(
                    "input '{}' has contents although the request uses raw_input_contents; use one form",
                    input.name
                )));
            }
            // The request's own buffer: the tensor is a view of it, not a copy.
            Tensor::from_raw_bytes(dt, input.shape, std::mem::take(&mut raw[i])).map_err(bad)?
        };
        req.inputs.push((input.name, tensor));
    }
    req.outputs = r.outputs.into_iter().map(|o| o.name).collect();
    Ok(req)
}

fn typed(name: &str, dt: DataType, c: &pb::InferTensorContents) -> ApiResult<TensorData> {
    let range = |v: &dyn std::fmt::Display| {
        ApiError::BadRequest(format!(
            "input '{name}': value {v} is out of range for {dt}"
        ))
    };
    macro_rules! narrow {
        ($src:expr, $t:ty) => {{
            let mut out = Vec::with_capacity($src.len() * std::mem::size_of::<$t>());
            for v in $src {
                out.extend_from_slice(&<$t>::try_from(*v).map_err(|_| range(v))?.to_le_bytes());
            }
            TensorData::Raw(out.into())
        }};
    }
    macro_rules! packed {
        ($src:expr) => {
            TensorData::Raw($src.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
    }
    Ok(match dt {
        DataType::Bool => TensorData::Raw(c.bool_contents.iter().map(|&b| b as u8).collect()),
        DataType::Int8 => narrow!(&c.int_contents, i8),
        DataType::Int16 => narrow!(&c.int_contents, i16),
        DataType::Int32 => packed!(c.int_contents),
        DataType::Int64 => packed!(c.int64_contents),
        DataType::Uint8 => narrow!(&c.uint_contents, u8),
        DataType::Uint16 => narrow!(&c.uint_contents, u16),
        DataType::Uint32 => packed!(c.uint_contents),
        DataType::Uint64 => packed!(c.uint64_contents),
        DataType::Fp32 => packed!(c.fp32_contents),
        DataType::Fp64 => packed!(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents.clone()),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(ApiError::BadRequest(format!(
                "input '{name}': {dt} has no typed contents field; send it in raw_input_contents"
            )));
        }
    })
}

pub fn response(r: InferResponse) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(r.outputs.len());
    let mut raw = Vec::with_capacity(r.outputs.len());
    for (name, t) in r.outputs {
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name,
            datatype: t.datatype().as_str().into(),
            shape: t.shape().to_vec(),
            parameters: Default::default(),
            contents: None,
        });
        raw.push(t.into_raw());
    }
    pb::ModelInferResponse {
        model_name: r.model_name,
        model_version: r.model_version,
        id: r.id.unwrap_or_default(),
        parameters: r
            .parameters
            .into_iter()
            .map(|(k, v)| {
                let choice = match v {
                    ParamValue::Bool(b) => ParameterChoice::BoolParam(b),
                    ParamValue::Int(i) => ParameterChoice::Int64Param(i),
                    ParamValue::Uint(u) => ParameterChoice::Uint64Param(u),
                    ParamValue::Double(d) => ParameterChoice::DoubleParam(d),
                    ParamValue::Str(s) => ParameterChoice::StringParam(s),
                };
                (
                    k,
                    pb::InferParameter {
                        parameter_choice: Some(choice),
                    },
                )
            })
            .collect(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn packed_tensors_are_the_messages_own_buffers_both_ways() {
        let raw = Bytes::from(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let at = raw.as_ptr();
        let req = request(pb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        })
        .unwrap();
        let (name, t) = &req.inputs[0];
        let TensorData::Raw(b) = t.data() else {
            unreachable!()
        };
        assert_eq!((name.as_str(), t.shape()), ("x", &[1i64, 2][..]));
        assert_eq!(b.as_ptr(), at, "a view of raw_input_contents, not a copy");
        assert_eq!(&b[..4], &1.5f32.to_le_bytes());

        let out = req.inputs.into_iter().next().unwrap().1;
        let resp = response(InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![("y".into(), out)],
            timing: Default::default(),
            batch_rows: 1,
            parameters: Vec::new(),
            experiment: None,
        });
        assert_eq!(
            resp.raw_output_contents[0].as_ptr(),
            at,
            "moved into the reply"
        );
        assert_eq!(resp.outputs[0].datatype, "FP32");
    }
}
