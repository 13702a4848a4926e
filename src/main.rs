//! `inferd`: the command line. A thin shell over the `server` crate (`serve`) and a client of
//! its model-management API (`models ...`, in `cli`).

mod cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "inferd",
    version,
    about = "Low-latency ML inference server (KServe V2 / Triton-compatible REST and gRPC)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models of a repository over REST (8000), gRPC (8001) and /metrics (8002).
    Serve(server::config::ServeArgs),
    /// Manage models on a running server: push, list, show, alias, rollback, delete.
    Models(cli::ModelsArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("INFERD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => server::config::Config::resolve(args).and_then(|cfg| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(server::serve(cfg, server::shutdown_signal()))
        }),
        Command::Models(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cli::run(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
