//! `inferd keys`: API keys for `--api-keys`. `hash` makes a new random key and prints the
//! secret (to give the client) and its entry for the keys file (which holds only the
//! secret's SHA-256); the server re-reads the file when it changes.

use clap::{Args, Subcommand, ValueEnum};
use server::auth::{self, Scope};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key: prints the secret, then the keys-file entry to add to --api-keys.
    Hash {
        /// Who the key is for (logged with what it does).
        name: String,
        /// What it may do: infer < write < admin (each includes those below).
        #[arg(value_enum)]
        scope: ScopeArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Infer,
    Write,
    Admin,
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Hash { name, scope } => {
            let scope = match scope {
                ScopeArg::Infer => Scope::Infer,
                ScopeArg::Write => Scope::Write,
                ScopeArg::Admin => Scope::Admin,
            };
            let (secret, entry) = auth::new_key(&name, scope);
            println!("secret (give it to the client; it is not stored anywhere): {secret}");
            println!("keys-file entry (add it to the \"keys\" list of --api-keys):");
            println!("{entry}");
        }
    }
    Ok(())
}
