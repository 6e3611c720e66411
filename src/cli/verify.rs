//! `agent-ledger verify` and `agent-ledger keygen`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::seal::keys::{self, PublicKey};
use crate::seal::verify::{self, Options, Progress, Report, VerifyRunRow};
use crate::span::TraceId;

/// Exit status when something does not verify.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status when verification could not run.
pub const EXIT_COULD_NOT_RUN: u8 = 2;

/// How often the terminal progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Output format of the `verify` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Arguments of `agent-ledger verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Start of the period (RFC 3339, or a date meaning its midnight UTC);
    /// workflows, entries and checkpoints received from then on.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the period (exclusive), in the same form.
    #[arg(long)]
    pub to: Option<String>,
    /// Verify one workflow: its trace id, 32 hex digits.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Public key (SPKI PEM, FILE.pub from keygen) that checks checkpoint
    /// signatures; repeat it for keys that were rotated.
    #[arg(long = "public-key")]
    pub public_keys: Vec<PathBuf>,
    /// Folder of checkpoint files to compare with ClickHouse (default:
    /// seal.checkpoint_dir).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Retention of the tables, such as 90d: missing data received before
    /// now minus this is reported as expired (default: seal.retention).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Runs `verify`: exit status 0 when everything verifies, 1 on findings, 2
/// when it could not run.
pub async fn run(config: &Config, args: VerifyArgs) -> ExitCode {
    match run_inner(config, args).await {
        Ok(report) if report.is_clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_FINDINGS),
        Err(error) => {
            eprintln!("error: verification could not run: {error:#}");
            ExitCode::from(EXIT_COULD_NOT_RUN)
        }
    }
}

async fn run_inner(config: &Config, args: VerifyArgs) -> anyhow::Result<Report> {
    let options = options(config, &args)?;
    let client = crate::clickhouse::client(&config.clickhouse)?;
    let started_at = crate::now_unix_nano();
    let mut progress = TerminalProgress::new();
    let report = verify::run(&client, &options, &mut progress)
        .await
        .with_context(|| {
            format!(
                "check that ClickHouse is reachable at {}",
                config.clickhouse.url
            )
        })?;
    progress.finish();
    match args.format {
        Format::Table => print_table(&report, &options),
        Format::Json => print_json(&report)?,
    }
    let row = VerifyRunRow::new(&options, &report, &config.seal.instance_id, started_at);
    if let Err(error) = verify::record(&client, &row).await {
        eprintln!("warning: the run could not be recorded in agent_verify_runs: {error}");
    }
    Ok(report)
}

fn options(config: &Config, args: &VerifyArgs) -> anyhow::Result<Options> {
    let workflow = match &args.workflow {
        Some(id) => Some(
            TraceId::from_hex(id)
                .with_context(|| format!("invalid --workflow {id:?}: expected a trace id of 32 hex digits, not all zero"))?
                .to_hex(),
        ),
        None => None,
    };
    let keys = args
        .public_keys
        .iter()
        .map(|path| PublicKey::from_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Options {
        from: args
            .from
            .as_deref()
            .map(|text| parse_time("--from", text))
            .transpose()?,
        to: args
            .to
            .as_deref()
            .map(|text| parse_time("--to", text))
            .transpose()?,
        workflow,
        keys,
        checkpoint_dir: args
            .checkpoint_dir
            .clone()
            .or_else(|| config.seal.checkpoint_dir.clone()),
        retention: args.retention.or(config.seal.retention),
    })
}

/// Parses RFC 3339 or a date (midnight UTC) into Unix nanoseconds.
fn parse_time(option: &str, text: &str) -> anyhow::Result<i64> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.timestamp_nanos_opt())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map(|date| {
                date.and_hms_opt(0, 0, 0)
                    .and_then(|time| time.and_utc().timestamp_nanos_opt())
            })
        });
    match parsed {
        Ok(Some(nanos)) => Ok(nanos),
        _ => anyhow::bail!(
            "invalid {option} {text:?}: expected RFC 3339 such as 2026-05-01T00:00:00Z, or a date such as 2026-05-01, between the years 1678 and 2261"
        ),
    }
}

fn print_table(report: &Report, options: &Options) {
    println!(
        "checked {} workflows, {} rows, {} ledger entries ({} batches), {} checkpoints in {:.2}s ({:.0} rows/s)",
        report.workflows_checked,
        report.rows_checked,
        report.entries_checked,
        report.batches_checked,
        report.checkpoints_checked,
        report.elapsed_seconds,
        report.rows_per_second()
    );
    if options.keys.is_empty() {
        println!("signatures: not checked (no --public-key given)");
    } else {
        let ids: Vec<&str> = options.keys.iter().map(|key| key.key_id.as_str()).collect();
        println!("signatures: checked with key ids {}", ids.join(", "));
    }
    if report.findings.is_empty() {
        println!("result: clean");
        return;
    }
    let counts: Vec<String> = report
        .counts()
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let result = if report.is_clean() {
        "clean"
    } else {
        "FINDINGS"
    };
    println!("result: {result} ({})", counts.join(", "));
    println!();
    println!("{:<20} {:<24} {:<60} DETAIL", "KIND", "TABLE", "IDS");
    for finding in &report.findings {
        println!(
            "{:<20} {:<24} {:<60} {}",
            finding.kind.name(),
            finding.table,
            finding.ids(),
            finding.detail
        );
    }
}

fn print_json(report: &Report) -> anyhow::Result<()> {
    let value = serde_json::json!({
        "result": if report.is_clean() { "clean" } else { "findings" },
        "counts": report.counts(),
        "rows_per_second": report.rows_per_second(),
        "report": report,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// A progress line on standard error, shown only on a terminal.
struct TerminalProgress {
    enabled: bool,
    started: Instant,
    last: Instant,
    rows: u64,
}

impl TerminalProgress {
    fn new() -> Self {
        let now = Instant::now();
        TerminalProgress {
            enabled: std::io::stderr().is_terminal(),
            started: now,
            last: now,
            rows: 0,
        }
    }

    fn finish(&mut self) {
        if self.enabled && self.rows > 0 {
            eprintln!();
        }
    }
}

impl Progress for TerminalProgress {
    fn rows(&mut self, rows: u64) {
        self.rows = rows;
        if !self.enabled || self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r{rows} rows checked ({rate:.0} rows/s)");
        let _ = stderr.flush();
    }
}

/// Runs `keygen`: writes the key pair and prints where, with the key id.
pub fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let key_id = keys::generate(out)?;
    println!(
        "private key: {} (mode 0600; point seal.signing_key_file at it)",
        out.display()
    );
    println!(
        "public key:  {} (give it to auditors for `verify --public-key`)",
        keys::public_path(out).display()
    );
    println!("key id:      {key_id}");
    Ok(())
}
