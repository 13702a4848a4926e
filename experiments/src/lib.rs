//! A/B experiments between model versions: the domain logic, with no transport types.
//!
//! - [`config`]: what a user writes ([`config::ExperimentSpec`]) and its own checks;
//!   checks against the model registry go through a [`Catalog`].
//! - [`assign`]: sticky assignment — a unit key hashes into 10,000 buckets, a table says
//!   which arm owns each; weight changes move only the buckets they must.
//! - [`arm`]: sufficient statistics per arm (exposures, errors, a latency histogram,
//!   reward moments).
//! - [`stats`]: the tests (Welch's t, the two-proportion z, chi-square SRM, always-valid
//!   p-values), confidence intervals, Thompson sampling.
//! - [`results`]: what `GET /api/experiments/{name}` reports, computed from the above.
//! - [`feedback`]: the bounded request log that rewards join with by request id.
//!
//! [`Experiments`] holds them all. The request path calls [`Experiments::for_model`] (a
//! lock-free map read), [`Experiment::assign`], then [`Experiment::record`] with the outcome;
//! feedback arrives through [`Experiments::feedback`]. Everything an experiment accumulates
//! is persisted under the data directory as one JSON file per experiment, written atomically
//! at most once a second by [`Experiments::flush`] (and at once on every configuration
//! change), so a `kill -9` loses at most the last second of counts.

pub mod arm;
pub mod assign;
pub mod config;
pub mod feedback;
mod metrics;
pub mod results;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::arm::ArmStats;
use crate::assign::{BUCKETS, BucketTable};
use crate::config::{Allocation, ExperimentSpec, Guardrail, OutcomeKind, RunState, UnitKey};
use crate::feedback::{RequestLog, Served};
use crate::metrics::{ArmMetrics, Metrics};
use crate::stats::Posterior;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or the request is wrong; the message says what to fix (400).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Valid on its own but not now (another experiment runs on the model, ...) (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (500).
    #[error("{0}")]
    Storage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The model registry, as the experiments see it.
pub trait Catalog: Send + Sync {
    /// Resolves `version` (a number or an alias) of `model` to a READY version: its number
    /// and a description of its signature that compares equal exactly when two versions
    /// take and give the same tensors. The error says why it cannot serve.
    fn resolve(&self, model: &str, version: &str) -> std::result::Result<(u64, String), String>;
}

/// Where an arm's requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    pub model: String,
    /// A version number or an alias, as configured (resolved at request time).
    pub version: String,
}

/// The chosen arm of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub arm: usize,
}

/// What happened to one routed request, for the arm's statistics.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub latency: Duration,
    /// A server-side failure (5xx, overload, timeout). Requests refused as malformed (4xx)
    /// are not recorded at all: they never reached the arm's model.
    pub error: bool,
}

/// The read-mostly part of a running experiment, swapped whole on every change so the
/// request path reads it without a lock.
struct Router {
    running: bool,
    seed: String,
    unit: Option<Arc<UnitKey>>,
    table: BucketTable,
    arms: Vec<Arc<Target>>,
    shadows: Vec<(Arc<Target>, f64)>,
    /// Bandits remember each unit's first arm (weights move under them).
    sticky_units: bool,
}

/// Settings of the experiments subsystem.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where experiments are persisted; `None`: in memory only.
    pub dir: Option<PathBuf>,
    /// Requests the feedback log keeps.
    pub feedback_capacity: usize,
    /// How long a request can wait for its feedback.
    pub feedback_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            feedback_capacity: 1_000_000,
            feedback_ttl: Duration::from_secs(3600),
        }
    }
}

/// Units a bandit remembers the arm of; past it, new units are assigned by bucket only.
const MAX_STICKY_UNITS: usize = 100_000;

/// Every experiment, by name, and the running one of each model.
pub struct Experiments {
    dir: Option<PathBuf>,
    by_name: RwLock<BTreeMap<String, Arc<Experiment>>>,
    running: ArcSwap<HashMap<String, Arc<Experiment>>>,
    log: RequestLog,
    metrics: Metrics,
}

/// One experiment.
pub struct Experiment {
    pub name: String,
    router: ArcSwap<Router>,
    inner: Mutex<Inner>,
    arm_metrics: Vec<ArmMetrics>,
    shadow_metrics: Vec<ArmMetrics>,
    metrics: Metrics,
    dirty: AtomicBool,
}

/// The mutable state, persisted as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Inner {
    name: String,
    spec: ExperimentSpec,
    /// Effective weights: the configured ones, as guardrails and the bandit changed them.
    weights: Vec<f64>,
    table: BucketTable,
    arms: Vec<ArmStats>,
    shadows: Vec<ArmStats>,
    /// Exposures expected per arm from the weights in force at each exposure (the SRM
    /// check's expectation stays right when weights change).
    expected: Vec<f64>,
    /// Arms taken out by a guardrail.
    tripped: Vec<bool>,
    events: Vec<Event>,
    /// Running minimum of each arm's always-valid p-value (None: not computed yet).
    always_valid_min: Vec<Option<f64>>,
    sticky: HashMap<String, u8>,
    rewards_since_update: u64,
    created_ms: u64,
    updated_ms: u64,
    /// The arm promoted to `production`, when it was.
    promoted: Option<String>,
    /// The other replicas' statistics, when the fleet shares them ([`Experiment::set_others`]).
    #[serde(skip)]
    others: Option<Contribution>,
}

/// One replica's share of an experiment's statistics (what it publishes for the fleet):
/// cumulative since it started counting, so publishing is idempotent and a reader merges
/// every replica's latest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The arms these counts belong to (with defaults filled in); a reader ignores a
    /// contribution whose arms differ from its own configuration.
    pub arm_names: Vec<String>,
    pub shadow_names: Vec<String>,
    pub arms: Vec<ArmStats>,
    pub shadows: Vec<ArmStats>,
    /// Exposures expected per arm (the SRM check's expectation).
    pub expected: Vec<f64>,
}

impl Contribution {
    /// Adds `other` when it counts the same arms; `false` (and nothing added) otherwise.
    pub fn merge(&mut self, other: &Contribution) -> bool {
        if other.arm_names != self.arm_names || other.shadow_names != self.shadow_names {
            return false;
        }
        for (a, b) in self.arms.iter_mut().zip(&other.arms) {
            a.merge(b);
        }
        for (a, b) in self.shadows.iter_mut().zip(&other.shadows) {
            a.merge(b);
        }
        for (a, b) in self.expected.iter_mut().zip(&other.expected) {
            *a += b;
        }
        true
    }
}

/// Something that happened to an experiment, shown in its results and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time_ms: u64,
    /// `created`, `updated`, `weights`, `guardrail`, `bandit`, `stopped`, `started`,
    /// `promoted`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub message: String,
}

/// Events kept per experiment (the oldest go first).
const MAX_EVENTS: usize = 1000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One piece of feedback: a reward (and, for monitoring, a ground-truth label) for a
/// request by its id, or for a unit of an experiment by its unit key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub reward: Option<f64>,
    /// The true label or value, for performance monitoring (drift); not used by
    /// experiments.
    #[serde(default)]
    pub truth: Option<serde_json::Value>,
}

/// The most feedback items one batch may carry.
pub const MAX_FEEDBACK_ITEMS: usize = 10_000;

/// What became of a batch of feedback.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedbackReport {
    /// Rewards added to an arm.
    pub accepted: usize,
    /// Items that added nothing, with why (index into the batch).
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

impl Experiments {
    /// Opens the experiments persisted under `opts.dir` (creating it).
    pub fn open(opts: Options, registry: &prometheus::Registry) -> Result<Experiments> {
        let metrics = Metrics::new(registry)
            .map_err(|e| Error::Storage(format!("registering experiment metrics: {e}")))?;
        let exps = Experiments {
            dir: opts.dir.clone(),
            by_name: RwLock::new(BTreeMap::new()),
            running: ArcSwap::from_pointee(HashMap::new()),
            log: RequestLog::new(opts.feedback_capacity, opts.feedback_ttl),
            metrics,
        };
        if let Some(dir) = &opts.dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
            let mut names = BTreeMap::new();
            let entries = std::fs::read_dir(dir)
                .map_err(|e| Error::Storage(format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                match load(&path) {
                    Ok(inner) => {
                        let exp = Arc::new(Experiment::from_inner(inner, exps.metrics.clone()));
                        names.insert(exp.name.clone(), exp);
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "experiment file not loaded");
                    }
                }
            }
            *exps.by_name.write().unwrap_or_else(|p| p.into_inner()) = names;
            exps.publish();
        }
        Ok(exps)
    }

    /// Rebuilds the model → running experiment map (after any start, stop or delete).
    fn publish(&self) {
        let by_name = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        let running: HashMap<String, Arc<Experiment>> = by_name
            .values()
            .filter(|e| e.router.load().running)
            .map(|e| (e.model(), Arc::clone(e)))
            .collect();
        self.running.store(Arc::new(running));
    }

    /// The experiment running on `model`, if any: the request path's one lookup.
    pub fn for_model(&self, model: &str) -> Option<Arc<Experiment>> {
        let running = self.running.load();
        if running.is_empty() {
            return None;
        }
        running.get(model).cloned()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Experiment>> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))
    }

    pub fn list(&self) -> Vec<Arc<Experiment>> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates an experiment, or changes one: an existing experiment keeps its statistics
    /// when its arms are the same (names and targets) — weights, guardrails, shadows, α and
    /// its state may change; different arms need a new experiment. Returns whether it was
    /// created.
    pub fn put(&self, name: &str, spec: ExperimentSpec, catalog: &dyn Catalog) -> Result<bool> {
        config::validate_name("experiment", name)?;
        spec.validate()?;
        check_targets(&spec, catalog)?;
        let mut by_name = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if spec.state == RunState::Running
            && let Some(other) = by_name
                .values()
                .find(|e| e.name != name && e.model() == spec.model && e.router.load().running)
        {
            return Err(Error::Conflict(format!(
                "experiment '{}' is already running on model '{}': stop it first (one running experiment per model)",
                other.name, spec.model
            )));
        }
        let created = match by_name.get(name) {
            Some(exp) => {
                exp.reconfigure(spec)?;
                false
            }
            None => {
                let exp = Arc::new(Experiment::create(name, spec, self.metrics.clone()));
                by_name.insert(name.to_owned(), exp);
                true
            }
        };
        let exp = Arc::clone(&by_name[name]);
        drop(by_name);
        self.persist(&exp)?;
        self.publish();
        Ok(created)
    }

    /// Stops an experiment: its model's requests go to the default version again. The
    /// statistics stay readable.
    pub fn stop(&self, name: &str, why: &str) -> Result<Arc<Experiment>> {
        let exp = self.get(name)?;
        exp.set_running(false, why);
        self.persist(&exp)?;
        self.publish();
        Ok(exp)
    }

    /// Sets new weights by arm name (arms not named keep theirs).
    pub fn set_weights(&self, name: &str, weights: &BTreeMap<String, f64>) -> Result<()> {
        let exp = self.get(name)?;
        let mut spec = exp.spec();
        let names = spec.arm_names();
        for (arm, w) in weights {
            let i = names.iter().position(|n| n == arm).ok_or_else(|| {
                Error::Invalid(format!(
                    "'{arm}' is not an arm of '{name}': arms are {names:?}"
                ))
            })?;
            spec.arms[i].weight = *w;
        }
        spec.validate()?;
        exp.reconfigure(spec)?;
        self.persist(&exp)
    }

    /// Marks `arm` promoted and stops the experiment (the caller moved the alias).
    pub fn promoted(&self, name: &str, arm: &str, message: String) -> Result<()> {
        let exp = self.get(name)?;
        {
            let mut inner = exp.lock();
            inner.promoted = Some(arm.to_owned());
            inner.event(Event::new("promoted", Some(arm), message));
        }
        self.stop(name, "promoted")?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let exp = self
            .by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))?;
        self.publish();
        exp.remove_metrics();
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{name}.json"));
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::Storage(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Remembers which arm served request `id`, for feedback by id.
    pub fn remember(&self, id: &str, exp: &Experiment, a: Assignment) {
        let served = Served {
            experiment: Arc::from(exp.name.as_str()),
            arm: a.arm,
            at: Instant::now(),
        };
        // The size gauge is refreshed by flush(): counting every shard here would take every
        // shard's lock on each request.
        self.log.insert(id.to_owned(), served, |why| {
            self.metrics.feedback_evicted(why);
        });
    }

    /// Adds a batch of feedback; each item stands alone (a bad one does not spoil the rest).
    /// A batch of more than [`MAX_FEEDBACK_ITEMS`] is refused whole.
    pub fn feedback(&self, items: &[Feedback]) -> Result<FeedbackReport> {
        self.feedback_within(items, &|_| true)
    }

    /// [`feedback`](Self::feedback) from a caller who may reach only the experiments
    /// `within` accepts: an item naming another experiment, or a request another one served,
    /// is refused in the words an unknown one gets (and its request stays in the log).
    pub fn feedback_within(
        &self,
        items: &[Feedback],
        within: &dyn Fn(&Experiment) -> bool,
    ) -> Result<FeedbackReport> {
        if items.len() > MAX_FEEDBACK_ITEMS {
            return Err(Error::Invalid(format!(
                "{} feedback items in one request; send at most {MAX_FEEDBACK_ITEMS}",
                items.len()
            )));
        }
        let mut report = FeedbackReport::default();
        for (index, f) in items.iter().enumerate() {
            match self.one_feedback(f, within) {
                Ok(true) => report.accepted += 1,
                Ok(false) => {}
                Err(reason) => report.rejected.push(Rejected { index, reason }),
            }
        }
        self.metrics
            .feedback_items
            .with_label_values(&["accepted"])
            .inc_by(report.accepted as u64);
        self.metrics
            .feedback_items
            .with_label_values(&["rejected"])
            .inc_by(report.rejected.len() as u64);
        Ok(report)
    }

    fn one_feedback(
        &self,
        f: &Feedback,
        within: &dyn Fn(&Experiment) -> bool,
    ) -> std::result::Result<bool, String> {
        let Some(reward) = f.reward else {
            return match f.truth {
                // Ground truth is for performance monitoring; nothing here uses it.
                Some(_) => Ok(false),
                None => Err("give a 'reward' (or a 'truth' label)".into()),
            };
        };
        if !reward.is_finite() {
            return Err(format!("reward must be a finite number, got {reward}"));
        }
        let (exp, arm) = match (&f.id, &f.experiment, &f.unit) {
            (Some(id), None, None) => {
                let served = self
                    .log
                    .take_if(id, |s| self.get(&s.experiment).ok().is_none_or(|e| within(&e)))
                    .ok_or_else(|| {
                        format!("unknown request id '{id}' (never served through an experiment, already rewarded, or older than the feedback log keeps)")
                    })?;
                let exp = self
                    .get(&served.experiment)
                    .map_err(|_| format!("experiment '{}' no longer exists", served.experiment))?;
                (exp, served.arm)
            }
            (None, Some(name), Some(unit)) => {
                let exp = self
                    .get(name)
                    .ok()
                    .filter(|e| within(e))
                    .ok_or_else(|| format!("no experiment named '{name}'"))?;
                if exp.router.load().unit.is_none() {
                    return Err(format!(
                        "experiment '{name}' has no unit key: send feedback by request 'id'"
                    ));
                }
                let a = exp.assign(Some(unit));
                (exp, a.arm)
            }
            _ => {
                return Err(
                    "give either 'id' (a request id), or 'experiment' and 'unit' (a unit key)"
                        .into(),
                );
            }
        };
        exp.reward(arm, reward)?;
        Ok(true)
    }

    /// Writes every experiment changed since the last flush; refreshes gauges.
    pub fn flush(&self) {
        self.metrics.feedback_pending.set(self.log.len() as i64);
        for exp in self.list() {
            if exp.dirty.swap(false, Ordering::AcqRel)
                && let Err(e) = self.persist(&exp)
            {
                exp.dirty.store(true, Ordering::Release);
                tracing::error!(experiment = %exp.name, error = %e, "experiment state not saved");
            }
        }
    }

    fn persist(&self, exp: &Experiment) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let bytes = {
            let inner = exp.lock();
            serde_json::to_vec(&*inner).expect("experiment state serializes")
        };
        write_atomic(&dir.join(format!("{}.json", exp.name)), &bytes)
    }
}

/// Every arm and shadow arm resolves to a READY version, with the signature of the first arm.
fn check_targets(spec: &ExperimentSpec, catalog: &dyn Catalog) -> Result<()> {
    let mut first: Option<(String, String)> = None;
    let arms = spec
        .arms
        .iter()
        .map(|a| (a.model.as_deref(), &a.version))
        .chain(
            spec.shadows
                .iter()
                .map(|s| (s.model.as_deref(), &s.version)),
        );
    let names = spec.arm_names().into_iter().chain(spec.shadow_names());
    for ((model, version), name) in arms.zip(names) {
        let model = model.unwrap_or(&spec.model);
        let (_, sig) = catalog
            .resolve(model, &version.as_string())
            .map_err(|e| Error::Invalid(format!("arm '{name}': {e}")))?;
        match &first {
            None => first = Some((name, sig)),
            Some((first_name, s)) if *s != sig => {
                return Err(Error::Invalid(format!(
                    "arm '{name}' has a different signature than arm '{first_name}': every arm must take and give the same tensors ({sig} vs {s})"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn load(path: &Path) -> Result<Inner> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Storage(format!("cannot read {}: {e}", path.display())))?;
    let inner: Inner = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Storage(format!("{} is not an experiment file: {e}", path.display()))
    })?;
    let k = inner.spec.arms.len();
    if !inner.table.is_valid_for(k)
        || inner.arms.len() != k
        || inner.weights.len() != k
        || inner.shadows.len() != inner.spec.shadows.len()
    {
        return Err(Error::Storage(format!(
            "{} is inconsistent (arms, weights and bucket table disagree)",
            path.display()
        )));
    }
    Ok(inner)
}

/// Writes `path` whole or not at all: a temporary file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let storage =
        |e: std::io::Error| Error::Storage(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(storage)?;
    f.write_all(bytes).map_err(storage)?;
    f.sync_all().map_err(storage)?;
    std::fs::rename(&tmp, path).map_err(storage)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Event {
    fn new(kind: &str, arm: Option<&str>, message: String) -> Event {
        Event {
            time_ms: now_ms(),
            kind: kind.into(),
            arm: arm.map(str::to_owned),
            rule: None,
            value: None,
            threshold: None,
            message,
        }
    }
}

impl Inner {
    fn event(&mut self, e: Event) {
        tracing::info!(experiment = %self.name, kind = %e.kind, arm = ?e.arm, "{}", e.message);
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.updated_ms = e.time_ms;
        self.events.push(e);
    }

    fn router(&self) -> Router {
        let names = self.spec.arm_names();
        let target = |name: String, model: &Option<String>, v: &config::VersionRef| Target {
            name,
            model: model.clone().unwrap_or_else(|| self.spec.model.clone()),
            version: v.as_string(),
        };
        Router {
            running: self.spec.state == RunState::Running,
            seed: self.spec.seed.clone().unwrap_or_else(|| self.name.clone()),
            unit: self.spec.unit.clone().map(Arc::new),
            table: self.table.clone(),
            arms: self
                .spec
                .arms
                .iter()
                .zip(names)
                .map(|(a, n)| Arc::new(target(n, &a.model, &a.version)))
                .collect(),
            shadows: self
                .spec
                .shadows
                .iter()
                .zip(self.spec.shadow_names())
                .map(|(s, n)| (Arc::new(target(n, &s.model, &s.version)), s.percent / 100.0))
                .collect(),
            sticky_units: self.spec.allocation == Allocation::Thompson && self.spec.unit.is_some(),
        }
    }

    /// Weights with tripped arms at 0.
    fn effective(&self, mut w: Vec<f64>) -> Vec<f64> {
        for (w, t) in w.iter_mut().zip(&self.tripped) {
            if *t {
                *w = 0.0;
            }
        }
        w
    }
}

impl Experiment {
    fn create(name: &str, spec: ExperimentSpec, metrics: Metrics) -> Experiment {
        let k = spec.arms.len();
        let weights: Vec<f64> = spec.arms.iter().map(|a| a.weight).collect();
        let now = now_ms();
        let mut inner = Inner {
            name: name.to_owned(),
            table: BucketTable::new(&weights),
            weights,
            arms: vec![ArmStats::default(); k],
            shadows: vec![ArmStats::default(); spec.shadows.len()],
            expected: vec![0.0; k],
            tripped: vec![false; k],
            events: Vec::new(),
            always_valid_min: vec![None; k],
            sticky: HashMap::new(),
            rewards_since_update: 0,
            created_ms: now,
            updated_ms: now,
            promoted: None,
            others: None,
            spec,
        };
        inner.event(Event::new(
            "created",
            None,
            format!("experiment created on model '{}'", inner.spec.model),
        ));
        Experiment::from_inner(inner, metrics)
    }

    fn from_inner(inner: Inner, metrics: Metrics) -> Experiment {
        let names = inner.spec.arm_names();
        let arm_metrics = names
            .iter()
            .map(|a| metrics.arm(&inner.name, a))
            .collect::<Vec<_>>();
        for (m, w) in arm_metrics.iter().zip(&inner.weights) {
            m.weight.set(*w);
        }
        let shadow_metrics = inner
            .spec
            .shadow_names()
            .iter()
            .map(|a| metrics.arm(&inner.name, a))
            .collect();
        Experiment {
            name: inner.name.clone(),
            router: ArcSwap::from_pointee(inner.router()),
            inner: Mutex::new(inner),
            arm_metrics,
            shadow_metrics,
            metrics,
            dirty: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self) -> ExperimentSpec {
        self.lock().spec.clone()
    }

    pub fn model(&self) -> String {
        self.lock().spec.model.clone()
    }

    /// Every model it serves ([`ExperimentSpec::models`]).
    pub fn models(&self) -> Vec<String> {
        self.lock()
            .spec
            .models()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    pub fn is_running(&self) -> bool {
        self.router.load().running
    }

    /// Where the unit key is read from, if the experiment has one.
    pub fn unit_key(&self) -> Option<Arc<UnitKey>> {
        self.router.load().unit.clone()
    }

    pub fn target(&self, a: Assignment) -> Arc<Target> {
        Arc::clone(&self.router.load().arms[a.arm])
    }

    pub fn shadow_target(&self, i: usize) -> Arc<Target> {
        Arc::clone(&self.router.load().shadows[i].0)
    }

    /// Picks the arm for a request: by the unit key's bucket when there is one (the same
    /// unit always gets the same arm while the weights stand), else by a random bucket.
    pub fn assign(&self, unit: Option<&str>) -> Assignment {
        let router = self.router.load();
        let bucket = match unit {
            Some(u) => assign::bucket(&router.seed, u),
            None => rand::rng().random_range(0..BUCKETS),
        };
        let by_bucket = router.table.arm_of(bucket);
        if let (true, Some(u)) = (router.sticky_units, unit) {
            let mut inner = self.lock();
            if let Some(&arm) = inner.sticky.get(u) {
                return Assignment {
                    arm: usize::from(arm),
                };
            }
            if inner.sticky.len() < MAX_STICKY_UNITS {
                inner.sticky.insert(u.to_owned(), by_bucket as u8);
            }
        }
        Assignment { arm: by_bucket }
    }

    /// The shadow arms that get a copy of this request (each by its own percent).
    pub fn shadows_for_request(&self) -> Vec<usize> {
        let router = self.router.load();
        if router.shadows.is_empty() {
            return Vec::new();
        }
        let mut rng = rand::rng();
        (0..router.shadows.len())
            .filter(|&i| rng.random::<f64>() < router.shadows[i].1)
            .collect()
    }

    /// Records one routed request's outcome and applies the guardrails on it.
    pub fn record(&self, a: Assignment, o: Outcome) {
        let ms = o.latency.as_secs_f64() * 1e3;
        let m = &self.arm_metrics[a.arm];
        m.requests.inc();
        m.latency.observe(o.latency.as_secs_f64());
        if o.error {
            m.errors.inc();
        }
        let mut inner = self.lock();
        inner.arms[a.arm].record(ms, o.error);
        let total: f64 = inner.weights.iter().sum();
        if total > 0.0 {
            let inner = &mut *inner;
            for (e, w) in inner.expected.iter_mut().zip(&inner.weights) {
                *e += w / total;
            }
        }
        if !inner.tripped[a.arm] {
            let tripped = inner
                .spec
                .guardrails
                .iter()
                .find_map(|rule| Some((rule.clone(), check_guardrail(&inner, a.arm, rule)?)));
            if let Some((rule, trip)) = tripped {
                self.trip(&mut inner, a.arm, &rule, trip);
            }
        }
        drop(inner);
        self.dirty.store(true, Ordering::Release);
    }

    /// Records a shadow request's outcome.
    pub fn record_shadow(&self, i: usize, o: Outcome) {
        let m = &self.shadow_metrics[i];
        m.requests.inc();
        m.latency.observe(o.latency.as_secs_f64());
        if o.error {
            m.errors.inc();
        }
        self.lock().shadows[i].record(o.latency.as_secs_f64() * 1e3, o.error);
        self.dirty.store(true, Ordering::Release);
    }

    fn reward(&self, arm: usize, r: f64) -> std::result::Result<(), String> {
        let mut inner = self.lock();
        if inner.spec.outcome == OutcomeKind::Binary && r != 0.0 && r != 1.0 {
            return Err(format!(
                "experiment '{}' has a binary outcome: reward must be 0 or 1, got {r}",
                self.name
            ));
        }
        inner.arms[arm].reward(r);
        let m = &self.arm_metrics[arm];
        m.rewards.inc();
        m.reward_sum.inc_by(r);
        let control = inner.spec.control_index();
        // The reward guardrail, on the arm that got the reward (or every arm, when the
        // control's own mean moved).
        let rules: Vec<Guardrail> = inner
            .spec
            .guardrails
            .iter()
            .filter(|g| matches!(g, Guardrail::RewardWorse { .. }))
            .cloned()
            .collect();
        let arms: Vec<usize> = if arm == control {
            (0..inner.arms.len()).filter(|&i| i != control).collect()
        } else {
            vec![arm]
        };
        for i in arms {
            if inner.tripped[i] {
                continue;
            }
            for rule in &rules {
                if let Some(trip) = check_guardrail(&inner, i, rule) {
                    self.trip(&mut inner, i, rule, trip);
                    break;
                }
            }
        }
        inner.rewards_since_update += 1;
        if inner.spec.allocation == Allocation::Thompson
            && inner.rewards_since_update >= inner.spec.bandit.update_every
        {
            inner.rewards_since_update = 0;
            self.reallocate(&mut inner);
        }
        drop(inner);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Thompson sampling: each live arm's weight becomes its probability of being the best
    /// (Monte Carlo over the posteriors), mixed with a floor so no arm stops learning —
    /// once every live arm has `min_exposures`.
    fn reallocate(&self, inner: &mut Inner) {
        let b = inner.spec.bandit.clone();
        let live: Vec<usize> = (0..inner.arms.len())
            .filter(|&i| !inner.tripped[i])
            .collect();
        if live.len() < 2
            || live
                .iter()
                .any(|&i| inner.arms[i].reward.n < b.min_exposures)
        {
            return;
        }
        let posteriors: Vec<Posterior> = live
            .iter()
            .map(|&i| {
                let a = &inner.arms[i];
                match inner.spec.outcome {
                    OutcomeKind::Binary => Posterior::Beta {
                        successes: a.successes,
                        failures: a.reward.n - a.successes,
                    },
                    OutcomeKind::Continuous => Posterior::Normal { moments: a.reward },
                }
            })
            .collect();
        let shares = stats::thompson_shares(&posteriors, 2000, &mut rand::rng());
        let floor = b.floor / live.len() as f64;
        let mut weights = vec![0.0; inner.arms.len()];
        for (&i, s) in live.iter().zip(shares) {
            weights[i] = floor + (1.0 - b.floor) * s;
        }
        self.apply_weights(inner, weights);
        let msg = format!(
            "bandit reallocated: {}",
            weight_list(&inner.spec.arm_names(), &inner.weights)
        );
        inner.event(Event::new("bandit", None, msg));
    }

    fn trip(
        &self,
        inner: &mut Inner,
        arm: usize,
        rule: &Guardrail,
        (value, threshold): (f64, f64),
    ) {
        inner.tripped[arm] = true;
        let arm_name = inner.spec.arm_names()[arm].clone();
        self.metrics
            .guardrail_trips
            .with_label_values(&[self.name.as_str(), arm_name.as_str(), rule.name()])
            .inc();
        let message = format!(
            "guardrail {} tripped on arm '{arm_name}': {value:.6} against a limit of {threshold}; the arm's weight is now 0",
            rule.name()
        );
        tracing::warn!(experiment = %self.name, arm = %arm_name, rule = rule.name(), value, threshold, "guardrail tripped: arm taken out");
        let weights = inner.weights.clone();
        self.apply_weights(inner, weights);
        inner.event(Event {
            rule: Some(rule.name().into()),
            value: Some(value),
            threshold: Some(threshold),
            ..Event::new("guardrail", Some(&arm_name), message)
        });
        if inner.weights.iter().all(|&w| w == 0.0) {
            inner.spec.state = RunState::Stopped;
            inner.event(Event::new(
                "stopped",
                None,
                "every arm was taken out by a guardrail: the experiment stopped".into(),
            ));
            // The model → experiment map still holds this experiment; its router says it
            // is not running, and the request path checks that.
            self.router.store(Arc::new(inner.router()));
        }
    }

    /// Installs new weights (tripped arms stay at 0) and moves the buckets.
    fn apply_weights(&self, inner: &mut Inner, weights: Vec<f64>) {
        let w = inner.effective(weights);
        if w.iter().sum::<f64>() > 0.0 {
            inner.table.rebalance(&w);
        }
        for (m, w) in self.arm_metrics.iter().zip(&w) {
            m.weight.set(*w);
        }
        inner.weights = w;
        self.router.store(Arc::new(inner.router()));
    }

    /// A new configuration for the same arms.
    fn reconfigure(&self, spec: ExperimentSpec) -> Result<()> {
        let mut inner = self.lock();
        let same_arms = spec.arm_names() == inner.spec.arm_names()
            && spec
                .arms
                .iter()
                .zip(&inner.spec.arms)
                .all(|(a, b)| a.model == b.model && a.version == b.version)
            && spec.model == inner.spec.model;
        if !same_arms {
            return Err(Error::Conflict(format!(
                "experiment '{}' already has arms {:?} on model '{}': arms cannot change (their statistics would mix); create a new experiment",
                self.name,
                inner.spec.arm_names(),
                inner.spec.model
            )));
        }
        let shadows_changed = spec.shadow_names() != inner.spec.shadow_names();
        let was_running = inner.spec.state == RunState::Running;
        let weights_changed = spec
            .arms
            .iter()
            .zip(&inner.spec.arms)
            .any(|(a, b)| a.weight != b.weight);
        let state = spec.state;
        if shadows_changed {
            inner.shadows = vec![ArmStats::default(); spec.shadows.len()];
        }
        inner.spec = spec;
        if weights_changed {
            let w = inner.spec.arms.iter().map(|a| a.weight).collect();
            self.apply_weights(&mut inner, w);
            let msg = format!(
                "weights set to {}",
                weight_list(&inner.spec.arm_names(), &inner.weights)
            );
            inner.event(Event::new("weights", None, msg));
        }
        match (was_running, state) {
            (true, RunState::Stopped) => inner.event(Event::new("stopped", None, "stopped".into())),
            (false, RunState::Running) => {
                inner.event(Event::new("started", None, "started".into()))
            }
            _ => inner.event(Event::new("updated", None, "configuration updated".into())),
        }
        self.router.store(Arc::new(inner.router()));
        Ok(())
    }

    fn set_running(&self, running: bool, why: &str) {
        let mut inner = self.lock();
        let state = if running {
            RunState::Running
        } else {
            RunState::Stopped
        };
        if inner.spec.state != state {
            inner.spec.state = state;
            let kind = if running { "started" } else { "stopped" };
            inner.event(Event::new(kind, None, why.to_owned()));
        }
        self.router.store(Arc::new(inner.router()));
    }

    fn remove_metrics(&self) {
        let inner = self.lock();
        for a in inner
            .spec
            .arm_names()
            .iter()
            .chain(&inner.spec.shadow_names())
        {
            self.metrics.remove_arm(&self.name, a);
        }
    }

    /// The results as of now.
    /// This replica's statistics, to publish for the fleet.
    pub fn contribution(&self) -> Contribution {
        self.lock().contribution()
    }

    /// The other replicas' merged statistics (`None`: this replica's alone): results, and the
    /// SRM check and tests in them, are then the fleet's.
    pub fn set_others(&self, others: Option<Contribution>) {
        self.lock().others = others;
    }

    pub fn results(&self) -> results::Results {
        let mut inner = self.lock();
        let fleet = inner.others.clone().and_then(|others| {
            let mut all = inner.contribution();
            all.merge(&others).then_some(all)
        });
        let mut snapshot = inner.snapshot();
        if let Some(f) = &fleet {
            snapshot.arms = &f.arms;
            snapshot.shadows = &f.shadows;
            snapshot.expected = &f.expected;
        }
        let mut r = results::compute(&snapshot);
        // Report, and keep, the always-valid p-values' running minimum across reads.
        let alpha = inner.spec.alpha;
        for (arm, min) in r.arms.iter_mut().zip(inner.always_valid_min.iter_mut()) {
            if let Some(p) = arm.vs_control.as_ref().and_then(|c| c.always_valid_p_value) {
                *min = Some(stats::running_min(*min, p));
            }
            if let (Some(c), Some(min)) = (arm.vs_control.as_mut(), *min) {
                c.always_valid_p_value = Some(min);
                c.significant = min < alpha;
            }
        }
        r
    }
}

impl Inner {
    fn contribution(&self) -> Contribution {
        Contribution {
            arm_names: self.spec.arm_names(),
            shadow_names: self.spec.shadow_names(),
            arms: self.arms.clone(),
            shadows: self.shadows.clone(),
            expected: self.expected.clone(),
        }
    }

    fn snapshot(&self) -> results::Snapshot<'_> {
        results::Snapshot {
            name: &self.name,
            spec: &self.spec,
            weights: &self.weights,
            arms: &self.arms,
            shadows: &self.shadows,
            expected: &self.expected,
            tripped: &self.tripped,
            events: &self.events,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            promoted: self.promoted.as_deref(),
        }
    }
}

fn weight_list(names: &[String], w: &[f64]) -> String {
    let total: f64 = w.iter().sum();
    names
        .iter()
        .zip(w)
        .map(|(n, w)| {
            format!(
                "{n}={:.1}%",
                if total > 0.0 { w / total * 100.0 } else { 0.0 }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Some((value, threshold))` when `rule` trips on arm `i`.
fn check_guardrail(inner: &Inner, i: usize, rule: &Guardrail) -> Option<(f64, f64)> {
    let a = &inner.arms[i];
    match *rule {
        Guardrail::ErrorRate { max, min_requests } => {
            let rate = a.error_rate()?;
            (a.exposures >= min_requests && rate > max).then_some((rate, max))
        }
        Guardrail::LatencyP99 {
            max_ms,
            min_requests,
        } => {
            if a.exposures < min_requests {
                return None;
            }
            let p99 = a.latency_ms(0.99)?;
            (p99 > max_ms).then_some((p99, max_ms))
        }
        Guardrail::RewardWorse { min_samples } => {
            let c = inner.spec.control_index();
            let ctl = &inner.arms[c];
            if i == c || a.reward.n < min_samples || ctl.reward.n < min_samples {
                return None;
            }
            let av = stats::always_valid(
                &ctl.reward,
                &a.reward,
                inner.spec.alpha,
                stats::DEFAULT_SEQUENTIAL_TUNING,
            )?;
            let worse = a.reward.mean < ctl.reward.mean;
            (worse && av.p_value < inner.spec.alpha).then_some((av.p_value, inner.spec.alpha))
        }
    }
}

#[cfg(test)]
mod tests;
