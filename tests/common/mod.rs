//! Shared fixtures for the integration tests: a receiver on a loopback port
//! writing to its own database in the embedded ClickHouse, a raw OTLP client
//! for requests the OpenTelemetry SDK cannot produce, and query helpers.
//!
//! The ClickHouse endpoint comes from `AGENT_LEDGER_TEST_CLICKHOUSE_URL`,
//! which `scripts/test` sets after starting the embedded engine.

#![allow(dead_code)]

pub mod certs;
pub mod process;

pub mod seed;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_ledger::config::Config;
use agent_ledger::otlp::{self, ExportTraceServiceRequest, ExportTraceServiceResponse, KeyValue};
use agent_ledger::serve::Running;
use tonic::codec::CompressionEncoding;

/// The test ClickHouse endpoint.
pub fn clickhouse_url() -> String {
    std::env::var("AGENT_LEDGER_TEST_CLICKHOUSE_URL").expect(
        "AGENT_LEDGER_TEST_CLICKHOUSE_URL is not set: run the tests with scripts/test, which starts the embedded ClickHouse",
    )
}

/// A fresh database name for one test.
pub fn database_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let sequence = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("t_{test}_{}_{sequence}", std::process::id())
}

/// A configuration for tests: loopback ports chosen by the system, short
/// settle time and batch interval, its own database.
pub fn test_config(test: &str) -> Config {
    let mut config = Config::default();
    config.otlp.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.otlp.http_addr = "127.0.0.1:0".parse().unwrap();
    config.admin.addr = "127.0.0.1:0".parse().unwrap();
    config.clickhouse.url = clickhouse_url();
    config.clickhouse.database = database_name(test);
    config.clickhouse.batch_interval = Duration::from_millis(100);
    config.clickhouse.retry_initial = Duration::from_millis(50);
    config.assembler.settle = Duration::from_millis(400);
    config.assembler.root_wait = Duration::from_secs(60);
    config.spool.dir = spool_dir(&config.clickhouse.database);
    config
}

/// A fresh spool directory for one test, under cargo's temporary folder for
/// integration tests.
pub fn spool_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("spool-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running receiver and a client for its database.
pub struct Harness {
    pub running: Option<Running>,
    pub config: Config,
    pub client: clickhouse::Client,
}

impl Harness {
    /// Starts a receiver with `config`.
    pub async fn start(config: Config) -> Harness {
        let running = agent_ledger::serve::start(config.clone())
            .await
            .expect("receiver starts");
        let client = agent_ledger::clickhouse::client(&config.clickhouse).expect("client");
        Harness {
            running: Some(running),
            config,
            client,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().grpc_addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().http_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().admin_addr)
    }

    /// Stops the receiver, which writes everything it holds.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("receiver stops cleanly");
        }
    }

    /// Runs a query returning one number.
    pub async fn count(&self, sql: &str) -> u64 {
        self.client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|error| panic!("query {sql} failed: {error}"))
    }

    /// Waits until `sql` returns `expected`, for at most `timeout`; returns
    /// the last value seen.
    pub async fn wait_for_count(&self, sql: &str, expected: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.count(sql).await;
            if value == expected || tokio::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fetches rows of one type.
    pub async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.client
            .query(sql)
            .fetch_all::<T>()
            .await
            .unwrap_or_else(|error| panic!("query {sql} failed: {error}"))
    }

    /// Sends a request with the raw client.
    pub async fn export(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        export(&self.grpc_url(), request, false).await
    }
}

/// Sends one OTLP export request, optionally gzip-compressed.
pub async fn export(
    url: &str,
    request: ExportTraceServiceRequest,
    gzip: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connects to the receiver");
    export_on(channel, request, gzip, None).await
}

/// Sends one OTLP export request on `channel`, with an `authorization`
/// header when given.
pub async fn export_on(
    channel: tonic::transport::Channel,
    request: ExportTraceServiceRequest,
    gzip: bool,
    authorization: Option<&str>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec =
        tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
    let path = http::uri::PathAndQuery::from_static(agent_ledger::receiver::grpc::EXPORT_PATH);
    let mut request = tonic::Request::new(request);
    if let Some(authorization) = authorization {
        request
            .metadata_mut()
            .insert("authorization", authorization.parse().unwrap());
    }
    grpc.unary(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Hex-friendly ids for hand-built spans.
pub fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xab; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

pub fn span_id(n: u64) -> Vec<u8> {
    (n | 0x1000_0000_0000_0000).to_be_bytes().to_vec()
}

pub fn trace_hex(n: u64) -> String {
    hex::encode(trace_id(n))
}

pub fn span_hex(n: u64) -> String {
    hex::encode(span_id(n))
}

/// A hand-built span.
pub struct SpanSpec {
    pub trace: u64,
    pub span: u64,
    pub parent: Option<u64>,
    pub name: &'static str,
    pub start_ms: u64,
    pub end_ms: u64,
    pub attributes: Vec<KeyValue>,
}

/// Base time of hand-built spans: a fixed recent instant.
pub fn base_nanos() -> u64 {
    1_796_000_000_000_000_000
}

impl SpanSpec {
    pub fn new(
        trace: u64,
        span: u64,
        parent: Option<u64>,
        name: &'static str,
        start_ms: u64,
        end_ms: u64,
    ) -> Self {
        SpanSpec {
            trace,
            span,
            parent,
            name,
            start_ms,
            end_ms,
            attributes: Vec::new(),
        }
    }

    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.push(KeyValue::string(key, value));
        self
    }

    pub fn build(self) -> otlp::Span {
        otlp::Span {
            trace_id: trace_id(self.trace),
            span_id: span_id(self.span),
            parent_span_id: self.parent.map(span_id).unwrap_or_default(),
            name: self.name.as_bytes().to_vec().into(),
            kind: 1,
            start_time_unix_nano: base_nanos() + self.start_ms * 1_000_000,
            end_time_unix_nano: base_nanos() + self.end_ms * 1_000_000,
            attributes: self.attributes,
            ..Default::default()
        }
    }
}

/// A request holding `spans` under one resource with service name `svc`.
pub fn request(spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![KeyValue::string("service.name", "test-agent")],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: b"test".to_vec().into(),
                    ..Default::default()
                }),
                spans,
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }],
    }
}

/// The attributes of a valid workflow root.
pub fn root_span(
    trace: u64,
    span: u64,
    parent: Option<u64>,
    start_ms: u64,
    end_ms: u64,
) -> SpanSpec {
    SpanSpec::new(trace, span, parent, "handle task", start_ms, end_ms)
        .attr("agent_ledger.origin.type", "event")
        .attr("agent_ledger.origin.source", "billing-queue")
        .attr("agent_ledger.task.spec", "Reconcile invoice 77")
        .attr("agent_ledger.credential.id", "cred-1")
        .attr("agent_ledger.credential.issuer", "vault")
        .attr(
            "agent_ledger.credential.scopes",
            "invoices:read invoices:write",
        )
        .attr("gen_ai.agent.name", "billing-bot")
}

/// A model call with a response model.
pub fn chat_span(trace: u64, span: u64, parent: u64, start_ms: u64, end_ms: u64) -> SpanSpec {
    SpanSpec::new(trace, span, Some(parent), "chat gpt-4o", start_ms, end_ms)
        .attr("gen_ai.operation.name", "chat")
        .attr("gen_ai.request.model", "gpt-4o")
        .attr("gen_ai.response.model", "gpt-4o-2024-08-06")
}

/// A tool call.
pub fn tool_span(trace: u64, span: u64, parent: u64, start_ms: u64, end_ms: u64) -> SpanSpec {
    SpanSpec::new(
        trace,
        span,
        Some(parent),
        "execute_tool fetch",
        start_ms,
        end_ms,
    )
    .attr("gen_ai.operation.name", "execute_tool")
    .attr("gen_ai.tool.name", "fetch")
}

/// Long enough for any settle time and batch interval used in tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// An OpenTelemetry SDK tracer provider exporting over OTLP gRPC to `url`.
pub fn sdk_provider(url: &str, gzip: bool) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(url);
    if gzip {
        exporter = exporter.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build().expect("exporter builds"))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("sdk-agent")
                .build(),
        )
        .build()
}

/// Flushes and shuts down a provider without blocking the runtime.
pub async fn sdk_flush(provider: opentelemetry_sdk::trace::SdkTracerProvider) {
    tokio::task::spawn_blocking(move || {
        provider.force_flush().expect("spans flushed");
        provider.shutdown().expect("provider shuts down");
    })
    .await
    .unwrap();
}

/// A minimal HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(host, path)| (host, format!("/{path}")))
        .unwrap_or((rest, "/".to_owned()));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
