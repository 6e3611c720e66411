//! Verification of the `agent_spans` hash chains, one workflow at a time.
//!
//! Three streams sorted by workflow are merged: the span rows (by segment
//! and step), the newest verdict of each workflow, and its segment entries
//! from the ledger. The newest segment entry's chain head is the authority,
//! because the ledger is itself chained and checkpointed; the verdict's
//! `ChainHead` must agree with it. From that head the chain is walked back
//! through `PrevHash` to the verdict's `HeaderHash`:
//!
//! - a row whose recomputed hash differs from its `RowHash` is
//!   `row_modified`;
//! - a row the walk never reaches is `row_inserted`;
//! - step indices the walk lacks (a workflow's indices run from 0 without
//!   gaps over all segments) are `row_missing`;
//! - a broken link without a missing index means a row's `RowHash` was
//!   rewritten: `row_modified`.

use std::collections::{HashMap, HashSet};

use super::stream::Peekable;
use super::{Finding, FindingKind, MAX_FINDINGS_PER_WORKFLOW, Run, VerifyError, quote};
use crate::clickhouse::rows::{LedgerEntryRow, SpanRow, WorkflowRow};
use crate::seal::encoding::{Header, encode_span_row, row_hash};
use crate::seal::ledger::SEGMENT_KIND;

type Key = (String, String);

/// The part of a span row that the verifier keeps.
#[derive(Clone, Debug)]
pub(crate) struct RowInfo {
    pub span_id: String,
    pub step_index: u32,
    pub prev_hash: String,
    pub row_hash: String,
    /// Whether the recomputed hash equals `RowHash`.
    pub hash_ok: bool,
}

impl RowInfo {
    pub fn of(row: &SpanRow) -> Self {
        let computed = row_hash(&row.prev_hash, &encode_span_row(&row.columns()));
        RowInfo {
            span_id: row.span_id.clone(),
            step_index: row.step_index,
            prev_hash: row.prev_hash.clone(),
            hash_ok: computed == row.row_hash,
            row_hash: row.row_hash.clone(),
        }
    }
}

/// Everything stored about one workflow.
pub(crate) struct Group {
    pub workflow_id: String,
    pub root_span_id: String,
    pub verdict: Option<WorkflowRow>,
    pub rows: Vec<RowInfo>,
    pub segments: Vec<LedgerEntryRow>,
}

/// Verifies every workflow in scope.
pub(crate) async fn verify(run: &mut Run<'_>) -> Result<(), VerifyError> {
    let client = run.client;
    let mut spans: Peekable<SpanRow> = Peekable::new(
        client,
        &format!(
            "SELECT ?fields FROM agent_spans WHERE {} ORDER BY TraceId, WorkflowRootSpanId, Segment, StepIndex",
            scope(run, "TraceId", "WorkflowRootSpanId")
        ),
    )?;
    let mut verdicts: Peekable<WorkflowRow> = Peekable::new(
        client,
        &format!(
            "SELECT ?fields FROM agent_workflows WHERE {} \
             ORDER BY WorkflowId, RootSpanId, Revision DESC, WrittenAt DESC LIMIT 1 BY WorkflowId, RootSpanId",
            scope(run, "WorkflowId", "RootSpanId")
        ),
    )?;
    let mut segments: Peekable<LedgerEntryRow> = Peekable::new(
        client,
        &format!(
            "SELECT ?fields FROM agent_ledger_entries WHERE Kind = '{SEGMENT_KIND}' AND {} \
             ORDER BY WorkflowId, RootSpanId, Segment, Seq",
            scope(run, "WorkflowId", "RootSpanId")
        ),
    )?;
    while let Some(key) = next_key(&mut spans, &mut verdicts, &mut segments).await? {
        let group = read_group(run, key, &mut spans, &mut verdicts, &mut segments).await?;
        run.report.workflows_checked += 1;
        report_group(run, &group);
    }
    Ok(())
}

/// Builds the SQL condition selecting the workflows in scope, for a table whose
/// workflow columns are `workflow` and `root`. With a period, a workflow is
/// in scope when any of its rows, verdicts or segment entries was received
/// in it, and then all of it is verified.
fn scope(run: &Run<'_>, workflow: &str, root: &str) -> String {
    let by_id = match &run.options.workflow {
        Some(id) => format!("{workflow} = {}", quote(id)),
        None => "1".to_owned(),
    };
    if !run.has_period() {
        return by_id;
    }
    let period = run.period("ReceivedAt");
    let id_filter = |column: &str| match &run.options.workflow {
        Some(id) => format!(" AND {column} = {}", quote(id)),
        None => String::new(),
    };
    format!(
        "({workflow}, {root}) IN (\
         SELECT WorkflowId, RootSpanId FROM agent_workflows WHERE {period}{} \
         UNION DISTINCT SELECT WorkflowId, RootSpanId FROM agent_ledger_entries WHERE Kind = '{SEGMENT_KIND}' AND {period}{} \
         UNION DISTINCT SELECT TraceId, WorkflowRootSpanId FROM agent_spans WHERE {period}{})",
        id_filter("WorkflowId"),
        id_filter("WorkflowId"),
        id_filter("TraceId"),
    )
}

async fn next_key(
    spans: &mut Peekable<SpanRow>,
    verdicts: &mut Peekable<WorkflowRow>,
    segments: &mut Peekable<LedgerEntryRow>,
) -> Result<Option<Key>, VerifyError> {
    let mut keys: Vec<Key> = Vec::new();
    if let Some(row) = spans.peek().await? {
        keys.push((
            row.trace_id.to_string(),
            row.workflow_root_span_id.to_string(),
        ));
    }
    if let Some(row) = verdicts.peek().await? {
        keys.push((row.workflow_id.clone(), row.root_span_id.clone()));
    }
    if let Some(row) = segments.peek().await? {
        keys.push((row.workflow_id.clone(), row.root_span_id.clone()));
    }
    Ok(keys.into_iter().min())
}

async fn read_group(
    run: &mut Run<'_>,
    key: Key,
    spans: &mut Peekable<SpanRow>,
    verdicts: &mut Peekable<WorkflowRow>,
    segments: &mut Peekable<LedgerEntryRow>,
) -> Result<Group, VerifyError> {
    let mut rows = Vec::new();
    while let Some(row) = spans.peek().await? {
        if row.trace_id != key.0 || row.workflow_root_span_id != key.1 {
            break;
        }
        let row = spans.next().await?.expect("a peeked row is there");
        rows.push(RowInfo::of(&row));
        run.report.rows_checked += 1;
        run.progress.rows(run.report.rows_checked);
    }
    let verdict = verdicts
        .take_while(&key, |row| {
            (row.workflow_id.clone(), row.root_span_id.clone())
        })
        .await?
        .pop();
    let segments = segments
        .take_while(&key, |row| {
            (row.workflow_id.clone(), row.root_span_id.clone())
        })
        .await?;
    Ok(Group {
        workflow_id: key.0,
        root_span_id: key.1,
        verdict,
        rows,
        segments,
    })
}

fn report_group(run: &mut Run<'_>, group: &Group) {
    let written_at = group
        .verdict
        .iter()
        .map(|verdict| verdict.written_at)
        .chain(group.segments.iter().map(|entry| entry.received_at))
        .max();
    let findings = check_group(group);
    let total = findings.len();
    for finding in findings.into_iter().take(MAX_FINDINGS_PER_WORKFLOW) {
        if finding.kind == FindingKind::RowMissing {
            run.missing(finding, written_at);
        } else {
            run.push(finding);
        }
    }
    if total > MAX_FINDINGS_PER_WORKFLOW {
        let detail = format!(
            "{} more findings in this workflow are not listed",
            total - MAX_FINDINGS_PER_WORKFLOW
        );
        run.push(group.finding(FindingKind::RowModified, "agent_spans", detail));
    }
}

impl Group {
    fn finding(&self, kind: FindingKind, table: &'static str, detail: String) -> Finding {
        Finding {
            workflow_id: self.workflow_id.clone(),
            root_span_id: self.root_span_id.clone(),
            ..Finding::new(kind, table, detail)
        }
    }

    fn row_finding(&self, kind: FindingKind, row: &RowInfo, detail: String) -> Finding {
        Finding {
            span_id: row.span_id.clone(),
            step_index: Some(row.step_index),
            ..self.finding(kind, "agent_spans", detail)
        }
    }
}

/// The chain a workflow must have: its head, its row count and the hash it
/// starts from (unknown without a verdict).
struct Expected {
    head: String,
    row_count: u32,
    start: Option<String>,
}

/// Checks one workflow and returns every finding about it.
pub(crate) fn check_group(group: &Group) -> Vec<Finding> {
    let mut findings = check_verdict(group);
    let Some(expected) = expected_chain(group, &mut findings) else {
        return findings;
    };
    for row in group.rows.iter().filter(|row| !row.hash_ok) {
        let detail =
            "the row's columns do not hash to its RowHash: a column was changed after sealing"
                .to_owned();
        findings.push(group.row_finding(FindingKind::RowModified, row, detail));
    }
    let walk = Walk::run(&group.rows, &expected);
    findings.extend(walk.findings(group, &expected));
    findings.extend(check_segments(group, &walk));
    findings
}

fn check_verdict(group: &Group) -> Vec<Finding> {
    let Some(verdict) = &group.verdict else {
        return Vec::new();
    };
    let recomputed = Header::of(verdict).hash();
    if recomputed == verdict.header_hash {
        return Vec::new();
    }
    let detail = format!(
        "revision {}: the header columns (origin, agent, credential) hash to {recomputed}, not to the stored HeaderHash {}",
        verdict.revision, verdict.header_hash
    );
    vec![group.finding(FindingKind::RowModified, "agent_workflows", detail)]
}

/// Returns the chain the ledger (or, without a segment entry, the verdict)
/// vouches for, or `None` when the workflow has no chain to check.
fn expected_chain(group: &Group, findings: &mut Vec<Finding>) -> Option<Expected> {
    let verdict = group.verdict.as_ref();
    let start = verdict.map(|verdict| verdict.header_hash.clone());
    let last_entry = group
        .segments
        .iter()
        .max_by_key(|entry| (entry.segment, entry.seq));
    match (last_entry, verdict) {
        (Some(entry), _) => {
            if let Some(verdict) = verdict
                && (verdict.chain_head != entry.chain_head || verdict.row_count != entry.row_count)
            {
                let detail = format!(
                    "revision {} states ChainHead {} and RowCount {}, but ledger entry {} of instance {} sealed {} and {}",
                    verdict.revision,
                    verdict.chain_head,
                    verdict.row_count,
                    entry.seq,
                    entry.instance_id,
                    entry.chain_head,
                    entry.row_count
                );
                findings.push(group.finding(FindingKind::RowModified, "agent_workflows", detail));
            }
            Some(Expected {
                head: entry.chain_head.clone(),
                row_count: entry.row_count,
                start,
            })
        }
        (None, Some(verdict)) if verdict.row_count > 0 || !group.rows.is_empty() => {
            Some(Expected {
                head: verdict.chain_head.clone(),
                row_count: verdict.row_count,
                start,
            })
        }
        (None, Some(_)) => None,
        (None, None) => {
            for row in &group.rows {
                let detail = "no verdict or ledger entry accounts for this row".to_owned();
                findings.push(group.row_finding(FindingKind::RowInserted, row, detail));
            }
            None
        }
    }
}

/// The rows reached from the head backwards and, past a break, from the
/// start forwards.
struct Walk {
    on_chain: Vec<bool>,
    complete: bool,
    /// The last row reached forwards from the start, before a break.
    forward_end: Option<usize>,
    /// The last row reached backwards from the head, before a break.
    backward_end: Option<usize>,
}

impl Walk {
    fn run(rows: &[RowInfo], expected: &Expected) -> Walk {
        let mut walk = Walk {
            on_chain: vec![false; rows.len()],
            complete: false,
            forward_end: None,
            backward_end: None,
        };
        walk.backward(rows, expected);
        if !walk.complete
            && let Some(start) = &expected.start
        {
            walk.forward(rows, start);
        }
        walk
    }

    fn backward(&mut self, rows: &[RowInfo], expected: &Expected) {
        let by_hash: HashMap<&str, usize> = rows
            .iter()
            .enumerate()
            .map(|(index, row)| (row.row_hash.as_str(), index))
            .collect();
        let mut current = expected.head.as_str();
        loop {
            if expected.start.as_deref() == Some(current) {
                self.complete = true;
                return;
            }
            match by_hash.get(current) {
                Some(&index) if !self.on_chain[index] => {
                    self.on_chain[index] = true;
                    self.backward_end = Some(index);
                    current = &rows[index].prev_hash;
                }
                _ => break,
            }
        }
        // Without a verdict the start is unknown: a walk that ends at step 0
        // is taken as complete.
        self.complete = expected.start.is_none()
            && self
                .backward_end
                .is_some_and(|index| rows[index].step_index == 0);
    }

    fn forward(&mut self, rows: &[RowInfo], start: &str) {
        let mut by_prev: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, row) in rows.iter().enumerate() {
            by_prev
                .entry(row.prev_hash.as_str())
                .or_default()
                .push(index);
        }
        let mut current = start;
        loop {
            let next = by_prev.get(current).and_then(|candidates| {
                candidates
                    .iter()
                    .copied()
                    .filter(|index| !self.on_chain[*index])
                    .min_by_key(|index| rows[*index].step_index)
            });
            let Some(index) = next else { break };
            self.on_chain[index] = true;
            self.forward_end = Some(index);
            current = &rows[index].row_hash;
        }
    }

    fn findings(&self, group: &Group, expected: &Expected) -> Vec<Finding> {
        let rows = &group.rows;
        let mut findings = Vec::new();
        for (row, _) in rows
            .iter()
            .zip(&self.on_chain)
            .filter(|(_, on_chain)| !**on_chain)
        {
            let detail = format!(
                "the row is not part of the chain that ends at the sealed head {}",
                expected.head
            );
            findings.push(group.row_finding(FindingKind::RowInserted, row, detail));
        }
        let present: HashSet<u32> = rows
            .iter()
            .zip(&self.on_chain)
            .filter(|(_, on_chain)| **on_chain)
            .map(|(row, _)| row.step_index)
            .collect();
        let missing: Vec<u32> = (0..expected.row_count)
            .filter(|index| !present.contains(index))
            .collect();
        for step_index in &missing {
            let detail = format!(
                "step {step_index} of {} sealed rows is not stored",
                expected.row_count
            );
            findings.push(Finding {
                step_index: Some(*step_index),
                ..group.finding(FindingKind::RowMissing, "agent_spans", detail)
            });
        }
        if !self.complete && missing.is_empty() {
            findings.push(self.broken_link(group));
        }
        findings
    }

    /// Reports a chain that breaks although no row is missing, which means
    /// the row before the break had its `RowHash` rewritten.
    fn broken_link(&self, group: &Group) -> Finding {
        match self.forward_end.or(self.backward_end) {
            Some(index) => {
                let detail = "the chain breaks at this row: its hashes do not link to its neighbors, so it was replaced or its RowHash rewritten".to_owned();
                group.row_finding(FindingKind::RowModified, &group.rows[index], detail)
            }
            None => group.finding(
                FindingKind::RowModified,
                "agent_spans",
                "no stored row links to the sealed head or to the header".to_owned(),
            ),
        }
    }
}

/// Each segment entry's head must be a row on the chain (or the header of
/// an empty chain).
fn check_segments(group: &Group, walk: &Walk) -> Vec<Finding> {
    let on_chain: HashSet<&str> = group
        .rows
        .iter()
        .zip(&walk.on_chain)
        .filter(|(_, on_chain)| **on_chain)
        .map(|(row, _)| row.row_hash.as_str())
        .collect();
    let start = group
        .verdict
        .as_ref()
        .map(|verdict| verdict.header_hash.as_str());
    let mut findings = Vec::new();
    for entry in &group.segments {
        if on_chain.contains(entry.chain_head.as_str()) || Some(entry.chain_head.as_str()) == start
        {
            continue;
        }
        if walk.complete {
            let detail = format!(
                "segment {} was sealed with head {}, which no row of the chain has",
                entry.segment, entry.chain_head
            );
            findings.push(Finding {
                instance_id: entry.instance_id.clone(),
                seq: Some(entry.seq),
                ..group.finding(FindingKind::RowMissing, "agent_spans", detail)
            });
        }
    }
    findings
}
