//! Server configuration: one TOML file (`--config`), overridden by `INFERD_*` environment
//! variables, overridden by command-line flags; validated before anything starts.
//!
//! ```toml
//! # inferd.toml — every key is optional
//! model_repository = "/srv/models"   # default: the embedded example models
//! # The registry of a fleet, in S3-compatible object storage (model_repository is then this
//! # replica's cache of it; default <data_dir>/registry-cache). Credentials: the AWS_*
//! # variables, or registry_options (object_store's S3 settings).
//! registry = "s3://models/inferd"
//! registry_options = { endpoint = "http://minio:9000", region = "us-east-1" }
//! registry_poll_ms = 1000            # how soon a change made through another replica serves
//! data_dir = "/var/lib/inferd"       # default: ~/.local/share/inferd
//! host = "0.0.0.0"
//! http_port = 8000
//! grpc_port = 8001
//! metrics_port = 8002
//! max_request_bytes = 67108864       # larger bodies get 413 / RESOURCE_EXHAUSTED
//! max_upload_bytes = 4294967296      # largest model artifact accepted by the registry
//! onnxruntime_lib = "/opt/onnxruntime/lib/libonnxruntime.so.1.31.1"
//! drain_timeout_secs = 30            # on SIGTERM, how long in-flight requests may take
//! feature_store = "redis://127.0.0.1:6379/0"  # online feature store; default "memory"
//! feature_views = "/etc/inferd/features.toml" # feature views ([views.<name>] tables)
//! kafka_brokers = "kafka-1:9092,kafka-2:9092" # ingest the views' topics; default: none
//! kafka_group = "inferd-features"    # the ingester's consumer group
//! # librdkafka properties for every Kafka client inferd makes (the ingester, the drift
//! # publisher): TLS, SASL, timeouts. --kafka-option KEY=VALUE adds or overrides one.
//! kafka_options = { "security.protocol" = "ssl", "ssl.ca.location" = "/etc/inferd/kafka-ca.pem" }
//! state = "redis://redis:6379/1"     # a fleet's shared experiment statistics; default: none
//! experiments = "/etc/inferd/experiments.toml" # [experiments.<name>] tables, applied at start
//! feedback_capacity = 1000000        # requests kept for feedback by request id
//! feedback_ttl_secs = 3600           # how long a request waits for its feedback
//! drift_queue = 4096                 # sampled requests waiting for the drift monitor
//! drift_kafka_topic = "inferd-predictions" # publish sampled predictions and truths
//! drift_kafka_brokers = "kafka-1:9092" # default: kafka_brokers
//! api_keys = "/etc/inferd/keys.json" # API keys with their scopes; default: no authentication
//! auth_metrics = false               # the metrics port asks for a key too
//! jwks = "/etc/inferd/jwks.json"     # bearer JWTs signed by these keys (RS256, ES256, EdDSA),
//!                                    # or the provider's jwks_uri (https://idp/.../certs)
//! jwks_refresh_secs = 300            # with a URL: between fetches (and at most once per
//! jwks_min_refresh_secs = 10         #   this when tokens name unknown key ids)
//! jwt_issuer = "https://idp.example/realms/ml" # required iss; jwt_audience: required aud
//! jwt_scope_claim = "scope"          # or e.g. "realm_access.roles" (Keycloak)
//! audit_log = "/var/log/inferd/audit.jsonl" # refusals and changes, one JSON object a line
//! access_log = false                 # a log line per request (target `access`)
//! no_auth = false                    # serve without authentication (on 127.0.0.1 by default)
//! tls_cert = "/etc/inferd/tls/server.crt" # TLS on every port (PEM chain; re-read on change)
//! tls_key = "/etc/inferd/tls/server.key"
//! tls_client_ca = "/etc/inferd/tls/clients-ca.crt" # mTLS: client certificates must chain to it
//! tls_client_cert_optional = false   # with tls_client_ca: clients without a certificate allowed
//! header_timeout_secs = 30           # to finish a TLS handshake, to send a request's headers
//! max_header_bytes = 16384           # request line and headers, at most (431 past it)
//! max_concurrent_per_principal = 512 # requests in flight per key, token subject or certificate
//! redis_ca_cert = "/etc/inferd/redis-ca.crt" # with feature_store = "rediss://...": the CA to trust
//! redis_client_cert = "/etc/inferd/redis-client.crt" # and a client certificate (with redis_client_key)
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

/// `inferd serve` flags. Each is also an `INFERD_*` variable and a key of the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; flags and INFERD_* variables override its keys.
    #[arg(long, env = "INFERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model repository: DIR/<model>/<version>/model.onnx (Triton's layout). Default: the
    /// example models embedded in the binary, unpacked under the data directory.
    #[arg(long, env = "INFERD_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// The model registry of a fleet in S3-compatible object storage: `s3://bucket/prefix`.
    /// Every replica given the same URL serves the same models, versions and aliases;
    /// --model-repository is then this replica's cache (default: DATA_DIR/registry-cache).
    /// Credentials and region: the AWS_* environment variables, or --registry-option.
    #[arg(long, env = "INFERD_REGISTRY")]
    pub registry: Option<String>,
    /// An S3 setting of the registry's store, repeatable: endpoint=URL (MinIO, Ceph, R2,
    /// ...), region, access_key_id, secret_access_key, session_token, allow_http=true,
    /// virtual_hosted_style_request, ...
    #[arg(long = "registry-option", value_name = "KEY=VALUE", value_parser = registry_option)]
    pub registry_options: Vec<(String, String)>,
    /// How often each replica looks for changes made through the others, in ms. Default: 1000.
    #[arg(long, env = "INFERD_REGISTRY_POLL_MS")]
    pub registry_poll_ms: Option<u64>,
    /// Directory for state that must survive restarts. Default: ~/.local/share/inferd.
    #[arg(long, env = "INFERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on. Default: 0.0.0.0 with --api-keys; 127.0.0.1 with --no-auth.
    #[arg(long, env = "INFERD_HOST")]
    pub host: Option<IpAddr>,
    /// REST port (KServe V2). Default: 8000.
    #[arg(long, env = "INFERD_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// gRPC port (inference.GRPCInferenceService). Default: 8001.
    #[arg(long, env = "INFERD_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Prometheus metrics port (/metrics). Default: 8002.
    #[arg(long, env = "INFERD_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Largest request body or gRPC message accepted, in bytes. Default: 64 MiB.
    #[arg(long, env = "INFERD_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Largest model artifact an upload may carry, in bytes. Default: 4 GiB.
    #[arg(long, env = "INFERD_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Path of libonnxruntime.so. Default: ORT_DYLIB_PATH, then ~/.cache/inferd's venv.
    #[arg(long, env = "INFERD_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Seconds in-flight requests may take to finish after SIGTERM. Default: 30.
    #[arg(long, env = "INFERD_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Online feature store: `memory` (in process) or a Redis URL (redis://host:6379/0,
    /// shared by replicas). Default: memory.
    #[arg(long, env = "INFERD_FEATURE_STORE")]
    pub feature_store: Option<String>,
    /// Feature-view file (TOML, one `[views.<name>]` table per view). Views can also be
    /// created with PUT /api/feature-views/{name}.
    #[arg(long, env = "INFERD_FEATURE_VIEWS")]
    pub feature_views: Option<PathBuf>,
    /// Kafka bootstrap servers (host:port,...): ingest the feature views' source topics into
    /// the online store. Default: no ingestion.
    #[arg(long, env = "INFERD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Consumer group of the feature ingester. Default: inferd-features.
    #[arg(long, env = "INFERD_KAFKA_GROUP")]
    pub kafka_group: Option<String>,
    /// A librdkafka property for every Kafka client inferd makes, repeatable: TLS
    /// (`security.protocol=ssl`, `ssl.ca.location=FILE`, `ssl.certificate.location`,
    /// `ssl.key.location`), SASL (`sasl.mechanism`, `sasl.username`, `sasl.password`), ...
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = kafka_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Shared state of a fleet: a Redis URL (`redis://` or `rediss://`, with the
    /// --redis-* TLS settings) where every replica publishes its experiments' statistics and
    /// reads the others', so each answers with the fleet's numbers. Default: none.
    #[arg(long, env = "INFERD_STATE")]
    pub state: Option<String>,
    /// Experiment file (TOML, one `[experiments.<name>]` table per experiment), applied once
    /// the models are loaded. Experiments can also be created with PUT /api/experiments/{name}.
    #[arg(long, env = "INFERD_EXPERIMENTS")]
    pub experiments: Option<PathBuf>,
    /// Requests kept so feedback can name them by id. Default: 1,000,000.
    #[arg(long, env = "INFERD_FEEDBACK_CAPACITY")]
    pub feedback_capacity: Option<usize>,
    /// Seconds a request waits for its feedback before it is dropped. Default: 3600.
    #[arg(long, env = "INFERD_FEEDBACK_TTL_SECS")]
    pub feedback_ttl_secs: Option<u64>,
    /// Sampled requests that may wait for the drift monitor; past it a sample is dropped
    /// (and counted), never the request. Default: 4096.
    #[arg(long, env = "INFERD_DRIFT_QUEUE")]
    pub drift_queue: Option<usize>,
    /// Kafka topic to publish the sampled prediction records and truths to, for a
    /// fleet-wide monitor (`inferd drift watch`). Default: none.
    #[arg(long, env = "INFERD_DRIFT_KAFKA_TOPIC")]
    pub drift_kafka_topic: Option<String>,
    /// Kafka bootstrap servers for --drift-kafka-topic. Default: --kafka-brokers.
    #[arg(long, env = "INFERD_DRIFT_KAFKA_BROKERS")]
    pub drift_kafka_brokers: Option<String>,
    /// API keys (JSON: `{"keys": [{"name", "sha256", "scopes"}]}`, re-read when it changes):
    /// every route but health needs a key with its scope. `inferd keys hash NAME SCOPE`
    /// makes an entry. Default: none (no authentication).
    #[arg(long, env = "INFERD_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// The metrics port asks for an API key too (any scope). Default: open.
    #[arg(long, env = "INFERD_AUTH_METRICS")]
    pub auth_metrics: bool,
    /// Append the audit log (every refused request and every change, with its principal)
    /// to this file, one JSON object per line. Default: the `audit` log target only.
    #[arg(long, env = "INFERD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Log one line per request (target `access`): transport, method, route, status,
    /// latency, principal, request id; for inferences model, version, arm and batch rows.
    /// Default: off.
    #[arg(long, env = "INFERD_ACCESS_LOG")]
    pub access_log: bool,
    /// Serve without authentication: anyone who reaches the ports may do anything. Needed
    /// when no --api-keys is given; the server then listens on 127.0.0.1 unless --host says
    /// otherwise.
    #[arg(long, env = "INFERD_NO_AUTH")]
    pub no_auth: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds a client has to finish its TLS handshake and to send a request's headers
    /// (an idle keep-alive connection is closed after it too). Default: 30.
    #[arg(long, env = "INFERD_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Largest request line and headers (HTTP, 431 past it), or header list (gRPC), in
    /// bytes. Default: 16 KiB (an OIDC provider's token is 1–2 KiB).
    #[arg(long, env = "INFERD_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// For a rediss:// --feature-store: the CA (PEM) to trust instead of the system's.
    #[arg(long, env = "INFERD_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,
    /// For a Redis that asks for client certificates: this one (PEM), with --redis-client-key.
    #[arg(long, env = "INFERD_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,
    #[arg(long, env = "INFERD_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,
    /// Requests one principal (key, token subject, certificate; every caller when
    /// unauthenticated) may have in flight; past it, 429 with Retry-After /
    /// RESOURCE_EXHAUSTED. 0: unlimited. Default: 512.
    #[arg(long, env = "INFERD_MAX_CONCURRENT_PER_PRINCIPAL")]
    pub max_concurrent_per_principal: Option<usize>,
}

/// Bearer JWTs (the server's and `inferd drift watch`'s flags alike).
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// A JWKS file (as an OIDC provider serves it at its `jwks_uri`; re-read when it
    /// changes), or the provider's `jwks_uri` itself (https://...; fetched at start, every
    /// --jwks-refresh-secs, and when a token names an unknown key id): bearer JWTs signed by
    /// its keys (RS256, ES256, EdDSA) are accepted, their scopes read from
    /// --jwt-scope-claim. Default: none.
    #[arg(long, env = "INFERD_JWKS")]
    pub jwks: Option<PathBuf>,
    /// Required `iss` of a token (the OIDC issuer URL). Default: not checked.
    #[arg(long, env = "INFERD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of a token. Default: not checked.
    #[arg(long, env = "INFERD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The claim with the scopes (infer, write, admin): a space-separated string or a list;
    /// dots reach into objects (`realm_access.roles`). Default: scope.
    #[arg(long, env = "INFERD_JWT_SCOPE_CLAIM")]
    pub jwt_scope_claim: Option<String>,
    /// Clock skew allowed on a token's `exp` and `nbf`, seconds. Default: 30.
    #[arg(long, env = "INFERD_JWT_LEEWAY_SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// With a JWKS URL: seconds between fetches. Default: 300.
    #[arg(long, env = "INFERD_JWKS_REFRESH_SECS")]
    pub jwks_refresh_secs: Option<u64>,
    /// With a JWKS URL: the least seconds between two fetches, however many tokens name an
    /// unknown key id. Default: 10.
    #[arg(long, env = "INFERD_JWKS_MIN_REFRESH_SECS")]
    pub jwks_min_refresh_secs: Option<u64>,
}

impl JwtArgs {
    /// Each flag, else `file`'s.
    fn or(self, file: JwtArgs) -> JwtArgs {
        JwtArgs {
            jwks: self.jwks.or(file.jwks),
            jwt_issuer: self.jwt_issuer.or(file.jwt_issuer),
            jwt_audience: self.jwt_audience.or(file.jwt_audience),
            jwt_scope_claim: self.jwt_scope_claim.or(file.jwt_scope_claim),
            jwt_leeway_secs: self.jwt_leeway_secs.or(file.jwt_leeway_secs),
            jwks_refresh_secs: self.jwks_refresh_secs.or(file.jwks_refresh_secs),
            jwks_min_refresh_secs: self.jwks_min_refresh_secs.or(file.jwks_min_refresh_secs),
        }
    }

    /// `None` without --jwks; the defaults filled in.
    pub fn config(self) -> Option<crate::auth::JwtConfig> {
        let jwks = self.jwks?;
        let s = jwks.to_string_lossy();
        let jwks = if s.starts_with("https://") || s.starts_with("http://") {
            crate::auth::JwksSource::Url {
                url: s.into_owned(),
                refresh_secs: self.jwks_refresh_secs.unwrap_or(300),
                min_refresh_secs: self.jwks_min_refresh_secs.unwrap_or(10),
            }
        } else {
            crate::auth::JwksSource::File(jwks)
        };
        Some(crate::auth::JwtConfig {
            jwks,
            issuer: self.jwt_issuer,
            audience: self.jwt_audience,
            scope_claim: self.jwt_scope_claim.unwrap_or_else(|| "scope".into()),
            leeway_secs: self.jwt_leeway_secs.unwrap_or(30),
        })
    }
}

/// TLS on the listening ports (the server's and `inferd drift watch`'s flags alike).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// TLS certificate chain (PEM, leaf first) for every port — REST, gRPC, metrics; re-read
    /// when it changes, without a restart. Needs --tls-key. Default: plain TCP.
    #[arg(long, env = "INFERD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "INFERD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// mTLS: CA certificates (PEM) every client certificate must chain to. A client
    /// certificate's name (URI or DNS SAN, or CN) listed under "certificates" in the keys
    /// file is a principal. Default: no client certificates.
    #[arg(long, env = "INFERD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: let clients without a certificate connect (they authenticate
    /// with a key or token). Default: a certificate is required.
    #[arg(long, env = "INFERD_TLS_CLIENT_CERT_OPTIONAL")]
    pub tls_client_cert_optional: bool,
}

impl TlsArgs {
    /// Each flag, else `file`'s.
    fn or(self, file: TlsArgs) -> TlsArgs {
        TlsArgs {
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            tls_client_cert_optional: self.tls_client_cert_optional
                || file.tls_client_cert_optional,
        }
    }

    /// `None` without --tls-cert; the combinations that make no sense refused.
    pub fn files(self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca,
                client_cert_optional: self.tls_client_cert_optional,
            }),
            (None, None) => {
                anyhow::ensure!(
                    self.tls_client_ca.is_none(),
                    "--tls-client-ca needs TLS: give --tls-cert and --tls-key too"
                );
                None
            }
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
        };
        anyhow::ensure!(
            !self.tls_client_cert_optional || tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            "--tls-client-cert-optional needs --tls-client-ca"
        );
        Ok(tls)
    }
}

/// The config file's keys: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model_repository: Option<PathBuf>,
    registry: Option<String>,
    registry_options: Option<BTreeMap<String, String>>,
    registry_poll_ms: Option<u64>,
    data_dir: Option<PathBuf>,
    host: Option<IpAddr>,
    http_port: Option<u16>,
    grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    max_request_bytes: Option<usize>,
    max_upload_bytes: Option<u64>,
    onnxruntime_lib: Option<PathBuf>,
    drain_timeout_secs: Option<u64>,
    feature_store: Option<String>,
    feature_views: Option<PathBuf>,
    kafka_brokers: Option<String>,
    kafka_group: Option<String>,
    kafka_options: Option<BTreeMap<String, String>>,
    state: Option<String>,
    experiments: Option<PathBuf>,
    feedback_capacity: Option<usize>,
    feedback_ttl_secs: Option<u64>,
    drift_queue: Option<usize>,
    drift_kafka_topic: Option<String>,
    drift_kafka_brokers: Option<String>,
    api_keys: Option<PathBuf>,
    jwks: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_scope_claim: Option<String>,
    jwt_leeway_secs: Option<u64>,
    jwks_refresh_secs: Option<u64>,
    jwks_min_refresh_secs: Option<u64>,
    auth_metrics: Option<bool>,
    audit_log: Option<PathBuf>,
    access_log: Option<bool>,
    no_auth: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_cert_optional: Option<bool>,
    header_timeout_secs: Option<u64>,
    max_header_bytes: Option<usize>,
    max_concurrent_per_principal: Option<usize>,
    redis_ca_cert: Option<PathBuf>,
    redis_client_cert: Option<PathBuf>,
    redis_client_key: Option<PathBuf>,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `None`: serve the embedded example models (or, with `registry`, cache it under the
    /// data directory).
    pub model_repository: Option<PathBuf>,
    /// `s3://bucket/prefix`: the fleet's registry in object storage.
    pub registry: Option<String>,
    /// The registry store's settings (the file's, then the flags').
    pub registry_options: Vec<(String, String)>,
    pub registry_poll_ms: u64,
    pub data_dir: PathBuf,
    pub host: IpAddr,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub max_request_bytes: usize,
    pub max_upload_bytes: u64,
    pub onnxruntime_lib: Option<PathBuf>,
    pub drain_timeout_secs: u64,
    /// `memory` or a Redis URL.
    pub feature_store: String,
    pub feature_views: Option<PathBuf>,
    /// `None`: no Kafka ingestion.
    pub kafka_brokers: Option<String>,
    pub kafka_group: String,
    /// librdkafka properties for every Kafka client (the file's, then the flags').
    pub kafka_options: Vec<(String, String)>,
    /// `None`: experiment statistics stay in this replica.
    pub state: Option<String>,
    pub experiments: Option<PathBuf>,
    pub feedback_capacity: usize,
    pub feedback_ttl_secs: u64,
    pub drift_queue: usize,
    /// `None`: sampled predictions stay in process.
    pub drift_kafka_topic: Option<String>,
    pub drift_kafka_brokers: Option<String>,
    /// `None`: no authentication.
    pub api_keys: Option<PathBuf>,
    /// `None`: no JWT bearer tokens.
    pub jwt: Option<crate::auth::JwtConfig>,
    pub auth_metrics: bool,
    pub audit_log: Option<PathBuf>,
    pub access_log: bool,
    /// No authentication, on purpose (`--no-auth`).
    pub no_auth: bool,
    /// `None`: plain TCP.
    pub tls: Option<crate::tls::TlsFiles>,
    pub limits: crate::listen::Limits,
    /// 0: unlimited.
    pub max_concurrent_per_principal: usize,
    /// TLS to a rediss:// online store: CA, client certificate and key (PEM files).
    pub redis_ca_cert: Option<PathBuf>,
    pub redis_client_cert: Option<PathBuf>,
    pub redis_client_key: Option<PathBuf>,
}

pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 4 * 1024 * 1024 * 1024;

impl Config {
    /// Layers defaults < config file < environment/flags (clap already merged those two).
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .or_else(|| {
                std::env::var_os("XDG_DATA_HOME")
                    .map(|d| PathBuf::from(d).join("inferd"))
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .map(|h| PathBuf::from(h).join(".local/share/inferd"))
                    })
            })
            .ok_or_else(|| anyhow::anyhow!("no --data-dir given and no HOME to default to"))?;
        let kafka_brokers = args
            .kafka_brokers
            .or(file.kafka_brokers)
            .filter(|b| !b.trim().is_empty());
        let api_keys = args.api_keys.or(file.api_keys);
        let jwt = args
            .jwt
            .or(JwtArgs {
                jwks: file.jwks,
                jwt_issuer: file.jwt_issuer,
                jwt_audience: file.jwt_audience,
                jwt_scope_claim: file.jwt_scope_claim,
                jwt_leeway_secs: file.jwt_leeway_secs,
                jwks_refresh_secs: file.jwks_refresh_secs,
                jwks_min_refresh_secs: file.jwks_min_refresh_secs,
            })
            .config();
        let no_auth = args.no_auth || file.no_auth.unwrap_or(false);
        let tls = args
            .tls
            .or(TlsArgs {
                tls_cert: file.tls_cert,
                tls_key: file.tls_key,
                tls_client_ca: file.tls_client_ca,
                tls_client_cert_optional: file.tls_client_cert_optional.unwrap_or(false),
            })
            .files()?;
        let header_timeout = std::time::Duration::from_secs(
            args.header_timeout_secs
                .or(file.header_timeout_secs)
                .unwrap_or(30),
        );
        anyhow::ensure!(
            !header_timeout.is_zero(),
            "header_timeout_secs must be at least 1"
        );
        let limits = crate::listen::Limits {
            handshake: header_timeout,
            header_timeout,
            max_header_bytes: args
                .max_header_bytes
                .or(file.max_header_bytes)
                .unwrap_or(16 * 1024),
        };
        anyhow::ensure!(
            api_keys.is_some() || jwt.is_some() || no_auth,
            "no authentication configured: give --api-keys FILE (`inferd keys hash NAME admin` makes a key and its entry) and/or --jwks FILE (an OIDC provider's keys), or pass --no-auth to serve without it (on 127.0.0.1 unless --host says otherwise)"
        );
        anyhow::ensure!(
            !((api_keys.is_some() || jwt.is_some()) && no_auth),
            "--api-keys / --jwks and --no-auth contradict each other: drop one"
        );
        // Unauthenticated, the server stays on loopback unless told otherwise.
        let default_host = if no_auth {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        let cfg =
            Config {
                model_repository: args.model_repository.or(file.model_repository),
                registry: args
                    .registry
                    .or(file.registry)
                    .filter(|r| !r.trim().is_empty()),
                registry_options: {
                    let mut options = Vec::new();
                    for (k, v) in file.registry_options.unwrap_or_default() {
                        options.push(registry_option(&format!("{k}={v}")).map_err(|e| {
                            anyhow::anyhow!("registry_options in the config file: {e}")
                        })?);
                    }
                    options.extend(args.registry_options);
                    options
                },
                registry_poll_ms: args
                    .registry_poll_ms
                    .or(file.registry_poll_ms)
                    .unwrap_or(1000),
                data_dir,
                host: args.host.or(file.host).unwrap_or(default_host),
                http_port: args.http_port.or(file.http_port).unwrap_or(8000),
                grpc_port: args.grpc_port.or(file.grpc_port).unwrap_or(8001),
                metrics_port: args.metrics_port.or(file.metrics_port).unwrap_or(8002),
                max_request_bytes: args
                    .max_request_bytes
                    .or(file.max_request_bytes)
                    .unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
                max_upload_bytes: args
                    .max_upload_bytes
                    .or(file.max_upload_bytes)
                    .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
                onnxruntime_lib: args.onnxruntime_lib.or(file.onnxruntime_lib),
                drain_timeout_secs: args
                    .drain_timeout_secs
                    .or(file.drain_timeout_secs)
                    .unwrap_or(30),
                feature_store: args
                    .feature_store
                    .or(file.feature_store)
                    .unwrap_or_else(|| "memory".into()),
                feature_views: args.feature_views.or(file.feature_views),
                kafka_brokers: kafka_brokers.clone(),
                kafka_group: args
                    .kafka_group
                    .or(file.kafka_group)
                    .unwrap_or_else(|| "inferd-features".into()),
                kafka_options: {
                    let mut options = Vec::new();
                    for (k, v) in file.kafka_options.unwrap_or_default() {
                        options.push(kafka_option(&format!("{k}={v}")).map_err(|e| {
                            anyhow::anyhow!("kafka_options in the config file: {e}")
                        })?);
                    }
                    options.extend(args.kafka_options);
                    options
                },
                state: args.state.or(file.state).filter(|s| !s.trim().is_empty()),
                experiments: args.experiments.or(file.experiments),
                feedback_capacity: args
                    .feedback_capacity
                    .or(file.feedback_capacity)
                    .unwrap_or(1_000_000),
                feedback_ttl_secs: args
                    .feedback_ttl_secs
                    .or(file.feedback_ttl_secs)
                    .unwrap_or(3600),
                drift_queue: args.drift_queue.or(file.drift_queue).unwrap_or(4096),
                drift_kafka_topic: args
                    .drift_kafka_topic
                    .or(file.drift_kafka_topic)
                    .filter(|t| !t.trim().is_empty()),
                drift_kafka_brokers: args
                    .drift_kafka_brokers
                    .or(file.drift_kafka_brokers)
                    .filter(|b| !b.trim().is_empty())
                    .or(kafka_brokers),
                api_keys,
                jwt,
                audit_log: args.audit_log.or(file.audit_log),
                auth_metrics: args.auth_metrics || file.auth_metrics.unwrap_or(false),
                access_log: args.access_log || file.access_log.unwrap_or(false),
                no_auth,
                tls,
                limits,
                max_concurrent_per_principal: args
                    .max_concurrent_per_principal
                    .or(file.max_concurrent_per_principal)
                    .unwrap_or(512),
                redis_ca_cert: args.redis_ca_cert.or(file.redis_ca_cert),
                redis_client_cert: args.redis_client_cert.or(file.redis_client_cert),
                redis_client_key: args.redis_client_key.or(file.redis_client_key),
            };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.registry {
            anyhow::ensure!(
                r.starts_with("s3://") && r.len() > "s3://".len(),
                "registry '{r}' must be s3://bucket[/prefix] (any S3-compatible store: set its endpoint with --registry-option endpoint=URL)"
            );
            anyhow::ensure!(
                (50..=3_600_000).contains(&self.registry_poll_ms),
                "registry_poll_ms must be between 50 and 3600000"
            );
        } else {
            anyhow::ensure!(
                self.registry_options.is_empty(),
                "--registry-option needs --registry s3://bucket/prefix"
            );
        }
        if let (Some(repo), None) = (&self.model_repository, &self.registry) {
            anyhow::ensure!(
                repo.is_dir(),
                "model repository {} is not a directory (expected DIR/<model>/<version>/model.onnx)",
                repo.display()
            );
        }
        let ports = [
            ("http_port", self.http_port),
            ("grpc_port", self.grpc_port),
            ("metrics_port", self.metrics_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                anyhow::ensure!(
                    *pa == 0 || pa != pb,
                    "{a} and {b} are both {pa}: each needs its own port"
                );
            }
        }
        anyhow::ensure!(
            self.max_request_bytes >= 1024,
            "max_request_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.limits.max_header_bytes >= 8192,
            "max_header_bytes must be at least 8192"
        );
        let redis_tls = self.redis_ca_cert.is_some()
            || self.redis_client_cert.is_some()
            || self.redis_client_key.is_some();
        anyhow::ensure!(
            !redis_tls || self.feature_store.starts_with("rediss://"),
            "--redis-ca-cert / --redis-client-cert / --redis-client-key need a rediss:// --feature-store"
        );
        anyhow::ensure!(
            self.redis_client_cert.is_some() == self.redis_client_key.is_some(),
            "a Redis client certificate needs both --redis-client-cert and --redis-client-key"
        );
        if let Some(t) = &self.tls {
            for (flag, f) in [
                ("--tls-cert", Some(&t.cert)),
                ("--tls-key", Some(&t.key)),
                ("--tls-client-ca", t.client_ca.as_ref()),
            ] {
                if let Some(f) = f {
                    anyhow::ensure!(f.is_file(), "{flag} {} does not exist", f.display());
                }
            }
        }
        anyhow::ensure!(
            self.feature_store == "memory" || self.feature_store.starts_with("redis"),
            "feature_store '{}' must be 'memory' or a redis:// URL",
            self.feature_store
        );
        anyhow::ensure!(
            self.drift_kafka_topic.is_none() || self.drift_kafka_brokers.is_some(),
            "drift_kafka_topic needs Kafka brokers: set drift_kafka_brokers or kafka_brokers"
        );
        if let Some(f) = &self.feature_views {
            anyhow::ensure!(
                f.is_file(),
                "feature-view file {} does not exist",
                f.display()
            );
        }
        Ok(())
    }
}

/// One `KEY=VALUE` setting of the registry's object store (checked by name when the store is
/// opened).
pub fn registry_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE (e.g. endpoint=http://minio:9000)"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{s}' has no setting name before '='"));
    }
    Ok((k.to_ascii_lowercase(), v.to_owned()))
}

/// One `KEY=VALUE` librdkafka property. The brokers and the consumer group have their own
/// settings (`--kafka-brokers`, `--kafka-group`), so they are refused here.
pub fn kafka_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE (e.g. security.protocol=ssl)"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{s}' has no property name before '='"));
    }
    match k {
        "bootstrap.servers" | "metadata.broker.list" => {
            Err(format!("set the brokers with --kafka-brokers, not {k}"))
        }
        "group.id" => Err("set the consumer group with --kafka-group, not group.id".into()),
        _ => Ok((k.to_owned(), v.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_is_an_s3_url_with_settings_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inferd.toml");
        std::fs::write(
            &file,
            "registry = \"s3://models/fleet\"\nregistry_options = { endpoint = \"http://s3:9000\", region = \"eu-west-1\" }\n",
        )
        .unwrap();
        let base = || ServeArgs {
            config: Some(file.clone()),
            data_dir: Some(dir.path().into()),
            no_auth: true,
            ..Default::default()
        };
        let cfg = Config::resolve(ServeArgs {
            registry_options: vec![("region".into(), "us-east-1".into())],
            ..base()
        })
        .unwrap();
        assert_eq!(cfg.registry.as_deref(), Some("s3://models/fleet"));
        assert_eq!(cfg.registry_poll_ms, 1000);
        // The flag comes after the file's setting, so it wins when the store is built.
        assert_eq!(
            cfg.registry_options,
            [
                ("endpoint".into(), "http://s3:9000".into()),
                ("region".into(), "eu-west-1".into()),
                ("region".into(), "us-east-1".into())
            ]
        );
        let e = Config::resolve(ServeArgs {
            registry: Some("gs://models".into()),
            ..base()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be s3://bucket[/prefix]"), "{e}");
        let e = Config::resolve(ServeArgs {
            registry_poll_ms: Some(0),
            ..base()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("registry_poll_ms must be between"), "{e}");
        let e = Config::resolve(ServeArgs {
            registry_options: vec![("region".into(), "x".into())],
            data_dir: Some(dir.path().into()),
            no_auth: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--registry-option needs --registry"), "{e}");
        assert!(
            registry_option("endpoint")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inferd.toml");
        std::fs::write(
            &file,
            "http_port = 9000\ngrpc_port = 9001\nmax_request_bytes = 2048\n",
        )
        .unwrap();
        let cfg = Config::resolve(ServeArgs {
            config: Some(file),
            grpc_port: Some(7001),
            data_dir: Some(dir.path().into()),
            no_auth: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.http_port, 9000);
        assert_eq!(
            cfg.host,
            IpAddr::from([127, 0, 0, 1]),
            "unauthenticated: loopback"
        );
        assert_eq!(cfg.grpc_port, 7001);
        assert_eq!(cfg.metrics_port, 8002);
        assert_eq!(cfg.max_request_bytes, 2048);
    }

    #[test]
    fn bad_configs_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inferd.toml");
        std::fs::write(&file, "http_prt = 1").unwrap();
        let args = |f| ServeArgs {
            config: Some(f),
            data_dir: Some(dir.path().into()),
            no_auth: true,
            ..Default::default()
        };
        let e = Config::resolve(args(file.clone())).unwrap_err().to_string();
        assert!(e.contains("unknown field `http_prt`"), "{e}");
        std::fs::write(&file, "http_port = 8001").unwrap();
        let e = Config::resolve(args(file.clone())).unwrap_err().to_string();
        assert!(e.contains("http_port and grpc_port are both 8001"), "{e}");
        let e = Config::resolve(ServeArgs {
            model_repository: Some("/nonexistent/models".into()),
            data_dir: Some(dir.path().into()),
            no_auth: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a directory"), "{e}");
        // No keys and no --no-auth: refused, saying how to fix it.
        let e = Config::resolve(ServeArgs {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("give --api-keys FILE") && e.contains("--no-auth"),
            "{e}"
        );
        let e = Config::resolve(ServeArgs {
            data_dir: Some(dir.path().into()),
            api_keys: Some("/k.json".into()),
            no_auth: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("contradict"), "{e}");
    }
}
