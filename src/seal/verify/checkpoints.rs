//! Verification of checkpoints, in ClickHouse and in the checkpoint folder.
//!
//! Each checkpoint's signature must verify with a given public key of its
//! key id, else it is `checkpoint_invalid`. Unsigned checkpoints count as
//! invalid once keys are given. Its `LastEntryHash` must be the stored hash
//! of entry `LastSeq`, and per instance the ranges must follow each other
//! (`checkpoint_missing` for a gap). A checkpoint file without its
//! row is `checkpoint_missing`, one that differs is `checkpoint_invalid`.
//! Entries that a checkpoint covers beyond the last stored entry are
//! `entry_missing`: this is how cutting off the newest entries (and their
//! checkpoints) shows, against the files kept outside ClickHouse.

use std::collections::{BTreeMap, HashMap};

use clickhouse::Row;
use serde::Deserialize;

use super::{Finding, FindingKind, Run, VerifyError};
use crate::clickhouse::classify;
use crate::clickhouse::rows::CheckpointRow;
use crate::seal::checkpoint::{self, SignatureCheck};

#[derive(Debug, Row, Deserialize)]
struct EntryHash {
    #[serde(rename = "InstanceId")]
    instance_id: String,
    #[serde(rename = "Seq")]
    seq: u64,
    #[serde(rename = "EntryHash")]
    entry_hash: String,
}

/// Verifies the checkpoints in scope (all of them with `--workflow`, which
/// does not narrow checkpoints).
pub(crate) async fn verify(run: &mut Run<'_>) -> Result<(), VerifyError> {
    let period = run.period("SignedAt");
    let stored: Vec<CheckpointRow> = run
        .client
        .query(&format!("SELECT ?fields FROM agent_ledger_checkpoints WHERE {period} ORDER BY InstanceId, LastSeq"))
        .fetch_all()
        .await
        .map_err(classify)?;
    let hashes = entry_hashes(run, &period).await?;
    let max_seq = max_seqs(run).await?;
    let mut previous: Option<&CheckpointRow> = None;
    for row in &stored {
        run.report.checkpoints_checked += 1;
        check_signature(run, row, "agent_ledger_checkpoints");
        check_last_entry(run, row, &hashes);
        check_continuity(
            run,
            previous.filter(|previous| previous.instance_id == row.instance_id),
            row,
        );
        previous = Some(row);
    }
    let mut newest: BTreeMap<String, &CheckpointRow> = BTreeMap::new();
    for row in &stored {
        newest.insert(row.instance_id.clone(), row);
    }
    let files = check_files(run, &stored)?;
    for file in &files {
        let newer = newest
            .get(&file.instance_id)
            .is_none_or(|row| row.last_seq < file.last_seq);
        if newer {
            newest.insert(file.instance_id.clone(), file);
        }
    }
    for (instance_id, row) in newest {
        check_truncation(
            run,
            &instance_id,
            row,
            max_seq.get(&instance_id).copied().unwrap_or(0),
        );
    }
    Ok(())
}

async fn entry_hashes(
    run: &Run<'_>,
    period: &str,
) -> Result<HashMap<(String, u64), String>, VerifyError> {
    let rows: Vec<EntryHash> = run
        .client
        .query(&format!(
            "SELECT InstanceId, Seq, EntryHash FROM agent_ledger_entries \
             WHERE (InstanceId, Seq) IN (SELECT InstanceId, LastSeq FROM agent_ledger_checkpoints WHERE {period})"
        ))
        .fetch_all()
        .await
        .map_err(classify)?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.instance_id, row.seq), row.entry_hash))
        .collect())
}

async fn max_seqs(run: &Run<'_>) -> Result<HashMap<String, u64>, VerifyError> {
    let rows: Vec<(String, u64)> = run
        .client
        .query("SELECT InstanceId, max(Seq) FROM agent_ledger_entries GROUP BY InstanceId")
        .fetch_all()
        .await
        .map_err(classify)?;
    Ok(rows.into_iter().collect())
}

fn finding(kind: FindingKind, table: &'static str, row: &CheckpointRow, detail: String) -> Finding {
    Finding {
        instance_id: row.instance_id.clone(),
        seq: Some(row.last_seq),
        key_id: row.key_id.clone(),
        ..Finding::new(kind, table, detail)
    }
}

fn check_signature(run: &mut Run<'_>, row: &CheckpointRow, table: &'static str) {
    let problem = match checkpoint::check_signature(row, &run.options.keys) {
        SignatureCheck::Valid | SignatureCheck::NotChecked => return,
        SignatureCheck::Unsigned if run.options.keys.is_empty() => return,
        SignatureCheck::Unsigned => "the checkpoint is unsigned".to_owned(),
        SignatureCheck::UnknownKey => format!(
            "signed with key id {}, but no --public-key has that key id",
            row.key_id
        ),
        SignatureCheck::Invalid => format!(
            "the signature does not verify with public key {}",
            row.key_id
        ),
    };
    let detail = format!(
        "checkpoint of entries {} to {}: {problem}",
        row.first_seq, row.last_seq
    );
    run.push(finding(FindingKind::CheckpointInvalid, table, row, detail));
}

fn check_last_entry(
    run: &mut Run<'_>,
    row: &CheckpointRow,
    hashes: &HashMap<(String, u64), String>,
) {
    let Some(stored) = hashes.get(&(row.instance_id.clone(), row.last_seq)) else {
        // A missing entry is reported by the entry checks or as truncation.
        return;
    };
    if *stored != row.last_entry_hash {
        let detail = format!(
            "LastEntryHash {} is not the EntryHash {stored} of entry {}",
            row.last_entry_hash, row.last_seq
        );
        run.push(finding(
            FindingKind::CheckpointInvalid,
            "agent_ledger_checkpoints",
            row,
            detail,
        ));
    }
}

fn check_continuity(run: &mut Run<'_>, previous: Option<&CheckpointRow>, row: &CheckpointRow) {
    let expected_first = match previous {
        Some(previous) => previous.last_seq + 1,
        None if run.has_period() => return,
        None => 1,
    };
    if row.first_seq > expected_first {
        let detail = format!(
            "no checkpoint covers entries {expected_first} to {} of instance {}",
            row.first_seq - 1,
            row.instance_id
        );
        run.missing(
            finding(
                FindingKind::CheckpointMissing,
                "agent_ledger_checkpoints",
                row,
                detail,
            ),
            Some(row.signed_at),
        );
    }
}

/// Compares the checkpoint files with the stored checkpoints; returns the
/// files in scope as rows.
fn check_files(
    run: &mut Run<'_>,
    stored: &[CheckpointRow],
) -> Result<Vec<CheckpointRow>, VerifyError> {
    let Some(dir) = run.options.checkpoint_dir.clone() else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for (path, file) in checkpoint::read_dir(&dir)? {
        let row = file.to_row();
        if !in_period(run, row.signed_at) {
            continue;
        }
        run.report.checkpoints_checked += 1;
        check_signature(run, &row, "checkpoint_file");
        let matching = stored.iter().find(|stored| {
            stored.instance_id == row.instance_id && stored.last_seq == row.last_seq
        });
        match matching {
            None => {
                let detail = format!(
                    "checkpoint file {} has no row in agent_ledger_checkpoints",
                    path.display()
                );
                run.missing(
                    finding(
                        FindingKind::CheckpointMissing,
                        "agent_ledger_checkpoints",
                        &row,
                        detail,
                    ),
                    Some(row.signed_at),
                );
            }
            Some(stored) if *stored != row => {
                let detail = format!(
                    "the stored checkpoint differs from checkpoint file {}",
                    path.display()
                );
                run.push(finding(
                    FindingKind::CheckpointInvalid,
                    "agent_ledger_checkpoints",
                    &row,
                    detail,
                ));
            }
            Some(_) => {}
        }
        rows.push(row);
    }
    Ok(rows)
}

fn in_period(run: &Run<'_>, time: i64) -> bool {
    run.options.from.is_none_or(|from| time >= from) && run.options.to.is_none_or(|to| time < to)
}

/// Reports entries that the newest checkpoint covers but ClickHouse no
/// longer holds.
fn check_truncation(run: &mut Run<'_>, instance_id: &str, newest: &CheckpointRow, max_seq: u64) {
    if newest.last_seq <= max_seq {
        return;
    }
    let detail = format!(
        "entries {} to {} of instance {instance_id} are not stored, but the checkpoint signed at {} covers them",
        max_seq + 1,
        newest.last_seq,
        checkpoint::rfc3339(newest.signed_at)
    );
    let finding = Finding {
        instance_id: instance_id.to_owned(),
        seq: Some(max_seq + 1),
        ..Finding::new(FindingKind::EntryMissing, "agent_ledger_entries", detail)
    };
    run.missing(finding, Some(newest.signed_at));
}
