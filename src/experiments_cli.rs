//! `inferd experiments ...`: a client of the experiments' REST API (`/api/experiments`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::{ServerArg, check};

#[derive(Args)]
pub struct ExperimentsArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: ExperimentsCommand,
}

#[derive(Subcommand)]
enum ExperimentsCommand {
    /// Create or change an experiment from a JSON or TOML file (the body of
    /// PUT /api/experiments/{name}).
    Create {
        name: String,
        /// The experiment's configuration (`.toml` or `.json`).
        file: PathBuf,
    },
    /// List experiments.
    List,
    /// Show an experiment's per-arm results.
    Show {
        name: String,
        /// Print the full JSON results instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Stop an experiment: its model's requests go to the default version again.
    Stop { name: String },
    /// Set arm weights: `inferd experiments weights NAME a=60 b=40`.
    Weights { name: String, weights: Vec<String> },
    /// Point the model's `production` alias at an arm's version and stop the experiment.
    Promote { name: String, arm: String },
}

pub async fn run(args: ExperimentsArgs) -> anyhow::Result<()> {
    let base = format!("{}/api/experiments", args.server.base());
    let client = args.server.client()?;
    match args.command {
        ExperimentsCommand::Create { name, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = if file.extension().is_some_and(|e| e == "toml") {
                let t: toml::Value = text
                    .parse()
                    .with_context(|| format!("{} is not valid TOML", file.display()))?;
                serde_json::to_value(t)?
            } else {
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", file.display()))?
            };
            let r = check(
                client
                    .put(format!("{base}/{name}"))
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?;
            print_results(&r);
        }
        ExperimentsCommand::List => {
            let r = check(client.get(&base).send().await?).await?;
            println!(
                "{:<24} {:<20} {:<8} {:<9} arms",
                "NAME", "MODEL", "STATE", "ALLOC"
            );
            for e in r["experiments"].as_array().into_iter().flatten() {
                let arms: Vec<String> = e["arms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        format!(
                            "{}={:.0}% ({} exp.)",
                            a["name"].as_str().unwrap_or("?"),
                            a["weight"].as_f64().unwrap_or(0.0) * 100.0,
                            a["exposures"]
                        )
                    })
                    .collect();
                println!(
                    "{:<24} {:<20} {:<8} {:<9} {}{}",
                    e["name"].as_str().unwrap_or("?"),
                    e["model"].as_str().unwrap_or("?"),
                    e["state"].as_str().unwrap_or("?"),
                    e["allocation"].as_str().unwrap_or("?"),
                    arms.join(", "),
                    if e["trustworthy"] == json!(false) {
                        "  SRM!"
                    } else {
                        ""
                    }
                );
            }
        }
        ExperimentsCommand::Show { name, json } => {
            let r = check(client.get(format!("{base}/{name}")).send().await?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_results(&r);
            }
        }
        ExperimentsCommand::Stop { name } => {
            let r = check(client.post(format!("{base}/{name}/stop")).send().await?).await?;
            print_results(&r);
        }
        ExperimentsCommand::Weights { name, weights } => {
            let mut w = serde_json::Map::new();
            for kv in weights {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("'{kv}': write ARM=WEIGHT"))?;
                let v: f64 = v
                    .parse()
                    .with_context(|| format!("'{kv}': the weight must be a number"))?;
                w.insert(k.to_owned(), json!(v));
            }
            if w.is_empty() {
                bail!("give at least one ARM=WEIGHT");
            }
            let r = check(
                client
                    .post(format!("{base}/{name}/weights"))
                    .json(&json!({ "weights": w }))
                    .send()
                    .await?,
            )
            .await?;
            print_results(&r);
        }
        ExperimentsCommand::Promote { name, arm } => {
            let r = check(
                client
                    .post(format!("{base}/{name}/promote"))
                    .json(&json!({ "arm": arm }))
                    .send()
                    .await?,
            )
            .await?;
            println!(
                "promoted arm '{}': model '{}' alias '{}' -> version {}; experiment '{}' stopped",
                r["arm"].as_str().unwrap_or("?"),
                r["model"].as_str().unwrap_or("?"),
                r["alias"].as_str().unwrap_or("?"),
                r["version"],
                r["experiment"].as_str().unwrap_or("?"),
            );
        }
    }
    Ok(())
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn interval(v: &Value, digits: usize) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!("[{a:.digits$}, {b:.digits$}]"),
        _ => "-".into(),
    }
}

/// The per-arm results table of `show`.
fn print_results(r: &Value) {
    println!(
        "experiment {}  model {}  {}  outcome {}  alpha {}  control {}",
        r["name"].as_str().unwrap_or("?"),
        r["model"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["outcome"].as_str().unwrap_or("?"),
        r["alpha"],
        r["control"].as_str().unwrap_or("?"),
    );
    if let Some(srm) = r.get("srm").filter(|s| !s.is_null()) {
        println!(
            "sample ratio check: chi2 {} p {}{}",
            num(&srm["statistic"], 3),
            num(&srm["p_value"], 4),
            if srm["mismatch"] == json!(true) {
                "  MISMATCH: the split is not what was configured; do not trust the comparisons"
            } else {
                "  ok"
            }
        );
    }
    println!(
        "{:<16} {:>6} {:>9} {:>7} {:>8} {:>8} {:>8} {:>10} {:>22} {:>9} {:>9} {:>9}",
        "ARM",
        "WEIGHT",
        "EXPOSURES",
        "ERR%",
        "P50ms",
        "P99ms",
        "REWARDS",
        "MEAN",
        "95% CI",
        "LIFT",
        "P",
        "P(AV)"
    );
    for a in r["arms"].as_array().into_iter().flatten() {
        let vs = &a["vs_control"];
        println!(
            "{:<16} {:>5.1}% {:>9} {:>7} {:>8} {:>8} {:>8} {:>10} {:>22} {:>9} {:>9} {:>9}{}",
            a["name"].as_str().unwrap_or("?"),
            a["weight"].as_f64().unwrap_or(0.0) * 100.0,
            a["exposures"],
            a["error_rate"]
                .as_f64()
                .map_or_else(|| "-".into(), |e| format!("{:.2}", e * 100.0)),
            num(&a["latency_p50_ms"], 2),
            num(&a["latency_p99_ms"], 2),
            a["outcome"]["n"],
            num(&a["outcome"]["mean"], 4),
            interval(&a["outcome"]["ci95"], 4),
            vs["relative_lift"]
                .as_f64()
                .map_or_else(|| "-".into(), |l| format!("{:+.2}%", l * 100.0)),
            num(&vs["p_value"], 4),
            num(&vs["always_valid_p_value"], 4),
            if a["stopped_by_guardrail"] == json!(true) {
                "  (stopped by a guardrail)"
            } else if vs["significant"] == json!(true) {
                "  *"
            } else {
                ""
            }
        );
    }
    for s in r["shadows"].as_array().into_iter().flatten() {
        println!(
            "shadow {:<10} {:>5}% {:>9} requests, {} errors, p50 {} ms, p99 {} ms",
            s["name"].as_str().unwrap_or("?"),
            s["percent"],
            s["requests"],
            s["errors"],
            num(&s["latency_p50_ms"], 2),
            num(&s["latency_p99_ms"], 2),
        );
    }
    for e in r["events"].as_array().into_iter().flatten() {
        println!(
            "event {} {:<10} {}",
            e["time_ms"],
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        );
    }
}
