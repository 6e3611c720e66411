//! The ClickHouse sink: batches rows per table and writes them with retries.
//!
//! Rows are written in a fixed order (spans, quarantined spans, verdicts,
//! credential issuance records, ledger entries), so that a verdict never
//! names spans that are not stored yet and a ledger entry never covers rows
//! that are not stored yet. After each batch of the middle three tables and
//! for each sealed workflow segment the [`Ledger`] makes an entry. Its
//! signed checkpoints are written on the sink's timer and at shutdown. Each batch
//! carries a deterministic `insert_deduplication_token` derived from the
//! rows' identities, so a batch retried after an ambiguous failure (the
//! server committed, the client saw an error) is stored once. Retryable
//! failures are retried with exponential backoff and jitter and never given
//! up; a batch that fails permanently is split to isolate the offending rows,
//! and an `agent_spans` row that ClickHouse will not take is quarantined with
//! the ClickHouse error as its detail.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use clickhouse::{Row, RowOwned, RowWrite};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::encode::{EncodedSpan, span_insert_sql};
use super::rows::{
    CheckpointRow, CredentialRow, LedgerEntryRow, RejectedRow, WorkflowRow, WorkflowRows,
    workflow_rows,
};
use super::{StoreError, classify};
use crate::assembler::Sealed;
use crate::config::ClickhouseConfig;
use crate::metrics::{Metrics, StatusLabel, TableLabel};
use crate::quarantine::{Reason, RejectedSpan};
use crate::seal::ledger::{BatchRow, Ledger, SegmentHead};
use crate::spool::{Location, Spool};

/// Messages for the sink.
pub enum SinkInput {
    Workflow(Box<PreparedWorkflow>),
    Rejected(Vec<RejectedSpan>),
}

/// A sealed workflow segment as the sink writes it.
pub struct PreparedWorkflow {
    /// Spool locations of its spans, released once its rows are written.
    pub locations: Vec<Location>,
    /// Its segment head, for a ledger entry, when its rows go to
    /// `agent_spans`.
    pub segment: Option<SegmentHead>,
    pub rows: WorkflowRows,
}

impl PreparedWorkflow {
    /// Builds the rows of `sealed`, verdict row included, written at
    /// `written_at`. The assembler task calls this before it queues the
    /// workflow, so that the span bodies are freed where they were
    /// allocated and the sink's queue holds only rows.
    pub fn new(sealed: Sealed, written_at: i64) -> Self {
        let locations = sealed
            .workflow
            .steps
            .iter()
            .filter_map(|step| step.span.spool)
            .collect();
        let segment = SegmentHead::of(&sealed);
        PreparedWorkflow {
            locations,
            segment,
            rows: workflow_rows(sealed, written_at),
        }
    }
}

/// Capacity of the sink's input queue, in messages (mostly workflow
/// segments with their encoded span rows, about 2.5 KB per span of the
/// load generator's shape). The assembler completes due traces only when
/// the queue has room for them, so the queue needs to hold one completion
/// step, not a burst.
pub const QUEUE_CAPACITY: usize = 128;

/// Sends work to the sink.
#[derive(Clone)]
pub struct SinkHandle {
    sender: mpsc::Sender<SinkInput>,
}

impl SinkHandle {
    /// Queues one message; fails only when the sink has stopped.
    pub async fn send(&self, input: SinkInput) -> Result<(), SinkStopped> {
        self.sender.send(input).await.map_err(|_| SinkStopped)
    }

    /// Waits until the sink's queue has room for `count` messages, at most
    /// its capacity. Returns an error only when the sink has stopped.
    pub async fn room_for(&self, count: usize) -> Result<(), SinkStopped> {
        let count = count.min(self.sender.max_capacity());
        self.sender
            .reserve_many(count)
            .await
            .map(drop)
            .map_err(|_| SinkStopped)
    }
}

/// The sink task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the ClickHouse sink has stopped")]
pub struct SinkStopped;

/// A table row the sink can write.
pub trait SinkRow: InsertRows + Clone + Send + Sync + 'static {
    /// The row's identity, hashed into the batch's deduplication token.
    fn identity(&self, hasher: &mut Sha256);

    /// The quarantine row to write instead when ClickHouse rejects this row.
    fn quarantine(&self, _error: &StoreError) -> Option<RejectedRow> {
        None
    }
}

/// Row types that can be sent to ClickHouse as one INSERT. Types that
/// implement the crate's `Row` go through its serializer, and
/// [`EncodedSpan`] is sent as it is.
pub trait InsertRows: Sized {
    /// Sends `rows` as the INSERT `request` describes.
    fn insert(
        request: InsertRequest<'_>,
        rows: &[Self],
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send;
}

impl<T> InsertRows for T
where
    T: Row + RowOwned + RowWrite + Serialize + Send + Sync,
    T: for<'b> Row<Value<'b> = T>,
{
    fn insert(
        request: InsertRequest<'_>,
        rows: &[Self],
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send {
        request.serialized(rows)
    }
}

/// One INSERT of a batch: where it goes and its settings.
pub struct InsertRequest<'a> {
    client: &'a clickhouse::Client,
    table: &'a str,
    token: &'a str,
    timeout: Duration,
}

/// Bytes of encoded rows sent as one compressed block.
const SEND_CHUNK: usize = 256 * 1024;

impl<'a> InsertRequest<'a> {
    /// Creates an INSERT into `table` through `client`, deduplicated by
    /// `token`.
    pub fn new(
        client: &'a clickhouse::Client,
        table: &'a str,
        token: &'a str,
        timeout: Duration,
    ) -> Self {
        InsertRequest {
            client,
            table,
            token,
            timeout,
        }
    }

    /// Inserts rows through the crate's serializer, which checks them
    /// against the table's schema.
    async fn serialized<T>(self, rows: &[T]) -> Result<(), clickhouse::error::Error>
    where
        T: Row + RowOwned + RowWrite + Serialize + Send + Sync,
        T: for<'b> Row<Value<'b> = T>,
    {
        let mut insert = self
            .client
            .insert::<T>(self.table)
            .await?
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", self.token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }

    /// Inserts span rows already encoded in RowBinary, in blocks of about
    /// [`SEND_CHUNK`] bytes.
    async fn encoded(self, rows: &[EncodedSpan]) -> Result<(), clickhouse::error::Error> {
        let mut insert = self
            .client
            .insert_formatted_with(span_insert_sql(self.table))
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", self.token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let mut chunk = BytesMut::new();
        for row in rows {
            if !chunk.is_empty() && chunk.len() + row.0.len() > SEND_CHUNK {
                insert.send(chunk.split().freeze()).await?;
            }
            if chunk.capacity() == 0 {
                chunk.reserve(SEND_CHUNK.max(row.0.len()));
            }
            chunk.extend_from_slice(&row.0);
        }
        if !chunk.is_empty() {
            insert.send(chunk.freeze()).await?;
        }
        insert.end().await
    }
}

impl SinkRow for EncodedSpan {
    fn identity(&self, hasher: &mut Sha256) {
        match self.identity() {
            Ok((trace_id, span_id, segment)) => {
                hasher.update(trace_id);
                hasher.update(span_id);
                hasher.update(segment.to_le_bytes());
            }
            // Unreachable for rows of the encoder; the whole row still
            // identifies it.
            Err(_) => hasher.update(&self.0),
        }
    }

    fn quarantine(&self, error: &StoreError) -> Option<RejectedRow> {
        self.rejected(Reason::ClickhouseRejected, error.to_string())
            .inspect_err(|malformed| tracing::error!(%malformed, "cannot quarantine a span row"))
            .ok()
    }
}

impl InsertRows for EncodedSpan {
    fn insert(
        request: InsertRequest<'_>,
        rows: &[Self],
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send {
        request.encoded(rows)
    }
}

impl SinkRow for RejectedRow {
    fn identity(&self, hasher: &mut Sha256) {
        hasher.update(self.trace_id.as_bytes());
        hasher.update(self.span_id.as_bytes());
        hasher.update(self.reason.as_bytes());
        hasher.update(self.received_at.to_le_bytes());
    }
}

impl SinkRow for WorkflowRow {
    fn identity(&self, hasher: &mut Sha256) {
        hasher.update(self.workflow_id.as_bytes());
        hasher.update(self.root_span_id.as_bytes());
        hasher.update(self.revision.to_le_bytes());
    }
}

impl SinkRow for CredentialRow {
    fn identity(&self, hasher: &mut Sha256) {
        hasher.update(self.credential_id.as_bytes());
        hasher.update(self.workflow_id.as_bytes());
        hasher.update(self.span_id.as_bytes());
    }
}

impl SinkRow for LedgerEntryRow {
    fn identity(&self, hasher: &mut Sha256) {
        hasher.update(self.instance_id.as_bytes());
        hasher.update(self.seq.to_le_bytes());
    }
}

impl SinkRow for CheckpointRow {
    fn identity(&self, hasher: &mut Sha256) {
        hasher.update(self.instance_id.as_bytes());
        hasher.update(self.last_seq.to_le_bytes());
    }
}

/// The deduplication token of a batch: SHA-256 over the table name and the
/// rows' identities, in order.
pub fn deduplication_token<T: SinkRow>(table: &str, rows: &[T]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(table.as_bytes());
    for row in rows {
        row.identity(&mut hasher);
    }
    crate::span::lower_hex(&hasher.finalize())
}

/// Rows waiting to be written.
#[derive(Default)]
struct Batches {
    spans: Vec<EncodedSpan>,
    rejected: Vec<RejectedRow>,
    workflows: Vec<WorkflowRow>,
    /// Spool locations of the spans behind these rows, released once every
    /// row is written.
    locations: Vec<Location>,
    credentials: Vec<CredentialRow>,
    /// Sealed segments of the span rows, for their ledger entries.
    segments: Vec<SegmentHead>,
    oldest: Option<Instant>,
}

impl Batches {
    fn len(&self) -> usize {
        self.spans.len() + self.rejected.len() + self.workflows.len() + self.credentials.len()
    }
}

/// The rows one write stored.
struct Written<T> {
    stored: Vec<T>,
}

/// The sink task.
pub struct Sink {
    client: clickhouse::Client,
    config: ClickhouseConfig,
    metrics: Arc<Metrics>,
    batches: Batches,
    spool: Option<Arc<Spool>>,
    ledger: Ledger,
}

impl Sink {
    /// A sink writing through `client`; returns the handle to feed it.
    pub fn new(
        client: clickhouse::Client,
        config: ClickhouseConfig,
        metrics: Arc<Metrics>,
        ledger: Ledger,
    ) -> (Sink, SinkHandle, mpsc::Receiver<SinkInput>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let sink = Sink {
            client,
            config,
            metrics,
            batches: Batches::default(),
            ledger,
            spool: None,
        };
        (sink, SinkHandle { sender }, receiver)
    }

    /// Releases the spool locations of written rows in `spool`, and deletes
    /// the segments that no longer hold anything live.
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Runs until every handle is dropped, then writes what is left.
    pub async fn run(mut self, mut receiver: mpsc::Receiver<SinkInput>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                input = receiver.recv() => match input {
                    Some(input) => self.accept(input).await,
                    None => break,
                },
                _ = ticker.tick() => {
                    self.flush_if_due().await;
                    self.checkpoint(false).await;
                }
            }
        }
        self.flush().await;
        self.checkpoint(true).await;
        tracing::info!("ClickHouse sink stopped");
    }

    async fn accept(&mut self, input: SinkInput) {
        let now = Instant::now();
        match input {
            SinkInput::Workflow(prepared) => {
                let PreparedWorkflow {
                    locations,
                    segment,
                    rows,
                } = *prepared;
                self.batches.locations.extend(locations);
                self.batches.segments.extend(segment);
                self.batches.spans.extend(rows.spans);
                self.batches.rejected.extend(rows.rejected);
                self.batches.workflows.extend(rows.workflow);
                self.batches.credentials.extend(rows.credentials);
            }
            SinkInput::Rejected(spans) => {
                let locations = spans.iter().filter_map(|span| span.location);
                self.batches.locations.extend(locations);
                self.batches
                    .rejected
                    .extend(spans.into_iter().map(RejectedRow::new));
            }
        }
        self.batches.oldest.get_or_insert(now);
        self.metrics.sink_queue_rows.set(self.batches.len() as i64);
        if self.batches.len() >= self.config.batch_rows {
            self.flush().await;
        }
    }

    async fn flush_if_due(&mut self) {
        let due = self
            .batches
            .oldest
            .is_some_and(|oldest| oldest.elapsed() >= self.config.batch_interval);
        if due {
            self.flush().await;
        }
    }

    /// Writes every batch, in the fixed table order, then their ledger
    /// entries.
    async fn flush(&mut self) {
        let batches = std::mem::take(&mut self.batches);
        let now = crate::now_unix_nano();
        let mut entries = Vec::new();
        let mut quarantined = Vec::new();
        if !batches.spans.is_empty() {
            let written = self
                .write("agent_spans", batches.spans, &mut quarantined)
                .await;
            self.metrics
                .spans_stored
                .inc_by(written.stored.len() as u64);
        }
        let mut rejected_rows = batches.rejected;
        rejected_rows.extend(quarantined);
        if !rejected_rows.is_empty() {
            let counts = reason_counts(&rejected_rows);
            self.write_covered("agent_rejected_spans", rejected_rows, now, &mut entries)
                .await;
            for (reason, count) in counts {
                self.metrics.rejected(reason).inc_by(count);
            }
        }
        if !batches.workflows.is_empty() {
            let statuses: Vec<String> = batches
                .workflows
                .iter()
                .map(|row| row.status.clone())
                .collect();
            self.write_covered("agent_workflows", batches.workflows, now, &mut entries)
                .await;
            for status in statuses {
                self.metrics
                    .workflows
                    .get_or_create(&StatusLabel { status })
                    .inc();
            }
        }
        if !batches.credentials.is_empty() {
            self.write_covered("agent_credentials", batches.credentials, now, &mut entries)
                .await;
        }
        for head in &batches.segments {
            entries.push(self.ledger.segment_entry(head, now));
        }
        if !entries.is_empty() {
            let written = self
                .write("agent_ledger_entries", entries, &mut Vec::new())
                .await;
            self.ledger.confirmed(&written.stored);
        }
        self.metrics.sink_queue_rows.set(0);
        if let Some(spool) = &self.spool {
            spool.release(batches.locations);
            spool.trim();
        }
    }

    /// Writes a batch that a ledger entry covers, and makes the entry over
    /// the rows ClickHouse stored.
    async fn write_covered<T: SinkRow + BatchRow>(
        &mut self,
        table: &'static str,
        mut rows: Vec<T>,
        now: i64,
        entries: &mut Vec<LedgerEntryRow>,
    ) {
        let seq = self.ledger.stamp(&mut rows);
        let written = self.write(table, rows, &mut Vec::new()).await;
        entries.push(self.ledger.batch_entry(seq, table, &written.stored, now));
    }

    /// Writes a checkpoint when one is due (`force` at shutdown).
    async fn checkpoint(&mut self, force: bool) {
        let now = Instant::now().into_std();
        if let Some(row) = self.ledger.take_checkpoint(now, force) {
            self.write("agent_ledger_checkpoints", vec![row], &mut Vec::new())
                .await;
        }
    }

    /// Writes `rows` to `table`, retrying until ClickHouse confirms. Rows it
    /// rejects permanently are isolated; their quarantine rows are added to
    /// `quarantined`. Returns the rows stored.
    async fn write<T: SinkRow>(
        &self,
        table: &'static str,
        rows: Vec<T>,
        quarantined: &mut Vec<RejectedRow>,
    ) -> Written<T> {
        let mut pending = vec![rows];
        let mut stored = Vec::new();
        while let Some(batch) = pending.pop() {
            match self.write_with_retries(table, &batch).await {
                Ok(()) => {
                    self.metrics
                        .rows_written
                        .get_or_create(&TableLabel {
                            table: table.to_owned(),
                        })
                        .inc_by(batch.len() as u64);
                    stored.extend(batch);
                }
                Err(error) if batch.len() > 1 => {
                    tracing::warn!(table, rows = batch.len(), code = error.code(), %error, "ClickHouse rejected a batch; splitting it to isolate the rows it rejects");
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
                Err(error) => match batch[0].quarantine(&error) {
                    Some(row) => {
                        tracing::error!(table, code = error.code(), %error, trace_id = %row.trace_id, span_id = %row.span_id, "ClickHouse rejected a row; it is quarantined");
                        quarantined.push(row);
                    }
                    None => {
                        tracing::error!(table, code = error.code(), %error, "ClickHouse rejected a row and it cannot be quarantined; it is lost");
                    }
                },
            }
        }
        Written { stored }
    }

    async fn write_with_retries<T: SinkRow>(
        &self,
        table: &'static str,
        rows: &[T],
    ) -> Result<(), StoreError> {
        let token = deduplication_token(table, rows);
        let mut delay = self.config.retry_initial;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.insert_once(table, rows, &token).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    let label = TableLabel {
                        table: table.to_owned(),
                    };
                    self.metrics.insert_failures.get_or_create(&label).inc();
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    self.metrics.insert_retries.get_or_create(&label).inc();
                    self.metrics
                        .insert_retries_by_code
                        .get_or_create(&crate::metrics::CodeLabel {
                            code: error.code().to_owned(),
                        })
                        .inc();
                    tracing::warn!(table, rows = rows.len(), attempt, code = error.code(), %error, retry_in = ?delay, "ClickHouse insert failed; retrying");
                    tokio::time::sleep(with_jitter(delay)).await;
                    delay = (delay * 2).min(self.config.retry_max);
                }
            }
        }
    }

    async fn insert_once<T: SinkRow>(
        &self,
        table: &str,
        rows: &[T],
        token: &str,
    ) -> Result<(), StoreError> {
        let request = InsertRequest::new(&self.client, table, token, self.config.timeout);
        T::insert(request, rows).await.map_err(classify)
    }
}

fn reason_counts(rows: &[RejectedRow]) -> Vec<(Reason, u64)> {
    Reason::ALL
        .iter()
        .map(|reason| {
            let count = rows
                .iter()
                .filter(|row| row.reason == reason.code())
                .count() as u64;
            (*reason, count)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Up to 25% random extra delay, so many receivers do not retry in step.
fn with_jitter(delay: Duration) -> Duration {
    let extra = rand::rng().random_range(0.0..0.25);
    delay.mul_f64(1.0 + extra)
}
