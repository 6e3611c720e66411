//! `agent-ledger token`: adds, lists and revokes sender tokens in the token
//! file. `add` prints the new token alone on standard output, once; the file
//! keeps only its SHA-256, so a lost token is revoked and replaced, never
//! recovered.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::receiver::auth::tokens;

/// Hex digits of a token's hash shown by `token list`: enough to tell
/// entries apart, too few to matter.
const HASH_PREFIX_LEN: usize = 12;

/// The token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a sender, print it once, and add its hash to the
    /// token file (created with mode 0600 if missing).
    Add {
        /// Sender name, stored in the Sender column of everything it sends.
        name: String,
        /// Token file; defaults to auth.tokens_file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List the senders of the token file with a prefix of each hash.
    List {
        /// Token file; defaults to auth.tokens_file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove a sender's token from the token file; a running receiver
    /// refuses it within seconds.
    Revoke {
        /// Sender name.
        name: String,
        /// Token file; defaults to auth.tokens_file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Runs one token subcommand.
pub fn run(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Add { name, file } => {
            let path = token_file(config, file)?;
            let token = tokens::add(&path, &name)?;
            println!("{token}");
            eprintln!(
                "added token {name} to {}; it is shown only this once",
                path.display()
            );
            Ok(())
        }
        TokenCommand::List { file } => list(&token_file(config, file)?),
        TokenCommand::Revoke { name, file } => {
            let path = token_file(config, file)?;
            tokens::revoke(&path, &name)?;
            eprintln!("revoked token {name} in {}", path.display());
            Ok(())
        }
    }
}

fn token_file(config: &Config, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    file.or_else(|| config.auth.tokens_file.clone()).context(
        "no token file: pass --file FILE or set auth.tokens_file (AGENT_LEDGER_AUTH_TOKENS_FILE)",
    )
}

fn list(path: &Path) -> anyhow::Result<()> {
    let entries = tokens::read(path)?;
    if entries.is_empty() {
        eprintln!("no tokens in {}", path.display());
    }
    for entry in entries {
        println!(
            "{}\tsha256:{}…",
            entry.name,
            &entry.sha256[..HASH_PREFIX_LEN]
        );
    }
    Ok(())
}
