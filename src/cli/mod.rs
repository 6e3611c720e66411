//! The command line: `serve`, `schema`, `workflow`, `config`, `token`.

mod token;
mod workflow;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// OTLP receiver that turns AI-agent spans into a validated, causally linked
/// audit trail in ClickHouse.
#[derive(Debug, Parser)]
#[command(name = "agent-ledger", version)]
pub struct Cli {
    /// YAML configuration file; environment variables named AGENT_LEDGER_*
    /// override its settings.
    #[arg(long, global = true, env = "AGENT_LEDGER_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the receiver: OTLP gRPC, and the admin endpoint with /metrics,
    /// /healthz and /readyz.
    Serve,
    /// Print the ClickHouse schema, or apply it with --apply.
    Schema {
        /// Create the database and apply every missing migration.
        #[arg(long)]
        apply: bool,
    },
    /// Print the workflows of a trace: verdict, origin, agent, credential,
    /// and each step with the steps that caused it.
    Workflow {
        /// Trace id, 32 hex digits.
        trace_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = workflow::Format::Table)]
        format: workflow::Format,
    },
    /// Print the effective configuration (defaults, file and environment
    /// merged; secrets left out).
    Config,
    /// Manage sender tokens: add (prints the token once), list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    init_logging(&config);
    match cli.command {
        Command::Serve => crate::serve::run(config).await,
        Command::Schema { apply: false } => {
            print!(
                "{}",
                crate::clickhouse::schema::script(&config.clickhouse.database)
            );
            Ok(())
        }
        Command::Schema { apply: true } => {
            let applied = crate::clickhouse::migrate(&config.clickhouse)
                .await
                .with_context(|| {
                    format!(
                        "cannot apply the schema at {}",
                        config.clickhouse.display_url()
                    )
                })?;
            match applied.as_slice() {
                [] => println!(
                    "schema is up to date in database {}",
                    config.clickhouse.database
                ),
                versions => println!(
                    "applied migrations {versions:?} in database {}",
                    config.clickhouse.database
                ),
            }
            Ok(())
        }
        Command::Workflow { trace_id, format } => workflow::run(&config, &trace_id, format).await,
        Command::Config => {
            print!("{}", config.to_yaml());
            Ok(())
        }
        Command::Token { command } => token::run(&config, command),
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
