//! What a model takes and returns, and the checks that a request fits it.

use std::fmt::Write as _;

use crate::datatype::DataType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One input or output of a model. `shape` is the full shape the backend sees, including the
/// batch dimension when the model batches; `-1` marks a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// A model's inputs and outputs, in the backend's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// True when every input and output has a variable first dimension, so requests can be
    /// concatenated along it.
    pub fn has_batch_dim(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
    }

    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|t| t.name == name)
    }

    /// Orders `named` inputs by the signature and checks each against its spec: presence,
    /// datatype, rank, fixed dimensions, and (when `max_batch_size > 0`) one batch size
    /// within the limit. Returns the inputs in signature order and the batch size (1 for
    /// models that do not batch).
    pub fn check_inputs(
        &self,
        named: Vec<(String, Tensor)>,
        max_batch_size: usize,
    ) -> Result<(Vec<Tensor>, usize)> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for (name, tensor) in named {
            let Some(i) = self.input_index(&name) else {
                return Err(Error::InvalidInput(format!(
                    "unexpected input '{name}': the model's inputs are {}",
                    self.input_names()
                )));
            };
            if slots[i].is_some() {
                return Err(Error::InvalidInput(format!(
                    "input '{name}' is given more than once"
                )));
            }
            slots[i] = Some(tensor);
        }
        let mut batch: Option<(usize, &str)> = None;
        let mut out = Vec::with_capacity(slots.len());
        for (spec, slot) in self.inputs.iter().zip(slots) {
            let Some(t) = slot else {
                return Err(Error::InvalidInput(format!(
                    "missing input '{}' ({} {}): the model's inputs are {}",
                    spec.name,
                    spec.datatype,
                    fmt_shape(&spec.shape),
                    self.input_names()
                )));
            };
            if t.datatype() != spec.datatype {
                return Err(Error::InvalidInput(format!(
                    "input '{}': datatype {} does not match the model's {}",
                    spec.name,
                    t.datatype(),
                    spec.datatype
                )));
            }
            check_shape(&spec.name, t.shape(), &spec.shape)?;
            if max_batch_size > 0 {
                let rows = t.shape()[0] as usize;
                if rows > max_batch_size {
                    return Err(Error::InvalidInput(format!(
                        "input '{}': batch size {rows} exceeds the model's max_batch_size {max_batch_size}",
                        spec.name
                    )));
                }
                match batch {
                    None => batch = Some((rows, &spec.name)),
                    Some((b, first)) if b != rows => {
                        return Err(Error::InvalidInput(format!(
                            "inputs disagree on the batch size: '{first}' has {b} rows, '{}' has {rows}",
                            spec.name
                        )));
                    }
                    Some(_) => {}
                }
            }
            out.push(t);
        }
        Ok((out, batch.map_or(1, |(b, _)| b)))
    }

    fn input_names(&self) -> String {
        let mut s = String::new();
        for (i, t) in self.inputs.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(s, "{sep}'{}'", t.name);
        }
        s
    }
}

fn check_shape(name: &str, got: &[i64], want: &[i64]) -> Result<()> {
    let mismatch = |detail: String| {
        Err(Error::InvalidInput(format!(
            "input '{name}': shape {} does not match the model's {} ({detail})",
            fmt_shape(got),
            fmt_shape(want)
        )))
    };
    if got.len() != want.len() {
        return mismatch(format!(
            "expected {} dimensions, got {}",
            want.len(),
            got.len()
        ));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g < 0 {
            return mismatch(format!("dimension {i} is negative"));
        }
        if w >= 0 && g != w {
            return mismatch(format!("dimension {i} must be {w}"));
        }
    }
    Ok(())
}

/// `[-1, 64]` style, as the protocol writes shapes.
pub fn fmt_shape(shape: &[i64]) -> String {
    let mut s = String::from("[");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "a".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 4],
                },
                TensorSpec {
                    name: "b".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1, -1],
                },
            ],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![-1],
            }],
        }
    }

    fn t(dt: DataType, shape: Vec<i64>) -> Tensor {
        let n: i64 = shape.iter().product();
        Tensor::new(
            dt,
            shape,
            TensorData::Raw(vec![0; n as usize * dt.size().unwrap()].into()),
        )
        .unwrap()
    }

    #[test]
    fn orders_inputs_and_reports_batch() {
        let (ins, batch) = sig()
            .check_inputs(
                vec![
                    ("b".into(), t(DataType::Int64, vec![3, 7])),
                    ("a".into(), t(DataType::Fp32, vec![3, 4])),
                ],
                8,
            )
            .unwrap();
        assert_eq!(batch, 3);
        assert_eq!(ins[0].datatype(), DataType::Fp32);
        assert!(sig().has_batch_dim());
    }

    fn err(named: Vec<(&str, Tensor)>, max: usize) -> String {
        let named = named.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        sig().check_inputs(named, max).unwrap_err().to_string()
    }

    #[test]
    fn explains_what_is_wrong() {
        let a = || t(DataType::Fp32, vec![2, 4]);
        let b = || t(DataType::Int64, vec![2, 1]);
        assert!(err(vec![("a", a())], 8).contains("missing input 'b'"));
        assert!(err(vec![("a", a()), ("b", b()), ("c", b())], 8).contains("unexpected input 'c'"));
        assert!(
            err(vec![("a", t(DataType::Fp64, vec![2, 4])), ("b", b())], 8)
                .contains("datatype FP64 does not match the model's FP32")
        );
        assert!(
            err(vec![("a", t(DataType::Fp32, vec![2, 5])), ("b", b())], 8)
                .contains("dimension 1 must be 4")
        );
        assert!(
            err(vec![("a", t(DataType::Fp32, vec![8])), ("b", b())], 8)
                .contains("expected 2 dimensions")
        );
        assert!(
            err(vec![("a", a()), ("b", t(DataType::Int64, vec![3, 1]))], 8)
                .contains("disagree on the batch size")
        );
        assert!(
            err(vec![("a", a()), ("b", b())], 1).contains("exceeds the model's max_batch_size 1")
        );
    }
}
