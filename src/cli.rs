//! `inferd models ...`: a client of the registry's REST API (`/api/models`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `--server`: the address every client verb talks to.
#[derive(Args)]
pub struct ServerArg {
    /// The inferd server's REST address.
    #[arg(
        long = "server",
        global = true,
        env = "INFERD_SERVER",
        default_value = "http://localhost:8000"
    )]
    url: String,
    /// The API key to send (`Authorization: Bearer`), when the server asks for one. Prefer
    /// the variable: a flag shows in the process list.
    #[arg(
        long = "api-key",
        global = true,
        env = "INFERD_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` server, beside the system's.
    #[arg(long = "ca-cert", global = true, env = "INFERD_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a server that asks for one (mTLS); with --client-key.
    #[arg(long = "client-cert", global = true, env = "INFERD_CLIENT_CERT")]
    client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "client-key", global = true, env = "INFERD_CLIENT_KEY")]
    client_key: Option<std::path::PathBuf>,
}

impl ServerArg {
    /// The address without a trailing slash, ready for a path to be appended.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// An HTTP client that sends the API key, if one is given, and trusts `--ca-cert` and
    /// presents `--client-cert` over TLS.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
        };
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca_cert {
            let pem = read("--ca-cert", ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                let mut pem = read("--client-cert", c)?;
                pem.push(b'\n');
                pem.extend(read("--client-key", k)?);
                builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "--client-cert {} / --client-key {}: {e}",
                        c.display(),
                        k.display()
                    )
                })?);
            }
            (None, None) => {}
            _ => anyhow::bail!("a client certificate needs both --client-cert and --client-key"),
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the API key has characters a header cannot carry"))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(builder.default_headers(headers).build()?)
    }
}

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
}

/// `inferd health`: ready (200 from /v2/health/ready) or an error saying what answered.
pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let url = format!("{}/v2/health/ready", args.server.base());
    let r = args
        .server
        .client()?
        .get(&url)
        .timeout(std::time::Duration::from_secs(args.timeout_secs))
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    anyhow::ensure!(
        r.status().is_success(),
        "{url} answered {}: not ready",
        r.status()
    );
    println!("ready");
    Ok(())
}

#[derive(Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Upload a model file as a new version; waits until it is validated.
    Push {
        /// The artifact (model.onnx).
        path: PathBuf,
        /// Model name.
        #[arg(long)]
        name: String,
        /// Point this alias (e.g. production) at the new version once it is READY.
        #[arg(long)]
        alias: Option<String>,
        /// A config.toml to store with the version.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Labels, key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List models, their versions and aliases.
    List,
    /// Show one model.
    Show { name: String },
    /// Point an alias at a version.
    Alias {
        name: String,
        alias: String,
        version: u64,
    },
    /// Move an alias back to its previous version.
    Rollback { name: String, alias: String },
    /// Delete a version (refused while an alias points at it).
    Delete { name: String, version: u64 },
}

/// Turns an error response into an error carrying the server's message.
pub(crate) async fn check(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let msg = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        bail!("{status}: {msg}")
    }
}

fn print_model(m: &Value) {
    println!(
        "{}  (default version: {})",
        m["name"].as_str().unwrap_or("?"),
        m["default_version"]
    );
    for v in m["versions"].as_array().into_iter().flatten() {
        let aliases: Vec<&str> = v["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  v{:<4} {:<8} {:<12} {:>10} bytes  sha256 {}  {}{}",
            v["version"],
            v["status"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            v["size"].as_u64().unwrap_or(0),
            v["sha256"].as_str().map_or("-", |s| &s[..s.len().min(12)]),
            if aliases.is_empty() {
                String::new()
            } else {
                format!("[{}]", aliases.join(", "))
            },
            v["reason"]
                .as_str()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
    }
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let base = args.server.base().to_owned();
    let client = args.server.client()?;
    match args.command {
        ModelsCommand::Push {
            path,
            name,
            alias,
            config,
            labels,
        } => {
            let len = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            let digest = {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "uploading {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let file = tokio::fs::File::open(&path).await?;
            let progress = bar.clone();
            let stream = futures::stream::unfold(file, |mut f| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256 * 1024];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(bytes_of(buf)), f))
                    }
                    Err(e) => Some((Err(e), f)),
                }
            })
            .inspect(move |c| {
                if let Ok(c) = c {
                    progress.inc(c.len() as u64);
                }
            });
            let mut query: Vec<(String, String)> =
                vec![("wait".into(), "true".into()), ("sha256".into(), digest)];
            for l in labels {
                query.push(("label".into(), l));
            }
            let url = format!("{base}/api/models/{name}/versions");
            let resp = if let Some(cfg) = config {
                let text = std::fs::read_to_string(&cfg)
                    .with_context(|| format!("cannot read {}", cfg.display()))?;
                let form = reqwest::multipart::Form::new()
                    .part(
                        "model",
                        reqwest::multipart::Part::stream_with_length(
                            reqwest::Body::wrap_stream(stream),
                            len,
                        ),
                    )
                    .text("config", text);
                client
                    .post(&url)
                    .query(&query)
                    .multipart(form)
                    .send()
                    .await?
            } else {
                client
                    .post(&url)
                    .query(&query)
                    .header("content-type", "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(stream))
                    .send()
                    .await?
            };
            bar.finish_and_clear();
            let v = check(resp).await?;
            println!(
                "{} version {}: {} (sha256 {}, {} bytes)",
                name,
                v["version"],
                v["status"].as_str().unwrap_or("?"),
                v["sha256"].as_str().unwrap_or("?"),
                v["size"]
            );
            if let Some(alias) = alias {
                let version = v["version"]
                    .as_u64()
                    .context("the server did not return a version")?;
                let r = client
                    .put(format!("{base}/api/models/{name}/aliases/{alias}"))
                    .json(&serde_json::json!({ "version": version }))
                    .send()
                    .await?;
                check(r).await?;
                println!("{name}: {alias} -> version {version}");
            }
        }
        ModelsCommand::List => {
            let body = check(client.get(format!("{base}/api/models")).send().await?).await?;
            for m in body["models"].as_array().into_iter().flatten() {
                print_model(m);
            }
        }
        ModelsCommand::Show { name } => {
            let m = check(
                client
                    .get(format!("{base}/api/models/{name}"))
                    .send()
                    .await?,
            )
            .await?;
            print_model(&m);
            let aliases: BTreeMap<String, Value> =
                serde_json::from_value(m["aliases"].clone()).unwrap_or_default();
            for (a, info) in aliases {
                let hist: Vec<String> = info["history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| h["version"].to_string())
                    .collect();
                println!(
                    "  alias {a} -> v{} (history: {})",
                    info["version"],
                    hist.join(" -> ")
                );
            }
        }
        ModelsCommand::Alias {
            name,
            alias,
            version,
        } => {
            let r = client
                .put(format!("{base}/api/models/{name}/aliases/{alias}"))
                .json(&serde_json::json!({ "version": version }))
                .send()
                .await?;
            check(r).await?;
            println!("{name}: {alias} -> version {version}");
        }
        ModelsCommand::Rollback { name, alias } => {
            let r = client
                .post(format!("{base}/api/models/{name}/aliases/{alias}/rollback"))
                .send()
                .await?;
            let m = check(r).await?;
            println!(
                "{name}: {alias} -> version {}",
                m["aliases"][&alias]["version"]
            );
        }
        ModelsCommand::Delete { name, version } => {
            let r = client
                .delete(format!("{base}/api/models/{name}/versions/{version}"))
                .send()
                .await?;
            let status = r.status();
            if !status.is_success() {
                check(r).await?;
            }
            println!("{name}: version {version} deleted");
        }
    }
    Ok(())
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}
