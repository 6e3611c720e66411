//! Secret redaction: a corpus of made-up secrets that must be replaced and
//! near-misses that must be left alone, and the receiver end to end, where
//! no stored column (RawSpan included) may keep a secret.

mod common;

use agent_ledger::config::RedactConfig;
use agent_ledger::otlp::{self, AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
use agent_ledger::redact::Redactor;
use common::*;

/// Deterministic filler text: `len` characters of `alphabet` from `seed`.
fn fill(seed: u64, alphabet: &str, len: usize) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            chars[((state >> 33) % chars.len() as u64) as usize]
        })
        .collect()
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// One secret: its kind, the text it appears in, and the secret itself.
struct Case {
    kind: &'static str,
    text: String,
    secret: String,
}

fn case(kind: &'static str, secret: String, context: impl Fn(&str) -> String) -> Case {
    Case {
        kind,
        text: context(&secret),
        secret,
    }
}

fn jwt(seed: u64) -> String {
    format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
        fill(seed, BASE64URL, 40),
        fill(seed + 1, BASE64URL, 43)
    )
}

fn pem(kind: &str, seed: u64) -> String {
    let body: Vec<String> = (0..4).map(|line| fill(seed + line, BASE64, 64)).collect();
    format!(
        "-----BEGIN {kind}-----\n{}\n-----END {kind}-----",
        body.join("\n")
    )
}

fn secret_corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for seed in 0..5 {
        cases.push(case("jwt", jwt(seed * 10), |s| {
            format!("session established with id_token {s} for user 42")
        }));
    }
    cases.push(case("jwt", jwt(60), |s| {
        format!("Authorization: Bearer {s}")
    }));
    cases.push(case("jwt", jwt(70), |s| {
        format!(r#"{{"access":"{s}","expires_in":3600}}"#)
    }));
    for seed in 0..4 {
        cases.push(case(
            "bearer_token",
            fill(100 + seed, "abcdefghijklmnopqrstuvwxyz0123456789._-", 36),
            |s| format!("curl -H 'Authorization: Bearer {s}' https://api.internal/v1/orders"),
        ));
    }
    for (seed, prefix) in ["AKIA", "ASIA", "AKIA", "ABIA", "AKIA"].iter().enumerate() {
        cases.push(case(
            "aws_access_key_id",
            format!("{prefix}{}", fill(200 + seed as u64, UPPER_DIGITS, 16)),
            |s| format!("using access key {s} in us-east-1"),
        ));
    }
    for seed in 0..4 {
        let secret = fill(
            300 + seed,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
            40,
        );
        cases.push(case("aws_secret_access_key", secret, |s| match seed % 2 {
            0 => format!("aws_secret_access_key={s}"),
            _ => format!(r#"{{"AWS_SECRET_ACCESS_KEY": "{s}"}}"#),
        }));
    }
    for (seed, prefix) in ["ghp_", "gho_", "ghs_", "ghu_"].iter().enumerate() {
        cases.push(case(
            "github_token",
            format!("{prefix}{}", fill(400 + seed as u64, ALNUM, 36)),
            |s| format!("git clone https://x-access-token:{s}@github.com/acme/repo.git"),
        ));
    }
    cases.push(case(
        "github_token",
        format!(
            "github_pat_{}_{}",
            fill(410, ALNUM, 22),
            fill(411, ALNUM, 59)
        ),
        |s| format!("GH token {s} rotated"),
    ));
    for seed in 0..3 {
        cases.push(case(
            "gitlab_token",
            format!("glpat-{}", fill(500 + seed, ALNUM, 20)),
            |s| format!("PRIVATE-TOKEN {s}"),
        ));
    }
    for (seed, prefix) in ["xoxb", "xoxp", "xoxa"].iter().enumerate() {
        let secret = format!(
            "{prefix}-{}-{}-{}",
            fill(600 + seed as u64, "0123456789", 12),
            fill(610, "0123456789", 13),
            fill(620, ALNUM, 24)
        );
        cases.push(case("slack_token", secret, |s| {
            format!("slack client configured with {s}")
        }));
    }
    cases.push(case(
        "slack_webhook",
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            fill(630, UPPER_DIGITS, 8),
            fill(631, UPPER_DIGITS, 10),
            fill(632, ALNUM, 24)
        ),
        |s| format!("posting alert to {s}"),
    ));
    for (seed, prefix) in ["sk_live_", "rk_live_", "sk_test_", "whsec_"]
        .iter()
        .enumerate()
    {
        cases.push(case(
            "stripe_key",
            format!("{prefix}{}", fill(700 + seed as u64, ALNUM, 32)),
            |s| format!("stripe.api_base key {s}"),
        ));
    }
    for seed in 0..3 {
        cases.push(case(
            "google_api_key",
            format!("AIza{}", fill(800 + seed, BASE64URL, 35)),
            |s| format!("https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key={s}"),
        ));
    }
    cases.push(case(
        "google_oauth_token",
        format!("ya29.{}", fill(810, BASE64URL, 60)),
        |s| format!("gcloud token {s}"),
    ));
    cases.push(case(
        "google_oauth_secret",
        format!("GOCSPX-{}", fill(820, BASE64URL, 28)),
        |s| format!("oauth client {s}"),
    ));
    for seed in 0..3 {
        cases.push(case(
            "openai_api_key",
            format!("sk-proj-{}", fill(900 + seed, BASE64URL, 48)),
            |s| format!("OPENAI key {s} loaded"),
        ));
    }
    cases.push(case(
        "openai_api_key",
        format!(
            "sk-{}T3BlbkFJ{}",
            fill(910, ALNUM, 20),
            fill(911, ALNUM, 20)
        ),
        |s| format!("legacy key {s}"),
    ));
    for seed in 0..3 {
        cases.push(case(
            "anthropic_api_key",
            format!("sk-ant-api03-{}", fill(1000 + seed, BASE64URL, 93)),
            |s| format!("x-api-key {s}"),
        ));
    }
    for (seed, kind) in [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
    ]
    .iter()
    .enumerate()
    {
        cases.push(case(
            "private_key",
            pem(kind, 1100 + seed as u64 * 10),
            |s| format!("key material:\n{s}\n"),
        ));
    }
    cases.push(case("password", "s3cr3t-P@ssw0rd!".to_owned(), |s| {
        format!("connecting with DB_PASSWORD={s} to primary")
    }));
    cases.push(case(
        "password",
        "correct-horse-battery-staple".to_owned(),
        |s| format!(r#"{{"user":"svc","password":"{s}"}}"#),
    ));
    cases.push(case("password", "Winter2026x".to_owned(), |s| {
        format!("login user=admin passwd={s}")
    }));
    cases.push(case("api_key", fill(1200, "0123456789abcdef", 32), |s| {
        format!("GET /v2/items?api_key={s}&page=2")
    }));
    cases.push(case("api_key", fill(1201, ALNUM, 24), |s| {
        format!("X-Api-Key: {s}")
    }));
    cases.push(case("secret", fill(1300, BASE64, 32), |s| {
        format!("client_secret={s}")
    }));
    cases.push(case(
        "secret",
        format!("1//0g{}", fill(1301, BASE64URL, 40)),
        |s| format!(r#"{{"refresh_token": "{s}"}}"#),
    ));
    cases.push(case("secret", fill(1302, ALNUM, 28), |s| {
        format!("WEBHOOK_SECRET = {s}")
    }));
    cases.push(case("url_password", "hunter22".to_owned(), |s| {
        format!("postgres://app:{s}@db.internal:5432/app")
    }));
    cases.push(case(
        "basic_auth",
        "YWRtaW46c3VwZXJzZWNyZXQxMjM=".to_owned(),
        |s| format!("Authorization: Basic {s}"),
    ));
    cases
}

fn near_misses() -> Vec<String> {
    let mut texts = Vec::new();
    for seed in 0..8 {
        texts.push(format!(
            "{}-{}-4{}-a{}-{}",
            fill(seed, "0123456789abcdef", 8),
            fill(seed + 1, "0123456789abcdef", 4),
            fill(seed + 2, "0123456789abcdef", 3),
            fill(seed + 3, "0123456789abcdef", 3),
            fill(seed + 4, "0123456789abcdef", 12)
        ));
    }
    for seed in 0..8 {
        texts.push(format!(
            "trace {} span {}",
            fill(20 + seed, "0123456789abcdef", 32),
            fill(40 + seed, "0123456789abcdef", 16)
        ));
    }
    for seed in 0..6 {
        texts.push(format!(
            "sha256:{}",
            fill(60 + seed, "0123456789abcdef", 64)
        ));
    }
    for seed in 0..4 {
        texts.push(format!(
            "commit {}",
            fill(70 + seed, "0123456789abcdef", 40)
        ));
    }
    for seed in 0..5 {
        texts.push(format!(
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA{}==",
            fill(80 + seed, BASE64, 400)
        ));
    }
    for seed in 0..3 {
        texts.push(fill(90 + seed, BASE64, 120));
    }
    texts.extend(
        [
            "The token budget of the model was exceeded, so the answer was truncated.",
            "Tokens used: 512 input, 128 output.",
            r#"{"usage": {"input_tokens": 1200, "output_tokens": 340, "max_tokens": 4096}}"#,
            "Please reset your password before Friday.",
            "The API key rotation is scheduled for next week.",
            "Our secret sauce is good caching.",
            "Bearer of bad news: the build failed.",
            "Use Bearer authentication for this endpoint.",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "https://example.com/search?q=rust+tokens&page=2",
            "postgres://db.internal:5432/app",
            "Contact alice@example.com about the invoice.",
            "sk-learn is the usual name for scikit-learn.",
            "xoxb tokens are Slack bot tokens.",
            "ghp_ is the prefix of classic GitHub tokens.",
            "eyJrIjoiNjAwIn0=",
            "AKIA is the prefix of long-term AWS access key ids.",
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----",
            "version 1.24.3 released on 2026-05-01T12:00:00Z",
            "order 1042 shipped; tracking number 1Z999AA10123456784",
            "The password field must not be empty.",
            "refresh the token cache every 10 minutes",
            "session_token_ttl: 3600",
            "cred-support-bot-2026-12",
            "orders:read tickets:write",
        ]
        .map(str::to_owned),
    );
    texts
}

#[test]
fn corpus_secrets_redacted() {
    let redactor = Redactor::new(&RedactConfig::default()).unwrap();
    let corpus = secret_corpus();
    assert!(
        corpus.len() >= 50,
        "the corpus holds {} secrets",
        corpus.len()
    );
    for case in &corpus {
        let (redacted, found) = redactor.redact_text(&case.text);
        assert!(
            !redacted.contains(&case.secret),
            "{} left in: {redacted}",
            case.kind
        );
        let marker = format!("[REDACTED:{}]", case.kind);
        assert!(
            redacted.contains(&marker),
            "expected {marker} in: {redacted}"
        );
        assert!(found.total() >= 1, "{}", case.text);
    }
}

#[test]
fn corpus_near_misses_kept() {
    let redactor = Redactor::new(&RedactConfig::default()).unwrap();
    let texts = near_misses();
    assert!(
        texts.len() >= 50,
        "the corpus holds {} near-misses",
        texts.len()
    );
    for text in &texts {
        let (redacted, found) = redactor.redact_text(text);
        assert_eq!(&redacted, text, "changed: {text}");
        assert_eq!(found.total(), 0, "{text}");
    }
}

#[test]
fn disabled_redaction_keeps_everything() {
    let config = RedactConfig {
        enabled: false,
        ..RedactConfig::default()
    };
    let redactor = Redactor::new(&config).unwrap();
    let mut request = request(vec![
        SpanSpec::new(1, 1, None, "s", 0, 1)
            .attr("token", &jwt(5))
            .build(),
    ]);
    assert_eq!(redactor.redact_request(&mut request).total(), 0);
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Redacted {
    redacted_count: u32,
    redacted_kinds: Vec<String>,
}

fn string(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(
            value.as_bytes().to_vec().into(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_rows_keep_no_secret() {
    let harness = Harness::start(test_config("redact_stored")).await;
    let jwt = jwt(500);
    let github = format!("ghp_{}", fill(501, ALNUM, 36));
    let aws = format!("AKIA{}", fill(502, UPPER_DIGITS, 16));
    let stripe = format!("sk_live_{}", fill(503, ALNUM, 30));
    let mut tool = tool_span(84, 3, 1, 21, 30)
        .attr(
            "gen_ai.tool.call.arguments",
            &format!(r#"{{"token":"{jwt}"}}"#),
        )
        .build();
    tool.attributes.push(KeyValue {
        key: b"http.request.header.authorization".to_vec().into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![string(&format!("token {github}"))],
            })),
        }),
    });
    tool.attributes.push(KeyValue {
        key: b"config".to_vec().into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue::string("aws", &aws)],
            })),
        }),
    });
    tool.events.push(otlp::Event {
        time_unix_nano: base_nanos() + 25_000_000,
        name: (format!("retry with {stripe}").into_bytes()).into(),
        attributes: vec![KeyValue::string("password", "password=Sup3rS3cret!")],
        dropped_attributes_count: 0,
    });
    let mut spans = vec![
        root_span(84, 1, None, 0, 100).build(),
        chat_span(84, 2, 1, 10, 20).build(),
        tool,
    ];
    // A span of a trace without a workflow root is quarantined with its
    // RawSpan.
    spans.push(
        SpanSpec::new(85, 1, None, "orphan", 0, 10)
            .attr("note", &format!("key {github}"))
            .build(),
    );
    harness.export(request(spans)).await.unwrap();

    let trace = trace_hex(84);
    let sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 1, WAIT).await, 1);
    let quarantine_sql = format!(
        "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{}'",
        trace_hex(85)
    );
    assert_eq!(harness.wait_for_count(&quarantine_sql, 1, WAIT).await, 1);

    let stored: Vec<String> = harness
        .rows(&format!(
            "SELECT concat(toString(SpanAttributes), toString(`Events.Name`), toString(`Events.Attributes`), toString(ResourceAttributes)) \
             FROM agent_spans WHERE TraceId = '{trace}'"
        ))
        .await;
    let all = stored.join("\n");
    for secret in [&jwt, &github, &aws, &stripe, &"Sup3rS3cret!".to_owned()] {
        assert!(!all.contains(secret.as_str()), "{secret} stored in {all}");
    }
    let redacted: Redacted = harness
        .rows(&format!("SELECT RedactedCount, RedactedKinds FROM agent_spans WHERE TraceId = '{trace}' AND SpanId = '{}'", span_hex(3)))
        .await
        .remove(0);
    assert_eq!(redacted.redacted_count, 5, "{:?}", redacted.redacted_kinds);
    let mut sorted = redacted.redacted_kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "aws_access_key_id",
            "github_token",
            "jwt",
            "password",
            "stripe_key"
        ]
    );
    let credential: String = harness
        .rows(&format!(
            "SELECT CredentialId FROM agent_spans WHERE TraceId = '{trace}' AND SpanId = '{}'",
            span_hex(1)
        ))
        .await
        .remove(0);
    assert_eq!(
        credential, "cred-1",
        "credential ids are identifiers and stay"
    );

    let raw: Vec<(String, String)> = harness
        .rows(&format!("SELECT RawSpan, toString(SpanAttributes) FROM agent_rejected_spans WHERE TraceId = '{}'", trace_hex(85)))
        .await;
    use base64::Engine;
    let raw_bytes = base64::engine::general_purpose::STANDARD
        .decode(&raw[0].0)
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&raw_bytes).contains(&github),
        "RawSpan keeps no secret"
    );
    assert!(String::from_utf8_lossy(&raw_bytes).contains("[REDACTED:github_token]"));
    assert!(!raw[0].1.contains(&github));

    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains(r#"agent_ledger_secrets_redacted_total{kind="github_token"} 2"#),
        "{metrics}"
    );
}
