//! The OTLP/HTTP protocol: protobuf and JSON bodies, gzip, size limits,
//! malformed ids, undecodable bodies, content types, methods and paths, and
//! an export with the OpenTelemetry SDK's HTTP exporter.

mod common;

use std::io::Write;
use std::time::{Duration, SystemTime};

use agent_ledger::otlp::{self, ExportTraceServiceResponse};
use bytesize::ByteSize;
use clickhouse::Row;
use common::*;
use prost::Message;
use serde::Deserialize;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The parts of an HTTP response that the tests check.
struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn protobuf_response(&self) -> ExportTraceServiceResponse {
        assert_eq!(self.content_type, PROTOBUF);
        ExportTraceServiceResponse::decode(self.body.as_slice())
            .expect("a protobuf ExportTraceServiceResponse")
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type, JSON);
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn post(url: &str, content_type: Option<&str>, gzip: bool, body: Vec<u8>) -> Answer {
    send(reqwest::Method::POST, url, content_type, gzip, body).await
}

async fn send(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    gzip: bool,
    body: Vec<u8>,
) -> Answer {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().await.expect("the HTTP exchange succeeds");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the body is read").to_vec();
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

fn traces_url(harness: &Harness) -> String {
    format!("{}/v1/traces", harness.http_url())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn workflow_request(trace: u64) -> otlp::ExportTraceServiceRequest {
    request(vec![
        root_span(trace, 1, None, 0, 100).build(),
        chat_span(trace, 2, 1, 10, 20).build(),
    ])
}

fn stored_count_sql(trace: u64) -> String {
    format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(trace)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_request_stored() {
    let harness = Harness::start(test_config("http_protobuf")).await;
    let body = workflow_request(40).encode_to_vec();
    let answer = post(&traces_url(&harness), Some(PROTOBUF), false, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.protobuf_response().partial_success, None);
    assert_eq!(
        harness.wait_for_count(&stored_count_sql(40), 2, WAIT).await,
        2
    );
    let valid = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}' AND Status = 'valid'",
        trace_hex(40)
    );
    assert_eq!(harness.wait_for_count(&valid, 1, WAIT).await, 1);
}

/// Builds a request in the shape the OpenTelemetry Collector's OTLP/HTTP
/// exporter writes with `encoding: json`: int64 values as strings, enums as
/// integers.
fn collector_json(trace_id: &str, start_nanos: u64) -> String {
    let root_attributes = [
        ("agent_ledger.origin.type", "schedule"),
        ("agent_ledger.origin.source", "nightly-cron"),
        ("agent_ledger.task.spec", "Summarise yesterday's tickets"),
        ("agent_ledger.credential.id", "cred-json"),
        ("agent_ledger.credential.scopes", "tickets:read"),
        ("gen_ai.agent.name", "summariser"),
    ]
    .iter()
    .map(|(key, value)| format!(r#"{{"key":"{key}","value":{{"stringValue":"{value}"}}}}"#))
    .collect::<Vec<_>>()
    .join(",");
    let time = |offset_ms: u64| (start_nanos + offset_ms * 1_000_000).to_string();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"collector-json"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"otelcol","version":"0.120.0"}},"spans":[
          {{"traceId":"{trace_id}","spanId":"1000000000000001","name":"nightly summary","kind":2,
            "startTimeUnixNano":"{root_start}","endTimeUnixNano":"{root_end}","attributes":[{root_attributes}],
            "status":{{}}}},
          {{"traceId":"{trace_id}","spanId":"1000000000000002","parentSpanId":"1000000000000001","name":"chat gpt-4o","kind":3,
            "startTimeUnixNano":"{chat_start}","endTimeUnixNano":"{chat_end}","flags":256,
            "attributes":[{{"key":"gen_ai.operation.name","value":{{"stringValue":"chat"}}}},
              {{"key":"gen_ai.request.model","value":{{"stringValue":"gpt-4o"}}}},
              {{"key":"gen_ai.response.model","value":{{"stringValue":"gpt-4o-2024-08-06"}}}},
              {{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"1234"}}}},
              {{"key":"gen_ai.request.temperature","value":{{"doubleValue":0.5}}}},
              {{"key":"gen_ai.request.stop_sequences","value":{{"arrayValue":{{"values":[{{"stringValue":"END"}}]}}}}}}],
            "events":[{{"timeUnixNano":"{chat_start}","name":"gen_ai.choice","droppedAttributesCount":0}}],
            "status":{{"code":1}}}}
        ]}}]}}]}}"#,
        root_start = time(0),
        root_end = time(100),
        chat_start = time(10),
        chat_end = time(20),
    )
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredSpan {
    span_name: String,
    span_kind: String,
    status_code: String,
    step_kind: String,
    model_version: String,
    span_attributes: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_json_request_stored() {
    let harness = Harness::start(test_config("http_json")).await;
    let trace = "5b8efff798038103d269b633813fc60c";
    let body = collector_json(trace, base_nanos()).into_bytes();
    let answer = post(
        &traces_url(&harness),
        Some("application/json; charset=utf-8"),
        false,
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), serde_json::json!({}), "no partial success");

    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);
    let rows: Vec<StoredSpan> = harness
        .rows(&format!(
            "SELECT SpanName, SpanKind, StatusCode, StepKind, ModelVersion, SpanAttributes \
             FROM agent_spans WHERE TraceId = '{trace}' ORDER BY StepIndex"
        ))
        .await;
    assert_eq!(rows[0].span_kind, "Server");
    assert_eq!(rows[0].step_kind, "root");
    let chat = &rows[1];
    assert_eq!(chat.span_name, "chat gpt-4o");
    assert_eq!(chat.span_kind, "Client");
    assert_eq!(chat.status_code, "Ok");
    assert_eq!(chat.step_kind, "inference");
    assert_eq!(chat.model_version, "gpt-4o-2024-08-06");
    let attribute = |key: &str| {
        chat.span_attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(
        attribute("gen_ai.usage.input_tokens").as_deref(),
        Some("1234")
    );
    assert_eq!(
        attribute("gen_ai.request.temperature").as_deref(),
        Some("0.5")
    );
    assert_eq!(
        attribute("gen_ai.request.stop_sequences").as_deref(),
        Some(r#"["END"]"#)
    );
    let valid = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}' AND Status = 'valid'"
    );
    assert_eq!(harness.wait_for_count(&valid, 1, WAIT).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_requests_stored() {
    let harness = Harness::start(test_config("http_gzip")).await;
    let protobuf = gzip(&workflow_request(41).encode_to_vec());
    let answer = post(&traces_url(&harness), Some(PROTOBUF), true, protobuf).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.protobuf_response().partial_success, None);

    let trace = "5b8efff798038103d269b633813fc60d";
    let json = gzip(collector_json(trace, base_nanos()).as_bytes());
    let answer = post(&traces_url(&harness), Some(JSON), true, json).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    assert_eq!(
        harness.wait_for_count(&stored_count_sql(41), 2, WAIT).await,
        2
    );
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_payload_too_large() {
    let mut config = test_config("http_oversized");
    config.otlp.max_request_size = ByteSize::kib(64);
    let harness = Harness::start(config).await;
    let url = traces_url(&harness);
    let padding = "x".repeat(200 * 1024);
    let large = request(vec![
        root_span(42, 1, None, 0, 100)
            .attr("padding", &padding)
            .build(),
    ])
    .encode_to_vec();

    let answer = post(&url, Some(PROTOBUF), false, large.clone()).await;
    assert_eq!(answer.status, 413, "over the limit before decompression");
    let status = RpcStatus::decode(answer.body.as_slice()).expect("a google.rpc.Status body");
    assert_eq!(status.code, 8, "RESOURCE_EXHAUSTED");
    assert!(
        status.message.contains("otlp.max_request_size"),
        "{}",
        status.message
    );

    let compressed = gzip(&large);
    assert!(
        compressed.len() < 64 * 1024,
        "the compressed body is under the limit"
    );
    let answer = post(&url, Some(PROTOBUF), true, compressed).await;
    assert_eq!(answer.status, 413, "over the limit after decompression");
    let status = RpcStatus::decode(answer.body.as_slice()).unwrap();
    assert!(
        status.message.contains("after gzip decompression"),
        "{}",
        status.message
    );

    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);
    let answer = post(&url, Some(JSON), true, bomb).await;
    assert_eq!(answer.status, 413, "a JSON gzip bomb");
    assert_eq!(answer.json()["code"], 8);

    let small = request(vec![
        root_span(42, 1, None, 0, 100)
            .attr("padding", &"x".repeat(16 * 1024))
            .build(),
    ]);
    let answer = post(&url, Some(PROTOBUF), false, small.encode_to_vec()).await;
    assert_eq!(answer.status, 200, "a request under the limit succeeds");
    let workflows = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}'",
        trace_hex(42)
    );
    assert_eq!(
        harness.wait_for_count(&workflows, 1, WAIT).await,
        1,
        "the request under the limit is evaluated"
    );
}

/// `google.rpc.Status` without details, as the error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Quarantined {
    trace_id: String,
    span_id: String,
    reason: String,
    detail: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_ids_rejected_per_span() {
    let harness = Harness::start(test_config("http_malformed")).await;
    let trace = "5b8efff798038103d269b633813fc60e";
    let good = collector_json(trace, base_nanos());
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    let spans = json["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    let mut bad_trace = spans[1].clone();
    bad_trace["traceId"] = "not-a-trace-id".into();
    bad_trace["spanId"] = "1000000000000003".into();
    let mut bad_span = spans[1].clone();
    bad_span["spanId"] = "zzzzzzzzzzzzzzzz".into();
    let mut short_span = spans[1].clone();
    short_span["spanId"] = "abcd".into();
    let mut bad_parent = spans[1].clone();
    bad_parent["spanId"] = "1000000000000004".into();
    bad_parent["parentSpanId"] = "qqqqqqqq".into();
    spans.extend([bad_trace, bad_span, short_span, bad_parent]);

    let answer = post(
        &traces_url(&harness),
        Some(JSON),
        false,
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "malformed ids are per-span rejections: {}",
        answer.text()
    );
    let partial = &answer.json()["partialSuccess"];
    assert_eq!(partial["rejectedSpans"], "4", "{partial}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("invalid_trace_id"), "{message}");
    assert!(
        message.contains("span 1000000000000004: invalid_span_id: parent span id"),
        "{message}"
    );
    assert_eq!(message.matches("invalid_span_id").count(), 3, "{message}");

    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&sql, 2, WAIT).await,
        2,
        "the valid neighbours are stored"
    );
    let quarantine = "SELECT count() FROM agent_rejected_spans";
    assert_eq!(harness.wait_for_count(quarantine, 4, WAIT).await, 4);
    let rows: Vec<Quarantined> =
        harness.rows("SELECT TraceId, SpanId, Reason, Detail FROM agent_rejected_spans ORDER BY Reason, SpanId").await;
    let reasons: Vec<&str> = rows.iter().map(|row| row.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "invalid_span_id",
            "invalid_span_id",
            "invalid_span_id",
            "invalid_trace_id"
        ]
    );
    assert!(rows[3].span_id == "1000000000000003", "{rows:?}");
    assert!(
        rows.iter().take(3).all(|row| row.trace_id == trace),
        "{rows:?}"
    );
    assert!(rows.iter().all(|row| !row.detail.is_empty()), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_bodies_bad_request() {
    let harness = Harness::start(test_config("http_undecodable")).await;
    let url = traces_url(&harness);

    let answer = post(
        &url,
        Some(PROTOBUF),
        false,
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await;
    assert_eq!(answer.status, 400);
    let status = RpcStatus::decode(answer.body.as_slice()).expect("a google.rpc.Status body");
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(status.message.contains("protobuf"), "{}", status.message);

    let answer = post(
        &url,
        Some(JSON),
        false,
        br#"{"resourceSpans": [ {"scopeSpans": "#.to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"].as_str().unwrap().contains("OTLP/JSON"),
        "{body}"
    );

    let answer = post(
        &url,
        Some(JSON),
        false,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400, "a time that is not an integer");

    let answer = post(&url, Some(JSON), true, b"this is not gzip".to_vec()).await;
    assert_eq!(answer.status, 400, "a body that is not gzip");
    assert!(answer.json()["message"].as_str().unwrap().contains("gzip"));

    assert_eq!(
        harness
            .count("SELECT count() FROM agent_rejected_spans")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_types_methods_and_paths() {
    let harness = Harness::start(test_config("http_types")).await;
    let url = traces_url(&harness);
    let body = workflow_request(43).encode_to_vec();

    let answer = post(&url, Some("text/plain"), false, body.clone()).await;
    assert_eq!(answer.status, 415);
    assert!(
        answer.text().contains("application/x-protobuf"),
        "{}",
        answer.text()
    );
    let answer = post(&url, None, false, body.clone()).await;
    assert_eq!(answer.status, 415, "no content type");
    let answer = post(
        &url,
        Some("Application/X-Protobuf; proto=opentelemetry"),
        false,
        body.clone(),
    )
    .await;
    assert_eq!(
        answer.status, 200,
        "content type parameters and case are ignored"
    );

    let client = reqwest::Client::new();
    let brotli = client
        .post(&url)
        .header("content-type", PROTOBUF)
        .header("content-encoding", "br")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        brotli.status().as_u16(),
        415,
        "an unsupported content encoding"
    );

    let answer = send(reqwest::Method::GET, &url, None, false, Vec::new()).await;
    assert_eq!(answer.status, 405);
    let answer = send(
        reqwest::Method::PUT,
        &url,
        Some(PROTOBUF),
        false,
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 405);
    let answer = post(
        &format!("{}/v1/metrics", harness.http_url()),
        Some(PROTOBUF),
        false,
        body,
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.retry_after, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_http_exporter_stored() {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

    let harness = Harness::start(test_config("http_sdk")).await;
    for (protocol, gzip) in [(Protocol::HttpBinary, false), (Protocol::HttpJson, true)] {
        let url = traces_url(&harness);
        // The blocking reqwest client must be built outside the runtime.
        let exporter = tokio::task::spawn_blocking(move || {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(url);
            if gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build().expect("exporter builds")
        })
        .await
        .unwrap();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("sdk-http-agent")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("http-test");
        let base = SystemTime::now() - Duration::from_secs(5);
        let root = tracer
            .span_builder("handle request")
            .with_kind(SpanKind::Server)
            .with_start_time(base)
            .with_attributes(vec![
                KeyValue::new("agent_ledger.origin.type", "api"),
                KeyValue::new("agent_ledger.origin.source", format!("http-{protocol:?}")),
                KeyValue::new("agent_ledger.task.spec", "Look up order 5"),
                KeyValue::new("agent_ledger.credential.id", "cred-http"),
                KeyValue::new("agent_ledger.credential.scopes", "orders:read"),
                KeyValue::new("gen_ai.agent.name", "http-agent"),
            ])
            .start(&tracer);
        let context = opentelemetry::Context::current_with_span(root);
        let mut chat = tracer
            .span_builder("chat gpt-4o")
            .with_kind(SpanKind::Client)
            .with_start_time(base + Duration::from_millis(1))
            .with_attributes(vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
            ])
            .start_with_context(&tracer, &context);
        chat.end_with_timestamp(base + Duration::from_millis(2));
        context
            .span()
            .end_with_timestamp(base + Duration::from_millis(3));
        sdk_flush(provider).await;
    }
    let sql = "SELECT count() FROM agent_workflows WHERE Status = 'valid' AND OriginSource IN ('http-HttpBinary', 'http-HttpJson')";
    assert_eq!(
        harness.wait_for_count(sql, 2, WAIT).await,
        2,
        "one valid workflow per protocol"
    );
    assert_eq!(
        harness
            .count("SELECT count() FROM agent_spans WHERE ServiceName = 'sdk-http-agent'")
            .await,
        4
    );
}
