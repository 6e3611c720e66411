//! The ledger: an append-only, hash-chained list of what one instance wrote.
//!
//! Takes every sealed workflow segment and every written batch of
//! `agent_workflows`, `agent_rejected_spans` and `agent_credentials`, and
//! produces `agent_ledger_entries` rows. Each row has a sequence number
//! without gaps per instance, the kind (`segment` or the table name), the
//! chain head or batch hash, the previous entry's hash and its own hash. Deleting
//! or changing a stored row or entry therefore breaks a hash that the
//! verifier recomputes. At an interval and on shutdown it produces a signed
//! checkpoint over the entries written since the previous one.
//!
//! The sequence survives restarts: [`Ledger::open`] reads this instance's
//! last entry, last checkpoint and highest batch sequence number from
//! ClickHouse.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clickhouse::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::checkpoint::{self, CheckpointFileError};
use super::encoding::Encoder;
use super::keys::{CheckpointSigner, KeyError};
use crate::clickhouse::rows::{
    CheckpointRow, CredentialRow, LedgerEntryRow, RejectedRow, WorkflowRow,
};
use crate::clickhouse::{StoreError, classify};
use crate::config::SealConfig;
use crate::span::lower_hex;

/// Tag of the ledger entry encoding.
pub const ENTRY_TAG: &str = "agent-ledger/ledger-entry/v1";
/// Tag of the batch hash encoding.
pub const BATCH_TAG: &str = "agent-ledger/batch/v1";
/// `PrevEntryHash` of an instance's first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `Kind` of an entry that seals a workflow segment.
pub const SEGMENT_KIND: &str = "segment";
/// Tables whose batches the ledger covers, which are also the `Kind` of
/// their entries.
pub const BATCH_TABLES: [&str; 3] = [
    "agent_workflows",
    "agent_rejected_spans",
    "agent_credentials",
];

/// A failure to start the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read this instance's ledger state from ClickHouse: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    CheckpointFile(#[from] CheckpointFileError),
}

/// A row covered by a batch entry: it carries the entry's instance id and
/// sequence number and has a canonical encoding.
pub trait BatchRow {
    fn stamp(&mut self, instance_id: &str, seq: u64);
    fn encode(&self) -> Vec<u8>;
    /// Returns the instance id and sequence number of the covering entry.
    fn ledger_key(&self) -> (&str, u64);
}

impl BatchRow for WorkflowRow {
    fn stamp(&mut self, instance_id: &str, seq: u64) {
        instance_id.clone_into(&mut self.ledger_instance_id);
        self.ledger_seq = seq;
    }

    fn encode(&self) -> Vec<u8> {
        super::encoding::encode_workflow_row(self)
    }

    fn ledger_key(&self) -> (&str, u64) {
        (&self.ledger_instance_id, self.ledger_seq)
    }
}

impl BatchRow for RejectedRow {
    fn stamp(&mut self, instance_id: &str, seq: u64) {
        instance_id.clone_into(&mut self.ledger_instance_id);
        self.ledger_seq = seq;
    }

    fn encode(&self) -> Vec<u8> {
        super::encoding::encode_rejected_row(self)
    }

    fn ledger_key(&self) -> (&str, u64) {
        (&self.ledger_instance_id, self.ledger_seq)
    }
}

impl BatchRow for CredentialRow {
    fn stamp(&mut self, instance_id: &str, seq: u64) {
        instance_id.clone_into(&mut self.ledger_instance_id);
        self.ledger_seq = seq;
    }

    fn encode(&self) -> Vec<u8> {
        super::encoding::encode_credential_row(self)
    }

    fn ledger_key(&self) -> (&str, u64) {
        (&self.ledger_instance_id, self.ledger_seq)
    }
}

/// The hash of a batch: SHA-256 over the tag, the table, the row count and
/// the SHA-256 of each row's encoding, sorted, so that it does not depend
/// on the order in which ClickHouse returns the rows.
pub fn batch_hash(table: &str, mut row_digests: Vec<[u8; 32]>) -> String {
    row_digests.sort_unstable();
    let mut encoder = Encoder::new(BATCH_TAG);
    encoder.str(table);
    encoder.u64(row_digests.len() as u64);
    let mut hasher = Sha256::new();
    hasher.update(encoder.finish());
    for digest in &row_digests {
        hasher.update(digest);
    }
    lower_hex(&hasher.finalize())
}

/// SHA-256 of one row's encoding, for [`batch_hash`].
pub fn row_digest(encoding: &[u8]) -> [u8; 32] {
    Sha256::digest(encoding).into()
}

/// `EntryHash`: SHA-256 of the entry's encoding (every column but
/// `EntryHash`, in table order), lower-case hex.
pub fn entry_hash(entry: &LedgerEntryRow) -> String {
    let mut encoder = Encoder::new(ENTRY_TAG);
    encoder.str(&entry.instance_id);
    encoder.u64(entry.seq);
    for text in [&entry.kind, &entry.workflow_id, &entry.root_span_id] {
        encoder.str(text);
    }
    encoder.u32(entry.segment);
    encoder.str(&entry.chain_head);
    encoder.u32(entry.row_count);
    encoder.str(&entry.prev_entry_hash);
    encoder.i64(entry.received_at);
    lower_hex(&Sha256::digest(encoder.finish()))
}

/// A sealed workflow segment waiting for its ledger entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHead {
    pub workflow_id: String,
    pub root_span_id: String,
    pub segment: u32,
    pub chain_head: String,
    pub row_count: u32,
}

impl SegmentHead {
    /// Returns the head of `sealed` when its rows go to `agent_spans`.
    pub fn of(sealed: &crate::assembler::Sealed) -> Option<SegmentHead> {
        let chain = sealed.chain.as_ref()?;
        if sealed.storage != crate::assembler::Storage::Spans || sealed.span_rows.is_empty() {
            return None;
        }
        Some(SegmentHead {
            workflow_id: sealed.workflow.trace_id.to_hex(),
            root_span_id: sealed.workflow.root_span_id.to_hex(),
            segment: sealed.workflow.segment,
            chain_head: chain.head.clone(),
            row_count: chain.row_count,
        })
    }
}

/// An instance's ledger state.
pub struct Ledger {
    instance_id: String,
    next_seq: u64,
    prev_entry_hash: String,
    /// Last entry ClickHouse confirmed, and its hash.
    confirmed: Option<(u64, String)>,
    last_checkpoint_seq: u64,
    last_checkpoint_at: Instant,
    checkpoint_interval: Duration,
    checkpoint_dir: Option<PathBuf>,
    signer: Option<CheckpointSigner>,
}

#[derive(Debug, Row, Deserialize)]
struct LastEntry {
    #[serde(rename = "Seq")]
    seq: u64,
    #[serde(rename = "EntryHash")]
    entry_hash: String,
}

impl Ledger {
    /// Creates a ledger starting at sequence number 1, for tests and
    /// benchmarks.
    pub fn new(instance_id: &str, config: &SealConfig, signer: Option<CheckpointSigner>) -> Self {
        Ledger {
            instance_id: instance_id.to_owned(),
            next_seq: 1,
            prev_entry_hash: GENESIS_HASH.to_owned(),
            confirmed: None,
            last_checkpoint_seq: 0,
            last_checkpoint_at: Instant::now(),
            checkpoint_interval: config.checkpoint_interval,
            checkpoint_dir: config.checkpoint_dir.clone(),
            signer,
        }
    }

    /// Loads the signing key and continues this instance's sequence from
    /// what ClickHouse holds.
    pub async fn open(
        client: &clickhouse::Client,
        config: &SealConfig,
    ) -> Result<Self, LedgerError> {
        let signer = match &config.signing_key_file {
            Some(path) => Some(CheckpointSigner::from_file(path)?),
            None => None,
        };
        let mut ledger = Ledger::new(&config.instance_id, config, signer);
        ledger.resume(client).await?;
        match &ledger.signer {
            Some(signer) => {
                tracing::info!(instance_id = %ledger.instance_id, key_id = signer.key_id(), next_seq = ledger.next_seq, "ledger checkpoints are signed")
            }
            None => {
                tracing::warn!(instance_id = %ledger.instance_id, next_seq = ledger.next_seq, "no signing key (seal.signing_key_file); ledger checkpoints are unsigned, so an auditor cannot tell them from forged ones; create a key with `agent-ledger keygen`")
            }
        }
        Ok(ledger)
    }

    async fn resume(&mut self, client: &clickhouse::Client) -> Result<(), StoreError> {
        let last: Option<LastEntry> = client
            .query("SELECT Seq, EntryHash FROM agent_ledger_entries WHERE InstanceId = ? ORDER BY Seq DESC LIMIT 1")
            .bind(&self.instance_id)
            .fetch_optional()
            .await
            .map_err(classify)?;
        let batch_seq: u64 = client
            .query(
                "SELECT max(Seq) FROM (\
                 SELECT max(LedgerSeq) AS Seq FROM agent_workflows WHERE LedgerInstanceId = ? \
                 UNION ALL SELECT max(LedgerSeq) FROM agent_rejected_spans WHERE LedgerInstanceId = ? \
                 UNION ALL SELECT max(LedgerSeq) FROM agent_credentials WHERE LedgerInstanceId = ?)",
            )
            .bind(&self.instance_id)
            .bind(&self.instance_id)
            .bind(&self.instance_id)
            .fetch_one()
            .await
            .map_err(classify)?;
        self.last_checkpoint_seq = client
            .query("SELECT max(LastSeq) FROM agent_ledger_checkpoints WHERE InstanceId = ?")
            .bind(&self.instance_id)
            .fetch_one()
            .await
            .map_err(classify)?;
        let last_seq = last.as_ref().map(|entry| entry.seq).unwrap_or(0);
        if batch_seq > last_seq {
            tracing::warn!(instance_id = %self.instance_id, last_entry = last_seq, last_batch = batch_seq, "rows were written without their ledger entries (the receiver stopped between the two writes); `agent-ledger verify` reports their sequence numbers as entry_missing");
        }
        if let Some(entry) = last {
            self.prev_entry_hash = entry.entry_hash.clone();
            self.confirmed = Some((entry.seq, entry.entry_hash));
        }
        self.next_seq = last_seq.max(batch_seq) + 1;
        Ok(())
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Reserves the next sequence number for a batch and stamps its rows.
    pub fn stamp<T: BatchRow>(&mut self, rows: &mut [T]) -> u64 {
        let seq = self.reserve();
        for row in rows {
            row.stamp(&self.instance_id, seq);
        }
        seq
    }

    fn reserve(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Makes the entry of batch `seq` (from [`Ledger::stamp`]) over the rows
    /// that ClickHouse stored. Entries must be made in sequence order.
    pub fn batch_entry<T: BatchRow>(
        &mut self,
        seq: u64,
        table: &str,
        stored: &[T],
        now: i64,
    ) -> LedgerEntryRow {
        let digests: Vec<[u8; 32]> = stored.iter().map(|row| row_digest(&row.encode())).collect();
        let hash = batch_hash(table, digests);
        self.entry(seq, table, None, hash, stored.len() as u32, now)
    }

    /// Makes the entry of one sealed workflow segment.
    pub fn segment_entry(&mut self, head: &SegmentHead, now: i64) -> LedgerEntryRow {
        let seq = self.reserve();
        self.entry(
            seq,
            SEGMENT_KIND,
            Some(head),
            head.chain_head.clone(),
            head.row_count,
            now,
        )
    }

    fn entry(
        &mut self,
        seq: u64,
        kind: &str,
        segment: Option<&SegmentHead>,
        chain_head: String,
        row_count: u32,
        now: i64,
    ) -> LedgerEntryRow {
        let mut entry = LedgerEntryRow {
            instance_id: self.instance_id.clone(),
            seq,
            kind: kind.to_owned(),
            workflow_id: segment
                .map(|head| head.workflow_id.clone())
                .unwrap_or_default(),
            root_span_id: segment
                .map(|head| head.root_span_id.clone())
                .unwrap_or_default(),
            segment: segment.map(|head| head.segment).unwrap_or(0),
            chain_head,
            row_count,
            prev_entry_hash: self.prev_entry_hash.clone(),
            entry_hash: String::new(),
            received_at: now,
        };
        entry.entry_hash = entry_hash(&entry);
        self.prev_entry_hash = entry.entry_hash.clone();
        entry
    }

    /// Records entries ClickHouse confirmed, so the next checkpoint covers
    /// them.
    pub fn confirmed(&mut self, entries: &[LedgerEntryRow]) {
        if let Some(last) = entries.iter().max_by_key(|entry| entry.seq) {
            self.confirmed = Some((last.seq, last.entry_hash.clone()));
        }
    }

    /// Makes a signed checkpoint over the entries confirmed since the
    /// previous one, when the interval has passed (or `force`) and there are any. It
    /// is written to the checkpoint folder and logged before it is returned
    /// for ClickHouse.
    pub fn take_checkpoint(&mut self, now: Instant, force: bool) -> Option<CheckpointRow> {
        let due = force || now.duration_since(self.last_checkpoint_at) >= self.checkpoint_interval;
        let (last_seq, last_entry_hash) = self.confirmed.clone()?;
        if !due || last_seq <= self.last_checkpoint_seq {
            return None;
        }
        let mut row = CheckpointRow {
            instance_id: self.instance_id.clone(),
            first_seq: self.last_checkpoint_seq + 1,
            last_seq,
            last_entry_hash,
            signed_at: crate::now_unix_nano(),
            key_id: String::new(),
            signature: String::new(),
        };
        checkpoint::sign(&mut row, self.signer.as_ref());
        self.last_checkpoint_seq = last_seq;
        self.last_checkpoint_at = now;
        self.record_outside(&row);
        Some(row)
    }

    /// Writes the checkpoint file and the log line that keep a checkpoint
    /// outside ClickHouse.
    fn record_outside(&self, row: &CheckpointRow) {
        tracing::info!(
            instance_id = %row.instance_id,
            first_seq = row.first_seq,
            last_seq = row.last_seq,
            last_entry_hash = %row.last_entry_hash,
            signed_at = row.signed_at,
            key_id = %row.key_id,
            signature = %row.signature,
            "ledger checkpoint"
        );
        if let Some(dir) = &self.checkpoint_dir
            && let Err(error) = checkpoint::write_file(dir, row)
        {
            tracing::error!(%error, last_seq = row.last_seq, "writing the checkpoint file failed; the checkpoint is only in ClickHouse and the log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_hash_ignores_row_order() {
        let first = row_digest(b"one");
        let second = row_digest(b"two");
        assert_eq!(
            batch_hash("t", vec![first, second]),
            batch_hash("t", vec![second, first])
        );
        assert_ne!(
            batch_hash("t", vec![first, second]),
            batch_hash("t", vec![first])
        );
        assert_ne!(batch_hash("t", vec![first]), batch_hash("u", vec![first]));
    }

    #[test]
    fn entries_chain_in_sequence() {
        let mut ledger = Ledger::new("a", &SealConfig::default(), None);
        let head = SegmentHead {
            workflow_id: "w".to_owned(),
            root_span_id: "r".to_owned(),
            segment: 0,
            chain_head: "h".to_owned(),
            row_count: 3,
        };
        let first = ledger.segment_entry(&head, 10);
        let second = ledger.segment_entry(&head, 11);
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_entry_hash, GENESIS_HASH);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_entry_hash, first.entry_hash);
        assert_eq!(entry_hash(&second), second.entry_hash);
    }

    #[test]
    fn checkpoint_only_with_new_entries() {
        let mut ledger = Ledger::new("a", &SealConfig::default(), None);
        let now = Instant::now();
        assert!(ledger.take_checkpoint(now, true).is_none());
        let head = SegmentHead {
            workflow_id: "w".to_owned(),
            root_span_id: "r".to_owned(),
            segment: 0,
            chain_head: "h".to_owned(),
            row_count: 1,
        };
        let entry = ledger.segment_entry(&head, 1);
        ledger.confirmed(std::slice::from_ref(&entry));
        assert!(
            ledger.take_checkpoint(now, false).is_none(),
            "the interval has not passed"
        );
        let checkpoint = ledger.take_checkpoint(now, true).unwrap();
        assert_eq!((checkpoint.first_seq, checkpoint.last_seq), (1, 1));
        assert_eq!(checkpoint.last_entry_hash, entry.entry_hash);
        assert!(ledger.take_checkpoint(now, true).is_none());
    }
}
