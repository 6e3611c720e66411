//! Rebuilding the assembler from the spool after a restart.
//!
//! Every span still in the spool is looked up in ClickHouse first. A span
//! whose row is stored is only remembered (for duplicates and late spans)
//! and its spool location released, unless its trace has no verdict yet: a
//! crash between the span rows and the verdict row leaves that state, and
//! the workflow is then assembled again with the stored spans marked so that
//! only the verdict is written. Everything else waits again as if it had just
//! arrived.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;

use super::state::{MetaState, SpanMeta, WrittenWorkflow};
use super::{Assembler, Emitted, Storage};
use crate::clickhouse::rows::WorkflowRow;
use crate::clickhouse::{StoreError, StoredState};
use crate::quarantine::Reason;
use crate::receiver::convert::{RequestContext, rejected_from_bytes, span_from_raw};
use crate::span::{SpanId, TraceId};
use crate::spool::{RecordPosition, ReplayRecord, Spool, SpoolError};
use crate::validate::{Credential, NO_ROOT_REASON, Status, Summary, Verdict};

/// A replay failure.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot look up what ClickHouse already stored: {0}")]
    Store(#[from] StoreError),
}

/// What the replay found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub records: usize,
    pub spans_waiting: usize,
    pub spans_stored: usize,
    pub rejected_resent: usize,
    pub rejected_stored: usize,
}

/// Replays `records` from `spool` into `assembler`. Quarantined spans whose
/// rows are missing are returned in `out` for the sink.
pub async fn restore(
    assembler: &mut Assembler,
    spool: &Spool,
    records: &[RecordPosition],
    client: &clickhouse::Client,
    out: &mut Vec<Emitted>,
) -> Result<RestoreStats, RestoreError> {
    let trace_ids = collect_trace_ids(spool, records)?;
    let stored = crate::clickhouse::stored_state(client, &trace_ids).await?;
    let with_verdict = restore_verdicts(assembler, &stored);
    let mut stats = RestoreStats {
        records: records.len(),
        ..RestoreStats::default()
    };
    let now = Instant::now();
    for position in records {
        let record = spool.read_record(position)?;
        replay_record(
            assembler,
            spool,
            record,
            &stored,
            &with_verdict,
            now,
            out,
            &mut stats,
        );
    }
    assembler.reassign_quarantine_keys();
    Ok(stats)
}

fn collect_trace_ids(spool: &Spool, records: &[RecordPosition]) -> Result<Vec<String>, SpoolError> {
    let mut ids = HashSet::new();
    for position in records {
        let record = spool.read_record(position)?;
        let blobs = record
            .spans
            .iter()
            .map(|(_, bytes)| bytes)
            .chain(record.rejected.iter().map(|(_, entry)| &entry.raw));
        ids.extend(blobs.filter_map(|bytes| raw_trace_id(bytes)));
    }
    Ok(ids.into_iter().collect())
}

fn raw_trace_id(bytes: &[u8]) -> Option<String> {
    let resource_spans = crate::otlp::ResourceSpans::decode(bytes).ok()?;
    let span = resource_spans.scope_spans.first()?.spans.first()?;
    Some(hex::encode(&span.trace_id))
}

/// Restores the written workflows; returns the traces that have a verdict.
fn restore_verdicts(assembler: &mut Assembler, stored: &StoredState) -> HashSet<TraceId> {
    let mut with_verdict = HashSet::new();
    for row in &stored.verdicts {
        let (Some(trace_id), Some(root)) = (
            TraceId::from_hex(&row.workflow_id),
            SpanId::from_hex(&row.root_span_id),
        ) else {
            continue;
        };
        with_verdict.insert(trace_id);
        let next_step = stored
            .next_step
            .get(&(row.workflow_id.clone(), row.root_span_id.clone()))
            .copied()
            .unwrap_or(row.row_count);
        assembler.restore_verdict(trace_id, root, row, next_step);
    }
    with_verdict
}

#[allow(clippy::too_many_arguments)]
fn replay_record(
    assembler: &mut Assembler,
    spool: &Spool,
    record: ReplayRecord,
    stored: &StoredState,
    with_verdict: &HashSet<TraceId>,
    now: Instant,
    out: &mut Vec<Emitted>,
    stats: &mut RestoreStats,
) {
    let context = RequestContext {
        received_at_unix_nano: record.received_at,
        sender: Arc::from(record.sender.as_str()),
        limits: assembler.attribute_limits(),
    };
    for (location, bytes) in record.spans {
        let Some(mut span) = span_from_raw(bytes::Bytes::from(bytes), &context) else {
            tracing::error!(
                segment = location.segment,
                offset = location.offset,
                "a spooled span no longer passes the checks; it is skipped"
            );
            spool.release([location]);
            continue;
        };
        span.spool = Some(location);
        let key = (span.trace_id.to_hex(), span.span_id.to_hex());
        let quarantine_reason = stored_quarantine_reason(stored, &key);
        let is_stored = stored.spans.contains(&key) || quarantine_reason.is_some();
        if !is_stored {
            stats.spans_waiting += 1;
            assembler.insert(vec![span], now, out);
        } else if with_verdict.contains(&span.trace_id) {
            stats.spans_stored += 1;
            let waiting_for_root = matches!(
                quarantine_reason,
                Some(Reason::RootSpanMissing | Reason::Evicted)
            );
            assembler.restore_stored_span(&span, waiting_for_root, now);
            spool.release([location]);
        } else {
            stats.spans_stored += 1;
            span.already_stored = true;
            assembler.insert(vec![span], now, out);
        }
    }
    for (location, entry) in record.rejected {
        let Some(mut rejected) =
            rejected_from_bytes(&entry.raw, entry.reason, entry.detail, &context)
        else {
            spool.release([location]);
            continue;
        };
        let key = (
            rejected.trace_id.clone(),
            rejected.span_id.clone(),
            entry.reason.code().to_owned(),
        );
        if stored.rejected.contains(&key) {
            stats.rejected_stored += 1;
            spool.release([location]);
        } else {
            stats.rejected_resent += 1;
            rejected.location = Some(location);
            out.push(Emitted::Rejected(Box::new(rejected)));
        }
    }
}

/// The quarantine reason under which a span's row is stored, ignoring
/// conflicting duplicates (a different span that reused the ids).
fn stored_quarantine_reason(stored: &StoredState, key: &(String, String)) -> Option<Reason> {
    Reason::ALL
        .into_iter()
        .filter(|reason| *reason != Reason::ConflictingDuplicate)
        .find(|reason| {
            stored
                .rejected
                .contains(&(key.0.clone(), key.1.clone(), reason.code().to_owned()))
        })
}

impl Assembler {
    /// Remembers a workflow whose verdict ClickHouse holds.
    fn restore_verdict(
        &mut self,
        trace_id: TraceId,
        root: SpanId,
        row: &WorkflowRow,
        next_step: u32,
    ) {
        let trace = self.trace_mut(trace_id);
        let status = match row.status.as_str() {
            "valid" => Status::Valid,
            "incomplete" => {
                trace.incomplete.insert(root, row.revision);
                return;
            }
            _ => Status::Rejected,
        };
        let storage = match status {
            Status::Valid => Storage::Spans,
            _ if row.reasons.first().map(String::as_str) == Some(NO_ROOT_REASON) => {
                Storage::Quarantine(Reason::NoWorkflowRoot, NO_ROOT_REASON.to_owned())
            }
            _ => Storage::Quarantine(Reason::PolicyRejected, row.reasons.join("; ")),
        };
        let verdict = Verdict {
            status,
            reasons: row.reasons.clone(),
            summary: Arc::new(summary_of(row)),
        };
        trace.written.insert(
            root,
            WrittenWorkflow {
                verdict: Arc::new(verdict),
                storage,
                revision: row.revision,
                segment: row.segment,
                next_step_index: next_step,
                chain: Some(crate::seal::Chain {
                    header_hash: row.header_hash.clone(),
                    head: row.chain_head.clone(),
                    row_count: row.row_count,
                    violation_count: row.violation_count,
                }),
            },
        );
    }

    /// Remembers a span whose row ClickHouse holds, without buffering it.
    fn restore_stored_span(
        &mut self,
        span: &crate::span::Span,
        waiting_for_root: bool,
        now: Instant,
    ) {
        let (is_root, kind) = self.resolver.classify(span);
        let trace = self.trace_mut(span.trace_id);
        trace.last_arrival = now;
        if trace.meta.contains_key(&span.span_id) {
            return;
        }
        let mut meta = SpanMeta::new(span, is_root, kind);
        meta.state = if waiting_for_root {
            MetaState::Quarantined { key: span.span_id }
        } else {
            MetaState::Written
        };
        trace.meta.insert(span.span_id, meta);
        self.retained_spans += 1;
        self.idle.push_back((span.trace_id, now));
    }

    fn trace_mut(&mut self, trace_id: TraceId) -> &mut super::state::TraceState {
        self.traces
            .entry(trace_id)
            .or_insert_with(|| Box::new(super::state::TraceState::new(Instant::now())))
    }

    /// Points restored quarantined spans at the span their chain waits for.
    fn reassign_quarantine_keys(&mut self) {
        for trace in self.traces.values_mut() {
            trace.reassign_quarantine_keys();
        }
    }
}

fn summary_of(row: &WorkflowRow) -> Summary {
    Summary {
        origin_type: row.origin_type.clone(),
        origin_source: row.origin_source.clone(),
        task_spec: row.task_spec.clone(),
        authorized_by: row.authorized_by.clone(),
        received_at_unix_nano: row.origin_received_at,
        agent_name: row.agent_name.clone(),
        agent_id: row.agent_id.clone(),
        agent_version: row.agent_version.clone(),
        agent_names: row.agent_names.clone(),
        model_names: row.model_names.clone(),
        model_versions: row.model_versions.clone(),
        provider: row.provider.clone(),
        credential: Credential {
            id: row.credential_id.clone(),
            issuer: row.credential_issuer.clone(),
            scopes: row.credential_scopes.clone(),
            issued_at_unix_nano: row.credential_issued_at,
            expires_at_unix_nano: row.credential_expires_at,
        },
        tools_used: row.tools_used.clone(),
        step_count: row.step_count,
    }
}
