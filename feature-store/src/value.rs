//! Feature values and their types, entity keys, and event timestamps.
//!
//! Values travel as JSON (Kafka messages, REST, the Redis store's hash fields): a value is
//! decoded against its feature's declared type, so `1` is an `INT64` for an `int64` feature
//! and a float for a `float32` one, and a string where a number is declared is an error.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A feature's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Int64List,
    Float32List,
    Float64List,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int32 => "int32",
            ValueType::Int64 => "int64",
            ValueType::Float32 => "float32",
            ValueType::Float64 => "float64",
            ValueType::String => "string",
            ValueType::Int64List => "int64_list",
            ValueType::Float32List => "float32_list",
            ValueType::Float64List => "float64_list",
        }
    }

    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "bool" => ValueType::Bool,
            "int32" => ValueType::Int32,
            "int64" => ValueType::Int64,
            "float32" => ValueType::Float32,
            "float64" => ValueType::Float64,
            "string" => ValueType::String,
            "int64_list" => ValueType::Int64List,
            "float32_list" => ValueType::Float32List,
            "float64_list" => ValueType::Float64List,
            _ => return None,
        })
    }

    pub fn is_list(self) -> bool {
        matches!(
            self,
            ValueType::Int64List | ValueType::Float32List | ValueType::Float64List
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One feature value. `Null` is a row that exists without this feature.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Int64List(Vec<i64>),
    Float32List(Vec<f32>),
    Float64List(Vec<f64>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Decodes a JSON value as `ty`; JSON `null` is [`Value::Null`].
    pub fn from_json(ty: ValueType, v: &Json) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let want = || format!("expected {ty}, got {}", short(v));
        fn int(v: &Json, want: &dyn Fn() -> String) -> Result<i64, String> {
            v.as_i64().ok_or_else(want)
        }
        fn float(v: &Json, want: &dyn Fn() -> String) -> Result<f64, String> {
            v.as_f64().ok_or_else(want)
        }
        let list = || v.as_array().ok_or_else(want);
        Ok(match ty {
            ValueType::Bool => Value::Bool(v.as_bool().ok_or_else(want)?),
            ValueType::Int32 => Value::Int32(
                i32::try_from(int(v, &want)?).map_err(|_| format!("{v} overflows int32"))?,
            ),
            ValueType::Int64 => Value::Int64(int(v, &want)?),
            ValueType::Float32 => Value::Float32(float(v, &want)? as f32),
            ValueType::Float64 => Value::Float64(float(v, &want)?),
            ValueType::String => Value::String(v.as_str().ok_or_else(want)?.to_owned()),
            ValueType::Int64List => Value::Int64List(
                list()?
                    .iter()
                    .map(|x| int(x, &want))
                    .collect::<Result<_, _>>()?,
            ),
            ValueType::Float32List => Value::Float32List(
                list()?
                    .iter()
                    .map(|x| float(x, &want).map(|f| f as f32))
                    .collect::<Result<_, _>>()?,
            ),
            ValueType::Float64List => Value::Float64List(
                list()?
                    .iter()
                    .map(|x| float(x, &want))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::from(*b),
            Value::Int32(i) => Json::from(*i),
            Value::Int64(i) => Json::from(*i),
            Value::Float32(f) => Json::from(*f as f64),
            Value::Float64(f) => Json::from(*f),
            Value::String(s) => Json::from(s.as_str()),
            Value::Int64List(v) => Json::from(v.clone()),
            Value::Float32List(v) => v.iter().map(|f| Json::from(*f as f64)).collect(),
            Value::Float64List(v) => Json::from(v.clone()),
        }
    }

    /// How many numbers the value contributes to a tensor row (1 for a scalar).
    pub fn element_count(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Int64List(v) => v.len(),
            Value::Float32List(v) => v.len(),
            Value::Float64List(v) => v.len(),
            _ => 1,
        }
    }

    /// Appends the value's elements as `f64` (bools are 0/1; strings cannot).
    pub fn push_f64(&self, out: &mut Vec<f64>) -> Result<(), String> {
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push(f64::from(u8::from(*b))),
            Value::Int32(i) => out.push(f64::from(*i)),
            Value::Int64(i) => out.push(*i as f64),
            Value::Float32(f) => out.push(f64::from(*f)),
            Value::Float64(f) => out.push(*f),
            Value::String(_) => return Err("a string feature cannot fill a numeric tensor".into()),
            Value::Int64List(v) => out.extend(v.iter().map(|i| *i as f64)),
            Value::Float32List(v) => out.extend(v.iter().map(|f| f64::from(*f))),
            Value::Float64List(v) => out.extend_from_slice(v),
        }
        Ok(())
    }

    /// Appends the value's elements as `i64`, exactly (floats must be whole numbers).
    pub fn push_i64(&self, out: &mut Vec<i64>) -> Result<(), String> {
        let whole = |f: f64| {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Ok(f as i64)
            } else {
                Err(format!("{f} is not an integer"))
            }
        };
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push(i64::from(*b)),
            Value::Int32(i) => out.push(i64::from(*i)),
            Value::Int64(i) => out.push(*i),
            Value::Float32(f) => out.push(whole(f64::from(*f))?),
            Value::Float64(f) => out.push(whole(*f)?),
            Value::String(_) => return Err("a string feature cannot fill a numeric tensor".into()),
            Value::Int64List(v) => out.extend_from_slice(v),
            Value::Float32List(v) => {
                for f in v {
                    out.push(whole(f64::from(*f))?);
                }
            }
            Value::Float64List(v) => {
                for f in v {
                    out.push(whole(*f)?);
                }
            }
        }
        Ok(())
    }
}

/// A short rendering of a JSON value for error messages.
pub(crate) fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// Separates the values of a multi-column entity key (ASCII unit separator).
pub const KEY_SEPARATOR: char = '\u{1f}';

/// An entity key: the values of a view's join keys, in the view's order, as text. Integers
/// and strings with the same text are the same key (`42` and `"42"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey(String);

impl EntityKey {
    /// One join key's value: a JSON string or integer.
    pub fn part(v: &Json) -> Result<std::borrow::Cow<'_, str>, String> {
        match v {
            Json::String(s) if s.contains(KEY_SEPARATOR) => {
                Err("an entity key may not contain U+001F".into())
            }
            Json::String(s) => Ok(std::borrow::Cow::Borrowed(s)),
            Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string().into()),
            other => Err(format!(
                "an entity key must be a string or an integer, got {}",
                short(other)
            )),
        }
    }

    /// The key of one row from its join-key values, in the view's order.
    pub fn from_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> EntityKey {
        let mut s = String::new();
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                s.push(KEY_SEPARATOR);
            }
            s.push_str(p);
        }
        EntityKey(s)
    }

    pub fn single(s: impl Into<String>) -> EntityKey {
        EntityKey(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(KEY_SEPARATOR) {
            write!(f, "({})", self.0.replace(KEY_SEPARATOR, ", "))
        } else {
            write!(f, "'{}'", self.0)
        }
    }
}

/// Event time: microseconds since the Unix epoch (UTC).
pub type Micros = i64;

pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Parses an event timestamp: an RFC 3339 string in UTC (`2024-05-01T12:00:00.123Z`), or a
/// number of seconds, milliseconds, microseconds or nanoseconds since the epoch, told apart
/// by magnitude (any instant after 1973 is unambiguous).
pub fn parse_timestamp(v: &Json) -> Result<Micros, String> {
    match v {
        Json::String(s) => humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("timestamp '{s}' is not RFC 3339 UTC: {e}"))
            .and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .map_err(|_| format!("timestamp '{s}' is before 1970"))
            }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                let a = i.unsigned_abs();
                Ok(if a < 100_000_000_000 {
                    i.saturating_mul(1_000_000)
                } else if a < 100_000_000_000_000 {
                    i.saturating_mul(1_000)
                } else if a < 100_000_000_000_000_000 {
                    i
                } else {
                    i / 1_000
                })
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.abs() < 1e11 {
                    Ok((f * 1e6).round() as i64)
                } else {
                    Err(format!(
                        "timestamp {n}: fractional numbers are read as seconds since the epoch"
                    ))
                }
            }
        }
        other => Err(format!(
            "timestamp must be an RFC 3339 string or a number since the epoch, got {}",
            short(other)
        )),
    }
}

/// RFC 3339 (UTC, microseconds) for responses.
pub fn format_timestamp(t: Micros) -> String {
    let st = if t >= 0 {
        UNIX_EPOCH + Duration::from_micros(t as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_micros(st).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_decode_against_their_type() {
        assert_eq!(
            Value::from_json(ValueType::Float32, &json!(1)).unwrap(),
            Value::Float32(1.0)
        );
        assert_eq!(
            Value::from_json(ValueType::Int64, &json!(7)).unwrap(),
            Value::Int64(7)
        );
        assert_eq!(
            Value::from_json(ValueType::Float64List, &json!([1, 2.5])).unwrap(),
            Value::Float64List(vec![1.0, 2.5])
        );
        assert_eq!(
            Value::from_json(ValueType::String, &json!(null)).unwrap(),
            Value::Null
        );
        let e = Value::from_json(ValueType::Int64, &json!("7")).unwrap_err();
        assert!(e.contains("expected int64"), "{e}");
        assert!(Value::from_json(ValueType::Int32, &json!(1u64 << 40)).is_err());
        assert!(Value::from_json(ValueType::Int64, &json!(1.5)).is_err());
        for v in [
            Value::Float32(0.1),
            Value::Float32List(vec![0.1, -3.25]),
            Value::String("x".into()),
            Value::Bool(true),
        ] {
            let ty = match &v {
                Value::Float32(_) => ValueType::Float32,
                Value::Float32List(_) => ValueType::Float32List,
                Value::String(_) => ValueType::String,
                _ => ValueType::Bool,
            };
            assert_eq!(Value::from_json(ty, &v.to_json()).unwrap(), v);
        }
    }

    #[test]
    fn timestamps_in_any_unit() {
        let us = 1_700_000_000_123_456i64;
        assert_eq!(
            parse_timestamp(&json!(1_700_000_000)).unwrap(),
            1_700_000_000_000_000
        );
        assert_eq!(
            parse_timestamp(&json!(1_700_000_000_123i64)).unwrap(),
            1_700_000_000_123_000
        );
        assert_eq!(parse_timestamp(&json!(us)).unwrap(), us);
        assert_eq!(parse_timestamp(&json!(us * 1000)).unwrap(), us);
        assert_eq!(
            parse_timestamp(&json!(1_700_000_000.5)).unwrap(),
            1_700_000_000_500_000
        );
        let s = format_timestamp(us);
        assert_eq!(s, "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_timestamp(&json!(s)).unwrap(), us);
        assert!(parse_timestamp(&json!("yesterday")).is_err());
        assert!(parse_timestamp(&json!(true)).is_err());
    }

    #[test]
    fn entity_keys() {
        assert_eq!(EntityKey::part(&json!(42)).unwrap(), "42");
        assert_eq!(EntityKey::part(&json!("42")).unwrap(), "42");
        assert!(EntityKey::part(&json!(1.5)).is_err());
        let k = EntityKey::from_parts(["a", "b"]);
        assert_eq!(k.to_string(), "(a, b)");
        assert_eq!(EntityKey::single("u1").to_string(), "'u1'");
    }
}
