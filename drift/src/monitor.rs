//! One model's monitor (spec, reference or its capture, the live window, the evaluated
//! windows, performance tracking) and [`Monitors`], every model's, persisted under one
//! directory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::evaluate::{self, Report, Summary};
use crate::metrics::Metrics;
use crate::record::{Predictions, Record, Truth, Values};
use crate::reference::{RefColumn, Reference, ReferenceBuilder};
use crate::spec::MonitorSpec;
use crate::tracker::{Tracker, VersionPerformance};
use crate::window::{Current, Window};
use crate::{Error, Result};

/// One model's monitor.
#[derive(Debug)]
pub struct Monitor {
    model: String,
    spec: MonitorSpec,
    reference: Option<Arc<Reference>>,
    capture: Option<ReferenceBuilder>,
    window: Window,
    reports: VecDeque<Report>,
    windows: u64,
    tracker: Tracker,
    /// Lines in `reports.jsonl` (appended per window, rewritten at twice the history).
    logged: usize,
}

/// One request's predictions, kept until its truth comes (joined by the request id).
#[derive(Debug, Clone)]
pub struct Predicted {
    pub id: String,
    pub time_ms: u64,
    pub predictions: Predictions,
}

/// What `monitor.json` holds; the reference and the evaluated windows have their own files.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    spec: MonitorSpec,
    windows: u64,
}

impl Monitor {
    fn new(model: &str, spec: MonitorSpec) -> Monitor {
        let tracker = tracker_for(&spec);
        Monitor {
            model: model.to_owned(),
            spec,
            reference: None,
            capture: None,
            window: Window::default(),
            reports: VecDeque::new(),
            windows: 0,
            tracker,
            logged: 0,
        }
    }

    pub fn spec(&self) -> &MonitorSpec {
        &self.spec
    }

    /// Takes a sampled request: into the reference being captured, or the window. Returns
    /// the windows it closed, evaluated.
    fn ingest(&mut self, r: &Record, predicted: Vec<Predicted>) -> Result<Vec<Report>> {
        for p in predicted {
            self.tracker
                .remember(&p.id, &r.version, p.time_ms, p.predictions);
        }
        let Some(reference) = self.reference.clone() else {
            let wanted = self.spec.capture_reference;
            let version_ok = self
                .spec
                .reference_version
                .as_ref()
                .is_none_or(|v| *v == r.version);
            if wanted > 0 && version_ok {
                let b = self.capture.get_or_insert_with(ReferenceBuilder::default);
                // Exactly `capture_reference` rows: a record that straddles the end gives
                // the rest of its rows to the first window.
                let needed = wanted.saturating_sub(b.rows());
                let rest = if r.rows > needed {
                    b.push_record(&r.rows_range(0, needed))?;
                    Some(r.rows_range(needed, r.rows))
                } else {
                    b.push_record(r)?;
                    None
                };
                if b.rows() >= wanted {
                    let b = self.capture.take().expect("capturing");
                    let source = match &self.spec.reference_version {
                        Some(v) => format!("capture:{v}"),
                        None => "capture".into(),
                    };
                    self.reference = Some(Arc::new(b.finish(&source, r.time_ms)?));
                    if let Some(rest) = rest {
                        return self.ingest(&rest, Vec::new());
                    }
                }
            }
            return Ok(Vec::new());
        };
        let closed = self.window.push(&self.spec.window, r);
        Ok(closed
            .iter()
            .map(|c| self.evaluate(&reference, c))
            .collect())
    }

    fn tick(&mut self, now_ms: u64) -> Option<Report> {
        let reference = self.reference.clone()?;
        let c = self.window.tick(&self.spec.window, now_ms)?;
        Some(self.evaluate(&reference, &c))
    }

    fn evaluate(&mut self, reference: &Reference, c: &Current) -> Report {
        self.windows += 1;
        let mut report = evaluate::evaluate(&self.spec, reference, c, self.windows);
        if let Some(target) = &self.spec.target
            && let Some(r) = reference.columns.get(target)
        {
            let truths = Values::Numbers(self.tracker.recent_truths());
            report.label_drift = evaluate::column(target, &self.spec.column(target), r, &truths);
        }
        self.reports.push_back(report.clone());
        while self.reports.len() > self.spec.history {
            self.reports.pop_front();
        }
        report
    }

    /// What `GET /api/drift/{model}` shows.
    pub fn status(&self, last: usize) -> Status {
        let skip = self.reports.len().saturating_sub(last);
        Status {
            model: self.model.clone(),
            spec: self.spec.clone(),
            reference: self.reference.as_deref().map(profile),
            // Capturing: from the first sampled row until the reference is complete.
            capture: (self.reference.is_none() && self.spec.capture_reference > 0).then(|| {
                Capture {
                    rows: self.capture.as_ref().map_or(0, ReferenceBuilder::rows),
                    target: self.spec.capture_reference,
                }
            }),
            window_rows: self.window.rows(),
            windows: self.windows,
            drift_detected: self.reports.back().map(|r| r.drift_detected),
            reports: self.reports.iter().skip(skip).cloned().collect(),
            performance: self.tracker.performance(),
            predictions_expired: self.tracker.expired,
        }
    }
}

fn tracker_for(spec: &MonitorSpec) -> Tracker {
    let p = &spec.performance;
    Tracker::new(p.capacity, p.ttl_secs * 1000, p.window)
}

/// A monitor's state, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub model: String,
    pub spec: MonitorSpec,
    pub reference: Option<Profile>,
    /// Progress of a reference being captured from live traffic.
    pub capture: Option<Capture>,
    /// Rows in the open window.
    pub window_rows: usize,
    /// Windows evaluated so far.
    pub windows: u64,
    /// The last window's verdict.
    pub drift_detected: Option<bool>,
    /// The last evaluated windows, oldest first.
    pub reports: Vec<Report>,
    pub performance: Vec<VersionPerformance>,
    /// Predictions dropped before their truth arrived.
    pub predictions_expired: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capture {
    pub rows: usize,
    pub target: usize,
}

/// The reference's profile: summary statistics per column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub rows: usize,
    pub source: String,
    pub created_ms: u64,
    pub columns: BTreeMap<String, Summary>,
    /// `(dim, rows)` per embedding.
    pub embeddings: BTreeMap<String, (usize, usize)>,
}

fn profile(r: &Reference) -> Profile {
    Profile {
        rows: r.rows,
        source: r.source.clone(),
        created_ms: r.created_ms,
        columns: r
            .columns
            .iter()
            .map(|(k, c)| {
                let s = match c {
                    RefColumn::Numeric { sorted, missing } => {
                        evaluate::numeric_summary(sorted, *missing, evaluate::distinct(sorted))
                    }
                    RefColumn::Categorical { counts, missing } => {
                        evaluate::categorical_summary(counts, *missing)
                    }
                };
                (k.clone(), s)
            })
            .collect(),
        embeddings: r
            .embeddings
            .iter()
            .map(|(k, e)| (k.clone(), (e.dim, e.rows())))
            .collect(),
    }
}

/// What the request path reads for each monitored model, without a lock.
#[derive(Debug)]
pub struct Sampler {
    pub spec: Arc<MonitorSpec>,
    seen: AtomicU64,
}

impl Sampler {
    /// Systematic sampling: request n is taken when ⌊(n+1)·rate⌋ > ⌊n·rate⌋, so exactly a
    /// `rate` share of the requests is, evenly spread.
    pub fn sample(&self) -> bool {
        let rate = self.spec.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }
}

/// What became of a batch of truths.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Labelled {
    /// Indices of the truths joined with their predictions.
    pub joined: Vec<usize>,
    /// `(index, why)` of the truths that fit no waiting prediction.
    pub rejected: Vec<(usize, String)>,
}

/// Every model's monitor.
pub struct Monitors {
    dir: Option<PathBuf>,
    monitors: RwLock<BTreeMap<String, Arc<Mutex<Monitor>>>>,
    samplers: ArcSwap<HashMap<String, Arc<Sampler>>>,
    metrics: Metrics,
}

fn lock(m: &Mutex<Monitor>) -> std::sync::MutexGuard<'_, Monitor> {
    // A panic while a monitor was locked leaves its state as it was at the last complete
    // step; keep serving it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Model names become directory names: the registry's rules, checked again here.
fn check_name(model: &str) -> Result<()> {
    let ok = !model.is_empty()
        && model.len() <= 128
        && !model.starts_with('.')
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "'{model}' is not a model name (letters, digits, '-', '_', '.'; at most 128)"
        )))
    }
}

impl Monitors {
    /// Opens the monitors persisted under `dir` (created if missing); `None` keeps them in
    /// memory only.
    pub fn open(dir: Option<PathBuf>, registry: &prometheus::Registry) -> Result<Monitors> {
        let metrics = Metrics::new(registry)
            .map_err(|e| Error::Storage(format!("registering drift metrics: {e}")))?;
        let mut loaded = BTreeMap::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("creating {}: {e}", dir.display())))?;
            let entries = std::fs::read_dir(dir)
                .map_err(|e| Error::Storage(format!("reading {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(model) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                if !path.join("monitor.json").is_file() || check_name(&model).is_err() {
                    continue;
                }
                let m = load(&model, &path)?;
                if let Some(r) = m.reports.back() {
                    metrics.report(&model, r);
                }
                loaded.insert(model, Arc::new(Mutex::new(m)));
            }
        }
        let monitors = Monitors {
            dir,
            monitors: RwLock::new(loaded),
            samplers: ArcSwap::from_pointee(HashMap::new()),
            metrics,
        };
        monitors.publish();
        Ok(monitors)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The request path's view of a model's monitor: `None` when it has none.
    pub fn sampler(&self, model: &str) -> Option<Arc<Sampler>> {
        self.samplers.load().get(model).cloned()
    }

    fn get(&self, model: &str) -> Option<Arc<Mutex<Monitor>>> {
        self.monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(model)
            .cloned()
    }

    /// Refreshes the request path's samplers from the monitors (after a create, an update
    /// or a delete).
    fn publish(&self) {
        let monitors = self
            .monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.samplers.load();
        let map = monitors
            .iter()
            .map(|(k, m)| {
                let spec = Arc::new(lock(m).spec.clone());
                // Keep the count of an unchanged sampler, so its rate stays exact.
                let seen = old
                    .get(k)
                    .filter(|s| *s.spec == *spec)
                    .map_or(0, |s| s.seen.load(Ordering::Relaxed));
                (
                    k.clone(),
                    Arc::new(Sampler {
                        spec,
                        seen: AtomicU64::new(seen),
                    }),
                )
            })
            .collect();
        self.samplers.store(Arc::new(map));
    }

    /// Creates a model's monitor, or changes its spec (the reference and the evaluated
    /// windows stay; the open window restarts). Returns true when it was created.
    pub fn put(&self, model: &str, spec: MonitorSpec) -> Result<bool> {
        check_name(model)?;
        spec.validate()?;
        let created = {
            let mut monitors = self
                .monitors
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match monitors.get(model) {
                Some(m) => {
                    let mut m = lock(m);
                    if m.spec.performance != spec.performance {
                        m.tracker = tracker_for(&spec);
                    }
                    m.window = Window::default();
                    m.spec = spec;
                    self.save(&mut m)?;
                    false
                }
                None => {
                    let mut m = Monitor::new(model, spec);
                    self.save(&mut m)?;
                    monitors.insert(model.to_owned(), Arc::new(Mutex::new(m)));
                    true
                }
            }
        };
        self.publish();
        Ok(created)
    }

    /// Deletes a model's monitor and what it persisted. Returns false when it had none.
    pub fn delete(&self, model: &str) -> Result<bool> {
        let removed = self
            .monitors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(model);
        let Some(m) = removed else { return Ok(false) };
        self.publish();
        let m = lock(&m);
        self.metrics
            .forget(model, m.reports.back(), &m.tracker.performance());
        if let Some(dir) = &self.dir {
            let path = dir.join(model);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| Error::Storage(format!("removing {}: {e}", path.display())))?;
            }
        }
        Ok(true)
    }

    /// Sets a model's reference (creating a default monitor when it has none); a capture in
    /// progress stops.
    pub fn set_reference(&self, model: &str, reference: Reference) -> Result<()> {
        check_name(model)?;
        let m = match self.get(model) {
            Some(m) => m,
            None => {
                self.put(model, MonitorSpec::default())?;
                self.get(model)
                    .ok_or_else(|| Error::NotFound(model.to_owned()))?
            }
        };
        let mut m = lock(&m);
        m.capture = None;
        m.window = Window::default();
        m.reference = Some(Arc::new(reference));
        self.save_reference(&m)?;
        self.save(&mut m)
    }

    /// Parses and sets a reference upload (CSV with a header row, or JSON columns); returns
    /// its profile.
    pub fn upload_reference(&self, model: &str, body: &[u8], csv: bool) -> Result<Profile> {
        let r = if csv {
            Reference::from_csv(body, now_ms())?
        } else {
            Reference::from_json(body, now_ms())?
        };
        let p = profile(&r);
        self.set_reference(model, r)?;
        Ok(p)
    }

    /// Creates or changes a monitor from a JSON spec (empty or blank: the defaults).
    /// Returns true when it was created.
    pub fn put_json(&self, model: &str, spec: &[u8]) -> Result<bool> {
        let spec = if spec.iter().all(u8::is_ascii_whitespace) {
            MonitorSpec::default()
        } else {
            MonitorSpec::from_json(spec)?
        };
        self.put(model, spec)
    }

    /// A model's reference, as stored.
    pub fn reference(&self, model: &str) -> Option<Arc<Reference>> {
        self.get(model).and_then(|m| lock(&m).reference.clone())
    }

    /// Drops a model's reference (a capture restarts if the spec asks for one).
    pub fn clear_reference(&self, model: &str) -> Result<bool> {
        let Some(m) = self.get(model) else {
            return Ok(false);
        };
        let mut m = lock(&m);
        let had = m.reference.take().is_some();
        m.window = Window::default();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(model).join("reference.json"));
        }
        Ok(had)
    }

    pub fn status(&self, model: &str, last: usize) -> Option<Status> {
        self.get(model).map(|m| lock(&m).status(last))
    }

    pub fn models(&self) -> Vec<String> {
        self.monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Takes one sampled request (its record as the Kafka topic carries it): evaluates the
    /// windows it closes, exports and persists them.
    pub fn ingest(&self, r: &Record) {
        let predicted = r.predictions.clone().map(|predictions| Predicted {
            id: r.id.clone(),
            time_ms: r.time_ms,
            predictions,
        });
        self.ingest_requests(r, 1, predicted.into_iter().collect());
    }

    /// Takes `requests` consecutive sampled requests of one model version at once (the
    /// server's worker merges what it finds queued): `r` holds their rows, in order
    /// (`r.id` and `r.predictions` are not used), `predicted` each request's predictions.
    /// The same windows and verdicts as one [`Monitors::ingest`] per request, for one record's
    /// allocations instead of one per request.
    pub fn ingest_requests(&self, r: &Record, requests: u64, predicted: Vec<Predicted>) {
        let Some(m) = self.get(&r.model) else { return };
        let mut m = lock(&m);
        let had_reference = m.reference.is_some();
        match m.ingest(r, predicted) {
            Ok(reports) => {
                self.metrics
                    .samples
                    .with_label_values(&[&r.model])
                    .inc_by(requests as f64);
                if !had_reference && m.reference.is_some() {
                    self.log_err(self.save_reference(&m));
                }
                for rep in &reports {
                    self.metrics.report(&r.model, rep);
                }
                if !reports.is_empty() {
                    self.log_err(self.append(&mut m, &reports));
                }
            }
            Err(e) => {
                tracing::warn!(model = %r.model, error = %e, "drift sample refused");
                self.metrics
                    .dropped
                    .with_label_values(&[&r.model, "invalid"])
                    .inc_by(requests as f64);
            }
        }
    }

    /// Closes the timed windows that are due.
    pub fn tick(&self) {
        let now = now_ms();
        for model in self.models() {
            let Some(m) = self.get(&model) else { continue };
            let mut m = lock(&m);
            if let Some(rep) = m.tick(now) {
                self.metrics.report(&model, &rep);
                self.log_err(self.append(&mut m, std::slice::from_ref(&rep)));
            }
        }
    }

    /// Joins truths with the predictions they name (whichever model served them). A truth
    /// for a request no monitor sampled is not an error here: the caller may count it
    /// elsewhere (experiments). Returns the joined count and the misfits.
    pub fn label(&self, truths: &[(usize, Truth)]) -> Labelled {
        self.label_within(truths, &|_| true)
    }

    /// [`label`](Self::label) for a caller who may reach only the models `within` accepts:
    /// the other models' predictions are not joined (as if never sampled).
    pub fn label_within(
        &self,
        truths: &[(usize, Truth)],
        within: &dyn Fn(&str) -> bool,
    ) -> Labelled {
        let mut out = Labelled::default();
        let now = now_ms();
        let monitors: Vec<(String, Arc<Mutex<Monitor>>)> = self
            .monitors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut touched: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (index, t) in truths {
            for (model, m) in monitors.iter().filter(|(model, _)| within(model)) {
                let mut m = lock(m);
                if !m.tracker.knows(&t.id) {
                    continue;
                }
                match m.tracker.label(t, now) {
                    Ok(Some(version)) => {
                        out.joined.push(*index);
                        touched.entry(model.as_str()).or_default().push(version);
                    }
                    Ok(None) => {}
                    Err(why) => out.rejected.push((*index, why)),
                }
                break;
            }
        }
        for (model, mut versions) in touched {
            versions.sort();
            versions.dedup();
            if let Some((_, m)) = monitors.iter().find(|(k, _)| k == model) {
                let m = lock(m);
                for v in versions {
                    if let Some(p) = m.tracker.version(&v) {
                        self.metrics.performance(model, &p);
                    }
                }
            }
        }
        out
    }

    fn log_err(&self, r: Result<()>) {
        if let Err(e) = r {
            tracing::error!(error = %e, "persisting a drift monitor");
        }
    }

    /// Persists a monitor in full: `monitor.json` (spec, windows evaluated) and its
    /// evaluated windows, `reports.jsonl` rewritten. Both atomic (temporary file, fsync,
    /// rename).
    fn save(&self, m: &mut Monitor) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let dir = dir.join(&m.model);
        let saved = Saved {
            spec: m.spec.clone(),
            windows: m.windows,
        };
        write_json(&dir.join("monitor.json"), &saved)?;
        let mut lines = Vec::new();
        for r in &m.reports {
            report_line(&mut lines, r)?;
        }
        write_atomic(&dir.join("reports.jsonl"), &lines)?;
        m.logged = m.reports.len();
        Ok(())
    }

    /// Persists newly evaluated windows: one line each appended to `reports.jsonl` — no
    /// fsync and no rewrite of the history per window, which a monitor closing windows many
    /// times a second cannot afford. A killed process keeps what it appended (the kernel has
    /// it); a machine that loses power may lose the last windows, and a torn last line is
    /// skipped when the file is read. Rewritten in full once it holds twice the history.
    fn append(&self, m: &mut Monitor, new: &[Report]) -> Result<()> {
        use std::io::Write;
        let Some(dir) = &self.dir else { return Ok(()) };
        if m.logged + new.len() > 2 * m.spec.history.max(1) {
            return self.save(m);
        }
        let path = dir.join(&m.model).join("reports.jsonl");
        let mut lines = Vec::new();
        for r in new {
            report_line(&mut lines, r)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&lines))
            .map_err(|e| Error::Storage(format!("appending to {}: {e}", path.display())))?;
        m.logged += new.len();
        Ok(())
    }

    fn save_reference(&self, m: &Monitor) -> Result<()> {
        let (Some(dir), Some(r)) = (&self.dir, &m.reference) else {
            return Ok(());
        };
        write_json(&dir.join(&m.model).join("reference.json"), r.as_ref())
    }
}

fn load(model: &str, dir: &Path) -> Result<Monitor> {
    let read = |name: &str| -> Result<Option<Vec<u8>>> {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Storage(format!("reading {}: {e}", p.display()))),
        }
    };
    let corrupt = |name: &str, e: serde_json::Error| {
        Error::Storage(format!("{}: {e}", dir.join(name).display()))
    };
    let saved: Saved = match read("monitor.json")? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt("monitor.json", e))?,
        None => return Err(Error::NotFound(model.to_owned())),
    };
    let mut m = Monitor::new(model, saved.spec);
    if let Some(b) = read("reports.jsonl")? {
        for line in b.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            m.logged += 1;
            match serde_json::from_slice::<Report>(line) {
                Ok(r) => m.reports.push_back(r),
                // Only a write cut short by a crash leaves a line unreadable.
                Err(e) => {
                    tracing::warn!(model, error = %e, "skipping a torn line of reports.jsonl")
                }
            }
        }
    }
    while m.reports.len() > m.spec.history {
        m.reports.pop_front();
    }
    m.windows = saved.windows.max(m.reports.back().map_or(0, |r| r.window));
    if let Some(b) = read("reference.json")? {
        let r: Reference = serde_json::from_slice(&b).map_err(|e| corrupt("reference.json", e))?;
        m.reference = Some(Arc::new(r));
    }
    Ok(m)
}

fn report_line(out: &mut Vec<u8>, r: &Report) -> Result<()> {
    serde_json::to_writer(&mut *out, r)
        .map_err(|e| Error::Storage(format!("encoding a window's report: {e}")))?;
    out.push(b'\n');
    Ok(())
}

/// Writes bytes atomically: a temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |e: std::io::Error| Error::Storage(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes JSON atomically: a temporary file, fsync, rename.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Storage(format!("writing {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Column;

    fn rec(id: u64, xs: &[f64]) -> Record {
        Record {
            model: "m".into(),
            version: "1".into(),
            id: format!("r{id}"),
            // Real clock times: labels expire by age against the wall clock.
            time_ms: now_ms() + id,
            rows: xs.len(),
            columns: vec![Column {
                name: "x".into(),
                values: Values::Numbers(xs.to_vec()),
            }],
            embeddings: vec![],
            predictions: Some(crate::Predictions::Regression {
                values: xs.to_vec(),
            }),
            row_times: Vec::new(),
        }
    }

    #[test]
    fn sampling_takes_exactly_the_rate_evenly_spread() {
        let s = Sampler {
            spec: Arc::new(MonitorSpec {
                sample_rate: 0.25,
                ..MonitorSpec::default()
            }),
            seen: AtomicU64::new(0),
        };
        let taken: Vec<bool> = (0..8).map(|_| s.sample()).collect();
        assert_eq!(
            taken,
            [false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn a_captured_reference_windows_and_labels_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spec: MonitorSpec =
            serde_json::from_str(r#"{"capture_reference": 40, "window": {"rows": 40}, "performance": {"task": "regression"}}"#)
                .unwrap();
        let registry = prometheus::Registry::new();
        let m = Monitors::open(Some(dir.path().into()), &registry).unwrap();
        assert!(m.put("m", spec.clone()).unwrap());
        assert!(
            !m.put("m", spec).unwrap(),
            "a second put changes, not creates"
        );
        for i in 0..8 {
            let xs: Vec<f64> = (0..10).map(|k| f64::from(i * 10 + k)).collect();
            m.ingest(&rec(u64::from(i as u32), &xs));
        }
        let s = m.status("m", usize::MAX).unwrap();
        assert_eq!(
            s.reference.as_ref().map(|r| (r.rows, r.source.as_str())),
            Some((40, "capture"))
        );
        assert_eq!(s.windows, 1);
        assert_eq!(s.reports[0].rows, 40);
        let l = m.label(&[(
            0,
            Truth {
                id: "r5".into(),
                values: vec![50.0; 10],
            },
        )]);
        assert_eq!(l.joined, [0]);
        drop(m);
        let again = Monitors::open(Some(dir.path().into()), &prometheus::Registry::new()).unwrap();
        let s2 = again.status("m", usize::MAX).unwrap();
        assert_eq!(s2.reports, s.reports);
        assert_eq!(s2.reference.map(|r| r.rows), Some(40));
        assert!(again.sampler("m").is_some());
        assert!(again.delete("m").unwrap());
        assert!(!dir.path().join("m").exists());
    }

    /// What the server's worker does with queued samples: several requests' rows as one
    /// record, their predictions beside it.
    fn merged(records: &[Record]) -> (Record, Vec<Predicted>) {
        let xs: Vec<f64> = records
            .iter()
            .flat_map(|r| match &r.columns[0].values {
                Values::Numbers(v) => v.clone(),
                Values::Categories(_) => unreachable!(),
            })
            .collect();
        let last = records.last().unwrap();
        let mut r = rec(0, &xs);
        r.time_ms = last.time_ms;
        r.predictions = None;
        let mut first = 0;
        for x in records {
            r.row_times.push((first, x.time_ms));
            first += x.rows;
        }
        let predicted = records
            .iter()
            .map(|r| Predicted {
                id: r.id.clone(),
                time_ms: r.time_ms,
                predictions: r.predictions.clone().unwrap(),
            })
            .collect();
        (r, predicted)
    }

    #[test]
    fn requests_ingested_together_give_the_verdicts_of_one_at_a_time() {
        let spec: MonitorSpec = serde_json::from_str(
            r#"{"capture_reference": 37, "window": {"rows": 25}, "performance": {"task": "regression"}}"#,
        )
        .unwrap();
        let records: Vec<Record> = (0..30u32)
            .map(|i| {
                let xs: Vec<f64> = (0..5).map(|k| f64::from((i * 7 + k * 3) % 23)).collect();
                rec(u64::from(i), &xs)
            })
            .collect();
        let one = Monitors::open(None, &prometheus::Registry::new()).unwrap();
        let grouped = Monitors::open(None, &prometheus::Registry::new()).unwrap();
        one.put("m", spec.clone()).unwrap();
        grouped.put("m", spec).unwrap();
        for r in &records {
            one.ingest(r);
        }
        // Groups of uneven sizes; requests of 5 rows straddle the capture's end (37) and
        // the windows' edges, inside a group and between groups.
        let mut at = 0;
        for size in [3, 1, 9, 4, 13] {
            let (r, predicted) = merged(&records[at..at + size]);
            grouped.ingest_requests(&r, size as u64, predicted);
            at += size;
        }
        assert_eq!(at, records.len());
        let (a, b) = (
            one.status("m", usize::MAX).unwrap(),
            grouped.status("m", usize::MAX).unwrap(),
        );
        assert_eq!(a.windows, 4);
        assert_eq!((b.windows, b.window_rows), (a.windows, a.window_rows));
        assert_eq!(
            b.reports, a.reports,
            "the same windows, start and end times included"
        );
        let samples = |m: &Monitors| m.metrics().samples.with_label_values(&["m"]).get();
        assert_eq!(samples(&grouped), 30.0);
        assert_eq!(samples(&one), 30.0);
        // Every request's predictions were kept for its truth.
        let truth = |id: &str| Truth {
            id: id.into(),
            values: vec![1.0; 5],
        };
        for m in [&one, &grouped] {
            let l = m.label(&[(0, truth("r0")), (1, truth("r17")), (2, truth("r29"))]);
            assert_eq!(l.joined, [0, 1, 2]);
        }
    }

    #[test]
    fn windows_are_appended_a_torn_last_line_is_skipped_and_the_log_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let spec: MonitorSpec = serde_json::from_str(
            r#"{"capture_reference": 10, "window": {"rows": 10}, "history": 3, "performance": {"task": "none"}}"#,
        )
        .unwrap();
        let m = Monitors::open(Some(dir.path().into()), &prometheus::Registry::new()).unwrap();
        m.put("m", spec).unwrap();
        let log = dir.path().join("m").join("reports.jsonl");
        let lines = || std::fs::read_to_string(&log).unwrap().lines().count();
        let xs: Vec<f64> = (0..10).map(f64::from).collect();
        m.ingest(&rec(0, &xs)); // the reference
        for i in 1..=6 {
            m.ingest(&rec(i, &xs));
            // Appended, up to twice the history (6 lines)...
            assert_eq!(lines(), i as usize, "window {i}");
        }
        m.ingest(&rec(7, &xs));
        assert_eq!(lines(), 3, "...then rewritten with the last 3");
        let s = m.status("m", usize::MAX).unwrap();
        assert_eq!(s.windows, 7);
        drop(m);
        // A crash in the middle of an append leaves half a line: skipped, the rest kept.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(br#"{"window": 8, "rows": 1"#).unwrap();
        drop(f);
        let again = Monitors::open(Some(dir.path().into()), &prometheus::Registry::new()).unwrap();
        let s2 = again.status("m", usize::MAX).unwrap();
        assert_eq!(s2.reports, s.reports);
        assert_eq!(s2.windows, 7, "numbering goes on from the last window");
        again.ingest(&rec(8, &xs));
        let s3 = again.status("m", usize::MAX).unwrap();
        assert_eq!(s3.reports.last().map(|r| r.window), Some(8));
    }
}
