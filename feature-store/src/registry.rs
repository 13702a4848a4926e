//! The set of feature views: read lock-free by every request (`arc-swap`), changed by the
//! feature-view file at start and by `PUT`/`DELETE /api/feature-views/{name}`.
//!
//! Views defined through the API are written atomically (temp file, fsync, rename) to
//! `<data-dir>/feature-views.json` and come back after a restart, taking precedence over the
//! file's view of the same name. Every change bumps a [`tokio::sync::watch`] counter, which
//! the Kafka ingester follows to change its subscription.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::view::{FeatureView, FeatureViewSpec};

/// Where a view was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Api,
}

/// One immutable snapshot of the views.
#[derive(Debug, Default)]
pub struct Views {
    by_name: BTreeMap<String, (Arc<FeatureView>, Origin)>,
    by_topic: HashMap<String, Vec<Arc<FeatureView>>>,
}

impl Views {
    fn build(by_name: BTreeMap<String, (Arc<FeatureView>, Origin)>) -> Views {
        let mut by_topic: HashMap<String, Vec<Arc<FeatureView>>> = HashMap::new();
        for (v, _) in by_name.values() {
            if let Some(t) = v.topic() {
                by_topic
                    .entry(t.to_owned())
                    .or_default()
                    .push(Arc::clone(v));
            }
        }
        Views { by_name, by_topic }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<FeatureView>> {
        self.by_name.get(name).map(|(v, _)| v)
    }

    pub fn require(&self, name: &str) -> Result<&Arc<FeatureView>> {
        self.get(name)
            .ok_or_else(|| Error::ViewNotFound(name.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<FeatureView>> {
        self.by_name.values().map(|(v, _)| v)
    }

    /// The views fed by `topic`.
    pub fn for_topic(&self, topic: &str) -> &[Arc<FeatureView>] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Every source topic, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.by_topic.keys().cloned().collect();
        t.sort();
        t
    }
}

pub struct ViewRegistry {
    current: ArcSwap<Views>,
    persist: Option<PathBuf>,
    changes: watch::Sender<u64>,
    /// Serialises changes (read-modify-write of the snapshot and the file).
    write: Mutex<()>,
}

const PERSIST_FILE: &str = "feature-views.json";

impl ViewRegistry {
    /// `file_views` from the feature-view file; `data_dir`, when given, holds the views
    /// defined through the API.
    pub fn new(file_views: Vec<FeatureView>, data_dir: Option<&Path>) -> Result<ViewRegistry> {
        let mut by_name = BTreeMap::new();
        for v in file_views {
            by_name.insert(v.name.clone(), (Arc::new(v), Origin::File));
        }
        let persist = data_dir.map(|d| d.join(PERSIST_FILE));
        if let Some(path) = persist.as_deref() {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let specs: BTreeMap<String, FeatureViewSpec> =
                        serde_json::from_slice(&bytes)
                            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                    for (name, spec) in specs {
                        let v = FeatureView::new(&name, spec)?;
                        by_name.insert(name, (Arc::new(v), Origin::Api));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: path.into(),
                        source,
                    });
                }
            }
        }
        Ok(ViewRegistry {
            current: ArcSwap::from_pointee(Views::build(by_name)),
            persist,
            changes: watch::Sender::new(0),
            write: Mutex::new(()),
        })
    }

    /// The current views (a cheap snapshot: hold it for one request).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Views>> {
        self.current.load()
    }

    pub fn snapshot_full(&self) -> Arc<Views> {
        self.current.load_full()
    }

    /// A receiver that changes whenever the views do.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Creates or replaces a view. Returns the previous definition, if any.
    pub fn put(&self, view: FeatureView) -> Result<Option<Arc<FeatureView>>> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_name = self.current.load().by_name.clone();
        let prev = by_name.insert(view.name.clone(), (Arc::new(view), Origin::Api));
        self.persist(&by_name)?;
        self.current.store(Arc::new(Views::build(by_name)));
        self.changes.send_modify(|n| *n += 1);
        Ok(prev.map(|(v, _)| v))
    }

    /// Deletes a view defined through the API.
    pub fn delete(&self, name: &str) -> Result<Arc<FeatureView>> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_name = self.current.load().by_name.clone();
        match by_name.get(name) {
            None => return Err(Error::ViewNotFound(name.into())),
            Some((_, Origin::File)) => {
                return Err(Error::InvalidRequest(format!(
                    "feature view '{name}' is defined in the feature-view file; remove it there"
                )));
            }
            Some((_, Origin::Api)) => {}
        }
        let (old, _) = by_name.remove(name).expect("present");
        self.persist(&by_name)?;
        self.current.store(Arc::new(Views::build(by_name)));
        self.changes.send_modify(|n| *n += 1);
        Ok(old)
    }

    fn persist(&self, by_name: &BTreeMap<String, (Arc<FeatureView>, Origin)>) -> Result<()> {
        let Some(path) = self.persist.as_deref() else {
            return Ok(());
        };
        let api: BTreeMap<&str, &FeatureViewSpec> = by_name
            .iter()
            .filter(|(_, (_, o))| *o == Origin::Api)
            .map(|(n, (v, _))| (n.as_str(), &v.spec))
            .collect();
        let bytes = serde_json::to_vec_pretty(&api).expect("views serialise");
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ViewsFile;

    fn spec(topic: &str) -> FeatureViewSpec {
        serde_json::from_value(serde_json::json!({
            "entities": ["k"], "features": [{"name": "a", "type": "int64"}],
            "source": {"topic": topic}
        }))
        .unwrap()
    }

    #[test]
    fn api_views_survive_a_restart_and_file_views_cannot_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let file = ViewsFile::parse(
            "[views.f]\nentities = [\"k\"]\nfeatures = [{name = \"a\", type = \"int64\"}]\n",
            "t",
        )
        .unwrap();
        let r = ViewRegistry::new(file.clone(), Some(dir.path())).unwrap();
        let mut rx = r.subscribe();
        r.put(FeatureView::new("v", spec("t1")).unwrap()).unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(r.snapshot().topics(), ["t1"]);
        assert_eq!(r.snapshot().for_topic("t1")[0].name, "v");
        let e = r.delete("f").unwrap_err().to_string();
        assert!(e.contains("feature-view file"), "{e}");

        let r2 = ViewRegistry::new(file, Some(dir.path())).unwrap();
        assert!(r2.snapshot().get("v").is_some());
        assert!(r2.snapshot().get("f").is_some());
        r2.delete("v").unwrap();
        assert!(matches!(r2.delete("v"), Err(Error::ViewNotFound(_))));
        let r3 = ViewRegistry::new(Vec::new(), Some(dir.path())).unwrap();
        assert!(r3.snapshot().get("v").is_none());
    }
}
