//! Access control: who is calling (API keys) and what each route needs (scopes), decided in
//! one place for both transports — the axum layer [`http_layer`] and the tower layer
//! [`GrpcAuthLayer`] call the same [`Auth::authenticate`] and look up the same kind of
//! requirement, never a check per handler.
//!
//! - **Keys** come from a JSON file (`--api-keys`), each stored as the SHA-256 of the secret,
//!   never the secret: `{"keys": [{"name": "ci", "sha256": "<64 hex>", "scopes": ["admin"]}]}`
//!   (`inferd keys hash` prints a new secret and its entry). The file is re-read when it
//!   changes (polled every second), so keys rotate without a restart: list the new key beside
//!   the old one, move the clients, remove the old one. A presented key is hashed and compared
//!   with every configured hash in constant time (`subtle`).
//! - **Scopes** are ordered: `infer` (inference, embeddings, search, feature reads, every
//!   read-only GET) < `write` (vector points, feature pushes, feedback) < `admin` (registry,
//!   aliases, experiments, drift monitors and references, repository load/unload, feature
//!   views, collections). A key holds one scope and everything below it.
//! - **Requirements** are decided on the route the router resolved — axum's `MatchedPath`
//!   template, gRPC's exact method path — never on the raw path. Unknown routes need a valid
//!   key before their 404 / UNIMPLEMENTED (nothing about what exists leaks to a caller
//!   without one), and the routes of an unknown shape need `admin`.
//! - **Open**: `/v2/health/live`, `/v2/health/ready`, gRPC `ServerLive` / `ServerReady`; the
//!   metrics port is a separate listener, open unless `--auth-metrics`.
//!
//! With no key configured the server runs without authentication, as before, and says so
//! loudly at start-up.
//!
//! Credentials are checked before any body is read: the layers run before the handlers'
//! extractors, so a refused upload has read its headers only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a route needs, and what a key grants (ordered: each grants those below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Infer,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Infer => "infer",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// A route's requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health and readiness: no credentials.
    Open,
    Scope(Scope),
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// `None`: a valid token that grants no scope inferd knows (refused everywhere but
    /// health, with 403).
    pub scope: Option<Scope>,
    /// The models, collections and feature views it may reach (all, unless listed).
    pub reach: Reach,
}

impl Principal {
    /// Whether it may reach `name` of `kind`; the refusal's message otherwise (the same on
    /// every route and transport, whether or not the target exists).
    pub fn may_reach(&self, kind: Kind, name: &str) -> Result<(), String> {
        if self.reach.allows(kind, name) {
            Ok(())
        } else {
            Err(format!(
                "'{}' may not reach {} '{name}'",
                self.name,
                kind.noun()
            ))
        }
    }
}

/// What a principal may reach beyond its scope, as Qdrant's JWT restricts per collection:
/// each kind unrestricted unless its list is given (`"models": ["fraud"]` in the keys file,
/// the same claims in a token). Checked on the name a route's path carries (a model's
/// aliases and versions are the model's: an alias never reaches another model); the lists
/// are filtered to what the principal may see; routes whose target is in the body, and gRPC,
/// are refused to a principal restricted in that kind (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_views: Option<Vec<String>>,
}

/// The kinds of thing a [`Reach`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Collection,
    FeatureView,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Collection => "collection",
            Kind::FeatureView => "feature view",
        }
    }
}

impl Reach {
    pub fn unrestricted(&self) -> bool {
        self.models.is_none() && self.collections.is_none() && self.feature_views.is_none()
    }

    fn list(&self, kind: Kind) -> Option<&Vec<String>> {
        match kind {
            Kind::Model => self.models.as_ref(),
            Kind::Collection => self.collections.as_ref(),
            Kind::FeatureView => self.feature_views.as_ref(),
        }
    }

    /// Whether `name` of `kind` is within reach.
    pub fn allows(&self, kind: Kind, name: &str) -> bool {
        self.list(kind).is_none_or(|l| l.iter().any(|n| n == name))
    }

    pub fn restricts(&self, kind: Kind) -> bool {
        self.list(kind).is_some()
    }
}

/// For the handlers that read their target from the body ([`Target::Checked`]): 403 when
/// the request's principal (set by the layer when it is restricted) may not reach it.
pub fn check_reach(
    ext: &http::Extensions,
    kind: Kind,
    name: &str,
) -> Result<(), crate::error::ApiError> {
    ext.get::<Principal>()
        .map_or(Ok(()), |p| p.may_reach(kind, name))
        .map_err(crate::error::ApiError::Forbidden)
}

/// For list handlers: whether the request's principal (set by the layer when it is
/// restricted) may see `name` of `kind`.
pub fn visible(ext: &http::Extensions, kind: Kind, name: &str) -> bool {
    ext.get::<Principal>()
        .is_none_or(|p| p.reach.allows(kind, name))
}

/// One key of the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    // The restrictions are spelled out (here, in `CertificateEntry` and in the keys API's
    // body) rather than a flattened `Reach`: serde cannot flatten under deny_unknown_fields.
    name: String,
    /// SHA-256 of the secret, hex.
    sha256: String,
    /// Its scopes (the highest counts: each includes those below it).
    scopes: Vec<Scope>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    collections: Option<Vec<String>>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
}

/// A client certificate's principal (mTLS): `name` is one of the names the certificate
/// vouches for (a URI SAN such as a SPIFFE ID, a DNS SAN, or the subject's CN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    name: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    collections: Option<Vec<String>>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
    #[serde(default)]
    certificates: Vec<CertificateEntry>,
}

#[derive(Debug, Clone)]
struct Key {
    digest: [u8; 32],
    principal: Principal,
}

/// The principals of the keys file: API keys by digest, client certificates by name.
#[derive(Debug, Clone, Default)]
struct Principals {
    keys: Vec<Key>,
    certificates: Vec<Principal>,
}

/// What a request presents: its `Authorization` header (or Qdrant's `api-key`), and the
/// names of the client certificate its connection was verified with (mTLS; empty without).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub authorization: Option<&'a [u8]>,
    /// Qdrant's clients send the key as `api-key: <key>` instead.
    pub api_key: Option<&'a [u8]>,
    pub cert_names: &'a [String],
}

impl<'a> Credentials<'a> {
    pub fn bearer(authorization: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            authorization,
            api_key: None,
            cert_names: &[],
        }
    }

    fn of(headers: &'a HeaderMap, ext: &'a http::Extensions) -> Credentials<'a> {
        Credentials {
            authorization: authorization(headers),
            api_key: headers.get("api-key").map(HeaderValue::as_bytes),
            cert_names: ext
                .get::<crate::listen::Peer>()
                .map_or(&[][..], |p| &p.cert_names[..]),
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or none that are valid: 401 / UNAUTHENTICATED.
    Unauthenticated(String),
    /// Valid credentials without the scope: 403 / PERMISSION_DENIED.
    Forbidden { principal: String, need: Scope },
    /// The principal has its most requests in flight already: 429 with `Retry-After` /
    /// RESOURCE_EXHAUSTED.
    Busy { principal: String, limit: usize },
    /// Valid credentials restricted to other models / collections / feature views: 403 /
    /// PERMISSION_DENIED (whether or not the named one exists).
    OutOfReach { principal: String, what: String },
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Unauthenticated(why) => why.clone(),
            Denied::Forbidden { principal, need } => {
                format!(
                    "'{principal}' lacks the '{}' scope this needs",
                    need.as_str()
                )
            }
            Denied::OutOfReach { principal, what } => {
                format!("'{principal}' may not reach {what}")
            }
            Denied::Busy { principal, limit } => format!(
                "'{principal}' has {limit} requests in flight, the most it may (--max-concurrent-per-principal): retry when one has finished"
            ),
        }
    }
}

/// Requests in flight per principal (`--max-concurrent-per-principal`): one caller cannot
/// take every worker. A principal's count lives only while it has requests in flight, so
/// the table is as large as the callers at this moment, never as every name ever seen.
#[derive(Default)]
pub struct Concurrency {
    /// 0: unlimited.
    max: usize,
    inflight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One request's place in its principal's count, given back when dropped.
pub struct Permit {
    of: Arc<Concurrency>,
    name: String,
}

impl Concurrency {
    pub fn new(max: usize) -> Arc<Concurrency> {
        Arc::new(Concurrency {
            max,
            inflight: Default::default(),
        })
    }

    fn acquire(self: &Arc<Self>, name: &str) -> Result<Option<Permit>, Denied> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut m = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get_mut(name) {
            Some(n) if *n >= self.max => {
                return Err(Denied::Busy {
                    principal: name.to_owned(),
                    limit: self.max,
                });
            }
            Some(n) => *n += 1,
            None => {
                m.insert(name.to_owned(), 1);
            }
        }
        Ok(Some(Permit {
            of: Arc::clone(self),
            name: name.to_owned(),
        }))
    }

    /// Requests in flight for `name` (tests).
    pub fn inflight(&self, name: &str) -> usize {
        let m = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(name).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut m = self
            .of
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

/// The configured keys (reloaded when their file changes) and the decision.
pub struct Auth {
    /// Every principal: the keys file's and the keys made by an admin ([`Auth::create_key`]).
    keys: ArcSwap<Principals>,
    /// The keys file's, as last read.
    from_file: ArcSwap<Principals>,
    file: Option<PathBuf>,
    /// Keys made with `POST /api/keys`, stored hashed under the data directory.
    made: std::sync::Mutex<MadeKeys>,
    /// Bearer JWTs, when a JWKS is configured.
    jwt: Option<Jwt>,
    /// The metrics port asks for credentials too (scope `infer`).
    pub metrics: bool,
    /// Where changes and refusals are recorded.
    pub audit: Audit,
    /// Requests in flight per principal.
    pub concurrency: Arc<Concurrency>,
}

/// The audit log: every refused request, and every request that may change something
/// (needing `write` or `admin`), with who, what, the outcome and when — one JSON object per
/// line in `--audit-log`, and the same on the `audit` tracing target. Credentials are never
/// in it (only the principal's name).
#[derive(Default)]
pub struct Audit {
    file: Option<std::sync::Mutex<std::fs::File>>,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Audit> {
        let file = path
            .map(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", p.display()))
            })
            .transpose()?;
        Ok(Audit {
            file: file.map(std::sync::Mutex::new),
        })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Records one event (`time` is added): `transport`, `principal`, `method`, `route`,
    /// `target` (the path or gRPC method), `result` (the status, or `refused: ...`).
    pub fn record(&self, mut event: serde_json::Value) {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        event["time_ms"] = ms.into();
        let line = event.to_string();
        tracing::info!(target: "audit", "{line}");
        if let Some(f) = &self.file {
            use std::io::Write;
            let mut f = f.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(error = %e, "writing the audit log");
            }
        }
    }
}

impl Auth {
    /// No authentication (no keys configured).
    pub fn disabled() -> Auth {
        Auth {
            keys: ArcSwap::from_pointee(Principals::default()),
            from_file: ArcSwap::from_pointee(Principals::default()),
            file: None,
            made: Default::default(),
            jwt: None,
            metrics: false,
            audit: Audit::default(),
            concurrency: Arc::default(),
        }
    }

    /// Keys from `file` and tokens against `jwt`'s JWKS (neither: authentication off).
    pub fn open(
        file: Option<&Path>,
        jwt: Option<JwtConfig>,
        metrics: bool,
    ) -> anyhow::Result<Auth> {
        let keys = file.map(read_keys).transpose()?.unwrap_or_default();
        let jwt = jwt.map(Jwt::open).transpose()?;
        let enabled = file.is_some() || jwt.is_some();
        Ok(Auth {
            keys: ArcSwap::from_pointee(keys.clone()),
            from_file: ArcSwap::from_pointee(keys),
            file: file.map(Path::to_owned),
            made: Default::default(),
            jwt,
            metrics: metrics && enabled,
            audit: Audit::default(),
            concurrency: Arc::default(),
        })
    }

    /// Keys from JSON text (tests, and the file's reader).
    pub fn from_json(text: &str) -> anyhow::Result<Auth> {
        let keys = parse_keys(text)?;
        Ok(Auth {
            keys: ArcSwap::from_pointee(keys.clone()),
            from_file: ArcSwap::from_pointee(keys),
            file: None,
            made: Default::default(),
            jwt: None,
            metrics: false,
            audit: Audit::default(),
            concurrency: Arc::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.jwt.is_some() || !self.keys.load().keys.is_empty()
    }

    /// Re-reads the keys file and the JWKS each time they change (polled every second); a
    /// file that no longer parses keeps the keys in force (and says why in the log).
    pub fn watch(self: &Arc<Self>) {
        if let Some(jwt) = &self.jwt {
            match &jwt.config.jwks {
                JwksSource::File(path) => {
                    let auth = Arc::clone(self);
                    on_change(path.clone(), move || {
                        if let Some(jwt) = &auth.jwt {
                            jwt.reload();
                        }
                    });
                }
                JwksSource::Url { .. } => {
                    let auth = Arc::clone(self);
                    tokio::spawn(async move {
                        if let Some(jwt) = &auth.jwt {
                            jwt.refresh_periodically().await;
                        }
                    });
                }
            }
        }
        if let Some(file) = self.file.clone() {
            let auth = Arc::clone(self);
            on_change(file.clone(), move || match read_keys(&file) {
                Ok(keys) => {
                    tracing::info!(keys = keys.keys.len(), certificates = keys.certificates.len(), file = %file.display(), "API keys reloaded");
                    auth.from_file.store(Arc::new(keys));
                    auth.merge();
                }
                Err(e) => {
                    tracing::error!(error = %e, "the API keys file no longer parses; keeping the keys in force");
                }
            });
        }
    }

    /// The principal the credentials name: a bearer API key or JWT when the request has an
    /// `Authorization` header, otherwise its client certificate (mTLS) when the keys file
    /// lists one of the certificate's names. Every configured digest is compared, in
    /// constant time, whatever matches first.
    pub fn authenticate(&self, creds: Credentials<'_>) -> Result<Principal, Denied> {
        let unauthenticated = |why: &str| Denied::Unauthenticated(why.to_owned());
        let (value, scheme) = match (creds.authorization, creds.api_key) {
            (Some(v), _) => (Some(v), true),
            // Qdrant's header: the key (or token) itself, no scheme.
            (None, Some(k)) => (Some(k), false),
            (None, None) => (None, false),
        };
        let Some(value) = value else {
            if let Some(first) = creds.cert_names.first() {
                let principals = self.keys.load();
                return creds
                    .cert_names
                    .iter()
                    .find_map(|n| principals.certificates.iter().find(|p| &p.name == n))
                    .cloned()
                    .ok_or_else(|| {
                        Denied::Unauthenticated(format!(
                            "client certificate '{first}' is not a principal: list one of its names under \"certificates\" in the keys file, or send 'Authorization: Bearer <API key or token>'"
                        ))
                    });
            }
            return Err(unauthenticated(
                "missing credentials: send 'Authorization: Bearer <API key or token>'",
            ));
        };
        let token = if scheme {
            value
                .strip_prefix(b"Bearer ")
                .or_else(|| value.strip_prefix(b"bearer "))
                .ok_or_else(|| {
                    unauthenticated(
                        "unsupported authorization scheme: send 'Authorization: Bearer <API key or token>'",
                    )
                })?
        } else {
            value
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Denied::Unauthenticated(format!(
                "credentials of {} bytes: at most {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        // Three dot-separated parts: a JWT (an API key has no dots).
        if let Some(jwt) = &self.jwt
            && token.iter().filter(|&&b| b == b'.').count() == 2
        {
            return jwt.verify(token);
        }
        let digest: [u8; 32] = Sha256::digest(token).into();
        let principals = self.keys.load();
        let mut found: Option<&Key> = None;
        for k in principals.keys.iter() {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
            .map(|k| k.principal.clone())
            .ok_or_else(|| unauthenticated("invalid API key"))
    }

    /// [`Auth::check`], then the principal's place among its requests in flight (held until
    /// the permit is dropped). Open routes are never limited; without authentication every
    /// caller is one principal, `anonymous`.
    pub fn admit(
        &self,
        need: Need,
        creds: Credentials<'_>,
    ) -> Result<(Option<Principal>, Option<Permit>), Denied> {
        let p = self.check(need, creds)?;
        if need == Need::Open {
            return Ok((p, None));
        }
        let permit = self
            .concurrency
            .acquire(p.as_ref().map_or(ANONYMOUS, |p| p.name.as_str()))?;
        Ok((p, permit))
    }

    /// Whether the layers have anything to do (else they pass requests straight through).
    fn active(&self) -> bool {
        self.enabled() || self.audit.enabled() || self.concurrency.max > 0
    }

    /// The decision for a request needing `need`: who it is (`None` when nothing is asked:
    /// authentication off, or an open route), or why not.
    pub fn check(&self, need: Need, creds: Credentials<'_>) -> Result<Option<Principal>, Denied> {
        if !self.enabled() || need == Need::Open {
            return Ok(None);
        }
        let Need::Scope(need) = need else {
            return Ok(None);
        };
        let p = self.authenticate(creds)?;
        if p.scope >= Some(need) {
            Ok(Some(p))
        } else {
            Err(Denied::Forbidden {
                principal: p.name,
                need,
            })
        }
    }
}

/// Keys made by an admin (`POST /api/keys`, `inferd keys create`): each stored as its
/// SHA-256, never the secret, in `<data-dir>/keys.json` (written aside and renamed, owner
/// read/write only), loaded at start, revoked by `DELETE /api/keys/{name}` with immediate
/// effect. Names are unique across them and the keys file.
#[derive(Default)]
struct MadeKeys {
    path: Option<PathBuf>,
    entries: Vec<MadeKey>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct MadeKey {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Reach::unrestricted")]
    reach: Reach,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct MadeKeysFile {
    keys: Vec<MadeKey>,
}

/// A key as `GET /api/keys` shows it: never its secret or digest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub scope: Scope,
    /// The models, collections and feature views it is restricted to, if any.
    #[serde(flatten)]
    pub reach: Reach,
    /// `file` (the `--api-keys` file: edit it to change the key) or `api` (made by an admin).
    pub source: &'static str,
    pub created_ms: Option<u64>,
}

/// Why a key cannot be made or revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Invalid(String),
    Conflict(String),
    NotFound(String),
}

impl From<KeyError> for crate::error::ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => crate::error::ApiError::BadRequest(m),
            KeyError::Conflict(m) => crate::error::ApiError::Conflict(m),
            KeyError::NotFound(m) => crate::error::ApiError::NotFound(m),
        }
    }
}

impl Auth {
    /// Loads the keys made by an admin from `path` (`<data-dir>/keys.json`; absent: none)
    /// and keeps them there from now on.
    pub fn open_made_keys(&self, path: PathBuf) -> anyhow::Result<()> {
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str::<MadeKeysFile>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    .keys
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        for k in &entries {
            anyhow::ensure!(
                hex_digest(&k.sha256).is_some() && !k.scopes.is_empty(),
                "{}: key '{}' is malformed",
                path.display(),
                k.name
            );
        }
        {
            let mut made = self
                .made
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            made.path = Some(path);
            made.entries = entries;
        }
        self.merge();
        Ok(())
    }

    /// The principals in force: the file's, then the made keys.
    fn merge(&self) {
        let made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all = Principals::clone(&self.from_file.load());
        all.keys.extend(made.entries.iter().filter_map(|k| {
            Some(Key {
                digest: hex_digest(&k.sha256)?,
                principal: Principal {
                    name: k.name.clone(),
                    scope: k.scopes.iter().copied().max(),
                    reach: k.reach.clone(),
                },
            })
        }));
        self.keys.store(Arc::new(all));
    }

    /// Every key (file and made), by name; never a secret.
    pub fn list_keys(&self) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self
            .from_file
            .load()
            .keys
            .iter()
            .map(|k| KeyInfo {
                name: k.principal.name.clone(),
                scope: k.principal.scope.unwrap_or(Scope::Infer),
                reach: k.principal.reach.clone(),
                source: "file",
                created_ms: None,
            })
            .collect();
        let made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.extend(made.entries.iter().map(|k| KeyInfo {
            name: k.name.clone(),
            scope: k.scopes.iter().copied().max().unwrap_or(Scope::Infer),
            reach: k.reach.clone(),
            source: "api",
            created_ms: Some(k.created_ms),
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Makes a key: returns its secret, which is stored nowhere (only its SHA-256 is).
    pub fn create_key(&self, name: &str, scope: Scope, reach: Reach) -> Result<String, KeyError> {
        if !self.enabled() {
            return Err(KeyError::Conflict(
                "authentication is off (--no-auth): start the server with --api-keys (or --jwks) to make keys".into(),
            ));
        }
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
        if !valid {
            return Err(KeyError::Invalid(format!(
                "key name '{}' must be 1-128 characters of A-Z a-z 0-9 - _ . @ :",
                name.escape_debug()
            )));
        }
        let mut made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(path) = made.path.clone() else {
            return Err(KeyError::Conflict("this server keeps no made keys".into()));
        };
        let taken = made.entries.iter().any(|k| k.name == name)
            || self
                .from_file
                .load()
                .keys
                .iter()
                .any(|k| k.principal.name == name);
        if taken {
            return Err(KeyError::Conflict(format!(
                "a key named '{name}' exists: revoke it first, or pick another name"
            )));
        }
        let (secret, digest) = random_secret();
        let mut entries = made.entries.clone();
        entries.push(MadeKey {
            name: name.to_owned(),
            sha256: digest,
            scopes: vec![scope],
            created_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reach,
        });
        write_made_keys(&path, &entries)
            .map_err(|e| KeyError::Conflict(format!("storing the key: {e}")))?;
        made.entries = entries;
        drop(made);
        self.merge();
        Ok(secret)
    }

    /// Revokes a made key: refused from the next request on.
    pub fn revoke_key(&self, name: &str) -> Result<(), KeyError> {
        let mut made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !made.entries.iter().any(|k| k.name == name) {
            drop(made);
            if self
                .from_file
                .load()
                .keys
                .iter()
                .any(|k| k.principal.name == name)
            {
                return Err(KeyError::Conflict(format!(
                    "key '{name}' is defined in the --api-keys file: remove it there (the file is re-read within a second)"
                )));
            }
            return Err(KeyError::NotFound(format!("no key named '{name}'")));
        }
        let entries: Vec<MadeKey> = made
            .entries
            .iter()
            .filter(|k| k.name != name)
            .cloned()
            .collect();
        if let Some(path) = &made.path {
            write_made_keys(path, &entries)
                .map_err(|e| KeyError::Conflict(format!("storing the keys: {e}")))?;
        }
        made.entries = entries;
        drop(made);
        self.merge();
        Ok(())
    }
}

fn write_made_keys(path: &Path, entries: &[MadeKey]) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(&MadeKeysFile {
        keys: entries.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The principal of every request when authentication is off (`--no-auth`).
pub const ANONYMOUS: &str = "anonymous (--no-auth)";

/// The longest credentials read (a JWT of an OIDC provider is 1–2 KiB): anything longer is
/// refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where the token-signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, re-read when it changes.
    File(PathBuf),
    /// An OIDC provider's `jwks_uri` (`https://`; `http://` is accepted for a provider on a
    /// trusted network, with a warning): fetched at start, every `refresh_secs`, and when a
    /// token names a key id the set lacks — at most once per `min_refresh_secs`.
    Url {
        url: String,
        refresh_secs: u64,
        min_refresh_secs: u64,
    },
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "{}", p.display()),
            JwksSource::Url { url, .. } => f.write_str(url),
        }
    }
}

/// How bearer JWTs are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The JWKS (`{"keys": [...]}`, as an OIDC provider's `jwks_uri` serves it).
    pub jwks: JwksSource,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of), when set.
    pub audience: Option<String>,
    /// The claim holding the scopes: a space-separated string (OAuth 2's `scope`) or a list;
    /// a dotted path reaches into objects (`realm_access.roles`, Keycloak's realm roles).
    pub scope_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

struct Jwt {
    config: JwtConfig,
    keys: ArcSwap<jsonwebtoken::jwk::JwkSet>,
    /// Tokens already verified, by their SHA-256, until they expire: a service presents the
    /// same token for its whole lifetime, and a signature check (RSA-2048, P-256, Ed25519 in
    /// pure Rust: tens of microseconds) would otherwise be most of a request's CPU. Emptied
    /// whenever the keys change (a key the provider dropped verifies nothing any more).
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Principal, u64)>>,
    /// With a JWKS URL: its client and when it was last asked.
    fetcher: Option<Fetcher>,
}

struct Fetcher {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refresh: Duration,
    /// When the last fetch started (`None`: never), and whether one is in flight.
    last: std::sync::Mutex<(Option<std::time::Instant>, bool)>,
    /// Wakes the refresher early (a token named an unknown key id).
    wake: tokio::sync::Notify,
}

/// Verified tokens remembered at most (about 32 bytes of digest and a principal each).
const MAX_VERIFIED_TOKENS: usize = 16_384;

/// The largest JWKS accepted from a URL (a provider's is a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

impl Jwt {
    fn open(config: JwtConfig) -> anyhow::Result<Jwt> {
        let (keys, fetcher) = match &config.jwks {
            JwksSource::File(path) => (read_jwks(path)?, None),
            JwksSource::Url {
                url,
                refresh_secs,
                min_refresh_secs,
            } => {
                let parsed =
                    reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--jwks {url}: {e}"))?;
                anyhow::ensure!(
                    matches!(parsed.scheme(), "https" | "http"),
                    "--jwks {url}: give a file or an https:// URL"
                );
                if parsed.scheme() == "http" {
                    tracing::warn!(%url, "the JWKS is fetched over plain HTTP: anyone on the path can swap the keys that sign tokens; use https");
                }
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    // A provider's keys never move: a redirect is refused, not followed.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| anyhow::anyhow!("--jwks {url}: {e}"))?;
                let fetcher = Fetcher {
                    url: url.clone(),
                    client,
                    refresh: Duration::from_secs((*refresh_secs).max(1)),
                    min_refresh: Duration::from_secs(*min_refresh_secs),
                    last: std::sync::Mutex::new((None, false)),
                    wake: tokio::sync::Notify::new(),
                };
                (
                    jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
                    Some(fetcher),
                )
            }
        };
        Ok(Jwt {
            config,
            keys: ArcSwap::from_pointee(keys),
            verified: Default::default(),
            fetcher,
        })
    }

    /// Fetches the JWKS now, unless one was fetched less than `min_refresh` ago or is in
    /// flight. Returns whether it fetched.
    async fn fetch(&self) -> bool {
        let Some(f) = &self.fetcher else {
            return false;
        };
        {
            let mut last = f
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let recent = last.0.is_some_and(|t| t.elapsed() < f.min_refresh);
            if recent || last.1 {
                return false;
            }
            *last = (Some(std::time::Instant::now()), true);
        }
        let result = async {
            let mut r = f
                .client
                .get(&f.url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| format!("{e}"))?;
            if !r.status().is_success() {
                return Err(format!("the provider answered {}", r.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_JWKS_BYTES {
                    return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
                }
            }
            serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&body)
                .map_err(|e| format!("not a JWKS: {e}"))
        }
        .await;
        match result {
            Ok(k) => {
                tracing::info!(keys = k.keys.len(), url = %f.url, "JWKS fetched");
                self.set_keys(k);
            }
            Err(e) => {
                tracing::error!(error = %e, url = %f.url, "fetching the JWKS failed; keeping the keys in force");
            }
        }
        f.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1 = false;
        true
    }

    /// The JWKS URL's refresher: fetches at once, then every `refresh` (every `min_refresh`
    /// while no key has been fetched yet), and early when [`Jwt::verify`] meets an unknown
    /// key id.
    async fn refresh_periodically(&self) {
        let Some(f) = &self.fetcher else {
            return;
        };
        loop {
            self.fetch().await;
            let wait = if self.keys.load().keys.is_empty() {
                f.min_refresh.max(Duration::from_secs(1))
            } else {
                f.refresh
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = f.wake.notified() => {
                    // At most one fetch per min_refresh, however many unknown key ids come.
                    let since = f.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0;
                    if let Some(t) = since {
                        let left = f.min_refresh.saturating_sub(t.elapsed());
                        tokio::time::sleep(left).await;
                    }
                }
            }
        }
    }

    fn reload(&self) {
        let JwksSource::File(path) = &self.config.jwks else {
            return;
        };
        match read_jwks(path) {
            Ok(k) => {
                tracing::info!(keys = k.keys.len(), "JWKS reloaded");
                self.set_keys(k);
            }
            Err(e) => {
                tracing::error!(error = %e, "the JWKS file no longer parses; keeping the keys in force")
            }
        }
    }

    /// New keys in force; what the old ones verified is forgotten.
    fn set_keys(&self, keys: jsonwebtoken::jwk::JwkSet) {
        self.keys.store(Arc::new(keys));
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// [`Jwt::check_token`], remembered by the token's SHA-256 until its `exp` (plus the
    /// leeway) passes.
    fn verify(&self, token: &[u8]) -> Result<Principal, Denied> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        {
            let mut cache = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.get(&digest) {
                Some((p, until)) if now < *until => return Ok(p.clone()),
                Some(_) => {
                    cache.remove(&digest);
                }
                None => {}
            }
        }
        let (principal, exp) = self.check_token(token)?;
        let mut cache = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: at the limit, forget everything (the next requests verify again).
        if cache.len() >= MAX_VERIFIED_TOKENS {
            cache.clear();
        }
        cache.insert(
            digest,
            (
                principal.clone(),
                exp.saturating_add(self.config.leeway_secs),
            ),
        );
        Ok(principal)
    }

    /// Verifies a token: an accepted algorithm (RS256, ES256, EdDSA — never `none` or HS*),
    /// a key named by `kid` whose type fits that algorithm, the signature, `exp` (required),
    /// `nbf`, `iss` and `aud` as configured, with the leeway. Returns the principal and `exp`.
    fn check_token(&self, token: &[u8]) -> Result<(Principal, u64), Denied> {
        use jsonwebtoken::Algorithm;
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
        let bad = |why: String| Denied::Unauthenticated(format!("invalid token: {why}"));
        let token = std::str::from_utf8(token).map_err(|_| bad("not text".into()))?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(bad(format!(
                "algorithm {:?} is not accepted (RS256, ES256, EdDSA)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| bad("it names no key (kid)".into()))?;
        let keys = self.keys.load();
        let Some(jwk) = keys.find(kid) else {
            // Perhaps the provider rotated its keys: ask for them again (rate-limited); the
            // client's retry succeeds once they are in.
            if let Some(f) = &self.fetcher {
                f.wake.notify_one();
                return Err(bad(format!(
                    "unknown key id '{kid}' (the provider's keys are being fetched again: retry in a few seconds)"
                )));
            }
            return Err(bad(format!("unknown key id '{kid}'")));
        };
        // The key decides the algorithm family: an RSA key never verifies an HMAC or EC
        // signature, whatever the header says.
        let fits = match (&jwk.algorithm, header.alg) {
            (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
                p.curve == EllipticCurve::Ed25519
            }
            _ => false,
        };
        if !fits {
            return Err(bad(format!("key '{kid}' does not verify {:?}", header.alg)));
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .map_err(|e| bad(format!("key '{kid}': {e}")))?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.leeway = self.config.leeway_secs;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.config.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.config.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| bad(e.to_string()))?;
        let claims = data.claims;
        let mut at = &claims;
        for part in self.config.scope_claim.split('.') {
            at = &at[part];
        }
        let names: Vec<&str> = match at {
            serde_json::Value::String(s) => s.split_whitespace().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let scope = names
            .iter()
            .filter_map(|n| match *n {
                "infer" => Some(Scope::Infer),
                "write" => Some(Scope::Write),
                "admin" => Some(Scope::Admin),
                _ => None,
            })
            .max();
        let name = claims["sub"]
            .as_str()
            .unwrap_or("(token without sub)")
            .to_owned();
        let exp = claims["exp"].as_u64().unwrap_or(0);
        let names = |claim: &str| {
            claims.get(claim).map(|v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        };
        let reach = Reach {
            models: names("models"),
            collections: names("collections"),
            feature_views: names("feature_views"),
        };
        Ok((Principal { name, scope, reach }, exp))
    }
}

fn read_jwks(file: &Path) -> anyhow::Result<jsonwebtoken::jwk::JwkSet> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading the JWKS {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (expected a JWKS: {{\"keys\": [{{\"kty\": \"RSA\", \"kid\": ..., \"n\": ..., \"e\": ...}}]}})",
            file.display()
        )
    })
}

/// Calls `reload` each time `file`'s modification time changes (polled every second).
pub(crate) fn on_change(file: PathBuf, reload: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut last = modified(&file);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = modified(&file);
            if now != last {
                last = now;
                reload();
            }
        }
    });
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_keys(file: &Path) -> anyhow::Result<Principals> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading the API keys file {}: {e}", file.display()))?;
    parse_keys(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn parse_keys(text: &str) -> anyhow::Result<Principals> {
    let f: KeysFile = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{e} (expected {{\"keys\": [{{\"name\": \"ci\", \"sha256\": \"<64 hex digits>\", \"scopes\": [\"admin\"]}}], \"certificates\": [{{\"name\": \"<a client certificate's SAN or CN>\", \"scopes\": [\"infer\"]}}]}}; `inferd keys hash` makes a key entry)"
        )
    })?;
    let scope_of = |what: &str, name: &str, scopes: &[Scope]| {
        scopes.iter().copied().max().ok_or_else(|| {
            anyhow::anyhow!("{what} '{name}': give at least one scope (infer, write, admin)")
        })
    };
    let keys = f
        .keys
        .into_iter()
        .map(|k| {
            let bytes = hex_digest(&k.sha256).ok_or_else(|| {
                anyhow::anyhow!(
                    "key '{}': sha256 must be 64 hex digits (the SHA-256 of the secret)",
                    k.name
                )
            })?;
            let scope = scope_of("key", &k.name, &k.scopes)?;
            Ok(Key {
                digest: bytes,
                principal: Principal {
                    name: k.name,
                    scope: Some(scope),
                    reach: Reach {
                        models: k.models,
                        collections: k.collections,
                        feature_views: k.feature_views,
                    },
                },
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let certificates = f
        .certificates
        .into_iter()
        .map(|c| {
            anyhow::ensure!(!c.name.is_empty(), "a certificate principal needs a name");
            let scope = scope_of("certificate", &c.name, &c.scopes)?;
            Ok(Principal {
                name: c.name,
                scope: Some(scope),
                reach: Reach {
                    models: c.models,
                    collections: c.collections,
                    feature_views: c.feature_views,
                },
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Principals { keys, certificates })
}

fn hex_digest(s: &str) -> Option<[u8; 32]> {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random secret (`inferd_` + 48 hex digits) and its SHA-256, hex.
fn random_secret() -> (String, String) {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let secret = format!(
        "inferd_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (secret, hex)
}

/// A new random secret and its keys-file entry (`inferd keys hash`).
pub fn new_key(name: &str, scope: Scope) -> (String, String) {
    let (secret, hex) = random_secret();
    let entry = serde_json::json!({"name": name, "sha256": hex, "scopes": [scope.as_str()]});
    (secret, entry.to_string())
}

// ------------------------------------------------------------------------------ REST

/// What a REST route needs, from its method and the template the router matched
/// (`None`: no route matched — the fallback).
pub fn http_need(method: &Method, route: Option<&str>) -> Need {
    let Some(route) = route else {
        // Unknown path: a valid key of any scope, then the 404.
        return Need::Scope(Scope::Infer);
    };
    match (method.as_str(), route) {
        ("GET", "/v2/health/live" | "/v2/health/ready") => Need::Open,
        // Who may call: admin only, though it reads.
        ("GET" | "HEAD", "/api/keys" | "/api/routes") => Need::Scope(Scope::Admin),
        ("GET" | "HEAD", _) => Need::Scope(Scope::Infer),
        (
            "POST",
            "/v2/models/{m}/infer"
            | "/v2/models/{m}/versions/{v}/infer"
            // A read (the models and their states), as gRPC's RepositoryIndex.
            | "/v2/repository/index"
            | "/v1/embeddings"
            | "/api/collections/{c}/search"
            | "/api/collections/{c}/search/batch"
            | "/api/features/get-online-features"
            // Qdrant's reads that are POSTs: retrieve, search, query.
            | "/collections/{c}/points"
            | "/collections/{c}/points/search"
            | "/collections/{c}/points/query"
            | "/collections/{c}/points/scroll"
            | "/collections/{c}/points/count",
        ) => Need::Scope(Scope::Infer),
        ("PUT", "/collections/{c}/points") | ("POST", "/collections/{c}/points/delete") => {
            Need::Scope(Scope::Write)
        }
        (
            "POST" | "PUT",
            "/api/feedback"
            | "/api/collections/{c}/points"
            | "/api/collections/{c}/points/delete"
            | "/api/features/push"
            | "/api/features/write-to-online-store",
        ) => Need::Scope(Scope::Write),
        _ => Need::Scope(Scope::Admin),
    }
}

/// The refusal as HTTP: 401 with `WWW-Authenticate`, or 403, in the API's error shape.
fn http_refusal(d: &Denied) -> Response {
    let (status, challenge) = match d {
        Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, true),
        Denied::Forbidden { .. } | Denied::OutOfReach { .. } => (StatusCode::FORBIDDEN, false),
        Denied::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, false),
    };
    let mut r = (
        status,
        axum::Json(serde_json::json!({"error": d.message()})),
    )
        .into_response();
    if challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"inferd\""),
        );
    }
    if matches!(d, Denied::Busy { .. }) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

/// The axum layer, applied with `Router::route_layer` to the whole app once every router is
/// merged: it runs after routing (so it sees the template the router matched, `MatchedPath`)
/// and before the handler extracts anything (so a refused upload has read its headers only).
/// Requests that match no route go to [`fallback`], which authenticates too.
pub async fn http_layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.active() {
        return next.run(req).await;
    }
    // Cheap handles (reference-counted), read only when an event is recorded.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map(MatchedPath::as_str);
    // A route layer always sees its route; without one, the most the request could need.
    let need = match route {
        Some(r) => http_need(req.method(), Some(r)),
        None => Need::Scope(Scope::Admin),
    };
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let event = |principal: Option<&str>, result: String| {
        serde_json::json!({"transport": "http", "principal": principal, "method": method.as_str(),
                           "route": route, "target": uri.path(), "result": result})
    };
    match auth.admit(need, Credentials::of(req.headers(), req.extensions())) {
        Ok((p, _permit)) => {
            let mut req = req;
            crate::access::Slot::principal(
                req.extensions().get(),
                p.as_ref().map_or(ANONYMOUS, |p| p.name.as_str()),
            );
            if let Some(p) = p.as_ref().filter(|p| !p.reach.unrestricted()) {
                if let Err(d) = within_reach(p, route, &mut req).await {
                    auth.audit.record(event(
                        denied_principal(&d),
                        format!("refused: {}", d.message()),
                    ));
                    return http_refusal(&d);
                }
                // For the list handlers, which show only what it may reach.
                req.extensions_mut().insert(p.clone());
            }
            let changes = matches!(need, Need::Scope(Scope::Write | Scope::Admin));
            let response = next.run(req).await;
            if changes {
                let who = p.as_ref().map_or(ANONYMOUS, |p| p.name.as_str());
                auth.audit
                    .record(event(Some(who), response.status().as_u16().to_string()));
            }
            response
        }
        Err(d) => {
            auth.audit.record(event(
                denied_principal(&d),
                format!("refused: {}", d.message()),
            ));
            http_refusal(&d)
        }
    }
}

/// What a REST route reaches, for a restricted principal.
enum Target {
    /// Nothing a [`Reach`] lists (server metadata, health, the route list).
    Nothing,
    /// A list, filtered by its handler ([`visible`]).
    List,
    /// The name in this path parameter.
    Path(Kind, &'static str),
    /// Named in the body, and checked by its handler once parsed ([`check_reach`]).
    Checked,
    /// Named in the body, which the layer does not read: refused to a principal restricted
    /// in that kind (`None`: in any).
    Body(Option<Kind>),
    /// Refused to every restricted principal: managing keys (a restricted admin could
    /// otherwise make itself a key without its restrictions, or revoke anyone's).
    Unrestricted,
}

fn target(route: &str) -> Target {
    let under = |prefix: &str| {
        route == prefix
            || route
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('/'))
    };
    match route {
        "/" | "/v2" | "/v2/health/live" | "/v2/health/ready" | "/api/routes" => Target::Nothing,
        _ if under("/api/keys") => Target::Unrestricted,
        "/api/models"
        | "/api/collections"
        | "/api/feature-views"
        | "/api/drift"
        | "/api/experiments"
        | "/v1/models"
        | "/collections"
        | "/v2/models/stats"
        | "/v2/repository/index" => Target::List,
        _ if under("/v2/models/{m}") || under("/v2/repository/models/{m}") => {
            Target::Path(Kind::Model, "m")
        }
        _ if under("/api/models/{name}") => Target::Path(Kind::Model, "name"),
        "/v1/models/{model}" => Target::Path(Kind::Model, "model"),
        _ if under("/api/drift/{model}") => Target::Path(Kind::Model, "model"),
        _ if under("/api/collections/{c}") || under("/collections/{c}") => {
            Target::Path(Kind::Collection, "c")
        }
        _ if under("/api/feature-views/{name}") => Target::Path(Kind::FeatureView, "name"),
        "/v1/embeddings"
        | "/api/features/get-online-features"
        | "/api/features/push"
        | "/api/features/write-to-online-store"
        | "/api/feedback" => Target::Checked,
        // An experiment's models are its configuration's, checked by its handlers.
        _ if under("/api/experiments") => Target::Checked,
        _ if under("/api/features") => Target::Body(Some(Kind::FeatureView)),
        _ => Target::Body(None),
    }
}

/// Whether a restricted principal may reach what the route names. The names come from the
/// router's own captures (percent-decoded as the handler sees them).
async fn within_reach(p: &Principal, route: Option<&str>, req: &mut Request) -> Result<(), Denied> {
    use axum::extract::FromRequestParts;
    let out = |what: String| Denied::OutOfReach {
        principal: p.name.clone(),
        what,
    };
    let Some(route) = route else {
        return Err(out("an unrouted path".into()));
    };
    match target(route) {
        Target::Nothing | Target::List | Target::Checked => Ok(()),
        Target::Unrestricted => Err(out(format!(
            "{route}: keys are managed by a principal without restrictions"
        ))),
        Target::Body(kind) => {
            let restricted = match kind {
                Some(k) => p.reach.restricts(k),
                None => !p.reach.unrestricted(),
            };
            if restricted {
                Err(out(format!(
                    "{route}: it names its {} in the body, which is not open to a principal restricted to some",
                    kind.map_or("target", Kind::noun)
                )))
            } else {
                Ok(())
            }
        }
        Target::Path(kind, param) => {
            let (mut parts, body) = std::mem::take(req).into_parts();
            let params = axum::extract::RawPathParams::from_request_parts(&mut parts, &()).await;
            let name = params.ok().and_then(|ps| {
                ps.iter()
                    .find(|(k, _)| *k == param)
                    .map(|(_, v)| v.to_owned())
            });
            *req = Request::from_parts(parts, body);
            match name {
                Some(n) if p.reach.allows(kind, &n) => Ok(()),
                Some(n) => Err(out(format!("{} '{n}'", kind.noun()))),
                None => Err(out(route.to_owned())),
            }
        }
    }
}

fn denied_principal(d: &Denied) -> Option<&str> {
    match d {
        Denied::Unauthenticated(_) => None,
        Denied::Forbidden { principal, .. }
        | Denied::Busy { principal, .. }
        | Denied::OutOfReach { principal, .. } => Some(principal),
    }
}

/// Puts `router` behind `auth`: [`http_layer`] on every route (after routing, before the
/// handler reads a body), and the fallback and the method-not-allowed answer authenticated
/// before they say anything. Routes added to the result afterwards are left open.
pub fn protect(router: axum::Router, auth: &Arc<Auth>) -> axum::Router {
    router
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(auth),
            http_layer,
        ))
        .fallback({
            let auth = Arc::clone(auth);
            move |req| fallback(Arc::clone(&auth), req)
        })
        // After every route is in: it is set on each path's methods as they are now.
        .method_not_allowed_fallback({
            let auth = Arc::clone(auth);
            move |req| method_not_allowed(Arc::clone(&auth), req)
        })
}

/// The app's fallback (no route matched): a valid key first, then the 404, so a caller
/// without one learns nothing about which paths exist.
pub async fn fallback(auth: Arc<Auth>, req: Request) -> Response {
    if let Some(refused) = authenticate_unrouted(&auth, &req) {
        return refused;
    }
    crate::error::ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// The app's method-not-allowed fallback (a path served with other methods): a valid key
/// first, then the 405.
pub async fn method_not_allowed(auth: Arc<Auth>, req: Request) -> Response {
    if let Some(refused) = authenticate_unrouted(&auth, &req) {
        return refused;
    }
    crate::http::method_not_allowed(req.method(), req.uri())
}

/// For a request no route takes: `None` when it may learn that (valid credentials of any
/// scope, or authentication off), else the refusal (audited).
fn authenticate_unrouted(auth: &Auth, req: &Request) -> Option<Response> {
    let (method, uri) = (req.method(), req.uri());
    if !auth.enabled() {
        return None;
    }
    let d = auth
        .check(
            http_need(method, None),
            Credentials::of(req.headers(), req.extensions()),
        )
        .err()?;
    auth.audit.record(
        serde_json::json!({"transport": "http", "principal": denied_principal(&d),
        "method": method.as_str(), "route": null, "target": uri.path(),
        "result": format!("refused: {}", d.message())}),
    );
    Some(http_refusal(&d))
}

/// The metrics port's layer: open unless `--auth-metrics`, then any valid key.
pub async fn metrics_layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.metrics {
        return next.run(req).await;
    }
    match auth.check(
        Need::Scope(Scope::Infer),
        Credentials::of(req.headers(), req.extensions()),
    ) {
        Ok(_) => next.run(req).await,
        Err(d) => http_refusal(&d),
    }
}

// ------------------------------------------------------------------------------ gRPC

/// What a gRPC method needs, by its exact path. Anything not listed needs `admin` (and
/// gets UNIMPLEMENTED from the router when it exists nowhere).
pub fn grpc_need(path: &str) -> Need {
    let (service, method) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some(x) => x,
        None => return Need::Scope(Scope::Admin),
    };
    use Scope::*;
    let scope = match (service, method) {
        ("inference.GRPCInferenceService", "ServerLive" | "ServerReady") => return Need::Open,
        (
            "inference.GRPCInferenceService",
            "ModelReady" | "ServerMetadata" | "ModelMetadata" | "ModelInfer" | "ModelStreamInfer"
            | "ModelConfig" | "ModelStatistics" | "RepositoryIndex",
        ) => Infer,
        ("inference.GRPCInferenceService", "RepositoryModelLoad" | "RepositoryModelUnload") => {
            Admin
        }
        ("inferd.v1.ModelRegistry", "ListModels" | "GetModel" | "GetVersion") => Infer,
        ("inferd.v1.Drift", "GetDrift") => Infer,
        ("inferd.v1.Experiments", "GetExperiment" | "ListExperiments") => Infer,
        ("inferd.v1.Experiments", "SendFeedback") => Write,
        ("inferd.v1.FeatureStore", "GetOnlineFeatures" | "GetFeatureView" | "ListFeatureViews") => {
            Infer
        }
        ("inferd.v1.FeatureStore", "PushFeatures") => Write,
        (
            "inferd.v1.Collections",
            "ListCollections" | "GetCollection" | "GetPoint" | "Search" | "SearchBatch",
        ) => Infer,
        ("inferd.v1.Collections", "Upsert" | "DeletePoints") => Write,
        // Who may call: admin only, listing included (as GET /api/keys).
        ("inferd.v1.Keys", "ListKeys" | "CreateKey" | "RevokeKey") => Admin,
        _ => Admin,
    };
    Need::Scope(scope)
}

/// The gRPC methods open to a restricted principal: those naming no target, and those whose
/// handlers check the one they name ([`grpc_reach`]).
pub const REACH_CHECKED: &[&str] = &[
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
    "/inference.GRPCInferenceService/ServerMetadata",
    "/inference.GRPCInferenceService/ModelReady",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelConfig",
    "/inference.GRPCInferenceService/ModelStatistics",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
    "/inference.GRPCInferenceService/RepositoryIndex",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/inferd.v1.ModelRegistry/ListModels",
    "/inferd.v1.ModelRegistry/GetModel",
    "/inferd.v1.ModelRegistry/GetVersion",
    "/inferd.v1.ModelRegistry/DeleteVersion",
    "/inferd.v1.ModelRegistry/SetAlias",
    "/inferd.v1.ModelRegistry/DeleteAlias",
    "/inferd.v1.ModelRegistry/RollbackAlias",
    "/inferd.v1.Collections/ListCollections",
    "/inferd.v1.Collections/CreateCollection",
    "/inferd.v1.Collections/GetCollection",
    "/inferd.v1.Collections/DeleteCollection",
    "/inferd.v1.Collections/Upsert",
    "/inferd.v1.Collections/DeletePoints",
    "/inferd.v1.Collections/GetPoint",
    "/inferd.v1.Collections/Search",
    "/inferd.v1.Collections/SearchBatch",
    "/inferd.v1.FeatureStore/GetOnlineFeatures",
    "/inferd.v1.FeatureStore/PushFeatures",
    "/inferd.v1.FeatureStore/PutFeatureView",
    "/inferd.v1.FeatureStore/GetFeatureView",
    "/inferd.v1.FeatureStore/ListFeatureViews",
    "/inferd.v1.FeatureStore/DeleteFeatureView",
    "/inferd.v1.Drift/PutMonitor",
    "/inferd.v1.Drift/PutReference",
    "/inferd.v1.Drift/GetDrift",
    "/inferd.v1.Drift/DeleteMonitor",
    "/inferd.v1.ModelRegistry/UploadVersion",
    "/inferd.v1.Experiments/PutExperiment",
    "/inferd.v1.Experiments/GetExperiment",
    "/inferd.v1.Experiments/ListExperiments",
    "/inferd.v1.Experiments/StopExperiment",
    "/inferd.v1.Experiments/SetWeights",
    "/inferd.v1.Experiments/PromoteArm",
    "/inferd.v1.Experiments/DeleteExperiment",
    "/inferd.v1.Experiments/SendFeedback",
];

/// For the gRPC handlers in [`REACH_CHECKED`]: PERMISSION_DENIED when the call's principal
/// (set by [`GrpcAuth`] when it is restricted) may not reach `name` of `kind`.
pub fn grpc_reach(ext: &tonic::Extensions, kind: Kind, name: &str) -> Result<(), tonic::Status> {
    ext.get::<Principal>()
        .map_or(Ok(()), |p| p.may_reach(kind, name))
        .map_err(tonic::Status::permission_denied)
}

/// For the gRPC list handlers: whether the call's principal may see `name` of `kind`.
pub fn grpc_visible(ext: &tonic::Extensions, kind: Kind, name: &str) -> bool {
    ext.get::<Principal>()
        .is_none_or(|p| p.reach.allows(kind, name))
}

/// The tower layer in front of every gRPC service (`Server::builder().layer(..)`).
#[derive(Clone)]
pub struct GrpcAuthLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            auth: Arc::clone(&self.0),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    auth: Arc<Auth>,
    inner: S,
}

pin_project_lite::pin_project! {
    /// A gRPC call's future holding its principal's [`Permit`] until it completes (or is
    /// dropped).
    pub struct Held<F> {
        #[pin]
        fut: F,
        permit: Option<Permit>,
    }
}

impl<F: Future> Future for Held<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        this.permit.take();
        Poll::Ready(out)
    }
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        Held<S::Future>,
        std::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let need = grpc_need(req.uri().path());
        let uri = req.uri().clone();
        let path = uri.path();
        let event = |principal: Option<&str>, result: String| {
            serde_json::json!({"transport": "grpc", "principal": principal, "method": "POST",
                               "route": path, "target": path, "result": result})
        };
        match self
            .auth
            .admit(need, Credentials::of(req.headers(), req.extensions()))
        {
            Ok((p, permit)) => {
                crate::access::Slot::principal(
                    req.extensions().get(),
                    p.as_ref().map_or(ANONYMOUS, |p| p.name.as_str()),
                );
                // A restricted principal: gRPC messages carry their targets, which this
                // layer does not decode. The methods whose handlers check the target
                // ([`grpc_reach`]) or name none are open to it; the rest are refused.
                if let Some(p) = p.as_ref().filter(|p| !p.reach.unrestricted()) {
                    if !REACH_CHECKED.contains(&path) {
                        let d = Denied::OutOfReach {
                            principal: p.name.clone(),
                            what: format!(
                                "{path}: a principal restricted to some models, collections or feature views may use only {} over gRPC (and REST)",
                                REACH_CHECKED.join(", ")
                            ),
                        };
                        self.auth
                            .audit
                            .record(event(Some(&p.name), format!("refused: {}", d.message())));
                        return futures::future::Either::Right(std::future::ready(Ok(
                            tonic::Status::permission_denied(d.message()).into_http(),
                        )));
                    }
                    req.extensions_mut().insert(p.clone());
                }
                if matches!(need, Need::Scope(Scope::Write | Scope::Admin)) {
                    // Recorded as it is let through (the gRPC status comes in a trailer).
                    let who = p.as_ref().map_or(ANONYMOUS, |p| p.name.as_str());
                    self.auth.audit.record(event(Some(who), "allowed".into()));
                }
                futures::future::Either::Left(Held {
                    fut: self.inner.call(req),
                    permit,
                })
            }
            Err(d) => {
                self.auth.audit.record(event(
                    denied_principal(&d),
                    format!("refused: {}", d.message()),
                ));
                let status = match &d {
                    Denied::Unauthenticated(_) => tonic::Status::unauthenticated(d.message()),
                    Denied::Forbidden { .. } | Denied::OutOfReach { .. } => {
                        tonic::Status::permission_denied(d.message())
                    }
                    Denied::Busy { .. } => tonic::Status::resource_exhausted(d.message()),
                };
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Auth {
        let entry = |name: &str, secret: &str, scope: &str| {
            let hex: String = Sha256::digest(secret.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!(r#"{{"name": "{name}", "sha256": "{hex}", "scopes": ["{scope}"]}}"#)
        };
        Auth::from_json(&format!(
            r#"{{"keys": [{}, {}, {}]}}"#,
            entry("reader", "r-secret", "infer"),
            entry("pusher", "w-secret", "write"),
            entry("ops", "a-secret", "admin"),
        ))
        .unwrap()
    }

    #[test]
    fn scopes_are_ordered_and_checked() {
        let a = keys();
        let admin = Need::Scope(Scope::Admin);
        let infer = Need::Scope(Scope::Infer);
        assert!(matches!(
            a.check(infer, Credentials::bearer(Some(b"Bearer r-secret"))),
            Ok(Some(_))
        ));
        assert!(matches!(
            a.check(infer, Credentials::bearer(Some(b"Bearer a-secret"))),
            Ok(Some(_))
        ));
        assert!(matches!(
            a.check(admin, Credentials::bearer(Some(b"Bearer w-secret"))),
            Err(Denied::Forbidden {
                need: Scope::Admin,
                ..
            })
        ));
        assert!(matches!(
            a.check(infer, Credentials::bearer(None)),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.check(infer, Credentials::bearer(Some(b"Bearer nope"))),
            Err(Denied::Unauthenticated(m)) if m == "invalid API key"
        ));
        assert!(matches!(
            a.check(infer, Credentials::bearer(Some(b"Basic cjpy"))),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(a.check(Need::Open, Credentials::default()), Ok(None));
        assert_eq!(
            Auth::disabled().check(admin, Credentials::bearer(None)),
            Ok(None)
        );
    }

    #[test]
    fn bad_key_files_say_what_to_fix() {
        let e =
            Auth::from_json(r#"{"keys": [{"name": "x", "sha256": "abc", "scopes": ["admin"]}]}"#)
                .err()
                .unwrap()
                .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e =
            Auth::from_json(r#"{"keys": [{"name": "x", "sha256": "abc", "scopes": ["root"]}]}"#)
                .err()
                .unwrap()
                .to_string();
        assert!(e.contains("unknown variant"), "{e}");
        let e = Auth::from_json(r#"{"keys": [{"name": "x", "sha256": "00", "scopes": []}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("64 hex") || e.contains("scope"), "{e}");
    }

    #[test]
    fn a_new_key_verifies() {
        let (secret, entry) = new_key("svc", Scope::Write);
        let a = Auth::from_json(&format!(r#"{{"keys": [{entry}]}}"#)).unwrap();
        let p = a
            .authenticate(Credentials::bearer(Some(
                format!("Bearer {secret}").as_bytes(),
            )))
            .unwrap();
        assert_eq!((p.name.as_str(), p.scope), ("svc", Some(Scope::Write)));
    }

    #[test]
    fn grpc_methods_are_matched_exactly() {
        assert_eq!(
            grpc_need("/inference.GRPCInferenceService/ModelInfer"),
            Need::Scope(Scope::Infer)
        );
        assert_eq!(
            grpc_need("/inference.GRPCInferenceService/ServerLive"),
            Need::Open
        );
        // Odd slashes and case resolve to nothing, and nothing needs admin.
        for odd in [
            "//inference.GRPCInferenceService/ServerLive",
            "/inference.GRPCInferenceService//ServerLive",
            "/inference.grpcinferenceservice/ServerLive",
            "/inference.GRPCInferenceService/ServerLive/",
            "",
        ] {
            assert_eq!(grpc_need(odd), Need::Scope(Scope::Admin), "{odd}");
        }
        assert_eq!(
            grpc_need("/inferd.v1.ModelRegistry/SetAlias"),
            Need::Scope(Scope::Admin)
        );
    }

    #[test]
    fn rest_needs_follow_the_matched_route() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(http_need(&get, Some("/v2/health/ready")), Need::Open);
        assert_eq!(
            http_need(&post, Some("/v2/models/{m}/infer")),
            Need::Scope(Scope::Infer)
        );
        assert_eq!(
            http_need(&post, Some("/api/models/{name}/versions")),
            Need::Scope(Scope::Admin)
        );
        assert_eq!(
            http_need(&Method::PUT, Some("/api/collections/{c}/points")),
            Need::Scope(Scope::Write)
        );
        // A POST to a health route is not open.
        assert_eq!(
            http_need(&post, Some("/v2/health/live")),
            Need::Scope(Scope::Admin)
        );
    }
}
