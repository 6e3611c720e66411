//! The task that drives the [`Assembler`]: takes spans from the receiver,
//! runs completion on a timer, starts recalls, and hands results to the sink.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Assembler, Emitted, Move, Recall};
use crate::clickhouse::sink::{PreparedWorkflow, SinkHandle, SinkInput};
use crate::metrics::Metrics;
use crate::quarantine::RejectedSpan;
use crate::span::{Span, TraceId};
use crate::spool::Spool;
use std::collections::{HashMap, VecDeque};

/// How often completion runs. Completion times are this much late at most,
/// which is small next to the settle time.
pub const TICK: Duration = Duration::from_millis(100);

/// Traces completed before their workflows are handed to the sink. Completed
/// workflows carry their span bodies and rows, so completing every due trace
/// of a burst at once would hold them all in memory; in steps, the sink's
/// queue paces the work. A step runs only when the sink's queue has room for
/// all its workflows. While ClickHouse is slower than the arrivals, due
/// traces therefore wait in the spool, and new requests are still taken
/// instead of waiting behind the sink. A step is half the sink's queue, so
/// that a step does not wait for the queue to drain completely.
const COMPLETIONS_PER_STEP: usize = 64;
const _: () = assert!(2 * COMPLETIONS_PER_STEP <= crate::clickhouse::sink::QUEUE_CAPACITY);

/// Capacity of the assembler's input queue, in requests. Queued requests
/// hold their decoded spans in memory (a few hundred KiB each at the OTel
/// SDK's batch size of 512 spans), so a short queue keeps memory bounded;
/// its requests are already in the spool, so a full queue only delays their
/// acknowledgement.
pub const QUEUE_CAPACITY: usize = 64;

/// Reads quarantined spans back from storage.
pub type RecallFn =
    Arc<dyn Fn(Recall) -> Pin<Box<dyn Future<Output = Vec<Span>> + Send>> + Send + Sync>;

/// One request's worth of checked spans.
#[derive(Debug, Default)]
pub struct Batch {
    pub spans: Vec<Span>,
    pub rejected: Vec<RejectedSpan>,
}

/// Sends batches to the assembler task.
#[derive(Clone)]
pub struct AssemblerHandle {
    sender: mpsc::Sender<Batch>,
}

/// The assembler task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the assembler has stopped")]
pub struct AssemblerStopped;

impl AssemblerHandle {
    /// Queues a batch, waiting while the queue is full.
    pub async fn send(&self, batch: Batch) -> Result<(), AssemblerStopped> {
        self.sender.send(batch).await.map_err(|_| AssemblerStopped)
    }
}

/// Creates the queue feeding the assembler task.
pub fn channel() -> (AssemblerHandle, mpsc::Receiver<Batch>) {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    (AssemblerHandle { sender }, receiver)
}

/// How often the spool is checked for old segments to compact.
const COMPACTION_CHECK: Duration = Duration::from_secs(1);

/// Runs the assembler until every handle is dropped; then completes what it
/// can and returns. Spans still waiting for their root stay in the spool for
/// the next start (without a spool they are quarantined, since nothing else
/// would keep them).
pub async fn run(
    mut assembler: Assembler,
    mut receiver: mpsc::Receiver<Batch>,
    sink: SinkHandle,
    recall: RecallFn,
    metrics: Arc<Metrics>,
    replayed: Vec<Emitted>,
) {
    let (recalled_sender, mut recalled) = mpsc::channel::<(TraceId, Vec<Span>)>(64);
    let mut ticker = tokio::time::interval(TICK);
    let mut compaction = tokio::time::interval(COMPACTION_CHECK);
    let mut out = replayed;
    // Due traces not yet completed, taken in steps when the sink has room.
    let mut due: VecDeque<TraceId> = VecDeque::new();
    loop {
        tokio::select! {
            batch = receiver.recv() => match batch {
                Some(batch) => accept(&mut assembler, batch, &metrics, &mut out),
                None => break,
            },
            Some((trace_id, spans)) = recalled.recv() => {
                assembler.recalled(trace_id, spans, Instant::now().into_std());
            }
            room = sink.room_for(COMPLETIONS_PER_STEP), if !due.is_empty() => {
                if room.is_err() {
                    log_sink_stopped();
                    return;
                }
                let step = due.len().min(COMPLETIONS_PER_STEP);
                let chunk: Vec<TraceId> = due.drain(..step).collect();
                assembler.complete(&chunk, Instant::now().into_std(), &mut out);
                metrics.completion_backlog.set(due.len() as i64);
            }
            _ = ticker.tick() => {
                let now = Instant::now().into_std();
                if due.is_empty() {
                    due.extend(assembler.due(now));
                }
                metrics.completion_backlog.set(due.len() as i64);
                assembler.expire(now);
                for request in assembler.take_recalls(now) {
                    start_recall(request, recall.clone(), recalled_sender.clone());
                }
                metrics.buffered_spans.set(assembler.buffered_spans() as i64);
                metrics.pending_workflows.set(assembler.pending_traces() as i64);
            }
            _ = compaction.tick() => {
                if let Some(spool) = assembler.spool() {
                    compact(&mut assembler, &spool, &metrics).await;
                    report_spool(&spool, &metrics);
                }
            }
        }
        if forward(&sink, &mut out, &metrics).await.is_err() {
            log_sink_stopped();
            return;
        }
    }
    // At shutdown, everything that can be completed is written in steps,
    // because completing a large backlog at once would hold all its bodies
    // and rows in memory.
    let now = Instant::now().into_std();
    let active = assembler.active_traces();
    for chunk in active.chunks(COMPLETIONS_PER_STEP) {
        assembler.flush_traces(chunk, now, &mut out);
        if forward(&sink, &mut out, &metrics).await.is_err() {
            log_sink_stopped();
            return;
        }
    }
    if assembler.spool().is_none() {
        assembler.quarantine_all_waiting(&mut out);
    }
    let _ = forward(&sink, &mut out, &metrics).await;
    tracing::info!("assembler stopped");
}

fn log_sink_stopped() {
    tracing::error!("the ClickHouse sink stopped; the assembler stops");
}

fn accept(assembler: &mut Assembler, batch: Batch, metrics: &Metrics, out: &mut Vec<Emitted>) {
    out.extend(
        batch
            .rejected
            .into_iter()
            .map(|span| Emitted::Rejected(Box::new(span))),
    );
    let intake = assembler.insert(batch.spans, Instant::now().into_std(), out);
    metrics.spans_duplicate.inc_by(intake.duplicates as u64);
    metrics
        .buffered_spans
        .set(assembler.buffered_spans() as i64);
}

/// Receive time and sender, which a spool record holds once for its spans.
type RecordKey = (i64, Arc<str>);

/// Copies waiting spans out of segments older than the compaction age, so
/// that one slow workflow does not keep old segments on disk.
async fn compact(assembler: &mut Assembler, spool: &Spool, metrics: &Metrics) {
    let segments = spool.segments_to_compact();
    if segments.is_empty() {
        return;
    }
    let moves = assembler.spooled_in(&segments);
    let mut groups: HashMap<RecordKey, Vec<(Move, Vec<u8>)>> = HashMap::new();
    for moved in moves {
        match spool.read(&moved.location) {
            Ok(bytes) => {
                let key = (moved.received_at_unix_nano, moved.sender.clone());
                groups.entry(key).or_default().push((moved, bytes));
            }
            Err(error) => {
                tracing::error!(trace_id = %moved.trace_id, span_id = %moved.span_id, %error, "reading a span to copy it forward failed");
            }
        }
    }
    for ((received_at, sender), entries) in groups {
        let blobs: Vec<&[u8]> = entries.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        match spool.append(received_at, &sender, &blobs, &[]).await {
            Ok(appended) => {
                let moves: Vec<Move> = entries.into_iter().map(|(moved, _)| moved).collect();
                let unused = assembler.relocate(&moves, &appended.spans);
                metrics.spool_compacted_spans.inc_by(moves.len() as u64);
                spool.release(unused);
            }
            Err(error) => {
                tracing::warn!(%error, spans = entries.len(), "copying waiting spans forward failed; the old segment stays until the next try");
            }
        }
    }
    spool.trim();
}

fn report_spool(spool: &Spool, metrics: &Metrics) {
    let stats = spool.stats();
    metrics.spool_bytes.set(stats.bytes as i64);
    metrics.spool_segments.set(stats.segments as i64);
    metrics.spool_live_entries.set(stats.live_entries as i64);
    metrics
        .spool_oldest_live_seconds
        .set(stats.oldest_live_age.as_secs() as i64);
    metrics.spool_fsyncs.set(stats.fsyncs as i64);
}

fn start_recall(request: Recall, recall: RecallFn, done: mpsc::Sender<(TraceId, Vec<Span>)>) {
    tokio::spawn(async move {
        let trace_id = request.trace_id;
        let spans = recall(request).await;
        let _ = done.send((trace_id, spans)).await;
    });
}

async fn forward(
    sink: &SinkHandle,
    out: &mut Vec<Emitted>,
    metrics: &Metrics,
) -> Result<(), crate::clickhouse::sink::SinkStopped> {
    let mut rejected = Vec::new();
    for emitted in out.drain(..) {
        match emitted {
            Emitted::Rejected(span) => rejected.push(*span),
            Emitted::Workflow(sealed) => {
                if sealed.workflow.is_late() {
                    metrics.late_segments.inc();
                }
                let prepared = PreparedWorkflow::new(*sealed, crate::now_unix_nano());
                sink.send(SinkInput::Workflow(Box::new(prepared))).await?;
            }
        }
    }
    if !rejected.is_empty() {
        sink.send(SinkInput::Rejected(rejected)).await?;
    }
    Ok(())
}
