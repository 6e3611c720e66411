//! Evidence packs: every query for one period, one file each, a Markdown
//! summary and a SHA-256 manifest.
//!
//! The manifest (`SHA256SUMS`) lists every file of the pack but itself in
//! the format of `sha256sum`, so `sha256sum -c SHA256SUMS` run in the folder
//! checks the pack. Queries that need parameters the pack was not given
//! (such as a workflow id) are listed in the summary with the command that
//! runs them. Files are created new: a pack never overwrites evidence.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::render::{Format, render};
use super::{EvidenceError, Period, Request, catalog, execute, header, period, prepare};

/// File name of the manifest.
pub const MANIFEST: &str = "SHA256SUMS";
/// File name of the summary.
pub const SUMMARY: &str = "summary.md";

/// Settings of one pack.
#[derive(Clone, Debug)]
pub struct PackOptions {
    pub period: Period,
    /// Parameters for the queries that take more than the period.
    pub parameters: Vec<(String, String)>,
    pub format: Format,
    pub out: PathBuf,
    /// Database name, for the headers.
    pub database: String,
}

/// Contents of a written pack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackReport {
    /// Query name, file name and row count of each result written.
    pub written: Vec<(String, String, usize)>,
    /// Query name and the reason it was not run.
    pub skipped: Vec<(String, String)>,
}

/// Runs every query into `options.out`, which must be empty or absent.
pub async fn pack(
    client: &clickhouse::Client,
    options: &PackOptions,
    now: DateTime<Utc>,
) -> Result<PackReport, EvidenceError> {
    prepare_folder(&options.out)?;
    let mut report = PackReport::default();
    let mut requests = Vec::new();
    for query in catalog() {
        let name = query.name;
        match prepare(query, &options.parameters, Some(options.period), true) {
            Ok(request) => requests.push(request),
            Err(error @ EvidenceError::MissingParameter { .. }) => {
                report.skipped.push((name.to_owned(), error.to_string()))
            }
            Err(error) => return Err(error),
        }
    }
    for request in &requests {
        let (file, rows) = write_result(client, options, request, now).await?;
        tracing::info!(query = request.query.name, file = %file, rows, "wrote evidence");
        report
            .written
            .push((request.query.name.to_owned(), file, rows));
    }
    write_new(
        &options.out.join(SUMMARY),
        summary(options, &requests, &report, now).as_bytes(),
    )?;
    write_manifest(&options.out, &report)?;
    Ok(report)
}

async fn write_result(
    client: &clickhouse::Client,
    options: &PackOptions,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<(String, usize), EvidenceError> {
    let result = execute(client, request).await?;
    let header = header(request, &result, now, &options.database);
    let file = format!("{}.{}", request.query.name, options.format.extension());
    write_new(
        &options.out.join(&file),
        render(options.format, &header, &result).as_bytes(),
    )?;
    Ok((file, result.rows.len()))
}

fn prepare_folder(path: &Path) -> Result<(), EvidenceError> {
    let failed = |source| EvidenceError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(failed)?;
    if std::fs::read_dir(path).map_err(failed)?.next().is_some() {
        return Err(EvidenceError::FolderNotEmpty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Creates `path`, failing if it exists, and writes `contents`.
pub fn write_new(path: &Path, contents: &[u8]) -> Result<(), EvidenceError> {
    let failed = |source| EvidenceError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// Writes `SHA256SUMS` over the result files and the summary.
fn write_manifest(folder: &Path, report: &PackReport) -> Result<(), EvidenceError> {
    let mut files: Vec<&str> = report
        .written
        .iter()
        .map(|(_, file, _)| file.as_str())
        .collect();
    files.push(SUMMARY);
    files.sort_unstable();
    let mut manifest = String::new();
    for file in files {
        let path = folder.join(file);
        let contents =
            std::fs::read(&path).map_err(|source| EvidenceError::Write { path, source })?;
        manifest.push_str(&format!(
            "{}  {file}\n",
            hex::encode(Sha256::digest(&contents))
        ));
    }
    write_new(&folder.join(MANIFEST), manifest.as_bytes())
}

fn summary(
    options: &PackOptions,
    requests: &[Request],
    report: &PackReport,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::from("# Evidence pack\n\n");
    out.push_str(&format!("- period: {}\n", options.period.describe()));
    out.push_str(&format!("- generated at: {}\n", period::rfc3339(now)));
    out.push_str(&format!("- database: {}\n", options.database));
    out.push_str(&format!(
        "- agent-ledger version: {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(&format!(
        "- files: {} query results and this summary; `sha256sum -c {MANIFEST}` in this folder checks them\n\n",
        report.written.len()
    ));

    out.push_str("| query | controls | rows | file |\n|---|---|---|---|\n");
    for ((name, file, rows), request) in report.written.iter().zip(requests) {
        out.push_str(&format!(
            "| {name} | {} | {rows} | {file} |\n",
            request.query.controls.join(", ")
        ));
    }

    if !report.skipped.is_empty() {
        out.push_str("\n## Queries not run\n\n");
        for (name, reason) in &report.skipped {
            out.push_str(&format!(
                "- {name}: {reason}. Run it with `agent-ledger evidence run {name} --param NAME=VALUE --format {} --out FILE`.\n",
                format_name(options.format)
            ));
        }
    }

    out.push_str("\n## Questions\n");
    for query in catalog() {
        out.push_str(&format!(
            "\n### {}\n\n{}\n\nControls: {}. Rows: {}\n",
            query.name,
            query.question,
            query.controls.join(", "),
            query.rows
        ));
    }
    out
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Table => "table",
        Format::Csv => "csv",
        Format::Json => "json",
        Format::Markdown => "markdown",
    }
}
