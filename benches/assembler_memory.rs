//! Heap bytes the assembler keeps per span, on the load generator's
//! agent-shaped workflows (8 spans each).
//!
//! Four figures, counted by a global allocator that tracks live bytes:
//!
//! - `waiting_bytes_per_span`: spans whose bodies are in the spool and
//!   wait for their workflow to settle. The receiver's peak memory under
//!   load is about this figure times `assembler.max_buffered_spans`.
//! - `retained_bytes_per_span`: spans whose workflow was written, kept for
//!   duplicates and late spans, up to `assembler.max_retained_spans`.
//! - `sealed_bytes_per_span`: sealed workflows on their way to the sink,
//!   each span read back from its own spool buffer as in production. The
//!   sink's input queue takes up to 128 such workflows.
//! - `row_bytes_per_span`: the `agent_spans` rows the sink batches, encoded
//!   in RowBinary, up to `clickhouse.batch_rows` of them.
//!
//! The figures are requested bytes; the allocator in production adds its
//! own overhead on top.
//!
//! ```text
//! cargo bench --bench assembler_memory [-- SPANS]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use agent_ledger::assembler::Emitted;
use agent_ledger::assembler::{Assembler, Limits};
use agent_ledger::clickhouse::rows::workflow_rows;
use agent_ledger::loadgen::{Shape, Templates};
use agent_ledger::otlp::ExportTraceServiceRequest;
use agent_ledger::preset::Resolver;
use agent_ledger::receiver::convert::{RequestContext, SpoolDecoder, convert_request};
use agent_ledger::span::Span;
use agent_ledger::spool::Location;
use agent_ledger::validate::Policy;
use prost::Message;

/// Counts the bytes currently allocated through it.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WORKFLOWS_PER_REQUEST: usize = 50;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn limits() -> Limits {
    Limits {
        settle: Duration::from_secs(3600),
        root_wait: Duration::from_secs(3600),
        max_buffered_spans: usize::MAX,
        max_buffered_bytes: usize::MAX,
        max_retained_spans: usize::MAX,
        attributes: Default::default(),
    }
}

/// Converted spans of `requests` export requests, as the receiver hands
/// them to the assembler.
fn spans(requests: u64) -> Vec<Span> {
    let context = context();
    let templates = Templates::new(
        &Shape::default(),
        WORKFLOWS_PER_REQUEST,
        0.0,
        1_796_000_000_000_000_000,
    );
    let mut spans = Vec::new();
    let mut bytes = Vec::new();
    for index in 0..requests {
        bytes.clear();
        templates.render(0x5eed, index, &mut bytes);
        let request = ExportTraceServiceRequest::decode(bytes::Bytes::copy_from_slice(&bytes))
            .expect("the request decodes");
        spans.extend(convert_request(request, &context).spans);
    }
    spans
}

fn context() -> RequestContext {
    RequestContext {
        received_at_unix_nano: 1_796_000_000_000_000_000,
        sender: Arc::from("bench"),
        limits: Default::default(),
    }
}

fn main() {
    let requested: u64 = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse().expect("SPANS is a number"))
        .unwrap_or(200_000);
    let spans_per_request = spans(1).len() as u64;
    let requests = requested.div_ceil(spans_per_request);
    let now = Instant::now();

    // Waiting: every span's body is in the spool, so the assembler keeps
    // only its metadata and location. Counting starts before the spans are
    // made: the assembler consumes them, so what stays is its own.
    let mut assembler = Assembler::new(limits(), Policy::default(), Resolver::default());
    let mut out = Vec::new();
    let before = live();
    let mut waiting = spans(requests);
    for (index, span) in waiting.iter_mut().enumerate() {
        span.spool = Some(Location {
            segment: 1 + index as u64 / 65_536,
            offset: (index as u64 % 65_536) * 1_200,
            len: 1_200,
            crc: index as u32,
        });
    }
    let count = waiting.len() as isize;
    assembler.insert(waiting, now, &mut out);
    let waiting_bytes = live() - before;
    assert_eq!(assembler.buffered_spans() as isize, count);
    drop(assembler);
    drop(out);

    // Retained: spans held in memory, then written, so that only what is
    // kept after a workflow is written stays.
    let mut assembler = Assembler::new(limits(), Policy::default(), Resolver::default());
    let mut out = Vec::new();
    let before = live();
    let retained = spans(requests);
    assembler.insert(retained, now, &mut out);
    assembler.flush(now, &mut out);
    drop(out);
    let retained_bytes = live() - before;
    assert_eq!(assembler.buffered_spans(), 0);

    drop(assembler);

    // Sealed workflows and their rows, from spans that each own the buffer
    // they were read back from, as after a spool read.
    let before = live();
    let context = context();
    let mut decoder = SpoolDecoder::default();
    let read_back: Vec<Span> = spans(requests)
        .into_iter()
        .map(|span| {
            let raw = bytes::Bytes::copy_from_slice(&span.raw);
            decoder
                .decode(raw, &context, Some(span.content_hash))
                .expect("the span decodes")
        })
        .collect();
    let mut assembler = Assembler::new(limits(), Policy::default(), Resolver::default());
    let mut out = Vec::new();
    assembler.insert(read_back, now, &mut out);
    assembler.flush(now, &mut out);
    drop(assembler);
    let sealed_bytes = live() - before;
    let mut rows = Vec::new();
    for emitted in out {
        if let Emitted::Workflow(sealed) = emitted {
            rows.extend(workflow_rows(*sealed, 0).spans);
        }
    }
    rows.shrink_to_fit();
    let row_bytes = live() - before;
    assert_eq!(rows.len() as isize, count, "every span has a row");

    println!(
        "spans={count} waiting_bytes_per_span={} retained_bytes_per_span={} \
         sealed_bytes_per_span={} row_bytes_per_span={}",
        waiting_bytes / count,
        retained_bytes / count,
        sealed_bytes / count,
        row_bytes / count
    );
}
