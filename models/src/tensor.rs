//! Tensors as they travel through inferd: a datatype, a shape, and the elements.
//!
//! Fixed-size elements are kept as one packed little-endian byte buffer (the layout of the
//! V2 binary extension, of gRPC `raw_*_contents` and of ONNX Runtime's CPU tensors), so that
//! batching is a concatenation of buffers and splitting a batch is slicing — no per-element
//! work and no per-datatype code on the hot path. `BYTES` elements are kept one `Vec<u8>` each.

use bytes::Bytes;

use crate::datatype::DataType;

/// Why a tensor could not be built from what a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has a negative dimension")]
    NegativeDim { shape: Vec<i64> },
    #[error("shape {shape:?} has too many elements")]
    TooLarge { shape: Vec<i64> },
    #[error("{datatype} tensor of shape {shape:?} needs {expected} bytes, got {actual}")]
    ByteLength {
        datatype: DataType,
        shape: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    #[error("tensor of shape {shape:?} needs {expected} elements, got {actual}")]
    ElementCount {
        shape: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    #[error("BYTES data is malformed: {0}")]
    BadBytesEncoding(String),
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Fixed-size elements packed little-endian, row-major. `BOOL` is one byte (0 or 1).
    /// A shared buffer: a tensor can borrow the request's bytes (gRPC's
    /// `raw_input_contents`), clones are a reference count, and a batch's outputs are split
    /// into views of one buffer, none of it copied. No alignment is promised: read elements
    /// with `from_le_bytes`, never by casting the slice.
    Raw(Bytes),
    /// `BYTES` elements, row-major.
    Bytes(Vec<Vec<u8>>),
}

/// A tensor: datatype, shape and row-major elements, consistent with each other.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    datatype: DataType,
    shape: Vec<i64>,
    data: TensorData,
}

/// Number of elements of `shape`, checking for negative dimensions and overflow.
pub fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| TensorError::NegativeDim {
            shape: shape.to_vec(),
        })?;
        n = n.checked_mul(d).ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
        })?;
    }
    Ok(n)
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly the elements `shape` calls for.
    pub fn new(datatype: DataType, shape: Vec<i64>, data: TensorData) -> Result<Self, TensorError> {
        let n = element_count(&shape)?;
        match (&data, datatype.size()) {
            (TensorData::Raw(bytes), Some(size)) => {
                let expected = n.checked_mul(size).ok_or_else(|| TensorError::TooLarge {
                    shape: shape.clone(),
                })?;
                if bytes.len() != expected {
                    return Err(TensorError::ByteLength {
                        datatype,
                        shape,
                        expected,
                        actual: bytes.len(),
                    });
                }
            }
            (TensorData::Bytes(items), None) => {
                if items.len() != n {
                    return Err(TensorError::ElementCount {
                        shape,
                        expected: n,
                        actual: items.len(),
                    });
                }
            }
            (TensorData::Raw(_), None) => {
                return Err(TensorError::BadBytesEncoding(
                    "BYTES tensor given packed fixed-size data".into(),
                ));
            }
            (TensorData::Bytes(_), Some(_)) => {
                return Err(TensorError::BadBytesEncoding(format!(
                    "{datatype} tensor given BYTES elements"
                )));
            }
        }
        Ok(Tensor {
            datatype,
            shape,
            data,
        })
    }

    /// Builds a tensor from the wire's raw layout: packed little-endian elements, or for
    /// `BYTES` each element as a 4-byte little-endian length followed by its bytes.
    pub fn from_raw(datatype: DataType, shape: Vec<i64>, raw: &[u8]) -> Result<Self, TensorError> {
        let data = match datatype {
            DataType::Bytes => TensorData::Bytes(decode_bytes_elements(raw)?),
            _ => TensorData::Raw(Bytes::copy_from_slice(raw)),
        };
        Tensor::new(datatype, shape, data)
    }

    /// [`Tensor::from_raw`] keeping the buffer itself for packed datatypes (no copy).
    pub fn from_raw_bytes(
        datatype: DataType,
        shape: Vec<i64>,
        raw: Bytes,
    ) -> Result<Self, TensorError> {
        let data = match datatype {
            DataType::Bytes => TensorData::Bytes(decode_bytes_elements(&raw)?),
            _ => TensorData::Raw(raw),
        };
        Tensor::new(datatype, shape, data)
    }

    pub fn datatype(&self) -> DataType {
        self.datatype
    }

    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_parts(self) -> (DataType, Vec<i64>, TensorData) {
        (self.datatype, self.shape, self.data)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len() / self.datatype.size().unwrap_or(1),
            TensorData::Bytes(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes, as the wire's raw layout encodes it.
    pub fn raw_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Bytes(items) => items.iter().map(|i| 4 + i.len()).sum(),
        }
    }

    /// Appends the wire's raw layout of the data to `out` (see [`Tensor::from_raw`]).
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        match &self.data {
            TensorData::Raw(b) => out.extend_from_slice(b),
            TensorData::Bytes(items) => {
                out.reserve(self.raw_len());
                for item in items {
                    out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                    out.extend_from_slice(item);
                }
            }
        }
    }

    /// The wire's raw layout of the data.
    pub fn to_raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_raw(&mut out);
        out
    }

    /// The wire's raw layout of the data, moving the buffer out when it already is that
    /// layout (every datatype but `BYTES`).
    pub fn into_raw(self) -> Bytes {
        match self.data {
            TensorData::Raw(b) => b,
            TensorData::Bytes(_) => self.to_raw().into(),
        }
    }

    /// The rows of a 2-D FP32 tensor; `None` for any other datatype or rank.
    pub fn f32_rows(&self) -> Option<Vec<Vec<f32>>> {
        let (TensorData::Raw(b), DataType::Fp32, &[_, dim]) =
            (&self.data, self.datatype, &self.shape[..])
        else {
            return None;
        };
        let dim = usize::try_from(dim).ok()?.max(1);
        Some(
            b.chunks_exact(dim * 4)
                .map(|row| {
                    row.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                })
                .collect(),
        )
    }

    /// Concatenates tensors of one datatype along the first dimension. The caller has checked
    /// that the remaining dimensions agree (the batcher only groups such requests).
    pub fn concat(parts: &[&Tensor]) -> Tensor {
        let first = parts[0];
        if parts.len() == 1 {
            return first.clone();
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.shape[0]).sum();
        let data = match &first.data {
            TensorData::Raw(_) => {
                let mut buf = Vec::with_capacity(parts.iter().map(|t| t.raw_len()).sum());
                for t in parts {
                    if let TensorData::Raw(b) = &t.data {
                        buf.extend_from_slice(b);
                    }
                }
                TensorData::Raw(buf.into())
            }
            TensorData::Bytes(_) => {
                let mut items = Vec::with_capacity(parts.iter().map(|t| t.len()).sum());
                for t in parts {
                    if let TensorData::Bytes(b) = &t.data {
                        items.extend(b.iter().cloned());
                    }
                }
                TensorData::Bytes(items)
            }
        };
        Tensor {
            datatype: first.datatype,
            shape,
            data,
        }
    }

    /// Splits along the first dimension into pieces of `sizes[i]` rows each.
    ///
    /// Returns `None` if the tensor has no first dimension or `sizes` does not add up to it.
    pub fn split(self, sizes: &[usize]) -> Option<Vec<Tensor>> {
        if sizes.len() == 1 {
            return (self.shape.first().copied() == Some(sizes[0] as i64)).then_some(vec![self]);
        }
        let rows = usize::try_from(*self.shape.first()?).ok()?;
        if sizes.iter().sum::<usize>() != rows {
            return None;
        }
        let row_elems = self.len().checked_div(rows).unwrap_or(0);
        let mut out = Vec::with_capacity(sizes.len());
        match self.data {
            TensorData::Raw(buf) => {
                let row_bytes = row_elems * self.datatype.size().unwrap_or(1);
                let mut offset = 0;
                for &n in sizes {
                    let mut shape = self.shape.clone();
                    shape[0] = n as i64;
                    let end = offset + n * row_bytes;
                    out.push(Tensor {
                        datatype: self.datatype,
                        shape,
                        data: TensorData::Raw(buf.slice(offset..end)),
                    });
                    offset = end;
                }
            }
            TensorData::Bytes(items) => {
                let mut items = items.into_iter();
                for &n in sizes {
                    let mut shape = self.shape.clone();
                    shape[0] = n as i64;
                    out.push(Tensor {
                        datatype: self.datatype,
                        shape,
                        data: TensorData::Bytes(items.by_ref().take(n * row_elems).collect()),
                    });
                }
            }
        }
        Some(out)
    }
}

/// Decodes `BYTES` elements from their wire layout (4-byte LE length + bytes, repeated).
pub fn decode_bytes_elements(mut raw: &[u8]) -> Result<Vec<Vec<u8>>, TensorError> {
    let mut items = Vec::new();
    while !raw.is_empty() {
        if raw.len() < 4 {
            return Err(TensorError::BadBytesEncoding(format!(
                "{} trailing bytes cannot hold a 4-byte length prefix",
                raw.len()
            )));
        }
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        raw = &raw[4..];
        if raw.len() < len {
            return Err(TensorError::BadBytesEncoding(format!(
                "element {} declares {len} bytes but only {} remain",
                items.len(),
                raw.len()
            )));
        }
        items.push(raw[..len].to_vec());
        raw = &raw[len..];
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new(DataType::Fp32, shape, TensorData::Raw(bytes)).unwrap()
    }

    #[test]
    fn new_checks_lengths() {
        assert!(matches!(
            Tensor::new(
                DataType::Fp32,
                vec![2, 2],
                TensorData::Raw(vec![0; 15].into())
            ),
            Err(TensorError::ByteLength {
                expected: 16,
                actual: 15,
                ..
            })
        ));
        assert!(matches!(
            Tensor::new(DataType::Int8, vec![-1, 2], TensorData::Raw(vec![].into())),
            Err(TensorError::NegativeDim { .. })
        ));
        assert!(matches!(
            Tensor::new(
                DataType::Int8,
                vec![i64::MAX, i64::MAX],
                TensorData::Raw(vec![].into())
            ),
            Err(TensorError::TooLarge { .. })
        ));
        assert!(Tensor::new(DataType::Bytes, vec![2], TensorData::Bytes(vec![vec![1]])).is_err());
        assert!(Tensor::new(DataType::Fp32, vec![0, 4], TensorData::Raw(vec![].into())).is_ok());
    }

    #[test]
    fn into_raw_moves_packed_data_and_encodes_bytes() {
        let t = f32s(vec![2], &[1.0, 2.0]);
        let expected = t.to_raw();
        let TensorData::Raw(buf) = t.data() else {
            unreachable!()
        };
        let ptr = buf.as_ptr();
        let raw = t.into_raw();
        assert_eq!(raw, expected);
        assert_eq!(raw.as_ptr(), ptr, "the buffer itself, not a copy");
        let s = Tensor::new(
            DataType::Bytes,
            vec![2],
            TensorData::Bytes(vec![b"ab".to_vec(), vec![]]),
        )
        .unwrap();
        assert_eq!(s.to_raw(), [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(s.clone().into_raw(), s.to_raw());
    }

    #[test]
    fn f32_rows_of_a_matrix_only() {
        assert_eq!(
            f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).f32_rows(),
            Some(vec![vec![1.0, 2.0], vec![3.0, 4.0]])
        );
        assert_eq!(f32s(vec![4], &[1.0, 2.0, 3.0, 4.0]).f32_rows(), None);
        let ints = Tensor::new(
            DataType::Int32,
            vec![1, 1],
            TensorData::Raw(vec![0; 4].into()),
        )
        .unwrap();
        assert_eq!(ints.f32_rows(), None);
    }

    #[test]
    fn bytes_round_trip() {
        let t = Tensor::new(
            DataType::Bytes,
            vec![3],
            TensorData::Bytes(vec![b"a".to_vec(), vec![], "日本".as_bytes().to_vec()]),
        )
        .unwrap();
        let raw = t.to_raw();
        assert_eq!(raw.len(), t.raw_len());
        assert_eq!(Tensor::from_raw(DataType::Bytes, vec![3], &raw).unwrap(), t);
        assert!(decode_bytes_elements(&raw[..raw.len() - 1]).is_err());
        assert!(decode_bytes_elements(&[1, 0]).is_err());
    }

    #[test]
    fn concat_then_split_restores_parts() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let joined = Tensor::concat(&[&a, &b]);
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(joined.clone().split(&[1, 2]).unwrap(), vec![a, b]);
        assert!(joined.split(&[1, 1]).is_none());

        let s = |v: &[&str]| {
            let items: Vec<Vec<u8>> = v.iter().map(|s| s.as_bytes().to_vec()).collect();
            Tensor::new(
                DataType::Bytes,
                vec![v.len() as i64],
                TensorData::Bytes(items),
            )
            .unwrap()
        };
        let (x, y) = (s(&["a"]), s(&["b", "c"]));
        assert_eq!(
            Tensor::concat(&[&x, &y]).split(&[1, 2]).unwrap(),
            vec![x, y]
        );
    }
}
