//! Verification: recomputes every seal from what ClickHouse holds.
//!
//! Takes a scope (a period, or one workflow), the auditor's public keys and
//! an optional folder of checkpoint files, and produces a [`Report`] of
//! findings, each with its kind and the ids involved:
//!
//! - `chains`: every `agent_spans` row's hash and every workflow chain,
//!   against the newest verdict and the workflow's segment entries;
//! - `entries`: every ledger entry's hash, the sequence and hash links
//!   between entries, and every batch hash;
//! - `checkpoints`: every checkpoint's signature, its link to the entry it
//!   names, and the checkpoint files against ClickHouse.
//!
//! Rows are streamed with the `clickhouse` crate's cursor, sorted by
//! workflow and step, so memory contains one workflow's hashes at a time,
//! plus one small record per checkpoint and per batch.
//!
//! A missing row, entry or checkpoint is reported as `expired` instead of
//! missing when the retention is set and something written no earlier than
//! it (its workflow's newest verdict or segment entry, the next entry, the
//! next checkpoint) was itself received before now minus the retention: a
//! TTL on `ReceivedAt` has then removed it, or may have.

mod chains;
mod checkpoints;
mod entries;
mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::keys::PublicKey;
use crate::clickhouse::StoreError;

/// Findings reported per workflow at most; the rest are summarized in one
/// finding, so a deleted million-row workflow does not flood the report.
pub const MAX_FINDINGS_PER_WORKFLOW: usize = 100;

/// The scope and inputs of a verification run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Start of the period (inclusive), Unix nanoseconds of `ReceivedAt`.
    pub from: Option<i64>,
    /// End of the period (exclusive).
    pub to: Option<i64>,
    /// One workflow (trace id, lower-case hex).
    pub workflow: Option<String>,
    pub keys: Vec<PublicKey>,
    pub checkpoint_dir: Option<PathBuf>,
    pub retention: Option<Duration>,
}

/// Kinds of findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    RowModified,
    RowMissing,
    RowInserted,
    EntryMissing,
    EntryModified,
    CheckpointInvalid,
    CheckpointMissing,
    /// Removed by retention; not a failure.
    Expired,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::RowModified => "row_modified",
            FindingKind::RowMissing => "row_missing",
            FindingKind::RowInserted => "row_inserted",
            FindingKind::EntryMissing => "entry_missing",
            FindingKind::EntryModified => "entry_modified",
            FindingKind::CheckpointInvalid => "checkpoint_invalid",
            FindingKind::CheckpointMissing => "checkpoint_missing",
            FindingKind::Expired => "expired",
        }
    }

    /// Returns whether the finding means the trail does not verify.
    pub fn is_failure(self) -> bool {
        self != FindingKind::Expired
    }
}

/// One finding, with the ids that locate it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub table: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workflow_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root_span_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_index: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    pub detail: String,
}

impl Finding {
    pub fn new(kind: FindingKind, table: &'static str, detail: String) -> Self {
        Finding {
            kind,
            table,
            workflow_id: String::new(),
            root_span_id: String::new(),
            span_id: String::new(),
            step_index: None,
            instance_id: String::new(),
            seq: None,
            key_id: String::new(),
            detail,
        }
    }

    /// Formats the ids as `name=value` pairs, for the table output.
    pub fn ids(&self) -> String {
        let mut ids = Vec::new();
        let mut push = |name: &str, value: String| {
            if !value.is_empty() {
                ids.push(format!("{name}={value}"));
            }
        };
        push("workflow", self.workflow_id.clone());
        push("root", self.root_span_id.clone());
        push("span", self.span_id.clone());
        push(
            "step",
            self.step_index
                .map(|index| index.to_string())
                .unwrap_or_default(),
        );
        push("instance", self.instance_id.clone());
        push(
            "seq",
            self.seq.map(|seq| seq.to_string()).unwrap_or_default(),
        );
        push("key", self.key_id.clone());
        ids.join(" ")
    }
}

/// The findings of a verification run and how much it checked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub workflows_checked: u64,
    pub rows_checked: u64,
    pub entries_checked: u64,
    pub batches_checked: u64,
    pub checkpoints_checked: u64,
    /// Whether checkpoint signatures were checked (public keys were given).
    pub signatures_checked: bool,
    pub elapsed_seconds: f64,
}

impl Report {
    /// Returns whether nothing failed.
    pub fn is_clean(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|finding| finding.kind.is_failure())
    }

    /// Findings by kind name.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for finding in &self.findings {
            *counts.entry(finding.kind.name()).or_default() += 1;
        }
        counts
    }

    /// Rows per second over the whole run.
    pub fn rows_per_second(&self) -> f64 {
        if self.elapsed_seconds > 0.0 {
            self.rows_checked as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }
}

/// Verification could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading from ClickHouse failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    CheckpointFile(#[from] super::checkpoint::CheckpointFileError),
}

/// Reports progress while rows are checked.
pub trait Progress {
    fn rows(&mut self, rows: u64);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn rows(&mut self, _rows: u64) {}
}

/// Shared state of one run.
pub(crate) struct Run<'a> {
    pub client: &'a clickhouse::Client,
    pub options: &'a Options,
    pub report: Report,
    pub progress: &'a mut dyn Progress,
    pub now: i64,
}

impl Run<'_> {
    /// Records `finding`, or an `expired` one instead when `received_at`
    /// (the time of something written no earlier than the missing item) is
    /// older than the retention allows.
    pub fn missing(&mut self, mut finding: Finding, received_at: Option<i64>) {
        if self.is_expired(received_at) {
            finding.detail = format!(
                "{} (removed by retention: {})",
                finding.detail,
                finding.kind.name()
            );
            finding.kind = FindingKind::Expired;
        }
        self.report.findings.push(finding);
    }

    fn is_expired(&self, received_at: Option<i64>) -> bool {
        let (Some(retention), Some(received_at)) = (self.options.retention, received_at) else {
            return false;
        };
        let cutoff = self
            .now
            .saturating_sub(retention.as_nanos().min(i64::MAX as u128) as i64);
        received_at < cutoff
    }

    pub fn push(&mut self, finding: Finding) {
        self.report.findings.push(finding);
    }

    /// SQL condition on `ReceivedAt` (or `column`) for the period, or
    /// `1` without one.
    pub fn period(&self, column: &str) -> String {
        let mut parts = Vec::new();
        if let Some(from) = self.options.from {
            parts.push(format!(
                "{column} >= fromUnixTimestamp64Nano(toInt64({from}))"
            ));
        }
        if let Some(to) = self.options.to {
            parts.push(format!("{column} < fromUnixTimestamp64Nano(toInt64({to}))"));
        }
        if parts.is_empty() {
            "1".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    pub fn has_period(&self) -> bool {
        self.options.from.is_some() || self.options.to.is_some()
    }
}

/// Verifies what `options` selects.
pub async fn run(
    client: &clickhouse::Client,
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let mut run = Run {
        client,
        options,
        report: Report::default(),
        progress,
        now: crate::now_unix_nano(),
    };
    run.report.signatures_checked = !options.keys.is_empty();
    chains::verify(&mut run).await?;
    entries::verify(&mut run).await?;
    checkpoints::verify(&mut run).await?;
    run.report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(run.report)
}

/// A row of `agent_verify_runs`.
#[derive(Debug, clickhouse::Row, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyRunRow {
    pub run_id: String,
    pub instance_id: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub period_from: Option<i64>,
    pub period_to: Option<i64>,
    pub workflow_id: String,
    /// `clean` or `findings`.
    pub result: String,
    pub rows_checked: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub findings: u64,
    pub finding_counts: Vec<(String, u64)>,
    pub key_ids: Vec<String>,
    pub version: String,
}

impl VerifyRunRow {
    /// Builds the record of a run that started at `started_at` (Unix
    /// nanoseconds).
    pub fn new(options: &Options, report: &Report, instance_id: &str, started_at: i64) -> Self {
        let finished_at = crate::now_unix_nano();
        VerifyRunRow {
            run_id: format!("{instance_id}-{started_at}"),
            instance_id: instance_id.to_owned(),
            started_at,
            finished_at,
            period_from: options.from,
            period_to: options.to,
            workflow_id: options.workflow.clone().unwrap_or_default(),
            result: if report.is_clean() {
                "clean"
            } else {
                "findings"
            }
            .to_owned(),
            rows_checked: report.rows_checked,
            entries_checked: report.entries_checked,
            checkpoints_checked: report.checkpoints_checked,
            findings: report.findings.len() as u64,
            finding_counts: report
                .counts()
                .into_iter()
                .map(|(kind, count)| (kind.to_owned(), count))
                .collect(),
            key_ids: options.keys.iter().map(|key| key.key_id.clone()).collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Records a run in `agent_verify_runs`.
pub async fn record(client: &clickhouse::Client, row: &VerifyRunRow) -> Result<(), StoreError> {
    use crate::clickhouse::classify;
    let mut insert = client
        .insert::<VerifyRunRow>("agent_verify_runs")
        .await
        .map_err(classify)?;
    insert.write(row).await.map_err(classify)?;
    insert.end().await.map_err(classify)
}

/// Quotes a string literal for SQL. Ids are validated hex before they get
/// here, so the escaping only guards against mistakes.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
