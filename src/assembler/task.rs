//! The task that drives the [`Assembler`]: takes spans from the receiver,
//! runs completion on a timer, starts recalls, and hands results to the sink.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Assembler, Emitted, Recall};
use crate::clickhouse::sink::{SinkHandle, SinkInput};
use crate::metrics::Metrics;
use crate::quarantine::RejectedSpan;
use crate::span::{Span, TraceId};

/// How often completion runs. Completion times are this much late at most,
/// which is small next to the settle time.
pub const TICK: Duration = Duration::from_millis(100);

/// Capacity of the assembler's input queue, in requests.
pub const QUEUE_CAPACITY: usize = 1024;

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

/// Runs the assembler until every handle is dropped; then completes what it
/// can, quarantines what still waits for a root, and returns.
pub async fn run(
    mut assembler: Assembler,
    mut receiver: mpsc::Receiver<Batch>,
    sink: SinkHandle,
    recall: RecallFn,
    metrics: Arc<Metrics>,
) {
    let (recalled_sender, mut recalled) = mpsc::channel::<(TraceId, Vec<Span>)>(64);
    let mut ticker = tokio::time::interval(TICK);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            batch = receiver.recv() => match batch {
                Some(batch) => accept(&mut assembler, batch, &metrics, &mut out),
                None => break,
            },
            Some((trace_id, spans)) = recalled.recv() => {
                assembler.recalled(trace_id, spans, Instant::now().into_std());
            }
            _ = ticker.tick() => {
                let now = Instant::now().into_std();
                assembler.tick(now, &mut out);
                for request in assembler.take_recalls(now) {
                    start_recall(request, recall.clone(), recalled_sender.clone());
                }
                metrics.buffered_spans.set(assembler.buffered_spans() as i64);
                metrics.pending_workflows.set(assembler.pending_traces() as i64);
            }
        }
        if forward(&sink, &mut out, &metrics).await.is_err() {
            tracing::error!("the ClickHouse sink stopped; the assembler stops");
            return;
        }
    }
    let now = Instant::now().into_std();
    assembler.flush(now, &mut out);
    assembler.quarantine_all_waiting(&mut out);
    let _ = forward(&sink, &mut out, &metrics).await;
    tracing::info!("assembler stopped");
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
                sink.send(SinkInput::Sealed(sealed)).await?;
            }
        }
    }
    if !rejected.is_empty() {
        sink.send(SinkInput::Rejected(rejected)).await?;
    }
    Ok(())
}
