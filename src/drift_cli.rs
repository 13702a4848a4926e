//! `inferd drift ...`: a client of the drift REST API (`/api/drift`), and `drift watch`, the
//! fleet-wide monitor fed from Kafka.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::{ServerArg, check};

#[derive(Args)]
pub struct DriftArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: DriftCommand,
}

#[derive(Subcommand)]
enum DriftCommand {
    /// Create or change a model's monitor from a JSON file (the body of
    /// PUT /api/drift/{model}); without a file, the defaults.
    Monitor {
        model: String,
        file: Option<PathBuf>,
    },
    /// Set a model's reference from a CSV (header row) or JSON file.
    Reference { model: String, file: PathBuf },
    /// List the monitored models and their last verdicts.
    List,
    /// Show a model's last window: per column the test, statistic, p-value or distance,
    /// threshold and verdict; then performance per version.
    Show {
        model: String,
        /// Print the full JSON status instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Run a monitor fed from the Kafka topic replicas publish to (--drift-kafka-topic), so
    /// one monitor sees the whole fleet. It serves the same /api/drift routes and /metrics.
    Watch(Box<WatchArgs>),
}

#[derive(Args)]
struct WatchArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, env = "INFERD_KAFKA_BROKERS")]
    kafka_brokers: String,
    /// A librdkafka property (TLS, SASL, ...), repeatable, as the server's --kafka-option.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = server::config::kafka_option)]
    kafka_options: Vec<(String, String)>,
    /// The topic the replicas publish to.
    #[arg(long, default_value = "inferd-predictions")]
    topic: String,
    /// Consumer group (watchers in one group share the topic's partitions).
    #[arg(long, default_value = "inferd-drift")]
    group: String,
    /// Where the monitors (specs, references, windows) persist.
    #[arg(long, env = "INFERD_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the /api/drift routes and /metrics. Default: loopback.
    #[arg(long, default_value = "127.0.0.1:8010")]
    listen: SocketAddr,
    /// API keys, in the server's --api-keys format (re-read when it changes): the /api/drift
    /// routes then need a key with their scope (reads infer, changes admin), as on the
    /// server; /metrics stays open. Default: none — the routes are open, so keep --listen on
    /// loopback.
    #[arg(long, env = "INFERD_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// Bearer JWTs, as on the server (--jwks FILE or URL, --jwt-issuer, --jwt-audience, ...).
    #[command(flatten)]
    jwt: server::config::JwtArgs,
    /// TLS (and mTLS) on --listen, as on the server (--tls-cert, --tls-key, --tls-client-ca).
    #[command(flatten)]
    tls: server::config::TlsArgs,
}

pub async fn run(args: DriftArgs) -> anyhow::Result<()> {
    let base = format!("{}/api/drift", args.server.base());
    let client = args.server.client()?;
    match args.command {
        DriftCommand::Monitor { model, file } => {
            let body = match file {
                Some(f) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                None => Vec::new(),
            };
            check(
                client
                    .put(format!("{base}/{model}"))
                    .body(body)
                    .send()
                    .await?,
            )
            .await?;
            println!("monitor of '{model}' set");
        }
        DriftCommand::Reference { model, file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let csv = file.extension().is_some_and(|e| e == "csv");
            let kind = if csv { "text/csv" } else { "application/json" };
            let r = check(
                client
                    .put(format!("{base}/{model}/reference"))
                    .header("content-type", kind)
                    .body(body)
                    .send()
                    .await?,
            )
            .await?;
            let rows = &r["reference"]["rows"];
            let cols = r["reference"]["columns"].as_object().map_or(0, |c| c.len());
            println!("reference of '{model}' set: {rows} rows, {cols} columns");
        }
        DriftCommand::List => {
            let r = check(client.get(&base).send().await?).await?;
            println!(
                "{:<24} {:>10} {:>8}  DRIFT",
                "MODEL", "REFERENCE", "WINDOWS"
            );
            for m in r["monitors"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>10} {:>8}  {}",
                    m["model"].as_str().unwrap_or(""),
                    m["reference"]["rows"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                    m["windows"].to_string(),
                    verdict(&m["drift_detected"]),
                );
            }
        }
        DriftCommand::Show { model, json } => {
            let r = check(
                client
                    .get(format!("{base}/{model}?windows=1"))
                    .send()
                    .await?,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_status(&r);
            }
        }
        DriftCommand::Watch(w) => return watch(*w).await,
    }
    Ok(())
}

fn verdict(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "DRIFT",
        Some(false) => "ok",
        None => "-",
    }
}

fn num(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| {
        if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
            format!("{x:.3e}")
        } else {
            format!("{x:.4}")
        }
    })
}

/// The tables of `show`: the last window's columns and embeddings, then performance.
fn print_status(s: &Value) {
    let model = s["model"].as_str().unwrap_or("");
    let Some(last) = s["reports"].as_array().and_then(|r| r.last()) else {
        let why = if s["reference"].is_null() {
            match s["capture"]["target"].as_u64() {
                Some(t) => format!(
                    "capturing the reference ({}/{t} rows)",
                    s["capture"]["rows"]
                ),
                None => "no reference yet: inferd drift reference MODEL FILE".into(),
            }
        } else {
            format!(
                "no window evaluated yet ({} rows in the open one)",
                s["window_rows"]
            )
        };
        println!("{model}: {why}");
        return;
    };
    let d = &last["dataset"];
    println!(
        "{model}: window {} ({} rows): {}/{} columns drifted (share {} vs {}): {}",
        last["window"],
        last["rows"],
        d["drifted"],
        d["columns"],
        num(&d["share"]),
        num(&d["drift_share"]),
        verdict(&last["drift_detected"]),
    );
    println!(
        "{:<28} {:<14} {:>11} {:>11} {:>10}  DRIFT",
        "COLUMN", "TEST", "STATISTIC", "P-VALUE", "THRESHOLD"
    );
    for c in last["columns"].as_array().into_iter().flatten() {
        println!(
            "{:<28} {:<14} {:>11} {:>11} {:>10}  {}",
            c["name"].as_str().unwrap_or(""),
            c["test"].as_str().unwrap_or(""),
            num(&c["statistic"]),
            num(&c["p_value"]),
            num(&c["threshold"]),
            verdict(&c["drifted"]),
        );
    }
    for e in last["embeddings"].as_array().into_iter().flatten() {
        println!(
            "{:<28} {:<14} {:>11} {:>11} {:>10}  {}",
            e["name"].as_str().unwrap_or(""),
            format!("embedding:{}", e["method"].as_str().unwrap_or("")),
            num(&e["statistic"]),
            num(&e["p_value"]),
            num(&e["threshold"]),
            verdict(&e["drifted"]),
        );
    }
    let perf = s["performance"]
        .as_array()
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    if !perf.is_empty() {
        println!();
        println!(
            "{:<10} {:>10} {:>9}  METRICS",
            "VERSION", "LABELLED", "SHARE"
        );
        for p in perf {
            let metrics = ["classification", "regression"]
                .iter()
                .filter_map(|k| p[*k].as_object())
                .flat_map(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "n")
                        .map(|(k, v)| format!("{k}={}", num(v)))
                })
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{:<10} {:>10} {:>9}  {metrics}",
                p["version"].as_str().unwrap_or(""),
                // A JSON value's Display ignores the width: as a string it pads.
                p["labelled_rows"].to_string(),
                num(&p["labelled_share"]),
            );
        }
    }
}

async fn watch(w: WatchArgs) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let monitors = Arc::new(
        drift::Monitors::open(Some(w.data_dir.join("drift")), &registry)
            .context("opening the drift monitors")?,
    );
    let metrics = {
        let registry = registry.clone();
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                prometheus::TextEncoder::new()
                    .encode_to_string(&registry.gather())
                    .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
            }
        })
    };
    // The server's own access layer: the same keys file, scopes and audit, on the routes
    // the router resolved; unknown paths authenticate before their 404.
    let auth = Arc::new(server::auth::Auth::open(
        w.api_keys.as_deref(),
        w.jwt.config(),
        false,
    )?);
    if auth.enabled() {
        auth.watch();
    } else if !w.listen.ip().is_loopback() {
        tracing::warn!(listen = %w.listen, "drift watch WITHOUT AUTHENTICATION on a non-loopback address: anyone who reaches it can change the monitors; give --api-keys or --jwks");
    }
    let tls = w.tls.files()?.map(server::tls::Tls::open).transpose()?;
    if let Some(t) = &tls {
        t.watch();
    }
    let app = server::auth::protect(
        server::http::drift::router(Arc::clone(&monitors), 64 << 20),
        &auth,
    )
    // After the layer: open, as the server's metrics port.
    .route("/metrics", metrics);
    let listener = tokio::net::TcpListener::bind(w.listen)
        .await
        .with_context(|| format!("cannot listen on {}", w.listen))?;
    tracing::info!(listen = %listener.local_addr()?, topic = %w.topic, tls = tls.is_some(), "drift watch: consuming");
    // The server's listener: TLS handshakes off the accept loop, header timeouts and limits.
    let limits = server::listen::Limits::default();
    let conns =
        server::listen::incoming(listener, tls.map(|t| (t, server::tls::Alpn::Http1)), limits);
    let http = tokio::spawn(server::listen::serve_http(
        conns,
        app,
        limits,
        std::future::pending(),
    ));
    let r = server::drift::watch(
        monitors,
        &w.kafka_brokers,
        &w.topic,
        &w.group,
        &w.kafka_options,
        server::shutdown_signal(),
    )
    .await;
    http.abort();
    r
}
