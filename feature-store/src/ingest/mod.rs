//! Stream ingestion into the online store: [`kafka`] (the consumer-group ingester), the
//! message [`decode`]r it uses, and its Prometheus [`metrics`].

pub mod kafka;
pub mod metrics;

use std::sync::Arc;

use serde_json::Value as Json;

use crate::store::Row;
use crate::view::FeatureView;

/// Decodes one message for every view fed by its topic: one row per view, or the reason the
/// message is malformed (it then goes to the dead-letter topic whole, for no view).
pub fn decode(views: &[Arc<FeatureView>], payload: Option<&[u8]>) -> Result<Vec<Row>, String> {
    let payload = payload.ok_or("the message has no payload")?;
    let json: Json = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", crate::value::short(&json)))?;
    views
        .iter()
        .map(|v| {
            v.decode_row(obj, None).map_err(|m| {
                if views.len() > 1 {
                    format!("feature view '{}': {m}", v.name)
                } else {
                    m
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ViewsFile;

    #[test]
    fn malformed_messages_are_explained() {
        let views: Vec<Arc<FeatureView>> = ViewsFile::parse(
            "[views.v]\nentities = [\"k\"]\nfeatures = [{name = \"a\", type = \"int64\"}]\n[views.v.source]\ntopic = \"t\"\n",
            "t",
        )
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
        let e = |p: &[u8]| decode(&views, Some(p)).unwrap_err();
        assert!(e(b"{").starts_with("not JSON"));
        assert!(e(b"[1]").starts_with("expected a JSON object"));
        assert!(e(br#"{"k": 1, "event_timestamp": 5, "a": "x"}"#).contains("feature 'a'"));
        assert!(decode(&views, None).is_err());
        let rows = decode(
            &views,
            Some(br#"{"k": "u", "event_timestamp": 1700000000000, "a": 2}"#),
        )
        .unwrap();
        assert_eq!(rows[0].key.as_str(), "u");
    }
}
