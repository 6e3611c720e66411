//! Verification of the ledger entries and the batches they cover.
//!
//! Entries are streamed per instance in sequence order. Each entry's hash
//! is recomputed (`entry_modified` when it differs), each sequence number
//! must follow the previous one (`entry_missing` for a gap) and each
//! `PrevEntryHash` must be the previous entry's hash. The rows of
//! `agent_workflows`, `agent_rejected_spans` and `agent_credentials` are
//! streamed by the entry that covers them. Each batch's hash and row count
//! are recomputed and compared with its entry. Rows whose entry does not
//! exist are reported as `entry_missing`.
//!
//! With `--workflow`, only that workflow's segment entries are checked,
//! because batches mix workflows. With a period, the first entry of each
//! instance in the period is not linked to its predecessor outside it.

use std::collections::BTreeMap;

use clickhouse::{RowOwned, RowRead};

use super::stream::Peekable;
use super::{Finding, FindingKind, Run, VerifyError, quote};
use crate::clickhouse::rows::{CredentialRow, LedgerEntryRow, RejectedRow, WorkflowRow};
use crate::seal::ledger::{
    BATCH_TABLES, BatchRow, GENESIS_HASH, SEGMENT_KIND, batch_hash, entry_hash, row_digest,
};

/// A batch as stored: its table, instance and sequence number.
type BatchKey = (&'static str, String, u64);

/// A batch recomputed from its stored rows.
struct StoredBatch {
    rows: u32,
    hash: String,
}

/// Verifies the entries (and batches) in scope.
pub(crate) async fn verify(run: &mut Run<'_>) -> Result<(), VerifyError> {
    if let Some(workflow) = run.options.workflow.clone() {
        let sql = format!(
            "SELECT ?fields FROM agent_ledger_entries WHERE Kind = '{SEGMENT_KIND}' AND WorkflowId = {} ORDER BY InstanceId, Seq",
            quote(&workflow)
        );
        let mut entries: Peekable<LedgerEntryRow> = Peekable::new(run.client, &sql)?;
        while let Some(entry) = entries.next().await? {
            run.report.entries_checked += 1;
            check_hash(run, &entry);
        }
        return Ok(());
    }
    let mut batches = BTreeMap::new();
    read_batches::<WorkflowRow>(run, "agent_workflows", &mut batches).await?;
    read_batches::<RejectedRow>(run, "agent_rejected_spans", &mut batches).await?;
    read_batches::<CredentialRow>(run, "agent_credentials", &mut batches).await?;
    check_entries(run, &mut batches).await?;
    for ((table, instance_id, seq), batch) in batches {
        let detail = format!(
            "{} rows of {table} carry ledger sequence number {seq}, but no such entry exists",
            batch.rows
        );
        run.push(Finding {
            instance_id,
            seq: Some(seq),
            ..Finding::new(FindingKind::EntryMissing, "agent_ledger_entries", detail)
        });
    }
    Ok(())
}

/// Recomputes the hash of every batch of `table` in scope.
async fn read_batches<T>(
    run: &mut Run<'_>,
    table: &'static str,
    batches: &mut BTreeMap<BatchKey, StoredBatch>,
) -> Result<(), VerifyError>
where
    T: RowOwned + RowRead + BatchRow,
{
    let scope = if run.has_period() {
        let period = run.period("ReceivedAt");
        format!(
            "(LedgerInstanceId, LedgerSeq) IN (SELECT InstanceId, Seq FROM agent_ledger_entries WHERE Kind = '{table}' AND {period}) \
             OR ({period} AND (LedgerInstanceId, LedgerSeq) NOT IN (SELECT InstanceId, Seq FROM agent_ledger_entries WHERE Kind = '{table}'))"
        )
    } else {
        "1".to_owned()
    };
    let sql =
        format!("SELECT ?fields FROM {table} WHERE {scope} ORDER BY LedgerInstanceId, LedgerSeq");
    let mut rows: Peekable<T> = Peekable::new(run.client, &sql)?;
    let mut current: Option<(String, u64)> = None;
    let mut digests = Vec::new();
    while let Some(row) = rows.next().await? {
        let (instance_id, seq) = row.ledger_key();
        if current
            .as_ref()
            .is_some_and(|(id, current_seq)| id != instance_id || *current_seq != seq)
        {
            finish_batch(table, current.take(), std::mem::take(&mut digests), batches);
        }
        if current.is_none() {
            current = Some((instance_id.to_owned(), seq));
        }
        digests.push(row_digest(&row.encode()));
        run.report.rows_checked += 1;
        run.progress.rows(run.report.rows_checked);
    }
    finish_batch(table, current, digests, batches);
    Ok(())
}

fn finish_batch(
    table: &'static str,
    key: Option<(String, u64)>,
    digests: Vec<[u8; 32]>,
    batches: &mut BTreeMap<BatchKey, StoredBatch>,
) {
    if let Some((instance_id, seq)) = key {
        let rows = digests.len() as u32;
        batches.insert(
            (table, instance_id, seq),
            StoredBatch {
                rows,
                hash: batch_hash(table, digests),
            },
        );
    }
}

/// The previous entry of the instance being read.
struct Previous {
    instance_id: String,
    seq: u64,
    entry_hash: String,
}

async fn check_entries(
    run: &mut Run<'_>,
    batches: &mut BTreeMap<BatchKey, StoredBatch>,
) -> Result<(), VerifyError> {
    let sql = format!(
        "SELECT ?fields FROM agent_ledger_entries WHERE {} ORDER BY InstanceId, Seq",
        run.period("ReceivedAt")
    );
    let mut entries: Peekable<LedgerEntryRow> = Peekable::new(run.client, &sql)?;
    let mut previous: Option<Previous> = None;
    while let Some(entry) = entries.next().await? {
        run.report.entries_checked += 1;
        check_hash(run, &entry);
        let same_instance = previous
            .as_ref()
            .filter(|previous| previous.instance_id == entry.instance_id);
        check_sequence(run, same_instance, &entry);
        check_batch(run, &entry, batches);
        previous = Some(Previous {
            instance_id: entry.instance_id.clone(),
            seq: entry.seq,
            entry_hash: entry.entry_hash.clone(),
        });
    }
    Ok(())
}

fn entry_finding(kind: FindingKind, entry: &LedgerEntryRow, detail: String) -> Finding {
    Finding {
        instance_id: entry.instance_id.clone(),
        seq: Some(entry.seq),
        workflow_id: entry.workflow_id.clone(),
        root_span_id: entry.root_span_id.clone(),
        ..Finding::new(kind, "agent_ledger_entries", detail)
    }
}

fn check_hash(run: &mut Run<'_>, entry: &LedgerEntryRow) {
    let recomputed = entry_hash(entry);
    if recomputed != entry.entry_hash {
        let detail = format!(
            "the entry's columns hash to {recomputed}, not to its EntryHash {}",
            entry.entry_hash
        );
        run.push(entry_finding(FindingKind::EntryModified, entry, detail));
    }
}

/// Checks the gap and the hash link to the previous entry of the instance.
fn check_sequence(run: &mut Run<'_>, previous: Option<&Previous>, entry: &LedgerEntryRow) {
    let expected_seq = match previous {
        Some(previous) => previous.seq + 1,
        None if run.has_period() => entry.seq,
        None => 1,
    };
    if entry.seq < expected_seq {
        let detail = format!("a second entry with sequence number {}", entry.seq);
        run.push(entry_finding(FindingKind::EntryModified, entry, detail));
        return;
    }
    if entry.seq > expected_seq {
        let detail = format!(
            "entries {expected_seq} to {} of instance {} are not stored",
            entry.seq - 1,
            entry.instance_id
        );
        let finding = Finding {
            instance_id: entry.instance_id.clone(),
            seq: Some(expected_seq),
            ..Finding::new(FindingKind::EntryMissing, "agent_ledger_entries", detail)
        };
        run.missing(finding, Some(entry.received_at));
        return;
    }
    let expected_prev = match previous {
        Some(previous) => previous.entry_hash.as_str(),
        None if entry.seq == 1 => GENESIS_HASH,
        None => return,
    };
    if entry.prev_entry_hash != expected_prev {
        let detail = format!(
            "PrevEntryHash {} is not the previous entry's hash {expected_prev}",
            entry.prev_entry_hash
        );
        run.push(entry_finding(FindingKind::EntryModified, entry, detail));
    }
}

/// Compares a batch entry with the batch recomputed from the stored rows.
fn check_batch(
    run: &mut Run<'_>,
    entry: &LedgerEntryRow,
    batches: &mut BTreeMap<BatchKey, StoredBatch>,
) {
    if entry.kind == SEGMENT_KIND {
        return;
    }
    let Some(table) = BATCH_TABLES
        .iter()
        .copied()
        .find(|table| *table == entry.kind)
    else {
        let detail = format!("unknown entry kind {:?}", entry.kind);
        run.push(entry_finding(FindingKind::EntryModified, entry, detail));
        return;
    };
    let stored = batches.remove(&(table, entry.instance_id.clone(), entry.seq));
    let (rows, hash) = stored
        .map(|batch| (batch.rows, batch.hash))
        .unwrap_or((0, String::new()));
    let finding = |kind, detail| Finding {
        table,
        ..entry_finding(kind, entry, detail)
    };
    if rows < entry.row_count {
        let detail = format!(
            "{} of the {} rows of this batch are not stored",
            entry.row_count - rows,
            entry.row_count
        );
        run.missing(
            finding(FindingKind::RowMissing, detail),
            Some(entry.received_at),
        );
    } else if rows > entry.row_count {
        let detail = format!(
            "the batch holds {rows} rows, but {} were written",
            entry.row_count
        );
        run.push(finding(FindingKind::RowInserted, detail));
    } else if rows > 0 && hash != entry.chain_head {
        let detail = format!(
            "the batch's rows hash to {hash}, not to the sealed {}: a row was changed",
            entry.chain_head
        );
        run.push(finding(FindingKind::RowModified, detail));
    }
    run.report.batches_checked += 1;
}
