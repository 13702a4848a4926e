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
//! The registry (see `registry`) adds uploads, immutable numbered versions and aliases on
//! top of the same directories: a version is served when the version policy selects it or an
//! alias points at it; requests without a version follow the `production` alias if it
//! exists, else the newest ready version; a version string may be an alias
//! (`/v2/models/m/versions/production/infer`).
//!
//! The served set is an immutable map behind an `ArcSwap`: a request takes an
//! `Arc<ServedVersion>` without locking, and keeps the version alive until it finishes, so a
//! reload, alias move or unload never disturbs requests in flight; a version no longer served
//! is freed when its last request finishes. Every change to a model (load, upload, alias
//! move, delete) runs under that model's lock, loads what it needs first, persists the
//! registry record, then publishes the new state in one swap.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::backends::candle::{self, SentenceEncoder, TextPrep, TokenCount};
use crate::backends::onnx::{OnnxModel, OnnxOptions};
use crate::batcher::{BatchSettings, Batcher, Job, JobOutput, JobReceiver};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::metrics::{FailureReason, Metrics, VersionMetrics};
use crate::model::Model;
use crate::registry::{self, ModelMeta, Staged, Upload, VersionMeta, VersionStatus};
use crate::remote::{Fetched, Record, Remote};
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
    pub backend: Backend,
    /// Tokenization, for text models (token budgets, usage, truncation).
    pub text: Option<Arc<TextPrep>>,
    batcher: Batcher,
}

/// Which backend runs a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Onnx,
    Candle,
}

impl ServedVersion {
    /// Triton's platform name for the backend.
    pub fn platform(&self) -> &'static str {
        match self.backend {
            Backend::Onnx => "onnxruntime_onnx",
            Backend::Candle => "candle_safetensors",
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Onnx => "onnxruntime",
            Backend::Candle => "candle",
        }
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
        self.batcher
            .submit(self.job(inputs, priority, timeout, None)?)
    }

    /// Checks named inputs against the signature, runs them and waits for the outputs: on
    /// the calling task's thread when nothing is queued and an instance is idle, else through
    /// the queue ([`Batcher::call`]).
    pub async fn call(
        &self,
        inputs: Vec<(String, Tensor)>,
        priority: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<JobOutput> {
        self.call_counted(inputs, priority, timeout, None).await
    }

    /// [`ServedVersion::call`] with token counts the caller already has.
    pub async fn call_counted(
        &self,
        inputs: Vec<(String, Tensor)>,
        priority: Option<u32>,
        timeout: Option<Duration>,
        counts: Option<&[TokenCount]>,
    ) -> Result<JobOutput> {
        let job = self.job(inputs, priority, timeout, counts)?;
        self.batcher.call(job).await
    }

    /// Token counts of a text model's request (`None` for other models), checking the texts.
    pub fn count_tokens(&self, inputs: &[Tensor]) -> Option<Result<Vec<TokenCount>>> {
        let prep = self.text.as_ref()?;
        Some(match inputs.first().map(Tensor::data) {
            Some(TensorData::Bytes(items)) => prep.count(candle::INPUT, items),
            _ => Err(Error::InvalidInput(
                "a text model takes one BYTES input".into(),
            )),
        })
    }

    /// A batcher job from named inputs checked against the signature; its cost is the
    /// request's tokens for text models (`counts`, when the caller has them), else its rows.
    fn job(
        &self,
        inputs: Vec<(String, Tensor)>,
        priority: Option<u32>,
        timeout: Option<Duration>,
        counts: Option<&[TokenCount]>,
    ) -> Result<Job> {
        let invalid = |e: Error| {
            self.metrics.failure(FailureReason::Invalid).inc();
            e
        };
        let (inputs, rows) = self
            .signature
            .check_inputs(inputs, self.max_batch_size)
            .map_err(invalid)?;
        let cost = match (counts, self.count_tokens(&inputs)) {
            (Some(c), _) => c.iter().map(|c| c.tokens).sum(),
            (None, Some(counted)) => counted.map_err(invalid)?.iter().map(|c| c.tokens).sum(),
            (None, None) => rows,
        };
        Ok(Job {
            inputs,
            rows,
            priority,
            timeout,
            cost,
        })
    }
}

/// Where a version on disk stands for serving.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ServedVersion>),
    /// Uploaded; its trial load is running.
    Loading,
    Unavailable(String),
}

impl VersionState {
    /// Triton's state names.
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Ready(_) => "READY",
            VersionState::Loading => "LOADING",
            VersionState::Unavailable(_) => "UNAVAILABLE",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            VersionState::Ready(_) | VersionState::Loading => "",
            VersionState::Unavailable(r) => r,
        }
    }
}

/// A model: its registry record and the serving state of each version on disk.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub name: String,
    pub meta: ModelMeta,
    pub versions: BTreeMap<u64, VersionState>,
    /// Why the model as a whole could not load (bad `config.toml`, no versions, ...).
    pub error: Option<String>,
    /// Unloaded through the repository API: nothing is served until it is loaded again.
    pub unloaded: bool,
}

impl ModelEntry {
    /// The ready versions, highest first.
    pub fn ready(&self) -> impl Iterator<Item = &Arc<ServedVersion>> {
        self.versions.values().rev().filter_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }

    /// The version requests without one go to: `production` if set, else the newest ready.
    pub fn default_version(&self) -> Option<u64> {
        match self.meta.aliases.get(DEFAULT_ALIAS) {
            Some(a) => Some(a.version),
            None => self.ready().next().map(|v| v.version),
        }
    }
}

/// The alias that requests without a version follow, when it exists.
pub const DEFAULT_ALIAS: &str = "production";

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
    /// The registry in object storage, shared by a fleet; `root` is then this replica's
    /// cache of it (see `remote`).
    pub remote: Option<Arc<Remote>>,
}

pub struct Repository {
    opts: RepositoryOptions,
    metrics: Metrics,
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
    /// Serialises swaps of the published map.
    publish_lock: Mutex<()>,
    /// Serialises operations on one model (load, upload, alias moves, deletes).
    model_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// With a remote registry: the version of each model's record the cache mirrors.
    mirrored: Mutex<HashMap<String, object_store::UpdateVersion>>,
}

/// A change to a model's registry record, given the version directories on disk. With a
/// remote registry it may run more than once: again on a newer record when another replica
/// wrote first.
type MetaChange<'a> = Box<dyn FnMut(&mut ModelMeta, &[u64]) -> Result<()> + 'a>;

/// Times a change is redone on a newer record before the caller is told to retry.
const COMMIT_ATTEMPTS: usize = 16;
/// Where a replica keeps blobs uploaded through it until their version is recorded.
const BLOBS_DIR: &str = ".blobs";

/// What a [`Repository::sync`] may do besides reconciling.
struct Sync<'a> {
    /// Changes the registry record; an error aborts the operation before anything changes.
    change: MetaChange<'a>,
    /// Versions already loaded by the caller (a trial load), to serve instead of reloading.
    preloaded: Vec<ServedVersion>,
    /// Fail (and change nothing) if a version an alias points at cannot be loaded.
    strict: bool,
    /// Clear an unload done through the repository API.
    reload: bool,
}

impl Default for Sync<'_> {
    fn default() -> Self {
        Sync {
            change: Box::new(|_, _| Ok(())),
            preloaded: Vec::new(),
            strict: false,
            reload: false,
        }
    }
}

/// A registry view of one version, for the model-management API.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub model: String,
    pub version: u64,
    pub meta: Option<VersionMeta>,
    /// Triton's state name and reason.
    pub state: &'static str,
    pub reason: String,
    pub aliases: Vec<String>,
}

impl Repository {
    pub fn new(opts: RepositoryOptions, metrics: Metrics) -> Repository {
        Repository {
            opts,
            metrics,
            models: ArcSwap::from_pointee(BTreeMap::new()),
            publish_lock: Mutex::new(()),
            model_locks: Mutex::new(HashMap::new()),
            mirrored: Mutex::new(HashMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    fn model_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.model_locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.opts.root.join(name))
    }

    /// Loads every model directory under the root (with a remote registry: every model it
    /// records, through the cache), discarding partial uploads left by a crash. Blocking;
    /// failures are recorded per model.
    pub fn load_all(&self) -> Result<()> {
        if self.opts.remote.is_some() {
            self.clean_cache();
            return self.refresh();
        }
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
            .filter(|n| !n.starts_with('.') && validate_name(n).is_ok())
            .collect();
        names.sort();
        for name in names {
            registry::discard_partial_uploads(&self.opts.root.join(&name));
            if let Err(e) = self.load_model(&name) {
                tracing::warn!(model = %name, error = %e, "model failed to load");
            }
        }
        Ok(())
    }

    /// (Re)loads one model from disk. A version that fails to reload keeps serving its
    /// previous load. Blocking.
    pub fn load_model(&self, name: &str) -> Result<()> {
        let entry = self.update(
            name,
            Sync {
                reload: true,
                ..Default::default()
            },
        )?;
        let failure = entry.error.clone().or_else(|| {
            entry
                .versions
                .iter()
                .find(|(_, s)| matches!(s, VersionState::Unavailable(_)))
                .filter(|_| entry.ready().next().is_none())
                .map(|(v, s)| format!("version {v}: {}", s.reason()))
        });
        match failure {
            Some(message) => Err(Error::Load {
                model: name.to_owned(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Stops serving a model until it is loaded again. Requests in flight finish.
    pub fn unload_model(&self, name: &str) -> Result<()> {
        let lock = self.model_lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.model(name)?;
        let mut entry = (*prev).clone();
        entry.unloaded = true;
        for s in entry.versions.values_mut() {
            if matches!(s, VersionState::Ready(_)) {
                *s = VersionState::Unavailable("unloaded".into());
            }
        }
        self.publish(name, entry);
        Ok(())
    }

    fn publish(&self, name: &str, entry: ModelEntry) -> Arc<ModelEntry> {
        let entry = Arc::new(entry);
        let _g = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = (**self.models.load()).clone();
        map.insert(name.to_owned(), Arc::clone(&entry));
        self.models.store(Arc::new(map));
        entry
    }

    fn unpublish(&self, name: &str) {
        let _g = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = (**self.models.load()).clone();
        map.remove(name);
        self.models.store(Arc::new(map));
    }

    /// Reconciles one model with its registry record: applies `op.change` (with a remote
    /// registry, to the shared record first, see [`Repository::commit`]), loads the versions
    /// that should serve (the version policy's choice plus every alias target), persists the
    /// record, then publishes the new state in one atomic swap. Versions no longer served are
    /// dropped from the map; each is freed once its last in-flight request finishes. The
    /// caller holds the model's lock.
    fn sync(&self, name: &str, dir: &Path, mut op: Sync<'_>) -> Result<Arc<ModelEntry>> {
        if let Some(remote) = &self.opts.remote {
            self.commit(remote, name, dir, &mut op)?;
        }
        self.sync_local(name, dir, op)
    }

    /// [`Repository::sync`] against the local directory and its `registry.json`.
    fn sync_local(&self, name: &str, dir: &Path, mut op: Sync<'_>) -> Result<Arc<ModelEntry>> {
        let previous = self.models.load().get(name).cloned();
        let unloaded = !op.reload && previous.as_ref().is_some_and(|p| p.unloaded);
        let on_disk_meta = ModelMeta::load(dir)?;
        let disk = version_dirs(dir);
        let mut meta = on_disk_meta.clone();
        (op.change)(&mut meta, &disk)?;
        // Written back only when the operation changed the record: metadata derived for
        // versions put in place by hand stays in memory, so a hand-made repository is not
        // modified by merely serving it.
        let dirty = meta != on_disk_meta;
        if let Some(p) = &previous {
            for v in &disk {
                if let (false, Some(m)) = (meta.versions.contains_key(v), p.meta.versions.get(v)) {
                    meta.versions.insert(*v, m.clone());
                }
            }
        }

        let config = match read_config(dir) {
            Ok(c) => c,
            Err(e) => {
                // Keep serving what was loaded before the bad edit.
                let mut entry = previous.as_deref().cloned().unwrap_or_default();
                entry.name = name.to_owned();
                entry.error = Some(e.to_string());
                self.publish(name, entry);
                return Err(e);
            }
        };
        let servable: Vec<u64> = disk
            .iter()
            .copied()
            .filter(|v| {
                meta.versions
                    .get(v)
                    .is_none_or(|m| m.status == VersionStatus::Ready)
            })
            .collect();
        let mut desired: Vec<u64> = config.version_policy.select(&servable);
        for a in meta.aliases.values() {
            if servable.contains(&a.version) && !desired.contains(&a.version) {
                desired.push(a.version);
            }
        }
        if unloaded {
            desired.clear();
        }
        let alias_targets: Vec<u64> = meta.aliases.values().map(|a| a.version).collect();

        let mut preloaded: HashMap<u64, ServedVersion> =
            op.preloaded.into_iter().map(|v| (v.version, v)).collect();
        let mut versions = BTreeMap::new();
        for &v in &disk {
            let old_ready = previous.as_ref().and_then(|p| match p.versions.get(&v) {
                Some(VersionState::Ready(s)) => Some(Arc::clone(s)),
                _ => None,
            });
            let state = match meta.versions.get(&v).map(|m| m.status) {
                Some(VersionStatus::Pending) => VersionState::Loading,
                Some(VersionStatus::Failed) => VersionState::Unavailable(format!(
                    "FAILED validation: {}",
                    meta.versions[&v].reason
                )),
                _ if !desired.contains(&v) => VersionState::Unavailable(if unloaded {
                    "unloaded".into()
                } else {
                    "not served: no alias points at it and the version policy does not select it"
                        .into()
                }),
                _ => match (old_ready, preloaded.remove(&v)) {
                    (_, Some(fresh)) => VersionState::Ready(Arc::new(fresh)),
                    (Some(old), None) if !op.reload => VersionState::Ready(old),
                    (old, None) => {
                        match self.load_version(name, v, &dir.join(v.to_string()), &config) {
                            Ok(served) => {
                                let m = meta.versions.entry(v).or_insert_with(|| {
                                    hand_made_meta(&dir.join(v.to_string()), &served)
                                });
                                m.set_signature(&served.signature);
                                VersionState::Ready(Arc::new(served))
                            }
                            Err(e) if op.strict && alias_targets.contains(&v) => return Err(e),
                            Err(e) => {
                                tracing::warn!(model = name, version = v, error = %e, "model version failed to load");
                                match old {
                                    Some(old) => VersionState::Ready(old),
                                    None => VersionState::Unavailable(e.to_string()),
                                }
                            }
                        }
                    }
                },
            };
            versions.insert(v, state);
        }
        if dirty {
            meta.save(dir)?;
        }
        let error = (disk.is_empty() && meta.versions.is_empty()).then(|| {
            format!(
                "no version in {}: expected numbered version directories (1/, 2/, ...) each holding {}",
                dir.display(),
                config.default_model_filename.as_deref().unwrap_or(DEFAULT_MODEL_FILENAME)
            )
        });
        Ok(self.publish(
            name,
            ModelEntry {
                name: name.to_owned(),
                meta,
                versions,
                error,
                unloaded,
            },
        ))
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        model_config: &ModelConfig,
    ) -> Result<ServedVersion> {
        // A version may carry its own config.toml (uploaded with it); it replaces the model's.
        let own = read_config(dir)?;
        let config = if dir.join("config.toml").is_file() {
            &own
        } else {
            model_config
        };
        let started = Instant::now();
        let instances = config.instance_group.count;
        let intra = match config.onnx.intra_op_threads {
            0 => (self.opts.cores / instances).max(1),
            n => n,
        };
        let backend = match config.backend.as_deref() {
            Some("candle") => Backend::Candle,
            Some(_) => Backend::Onnx,
            None if candle::detect(dir) => Backend::Candle,
            None => Backend::Onnx,
        };
        let (mut models, signature, text): (Vec<Box<dyn Model>>, Signature, Option<Arc<TextPrep>>) =
            match backend {
                Backend::Candle => {
                    let encoders = SentenceEncoder::load(
                        name,
                        dir,
                        &config.candle,
                        instances,
                        &OnnxOptions {
                            intra_op_threads: intra,
                            inter_op_threads: config.onnx.inter_op_threads.max(1),
                        },
                    )?;
                    let (sig, prep) = (encoders[0].signature().clone(), encoders[0].text_prep());
                    let boxed = encoders
                        .into_iter()
                        .map(|m| Box::new(m) as Box<dyn Model>)
                        .collect();
                    (boxed, sig, Some(prep))
                }
                Backend::Onnx => {
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
                                "{} not found (put the ONNX file there, or set default_model_filename in config.toml; \
                             a sentence encoder needs model.safetensors, config.json and tokenizer.json)",
                                file.display()
                            ),
                        });
                    }
                    let opts = OnnxOptions {
                        intra_op_threads: intra,
                        inter_op_threads: config.onnx.inter_op_threads.max(1),
                    };
                    let mut boxed: Vec<Box<dyn Model>> = Vec::with_capacity(instances);
                    let mut sig = Signature::default();
                    for _ in 0..instances {
                        let m = OnnxModel::load(name, &file, &opts)?;
                        sig = m.signature().clone();
                        boxed.push(Box::new(m));
                    }
                    (boxed, sig, None)
                }
            };
        let max_batch_size = match (&text, config.max_batch_size) {
            // Text models batch by tokens; rows are bounded by what one request may carry.
            (Some(_), None) => config.candle.max_client_batch_size,
            _ => resolve_max_batch_size(name, config, &signature)?,
        };
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
            max_batch_cost: text.as_ref().map(|_| config.candle.max_batch_tokens),
        };
        let label = version.to_string();
        let metrics = self.metrics.for_version(name, &label);
        let stats = Arc::new(ModelStats::default());
        let batcher = Batcher::start(
            name,
            &label,
            models,
            settings,
            metrics.clone(),
            Arc::clone(&stats),
        )?;
        let load_duration = started.elapsed();
        metrics.load_duration.set(load_duration.as_secs_f64());
        tracing::info!(
            model = name,
            version,
            max_batch_size,
            instances,
            intra_op_threads = intra,
            load_ms = load_duration.as_millis() as u64,
            "model version loaded"
        );
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
            backend,
            text,
            batcher,
        })
    }

    /// Starts receiving an artifact for a new version of `name` (the model is created if new).
    pub fn begin_upload(&self, name: &str, limit: u64) -> Result<Upload> {
        let dir = self.model_dir(name)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        Upload::begin(&dir, limit)
    }

    /// Turns a complete upload into the next version of `name`, `PENDING` until its trial
    /// load (in the background) makes it `READY` or `FAILED`. `config_toml`, if given, is
    /// validated and stored with the version. Returns the new version's number.
    pub fn add_version(
        self: &Arc<Self>,
        name: &str,
        staged: Staged,
        config_toml: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<u64> {
        let dir = self.model_dir(name)?;
        if let Some(c) = config_toml {
            ModelConfig::parse(c, "the uploaded config.toml")?;
        }
        let vmeta = VersionMeta {
            status: VersionStatus::Pending,
            reason: String::new(),
            created_ms: registry::now_ms(),
            size: staged.size,
            sha256: staged.sha256.clone(),
            backend: "onnx".into(),
            labels,
            inputs: Vec::new(),
            outputs: Vec::new(),
            config_sha256: None,
        };
        let lock = self.model_lock(name);
        let version = match &self.opts.remote {
            Some(remote) => {
                self.add_remote_version(remote, name, &dir, &lock, staged, config_toml, vmeta)?
            }
            None => {
                let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                self.add_local_version(name, &dir, staged, config_toml, vmeta)?
            }
        };

        let repo = Arc::clone(self);
        let name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("validate-{name}-{version}"))
            .spawn(move || repo.validate(&name, version))
            .map_err(|e| Error::Io(format!("cannot start the validation thread: {e}")))?;
        Ok(version)
    }

    /// Trial-loads (and warms up) an uploaded version, then records the verdict.
    fn validate(&self, name: &str, version: u64) {
        let Ok(dir) = self.model_dir(name) else {
            return;
        };
        let config = read_config(&dir).unwrap_or_default();
        let result = self.load_version(name, version, &dir.join(version.to_string()), &config);
        let lock = self.model_lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match result {
            Ok(served) => {
                let sig = served.signature.clone();
                tracing::info!(model = name, version, "uploaded version validated: READY");
                self.sync(
                    name,
                    &dir,
                    Sync {
                        change: Box::new(move |m, _| {
                            if let Some(v) = m.versions.get_mut(&version) {
                                v.status = VersionStatus::Ready;
                                v.set_signature(&sig);
                            }
                            Ok(())
                        }),
                        preloaded: vec![served],
                        ..Default::default()
                    },
                )
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(model = name, version, error = %reason, "uploaded version failed validation");
                self.sync(
                    name,
                    &dir,
                    Sync {
                        change: Box::new(move |m, _| {
                            if let Some(v) = m.versions.get_mut(&version) {
                                v.status = VersionStatus::Failed;
                                v.reason.clone_from(&reason);
                            }
                            Ok(())
                        }),
                        ..Default::default()
                    },
                )
            }
        };
        if let Err(e) = outcome {
            tracing::error!(model = name, version, error = %e, "cannot record the validation outcome");
        }
    }

    /// Runs `op` on an existing model under its lock.
    fn update(&self, name: &str, op: Sync<'_>) -> Result<Arc<ModelEntry>> {
        let dir = self.model_dir(name)?;
        if !dir.is_dir() {
            return Err(Error::ModelNotFound(name.to_owned()));
        }
        let lock = self.model_lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sync(name, &dir, op)
    }

    /// Points `alias` at `version`. The version must be READY; it is loaded first if
    /// needed, then the alias moves in one atomic swap, so no request sees it half-done.
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<Arc<ModelEntry>> {
        registry::validate_alias(alias)?;
        let (model, alias_name) = (name.to_owned(), alias.to_owned());
        self.update(
            name,
            Sync {
                change: Box::new(move |m, disk| {
                    match m.versions.get(&version) {
                        Some(v) if v.status != VersionStatus::Ready => {
                            return Err(Error::Conflict(format!(
                                "version {version} of model '{model}' is {}, not READY; an alias can only point at a READY version",
                                v.status.as_str()
                            )));
                        }
                        None if !disk.contains(&version) => {
                            return Err(Error::VersionNotFound {
                                model: model.clone(),
                                version: version.to_string(),
                            });
                        }
                        _ => {}
                    }
                    m.set_alias(&alias_name, version);
                    Ok(())
                }),
                strict: true,
                ..Default::default()
            },
        )
    }

    /// Removes an alias; requests that used it get 404 afterwards.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<Arc<ModelEntry>> {
        let (model, alias_name) = (name.to_owned(), alias.to_owned());
        self.update(
            name,
            Sync {
                change: Box::new(move |m, _| {
                    m.aliases.remove(&alias_name).map(|_| ()).ok_or_else(|| {
                        Error::VersionNotFound {
                            model: model.clone(),
                            version: alias_name.clone(),
                        }
                    })
                }),
                ..Default::default()
            },
        )
    }

    /// Moves `alias` back to the version it pointed at before its current one.
    pub fn rollback_alias(&self, name: &str, alias: &str) -> Result<(u64, Arc<ModelEntry>)> {
        let entry = self.model(name)?;
        let a = entry
            .meta
            .aliases
            .get(alias)
            .ok_or_else(|| Error::VersionNotFound {
                model: name.to_owned(),
                version: alias.to_owned(),
            })?;
        let current = a.version;
        let target = a
            .history
            .iter()
            .rev()
            .map(|h| h.version)
            .find(|v| *v != current)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "alias '{alias}' of model '{name}' has only ever pointed at version {current}: nothing to roll back to"
                ))
            })?;
        Ok((target, self.set_alias(name, alias, target)?))
    }

    /// Deletes a version: refused while an alias points at it. Requests in flight on it
    /// finish; its number is never reused.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        let not_found = || Error::VersionNotFound {
            model: name.to_owned(),
            version: version.to_string(),
        };
        if self.opts.remote.is_some() {
            // Checked against the newest shared record; the cache drops the directory once
            // the record no longer has the version.
            self.update(
                name,
                Sync {
                    change: Box::new(move |m, _| {
                        if !m.versions.contains_key(&version) {
                            return Err(not_found());
                        }
                        refuse_if_aliased(m, name, version)?;
                        m.versions.remove(&version);
                        m.next_version = m.next_version.max(version + 1);
                        Ok(())
                    }),
                    ..Default::default()
                },
            )?;
            return Ok(());
        }
        let dir = self.model_dir(name)?;
        let lock = self.model_lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let meta = ModelMeta::load(&dir)?;
        let vdir = dir.join(version.to_string());
        if !vdir.is_dir() {
            return Err(not_found());
        }
        refuse_if_aliased(&meta, name, version)?;
        let trash = dir.join(format!(".deleted-{version}-{}", registry::now_ms()));
        std::fs::rename(&vdir, &trash)
            .map_err(|e| Error::Io(format!("cannot delete {}: {e}", vdir.display())))?;
        registry::sync_dir(&dir);
        self.sync(
            name,
            &dir,
            Sync {
                change: Box::new(move |m, _| {
                    m.versions.remove(&version);
                    m.next_version = m.next_version.max(version + 1);
                    Ok(())
                }),
                ..Default::default()
            },
        )?;
        let _ = std::fs::remove_dir_all(&trash);
        Ok(())
    }

    /// Deletes a model: refused while it has aliases.
    pub fn delete_model(&self, name: &str) -> Result<()> {
        let dir = self.model_dir(name)?;
        let lock = self.model_lock(name);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let absent_remotely = match &self.opts.remote {
            Some(remote) => matches!(self.mirror(remote, name, &dir)?, Mirrored::Absent),
            None => false,
        };
        if absent_remotely || !dir.is_dir() {
            return Err(Error::ModelNotFound(name.to_owned()));
        }
        let meta = ModelMeta::load(&dir)?;
        if !meta.aliases.is_empty() {
            let names: Vec<&str> = meta.aliases.keys().map(String::as_str).collect();
            return Err(Error::Conflict(format!(
                "model '{name}' cannot be deleted while it has aliases: {}; delete them first",
                names.join(", ")
            )));
        }
        if let Some(remote) = &self.opts.remote {
            remote.delete_model(name)?;
            self.forget(name);
        }
        let trash = self
            .opts
            .root
            .join(format!(".deleted-{name}-{}", registry::now_ms()));
        std::fs::rename(&dir, &trash)
            .map_err(|e| Error::Io(format!("cannot delete {}: {e}", dir.display())))?;
        registry::sync_dir(&self.opts.root);
        self.unpublish(name);
        let _ = std::fs::remove_dir_all(&trash);
        Ok(())
    }

    /// The model entry, whatever its state.
    pub fn model(&self, name: &str) -> Result<Arc<ModelEntry>> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::ModelNotFound(name.to_owned()))
    }

    pub fn models(&self) -> Vec<Arc<ModelEntry>> {
        self.models.load().values().cloned().collect()
    }

    /// One version's registry record and serving state.
    pub fn version_info(&self, name: &str, version: u64) -> Result<VersionInfo> {
        let entry = self.model(name)?;
        let state = entry.versions.get(&version).cloned();
        let meta = entry.meta.versions.get(&version).cloned();
        if state.is_none() && meta.is_none() {
            return Err(Error::VersionNotFound {
                model: name.to_owned(),
                version: version.to_string(),
            });
        }
        let state = state.unwrap_or(VersionState::Unavailable("deleted".into()));
        Ok(VersionInfo {
            model: name.to_owned(),
            version,
            meta,
            state: state.name(),
            reason: state.reason().to_owned(),
            aliases: entry
                .meta
                .aliases_of(version)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The version a request should run on: `version` (a number or an alias) if given,
    /// else the `production` alias if set, else the newest ready version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedVersion>> {
        let entry = self.model(name)?;
        let not_ready = |version: String, reason: &str| Error::NotReady {
            model: name.to_owned(),
            version,
            reason: reason.to_owned(),
        };
        let (number, label) = match version.filter(|v| !v.is_empty()) {
            None => match entry.default_version() {
                Some(n) => (n, n.to_string()),
                None => {
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
                    return Err(not_ready("(default)".into(), &reason));
                }
            },
            Some(v) => match v.parse::<u64>() {
                Ok(n) => (n, v.to_owned()),
                Err(_) => match entry.meta.aliases.get(v) {
                    Some(a) => (a.version, format!("{v} (version {})", a.version)),
                    None => {
                        return Err(Error::VersionNotFound {
                            model: name.to_owned(),
                            version: v.to_owned(),
                        });
                    }
                },
            },
        };
        match entry.versions.get(&number) {
            Some(VersionState::Ready(s)) => Ok(Arc::clone(s)),
            Some(VersionState::Loading) => Err(not_ready(label, "its trial load is still running")),
            Some(VersionState::Unavailable(reason)) => Err(not_ready(label, reason)),
            None => Err(Error::VersionNotFound {
                model: name.to_owned(),
                version: label,
            }),
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

    /// Embeds texts with a served text model, in process: the same queue and batches as
    /// requests over the network, without the network. Blocking; call it off the async
    /// runtime. `model` may name a version or alias as `name:version`.
    pub fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let (name, version) = match model.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (model, None),
        };
        let served = self.get(name, version)?;
        if served.text.is_none() {
            return Err(Error::InvalidInput(format!(
                "model '{name}' is not a text embedding model"
            )));
        }
        let items: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
        let tensor = Tensor::new(
            crate::DataType::Bytes,
            vec![texts.len() as i64],
            TensorData::Bytes(items),
        )
        .expect("one element per text");
        let job = served.job(vec![(candle::INPUT.to_owned(), tensor)], None, None, None)?;
        let out = served.batcher.call_blocking(job)?;
        Ok(out.outputs[0]
            .f32_rows()
            .expect("embeddings are FP32 [n, dim]"))
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

/// What [`Repository::mirror`] found in the store.
enum Mirrored {
    Unchanged,
    Changed,
    /// No record: the model does not exist in the shared registry (or no longer does).
    Absent,
}

// Adding versions, and the registry in object storage.
impl Repository {
    /// A new version in a local registry: the next free number, its directory assembled
    /// and renamed into place, then recorded. The caller holds the model's lock.
    fn add_local_version(
        &self,
        name: &str,
        dir: &Path,
        staged: Staged,
        config_toml: Option<&str>,
        vmeta: VersionMeta,
    ) -> Result<u64> {
        let version = next_version(&ModelMeta::load(dir)?, &version_dirs(dir));
        place_version(dir, version, &staged.path, config_toml.map(str::as_bytes))?;
        self.sync(
            name,
            dir,
            Sync {
                change: Box::new(move |m, _| {
                    m.versions.insert(version, vmeta.clone());
                    m.next_version = version + 1;
                    Ok(())
                }),
                ..Default::default()
            },
        )?;
        Ok(version)
    }

    /// A new version in the shared registry. The artifact (and its config) go to the store
    /// first, outside the model's lock since they may be large; then the number is claimed
    /// by a conditional write of the record, so replicas uploading at once get distinct
    /// numbers. The staged file waits in the cache's blob directory, where the mirroring of
    /// the new record finds it instead of downloading it back.
    #[allow(clippy::too_many_arguments)]
    fn add_remote_version(
        &self,
        remote: &Remote,
        name: &str,
        dir: &Path,
        lock: &Mutex<()>,
        staged: Staged,
        config_toml: Option<&str>,
        mut vmeta: VersionMeta,
    ) -> Result<u64> {
        remote.put_blob(name, &staged.path, &staged.sha256)?;
        let blobs = dir.join(BLOBS_DIR);
        let io = |e: std::io::Error| {
            Error::Io(format!(
                "cannot keep the upload in {}: {e}",
                blobs.display()
            ))
        };
        std::fs::create_dir_all(&blobs).map_err(io)?;
        if let Some(c) = config_toml {
            let digest = remote.put_small_blob(name, c.as_bytes())?;
            registry::write_atomic(&blobs.join(&digest), c.as_bytes())?;
            vmeta.config_sha256 = Some(digest);
        }
        std::fs::rename(&staged.path, blobs.join(&staged.sha256)).map_err(io)?;
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let claimed = std::cell::Cell::new(0);
        self.sync(
            name,
            dir,
            Sync {
                change: Box::new(|m, disk| {
                    let v = next_version(m, disk);
                    m.versions.insert(v, vmeta.clone());
                    m.next_version = v + 1;
                    claimed.set(v);
                    Ok(())
                }),
                ..Default::default()
            },
        )?;
        Ok(claimed.get())
    }

    /// Brings every model up to its record in the store, and serves what changed through the
    /// same load-then-swap as a local change: requests keep the versions they were routed
    /// to, and none fails while an alias moves. Models deleted from the store stop serving.
    /// Runs at start-up and then every poll interval; a model that cannot be refreshed keeps
    /// serving what it had. Blocking.
    pub fn refresh(&self) -> Result<()> {
        let Some(remote) = &self.opts.remote else {
            return Ok(());
        };
        let mut names = remote.models()?;
        names.extend(self.models.load().keys().cloned());
        for name in names {
            let Ok(dir) = self.model_dir(&name) else {
                continue;
            };
            let lock = self.model_lock(&name);
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            match self.mirror(remote, &name, &dir) {
                Ok(Mirrored::Unchanged) => {}
                Ok(Mirrored::Changed) => {
                    if let Err(e) = self.sync_local(&name, &dir, Sync::default()) {
                        tracing::warn!(model = %name, error = %e, "cannot serve the registry's newest record");
                    }
                }
                Ok(Mirrored::Absent) => {
                    if self.models.load().contains_key(&name) {
                        self.unpublish(&name);
                        let _ = std::fs::remove_dir_all(&dir);
                        tracing::info!(model = %name, "model deleted from the shared registry: no longer served");
                    }
                }
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "cannot refresh from the shared registry; serving what it had")
                }
            }
        }
        Ok(())
    }

    /// Removes what a crash left in the cache (partial uploads and downloads, blobs whose
    /// version was never recorded). Start-up only: uploads may be in flight later.
    fn clean_cache(&self) {
        for entry in std::fs::read_dir(&self.opts.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = entry.path();
            registry::discard_partial_uploads(&dir);
            let _ = std::fs::remove_dir_all(dir.join(BLOBS_DIR));
        }
    }

    fn mirrored(&self, name: &str) -> Option<object_store::UpdateVersion> {
        let m = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name).cloned()
    }

    fn forget(&self, name: &str) {
        let mut m = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(name);
    }

    /// Applies `op.change` to the model's record in the store: read it (the cache mirrors
    /// it), change it, write it back if it is still the record read; if another replica
    /// wrote first, again on the newer record. The cache then mirrors what was written, and
    /// `op.change` is spent (a no-op for the local sync that follows). With `op.strict`, the
    /// versions the new record's aliases point at are loaded before it is written, so a move
    /// this replica cannot serve changes nothing. The caller holds the model's lock.
    fn commit(&self, remote: &Remote, name: &str, dir: &Path, op: &mut Sync<'_>) -> Result<()> {
        let mut change = std::mem::replace(&mut op.change, Box::new(|_, _| Ok(())));
        for attempt in 0..COMMIT_ATTEMPTS {
            self.mirror(remote, name, dir)?;
            let before = ModelMeta::load(dir)?;
            let mut meta = before.clone();
            change(&mut meta, &version_dirs(dir))?;
            if meta == before {
                return Ok(());
            }
            if op.strict {
                self.preload_alias_targets(name, dir, &meta, &mut op.preloaded)?;
            }
            if let Some(written) = remote.commit(name, &meta, self.mirrored(name).as_ref())? {
                self.apply_record(remote, name, dir, &meta, false)?;
                let mut m = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
                m.insert(name.to_owned(), written);
                return Ok(());
            }
            tracing::debug!(
                model = name,
                attempt,
                "another replica changed the record first: redoing the change on the newer one"
            );
            std::thread::sleep(Duration::from_millis(2 << attempt.min(6)));
        }
        Err(Error::Conflict(format!(
            "the record of model '{name}' kept changing through other replicas ({COMMIT_ATTEMPTS} attempts); retry"
        )))
    }

    /// Loads the versions `meta`'s aliases point at that do not serve yet.
    fn preload_alias_targets(
        &self,
        name: &str,
        dir: &Path,
        meta: &ModelMeta,
        preloaded: &mut Vec<ServedVersion>,
    ) -> Result<()> {
        let current = self.models.load().get(name).cloned();
        let config = read_config(dir)?;
        for v in meta.aliases.values().map(|a| a.version) {
            let serving = current
                .as_ref()
                .is_some_and(|e| matches!(e.versions.get(&v), Some(VersionState::Ready(_))));
            let vdir = dir.join(v.to_string());
            if serving || preloaded.iter().any(|p| p.version == v) || !vdir.is_dir() {
                continue;
            }
            preloaded.push(self.load_version(name, v, &vdir, &config)?);
        }
        Ok(())
    }

    /// Brings one model's cache up to its record in the store (a conditional read: nothing
    /// is transferred while the record is unchanged). The caller holds the model's lock.
    fn mirror(&self, remote: &Remote, name: &str, dir: &Path) -> Result<Mirrored> {
        let seen = self.mirrored(name);
        match remote.fetch(name, seen.as_ref().and_then(|v| v.e_tag.as_deref()))? {
            Fetched::Unchanged => Ok(Mirrored::Unchanged),
            Fetched::Absent => {
                if dir.is_dir() {
                    self.apply_record(remote, name, dir, &ModelMeta::default(), false)?;
                }
                self.forget(name);
                Ok(Mirrored::Absent)
            }
            Fetched::Changed(Record { meta, version }) => {
                self.apply_record(remote, name, dir, &meta, seen.is_none())?;
                let mut m = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
                m.insert(name.to_owned(), version);
                Ok(Mirrored::Changed)
            }
        }
    }

    /// Makes one model's cache match `meta`: every version that may serve (all but FAILED
    /// ones) has its directory, its artifact taken from the blobs uploaded here or
    /// downloaded and digest-checked; directories of versions the record no longer has are
    /// removed; `registry.json` is `meta`. With `verify` (the first look in this process),
    /// cached artifacts are hashed again and fetched anew if they differ.
    fn apply_record(
        &self,
        remote: &Remote,
        name: &str,
        dir: &Path,
        meta: &ModelMeta,
        verify: bool,
    ) -> Result<()> {
        let io = |what: &str, e: std::io::Error| Error::Io(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the model's cache", e))?;
        for v in version_dirs(dir) {
            if !meta.versions.contains_key(&v) {
                remove_version_dir(dir, v)?;
            }
        }
        let blobs = dir.join(BLOBS_DIR);
        for (&v, m) in &meta.versions {
            if m.status == VersionStatus::Failed {
                continue;
            }
            let vdir = dir.join(v.to_string());
            if vdir.is_dir() {
                let intact = || {
                    registry::sha256_file(&vdir.join(DEFAULT_MODEL_FILENAME))
                        .is_ok_and(|(d, _)| d == m.sha256)
                };
                if !verify || intact() {
                    continue;
                }
                tracing::warn!(
                    model = name,
                    version = v,
                    "cached artifact does not match the registry's digest: fetching it again"
                );
                remove_version_dir(dir, v)?;
            }
            std::fs::create_dir_all(&blobs).map_err(|e| io("cannot create the blob cache", e))?;
            let fetch = |digest: &str| -> Result<PathBuf> {
                let path = blobs.join(digest);
                if !path.is_file() {
                    remote.get_blob(name, digest, &path)?;
                }
                Ok(path)
            };
            let artifact = fetch(&m.sha256)?;
            let config = match &m.config_sha256 {
                Some(d) => {
                    let path = fetch(d)?;
                    let bytes =
                        std::fs::read(&path).map_err(|e| io("cannot read a cached config", e))?;
                    let _ = std::fs::remove_file(&path);
                    Some(bytes)
                }
                None => None,
            };
            place_version(dir, v, &artifact, config.as_deref())?;
        }
        meta.save(dir)
    }
}

/// The number a new version of a model gets: never one it has used.
fn next_version(meta: &ModelMeta, disk: &[u64]) -> u64 {
    [
        meta.next_version,
        disk.last().map_or(1, |v| v + 1),
        meta.versions.keys().last().map_or(1, |v| v + 1),
        1,
    ]
    .into_iter()
    .max()
    .expect("non-empty")
}

/// Assembles version `version` of the model in `dir` from an artifact (moved) and an
/// optional config in a hidden directory, then renames it into place: a version directory
/// is always complete.
fn place_version(dir: &Path, version: u64, artifact: &Path, config: Option<&[u8]>) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::Io(format!("{what}: {e}"));
    let staging = dir.join(format!(".staging-{version}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io("cannot create the version directory", e))?;
    std::fs::rename(artifact, staging.join(DEFAULT_MODEL_FILENAME))
        .map_err(|e| io("cannot move the artifact into place", e))?;
    if let Some(c) = config {
        registry::write_atomic(&staging.join("config.toml"), c)?;
    }
    registry::sync_dir(&staging);
    std::fs::rename(&staging, dir.join(version.to_string()))
        .map_err(|e| io("cannot publish the version", e))?;
    registry::sync_dir(dir);
    Ok(())
}

/// Removes a version directory (renamed away first, so it vanishes at once).
fn remove_version_dir(dir: &Path, version: u64) -> Result<()> {
    let vdir = dir.join(version.to_string());
    let trash = dir.join(format!(".deleted-{version}-{}", registry::now_ms()));
    std::fs::rename(&vdir, &trash)
        .map_err(|e| Error::Io(format!("cannot delete {}: {e}", vdir.display())))?;
    registry::sync_dir(dir);
    let _ = std::fs::remove_dir_all(&trash);
    Ok(())
}

/// Refuses to delete a version an alias points at.
fn refuse_if_aliased(meta: &ModelMeta, name: &str, version: u64) -> Result<()> {
    let aliases = meta.aliases_of(version);
    if aliases.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "version {version} of model '{name}' cannot be deleted while aliases point at it: {}; move them first",
        aliases.join(", ")
    )))
}

/// Registry metadata for a version that was put in the repository by hand.
fn hand_made_meta(dir: &Path, served: &ServedVersion) -> VersionMeta {
    let file = match served.backend {
        Backend::Candle => dir.join("model.safetensors"),
        Backend::Onnx => dir.join(
            served
                .config
                .default_model_filename
                .as_deref()
                .unwrap_or(DEFAULT_MODEL_FILENAME),
        ),
    };
    let (sha256, size) = registry::sha256_file(&file).unwrap_or_default();
    let created_ms = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    VersionMeta {
        status: VersionStatus::Ready,
        reason: String::new(),
        created_ms,
        size,
        sha256,
        backend: served.backend().into(),
        labels: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        config_sha256: None,
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
                Some(size) => TensorData::Raw(vec![0; n * size].into()),
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
