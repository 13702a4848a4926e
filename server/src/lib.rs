//! inferd's server: transports, configuration and wiring of the domain crates.
//!
//! # Layout
//!
//! - [`config`]: `inferd serve` flags, `INFERD_*` variables and the TOML file, layered and
//!   validated into [`config::Config`].
//! - [`state`]: [`state::AppState`], shared by every transport: the model repository,
//!   readiness and draining, the Prometheus registry.
//! - [`infer`]: one inference request through the request path, transport-neutral.
//! - [`http`]: REST on axum — KServe V2 under `/v2` (`http::v2`), JSON and binary tensors
//!   (`http::codec`), and `/metrics` on the metrics port.
//!   Vector collections under `/api/collections` (`http::collections`); the online feature
//!   store under `/api/feature-views` and `/api/features` (`http::features`).
//! - [`grpc`]: `inference.GRPCInferenceService` on tonic (`grpc::convert` for tensors);
//!   `inferd.v1.Collections` (`grpc::collections`); `inferd.v1.FeatureStore`
//!   (`grpc::features`); `inferd.v1.Experiments` (`grpc::experiments`); `inferd.v1.Drift`
//!   (`grpc::drift`).
//! - [`ab`]: A/B experiments' server side — the registry as their catalog, the start-up
//!   file, promotion (the domain logic is the `experiments` crate).
//! - [`drift`]: drift monitoring's server side — the sampler on the request path, the
//!   monitor's worker thread, column extraction, the fleet's Kafka topic, `drift watch`
//!   (the domain logic is the `drift` crate); REST under `/api/drift` (`http::drift`).
//! - [`auth`]: API keys and scopes — one decision for every REST route (a route layer on
//!   the matched route, an authenticated fallback) and every gRPC method (a tower layer).
//! - [`enrich`]: feature enrichment — model inputs filled from the online feature store by
//!   entity key.
//! - [`triton`]: Triton's model-config and statistics views, for both transports.
//! - [`uploads`]: one model upload (stream, digest, version, validation), for both transports.
//! - [`error`]: [`error::ApiError`] and its one mapping to HTTP statuses and gRPC codes.
//! - [`proto`]: code generated from `proto/*.proto`.
//!
//! [`serve`] starts everything and returns once a shutdown signal has drained the server.

pub mod ab;
pub mod access;
pub mod auth;
pub mod config;
pub mod drift;
pub mod embedder;
pub mod enrich;
pub mod error;
pub mod grpc;
pub mod http;
pub mod infer;
pub mod listen;
pub mod proto;
pub mod state;
pub mod tls;
pub mod triton;
pub mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use feature_store::FeatureStore;
use feature_store::ingest::kafka::{Ingester, KafkaConfig};
use feature_store::ingest::metrics::IngestMetrics;
use feature_store::registry::ViewRegistry;
use feature_store::store::OnlineStore;
use futures::StreamExt;
use models::metrics::Metrics;
use models::repository::{Repository, RepositoryOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::state::AppState;

/// The example models compiled into the binary, served when no repository is given.
const EMBEDDED_MODELS: &[(&str, &[u8])] = &[
    (
        "mlp/1/model.onnx",
        include_bytes!("../../tests/fixtures/models/mlp/1/model.onnx"),
    ),
    (
        "sklearn_trees/1/model.onnx",
        include_bytes!("../../tests/fixtures/models/sklearn_trees/1/model.onnx"),
    ),
];

/// Writes the embedded example models under `data_dir/examples` (only files that differ).
fn unpack_examples(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let root = data_dir.join("examples");
    for (rel, bytes) in EMBEDDED_MODELS {
        let path = root.join(rel);
        if std::fs::read(&path).is_ok_and(|b| b == *bytes) {
            continue;
        }
        let dir = path.parent().expect("relative path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    // The sentence encoder is too large to embed (90 MB); scripts/setup.sh fetches it into
    // the cache, and the examples serve it from there when it is present.
    if let Some(minilm) = models::cache_dir().map(|c| c.join("models/all-MiniLM-L6-v2/1")) {
        let link = root.join("all-MiniLM-L6-v2/1");
        if minilm.join("model.safetensors").is_file() && !link.exists() {
            std::fs::create_dir_all(root.join("all-MiniLM-L6-v2"))?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&minilm, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(root)
}

async fn bind(cfg: &Config, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(cfg.host, port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr} (is another server using the port? set --{what}-port)"))
}

/// Runs the server until `shutdown` resolves, then stops taking requests, lets those in
/// flight finish (up to `drain_timeout_secs`), and returns.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let lib = models::backends::onnx::init(cfg.onnxruntime_lib.as_deref())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");

    std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            cfg.data_dir.display()
        )
    })?;
    let remote = match &cfg.registry {
        Some(url) => Some(Arc::new(models::remote::Remote::open(
            &models::remote::RemoteOptions {
                url: url.clone(),
                options: cfg.registry_options.clone(),
                poll: Duration::from_millis(cfg.registry_poll_ms),
            },
        )?)),
        None => None,
    };
    let root = match (&cfg.model_repository, &remote) {
        (Some(r), None) => r.clone(),
        (dir, Some(remote)) => {
            let r = dir
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join("registry-cache"));
            remote.claim_cache(&r)?;
            tracing::info!(registry = %remote.url(), cache = %r.display(), "serving the shared registry");
            r
        }
        (None, None) => {
            let r = unpack_examples(&cfg.data_dir)?;
            tracing::info!(repository = %r.display(), "no --model-repository given: serving the embedded example models");
            r
        }
    };

    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).context("registering metrics")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let repo = Arc::new(Repository::new(
        RepositoryOptions {
            root,
            cores,
            remote: remote.clone(),
        },
        metrics,
    ));
    let (features, ingester) = open_features(&cfg, &registry).await?;
    let experiment_file = cfg.experiments.as_deref().map(ab::read_file).transpose()?;
    let exps = Arc::new(
        experiments::Experiments::open(
            experiments::Options {
                dir: Some(cfg.data_dir.join("experiments")),
                feedback_capacity: cfg.feedback_capacity,
                feedback_ttl: Duration::from_secs(cfg.feedback_ttl_secs),
            },
            &registry,
        )
        .context("opening the experiments")?,
    );
    let monitors = Arc::new(
        ::drift::Monitors::open(Some(cfg.data_dir.join("drift")), &registry)
            .context("opening the drift monitors")?,
    );
    let publisher = match (&cfg.drift_kafka_topic, &cfg.drift_kafka_brokers) {
        (Some(topic), Some(brokers)) => {
            Some(drift::Publisher::new(brokers, topic, &cfg.kafka_options)?)
        }
        _ => None,
    };
    let drift = Arc::new(drift::Drift::start(
        Arc::clone(&monitors),
        cfg.drift_queue,
        publisher,
    ));
    let fleet = match &cfg.state {
        Some(url) => {
            let f = ab::Fleet::open(url, redis_tls(&cfg, url)?, &cfg.data_dir.join("replica-id"))?;
            tracing::info!(replica = %f.replica(), "experiment statistics shared with the fleet through --state");
            Some(Arc::new(f))
        }
        None => None,
    };
    let state = Arc::new(
        AppState::new(
            Arc::clone(&repo),
            registry,
            cfg.max_request_bytes,
            cfg.max_upload_bytes,
            Some(Arc::clone(&features)),
            Arc::clone(&exps),
            Arc::clone(&drift),
        )
        .with_fleet(fleet.clone()),
    );
    // Experiment statistics reach the disk, and the fleet, at most a second late.
    let flusher = {
        let exps = Arc::clone(&exps);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let e = Arc::clone(&exps);
                let _ = tokio::task::spawn_blocking(move || e.flush()).await;
                if let Some(f) = &fleet {
                    f.exchange(&exps).await;
                }
            }
        })
    };

    // Vector collections: loaded (snapshot + log replayed, indexes built) before the ports open.
    let collections = {
        let dir = cfg.data_dir.join("collections");
        let registry = state.registry.clone();
        // Text is embedded in process by the served sentence encoders.
        let embedder: Arc<dyn vector::Embedder> =
            Arc::new(embedder::RepositoryEmbedder(Arc::clone(&repo)));
        let store =
            tokio::task::spawn_blocking(move || vector::Store::open(&dir, embedder, &registry))
                .await
                .context("opening the vector collections")?
                .context("opening the vector collections")?;
        Arc::new(store)
    };

    let mut auth = auth::Auth::open(cfg.api_keys.as_deref(), cfg.jwt.clone(), cfg.auth_metrics)?;
    auth.audit = auth::Audit::open(cfg.audit_log.as_deref())?;
    auth.concurrency = auth::Concurrency::new(cfg.max_concurrent_per_principal);
    auth.open_made_keys(cfg.data_dir.join("keys.json"))?;
    let auth = Arc::new(auth);
    if auth.enabled() {
        auth.watch();
        tracing::info!(
            keys = %cfg.api_keys.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            jwks = %cfg.jwt.as_ref().map(|j| j.jwks.to_string()).unwrap_or_default(),
            "credentials required on every route but health"
        );
    } else {
        tracing::warn!(
            host = %cfg.host,
            "NO AUTHENTICATION (--no-auth): anyone who can reach these ports can upload, delete and re-point models, rewrite features and drop collections; configure --api-keys"
        );
        if !cfg.host.is_loopback() {
            tracing::warn!(host = %cfg.host, "NO AUTHENTICATION ON A NON-LOOPBACK ADDRESS: every machine that can reach it has full control");
        }
    }

    let http_l = bind(&cfg, cfg.http_port, "http").await?;
    let grpc_l = bind(&cfg, cfg.grpc_port, "grpc").await?;
    let metrics_l = bind(&cfg, cfg.metrics_port, "metrics").await?;
    tracing::info!(
        http = %http_l.local_addr()?,
        grpc = %grpc_l.local_addr()?,
        metrics = %metrics_l.local_addr()?,
        "listening"
    );

    let tls = cfg.tls.clone().map(tls::Tls::open).transpose()?;
    if let Some(t) = &tls {
        t.watch();
        tracing::info!(
            cert = %cfg.tls.as_ref().map(|t| t.cert.display().to_string()).unwrap_or_default(),
            mutual = t.mutual(),
            "TLS on every port"
        );
    }
    let incoming = |l: TcpListener, alpn: tls::Alpn| {
        listen::incoming(l, tls.clone().map(|t| (t, alpn)), cfg.limits)
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Every door checked in one place: after routing (the matched route decides), before a
    // handler reads the body; the fallback authenticates before its 404.
    let app = http::router(Arc::clone(&state))
        .merge(http::collections::router_with_limit(
            Arc::clone(&collections),
            cfg.max_request_bytes,
        ))
        .merge(http::qdrant::router(
            Arc::clone(&collections),
            cfg.max_request_bytes,
        ))
        .merge(http::features::router_with_limit(
            Arc::clone(&features),
            cfg.max_request_bytes,
        ))
        .merge(http::drift::router(
            Arc::clone(&monitors),
            cfg.max_request_bytes,
        ))
        .merge(http::keys::router(Arc::clone(&auth)))
        .merge(http::routes_router());
    let mut app = auth::protect(app, &auth);
    if cfg.access_log {
        app = app.layer(axum::middleware::from_fn(access::http_layer));
    }
    // TCP_NODELAY on every accepted connection (listen::incoming): without it, a response
    // written in two pieces waits for the client's delayed ACK (~40 ms).
    let http = tokio::spawn(listen::serve_http(
        incoming(http_l, tls::Alpn::Http1),
        app,
        cfg.limits,
        stopped(stop_rx.clone()),
    ));
    let metrics_srv = tokio::spawn(listen::serve_http(
        incoming(metrics_l, tls::Alpn::Http1),
        http::metrics_router(Arc::clone(&state)).layer(axum::middleware::from_fn_with_state(
            Arc::clone(&auth),
            auth::metrics_layer,
        )),
        cfg.limits,
        stopped(stop_rx.clone()),
    ));
    let grpc_incoming = incoming(grpc_l, tls::Alpn::H2).map(Ok::<_, std::io::Error>);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_max_header_list_size(
                u32::try_from(cfg.limits.max_header_bytes).unwrap_or(u32::MAX),
            )
            // A peer that stops answering pings is dropped.
            .http2_keepalive_interval(Some(Duration::from_secs(60)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(access::GrpcAccessLayer {
                enabled: cfg.access_log,
            })
            .layer(auth::GrpcAuthLayer(Arc::clone(&auth)))
            .add_service(grpc::InferenceService::server(Arc::clone(&state)))
            .add_service(grpc::registry::RegistryService::server(Arc::clone(&state)))
            .add_service(grpc::drift::DriftService::server(
                Arc::clone(&monitors),
                cfg.max_request_bytes,
            ))
            .add_service(grpc::experiments::ExperimentsService::server(Arc::clone(
                &state,
            )))
            .add_service(grpc::collections::CollectionsService::server(
                Arc::clone(&collections),
                cfg.max_request_bytes,
            ))
            .add_service(grpc::features::FeatureStoreService::server(
                Arc::clone(&features),
                cfg.max_request_bytes,
            ))
            .add_service(grpc::keys::KeysService::server(Arc::clone(&auth)))
            .serve_with_incoming_shutdown(grpc_incoming, stopped(stop_rx.clone())),
    );

    // Load the repository off the runtime; the servers answer (live, not ready) meanwhile.
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let loader = {
        let repo = Arc::clone(&repo);
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = repo.load_all() {
                tracing::error!(error = %e, "model repository could not be read");
            }
            if let Some(specs) = experiment_file {
                ab::apply_file(&state.experiments, &repo, specs);
            }
            state.set_loaded();
            let ready = repo.index().iter().filter(|e| e.state == "READY").count();
            tracing::info!(
                ready_versions = ready,
                "model repository loaded; server ready"
            );
            let _ = loaded_tx.send(());
        })
    };
    // A shared registry: pick up what other replicas change.
    let poller = remote.as_ref().map(|remote| {
        let (repo, every) = (Arc::clone(&repo), remote.poll_interval());
        tokio::spawn(async move {
            if loaded_rx.await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let repo = Arc::clone(&repo);
                match tokio::task::spawn_blocking(move || repo.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the shared registry; serving what it had"),
                    Err(_) => break,
                }
            }
        })
    });

    shutdown.await;
    tracing::info!("shutdown requested: refusing new requests, draining those in flight");
    state.start_draining();
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = http.await;
        let _ = grpc.await;
        let _ = metrics_srv.await;
    };
    if tokio::time::timeout(Duration::from_secs(cfg.drain_timeout_secs), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            secs = cfg.drain_timeout_secs,
            "drain timeout passed with requests still in flight"
        );
    }
    if let Some(i) = ingester {
        i.shutdown().await;
    }
    flusher.abort();
    let _ = tokio::task::spawn_blocking(move || exps.flush()).await;
    let _ = tokio::task::spawn_blocking(move || drift.flush()).await;
    loader.abort();
    if let Some(p) = poller {
        p.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The online feature store: views from `--feature-views` and the API, the store
/// (`--feature-store`), and with `--kafka-brokers` the ingester of the views' topics.
async fn open_features(
    cfg: &Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<(Arc<FeatureStore>, Option<Ingester>)> {
    let file_views = match &cfg.feature_views {
        Some(path) => feature_store::view::ViewsFile::load(path)?,
        None => Vec::new(),
    };
    let views = Arc::new(ViewRegistry::new(file_views, Some(&cfg.data_dir))?);
    let store: Arc<dyn OnlineStore> = if cfg.feature_store == "memory" {
        Arc::new(feature_store::store::memory::MemoryStore::new())
    } else {
        let tls = redis_tls(cfg, &cfg.feature_store)?;
        let redis =
            feature_store::store::redis::RedisStore::open_with(&cfg.feature_store, "inferd", tls)?;
        if let Err(e) = redis.ping().await {
            tracing::warn!(error = %e, "the online store is not reachable yet: feature reads fail until it is");
        }
        Arc::new(redis)
    };
    tracing::info!(
        store = store.kind(),
        views = views.snapshot().iter().count(),
        "feature store"
    );
    let ingester = match &cfg.kafka_brokers {
        Some(brokers) => {
            let mut k = KafkaConfig::new(brokers.clone());
            k.group_id = cfg.kafka_group.clone();
            k.options = cfg.kafka_options.clone();
            let metrics = IngestMetrics::new(registry).context("registering ingest metrics")?;
            let i = Ingester::start(k, Arc::clone(&views), Arc::clone(&store), metrics)?;
            tracing::info!(%brokers, group = %cfg.kafka_group, "feature ingestion from Kafka started");
            Some(i)
        }
        None => None,
    };
    Ok((Arc::new(FeatureStore::new(views, store)), ingester))
}

/// The `--redis-ca-cert` / `--redis-client-cert` settings for a `rediss://` URL (the online
/// store's and `--state`'s alike).
fn redis_tls(
    cfg: &Config,
    url: &str,
) -> anyhow::Result<Option<feature_store::store::redis::RedisTls>> {
    if !url.starts_with("rediss://")
        || (cfg.redis_ca_cert.is_none() && cfg.redis_client_cert.is_none())
    {
        return Ok(None);
    }
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(Some(feature_store::store::redis::RedisTls {
        ca_cert: cfg.redis_ca_cert.as_deref().map(read).transpose()?,
        client: match (&cfg.redis_client_cert, &cfg.redis_client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        },
    }))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
