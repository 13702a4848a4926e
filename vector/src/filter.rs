//! Payload filters in Qdrant's shape, parsed with messages that name the bad part, and
//! evaluated against a point's JSON payload.
//!
//! ```json
//! {"must": [{"key": "group", "match": {"value": 2}}],
//!  "should": [{"key": "tag", "match": {"any": ["a", "b"]}}],
//!  "must_not": [{"key": "price", "range": {"gt": 10, "lte": 20}}]}
//! ```
//!
//! A condition is a field condition (`key` with `match` — `value`, `any` or `except` — and/or
//! `range` — `gt`, `gte`, `lt`, `lte`), `{"has_id": [...]}`, `{"is_empty": {"key": k}}`,
//! `{"is_null": {"key": k}}`, or a nested filter. `must`: all hold; `must_not`: none holds;
//! `should`: when present, at least one holds. Keys are dotted paths into nested objects; when
//! the value at a key is an array, a condition holds if it holds for any element (Qdrant's
//! rule), and `match.value` on an array finds the element.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::point::PointId;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field {
        key: Vec<String>,
        matches: Option<Match>,
        range: Option<Range>,
    },
    HasId(HashSet<PointId>),
    IsEmpty(Vec<String>),
    IsNull(Vec<String>),
    Nested(Filter),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// Equal to this string, number or bool.
    Value(Value),
    /// Equal to one of these.
    Any(Vec<Value>),
    /// Equal to none of these.
    Except(Vec<Value>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Filter::from_json(&v).map_err(serde::de::Error::custom)
    }
}

fn err(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidFilter(format!("{path}: {msg}"))
}

impl Filter {
    /// Parses a filter; the error names the path of the bad part (`filter.must[0].match`).
    pub fn from_json(v: &Value) -> Result<Filter> {
        Self::parse(v, "filter")
    }

    fn parse(v: &Value, path: &str) -> Result<Filter> {
        let obj = v
            .as_object()
            .ok_or_else(|| err(path, "expected an object with must / should / must_not"))?;
        let mut f = Filter::default();
        for (k, val) in obj {
            let list = match k.as_str() {
                "must" => &mut f.must,
                "should" => &mut f.should,
                "must_not" => &mut f.must_not,
                other => {
                    return Err(err(
                        path,
                        format!("unknown field '{other}' (expected must, should, must_not)"),
                    ));
                }
            };
            let p = format!("{path}.{k}");
            match val {
                Value::Null => {}
                Value::Array(items) => {
                    for (i, c) in items.iter().enumerate() {
                        list.push(Condition::parse(c, &format!("{p}[{i}]"))?);
                    }
                }
                // Qdrant also accepts a single condition in place of a list.
                Value::Object(_) => list.push(Condition::parse(val, &p)?),
                _ => return Err(err(&p, "expected a list of conditions")),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Whether a point with this id and payload passes.
    pub fn matches(&self, id: &PointId, payload: Option<&Value>) -> bool {
        self.must.iter().all(|c| c.matches(id, payload))
            && !self.must_not.iter().any(|c| c.matches(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(id, payload)))
    }
}

fn key_path(v: &Value, path: &str) -> Result<Vec<String>> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.split('.').map(str::to_owned).collect()),
        _ => Err(err(path, "\"key\" must be a non-empty string")),
    }
}

fn match_value(v: &Value, path: &str) -> Result<Value> {
    match v {
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Ok(v.clone()),
        _ => Err(err(path, "expected a string, a number or a bool")),
    }
}

fn match_values(v: &Value, path: &str) -> Result<Vec<Value>> {
    let items = v
        .as_array()
        .ok_or_else(|| err(path, "expected a list of strings, numbers or bools"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| match_value(x, &format!("{path}[{i}]")))
        .collect()
}

impl Condition {
    fn parse(v: &Value, path: &str) -> Result<Condition> {
        let obj = v
            .as_object()
            .ok_or_else(|| err(path, "expected a condition object"))?;
        if obj.contains_key("must") || obj.contains_key("should") || obj.contains_key("must_not") {
            return Ok(Condition::Nested(Filter::parse(v, path)?));
        }
        if let Some(ids) = obj.get("has_id") {
            let ids: Vec<PointId> = serde_json::from_value(ids.clone())
                .map_err(|_| err(&format!("{path}.has_id"), "expected a list of point ids"))?;
            return Ok(Condition::HasId(ids.into_iter().collect()));
        }
        for (name, ctor) in [
            (
                "is_empty",
                Condition::IsEmpty as fn(Vec<String>) -> Condition,
            ),
            ("is_null", Condition::IsNull),
        ] {
            if let Some(inner) = obj.get(name) {
                let p = format!("{path}.{name}");
                let key = inner
                    .get("key")
                    .ok_or_else(|| err(&p, "expected {\"key\": ...}"))?;
                return Ok(ctor(key_path(key, &p)?));
            }
        }
        let key = obj.get("key").ok_or_else(|| {
            err(
                path,
                "a condition needs \"key\" with \"match\" or \"range\", or is has_id, is_empty, \
                 is_null, or a nested filter",
            )
        })?;
        let key = key_path(key, &format!("{path}.key"))?;
        let mut matches = None;
        let mut range = None;
        for (k, val) in obj {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "key" => {}
                "match" => matches = Some(Match::parse(val, &p)?),
                "range" => range = Some(Range::parse(val, &p)?),
                other => {
                    return Err(err(
                        path,
                        format!("unknown field '{other}' (expected key, match, range)"),
                    ));
                }
            }
        }
        if matches.is_none() && range.is_none() {
            return Err(err(path, "a field condition needs \"match\" or \"range\""));
        }
        Ok(Condition::Field {
            key,
            matches,
            range,
        })
    }

    fn matches(&self, id: &PointId, payload: Option<&Value>) -> bool {
        match self {
            Condition::Field {
                key,
                matches,
                range,
            } => {
                let Some(v) = lookup(payload, key) else {
                    // A missing field fails every match and range, `except` included (Qdrant).
                    return false;
                };
                matches.as_ref().is_none_or(|m| m.holds(v))
                    && range.as_ref().is_none_or(|r| r.holds(v))
            }
            Condition::HasId(ids) => ids.contains(id),
            Condition::IsEmpty(key) => match lookup(payload, key) {
                None | Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            },
            Condition::IsNull(key) => matches!(lookup(payload, key), Some(Value::Null)),
            Condition::Nested(f) => f.matches(id, payload),
        }
    }
}

fn lookup<'a>(payload: Option<&'a Value>, key: &[String]) -> Option<&'a Value> {
    let mut cur = payload?;
    for part in key {
        cur = cur
            .as_object()
            .and_then(|o: &Map<String, Value>| o.get(part))?;
    }
    Some(cur)
}

/// Scalar equality: numbers compare as numbers (`2` equals `2.0`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Applies `f` to the value, or to each element when it is an array.
fn any_elem(v: &Value, f: impl Fn(&Value) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(f),
        _ => f(v),
    }
}

impl Match {
    fn parse(v: &Value, path: &str) -> Result<Match> {
        let obj = v
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| err(path, "expected exactly one of value, any, except"))?;
        let (k, val) = obj.iter().next().expect("one entry");
        let p = format!("{path}.{k}");
        match k.as_str() {
            "value" => Ok(Match::Value(match_value(val, &p)?)),
            "any" => Ok(Match::Any(match_values(val, &p)?)),
            "except" => Ok(Match::Except(match_values(val, &p)?)),
            other => Err(err(
                path,
                format!("unknown match '{other}' (expected value, any, except)"),
            )),
        }
    }

    fn holds(&self, v: &Value) -> bool {
        match self {
            Match::Value(want) => any_elem(v, |x| scalar_eq(x, want)),
            Match::Any(set) => any_elem(v, |x| set.iter().any(|w| scalar_eq(x, w))),
            Match::Except(set) => match v {
                // An array matches `except` when none of its elements is in the set.
                Value::Array(items) => !items.iter().any(|x| set.iter().any(|w| scalar_eq(x, w))),
                _ => !set.iter().any(|w| scalar_eq(v, w)),
            },
        }
    }
}

impl Range {
    fn parse(v: &Value, path: &str) -> Result<Range> {
        let obj = v
            .as_object()
            .ok_or_else(|| err(path, "expected {gt, gte, lt, lte}"))?;
        let mut r = Range::default();
        for (k, val) in obj {
            let p = format!("{path}.{k}");
            let x = match val {
                Value::Null => None,
                Value::Number(n) => n.as_f64(),
                _ => return Err(err(&p, "expected a number")),
            };
            match k.as_str() {
                "gt" => r.gt = x,
                "gte" => r.gte = x,
                "lt" => r.lt = x,
                "lte" => r.lte = x,
                other => {
                    return Err(err(
                        path,
                        format!("unknown bound '{other}' (expected gt, gte, lt, lte)"),
                    ));
                }
            }
        }
        if r == Range::default() {
            return Err(err(path, "a range needs at least one of gt, gte, lt, lte"));
        }
        Ok(r)
    }

    fn holds(&self, v: &Value) -> bool {
        any_elem(v, |x| {
            let Some(x) = x.as_f64() else { return false };
            self.gt.is_none_or(|b| x > b)
                && self.gte.is_none_or(|b| x >= b)
                && self.lt.is_none_or(|b| x < b)
                && self.lte.is_none_or(|b| x <= b)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(v: Value) -> Filter {
        Filter::from_json(&v).unwrap()
    }

    fn ok(filter: &Filter, payload: Value) -> bool {
        filter.matches(&PointId::Num(1), Some(&payload))
    }

    #[test]
    fn must_should_must_not() {
        let flt = f(json!({
            "must": [{"key": "group", "match": {"value": 2}}],
            "should": [{"key": "tag", "match": {"any": ["a", "b"]}}, {"key": "vip", "match": {"value": true}}],
            "must_not": [{"key": "price", "range": {"gt": 10}}]
        }));
        assert!(ok(&flt, json!({"group": 2, "tag": "a", "price": 5})));
        assert!(ok(&flt, json!({"group": 2.0, "tag": "z", "vip": true})));
        assert!(
            !ok(&flt, json!({"group": 2, "tag": "z"})),
            "no should holds"
        );
        assert!(!ok(&flt, json!({"group": 3, "tag": "a"})), "must fails");
        assert!(
            !ok(&flt, json!({"group": 2, "tag": "b", "price": 11})),
            "must_not holds"
        );
        assert!(!flt.matches(&PointId::Num(1), None));
        assert!(
            f(json!({})).matches(&PointId::Num(1), None),
            "empty filter passes all"
        );
    }

    #[test]
    fn ranges_arrays_nested_paths() {
        let r = f(json!({"must": [{"key": "n", "range": {"gte": 1, "lt": 3}}]}));
        assert!(ok(&r, json!({"n": 1})));
        assert!(ok(&r, json!({"n": 2.5})));
        assert!(!ok(&r, json!({"n": 3})));
        assert!(!ok(&r, json!({"n": "2"})), "strings are not numbers");
        assert!(ok(&r, json!({"n": [7, 2]})), "any element of an array");
        let p = f(json!({"must": [{"key": "a.b", "match": {"value": "x"}}]}));
        assert!(ok(&p, json!({"a": {"b": "x"}})));
        assert!(!ok(&p, json!({"a": {"b": "y"}})));
        assert!(ok(&p, json!({"a": {"b": ["y", "x"]}})));
        let e = f(json!({"must": [{"key": "t", "match": {"except": ["a"]}}]}));
        assert!(ok(&e, json!({"t": "b"})));
        assert!(!ok(&e, json!({"t": "a"})));
        assert!(!ok(&e, json!({})), "missing field fails except");
        let nested = f(
            json!({"should": [{"must": [{"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 1}}]}, {"key": "c", "match": {"value": 1}}]}),
        );
        assert!(ok(&nested, json!({"a": 1, "b": 1})));
        assert!(ok(&nested, json!({"c": 1})));
        assert!(!ok(&nested, json!({"a": 1})));
    }

    #[test]
    fn ids_empty_null() {
        let h = f(json!({"must": [{"has_id": [1, "x"]}]}));
        assert!(h.matches(&PointId::Num(1), None));
        assert!(h.matches(&"x".into(), None));
        assert!(!h.matches(&PointId::Num(2), None));
        let e = f(json!({"must": [{"is_empty": {"key": "t"}}]}));
        assert!(ok(&e, json!({})));
        assert!(ok(&e, json!({"t": []})));
        assert!(ok(&e, json!({"t": null})));
        assert!(!ok(&e, json!({"t": [1]})));
        let n = f(json!({"must": [{"is_null": {"key": "t"}}]}));
        assert!(ok(&n, json!({"t": null})));
        assert!(!ok(&n, json!({})));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = |v: Value| Filter::from_json(&v).unwrap_err().to_string();
        assert!(e(json!({"must": [{"key": "g"}]})).contains("filter.must[0]"));
        assert!(
            e(json!({"must": [{"key": "g", "match": {"valu": 1}}]}))
                .contains("filter.must[0].match")
        );
        assert!(
            e(json!({"must": [{"key": "g", "range": {"gt": "x"}}]}))
                .contains("filter.must[0].range.gt")
        );
        assert!(e(json!({"mus": []})).contains("unknown field 'mus'"));
        assert!(e(json!([1])).contains("expected an object"));
        assert!(
            e(json!({"should": [{"key": "g", "match": {"any": [[1]]}}]}))
                .contains("filter.should[0].match.any[0]")
        );
        let via_serde = serde_json::from_value::<Filter>(json!({"must": 3})).unwrap_err();
        assert!(via_serde.to_string().contains("filter.must"), "{via_serde}");
    }
}
