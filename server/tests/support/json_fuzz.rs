//! JSON inputs for the fuzz targets, shared by `server/tests/fuzz_parsers.rs` (in process)
//! and `tests/e2e/fuzz.rs` (through the binary), which include this file as a module.

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value nested a few levels: the awkward numbers (extremes, subnormals, small
/// integers that pass as sizes and dimensions), hostile strings (traversal, empty, any
/// text), and object keys drawn from `keys` (the fields a parser looks for) or made up.
pub fn any_json(
    keys: &'static [&'static str],
    strings: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let string = prop_oneof![
        prop::sample::select(strings).prop_map(str::to_owned),
        Just("../../etc/passwd".to_owned()),
        Just("%2e%2e".to_owned()),
        ".{0,16}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..70).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        string.prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(keys).prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Replaces the value `path` leads to in `doc` (each step an index into an array or an
/// object's values, modulo its length; the walk stops at a leaf) with `with`.
pub fn mutate(doc: &mut Value, path: &[usize], with: Value) {
    if let Some((&i, rest)) = path.split_first() {
        match doc {
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                return mutate(&mut a[i % n], rest, with);
            }
            Value::Object(o) if !o.is_empty() => {
                let n = o.len();
                return mutate(o.values_mut().nth(i % n).unwrap(), rest, with);
            }
            _ => {}
        }
    }
    *doc = with;
}
