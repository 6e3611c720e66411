//! Criterion benchmarks of the receiver's per-span work, on the load
//! generator's agent-shaped spans (8 spans per workflow, 15 to 25
//! attributes, about 1 KB each, 5% invalid workflows).
//!
//! Each stage is measured alone and then all of them together. Throughput
//! is reported per span. `rowbinary` writes the span rows to the
//! `clickhouse` crate's in-process mock server over loopback HTTP: `encoded`
//! as the receiver does (its own RowBinary encoder, LZ4), `lz4` and
//! `uncompressed` with the crate's serializer, which the receiver uses for
//! the other tables. The mock turns the crate's schema validation off,
//! whereas the receiver's inserts of the other tables run it
//! (`RowBinaryWithNamesAndTypes`).
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_ledger::assembler::{Assembler, Emitted, Limits, Sealed, Storage};
use agent_ledger::clickhouse::encode::{EncodedSpan, encode_stored_rows};
use agent_ledger::clickhouse::rows::{RejectedRow, SpanRow, WorkflowRow, span_rows, workflow_rows};
use agent_ledger::clickhouse::sink::{InsertRequest, InsertRows};
use agent_ledger::loadgen::{Shape, Templates};
use agent_ledger::otlp::ExportTraceServiceRequest;
use agent_ledger::preset::{ORIGIN_TYPE, Resolver};
use agent_ledger::receiver::convert::{
    ArrivalKeys, RequestContext, SpoolDecoder, convert_encoded, convert_request,
};
use agent_ledger::redact::Redactor;
use agent_ledger::span::Span;
use agent_ledger::validate::{self, Policy, root_reasons};
use bytes::Bytes;
use clickhouse::test::{Mock, handlers};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

/// Workflows per export request, as the load generator sends by default.
const WORKFLOWS_PER_REQUEST: usize = 50;
/// Requests in the batch that `rowbinary` and `together` process, so that
/// one insert carries 4,000 span rows as a sink batch does.
const REQUESTS_PER_BATCH: u64 = 10;
const INVALID_FRACTION: f64 = 0.05;

/// Everything the stages consume, prepared once.
struct Fixture {
    /// Encoded requests, held as `Bytes` as tonic and the spool hand them
    /// to prost, so that decoding shares the buffer.
    requests: Vec<Bytes>,
    decoded: ExportTraceServiceRequest,
    context: RequestContext,
    spans: Vec<Span>,
    resolver: Resolver,
    policy: Policy,
    sealed: Vec<Sealed>,
    /// The chained `agent_spans` rows of a batch, before encoding.
    span_rows: Vec<SpanRow>,
    /// A redactor that is turned off: `together` leaves redaction out, as
    /// in earlier runs.
    unredacted: Redactor,
}

impl Fixture {
    fn new() -> Fixture {
        let templates = Templates::new(
            &Shape::default(),
            WORKFLOWS_PER_REQUEST,
            INVALID_FRACTION,
            1_796_000_000_000_000_000,
        );
        let requests: Vec<Bytes> = (0..REQUESTS_PER_BATCH)
            .map(|index| {
                let mut bytes = Vec::new();
                templates.render(0x5eed, index, &mut bytes);
                Bytes::from(bytes)
            })
            .collect();
        let decoded =
            ExportTraceServiceRequest::decode(requests[0].clone()).expect("the request decodes");
        let context = RequestContext {
            received_at_unix_nano: 1_796_000_000_000_000_000,
            sender: Arc::from(""),
            limits: Default::default(),
        };
        let spans = convert_request(decoded.clone(), &context).spans;
        let resolver = Resolver::default();
        let policy = Policy::default();
        let sealed = assemble(spans.clone(), &resolver, &policy);
        let span_rows = batch_span_rows(&requests, &context, &resolver, &policy);
        Fixture {
            requests,
            decoded,
            context,
            spans,
            resolver,
            policy,
            sealed,
            span_rows,
            unredacted: Redactor::new(&agent_ledger::config::RedactConfig {
                enabled: false,
                ..Default::default()
            })
            .expect("the built-in patterns compile"),
        }
    }

    fn spans_per_request(&self) -> u64 {
        self.spans.len() as u64
    }
}

/// Returns the assembler's limits with the default configuration's values.
fn limits() -> Limits {
    Limits {
        settle: Duration::from_secs(10),
        root_wait: Duration::from_secs(600),
        max_buffered_spans: 1_000_000,
        max_buffered_bytes: 1 << 30,
        max_retained_spans: 2_000_000,
        attributes: Default::default(),
    }
}

/// Runs spans through the assembler (presets, grouping, validation,
/// linking) and returns the sealed workflows.
fn assemble(spans: Vec<Span>, resolver: &Resolver, policy: &Policy) -> Vec<Sealed> {
    let mut assembler = Assembler::new(limits(), policy.clone(), resolver.clone());
    let mut out = Vec::new();
    let now = Instant::now();
    assembler.insert(spans, now, &mut out);
    assembler.flush(now, &mut out);
    out.into_iter()
        .filter_map(|emitted| match emitted {
            Emitted::Workflow(sealed) => Some(*sealed),
            Emitted::Rejected(_) => None,
        })
        .collect()
}

fn batch_span_rows(
    requests: &[Bytes],
    context: &RequestContext,
    resolver: &Resolver,
    policy: &Policy,
) -> Vec<SpanRow> {
    let mut rows = Vec::new();
    for bytes in requests {
        let request =
            ExportTraceServiceRequest::decode(bytes.clone()).expect("the request decodes");
        for sealed in assemble(convert_request(request, context).spans, resolver, policy) {
            if sealed.storage != Storage::Spans {
                continue;
            }
            let chain = sealed
                .chain
                .as_ref()
                .expect("sealed workflows have a chain");
            let mut workflow_rows = span_rows(&sealed);
            agent_ledger::seal::chain_rows(&mut workflow_rows, &chain.header_hash);
            rows.extend(workflow_rows);
        }
    }
    rows
}

/// Runs the receiver's check of each root's own attributes.
fn check_roots(spans: &[Span], policy: &Policy) -> usize {
    spans
        .iter()
        .filter(|span| span.attributes.get(ORIGIN_TYPE).is_some())
        .map(|span| root_reasons(policy, span).len())
        .sum()
}

/// Rows of one batch, by table.
#[derive(Default)]
struct BatchRows {
    spans: Vec<EncodedSpan>,
    rejected: Vec<RejectedRow>,
    workflows: Vec<WorkflowRow>,
}

/// Runs every stage from the request bytes to the rows, for one batch.
fn process_batch(fixture: &Fixture) -> BatchRows {
    let mut rows = BatchRows::default();
    for bytes in &fixture.requests {
        // No spool here, so every attribute is kept.
        let (converted, _) =
            convert_encoded(bytes.clone(), &fixture.unredacted, None, &fixture.context)
                .expect("the request decodes");
        black_box(check_roots(&converted.spans, &fixture.policy));
        for sealed in assemble(converted.spans, &fixture.resolver, &fixture.policy) {
            let built = workflow_rows(sealed.clone(), 0);
            rows.spans.extend(built.spans);
            rows.rejected.extend(built.rejected);
            rows.workflows.extend(built.workflow);
        }
    }
    rows
}

/// Encodes `rows` as the sealer does, a workflow of the load generator's
/// shape (8 spans) at a time.
fn encode_by_workflow(rows: &[SpanRow]) -> Vec<EncodedSpan> {
    rows.chunks(8).flat_map(encode_stored_rows).collect()
}

/// Inserts encoded span rows as the sink does.
async fn insert_encoded(client: &clickhouse::Client, mock: &Mock, rows: &[EncodedSpan]) {
    mock.add(handlers::record_ddl());
    let request = InsertRequest::new(client, "agent_spans", "bench", Duration::from_secs(10));
    EncodedSpan::insert(request, rows)
        .await
        .expect("the mock accepts the insert");
}

async fn insert<T>(client: &clickhouse::Client, mock: &Mock, table: &str, rows: &[T])
where
    T: clickhouse::RowOwned + clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
{
    if rows.is_empty() {
        return;
    }
    mock.add(handlers::record_ddl());
    let mut insert = client.insert::<T>(table).await.expect("the insert starts");
    for row in rows {
        insert.write(row).await.expect("the row is written");
    }
    insert.end().await.expect("the mock accepts the insert");
}

fn mock_client(mock: &Mock, compression: clickhouse::Compression) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(mock.url())
        .with_compression(compression)
}

fn stages(c: &mut Criterion) {
    let fixture = Fixture::new();
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Elements(fixture.spans_per_request()));

    group.bench_function("decode", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(black_box(fixture.requests[0].clone())).unwrap()
        })
    });

    group.bench_function("convert", |b| {
        b.iter_batched(
            || fixture.decoded.clone(),
            |request| convert_request(request, &fixture.context),
            BatchSize::LargeInput,
        )
    });

    // The receiver's whole per-request work before the spool: redaction
    // and the per-span checks, from the encoded request as gRPC hands it
    // over, and the same through prost's types as OTLP/JSON takes it.
    // A receiver with a spool keeps only the attributes read on arrival
    // (`receive`); `receive_all` keeps every attribute, as without one.
    let redactor = Redactor::new(&Default::default()).expect("the built-in patterns compile");
    let keys = ArrivalKeys::new(&fixture.resolver);
    for (name, keys) in [("receive", Some(&keys)), ("receive_all", None)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                convert_encoded(
                    black_box(fixture.requests[0].clone()),
                    &redactor,
                    keys,
                    &fixture.context,
                )
                .unwrap()
            })
        });
    }
    group.bench_function("receive_decoded", |b| {
        b.iter(|| {
            let mut request =
                ExportTraceServiceRequest::decode(black_box(fixture.requests[0].clone())).unwrap();
            let redactions = redactor.redact_request(&mut request);
            (convert_request(request, &fixture.context), redactions)
        })
    });

    group.bench_function("read_back", |b| {
        b.iter(|| {
            let mut decoder = SpoolDecoder::default();
            fixture
                .spans
                .iter()
                .filter_map(|span| {
                    decoder.decode(span.raw.clone(), &fixture.context, Some(span.content_hash))
                })
                .count()
        })
    });

    group.bench_function("root_checks", |b| {
        b.iter(|| check_roots(black_box(&fixture.spans), &fixture.policy))
    });

    group.bench_function("resolve", |b| {
        b.iter(|| {
            fixture
                .spans
                .iter()
                .map(|span| fixture.resolver.resolve(span))
                .collect::<Vec<_>>()
        })
    });

    group.bench_function("validate", |b| {
        b.iter(|| {
            let verdicts: Vec<_> = fixture
                .sealed
                .iter()
                .map(|sealed| validate::evaluate(&sealed.workflow, &fixture.policy))
                .collect();
            verdicts
        })
    });

    group.bench_function("link", |b| {
        let written = HashSet::new();
        b.iter(|| {
            fixture
                .sealed
                .iter()
                .map(|sealed| agent_ledger::link::link(&sealed.workflow, &written))
                .collect::<Vec<_>>()
        })
    });

    group.bench_function("assemble", |b| {
        b.iter_batched(
            || fixture.spans.clone(),
            |spans| assemble(spans, &fixture.resolver, &fixture.policy),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("rows", |b| {
        b.iter(|| {
            fixture
                .sealed
                .iter()
                .map(|sealed| workflow_rows(sealed.clone(), 0))
                .map(|rows| rows.spans.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// Builds the single-threaded runtime that drives the mock server inserts.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn rowbinary(c: &mut Criterion) {
    let fixture = Fixture::new();
    let runtime = current_thread_runtime();
    let _guard = runtime.enter();
    let mock = Mock::new();
    let mut group = c.benchmark_group("rowbinary");
    group.throughput(Throughput::Elements(fixture.span_rows.len() as u64));
    group.bench_function("encode_only", |b| {
        b.iter(|| encode_by_workflow(&fixture.span_rows))
    });
    let client = mock_client(&mock, clickhouse::Compression::Lz4);
    group.bench_function("encoded", |b| {
        b.iter(|| {
            let encoded = encode_by_workflow(&fixture.span_rows);
            runtime.block_on(insert_encoded(&client, &mock, &encoded))
        })
    });
    for (name, compression) in [
        ("lz4", clickhouse::Compression::Lz4),
        ("uncompressed", clickhouse::Compression::None),
    ] {
        let client = mock_client(&mock, compression);
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(insert(&client, &mock, "agent_spans", &fixture.span_rows)))
        });
    }
    group.finish();
}

fn together(c: &mut Criterion) {
    let fixture = Fixture::new();
    let runtime = current_thread_runtime();
    let _guard = runtime.enter();
    let mock = Mock::new();
    let client = mock_client(&mock, clickhouse::Compression::Lz4);
    let mut group = c.benchmark_group("together");
    group.throughput(Throughput::Elements(
        fixture.spans_per_request() * REQUESTS_PER_BATCH,
    ));
    group.sample_size(30);
    group.bench_function("decode_to_rows", |b| b.iter(|| process_batch(&fixture)));
    group.bench_function("decode_to_rowbinary", |b| {
        b.iter(|| {
            let rows = process_batch(&fixture);
            runtime.block_on(async {
                insert_encoded(&client, &mock, &rows.spans).await;
                insert(&client, &mock, "agent_rejected_spans", &rows.rejected).await;
                insert(&client, &mock, "agent_workflows", &rows.workflows).await;
            })
        })
    });
    group.finish();
}

criterion_group!(benches, stages, rowbinary, together);
criterion_main!(benches);
