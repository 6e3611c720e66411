//! `agent-ledger evidence list|run|pack`: the evidence queries from the
//! command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{ContentArrangement, Table, presets};

use crate::config::Config;
use crate::evidence::pack::{MANIFEST, PackOptions, SUMMARY, write_new};
use crate::evidence::{self, Format, Period};

/// The evidence commands.
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// List the evidence queries: name, controls, parameters and question.
    List,
    /// Run one evidence query and print or write its result.
    Run {
        /// Query name, as `evidence list` shows it.
        name: String,
        /// A query parameter as NAME=VALUE; repeat for several.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Start of the period (included): RFC 3339, a date, now, or a time
        /// before now such as -30d.
        #[arg(long, allow_hyphen_values = true)]
        from: Option<String>,
        /// End of the period (excluded), in the same forms as --from.
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write to this file (created new) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run every evidence query for a period into a folder, with a summary
    /// and a SHA-256 manifest.
    Pack {
        /// Start of the period (included).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End of the period (excluded).
        #[arg(long, allow_hyphen_values = true)]
        to: String,
        /// Folder to create; it must not exist or be empty.
        #[arg(long)]
        out: PathBuf,
        /// Format of the result files.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Parameters for queries that take more than the period, as
        /// NAME=VALUE; queries whose parameters are missing are listed in
        /// the summary instead.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
}

/// Runs an evidence command.
pub async fn run(config: &Config, command: EvidenceCommand) -> anyhow::Result<()> {
    match command {
        EvidenceCommand::List => {
            print!("{}", list());
            Ok(())
        }
        EvidenceCommand::Run {
            name,
            params,
            from,
            to,
            format,
            out,
        } => {
            run_one(
                config,
                &name,
                &params,
                from.as_deref(),
                to.as_deref(),
                format,
                out,
            )
            .await
        }
        EvidenceCommand::Pack {
            from,
            to,
            out,
            format,
            params,
        } => {
            let now = chrono::Utc::now();
            let options = PackOptions {
                period: Period::parse(&from, &to, now)?,
                parameters: evidence::parse_parameters(&params)?,
                format,
                out,
                database: config.clickhouse.database.clone(),
            };
            let client = crate::clickhouse::client(&config.clickhouse)?;
            let report = evidence::pack::pack(&client, &options, now)
                .await
                .with_context(|| {
                    format!("evidence pack from ClickHouse at {}", config.clickhouse.url)
                })?;
            println!(
                "wrote {} query results, {SUMMARY} and {MANIFEST} to {}; {} queries need parameters (see {SUMMARY})",
                report.written.len(),
                options.out.display(),
                report.skipped.len()
            );
            Ok(())
        }
    }
}

async fn run_one(
    config: &Config,
    name: &str,
    params: &[String],
    from: Option<&str>,
    to: Option<&str>,
    format: Format,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let query = evidence::find(name)?;
    let period = match (from, to) {
        (Some(from), Some(to)) => Some(Period::parse(from, to, now)?),
        (None, None) => None,
        _ => anyhow::bail!("give both --from and --to, or neither"),
    };
    let request = evidence::prepare(query, &evidence::parse_parameters(params)?, period, false)?;
    let client = crate::clickhouse::client(&config.clickhouse)?;
    let result = evidence::execute(&client, &request)
        .await
        .with_context(|| format!("evidence query on ClickHouse at {}", config.clickhouse.url))?;
    let header = evidence::header(&request, &result, now, &config.clickhouse.database);
    let text = evidence::render::render(format, &header, &result);
    match out {
        Some(path) => {
            write_new(&path, text.as_bytes())?;
            eprintln!(
                "wrote {} rows of {name} to {}",
                result.rows.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn list() -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(["QUERY", "PARAMETERS", "CONTROLS", "QUESTION"]);
    for query in evidence::catalog() {
        let mut parameters: Vec<String> = query
            .parameters
            .iter()
            .map(|parameter| parameter.name.clone())
            .collect();
        if query.uses_period() {
            parameters.insert(0, "from, to".to_owned());
        }
        table.add_row([
            query.name.to_owned(),
            parameters.join(", "),
            query.controls.join(", "),
            query.question,
        ]);
    }
    format!("{table}\n")
}
