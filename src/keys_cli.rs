//! `inferd keys`: API keys. `hash` makes a new random key offline and prints the secret (to
//! give the client) and its entry for the `--api-keys` file (which holds only the secret's
//! SHA-256; the server re-reads the file when it changes). `create`, `list` and `revoke` ask
//! a running server (`POST|GET /api/keys`, `DELETE /api/keys/{name}`, admin scope), which
//! keeps the keys it makes hashed in its data directory.

use clap::{Args, Subcommand, ValueEnum};
use server::auth::{self, Scope};

use crate::cli::{ServerArg, check};

#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key offline: prints the secret, then the keys-file entry to add to --api-keys.
    Hash {
        /// Who the key is for (logged with what it does).
        name: String,
        /// What it may do: infer < write < admin (each includes those below).
        #[arg(value_enum)]
        scope: ScopeArg,
    },
    /// Make a key on the server (needs an admin key): prints its secret, shown this once.
    Create {
        /// Who the key is for (logged with what it does).
        name: String,
        #[arg(value_enum)]
        scope: ScopeArg,
        /// Restrict it to these models (comma-separated). Default: all.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Restrict it to these vector collections (comma-separated). Default: all.
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// Restrict it to these feature views (comma-separated). Default: all.
        #[arg(long, value_delimiter = ',')]
        feature_views: Option<Vec<String>>,
    },
    /// The server's keys: names, scopes, where each is defined (never a secret).
    List,
    /// Revoke a key made with `create`; it is refused from the next request on.
    Revoke { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Infer,
    Write,
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Infer => Scope::Infer,
            ScopeArg::Write => Scope::Write,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    if let KeysCommand::Hash { name, scope } = &args.command {
        let (secret, entry) = auth::new_key(name, (*scope).into());
        println!("secret (give it to the client; it is not stored anywhere): {secret}");
        println!("keys-file entry (add it to the \"keys\" list of --api-keys):");
        println!("{entry}");
        return Ok(());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(remote(args))
}

async fn remote(args: KeysArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let base = args.server.base();
    match args.command {
        KeysCommand::Hash { .. } => unreachable!("handled offline"),
        KeysCommand::Create {
            name,
            scope,
            models,
            collections,
            feature_views,
        } => {
            let scope: Scope = scope.into();
            let mut req = serde_json::json!({"name": name, "scope": scope.as_str()});
            for (k, v) in [
                ("models", models),
                ("collections", collections),
                ("feature_views", feature_views),
            ] {
                if let Some(v) = v {
                    req[k] = v.into();
                }
            }
            let body = check(
                client
                    .post(format!("{base}/api/keys"))
                    .json(&req)
                    .send()
                    .await?,
            )
            .await?;
            println!(
                "key '{name}' ({}) made; its secret, shown this once:",
                scope.as_str()
            );
            println!("{}", body["secret"].as_str().unwrap_or_default());
        }
        KeysCommand::List => {
            let body = check(client.get(format!("{base}/api/keys")).send().await?).await?;
            println!(
                "{:<32} {:<6} {:<6} CREATED (ms since epoch)",
                "NAME", "SCOPE", "SOURCE"
            );
            for k in body["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<6} {:<6} {}",
                    k["name"].as_str().unwrap_or_default(),
                    k["scope"].as_str().unwrap_or_default(),
                    k["source"].as_str().unwrap_or_default(),
                    k["created_ms"]
                        .as_u64()
                        .map_or("-".to_owned(), |t| t.to_string()),
                );
            }
        }
        KeysCommand::Revoke { name } => {
            let r = client
                .delete(format!("{base}/api/keys/{name}"))
                .send()
                .await?;
            if !r.status().is_success() {
                check(r).await?;
            }
            println!("key '{name}' revoked");
        }
    }
    Ok(())
}
