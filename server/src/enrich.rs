//! Feature enrichment: inputs a model's `config.toml` maps to feature-view features
//! (`[features.inputs.<input>]`, see `models::config`) are filled from the online store when
//! the request leaves them out and gives the views' entity keys:
//!
//! - as request **parameters** named after the join keys (`"parameters": {"user_id": 42}`):
//!   one row;
//! - or as an **input tensor** named after a join key (INT32/INT64/UINT*/BYTES, `[N]` or
//!   `[N, 1]`): one row per element. Such a tensor is removed from the inputs unless the
//!   model takes it too.
//!
//! Row `r` of a filled input is the listed features of entity row `r`, concatenated in order
//! (a list feature contributes its elements), converted to the input's datatype. A feature
//! that is not found, null, or older than its view's ttl follows its policy: its default
//! value, or the request fails (422 / `FAILED_PRECONDITION`). The response says what was
//! filled and what was defaulted in its parameters:
//!
//! | parameter | |
//! |---|---|
//! | `feature_inputs` | the inputs filled from the store, comma-separated |
//! | `features_defaulted_count` | how many (row, feature) values were defaults |
//! | `features_defaulted` | which features were defaulted, comma-separated (when any) |

use std::collections::BTreeSet;

use feature_store::serving::{FieldStatus, OnlineRequest, parse_ref};
use feature_store::value::{Value, ValueType};
use feature_store::{Error as FeatureError, FeatureStore};
use models::config::{InputFeatures, MissingPolicy};
use models::repository::ServedVersion;
use models::{DataType, Tensor, TensorData};
use serde_json::Value as Json;

use crate::error::{ApiError, ApiResult};
use crate::infer::{InferRequest, ParamValue};

/// Fills the mapped inputs the request left out; returns the response parameters.
pub async fn enrich(
    fs: &FeatureStore,
    served: &ServedVersion,
    req: &mut InferRequest,
) -> ApiResult<Vec<(String, ParamValue)>> {
    let cfg = &served.config.features;
    let targets: Vec<(&String, &InputFeatures)> = cfg
        .inputs
        .iter()
        .filter(|(name, _)| !req.inputs.iter().any(|(n, _)| n == *name))
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }

    // The features to read (each once) and their types; the join keys they need.
    let views = fs.views().snapshot_full();
    let mut refs: Vec<String> = Vec::new();
    let mut types: Vec<ValueType> = Vec::new();
    let mut join_keys: Vec<String> = Vec::new();
    for (_, input) in &targets {
        for f in &input.features {
            if refs.iter().any(|r| r == f.feature()) {
                continue;
            }
            let (v, name) = parse_ref(f.feature())?;
            let view = views.require(v)?;
            types.push(view.features()[view.require_feature(name)?].ty);
            refs.push(f.feature().to_owned());
            for e in view.entities() {
                if !join_keys.contains(e) {
                    join_keys.push(e.clone());
                }
            }
        }
    }

    let entities = entity_rows(served, req, &join_keys)?;
    let Some(entities) = entities else {
        let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
        return Err(ApiError::BadRequest(format!(
            "model '{}' takes input(s) {names:?} from the feature store: pass them, or give the \
             entity key(s) {join_keys:?} as request parameters (one row) or as input tensors (one \
             value per row)",
            served.model
        )));
    };
    let rows = entities[0].1.len();
    let read = fs
        .get_online_features(&OnlineRequest {
            features: refs.clone(),
            entities,
            full_feature_names: false,
        })
        .await?;
    let first = read.results.len() - refs.len();
    let entity_cols = &read.results[..first];
    let describe_row = |r: usize| -> String {
        read.feature_names[..first]
            .iter()
            .zip(entity_cols)
            .map(|(k, c)| match &c.values[r] {
                Value::String(s) => format!("{k}='{s}'"),
                v => format!("{k}={}", v.to_json()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut filled = Vec::with_capacity(targets.len());
    let mut defaulted: BTreeSet<&str> = BTreeSet::new();
    let mut defaulted_count = 0i64;
    for (input_name, input) in &targets {
        let idx = served.signature.input_index(input_name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "model '{}' maps features to input '{input_name}', which it does not have",
                served.model
            ))
        })?;
        let spec = &served.signature.inputs[idx];
        let mut acc = Acc::new(spec.datatype);
        let mut width: Option<usize> = None;
        for r in 0..rows {
            let before = acc.len();
            // Elements of each feature in this row; `None`: a missing list feature, sized
            // below from what the input's row must hold.
            let mut pending: Option<(usize, f64)> = None;
            for f in &input.features {
                let i = refs
                    .iter()
                    .position(|x| x == f.feature())
                    .expect("every feature read");
                let col = &read.results[first + i];
                let status = col.statuses[r];
                if status == FieldStatus::Present {
                    acc.push(&col.values[r], f.feature())?;
                    continue;
                }
                let (policy, default) = f.policy(input);
                if policy == MissingPolicy::Error {
                    return Err(FeatureError::MissingFeature {
                        feature: f.feature().into(),
                        entity: describe_row(r),
                        status: status.as_str(),
                    }
                    .into());
                }
                defaulted.insert(f.feature());
                defaulted_count += 1;
                if types[i].is_list() {
                    if pending.is_some() {
                        return Err(ApiError::BadRequest(format!(
                            "input '{input_name}': two list features are missing for {}, so their \
                             defaults cannot be sized; use on_missing = \"error\" for one",
                            describe_row(r)
                        )));
                    }
                    pending = Some((acc.len(), default));
                } else {
                    acc.push_default(default)?;
                }
            }
            let need = row_width(&spec.shape, width);
            if let Some((at, default)) = pending {
                let Some(need) = need else {
                    return Err(ApiError::BadRequest(format!(
                        "input '{input_name}': a missing list feature's default cannot be sized \
                         (the input's row size is not fixed)"
                    )));
                };
                let have = acc.len() - before;
                let n = need.checked_sub(have).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "input '{input_name}': the features of {} hold {have} values, more than \
                         the {need} of a row",
                        describe_row(r)
                    ))
                })?;
                acc.insert_defaults(at, n, default)?;
            }
            let got = acc.len() - before;
            match need {
                Some(n) if n != got => {
                    return Err(ApiError::BadRequest(format!(
                        "input '{input_name}' takes {n} values per row ({}); its features hold {got} \
                         for {}",
                        models::signature::fmt_shape(&spec.shape),
                        describe_row(r)
                    )));
                }
                _ => width = Some(got),
            }
        }
        let shape = input_shape(&spec.shape, rows, width.unwrap_or(0), input_name)?;
        let tensor = Tensor::new(spec.datatype, shape, acc.finish()).map_err(|source| {
            ApiError::Model(models::Error::BadTensor {
                name: (*input_name).clone(),
                source,
            })
        })?;
        req.inputs.push(((*input_name).clone(), tensor));
        filled.push(input_name.as_str());
    }

    let mut params = vec![
        (
            "feature_inputs".to_owned(),
            ParamValue::Str(filled.join(",")),
        ),
        (
            "features_defaulted_count".to_owned(),
            ParamValue::Int(defaulted_count),
        ),
    ];
    if !defaulted.is_empty() {
        let names: Vec<&str> = defaulted.into_iter().collect();
        params.push((
            "features_defaulted".to_owned(),
            ParamValue::Str(names.join(",")),
        ));
    }
    Ok(params)
}

/// Join key → one value per entity row.
type Entities = Vec<(String, Vec<Json>)>;

/// The entity rows, column-wise by join key, from parameters or key tensors; `None` when a
/// join key is given neither way.
fn entity_rows(
    served: &ServedVersion,
    req: &mut InferRequest,
    join_keys: &[String],
) -> ApiResult<Option<Entities>> {
    let mut entities = Vec::with_capacity(join_keys.len());
    for k in join_keys {
        if let Some((_, v)) = req.parameters.iter().find(|(n, _)| n == k) {
            let v = match v {
                ParamValue::Str(s) => Json::from(s.as_str()),
                ParamValue::Int(i) => Json::from(*i),
                ParamValue::Uint(u) => Json::from(*u),
                ParamValue::Bool(_) | ParamValue::Double(_) => {
                    return Err(ApiError::BadRequest(format!(
                        "entity key parameter '{k}' must be a string or an integer"
                    )));
                }
            };
            entities.push((k.clone(), vec![v]));
        } else if let Some(pos) = req.inputs.iter().position(|(n, _)| n == k) {
            let keys = if served.signature.input_index(k).is_some() {
                tensor_keys(k, &req.inputs[pos].1)?
            } else {
                tensor_keys(k, &req.inputs.remove(pos).1)?
            };
            entities.push((k.clone(), keys));
        } else {
            return Ok(None);
        }
    }
    if let Some((k, v)) = entities
        .iter()
        .find(|(_, v)| v.len() != entities[0].1.len())
    {
        return Err(ApiError::BadRequest(format!(
            "entity key '{k}' has {} values, '{}' has {}: give one per row",
            v.len(),
            entities[0].0,
            entities[0].1.len()
        )));
    }
    if entities.first().is_some_and(|(_, v)| v.is_empty()) {
        return Err(ApiError::BadRequest("no entity rows given".into()));
    }
    Ok(Some(entities))
}

/// The keys in an entity-key tensor (`[N]` or `[N, 1]`).
fn tensor_keys(name: &str, t: &Tensor) -> ApiResult<Vec<Json>> {
    let shape = t.shape();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(ApiError::BadRequest(format!(
            "entity key tensor '{name}' must have shape [N] or [N, 1]"
        )));
    }
    macro_rules! ints {
        ($t:ty, $n:literal) => {{
            let TensorData::Raw(b) = t.data() else {
                unreachable!("fixed-size datatype")
            };
            b.chunks_exact($n)
                .map(|c| Json::from(<$t>::from_le_bytes(c.try_into().expect("chunk"))))
                .collect()
        }};
    }
    Ok(match t.datatype() {
        DataType::Int32 => ints!(i32, 4),
        DataType::Int64 => ints!(i64, 8),
        DataType::Uint32 => ints!(u32, 4),
        DataType::Uint64 => ints!(u64, 8),
        DataType::Bytes => {
            let TensorData::Bytes(items) = t.data() else {
                unreachable!("BYTES")
            };
            items
                .iter()
                .map(|b| {
                    std::str::from_utf8(b).map(Json::from).map_err(|_| {
                        ApiError::BadRequest(format!("entity key tensor '{name}': not UTF-8"))
                    })
                })
                .collect::<ApiResult<_>>()?
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "entity key tensor '{name}' must be INT32, INT64, UINT32, UINT64 or BYTES, not {other}"
            )));
        }
    })
}

/// Values per row the input takes, when its non-batch dimensions are fixed; `seen` (an
/// earlier row's count) when the input has one free dimension after the rows.
fn row_width(shape: &[i64], seen: Option<usize>) -> Option<usize> {
    let rest = shape.get(1..).unwrap_or(&[]);
    if rest.iter().all(|d| *d >= 0) {
        Some(rest.iter().product::<i64>() as usize)
    } else {
        seen
    }
}

/// The filled tensor's shape: `rows` first, then the input's dimensions (a single free one
/// takes `width`).
fn input_shape(spec: &[i64], rows: usize, width: usize, name: &str) -> ApiResult<Vec<i64>> {
    let Some((&batch, rest)) = spec.split_first() else {
        return Err(ApiError::BadRequest(format!(
            "input '{name}' is a scalar; feature enrichment fills inputs with a row dimension"
        )));
    };
    if batch >= 0 && batch as usize != rows {
        return Err(ApiError::BadRequest(format!(
            "input '{name}' takes {batch} rows; the request gives {rows} entity rows"
        )));
    }
    let free = rest.iter().filter(|d| **d < 0).count();
    if free > 1 {
        return Err(ApiError::BadRequest(format!(
            "input '{name}' has {free} free dimensions besides the rows; enrichment can size one"
        )));
    }
    let mut shape = Vec::with_capacity(spec.len());
    shape.push(rows as i64);
    shape.extend(rest.iter().map(|d| if *d < 0 { width as i64 } else { *d }));
    Ok(shape)
}

/// The elements of one input, accumulated exactly: floats as f64, integers and bools as
/// i64, BYTES as strings; encoded to the input's datatype at the end.
enum Acc {
    Float(DataType, Vec<f64>),
    Int(DataType, Vec<i64>),
    Bytes(Vec<Vec<u8>>),
}

impl Acc {
    fn new(dt: DataType) -> Acc {
        match dt {
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                Acc::Float(dt, Vec::new())
            }
            DataType::Bool
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64 => Acc::Int(dt, Vec::new()),
            DataType::Bytes => Acc::Bytes(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Acc::Float(_, v) => v.len(),
            Acc::Int(_, v) => v.len(),
            Acc::Bytes(v) => v.len(),
        }
    }

    fn push(&mut self, v: &Value, feature: &str) -> ApiResult<()> {
        let bad = |m: String| ApiError::BadRequest(format!("feature '{feature}': {m}"));
        match self {
            Acc::Float(_, out) => v.push_f64(out).map_err(bad),
            Acc::Int(_, out) => v.push_i64(out).map_err(bad),
            Acc::Bytes(out) => {
                out.push(match v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_json().to_string().into_bytes(),
                });
                Ok(())
            }
        }
    }

    fn push_default(&mut self, d: f64) -> ApiResult<()> {
        let at = self.len();
        self.insert_defaults(at, 1, d)
    }

    fn insert_defaults(&mut self, at: usize, n: usize, d: f64) -> ApiResult<()> {
        match self {
            Acc::Float(_, out) => {
                out.splice(at..at, std::iter::repeat_n(d, n));
            }
            Acc::Int(_, out) => {
                if d.fract() != 0.0 || !d.is_finite() {
                    return Err(ApiError::BadRequest(format!(
                        "default {d} is not an integer, for an integer input"
                    )));
                }
                out.splice(at..at, std::iter::repeat_n(d as i64, n));
            }
            Acc::Bytes(out) => {
                out.splice(at..at, std::iter::repeat_n(d.to_string().into_bytes(), n));
            }
        }
        Ok(())
    }

    fn finish(self) -> TensorData {
        macro_rules! ints {
            ($v:expr, $t:ty) => {
                // Out-of-range values saturate: the views' types are the contract, and a
                // value outside the input's range is a modelling matter, not the request's.
                $v.iter()
                    .flat_map(|x| {
                        ((*x).clamp(<$t>::MIN as i64, <$t>::MAX as i64) as $t).to_le_bytes()
                    })
                    .collect()
            };
        }
        match self {
            Acc::Float(dt, v) => TensorData::Raw(match dt {
                DataType::Fp16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f64(*x).to_le_bytes())
                    .collect(),
                DataType::Bf16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f64(*x).to_le_bytes())
                    .collect(),
                DataType::Fp32 => v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }),
            Acc::Int(dt, v) => TensorData::Raw(match dt {
                DataType::Bool => v.iter().map(|x| u8::from(*x != 0)).collect(),
                DataType::Int8 => ints!(v, i8),
                DataType::Int16 => ints!(v, i16),
                DataType::Int32 => ints!(v, i32),
                DataType::Uint8 => ints!(v, u8),
                DataType::Uint16 => ints!(v, u16),
                DataType::Uint32 => ints!(v, u32),
                DataType::Uint64 => v
                    .iter()
                    .flat_map(|x| ((*x).max(0) as u64).to_le_bytes())
                    .collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }),
            Acc::Bytes(v) => TensorData::Bytes(v),
        }
    }
}
