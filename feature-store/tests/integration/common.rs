//! Shared helpers: views, events, bounded waits.

use std::future::Future;
use std::time::{Duration, Instant};

use feature_store::view::{FeatureView, ViewsFile};

/// A view `name` keyed by `user_id` with `clicks` (int64) and `score` (float64), fed by
/// `topic` when given.
pub fn view(name: &str, topic: Option<&str>) -> FeatureView {
    let mut toml = format!(
        "[views.{name}]\nentities = [\"user_id\"]\nfeatures = [{{ name = \"clicks\", type = \"int64\" }}, {{ name = \"score\", type = \"float64\" }}]\n"
    );
    if let Some(t) = topic {
        toml.push_str(&format!(
            "[views.{name}.source]\ntopic = \"{t}\"\ntimestamp_field = \"ts\"\n"
        ));
    }
    ViewsFile::parse(&toml, "test").unwrap().remove(0)
}

/// One event for `view`: `clicks = n`, `score = n / 2`, at event time `ts` (µs).
pub fn event(user: &str, ts: i64, n: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "user_id": user, "ts": ts, "clicks": n, "score": n as f64 / 2.0
    }))
    .unwrap()
}

/// Polls `check` until it returns `Some` (at most 60 s).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
