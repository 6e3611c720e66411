//! Secrets stay out of logs, errors, `agent-ledger config` and `/metrics`,
//! and ClickHouse is reached over HTTPS with a custom CA.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::certs::TestCa;
use common::process::free_port;
use common::*;

const PASSWORD: &str = "pw-7c1e9a0b44d2";
const URL_PASSWORD: &str = "url-pw-52f0d6";
const FILE_PASSWORD: &str = "file-pw-0d93ab";

/// Runs the binary with `args` and `env`, with debug logging, and waits for
/// it to exit.
fn run_binary(args: &[&str], env: &[(&str, String)]) -> Output {
    let spool = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-ledger"));
    command
        .args(args)
        .env("RUST_LOG", "debug")
        .env("AGENT_LEDGER_SPOOL_DIR", spool.path())
        .env(
            "AGENT_LEDGER_OTLP_GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "AGENT_LEDGER_ADMIN_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("agent-ledger runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn failing_start_hides_passwords() {
    let closed = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{FILE_PASSWORD}\n")).unwrap();
    let cases = [
        (
            "password variable",
            vec![
                ("AGENT_LEDGER_CLICKHOUSE_URL", format!("http://{closed}")),
                ("AGENT_LEDGER_CLICKHOUSE_PASSWORD", PASSWORD.to_owned()),
            ],
            PASSWORD,
        ),
        (
            "password file",
            vec![
                ("AGENT_LEDGER_CLICKHOUSE_URL", format!("http://{closed}")),
                (
                    "AGENT_LEDGER_CLICKHOUSE_PASSWORD_FILE",
                    password_file.display().to_string(),
                ),
            ],
            FILE_PASSWORD,
        ),
        (
            "password in the URL",
            vec![(
                "AGENT_LEDGER_CLICKHOUSE_URL",
                format!("http://writer:{URL_PASSWORD}@{closed}"),
            )],
            URL_PASSWORD,
        ),
    ];
    for (name, env, secret) in cases {
        let output = run_binary(&["serve"], &env);

        let shown = text(&output);
        assert!(
            !output.status.success(),
            "case {name}: start fails: {shown}"
        );
        assert!(
            shown.contains("cannot apply the schema"),
            "case {name}: the error says what failed: {shown}"
        );
        assert!(
            !shown.contains(secret),
            "case {name}: the password leaks: {shown}"
        );
    }
}

#[test]
fn config_output_hides_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{FILE_PASSWORD}\n")).unwrap();
    let config_file = dir.path().join("agent-ledger.yaml");
    std::fs::write(
        &config_file,
        format!("clickhouse:\n  password: {URL_PASSWORD}\n"),
    )
    .unwrap();
    let cases = [
        (
            "variable",
            vec![("AGENT_LEDGER_CLICKHOUSE_PASSWORD", PASSWORD.to_owned())],
            PASSWORD,
        ),
        (
            "file setting",
            vec![(
                "AGENT_LEDGER_CLICKHOUSE_PASSWORD_FILE",
                password_file.display().to_string(),
            )],
            FILE_PASSWORD,
        ),
        (
            "config file",
            vec![("AGENT_LEDGER_CONFIG", config_file.display().to_string())],
            URL_PASSWORD,
        ),
    ];
    for (name, env, secret) in cases {
        let output = run_binary(&["config"], &env);

        let shown = text(&output);
        assert!(
            output.status.success(),
            "case {name}: config prints: {shown}"
        );
        assert!(
            shown.contains("clickhouse:"),
            "case {name}: configuration printed"
        );
        assert!(
            !shown.contains(secret),
            "case {name}: the password leaks: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_hide_password() {
    let mut config = test_config("metrics_password");
    config.clickhouse.password = PASSWORD.to_owned();
    let mut harness = Harness::start(config).await;
    harness
        .export(request(vec![root_span(61, 1, None, 0, 10).build()]))
        .await
        .expect("request succeeds");

    let (status, body) = http_get(&format!("{}/metrics", harness.admin_url())).await;

    assert_eq!(status, 200, "metrics served");
    assert!(
        body.contains("agent_ledger_requests_total"),
        "metrics present"
    );
    assert!(!body.contains(PASSWORD), "the password leaks into /metrics");
    harness.stop().await;
}

/// A TLS-terminating proxy in front of the embedded ClickHouse, which
/// speaks plain HTTP only.
async fn https_proxy(
    server: &common::certs::Pem,
    upstream: String,
) -> (u16, tokio::task::JoinHandle<()>) {
    use agent_ledger::receiver::tls::{ServerTls, TlsFiles};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server.write(dir.path(), "proxy");
    let tls = ServerTls::load(TlsFiles {
        cert,
        key,
        client_ca: None,
        require_client_certificate: false,
    })
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = std::sync::Arc::new(agent_ledger::metrics::Metrics::default());
    let mut listener = agent_ledger::receiver::tls::listen(tcp, Some(tls), 64, metrics).unwrap();
    let port = listener.local_addr().port();
    let task = tokio::spawn(async move {
        let _dir = dir;
        while let Some(mut connection) = listener.next().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut backend = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut connection, &mut backend).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_over_https_with_custom_ca() {
    let ca = TestCa::new("ClickHouse CA");
    let upstream = clickhouse_url().trim_start_matches("http://").to_owned();
    let (port, proxy) = https_proxy(&ca.server("clickhouse"), upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "clickhouse-ca");
    let wrong_ca_file = TestCa::new("unrelated CA").write(dir.path(), "wrong-ca");
    let mut config = test_config("clickhouse_https");
    config.clickhouse.url = format!("https://localhost:{port}");
    config.clickhouse.ca_file = Some(ca_file);
    let mut wrong = config.clone();
    wrong.clickhouse.ca_file = Some(wrong_ca_file);
    wrong.spool.dir = spool_dir("clickhouse_https_wrong");

    let refused =
        tokio::time::timeout(Duration::from_secs(60), agent_ledger::serve::start(wrong)).await;
    let mut harness = Harness::start(config).await;
    harness
        .export(request(vec![
            root_span(62, 1, None, 0, 100).build(),
            chat_span(62, 2, 1, 10, 20).build(),
        ]))
        .await
        .expect("request succeeds");

    let error = match refused {
        Ok(Err(error)) => format!("{error:#}"),
        Ok(Ok(_)) => panic!("a server certificate from another CA is accepted"),
        Err(_) => panic!("start with the wrong CA did not finish"),
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
    let stored = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(62)
    );
    assert_eq!(
        harness.wait_for_count(&stored, 2, WAIT).await,
        2,
        "spans stored over HTTPS"
    );
    harness.stop().await;
    proxy.abort();
}

#[test]
fn token_commands() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    let file_arg = file.display().to_string();
    let env = [("AGENT_LEDGER_AUTH_TOKENS_FILE", file_arg.clone())];

    let added = run_binary(&["token", "add", "collector-eu"], &env);
    let duplicate = run_binary(&["token", "add", "collector-eu", "--file", &file_arg], &[]);
    let listed = run_binary(&["token", "list"], &env);
    let revoked = run_binary(&["token", "revoke", "collector-eu"], &env);
    let listed_after = run_binary(&["token", "list", "--file", &file_arg], &[]);

    let token = String::from_utf8(added.stdout.clone()).unwrap();
    let token = token.strip_suffix('\n').expect("one line");
    assert!(added.status.success(), "add succeeds: {}", text(&added));
    assert_eq!(
        token.len(),
        43,
        "the token alone on standard output: {token:?}"
    );
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url: {token}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    assert!(!duplicate.status.success(), "a duplicate name is rejected");
    assert!(
        text(&duplicate).contains("already exists"),
        "{}",
        text(&duplicate)
    );
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listing.starts_with("collector-eu\tsha256:"),
        "listing: {listing}"
    );
    assert!(
        !text(&listed).contains(token),
        "the listing never shows the token"
    );
    assert!(
        revoked.status.success(),
        "revoke succeeds: {}",
        text(&revoked)
    );
    assert!(
        !String::from_utf8_lossy(&listed_after.stdout).contains("collector-eu"),
        "revoked token gone"
    );
}
