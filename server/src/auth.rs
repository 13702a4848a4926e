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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
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
}

/// One key of the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    /// SHA-256 of the secret, hex.
    sha256: String,
    /// Its scopes (the highest counts: each includes those below it).
    scopes: Vec<Scope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone)]
struct Key {
    digest: [u8; 32],
    principal: Principal,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or none that are valid: 401 / UNAUTHENTICATED.
    Unauthenticated(String),
    /// Valid credentials without the scope: 403 / PERMISSION_DENIED.
    Forbidden { principal: String, need: Scope },
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
        }
    }
}

/// The configured keys (reloaded when their file changes) and the decision.
pub struct Auth {
    keys: ArcSwap<Vec<Key>>,
    file: Option<PathBuf>,
    /// Bearer JWTs, when a JWKS is configured.
    jwt: Option<Jwt>,
    /// The metrics port asks for credentials too (scope `infer`).
    pub metrics: bool,
    /// Where changes and refusals are recorded.
    pub audit: Audit,
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
            keys: ArcSwap::from_pointee(Vec::new()),
            file: None,
            jwt: None,
            metrics: false,
            audit: Audit::default(),
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
            keys: ArcSwap::from_pointee(keys),
            file: file.map(Path::to_owned),
            jwt,
            metrics: metrics && enabled,
            audit: Audit::default(),
        })
    }

    /// Keys from JSON text (tests, and the file's reader).
    pub fn from_json(text: &str) -> anyhow::Result<Auth> {
        Ok(Auth {
            keys: ArcSwap::from_pointee(parse_keys(text)?),
            file: None,
            jwt: None,
            metrics: false,
            audit: Audit::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.jwt.is_some() || !self.keys.load().is_empty()
    }

    /// Re-reads the keys file and the JWKS each time they change (polled every second); a
    /// file that no longer parses keeps the keys in force (and says why in the log).
    pub fn watch(self: &Arc<Self>) {
        if let Some(jwt) = &self.jwt {
            let auth = Arc::clone(self);
            on_change(jwt.config.jwks.clone(), move || {
                if let Some(jwt) = &auth.jwt {
                    jwt.reload();
                }
            });
        }
        if let Some(file) = self.file.clone() {
            let auth = Arc::clone(self);
            on_change(file.clone(), move || match read_keys(&file) {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), file = %file.display(), "API keys reloaded");
                    auth.keys.store(Arc::new(keys));
                }
                Err(e) => {
                    tracing::error!(error = %e, "the API keys file no longer parses; keeping the keys in force");
                }
            });
        }
    }

    /// The principal a bearer token names. Every configured digest is compared, in constant
    /// time, whatever matches first.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Denied> {
        let unauthenticated = |why: &str| Denied::Unauthenticated(why.to_owned());
        let Some(value) = authorization else {
            return Err(unauthenticated(
                "missing credentials: send 'Authorization: Bearer <API key or token>'",
            ));
        };
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or_else(|| {
                unauthenticated(
                    "unsupported authorization scheme: send 'Authorization: Bearer <API key or token>'",
                )
            })?;
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
        let keys = self.keys.load();
        let mut found: Option<&Key> = None;
        for k in keys.iter() {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
            .map(|k| k.principal.clone())
            .ok_or_else(|| unauthenticated("invalid API key"))
    }

    /// The decision for a request needing `need`.
    /// The decision for a request needing `need`: who it is (`None` when nothing is asked:
    /// authentication off, or an open route), or why not.
    pub fn check(
        &self,
        need: Need,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Principal>, Denied> {
        if !self.enabled() || need == Need::Open {
            return Ok(None);
        }
        let Need::Scope(need) = need else {
            return Ok(None);
        };
        let p = self.authenticate(authorization)?;
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

/// The longest credentials read (a JWT of an OIDC provider is 1–2 KiB): anything longer is
/// refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How bearer JWTs are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// A JWKS file (`{"keys": [...]}`, as an OIDC provider's `jwks_uri` serves it), re-read
    /// when it changes.
    pub jwks: PathBuf,
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
}

impl Jwt {
    fn open(config: JwtConfig) -> anyhow::Result<Jwt> {
        let keys = read_jwks(&config.jwks)?;
        Ok(Jwt {
            config,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    fn reload(&self) {
        match read_jwks(&self.config.jwks) {
            Ok(k) => {
                tracing::info!(keys = k.keys.len(), "JWKS reloaded");
                self.keys.store(Arc::new(k));
            }
            Err(e) => {
                tracing::error!(error = %e, "the JWKS file no longer parses; keeping the keys in force")
            }
        }
    }

    /// Verifies a token: an accepted algorithm (RS256, ES256, EdDSA — never `none` or HS*),
    /// a key named by `kid` whose type fits that algorithm, the signature, `exp` (required),
    /// `nbf`, `iss` and `aud` as configured, with the leeway.
    fn verify(&self, token: &[u8]) -> Result<Principal, Denied> {
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
        let jwk = keys
            .find(kid)
            .ok_or_else(|| bad(format!("unknown key id '{kid}'")))?;
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
        Ok(Principal { name, scope })
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
fn on_change(file: PathBuf, reload: impl Fn() + Send + 'static) {
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

fn read_keys(file: &Path) -> anyhow::Result<Vec<Key>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading the API keys file {}: {e}", file.display()))?;
    parse_keys(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn parse_keys(text: &str) -> anyhow::Result<Vec<Key>> {
    let f: KeysFile = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{e} (expected {{\"keys\": [{{\"name\": \"ci\", \"sha256\": \"<64 hex digits>\", \"scopes\": [\"admin\"]}}]}}; `inferd keys hash` makes an entry)"
        )
    })?;
    f.keys
        .into_iter()
        .map(|k| {
            let bytes = hex_digest(&k.sha256).ok_or_else(|| {
                anyhow::anyhow!(
                    "key '{}': sha256 must be 64 hex digits (the SHA-256 of the secret)",
                    k.name
                )
            })?;
            let scope = k.scopes.iter().copied().max().ok_or_else(|| {
                anyhow::anyhow!(
                    "key '{}': give at least one scope (infer, write, admin)",
                    k.name
                )
            })?;
            Ok(Key {
                digest: bytes,
                principal: Principal {
                    name: k.name,
                    scope: Some(scope),
                },
            })
        })
        .collect()
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

/// A new random secret and its keys-file entry (`inferd keys hash`).
pub fn new_key(name: &str, scope: Scope) -> (String, String) {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let secret = format!(
        "inferd_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
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
        ("GET" | "HEAD", _) => Need::Scope(Scope::Infer),
        (
            "POST",
            "/v2/models/{m}/infer"
            | "/v2/models/{m}/versions/{v}/infer"
            | "/v1/embeddings"
            | "/api/collections/{c}/search"
            | "/api/collections/{c}/search/batch"
            | "/api/features/get-online-features",
        ) => Need::Scope(Scope::Infer),
        (
            "POST" | "PUT",
            "/api/feedback"
            | "/api/collections/{c}/points"
            | "/api/collections/{c}/points/delete"
            | "/api/features/push",
        ) => Need::Scope(Scope::Write),
        _ => Need::Scope(Scope::Admin),
    }
}

/// The refusal as HTTP: 401 with `WWW-Authenticate`, or 403, in the API's error shape.
fn http_refusal(d: &Denied) -> Response {
    let (status, challenge) = match d {
        Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, true),
        Denied::Forbidden { .. } => (StatusCode::FORBIDDEN, false),
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
    if !auth.enabled() && !auth.audit.enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // A route layer always sees its route; without one, the most the request could need.
    let need = match route.as_deref() {
        Some(r) => http_need(req.method(), Some(r)),
        None => Need::Scope(Scope::Admin),
    };
    let (method, target) = (req.method().to_string(), req.uri().path().to_owned());
    let event = |principal: Option<&str>, result: String| {
        serde_json::json!({"transport": "http", "principal": principal, "method": method,
                           "route": route, "target": target, "result": result})
    };
    match auth.check(need, authorization(req.headers())) {
        Ok(p) => {
            let changes = matches!(need, Need::Scope(Scope::Write | Scope::Admin));
            let response = next.run(req).await;
            if changes {
                let who = p
                    .as_ref()
                    .map_or("anonymous (--no-auth)", |p| p.name.as_str());
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

fn denied_principal(d: &Denied) -> Option<&str> {
    match d {
        Denied::Unauthenticated(_) => None,
        Denied::Forbidden { principal, .. } => Some(principal),
    }
}

/// The app's fallback (no route matched): a valid key first, then the 404, so a caller
/// without one learns nothing about which paths exist.
pub async fn fallback(
    auth: Arc<Auth>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if auth.enabled()
        && let Err(d) = auth.check(http_need(&method, None), authorization(&headers))
    {
        auth.audit.record(
            serde_json::json!({"transport": "http", "principal": denied_principal(&d),
            "method": method.as_str(), "route": null, "target": uri.path(),
            "result": format!("refused: {}", d.message())}),
        );
        return http_refusal(&d);
    }
    crate::error::ApiError::NotFound(format!("no route for {method} {}", uri.path()))
        .into_response()
}

/// The metrics port's layer: open unless `--auth-metrics`, then any valid key.
pub async fn metrics_layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.metrics {
        return next.run(req).await;
    }
    match auth.check(Need::Scope(Scope::Infer), authorization(req.headers())) {
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
        _ => Admin,
    };
    Need::Scope(scope)
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

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let need = grpc_need(req.uri().path());
        let event = |principal: Option<&str>, result: String| {
            serde_json::json!({"transport": "grpc", "principal": principal, "method": "POST",
                               "route": req.uri().path(), "target": req.uri().path(), "result": result})
        };
        match self.auth.check(need, authorization(req.headers())) {
            Ok(p) => {
                if matches!(need, Need::Scope(Scope::Write | Scope::Admin)) {
                    // Recorded as it is let through (the gRPC status comes in a trailer).
                    let who = p
                        .as_ref()
                        .map_or("anonymous (--no-auth)", |p| p.name.as_str());
                    self.auth.audit.record(event(Some(who), "allowed".into()));
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(d) => {
                self.auth.audit.record(event(
                    denied_principal(&d),
                    format!("refused: {}", d.message()),
                ));
                let status = match &d {
                    Denied::Unauthenticated(_) => tonic::Status::unauthenticated(d.message()),
                    Denied::Forbidden { .. } => tonic::Status::permission_denied(d.message()),
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
            a.check(infer, Some(b"Bearer r-secret")),
            Ok(Some(_))
        ));
        assert!(matches!(
            a.check(infer, Some(b"Bearer a-secret")),
            Ok(Some(_))
        ));
        assert!(matches!(
            a.check(admin, Some(b"Bearer w-secret")),
            Err(Denied::Forbidden {
                need: Scope::Admin,
                ..
            })
        ));
        assert!(matches!(
            a.check(infer, None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.check(infer, Some(b"Bearer nope")),
            Err(Denied::Unauthenticated(m)) if m == "invalid API key"
        ));
        assert!(matches!(
            a.check(infer, Some(b"Basic cjpy")),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(a.check(Need::Open, None), Ok(None));
        assert_eq!(Auth::disabled().check(admin, None), Ok(None));
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
            .authenticate(Some(format!("Bearer {secret}").as_bytes()))
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
