//! The load generator against a real receiver and the embedded ClickHouse:
//! every span it reports as acknowledged must be stored, valid workflows in
//! `agent_spans` and invalid ones in `agent_rejected_spans`.

mod common;

use std::time::Duration;

use agent_ledger::loadgen::{self, Limit, Options};
use common::{Harness, WAIT, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_are_all_stored() {
    let mut harness = Harness::start(test_config("loadgen_stored")).await;
    let options = Options {
        endpoint: harness.grpc_url(),
        connections: 2,
        workflows_per_request: 10,
        invalid_fraction: 0.1,
        limit: Limit::Spans(2_000),
        max_retry_time: Duration::from_secs(30),
        ..Options::default()
    };
    let report = loadgen::run(options).await.expect("the load run completes");

    assert_eq!(
        report.spans_failed, 0,
        "last error: {:?}",
        report.last_error
    );
    assert_eq!(report.spans_acked, 2_000);
    assert_eq!(report.requests, 25);
    assert_eq!(
        report.latency_micros.len(),
        25,
        "one latency per acknowledged request"
    );
    assert_eq!(report.workflows_acked, 250);
    assert_eq!(report.invalid_workflows_acked, 25);
    assert_eq!(
        report.rejected_reported, 25,
        "each invalid root is reported in partial_success"
    );

    let stored_sql = "SELECT count() FROM (SELECT SpanId FROM agent_spans UNION ALL SELECT SpanId FROM agent_rejected_spans)";
    let stored = harness
        .wait_for_count(stored_sql, report.spans_acked, WAIT)
        .await;
    assert_eq!(
        stored, report.spans_acked,
        "every acknowledged span is in ClickHouse"
    );

    let valid_rows = harness.count("SELECT count() FROM agent_spans").await;
    assert_eq!(
        valid_rows,
        (report.workflows_acked - report.invalid_workflows_acked) * 8
    );
    let rejected = harness
        .count("SELECT count() FROM agent_rejected_spans WHERE Reason = 'policy_rejected'")
        .await;
    assert_eq!(rejected, report.invalid_workflows_acked * 8);
    let distinct = harness
        .count("SELECT uniqExact(TraceId, SpanId) FROM agent_spans")
        .await;
    assert_eq!(distinct, valid_rows, "no span is stored twice");
    let workflows = harness
        .wait_for_count(
            "SELECT count() FROM agent_workflows",
            report.workflows_acked,
            WAIT,
        )
        .await;
    assert_eq!(workflows, report.workflows_acked);
    harness.stop().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let options = Options {
        endpoint: endpoint.clone(),
        limit: Limit::Spans(10),
        ..Options::default()
    };
    let error = loadgen::run(options)
        .await
        .expect_err("nothing listens on the port");
    let message = error.to_string();
    assert!(message.contains(&endpoint), "{message}");
    assert!(
        message.contains("check that the receiver is running"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_options_are_rejected_before_sending() {
    let options = Options {
        invalid_fraction: 1.5,
        ..Options::default()
    };
    let error = loadgen::run(options)
        .await
        .expect_err("the fraction is out of range");
    assert!(
        error.to_string().contains("invalid fraction 1.5"),
        "{error}"
    );
}

#[tokio::test]
async fn rate_must_be_positive() {
    for rate in [0.0, -5.0, f64::NAN] {
        let options = Options {
            rate: Some(rate),
            ..Options::default()
        };
        let error = loadgen::run(options)
            .await
            .expect_err("the rate is not positive");
        assert!(
            error
                .to_string()
                .contains("is not a positive number of spans per second"),
            "{error}"
        );
    }
}

/// Four requests of 80 spans at 160 spans per second: the last one is due
/// 1.5 s after the start, so the run cannot end sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_run_waits_until_requests_are_due() {
    let mut harness = Harness::start(test_config("loadgen_paced")).await;
    let options = Options {
        endpoint: harness.grpc_url(),
        connections: 2,
        workflows_per_request: 10,
        invalid_fraction: 0.0,
        limit: Limit::Spans(320),
        max_retry_time: Duration::from_secs(30),
        rate: Some(160.0),
        ..Options::default()
    };
    let report = loadgen::run(options).await.expect("the load run completes");
    assert_eq!(
        report.spans_acked, 320,
        "last error: {:?}",
        report.last_error
    );
    assert_eq!(report.requests, 4);
    assert!(
        report.elapsed >= Duration::from_millis(1500),
        "the last request went out before it was due: {:?}",
        report.elapsed
    );
    harness.stop().await;
}
