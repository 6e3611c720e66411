//! The command line: `serve`, `schema`, `workflow`, `evidence`, `verify`,
//! `keygen`, `token`, `config`.

mod evidence;
mod token;
mod verify;
mod workflow;

use std::path::PathBuf;

use std::process::ExitCode;

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
        /// Cluster to create the schema on (ON CLUSTER, replicated tables
        /// behind Distributed tables); overrides clickhouse.cluster.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
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
    /// SOC 2, ISO 27001 and HIPAA evidence queries over the audit trail.
    Evidence {
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
    /// Recompute the hash chains, ledger entries and checkpoint signatures
    /// from ClickHouse. Exit status 0 when everything verifies, 1 when
    /// anything does not, 2 when verification could not run.
    Verify(verify::VerifyArgs),
    /// Generate an Ed25519 key pair for signing ledger checkpoints: the
    /// private key (PKCS#8 PEM, mode 0600) at FILE, the public key (SPKI
    /// PEM) at FILE.pub.
    Keygen {
        /// Private key file to create; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
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

impl Command {
    /// Returns the exit status for a command that fails before it produced
    /// one.
    pub fn failure_code(&self) -> ExitCode {
        match self {
            Command::Verify(_) => ExitCode::from(verify::EXIT_COULD_NOT_RUN),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs the parsed command line; returns the exit status.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Keygen { out } = &cli.command {
        verify::keygen(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    init_logging(&config);
    if let Command::Verify(args) = cli.command {
        return Ok(verify::run(&config, args).await);
    }
    run_other(config, cli.command)
        .await
        .map(|()| ExitCode::SUCCESS)
}

async fn run_other(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => crate::serve::run(config).await,
        Command::Schema { apply, cluster } => schema(&config, apply, cluster).await,
        Command::Evidence { command } => evidence::run(&config, command).await,
        Command::Workflow { trace_id, format } => workflow::run(&config, &trace_id, format).await,
        Command::Config => {
            print!("{}", config.to_yaml());
            Ok(())
        }
        Command::Token { command } => token::run(&config, command),
        Command::Verify(_) | Command::Keygen { .. } => unreachable!("handled in run"),
    }
}

async fn schema(config: &Config, apply: bool, cluster: Option<String>) -> anyhow::Result<()> {
    let mut config = config.clone();
    if cluster.is_some() {
        config.clickhouse.cluster = cluster;
        config.validate().context("invalid --cluster")?;
    }
    let schema = crate::clickhouse::schema::Schema::new(&config.clickhouse);
    if !apply {
        print!("{}", schema.script());
        return Ok(());
    }
    let applied = crate::clickhouse::migrate(&config.clickhouse, &schema)
        .await
        .with_context(|| {
            format!(
                "cannot apply the schema at {}",
                config.clickhouse.display_url()
            )
        })?;
    let place = match &schema.cluster {
        Some(cluster) => format!("database {} on cluster {cluster}", schema.database),
        None => format!("database {}", schema.database),
    };
    match applied.as_slice() {
        [] => println!("schema is up to date in {place}"),
        versions => println!("applied migrations {versions:?} in {place}"),
    }
    Ok(())
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
