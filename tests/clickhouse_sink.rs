//! ClickHouse writes: retries after failures, deduplication of retried
//! batches, and isolation of rows ClickHouse rejects. Failures are injected
//! by the embedded endpoint's test-only `/__fault` hook, scoped to the test's
//! database.

mod common;

use agent_ledger::clickhouse::encode::{EncodedSpan, encode_stored_rows};
use agent_ledger::clickhouse::rows::SpanRow;
use agent_ledger::clickhouse::schema::Schema;
use agent_ledger::clickhouse::sink::{InsertRequest, InsertRows};
use agent_ledger::span::Str;
use common::*;

/// Arms the endpoint to fail the next `count` inserts into `database` with
/// ClickHouse exception `code`, before or after committing the rows.
async fn inject_insert_failures(database: &str, count: u32, code: u32, after_commit: bool) {
    let url = format!(
        "{}/__fault?fail_inserts={count}&code={code}&after_commit={}&database={database}",
        clickhouse_url(),
        u8::from(after_commit)
    );
    let response = http_post(&url).await;
    assert_eq!(response, 200, "the endpoint accepts the fault injection");
}

async fn http_post(url: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn workflow(trace: u64) -> agent_ledger::otlp::ExportTraceServiceRequest {
    request(vec![
        root_span(trace, 1, None, 0, 100).build(),
        chat_span(trace, 2, 1, 10, 20).build(),
        tool_span(trace, 3, 1, 21, 30).build(),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_failure_retried_without_duplicates() {
    let harness = Harness::start(test_config("sink_after_commit")).await;
    // 1000 is POCO_EXCEPTION, which the sink retries.
    inject_insert_failures(&harness.config.clickhouse.database, 1, 1000, true).await;
    harness.export(workflow(30)).await.unwrap();

    let trace = trace_hex(30);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&verdict_sql, 1, WAIT).await, 1);
    let spans_sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.count(&spans_sql).await,
        3,
        "the retried batch is stored once"
    );
    let view_sql = format!("SELECT count() FROM agent_spans_trace_id_ts WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.count(&view_sql).await,
        1,
        "the materialized view's target is deduplicated too"
    );

    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains(r#"agent_ledger_clickhouse_insert_retries_total{table="agent_spans"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_insert_retried_until_stored() {
    let harness = Harness::start(test_config("sink_before_commit")).await;
    inject_insert_failures(&harness.config.clickhouse.database, 3, 1000, false).await;
    harness.export(workflow(31)).await.unwrap();

    let trace = trace_hex(31);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&verdict_sql, 1, WAIT).await, 1);
    let spans_sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.count(&spans_sql).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn permanently_rejected_rows_quarantined() {
    let harness = Harness::start(test_config("sink_permanent")).await;
    // 27 is CANNOT_PARSE_INPUT_ASSERTION_FAILED, a permanent error: the batch
    // of three rows fails, then both halves, then the single row of the
    // larger half; the remaining row succeeds.
    inject_insert_failures(&harness.config.clickhouse.database, 4, 27, false).await;
    harness.export(workflow(32)).await.unwrap();

    let trace = trace_hex(32);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&verdict_sql, 1, WAIT).await, 1);
    let stored = harness
        .count(&format!(
            "SELECT count() FROM agent_spans WHERE TraceId = '{trace}'"
        ))
        .await;
    let quarantined = harness
        .count(&format!(
            "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{trace}' AND Reason = 'clickhouse_rejected' \
             AND Detail LIKE '%Code: 27%'"
        ))
        .await;
    assert_eq!(
        quarantined, 2,
        "rows ClickHouse rejects are quarantined with its error"
    );
    assert_eq!(stored, 1, "the row ClickHouse accepts is stored");
}

fn pairs(items: &[(&str, &str)]) -> Vec<(Str, Str)> {
    items
        .iter()
        .map(|(key, value)| (Str::from(*key), Str::from(*value)))
        .collect()
}

/// Builds a span row with every column set to a value of its own, so that
/// two columns swapped in the encoding would read back differently.
fn span_row(span: u64, prompt: &str) -> SpanRow {
    let text = |column: &str| format!("{column}-{span}");
    SpanRow {
        timestamp: 1_700_000_000_000_000_000 + span as i64,
        trace_id: trace_hex(33).into(),
        span_id: span_hex(span),
        parent_span_id: span_hex(1),
        trace_state: text("state").into(),
        span_name: text("name").into(),
        span_kind: "Client".into(),
        service_name: text("service").into(),
        resource_attributes: pairs(&[("service.name", "svc"), ("host", "h1")]),
        scope_name: text("scope").into(),
        scope_version: text("scope-version").into(),
        span_attributes: pairs(&[("gen_ai.prompt", prompt), ("empty", "")]),
        duration: 1_000 + span,
        status_code: "Error".into(),
        status_message: text("message").into(),
        events_timestamp: vec![11, 12],
        events_name: vec!["first".into(), "second".into()],
        events_attributes: vec![pairs(&[("a", "1")]), Vec::new()],
        links_trace_id: vec![trace_hex(34)],
        links_span_id: vec![span_hex(9)],
        links_trace_state: vec!["linked".into()],
        links_attributes: vec![pairs(&[("agent_ledger.link.type", "caused_by")])],
        workflow_root_span_id: span_hex(1).into(),
        step_index: span as u32,
        step_kind: "tool".into(),
        agent_name: text("agent").into(),
        agent_id: text("agent-id").into(),
        agent_version: text("agent-version").into(),
        model_name: text("model").into(),
        model_version: text("model-version").into(),
        provider: text("provider").into(),
        origin_type: text("origin").into(),
        origin_source: text("source").into(),
        task_spec: text("task").into(),
        authorized_by: text("authorizer").into(),
        credential_id: text("credential"),
        credential_issuer: text("issuer"),
        credential_scopes: vec![text("scope-a"), text("scope-b")],
        credential_issued_at: Some(21),
        credential_expires_at: span.is_multiple_of(2).then_some(22),
        workflow_credential_id: text("workflow-credential").into(),
        tool_name: text("tool").into(),
        tool_call_id: text("call").into(),
        violations: vec!["scope_exceeded".into()],
        redacted_count: 1,
        redacted_kinds: vec!["api_key".into()],
        write_action: 1,
        sender: text("sender").into(),
        received_at: 1_800_000_000_000_000_000 + span as i64,
        late: 1,
        segment: 7,
        prev_hash: text("prev"),
        row_hash: text("hash"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_span_rows_read_back_as_written() {
    let config = test_config("encoded_rows");
    let schema = Schema::new(&config.clickhouse);
    agent_ledger::clickhouse::migrate(&config.clickhouse, &schema)
        .await
        .expect("schema applies");
    let client = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    // The middle row is larger than a send block, so the insert sends
    // three blocks, the middle one larger than the block size.
    let rows = vec![
        span_row(2, "short"),
        span_row(3, &"x".repeat(300 * 1024)),
        span_row(4, "ünïcödé"),
    ];
    let encoded = encode_stored_rows(&rows);
    let request = InsertRequest::new(&client, "agent_spans", "encoded-rows", WAIT);
    EncodedSpan::insert(request, &encoded)
        .await
        .expect("ClickHouse takes the encoded rows");

    let stored: Vec<SpanRow> = client
        .query("SELECT ?fields FROM agent_spans ORDER BY SpanId")
        .fetch_all()
        .await
        .expect("the rows read back through the crate's own decoder");
    assert_eq!(stored, rows);
}
