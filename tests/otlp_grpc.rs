//! The OTLP gRPC protocol: partial success, empty requests, gzip, size
//! limits, and the admin endpoint.

mod common;

use std::io::Write;

use agent_ledger::otlp::{self, AnyValue, KeyValue, any_value};
use bytesize::ByteSize;
use clickhouse::Row;
use common::*;
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Quarantined {
    trace_id: String,
    span_id: String,
    reason: String,
    detail: String,
    raw_span: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_spans_rejected_neighbours_stored() {
    let harness = Harness::start(test_config("malformed")).await;
    let mut zero_trace = chat_span(20, 10, 1, 1, 2).build();
    zero_trace.trace_id = vec![0; 16];
    let mut zero_span = chat_span(20, 11, 1, 1, 2).build();
    zero_span.span_id = vec![0; 8];
    let mut zero_start = chat_span(20, 12, 1, 1, 2).build();
    zero_start.start_time_unix_nano = 0;
    let end_before_start = chat_span(20, 13, 1, 30, 20).build();
    let mut bad_utf8 = chat_span(20, 14, 1, 1, 2).build();
    bad_utf8.attributes.push(KeyValue {
        key: b"gen_ai.prompt".to_vec().into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                vec![b'o', b'k', 0xff, 0xfe].into(),
            )),
        }),
    });
    let spans = vec![
        root_span(20, 1, None, 0, 100).build(),
        zero_trace,
        zero_span,
        chat_span(20, 2, 1, 10, 20).build(),
        zero_start,
        end_before_start,
        bad_utf8,
    ];
    let response = harness
        .export(request(spans))
        .await
        .expect("request succeeds");
    let partial = response.partial_success.expect("partial success is set");
    assert_eq!(partial.rejected_spans, 5);
    let message = &partial.error_message;
    assert!(message.len() <= 4096);
    assert!(
        message.contains("invalid_trace_id: trace id is all zero"),
        "{message}"
    );
    assert!(
        message.contains("invalid_span_id: span id is all zero"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "trace {} span {}: invalid_timestamps: start time is zero",
            trace_hex(20),
            span_hex(12)
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "span {}: invalid_timestamps: end time",
            span_hex(13)
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "span {}: invalid_utf8: attribute gen_ai.prompt is not valid UTF-8",
            span_hex(14)
        )),
        "{message}"
    );

    let trace = trace_hex(20);
    let stored = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&stored, 2, WAIT).await,
        2,
        "valid neighbours are stored"
    );
    let quarantine = "SELECT count() FROM agent_rejected_spans";
    assert_eq!(harness.wait_for_count(quarantine, 5, WAIT).await, 5);
    let rows: Vec<Quarantined> = harness
        .rows("SELECT TraceId, SpanId, Reason, Detail, RawSpan FROM agent_rejected_spans ORDER BY Reason, SpanId")
        .await;
    let reasons: Vec<&str> = rows.iter().map(|row| row.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "invalid_span_id",
            "invalid_timestamps",
            "invalid_timestamps",
            "invalid_trace_id",
            "invalid_utf8"
        ]
    );
    assert_eq!(rows[0].span_id, "0000000000000000");
    assert_eq!(rows[3].trace_id, "00000000000000000000000000000000");
    assert_eq!(rows[4].span_id, span_hex(14));
    assert!(rows[4].detail.contains("gen_ai.prompt"));
    assert!(
        rows.iter().all(|row| !row.raw_span.is_empty()),
        "the span as received is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_request_succeeds_without_partial_success() {
    let harness = Harness::start(test_config("empty")).await;
    let response = harness
        .export(otlp::ExportTraceServiceRequest::default())
        .await
        .expect("empty request succeeds");
    assert_eq!(response.partial_success, None);
    let response = harness
        .export(request(Vec::new()))
        .await
        .expect("request without spans succeeds");
    assert_eq!(response.partial_success, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_request_stored() {
    let harness = Harness::start(test_config("gzip")).await;
    let spans = vec![
        root_span(21, 1, None, 0, 100).build(),
        chat_span(21, 2, 1, 10, 20).build(),
    ];
    let response = export(&harness.grpc_url(), request(spans), true)
        .await
        .expect("gzip request succeeds");
    assert_eq!(response.partial_success, None);
    let sql = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(21)
    );
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);
}

/// The receiver keeps in memory only the attributes it reads on arrival;
/// the stored rows still have every attribute, read back from the spool.
#[tokio::test(flavor = "multi_thread")]
async fn every_attribute_stored() {
    let harness = Harness::start(test_config("attributes")).await;
    let spans = vec![
        root_span(23, 1, None, 0, 100)
            .attr("app.tenant", "acme")
            .build(),
        chat_span(23, 2, 1, 10, 20)
            .attr("app.customer_tier", "gold")
            .build(),
    ];
    export(&harness.grpc_url(), request(spans), false)
        .await
        .expect("the request succeeds");
    let sql = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(23)
    );
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);

    let stored: Vec<StoredAttributes> = harness
        .rows(&format!(
            "SELECT SpanAttributes['app.tenant'] AS tenant, \
             SpanAttributes['app.customer_tier'] AS tier, \
             SpanAttributes['gen_ai.operation.name'] AS operation \
             FROM agent_spans WHERE TraceId = '{}' ORDER BY StepIndex",
            trace_hex(23)
        ))
        .await;
    assert_eq!(stored[0].tenant, "acme", "root attribute");
    assert_eq!(stored[1].tier, "gold", "step attribute read on completion");
    assert_eq!(
        stored[1].operation, "chat",
        "step attribute read on arrival"
    );
}

#[derive(Debug, Row, Deserialize)]
struct StoredAttributes {
    tenant: String,
    tier: String,
    operation: String,
}

fn large_request(bytes: usize) -> otlp::ExportTraceServiceRequest {
    let padding = "x".repeat(bytes);
    request(vec![
        root_span(22, 1, None, 0, 100)
            .attr("padding", &padding)
            .build(),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_resource_exhausted() {
    let mut config = test_config("oversized");
    config.otlp.max_request_size = ByteSize::kib(64);
    let harness = Harness::start(config).await;

    let status = harness
        .export(large_request(200 * 1024))
        .await
        .expect_err("oversized request fails");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let status = export(&harness.grpc_url(), large_request(200 * 1024), true)
        .await
        .expect_err("oversized after decompression fails");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let response = harness
        .export(large_request(16 * 1024))
        .await
        .expect("a request under the limit succeeds");
    assert_eq!(response.partial_success, None);
    assert_eq!(
        harness
            .count("SELECT count() FROM agent_rejected_spans")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bomb_resource_exhausted() {
    let mut config = test_config("gzip_bomb");
    config.otlp.max_request_size = ByteSize::kib(64);
    let harness = Harness::start(config).await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
    let compressed = encoder.finish().unwrap();
    assert!(
        compressed.len() < 64 * 1024,
        "the compressed body is under the limit"
    );
    let status = raw_grpc_post(&harness.grpc_url(), &compressed).await;
    assert_eq!(
        status, "8",
        "RESOURCE_EXHAUSTED for a body over the limit once decompressed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_body_invalid_argument() {
    let harness = Harness::start(test_config("grpc_undecodable")).await;
    // A request field that claims more bytes than the body has.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])
        .unwrap();
    let compressed = encoder.finish().unwrap();

    let status = raw_grpc_post(&harness.grpc_url(), &compressed).await;

    assert_eq!(status, "3", "INVALID_ARGUMENT, which clients do not retry");
    let response = harness
        .export(request(vec![root_span(23, 1, None, 0, 100).build()]))
        .await
        .expect("the next request succeeds");
    assert_eq!(response.partial_success, None);
    assert_eq!(
        harness
            .count("SELECT count() FROM agent_rejected_spans")
            .await,
        0
    );
}

/// Posts one gzip-compressed gRPC frame with hyper and returns the
/// `grpc-status` it gets back.
async fn raw_grpc_post(url: &str, compressed: &[u8]) -> String {
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    frame.extend_from_slice(compressed);
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "{url}{}",
            agent_ledger::receiver::grpc::EXPORT_PATH
        ))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .unwrap();
    use tower::ServiceExt;
    let response = channel
        .oneshot(request)
        .await
        .expect("HTTP/2 exchange succeeds");
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    use http_body_util::BodyExt;
    let collected = response.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .map(|status| status.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoint_reports_health_and_metrics() {
    let harness = Harness::start(test_config("admin")).await;
    let (status, body) = http_get(&format!("{}/healthz", harness.admin_url())).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&format!("{}/readyz", harness.admin_url())).await;
    assert_eq!(status, 200, "{body}");

    let mut bad = chat_span(23, 2, 1, 1, 2).build();
    bad.start_time_unix_nano = 0;
    harness.export(request(vec![bad])).await.unwrap();
    assert_eq!(
        harness
            .wait_for_count("SELECT count() FROM agent_rejected_spans", 1, WAIT)
            .await,
        1
    );
    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains("agent_ledger_spans_received_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"agent_ledger_spans_rejected_total{reason="invalid_timestamps"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"agent_ledger_requests_total{code="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("agent_ledger_buffered_spans"), "{metrics}");
}
