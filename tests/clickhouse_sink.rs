//! ClickHouse writes: retries after failures, deduplication of retried
//! batches, and isolation of rows ClickHouse rejects. Failures are injected
//! by the embedded endpoint's test-only `/__fault` hook, scoped to the test's
//! database.

mod common;

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
