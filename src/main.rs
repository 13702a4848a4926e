//! `inferd`: the command line. A thin shell over the `server` crate (`serve`) and a client of
//! its model-management API (`models ...`, in `cli`) and experiments API (`experiments ...`,
//! in `experiments_cli`).

mod cli;
mod drift_cli;
mod experiments_cli;
mod keys_cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Every Rust allocation of the process (ONNX Runtime's own stay with the C++ runtime's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "inferd",
    version,
    about = "Low-latency ML inference server (KServe V2 / Triton-compatible REST and gRPC)"
)]
struct Cli {
    /// Log lines as text, or as one JSON object each (for a log pipeline). The level and
    /// targets come from INFERD_LOG (default `info`).
    #[arg(long, global = true, env = "INFERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models of a repository over REST (8000), gRPC (8001) and /metrics (8002).
    Serve(Box<server::config::ServeArgs>),
    /// Manage models on a running server: push, list, show, alias, rollback, delete.
    Models(cli::ModelsArgs),
    /// Manage A/B experiments on a running server: create, list, show, stop, weights, promote.
    Experiments(experiments_cli::ExperimentsArgs),
    /// Drift monitors: set a reference, show verdicts; `watch` monitors a fleet from Kafka.
    Drift(drift_cli::DriftArgs),
    /// API keys: `hash NAME SCOPE` makes one for --api-keys; `create`, `list`, `revoke` on a server.
    Keys(keys_cli::KeysArgs),
    /// Exit 0 when the server is ready (GET /v2/health/ready), 1 otherwise: a container's
    /// health check.
    Health(cli::HealthArgs),
}

/// Pins glibc's mmap and trim thresholds at their initial defaults (128 KiB).
///
/// glibc raises the mmap threshold each time a large mmapped block is freed (up to 32 MiB).
/// After a model version is unloaded, ONNX Runtime's later mid-size allocations then come
/// from the heap instead and fragment it, and resident memory creeps up with every
/// load/unload cycle (measured: +34% after 20 hot swaps of a 64 MiB model; with the
/// thresholds pinned, +4% — see BENCHMARKS.md). Triton documents the same effect.
fn pin_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

fn main() -> std::process::ExitCode {
    pin_malloc_thresholds();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("INFERD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Flattened: an event's fields beside its level, target and timestamp.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    let result = match cli.command {
        Command::Serve(args) => server::config::Config::resolve(*args).and_then(|cfg| {
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
        Command::Experiments(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(experiments_cli::run(args))),
        Command::Drift(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(drift_cli::run(args))),
        Command::Keys(args) => keys_cli::run(args),
        Command::Health(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cli::health(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
