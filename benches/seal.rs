//! Per-span cost of sealing (canonical encoding plus SHA-256 chaining, the
//! same work `verify` repeats per row) and of secret redaction in the
//! receiver. Run with `cargo bench --bench seal`.

use agent_ledger::clickhouse::rows::SpanRow;
use agent_ledger::config::RedactConfig;
use agent_ledger::otlp::{self, ExportTraceServiceRequest, KeyValue};
use agent_ledger::redact::Redactor;
use agent_ledger::span::Str;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Rows chained per iteration.
const ROWS: usize = 100;

fn pairs(count: usize, prefix: &str) -> Vec<(Str, Str)> {
    (0..count)
        .map(|index| {
            (
                format!("{prefix}.attribute_{index}").into(),
                format!("value number {index} of a typical span attribute").into(),
            )
        })
        .collect()
}

/// Builds a tool step row of realistic size: 20 span attributes, 6 resource
/// attributes, 2 events and 2 links.
fn span_row(index: u32) -> SpanRow {
    let text = |value: &str| value.to_owned();
    SpanRow {
        timestamp: 1_796_000_000_000_000_000 + i64::from(index),
        trace_id: text("abababababababab0000000000000001").into(),
        span_id: format!("{:016x}", 0x1000_0000_0000_0000u64 + u64::from(index)),
        parent_span_id: text("1000000000000001"),
        trace_state: Default::default(),
        span_name: text("execute_tool lookup_order").into(),
        span_kind: text("Internal").into(),
        service_name: text("support-bot").into(),
        resource_attributes: pairs(6, "resource"),
        scope_name: text("opentelemetry.instrumentation.openai").into(),
        scope_version: text("0.48.1").into(),
        span_attributes: pairs(20, "gen_ai"),
        duration: 40_000_000,
        status_code: text("Unset").into(),
        status_message: Default::default(),
        events_timestamp: vec![1_796_000_000_010_000_000, 1_796_000_000_020_000_000],
        events_name: vec![
            text("gen_ai.content.prompt").into(),
            text("gen_ai.content.completion").into(),
        ],
        events_attributes: vec![pairs(2, "event"), pairs(2, "event")],
        links_trace_id: vec![text("abababababababab0000000000000001"); 2],
        links_span_id: vec![text("1000000000000002"), text("1000000000000003")],
        links_trace_state: vec![Default::default(); 2],
        links_attributes: vec![pairs(2, "agent_ledger.link"); 2],
        workflow_root_span_id: text("1000000000000001").into(),
        step_index: index,
        step_kind: text("tool").into(),
        agent_name: text("support-bot").into(),
        agent_id: text("agent-7").into(),
        agent_version: text("1.4.2").into(),
        model_name: Default::default(),
        model_version: Default::default(),
        provider: "openai".into(),
        origin_type: text("user_request").into(),
        origin_source: text("support-portal").into(),
        task_spec: text("Answer the customer's question about the status of order 1042.").into(),
        authorized_by: text("user-100").into(),
        credential_id: text("cred-support-bot-2026-12"),
        credential_issuer: text("vault.internal"),
        credential_scopes: vec![text("orders:read"), text("tickets:write")],
        credential_issued_at: Some(1_795_000_000_000_000_000),
        credential_expires_at: Some(1_797_000_000_000_000_000),
        workflow_credential_id: text("cred-support-bot-2026-12").into(),
        tool_name: "lookup_order".into(),
        tool_call_id: "call_8f2k".into(),
        violations: Vec::new(),
        redacted_count: 0,
        redacted_kinds: Vec::new(),
        write_action: 0,
        sender: Default::default(),
        received_at: 1_796_000_000_100_000_000,
        late: 0,
        segment: 0,
        prev_hash: String::new(),
        row_hash: String::new(),
    }
}

fn bench_sealing(c: &mut Criterion) {
    let rows: Vec<SpanRow> = (0..ROWS as u32).map(span_row).collect();
    let header = "ab".repeat(32);
    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("chain_rows", |bench| {
        bench.iter_batched(
            || rows.clone(),
            |mut rows| agent_ledger::seal::chain_rows(&mut rows, &header),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Builds a request with one span of 20 attributes (a prompt and a
/// completion of about 1 KiB among them), 6 resource attributes and 2
/// events. With `secrets` it adds a JWT, a GitHub token and a password
/// assignment.
fn request(secrets: bool) -> ExportTraceServiceRequest {
    let prose = "The customer asks where order 1042 is. It shipped on Monday and should arrive on Thursday. ".repeat(12);
    let mut attributes: Vec<KeyValue> = (0..18)
        .map(|index| KeyValue::string(&format!("attribute_{index}"), "a typical attribute value"))
        .collect();
    attributes.push(KeyValue::string("gen_ai.prompt", &prose));
    attributes.push(KeyValue::string("gen_ai.completion", &prose));
    if secrets {
        attributes.push(KeyValue::string(
            "http.request.header.authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
        ));
        attributes.push(KeyValue::string(
            "git.remote",
            "https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/acme/app",
        ));
        attributes.push(KeyValue::string(
            "db.connection",
            "host=db port=5432 password=hunter22",
        ));
    }
    let event = |name: &str| otlp::Event {
        time_unix_nano: 1,
        name: name.as_bytes().to_vec().into(),
        attributes: vec![KeyValue::string("detail", "retrying after a timeout")],
        dropped_attributes_count: 0,
    };
    let span = otlp::Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x10; 8],
        name: b"chat gpt-4o".to_vec().into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes,
        events: vec![event("gen_ai.choice"), event("retry")],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: (0..6)
                    .map(|index| KeyValue::string(&format!("resource_{index}"), "production"))
                    .collect(),
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: None,
                spans: vec![span],
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }],
    }
}

fn bench_redaction(c: &mut Criterion) {
    let redactor = Redactor::new(&RedactConfig::default()).unwrap();
    let mut group = c.benchmark_group("redact");
    group.throughput(Throughput::Elements(1));
    for (name, secrets) in [
        ("span_without_secrets", false),
        ("span_with_3_secrets", true),
    ] {
        let request = request(secrets);
        group.bench_function(name, |bench| {
            bench.iter_batched(
                || request.clone(),
                |mut request| redactor.redact_request(&mut request),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sealing, bench_redaction);
criterion_main!(benches);
