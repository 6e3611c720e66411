//! TLS, mutual TLS, bearer tokens, the reloading of certificates and tokens,
//! and the request and connection limits, against a real receiver and the
//! OpenTelemetry SDK's exporter.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_ledger::config::{AuthRequire, Config};
use agent_ledger::receiver::auth::tokens;
use common::certs::{Pem, TestCa};
use common::*;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How long a reload may take: two polls of the files and some slack.
const RELOAD_WAIT: Duration = Duration::from_secs(15);

/// A receiver's TLS files in a temporary folder.
struct TlsSetup {
    dir: tempfile::TempDir,
    ca: TestCa,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsSetup {
    fn new() -> TlsSetup {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("agent-ledger test CA");
        let (cert, key) = ca.server("receiver").write(dir.path(), "server");
        TlsSetup { dir, ca, cert, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn configure(&self, config: &mut Config) {
        config.tls.cert = Some(self.cert.clone());
        config.tls.key = Some(self.key.clone());
    }
}

fn port(harness: &Harness) -> u16 {
    harness.running.as_ref().unwrap().grpc_addr.port()
}

/// Connects over TLS to `localhost:port`, trusting `ca_pem`, optionally
/// with a client certificate.
async fn tls_channel(port: u16, ca_pem: &str, client: Option<&Pem>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))
}

/// Sends `request` over TLS; connection and request errors alike become
/// the error text, because a refused client certificate can surface at
/// either point under TLS 1.3.
async fn send_tls(
    port: u16,
    ca_pem: &str,
    client: Option<&Pem>,
    authorization: Option<&str>,
    request: agent_ledger::otlp::ExportTraceServiceRequest,
) -> Result<agent_ledger::otlp::ExportTraceServiceResponse, String> {
    let channel = tls_channel(port, ca_pem, client).await?;
    export_on(channel, request, false, authorization)
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

async fn send_plain(
    harness: &Harness,
    authorization: Option<&str>,
    request: agent_ledger::otlp::ExportTraceServiceRequest,
) -> Result<agent_ledger::otlp::ExportTraceServiceResponse, tonic::Status> {
    let channel = Channel::from_shared(harness.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    export_on(channel, request, false, authorization).await
}

/// A valid workflow (root and model call) plus one span with a zero span id,
/// which is quarantined.
fn workflow_with_bad_span(trace: u64) -> agent_ledger::otlp::ExportTraceServiceRequest {
    let mut bad = chat_span(trace, 9, 1, 30, 40).build();
    bad.span_id = vec![0; 8];
    request(vec![
        root_span(trace, 1, None, 0, 100).build(),
        chat_span(trace, 2, 1, 10, 20).build(),
        bad,
    ])
}

async fn senders(harness: &Harness, table: &str, trace: u64) -> Vec<String> {
    let sql = format!(
        "SELECT DISTINCT Sender FROM {table} WHERE TraceId = '{}' ORDER BY Sender",
        trace_hex(trace)
    );
    harness.rows::<String>(&sql).await
}

async fn stored_spans(harness: &Harness, trace: u64) -> u64 {
    let sql = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(trace)
    );
    harness.wait_for_count(&sql, 2, WAIT).await
}

async fn quarantined_spans(harness: &Harness, trace: u64) -> u64 {
    let sql = format!(
        "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{}'",
        trace_hex(trace)
    );
    harness.wait_for_count(&sql, 1, WAIT).await
}

/// The value of one metric line, such as `agent_ledger_tls_handshake_failures_total{reason="error"}`.
async fn metric(harness: &Harness, line_prefix: &str) -> f64 {
    let (_, body) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    body.lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Waits up to 10 s for a metric to reach `at_least`; returns its last
/// value. The server counts a failed handshake in its own task, which may
/// run after the client has already seen the failure.
async fn metric_reaching(harness: &Harness, line_prefix: &str, at_least: f64) -> f64 {
    let mut value = metric(harness, line_prefix).await;
    for _ in 0..100 {
        if value >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        value = metric(harness, line_prefix).await;
    }
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_exporter_over_tls_with_token() {
    let setup = TlsSetup::new();
    let tokens_file = setup.path("tokens.yaml");
    let token = tokens::add(&tokens_file, "sdk-agent").unwrap();
    let mut config = test_config("sdk_tls");
    setup.configure(&mut config);
    config.auth.tokens_file = Some(tokens_file);
    let mut harness = Harness::start(config).await;

    let provider = tls_sdk_provider(port(&harness), &setup.ca.cert_pem(), &token);
    let trace_id = emit_sdk_workflow(&provider);
    sdk_flush(provider).await;

    let stored = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace_id}'");
    assert_eq!(
        harness.wait_for_count(&stored, 2, WAIT).await,
        2,
        "the SDK's spans arrive over TLS and are stored"
    );
    let sql = format!("SELECT DISTINCT Sender FROM agent_spans WHERE TraceId = '{trace_id}'");
    assert_eq!(
        harness.rows::<String>(&sql).await,
        vec!["sdk-agent"],
        "sender is the token's name"
    );
    let plain = Channel::from_shared(harness.grpc_url())
        .unwrap()
        .connect()
        .await;
    let plain_result = match plain {
        Ok(channel) => export_on(channel, request(Vec::new()), false, None)
            .await
            .err(),
        Err(error) => Some(tonic::Status::unavailable(error.to_string())),
    };
    assert!(plain_result.is_some(), "plain HTTP/2 to the TLS port fails");
    assert!(
        metric_reaching(&harness, "agent_ledger_tls_handshake_failures_total", 1.0).await >= 1.0,
        "the failed handshake is counted"
    );
    harness.stop().await;
}

fn tls_sdk_provider(
    port: u16,
    ca_pem: &str,
    token: &str,
) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://localhost:{port}"))
        .with_tls_config(tls)
        .with_metadata(metadata)
        .build()
        .expect("exporter builds");
    opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build()
}

/// Emits a root and a model call; returns the trace id.
fn emit_sdk_workflow(provider: &opentelemetry_sdk::trace::SdkTracerProvider) -> String {
    let tracer = provider.tracer("security-test");
    let root = tracer
        .span_builder("handle task")
        .with_attributes(vec![
            KeyValue::new("agent_ledger.origin.type", "api"),
            KeyValue::new("agent_ledger.origin.source", "billing"),
            KeyValue::new("agent_ledger.task.spec", "Close the books"),
            KeyValue::new("agent_ledger.credential.id", "cred-9"),
            KeyValue::new("agent_ledger.credential.scopes", "ledger:read"),
            KeyValue::new("gen_ai.agent.name", "books-bot"),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let context = opentelemetry::Context::current_with_span(root);
    let mut chat = tracer
        .span_builder("chat gpt-4o")
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
        ])
        .start_with_context(&tracer, &context);
    chat.end();
    context.span().end();
    trace_id
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_accepts_only_signed_clients() {
    let setup = TlsSetup::new();
    let client_ca = TestCa::new("client CA");
    let other_ca = TestCa::new("other CA");
    let mut config = test_config("mtls");
    setup.configure(&mut config);
    config.tls.client_ca = Some(client_ca.write(setup.dir.path(), "client-ca"));
    let mut harness = Harness::start(config).await;
    let ca = setup.ca.cert_pem();
    let signed = client_ca.client("agent-7");
    let foreign = other_ca.client("agent-7");

    let accepted = send_tls(
        port(&harness),
        &ca,
        Some(&signed),
        None,
        workflow_with_bad_span(31),
    )
    .await;
    let without = send_tls(port(&harness), &ca, None, None, workflow_with_bad_span(32)).await;
    let other = send_tls(
        port(&harness),
        &ca,
        Some(&foreign),
        None,
        workflow_with_bad_span(33),
    )
    .await;

    let response = accepted.expect("a client certificate signed by the client CA is accepted");
    assert_eq!(
        response
            .partial_success
            .map(|partial| partial.rejected_spans),
        Some(1),
        "the bad span is reported"
    );
    assert!(without.is_err(), "no client certificate: {without:?}");
    assert!(other.is_err(), "certificate of another CA: {other:?}");
    assert_eq!(
        stored_spans(&harness, 31).await,
        2,
        "accepted workflow stored"
    );
    assert_eq!(
        quarantined_spans(&harness, 31).await,
        1,
        "bad span quarantined"
    );
    assert_eq!(
        senders(&harness, "agent_spans", 31).await,
        vec!["agent-7"],
        "stored rows carry the CN"
    );
    assert_eq!(
        senders(&harness, "agent_rejected_spans", 31).await,
        vec!["agent-7"],
        "quarantined rows carry the CN"
    );
    assert!(
        metric_reaching(&harness, "agent_ledger_tls_handshake_failures_total", 2.0).await >= 2.0,
        "refused handshakes are counted"
    );
    harness.stop().await;
    let refused = "SELECT count() FROM agent_spans WHERE TraceId IN ('{a}', '{b}')"
        .replace("{a}", &trace_hex(32))
        .replace("{b}", &trace_hex(33));
    assert_eq!(
        harness.count(&refused).await,
        0,
        "nothing of refused clients is stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens.yaml");
    let token = tokens::add(&tokens_file, "collector-eu").unwrap();
    let mut config = test_config("tokens");
    config.auth.tokens_file = Some(tokens_file);
    let mut harness = Harness::start(config).await;
    let good = format!("Bearer {token}");

    let accepted = send_plain(&harness, Some(&good), workflow_with_bad_span(41)).await;
    let wrong = send_plain(
        &harness,
        Some("Bearer not-a-token"),
        workflow_with_bad_span(42),
    )
    .await;
    let missing = send_plain(&harness, None, workflow_with_bad_span(43)).await;

    assert!(
        accepted.is_ok(),
        "the listed token is accepted: {accepted:?}"
    );
    for (name, result) in [("wrong token", wrong), ("missing token", missing)] {
        let status = result.expect_err(name);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{name}");
        assert!(
            !status.message().contains(&token),
            "{name}: message never holds a token"
        );
    }
    assert_eq!(
        stored_spans(&harness, 41).await,
        2,
        "accepted workflow stored"
    );
    assert_eq!(
        quarantined_spans(&harness, 41).await,
        1,
        "bad span quarantined"
    );
    assert_eq!(
        senders(&harness, "agent_spans", 41).await,
        vec!["collector-eu"],
        "stored rows"
    );
    assert_eq!(
        senders(&harness, "agent_rejected_spans", 41).await,
        vec!["collector-eu"],
        "quarantined rows"
    );
    assert_eq!(
        metric(
            &harness,
            "agent_ledger_requests_unauthenticated_total{reason=\"invalid_token\"}"
        )
        .await,
        1.0,
        "wrong token counted"
    );
    assert_eq!(
        metric(
            &harness,
            "agent_ledger_requests_unauthenticated_total{reason=\"missing_token\"}"
        )
        .await,
        1.0,
        "missing token counted"
    );
    harness.stop().await;
    for trace in [42, 43] {
        let sql = format!(
            "SELECT count() FROM (SELECT TraceId FROM agent_spans UNION ALL SELECT TraceId FROM agent_rejected_spans) WHERE TraceId = '{}'",
            trace_hex(trace)
        );
        assert_eq!(
            harness.count(&sql).await,
            0,
            "trace {trace}: nothing stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_file_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens.yaml");
    let old = tokens::add(&tokens_file, "old-sender").unwrap();
    let mut config = test_config("token_reload");
    config.auth.tokens_file = Some(tokens_file.clone());
    let mut harness = Harness::start(config).await;

    let new = tokens::add(&tokens_file, "new-sender").unwrap();
    tokens::revoke(&tokens_file, "old-sender").unwrap();
    let new_header = format!("Bearer {new}");
    let old_header = format!("Bearer {old}");
    // The token is added and revoked in two writes, and a reload may pick
    // up the file between them; wait until the reload that follows the
    // revocation too.
    let new_accepted = poll_until(|| async {
        let new_ok = send_plain(&harness, Some(&new_header), request(Vec::new()))
            .await
            .is_ok();
        let old_ok = send_plain(&harness, Some(&old_header), request(Vec::new()))
            .await
            .is_ok();
        new_ok && !old_ok
    })
    .await;
    let old_refused = send_plain(&harness, Some(&old_header), request(Vec::new())).await;

    assert!(
        new_accepted,
        "a token added while running is accepted after the reload"
    );
    assert_eq!(
        old_refused.expect_err("revoked token").code(),
        tonic::Code::Unauthenticated,
        "a revoked token is refused"
    );
    harness.stop().await;
}

/// Calls `attempt` every 200 ms until it returns true, for at most
/// [`RELOAD_WAIT`].
async fn poll_until<F, Fut>(mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    while tokio::time::Instant::now() < deadline {
        if attempt().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Writes a new certificate and key next to the old ones and renames them
/// over, as certificate managers do.
fn replace_files(pem: &Pem, cert: &Path, key: &Path) {
    let dir = cert.parent().unwrap();
    let (new_cert, new_key) = pem.write(dir, "replacement");
    std::fs::rename(new_key, key).unwrap();
    std::fs::rename(new_cert, cert).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_reloaded() {
    let setup = TlsSetup::new();
    let mut config = test_config("cert_reload");
    setup.configure(&mut config);
    let mut harness = Harness::start(config).await;
    let old_ca = setup.ca.cert_pem();
    let new_ca = TestCa::new("rotated CA");

    let before = send_tls(port(&harness), &old_ca, None, None, request(Vec::new())).await;
    replace_files(&new_ca.server("receiver"), &setup.cert, &setup.key);
    let new_seen = poll_until(|| async {
        send_tls(
            port(&harness),
            &new_ca.cert_pem(),
            None,
            None,
            request(Vec::new()),
        )
        .await
        .is_ok()
    })
    .await;
    let old_after = send_tls(port(&harness), &old_ca, None, None, request(Vec::new())).await;

    assert!(
        before.is_ok(),
        "the first certificate is served: {before:?}"
    );
    assert!(new_seen, "a new connection sees the replaced certificate");
    assert!(
        old_after.is_err(),
        "the old certificate is no longer served"
    );
    assert!(
        metric(
            &harness,
            "agent_ledger_reloads_total{kind=\"tls\",result=\"ok\"}"
        )
        .await
            >= 1.0,
        "the reload is counted"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_certificate_keeps_old_one() {
    let setup = TlsSetup::new();
    let mut config = test_config("cert_broken");
    setup.configure(&mut config);
    let mut harness = Harness::start(config).await;
    let ca = setup.ca.cert_pem();

    std::fs::write(&setup.cert, "not a certificate\n").unwrap();
    let failure_counted = poll_until(|| async {
        metric(
            &harness,
            "agent_ledger_reloads_total{kind=\"tls\",result=\"failed\"}",
        )
        .await
            >= 1.0
    })
    .await;
    let still_served = send_tls(port(&harness), &ca, None, None, request(Vec::new())).await;

    assert!(failure_counted, "the failed reload is counted");
    assert!(
        still_served.is_ok(),
        "the old certificate stays in force: {still_served:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sender_rate_limited() {
    let mut config = test_config("rate");
    config.limits.sender_requests_per_second = 1;
    config.limits.sender_burst = 1;
    let mut harness = Harness::start(config).await;

    let first = send_plain(&harness, None, request(Vec::new())).await;
    let second = send_plain(&harness, None, request(Vec::new())).await;

    assert!(first.is_ok(), "within the rate: {first:?}");
    let status = second.expect_err("over the rate");
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "OTLP throttling code"
    );
    use tonic_types::StatusExt;
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    assert!(
        retry.is_some_and(|delay| delay > Duration::ZERO),
        "RetryInfo: {retry:?}"
    );
    assert_eq!(
        metric(
            &harness,
            "agent_ledger_requests_limited_total{limit=\"rate_limited\"}"
        )
        .await,
        1.0,
        "counted"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_limit_closed() {
    use tokio::io::AsyncReadExt;
    let mut config = test_config("connections");
    config.limits.max_connections = 1;
    let mut harness = Harness::start(config).await;
    let addr = harness.running.as_ref().unwrap().grpc_addr;

    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buffer)).await;

    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection over the limit is closed: {read:?}"
    );
    assert_eq!(
        metric(&harness, "agent_ledger_connections_refused_total").await,
        1.0,
        "counted"
    );
    drop(held);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_serves_axum_with_peer_identity() {
    use agent_ledger::receiver::tls::{self, ConnectionInfo, ServerTls, TlsFiles};
    let setup = TlsSetup::new();
    let client_ca = TestCa::new("client CA");
    let files = TlsFiles {
        cert: setup.cert.clone(),
        key: setup.key.clone(),
        client_ca: Some(client_ca.write(setup.dir.path(), "client-ca")),
        require_client_certificate: true,
    };
    let server_tls = ServerTls::load(files).expect("TLS files load");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = std::sync::Arc::new(agent_ledger::metrics::Metrics::default());
    let listener = tls::listen(tcp, Some(server_tls), 8, metrics).unwrap();
    let addr = listener.local_addr();
    let router = axum::Router::new().route(
        "/who",
        axum::routing::get(
            |axum::extract::ConnectInfo(info): axum::extract::ConnectInfo<ConnectionInfo>| async move {
                info.peer.map(|peer| peer.subject.to_string()).unwrap_or_default()
            },
        ),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<ConnectionInfo>(),
        )
        .await
    });

    let body = https_get(
        addr.port(),
        &setup.ca.cert_pem(),
        &client_ca.client("http-agent"),
        "/who",
    )
    .await;

    assert!(
        body.ends_with("http-agent"),
        "the handler sees the client certificate's CN: {body}"
    );
    server.abort();
}

/// A minimal HTTP/1.1 GET over TLS with a client certificate; returns the
/// whole response.
async fn https_get(port: u16, ca_pem: &str, client: &Pem, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(agent_ledger::receiver::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_mode_refuses_plain_config() {
    let mut config = test_config("cert_mode");
    config.auth.require = Some(AuthRequire::Certificate);

    let error = config
        .validate()
        .expect_err("certificate without a client CA");

    assert!(error.to_string().contains("tls.client_ca"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_limits_stored() {
    let mut config = test_config("attribute_limits");
    config.limits.max_span_attributes = 8;
    config.limits.max_attribute_value_size = bytesize::ByteSize::kib(1);
    let mut harness = Harness::start(config).await;
    let prompt = "p".repeat(5000);
    let mut chat = chat_span(71, 2, 1, 10, 20).attr("gen_ai.input.messages", &prompt);
    for n in 0..10 {
        chat = chat.attr(&format!("extra.{n}"), "value");
    }

    harness
        .export(request(vec![
            root_span(71, 1, None, 0, 100).build(),
            chat.build(),
        ]))
        .await
        .expect("request succeeds");

    let stored = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(71)
    );
    assert_eq!(
        harness.wait_for_count(&stored, 2, WAIT).await,
        2,
        "both spans stored"
    );
    let sql = format!(
        "SELECT SpanAttributes['agent_ledger.truncated.gen_ai.input.messages'], \
         SpanAttributes['agent_ledger.dropped_attributes_count'], \
         length(SpanAttributes['gen_ai.input.messages']) \
         FROM agent_spans WHERE TraceId = '{}' AND SpanId = '{}'",
        trace_hex(71),
        span_hex(2)
    );
    let rows: Vec<(String, String, u64)> = harness.rows(&sql).await;
    assert_eq!(rows[0].0, "5000", "original length recorded");
    assert_eq!(rows[0].1, "6", "ten extra attributes, four of them kept");
    assert!(rows[0].2 <= 1024, "value truncated to 1KiB: {}", rows[0].2);
    assert_eq!(
        metric(&harness, "agent_ledger_attribute_values_truncated_total").await,
        1.0,
        "truncation counted"
    );
    assert_eq!(
        metric(&harness, "agent_ledger_attributes_dropped_total").await,
        6.0,
        "dropped attributes counted"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_needs_token_and_certificate() {
    let setup = TlsSetup::new();
    let client_ca = TestCa::new("client CA");
    let tokens_file = setup.path("tokens.yaml");
    let token = tokens::add(&tokens_file, "collector").unwrap();
    let mut config = test_config("auth_both");
    setup.configure(&mut config);
    config.tls.client_ca = Some(client_ca.write(setup.dir.path(), "client-ca"));
    config.auth.tokens_file = Some(tokens_file);
    let mut harness = Harness::start(config).await;
    let ca = setup.ca.cert_pem();
    let client = client_ca.client("edge-7");
    let header = format!("Bearer {token}");

    let both = send_tls(
        port(&harness),
        &ca,
        Some(&client),
        Some(&header),
        workflow_with_bad_span(81),
    )
    .await;
    let only_certificate = send_tls(
        port(&harness),
        &ca,
        Some(&client),
        None,
        request(Vec::new()),
    )
    .await;

    assert!(both.is_ok(), "token and certificate: {both:?}");
    let refused = only_certificate.expect_err("certificate without token");
    assert!(refused.starts_with("Unauthenticated"), "{refused}");
    assert_eq!(stored_spans(&harness, 81).await, 2, "stored");
    assert_eq!(
        senders(&harness, "agent_spans", 81).await,
        vec!["collector (edge-7)"],
        "the sender names both"
    );
    harness.stop().await;
}

/// Posts an OTLP/HTTP protobuf request; returns the status line's code and
/// the response head.
async fn post_http(
    harness: &Harness,
    authorization: Option<&str>,
    request: agent_ledger::otlp::ExportTraceServiceRequest,
) -> (u16, String) {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = request.encode_to_vec();
    let host = harness.http_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let auth_line = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n{auth_line}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    (status, head)
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_checked_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens.yaml");
    let token = tokens::add(&tokens_file, "collector-us").unwrap();
    let mut config = test_config("tokens_http");
    config.auth.tokens_file = Some(tokens_file);
    let mut harness = Harness::start(config).await;
    let good = format!("Bearer {token}");

    let (accepted, _) = post_http(&harness, Some(&good), workflow_with_bad_span(51)).await;
    let (wrong, wrong_head) = post_http(
        &harness,
        Some("Bearer not-a-token"),
        workflow_with_bad_span(52),
    )
    .await;
    let (missing, _) = post_http(&harness, None, workflow_with_bad_span(53)).await;

    assert_eq!(accepted, 200, "the listed token is accepted over HTTP");
    assert_eq!(wrong, 401, "a wrong token is refused over HTTP");
    assert_eq!(missing, 401, "a missing token is refused over HTTP");
    assert!(
        wrong_head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{wrong_head}"
    );
    assert_eq!(
        stored_spans(&harness, 51).await,
        2,
        "accepted workflow stored"
    );
    assert_eq!(
        senders(&harness, "agent_spans", 51).await,
        vec!["collector-us"],
        "the sender is recorded for OTLP/HTTP too"
    );
    harness.stop().await;
    for trace in [52, 53] {
        let sql = format!(
            "SELECT count() FROM (SELECT TraceId FROM agent_spans UNION ALL SELECT TraceId FROM agent_rejected_spans) WHERE TraceId = '{}'",
            trace_hex(trace)
        );
        assert_eq!(
            harness.count(&sql).await,
            0,
            "trace {trace}: nothing stored"
        );
    }
}
