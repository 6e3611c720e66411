//! The command line: `serve`, `schema`, `workflow`, `evidence`, `config`.

mod evidence;
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
    /// Print the effective configuration (defaults, file and environment
    /// merged; secrets left out).
    Config,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    init_logging(&config);
    match cli.command {
        Command::Serve => crate::serve::run(config).await,
        Command::Schema { apply, cluster } => schema(&config, apply, cluster).await,
        Command::Evidence { command } => evidence::run(&config, command).await,
        Command::Workflow { trace_id, format } => workflow::run(&config, &trace_id, format).await,
        Command::Config => {
            print!("{}", config.to_yaml());
            Ok(())
        }
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
        .with_context(|| format!("cannot apply the schema at {}", config.clickhouse.url))?;
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
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
