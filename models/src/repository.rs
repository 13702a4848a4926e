//! The model repository: Triton's layout on disk, and the set of loaded versions that
//! requests are routed to.
//!
//! ```text
//! <root>/<model>/config.toml       optional (see `config`)
//! <root>/<model>/<version>/model.onnx
//! ```
//!
//! Version directories are positive integers (names with a leading zero are ignored, as
//! Triton does). Which versions load is the model's version policy (default: the latest).
//! A model or version that fails to load is kept, `UNAVAILABLE` with its reason, while the
//! rest serve.
//!
//! The served set is an immutable map behind an `ArcSwap`: a request takes an
//! `Arc<ServedVersion>` without locking, and keeps the version alive until it finishes, so a
//! reload or unload never disturbs requests in flight. Writers (load, unload) are serialised
//! by a mutex and publish a new map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::backends::onnx::{OnnxModel, OnnxOptions};
use crate::batcher::{BatchSettings, Batcher, Job, JobReceiver};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::metrics::{FailureReason, Metrics, VersionMetrics};
use crate::model::Model;
use crate::signature::Signature;
use crate::stats::ModelStats;
use crate::tensor::{Tensor, TensorData};

const DEFAULT_MODEL_FILENAME: &str = "model.onnx";
/// `max_batch_size` for a graph whose every input and output has a variable first dimension,
/// when `config.toml` sets none.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;

/// A loaded, ready model version.
pub struct ServedVersion {
    pub model: String,
    pub version: u64,
    pub version_label: String,
    pub signature: Signature,
    /// 0 when the model does not batch.
    pub max_batch_size: usize,
    pub config: ModelConfig,
    pub instances: usize,
    pub intra_op_threads: usize,
    pub load_duration: Duration,
    pub stats: Arc<ModelStats>,
    pub metrics: VersionMetrics,
    batcher: Batcher,
}

impl ServedVersion {
    /// Triton's platform name for the backend.
    pub fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    pub fn backend(&self) -> &'static str {
        "onnxruntime"
    }

    pub fn batch_settings(&self) -> &BatchSettings {
        self.batcher.settings()
    }

    pub fn queued(&self) -> usize {
        self.batcher.queued()
    }

    /// Checks named inputs against the signature and queues them. Never waits.
    pub fn submit(
        &self,
        inputs: Vec<(String, Tensor)>,
        priority: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<JobReceiver> {
        let checked = self.signature.check_inputs(inputs, self.max_batch_size);
        let (inputs, rows) = checked.inspect_err(|_| {
            self.metrics.failure(FailureReason::Invalid).inc();
        })?;
        self.batcher.submit(Job {
            inputs,
            rows,
            priority,
            timeout,
        })
    }
}

/// Where a version stands.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ServedVersion>),
    Unavailable(String),
}

impl VersionState {
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Ready(_) => "READY",
            VersionState::Unavailable(_) => "UNAVAILABLE",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            VersionState::Ready(_) => "",
            VersionState::Unavailable(r) => r,
        }
    }
}

/// A model and its versions.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<u64, VersionState>,
    /// Why the model as a whole could not load (bad `config.toml`, no versions, ...).
    pub error: Option<String>,
}

impl ModelEntry {
    /// The ready versions, highest first.
    pub fn ready(&self) -> impl Iterator<Item = &Arc<ServedVersion>> {
        self.versions.values().rev().filter_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            VersionState::Unavailable(_) => None,
        })
    }
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: &'static str,
    pub reason: String,
}

/// Settings every loaded model inherits.
#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    pub root: PathBuf,
    /// Cores to share between instances when a model sets no thread counts.
    pub cores: usize,
}

pub struct Repository {
    opts: RepositoryOptions,
    metrics: Metrics,
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
    writer: Mutex<()>,
}

impl Repository {
    pub fn new(opts: RepositoryOptions, metrics: Metrics) -> Repository {
        Repository {
            opts,
            metrics,
            models: ArcSwap::from_pointee(BTreeMap::new()),
            writer: Mutex::new(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    /// Loads every model directory under the root. Blocking; failures are recorded per model.
    pub fn load_all(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.opts.root).map_err(|e| {
            Error::Config(format!(
                "cannot read the model repository {}: {e}",
                self.opts.root.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            if let Err(e) = self.load_model(&name) {
                tracing::warn!(model = %name, error = %e, "model failed to load");
            }
        }
        Ok(())
    }

    /// (Re)loads one model from disk. Versions that load replace the served ones atomically;
    /// a version that fails to reload keeps serving its previous load. Blocking.
    pub fn load_model(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let dir = self.opts.root.join(name);
        if !dir.is_dir() {
            return Err(Error::ModelNotFound(name.to_owned()));
        }
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.models.load().get(name).cloned();
        let entry = self.load_entry(name, &dir, previous.as_deref());
        let failure = entry.error.clone().or_else(|| {
            entry
                .versions
                .iter()
                .find(|(_, s)| matches!(s, VersionState::Unavailable(_)))
                .map(|(v, s)| format!("version {v}: {}", s.reason()))
        });
        self.publish(name, entry);
        match failure {
            Some(message) => Err(Error::Load {
                model: name.to_owned(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Stops serving a model. Requests in flight finish; queued ones still run.
    pub fn unload_model(&self, name: &str) -> Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(prev) = self.models.load().get(name).cloned() else {
            return Err(Error::ModelNotFound(name.to_owned()));
        };
        let entry = ModelEntry {
            name: name.to_owned(),
            versions: prev
                .versions
                .keys()
                .map(|v| (*v, VersionState::Unavailable("unloaded".into())))
                .collect(),
            error: Some("unloaded".into()),
        };
        self.publish(name, entry);
        Ok(())
    }

    fn publish(&self, name: &str, entry: ModelEntry) {
        let mut map = (**self.models.load()).clone();
        map.insert(name.to_owned(), Arc::new(entry));
        self.models.store(Arc::new(map));
    }

    fn load_entry(&self, name: &str, dir: &Path, previous: Option<&ModelEntry>) -> ModelEntry {
        let mut entry = ModelEntry {
            name: name.to_owned(),
            ..Default::default()
        };
        let config = match read_config(dir) {
            Ok(c) => c,
            Err(e) => {
                entry.error = Some(e.to_string());
                // Keep serving what was loaded before the bad edit.
                if let Some(p) = previous {
                    entry.versions = p.versions.clone();
                }
                return entry;
            }
        };
        let available = version_dirs(dir);
        let selected = config.version_policy.select(&available);
        if selected.is_empty() {
            entry.error = Some(format!(
                "no version to serve in {}: expected numbered version directories (1/, 2/, ...) \
                 matching the version policy, each holding {}",
                dir.display(),
                config
                    .default_model_filename
                    .as_deref()
                    .unwrap_or(DEFAULT_MODEL_FILENAME)
            ));
            return entry;
        }
        for v in selected {
            let state = match self.load_version(name, v, &dir.join(v.to_string()), &config) {
                Ok(served) => {
                    tracing::info!(
                        model = name,
                        version = v,
                        max_batch_size = served.max_batch_size,
                        instances = served.instances,
                        intra_op_threads = served.intra_op_threads,
                        load_ms = served.load_duration.as_millis() as u64,
                        "model version ready"
                    );
                    VersionState::Ready(Arc::new(served))
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(model = name, version = v, error = %reason, "model version failed to load");
                    match previous.and_then(|p| p.versions.get(&v)) {
                        Some(VersionState::Ready(old)) => VersionState::Ready(Arc::clone(old)),
                        _ => VersionState::Unavailable(reason),
                    }
                }
            };
            entry.versions.insert(v, state);
        }
        entry
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        config: &ModelConfig,
    ) -> Result<ServedVersion> {
        let started = Instant::now();
        let file = dir.join(
            config
                .default_model_filename
                .as_deref()
                .unwrap_or(DEFAULT_MODEL_FILENAME),
        );
        if !file.is_file() {
            return Err(Error::Load {
                model: name.to_owned(),
                message: format!(
                    "{} not found (put the ONNX file there, or set default_model_filename in config.toml)",
                    file.display()
                ),
            });
        }
        let instances = config.instance_group.count;
        let intra = match config.onnx.intra_op_threads {
            0 => (self.opts.cores / instances).max(1),
            n => n,
        };
        let opts = OnnxOptions {
            intra_op_threads: intra,
            inter_op_threads: config.onnx.inter_op_threads.max(1),
        };
        let mut models = Vec::with_capacity(instances);
        for _ in 0..instances {
            models.push(OnnxModel::load(name, &file, &opts)?);
        }
        let signature = models[0].signature().clone();
        let max_batch_size = resolve_max_batch_size(name, config, &signature)?;
        if config.warmup.unwrap_or(true) {
            let inputs = warmup_inputs(&signature);
            for m in &mut models {
                m.run(&inputs).map_err(|e| Error::Load {
                    model: name.to_owned(),
                    message: format!(
                        "warmup run on zeros failed: {e} (set warmup = false in config.toml if the model cannot run on zeros)"
                    ),
                })?;
            }
        }
        let db = &config.dynamic_batching;
        let settings = BatchSettings {
            max_batch_size,
            max_queue_delay: Duration::from_micros(db.max_queue_delay_us),
            max_queue_size: db.max_queue_size,
            default_timeout: (db.default_timeout_us > 0)
                .then(|| Duration::from_micros(db.default_timeout_us)),
            priority_levels: db.priority_levels,
            default_priority: db.default_priority_level,
        };
        let label = version.to_string();
        let metrics = self.metrics.for_version(name, &label);
        let stats = Arc::new(ModelStats::default());
        let instances_boxed: Vec<Box<dyn Model>> = models
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn Model>)
            .collect();
        let batcher = Batcher::start(
            name,
            &label,
            instances_boxed,
            settings,
            metrics.clone(),
            Arc::clone(&stats),
        )?;
        let load_duration = started.elapsed();
        metrics.load_duration.set(load_duration.as_secs_f64());
        Ok(ServedVersion {
            model: name.to_owned(),
            version,
            version_label: label,
            signature,
            max_batch_size,
            config: config.clone(),
            instances,
            intra_op_threads: intra,
            load_duration,
            stats,
            metrics,
            batcher,
        })
    }

    /// The model entry, whatever its state.
    pub fn model(&self, name: &str) -> Result<Arc<ModelEntry>> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::ModelNotFound(name.to_owned()))
    }

    /// The version a request should run on: `version` if given, else the highest ready one.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedVersion>> {
        let entry = self.model(name)?;
        let not_ready = |version: String, reason: &str| Error::NotReady {
            model: name.to_owned(),
            version,
            reason: reason.to_owned(),
        };
        match version.filter(|v| !v.is_empty()) {
            None => entry.ready().next().cloned().ok_or_else(|| {
                let reason = entry
                    .error
                    .clone()
                    .or_else(|| {
                        entry
                            .versions
                            .values()
                            .last()
                            .map(|s| s.reason().to_owned())
                    })
                    .unwrap_or_else(|| "no version is loaded".into());
                not_ready("(latest)".into(), &reason)
            }),
            Some(v) => {
                let parsed = v.parse::<u64>().ok().filter(|n| *n > 0);
                match parsed.and_then(|n| entry.versions.get(&n)) {
                    Some(VersionState::Ready(s)) => Ok(Arc::clone(s)),
                    Some(VersionState::Unavailable(reason)) => Err(not_ready(v.to_owned(), reason)),
                    None => Err(Error::VersionNotFound {
                        model: name.to_owned(),
                        version: v.to_owned(),
                    }),
                }
            }
        }
    }

    /// Every known model version and its state, sorted by name and version.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut out = Vec::new();
        for (name, entry) in self.models.load().iter() {
            if entry.versions.is_empty() {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: entry.error.clone().unwrap_or_default(),
                });
            }
            for (v, s) in &entry.versions {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: v.to_string(),
                    state: s.name(),
                    reason: s.reason().to_owned(),
                });
            }
        }
        out
    }

    /// Every ready version, for statistics.
    pub fn ready_versions(&self) -> Vec<Arc<ServedVersion>> {
        self.models
            .load()
            .values()
            .flat_map(|e| e.ready().cloned().collect::<Vec<_>>())
            .collect()
    }
}

fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => ModelConfig::parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Numeric version directories, ascending; names with a leading zero are ignored.
fn version_dirs(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('0') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn resolve_max_batch_size(name: &str, config: &ModelConfig, sig: &Signature) -> Result<usize> {
    match config.max_batch_size {
        None if sig.has_batch_dim() => Ok(DEFAULT_MAX_BATCH_SIZE),
        None | Some(0) => Ok(0),
        Some(n) if sig.has_batch_dim() => Ok(n),
        Some(n) => {
            let fixed = sig
                .inputs
                .iter()
                .chain(&sig.outputs)
                .find(|t| t.shape.first() != Some(&-1))
                .map(|t| format!("'{}' has shape {:?}", t.name, t.shape))
                .unwrap_or_default();
            Err(Error::Config(format!(
                "model '{name}': max_batch_size = {n} needs a variable first dimension on every input and output, but {fixed}; \
                 set max_batch_size = 0"
            )))
        }
    }
}

/// Inputs of zeros (empty strings for BYTES), variable dimensions set to 1.
pub fn warmup_inputs(sig: &Signature) -> Vec<Tensor> {
    sig.inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec
                .shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d })
                .collect();
            let n: usize = shape.iter().map(|&d| d as usize).product();
            let data = match spec.datatype.size() {
                Some(size) => TensorData::Raw(vec![0; n * size]),
                None => TensorData::Bytes(vec![Vec::new(); n]),
            };
            Tensor::new(spec.datatype, shape, data).expect("consistent warmup tensor")
        })
        .collect()
}

/// Model names become directory names and metric labels: no separators, no traversal, no
/// control characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid model name '{}': use 1-128 characters from A-Z a-z 0-9 - _ . (not starting with '.')",
            name.escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dirs_follow_triton() {
        let d = tempfile::tempdir().unwrap();
        for v in ["1", "2", "10", "03", "x", "0"] {
            std::fs::create_dir(d.path().join(v)).unwrap();
        }
        std::fs::write(d.path().join("7"), b"not a dir").unwrap();
        assert_eq!(version_dirs(d.path()), vec![1, 2, 10]);
    }

    #[test]
    fn names_are_validated() {
        for ok in ["mlp", "a.b-c_1", "X"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a\nb",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
