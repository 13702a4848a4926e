//! The binary encoding of points shared by the write-ahead log and snapshots (little endian):
//!
//! ```text
//! id      = 0u8 u64 | 1u8 u32-len bytes
//! point   = id  u32-dim f32*dim  u32-len payload-json (len 0: no payload)
//! ```

use serde_json::Value;

use crate::error::{Error, Result};
use crate::point::PointId;

/// A point as stored: validated, normalised for cosine.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Option<Value>,
}

pub fn put_u32(buf: &mut Vec<u8>, x: u32) {
    buf.extend_from_slice(&x.to_le_bytes());
}

pub fn put_u64(buf: &mut Vec<u8>, x: u64) {
    buf.extend_from_slice(&x.to_le_bytes());
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("lengths are bounded well below 4 GiB by request limits")
}

pub fn put_id(buf: &mut Vec<u8>, id: &PointId) {
    match id {
        PointId::Num(n) => {
            buf.push(0);
            put_u64(buf, *n);
        }
        PointId::Str(s) => {
            buf.push(1);
            put_u32(buf, len32(s.len()));
            buf.extend_from_slice(s.as_bytes());
        }
    }
}

pub fn put_point(buf: &mut Vec<u8>, id: &PointId, vector: &[f32], payload: Option<&Value>) {
    put_id(buf, id);
    put_u32(buf, len32(vector.len()));
    buf.reserve(vector.len() * 4);
    for x in vector {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    match payload {
        Some(p) => {
            let json = serde_json::to_vec(p).expect("a JSON value serialises");
            put_u32(buf, len32(json.len()));
            buf.extend_from_slice(&json);
        }
        None => put_u32(buf, 0),
    }
}

/// Reads what the `put_*` functions wrote; every short or malformed read is [`Error::Corrupt`].
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "record ends early (wanted {n} bytes at {})",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn id(&mut self) -> Result<PointId> {
        match self.u8()? {
            0 => Ok(PointId::Num(self.u64()?)),
            1 => {
                let n = self.u32()? as usize;
                let s = std::str::from_utf8(self.bytes(n)?)
                    .map_err(|_| Error::Corrupt("point id is not UTF-8".into()))?;
                Ok(PointId::Str(s.to_owned()))
            }
            t => Err(Error::Corrupt(format!("unknown point id tag {t}"))),
        }
    }

    pub fn point(&mut self) -> Result<StoredPoint> {
        let id = self.id()?;
        let dim = self.u32()? as usize;
        let raw = self.bytes(
            dim.checked_mul(4)
                .ok_or_else(|| Error::Corrupt("dimension overflows".into()))?,
        )?;
        let vector = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let n = self.u32()? as usize;
        let payload = if n == 0 {
            None
        } else {
            Some(
                serde_json::from_slice(self.bytes(n)?)
                    .map_err(|e| Error::Corrupt(format!("payload of point {id}: {e}")))?,
            )
        };
        Ok(StoredPoint {
            id,
            vector,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trip() {
        let pts = [
            StoredPoint {
                id: PointId::Num(7),
                vector: vec![1.0, -2.5],
                payload: Some(json!({"a": [1, "x"]})),
            },
            StoredPoint {
                id: "ü-id".into(),
                vector: vec![],
                payload: None,
            },
        ];
        let mut buf = Vec::new();
        for p in &pts {
            put_point(&mut buf, &p.id, &p.vector, p.payload.as_ref());
        }
        let mut r = Reader::new(&buf);
        assert_eq!(r.point().unwrap(), pts[0]);
        assert_eq!(r.point().unwrap(), pts[1]);
        assert!(r.is_empty());
        let mut short = Reader::new(&buf[..buf.len() - 3]);
        short.point().unwrap();
        assert!(matches!(short.point(), Err(Error::Corrupt(_))));
    }
}
