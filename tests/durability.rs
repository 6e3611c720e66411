//! Durability end to end: a receiver killed with SIGKILL and restarted, a
//! ClickHouse outage, and backpressure from a full spool. In each, every
//! span the receiver acknowledged must end up in ClickHouse exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use agent_ledger::config::Config;
use agent_ledger::otlp::ExportTraceServiceRequest;
use bytesize::ByteSize;
use common::process::{Endpoint, ReceiverProcess};
use common::*;
use rand::Rng;
use tonic_types::StatusExt;

/// Spans in each generated workflow: root, agent, model call, tool call.
const SPANS_PER_WORKFLOW: u64 = 4;

/// A request of `workflows` complete workflows starting at number `first`.
fn workflows_request(first: u64, workflows: u64) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for trace in first..first + workflows {
        spans.push(root_span(trace, 1, None, 0, 100).build());
        spans.push(
            SpanSpec::new(trace, 2, Some(1), "invoke_agent billing", 1, 90)
                .attr("gen_ai.operation.name", "invoke_agent")
                .attr("gen_ai.agent.name", "billing-bot")
                .build(),
        );
        spans.push(chat_span(trace, 3, 2, 10, 20).build());
        spans.push(tool_span(trace, 4, 2, 21, 30).build());
    }
    request(spans)
}

/// What a retrying sender saw.
#[derive(Default)]
struct SendStats {
    acknowledged_spans: AtomicU64,
    retryable_answers: AtomicU64,
    retry_info_seen: AtomicBool,
}

/// Sends `requests` requests of `per_request` workflows, retrying each until
/// it is acknowledged, as OTLP exporters do with retryable answers.
async fn send_with_retries(
    url: String,
    first: u64,
    requests: u64,
    per_request: u64,
    stats: Arc<SendStats>,
) {
    for index in 0..requests {
        let start = first + index * per_request;
        loop {
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                try_export(&url, workflows_request(start, per_request)),
            )
            .await;
            match result {
                Ok(Ok(())) => {
                    stats
                        .acknowledged_spans
                        .fetch_add(per_request * SPANS_PER_WORKFLOW, Ordering::SeqCst);
                    break;
                }
                Ok(Err(Some(status))) => {
                    stats.retryable_answers.fetch_add(1, Ordering::SeqCst);
                    if status.get_details_retry_info().is_some() {
                        stats.retry_info_seen.store(true, Ordering::SeqCst);
                    }
                    assert!(
                        matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::Unknown
                        ),
                        "only retryable answers are expected: {status:?}"
                    );
                }
                Ok(Err(None)) | Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One export; `Err(None)` when the receiver could not be reached.
async fn try_export(
    url: &str,
    request: ExportTraceServiceRequest,
) -> Result<(), Option<tonic::Status>> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap();
    let channel = channel.connect().await.map_err(|_| None)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|_| None)?;
    let codec = tonic_prost::ProstCodec::<
        ExportTraceServiceRequest,
        agent_ledger::otlp::ExportTraceServiceResponse,
    >::default();
    let path = http::uri::PathAndQuery::from_static(agent_ledger::receiver::grpc::EXPORT_PATH);
    let response = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .map_err(Some)?;
    assert_eq!(
        response.into_inner().partial_success,
        None,
        "generated workflows are valid"
    );
    Ok(())
}

fn receiver_env(
    database: &str,
    clickhouse_url: &str,
    spool: &std::path::Path,
) -> Vec<(String, String)> {
    [
        ("AGENT_LEDGER_CLICKHOUSE_URL", clickhouse_url.to_owned()),
        ("AGENT_LEDGER_CLICKHOUSE_DATABASE", database.to_owned()),
        ("AGENT_LEDGER_SPOOL_DIR", spool.display().to_string()),
        ("AGENT_LEDGER_SETTLE", "300ms".to_owned()),
        ("AGENT_LEDGER_CLICKHOUSE_BATCH_INTERVAL", "100ms".to_owned()),
        ("AGENT_LEDGER_CLICKHOUSE_RETRY_MAX", "1s".to_owned()),
        ("AGENT_LEDGER_SPOOL_COMPACT_AFTER", "2s".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// Checks that ClickHouse holds exactly `workflows` complete workflows:
/// every span once and one verdict per workflow.
async fn assert_stored_once(client: &clickhouse::Client, workflows: u64) {
    let spans = workflows * SPANS_PER_WORKFLOW;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let count = |sql: &'static str| {
        let client = client.clone();
        async move { client.query(sql).fetch_one::<u64>().await.unwrap() }
    };
    while count("SELECT count() FROM agent_workflows").await < workflows
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count("SELECT count() FROM agent_spans").await,
        spans,
        "every acknowledged span is stored"
    );
    assert_eq!(
        count("SELECT uniqExact(TraceId, SpanId) FROM agent_spans").await,
        spans,
        "no span is stored twice"
    );
    assert_eq!(
        count("SELECT count() FROM agent_workflows").await,
        workflows,
        "one verdict row per workflow"
    );
    assert_eq!(
        count("SELECT uniqExact(WorkflowId) FROM agent_workflows").await,
        workflows
    );
    assert_eq!(
        count("SELECT countIf(Status != 'valid') FROM agent_workflows").await,
        0
    );
    assert_eq!(
        count("SELECT count() FROM agent_rejected_spans").await,
        0,
        "nothing is quarantined"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loses_no_acknowledged_span() {
    let database = database_name("crash");
    let spool = spool_dir(&database);
    let log = spool.with_extension("log");
    let env = receiver_env(&database, &clickhouse_url(), &spool);
    let mut receiver = ReceiverProcess::start(env, log.clone()).await;

    let requests = 200;
    let per_request = 10;
    let stats = Arc::new(SendStats::default());
    let senders: Vec<_> = (0..3u64)
        .map(|sender| {
            let first = 1 + sender * requests * per_request;
            tokio::spawn(send_with_retries(
                receiver.grpc_url(),
                first,
                requests,
                per_request,
                stats.clone(),
            ))
        })
        .collect();

    let mut kills = 0;
    while kills < 4 && senders.iter().any(|sender| !sender.is_finished()) {
        let pause = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        receiver.kill();
        kills += 1;
        receiver.restart().await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let workflows = 3 * requests * per_request;
    assert_eq!(
        stats.acknowledged_spans.load(Ordering::SeqCst),
        workflows * SPANS_PER_WORKFLOW
    );
    assert!(
        kills >= 2,
        "the receiver was killed while spans were being sent"
    );

    let mut config = test_config("crash");
    config.clickhouse.database = database;
    let client = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    assert_stored_once(&client, workflows).await;
    let status = receiver.stop().expect("the receiver was running");
    assert!(
        status.success(),
        "a SIGTERM stop exits 0: {status:?}; log in {}",
        log.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_outage_loses_nothing() {
    let data = spool_dir("outage-clickhouse");
    let mut endpoint = Endpoint::start(&data).await;
    let mut config = test_config("outage");
    config.clickhouse.url = endpoint.url();
    config.clickhouse.retry_max = Duration::from_secs(1);
    let mut harness = Harness::start(config).await;

    let stats = Arc::new(SendStats::default());
    let requests = 60;
    let per_request = 5;
    let sender = tokio::spawn({
        let stats = stats.clone();
        let url = harness.grpc_url();
        async move {
            for index in 0..requests {
                send_with_retries(
                    url.clone(),
                    1 + index * per_request,
                    1,
                    per_request,
                    stats.clone(),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    endpoint.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let acknowledged_during_outage = stats.acknowledged_spans.load(Ordering::SeqCst);
    endpoint.restart().await;
    sender.await.unwrap();
    assert!(acknowledged_during_outage > 0);

    let workflows = requests * per_request;
    assert_stored_once(&harness.client, workflows).await;
    let drained = wait_for_metric(&harness.admin_url(), "agent_ledger_spool_live_entries 0").await;
    assert!(drained, "the spool drains once ClickHouse is back");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_spool_answers_retryable() {
    let data = spool_dir("backpressure-clickhouse");
    let mut endpoint = Endpoint::start(&data).await;
    let mut config = test_config("backpressure");
    config.clickhouse.url = endpoint.url();
    config.clickhouse.retry_max = Duration::from_secs(1);
    config.spool.max_bytes = ByteSize::kib(256);
    config.spool.segment_bytes = ByteSize::kib(64);
    let mut harness = Harness::start(config).await;
    endpoint.stop();

    let stats = Arc::new(SendStats::default());
    let requests = 40;
    let per_request = 10;
    let sender = tokio::spawn(send_with_retries(
        harness.grpc_url(),
        1,
        requests,
        per_request,
        stats.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stats.retryable_answers.load(Ordering::SeqCst) == 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stats.retryable_answers.load(Ordering::SeqCst) > 0,
        "a full spool answers UNAVAILABLE"
    );
    assert!(
        stats.retry_info_seen.load(Ordering::SeqCst),
        "the answer carries RetryInfo"
    );
    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains(r#"agent_ledger_requests_total{code="spool_full"}"#),
        "{metrics}"
    );
    let spool_bytes = metric_value(&metrics, "agent_ledger_spool_bytes").unwrap_or(0);
    assert!(
        spool_bytes <= 256 * 1024 + 64 * 1024,
        "the spool stays within its budget: {spool_bytes} bytes"
    );

    endpoint.restart().await;
    sender.await.unwrap();
    assert_stored_once(&harness.client, requests * per_request).await;
    harness.stop().await;
}

fn metric_value(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

async fn wait_for_metric(admin_url: &str, line: &str) -> bool {
    for _ in 0..100 {
        let (_, metrics) = http_get(&format!("{admin_url}/metrics")).await;
        if metrics.lines().any(|candidate| candidate == line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Checks that complete workflows pile up behind the sink while ClickHouse
/// is down. Once the waiting spans reach 90% of `max_buffered_spans`, the
/// receiver returns `UNAVAILABLE` with `RetryInfo` instead of evicting, and
/// every acknowledged workflow is stored once ClickHouse is back.
#[tokio::test(flavor = "multi_thread")]
async fn full_backlog_retryable_without_eviction() {
    backlog_rejects_before_bound("backlog", |config| {
        config.assembler.max_buffered_spans = 2_000;
    })
    .await;
}

/// As above with the spool's disk budget as the tighter bound: the receiver
/// rejects with the backlog's one-second retry delay once the spool is
/// nearly full, instead of filling it and returning `spool_full`.
#[tokio::test(flavor = "multi_thread")]
async fn spool_near_budget_answers_backlog_full() {
    backlog_rejects_before_bound("spool_budget", |config| {
        config.spool.max_bytes = ByteSize::kib(768);
        config.spool.segment_bytes = ByteSize::kib(64);
    })
    .await;
}

/// Stops ClickHouse, sends workflows until a request is refused, checks
/// that the refusal is the backlog's, then restarts ClickHouse and checks
/// that every acknowledged workflow is stored once and none was evicted.
async fn backlog_rejects_before_bound(name: &str, bound: impl FnOnce(&mut Config)) {
    let data = spool_dir(&format!("{name}-clickhouse"));
    let mut endpoint = Endpoint::start(&data).await;
    let mut config = test_config(name);
    config.clickhouse.url = endpoint.url();
    config.clickhouse.retry_max = Duration::from_secs(1);
    config.assembler.settle = Duration::from_millis(100);
    bound(&mut config);
    let mut harness = Harness::start(config).await;
    endpoint.stop();

    let per_request = 25;
    let mut acknowledged = 0;
    let mut rejection = None;
    for index in 0..200 {
        match harness
            .export(workflows_request(index * per_request, per_request))
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(status) => {
                rejection = Some(status);
                break;
            }
        }
        // The receiver reads gauges that the assembler sets after taking the
        // batch, so a pause keeps the test from racing past them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = rejection.expect("a request past the backlog limit is rejected");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("backlog"), "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "the answer carries RetryInfo"
    );
    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains(r#"agent_ledger_requests_total{code="backlog_full"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"agent_ledger_requests_total{code="spool_full"}"#),
        "the backlog refuses before the spool is full: {metrics}"
    );

    endpoint.restart().await;
    assert_stored_once(&harness.client, acknowledged * per_request).await;
    let evicted = harness
        .count("SELECT count() FROM agent_rejected_spans WHERE Reason = 'evicted'")
        .await;
    assert_eq!(evicted, 0, "no workflow is written early as evicted");
    harness.stop().await;
}
