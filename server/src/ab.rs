//! The server's side of A/B experiments (the domain logic is the `experiments` crate): the
//! model registry as the experiments' [`Catalog`], the start-up experiment file, and the
//! operations both transports share (put, promote).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use experiments::config::ExperimentSpec;
use experiments::{Catalog, Experiments};
use models::repository::{DEFAULT_ALIAS, Repository};
use serde::Serialize;

use crate::auth::{Kind, Principal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The model repository as experiments see it: a version is usable when it is READY.
pub struct RepoCatalog<'a>(pub &'a Repository);

impl Catalog for RepoCatalog<'_> {
    fn resolve(&self, model: &str, version: &str) -> Result<(u64, String), String> {
        let v = self
            .0
            .get(model, Some(version))
            .map_err(|e| e.to_string())?;
        Ok((v.version, describe(&v.signature)))
    }
}

/// `input:FP32[-1,64] -> probabilities:FP32[-1,10]`: what arms must agree on.
fn describe(sig: &models::Signature) -> String {
    let side = |ts: &[models::TensorSpec]| {
        ts.iter()
            .map(|t| format!("{}:{}{:?}", t.name, t.datatype.as_str(), t.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{} -> {}", side(&sig.inputs), side(&sig.outputs))
}

/// The start-up file: one `[experiments.<name>]` table per experiment.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentsFile {
    #[serde(default)]
    experiments: BTreeMap<String, ExperimentSpec>,
}

/// Reads the experiment file (at start, before anything serves: a bad file stops the
/// server with the reason).
pub fn read_file(path: &Path) -> anyhow::Result<BTreeMap<String, ExperimentSpec>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read experiment file {}: {e}", path.display()))?;
    let file: ExperimentsFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("experiment file {}: {e}", path.display()))?;
    for (name, spec) in &file.experiments {
        spec.validate().map_err(|e| {
            anyhow::anyhow!(
                "experiment file {}: [experiments.{name}]: {e}",
                path.display()
            )
        })?;
    }
    Ok(file.experiments)
}

/// Applies the file's experiments once the models are loaded (their arms must be READY).
/// An experiment that already exists keeps its statistics when its arms are unchanged.
pub fn apply_file(exps: &Experiments, repo: &Repository, specs: BTreeMap<String, ExperimentSpec>) {
    for (name, spec) in specs {
        match exps.put(&name, spec, &RepoCatalog(repo)) {
            Ok(created) => {
                tracing::info!(experiment = %name, created, "experiment from the experiment file applied")
            }
            Err(e) => {
                tracing::error!(experiment = %name, error = %e, "experiment from the experiment file not applied")
            }
        }
    }
}

/// Whether `principal` (a restricted one, when given) may reach every one of `models`.
pub fn within<S: AsRef<str>>(
    principal: Option<&Principal>,
    models: impl IntoIterator<Item = S>,
) -> bool {
    principal.is_none_or(|p| {
        models
            .into_iter()
            .all(|m| p.reach.allows(Kind::Model, m.as_ref()))
    })
}

/// 403 / PERMISSION_DENIED unless `principal` may reach every model experiment `name`
/// serves, and every model `spec` names when it is being put. A restricted principal may
/// create an experiment over its own models; one that does not exist is otherwise refused in
/// the words one out of reach gets, so a restricted principal learns nothing of the others.
pub fn check_reach(
    state: &AppState,
    principal: Option<&Principal>,
    name: &str,
    spec: Option<&ExperimentSpec>,
) -> ApiResult<()> {
    let Some(p) = principal.filter(|p| p.reach.restricts(Kind::Model)) else {
        return Ok(());
    };
    let existing = state.experiments.get(name).ok();
    let ok = match (&existing, spec) {
        (Some(e), _) => {
            within(Some(p), e.models()) && spec.is_none_or(|s| within(Some(p), s.models()))
        }
        (None, Some(s)) => within(Some(p), s.models()),
        (None, None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "'{}' may not reach experiment '{name}'",
            p.name
        )))
    }
}

/// Creates or changes an experiment (checked against the registry, written to disk off the
/// runtime). Returns whether it was created.
pub async fn put(state: &Arc<AppState>, name: &str, spec: ExperimentSpec) -> ApiResult<bool> {
    let (state, name) = (Arc::clone(state), name.to_owned());
    let created = tokio::task::spawn_blocking(move || {
        state
            .experiments
            .put(&name, spec, &RepoCatalog(&state.repo))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the operation was interrupted: {e}")))??;
    Ok(created)
}

/// What a promotion did.
#[derive(Debug, Serialize)]
pub struct Promotion {
    pub experiment: String,
    pub arm: String,
    pub model: String,
    pub alias: &'static str,
    pub version: u64,
}

/// Points the model's `production` alias at `arm`'s version (the registry's load-then-swap:
/// requests keep being served throughout) and stops the experiment.
pub async fn promote(state: &AppState, name: &str, arm: &str) -> ApiResult<Promotion> {
    let exp = state.experiments.get(name)?;
    let spec = exp.spec();
    let names = spec.arm_names();
    let i = names.iter().position(|n| n == arm).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "'{arm}' is not an arm of experiment '{name}': arms are {names:?}"
        ))
    })?;
    let target_model = spec.arms[i].model.clone().unwrap_or(spec.model.clone());
    if target_model != spec.model {
        return Err(ApiError::Experiment(experiments::Error::Conflict(format!(
            "arm '{arm}' serves another model ('{target_model}'): promotion moves model '{}''s '{DEFAULT_ALIAS}' alias to one of its own versions",
            spec.model
        ))));
    }
    let (version, _) = RepoCatalog(&state.repo)
        .resolve(&spec.model, &spec.arms[i].version.as_string())
        .map_err(|e| {
            ApiError::Experiment(experiments::Error::Conflict(format!(
                "arm '{arm}' cannot be promoted: {e}"
            )))
        })?;
    let repo = Arc::clone(&state.repo);
    let model = spec.model.clone();
    tokio::task::spawn_blocking(move || repo.set_alias(&model, DEFAULT_ALIAS, version))
        .await
        .map_err(|e| ApiError::Unavailable(format!("promotion was interrupted: {e}")))??;
    state.experiments.promoted(
        name,
        arm,
        format!(
            "arm '{arm}' promoted: model '{}' alias '{DEFAULT_ALIAS}' now points at version {version}",
            spec.model
        ),
    )?;
    Ok(Promotion {
        experiment: name.to_owned(),
        arm: arm.to_owned(),
        model: spec.model,
        alias: DEFAULT_ALIAS,
        version,
    })
}

/// Experiments' statistics shared by a fleet through Redis (`--state redis://...`).
/// Assignment is already a pure function of the unit key, so every replica sends a unit to
/// the same arm; what they share is what they counted. Each replica writes its cumulative
/// [`experiments::Contribution`] under its own field of one hash per experiment (idempotent:
/// a retry or a late write never double counts) and merges the others' into its results —
/// counts and histograms summed, reward moments merged exactly — so any replica answers
/// with the fleet's numbers, at most one publishing interval behind.
pub struct Fleet {
    conn: redis::aio::ConnectionManager,
    /// This process's field: kept in the data directory, so a restart on the same disk
    /// continues its own counts (which the experiment files there hold) instead of adding a
    /// second copy of them.
    replica: String,
}

impl Fleet {
    /// Connects lazily (the server starts while Redis is down; sharing resumes when it is
    /// back). `replica_file` holds this replica's id, made on first use.
    pub fn open(
        url: &str,
        tls: Option<feature_store::store::redis::RedisTls>,
        replica_file: &Path,
    ) -> anyhow::Result<Fleet> {
        let client = feature_store::store::redis::client(url, tls)
            .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new(),
        )
        .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
        let replica = match std::fs::read_to_string(replica_file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                // Unique enough: the clock's nanoseconds and the process id.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let id = format!("{nanos:x}-{:x}", std::process::id());
                if let Some(dir) = replica_file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(replica_file, &id).map_err(|e| {
                    anyhow::anyhow!("writing the replica id {}: {e}", replica_file.display())
                })?;
                id
            }
        };
        Ok(Fleet { conn, replica })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The experiment's hash: hash-tagged, so it lives in one slot of a Redis Cluster.
    fn key(name: &str) -> String {
        format!("inferd:{{experiment:{name}}}:arms")
    }

    /// Publishes every experiment's counts and takes the others'.
    pub async fn exchange(&self, exps: &Experiments) {
        for e in exps.list() {
            let key = Self::key(&e.name);
            let mine = match serde_json::to_string(&e.contribution()) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let mut conn = self.conn.clone();
            let all: redis::RedisResult<(std::collections::HashMap<String, String>,)> =
                redis::pipe()
                    .hset(&key, &self.replica, mine)
                    .ignore()
                    .hgetall(&key)
                    .query_async(&mut conn)
                    .await;
            let all = match all {
                Ok((all,)) => all,
                Err(err) => {
                    // The last merged numbers stay; the next tick retries.
                    tracing::warn!(experiment = %e.name, error = %err, "sharing experiment statistics through --state failed");
                    continue;
                }
            };
            let own = e.contribution();
            let mut others: Option<experiments::Contribution> = None;
            for (replica, json) in all {
                if replica == self.replica {
                    continue;
                }
                let Ok(c) = serde_json::from_str::<experiments::Contribution>(&json) else {
                    tracing::warn!(experiment = %e.name, %replica, "unreadable experiment statistics in --state, ignored");
                    continue;
                };
                if c.arm_names != own.arm_names || c.shadow_names != own.shadow_names {
                    // Another configuration under the same name (a replica not yet updated).
                    continue;
                }
                match &mut others {
                    Some(o) => {
                        o.merge(&c);
                    }
                    None => others = Some(c),
                }
            }
            e.set_others(others);
        }
    }

    /// Forgets a deleted experiment's shared counts (so a new one of that name starts at 0).
    pub async fn forget(&self, name: &str) {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(Self::key(name))
            .query_async(&mut conn)
            .await;
        if let Err(err) = r {
            tracing::warn!(experiment = %name, error = %err, "forgetting shared experiment statistics failed");
        }
    }
}

/// Deletes an experiment, and its shared counts when the fleet shares them.
pub async fn delete(state: &AppState, name: &str) -> ApiResult<()> {
    state.experiments.delete(name)?;
    if let Some(f) = &state.fleet {
        f.forget(name).await;
    }
    Ok(())
}
