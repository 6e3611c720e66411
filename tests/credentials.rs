//! Credential checks per step, end to end: spans over OTLP, violations and
//! issuance records read back from ClickHouse.

mod common;

use agent_ledger::config::Config;
use agent_ledger::otlp::{self, KeyValue};
use agent_ledger::validate::{ToolRule, ToolRules};
use clickhouse::Row;
use common::*;
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Checked {
    span_id: String,
    credential_id: String,
    credential_scopes: Vec<String>,
    violations: Vec<String>,
    write_action: u8,
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Issued {
    credential_id: String,
    span_id: String,
    scopes: Vec<String>,
    issuer_service: String,
}

fn policy_config(test: &str) -> Config {
    let mut config = test_config(test);
    config.policy.tools = ToolRules::new(vec![
        ToolRule {
            tool: "delete_*".to_owned(),
            scopes: vec!["orders:write".to_owned()],
            write: true,
        },
        ToolRule {
            tool: "lookup_*".to_owned(),
            scopes: vec!["invoices:read".to_owned()],
            write: false,
        },
    ])
    .unwrap();
    config
}

/// Unix nanoseconds `ms` after the hand-built spans' base time, as text.
fn at(ms: u64) -> String {
    (base_nanos() + ms * 1_000_000).to_string()
}

fn tool(trace: u64, span: u64, start_ms: u64, name: &str) -> SpanSpec {
    let mut spec = SpanSpec::new(trace, span, Some(1), "execute_tool", start_ms, start_ms + 5)
        .attr("gen_ai.operation.name", "execute_tool");
    spec.attributes
        .push(KeyValue::string("gen_ai.tool.name", name));
    spec
}

/// Builds a request whose resource is the service `service`.
fn request_from(service: &str, spans: Vec<otlp::Span>) -> otlp::ExportTraceServiceRequest {
    let mut request = request(spans);
    request.resource_spans[0].resource = Some(otlp::Resource {
        attributes: vec![KeyValue::string("service.name", service)],
        dropped_attributes_count: 0,
    });
    request
}

async fn checked(harness: &Harness, trace: u64, expected: u64) -> Vec<Checked> {
    let verdicts = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}'",
        trace_hex(trace)
    );
    assert_eq!(harness.wait_for_count(&verdicts, 1, WAIT).await, 1);
    let rows: Vec<Checked> = harness
        .rows(&format!(
            "SELECT SpanId, CredentialId, CredentialScopes, Violations, WriteAction FROM agent_spans \
             WHERE TraceId = '{}' ORDER BY StepIndex",
            trace_hex(trace)
        ))
        .await;
    assert_eq!(rows.len() as u64, expected);
    rows
}

fn row(rows: &[Checked], span: u64) -> &Checked {
    rows.iter()
        .find(|row| row.span_id == span_hex(span))
        .unwrap_or_else(|| panic!("span {span} is stored"))
}

#[tokio::test(flavor = "multi_thread")]
async fn step_violations_stored_beside_spans() {
    let harness = Harness::start(policy_config("credentials_steps")).await;
    let trace = 90;
    let agent_spans = vec![
        root_span(trace, 1, None, 0, 200).build(),
        chat_span(trace, 2, 1, 5, 9).build(),
        tool(trace, 3, 10, "delete_order").build(),
        tool(trace, 4, 15, "lookup_invoice").build(),
        tool(trace, 5, 20, "lookup_invoice")
            .attr("agent_ledger.credential.id", "cred-forged")
            .build(),
        // Steps under a second credential, minted mid-workflow (valid from
        // 50 ms to 80 ms after the base time).
        tool(trace, 7, 40, "delete_order")
            .attr("agent_ledger.credential.id", "cred-2")
            .build(),
        tool(trace, 8, 60, "delete_order")
            .attr("agent_ledger.credential.id", "cred-2")
            .build(),
        tool(trace, 9, 90, "delete_order")
            .attr("agent_ledger.credential.id", "cred-2")
            .build(),
    ];
    harness.export(request(agent_spans)).await.unwrap();
    let issuance = SpanSpec::new(trace, 6, Some(1), "mint credential", 30, 35)
        .attr("agent_ledger.credential.event", "issued")
        .attr("agent_ledger.credential.id", "cred-2")
        .attr("agent_ledger.credential.issuer", "vault")
        .attr("agent_ledger.credential.scopes", "orders:write")
        .attr("agent_ledger.credential.issued_at", &at(50))
        .attr("agent_ledger.credential.expires_at", &at(80))
        .build();
    harness
        .export(request_from("vault", vec![issuance]))
        .await
        .unwrap();

    let rows = checked(&harness, trace, 9).await;
    let root = row(&rows, 1);
    assert!(root.violations.is_empty(), "{root:?}");
    let delete = row(&rows, 3);
    assert_eq!(
        delete.violations,
        vec!["scope_violation"],
        "cred-1 lacks orders:write"
    );
    assert_eq!(delete.write_action, 1);
    let lookup = row(&rows, 4);
    assert!(lookup.violations.is_empty(), "{lookup:?}");
    assert_eq!(lookup.write_action, 0);
    let forged = row(&rows, 5);
    assert_eq!(
        forged.violations,
        vec!["unknown_credential", "scope_violation"],
        "an unknown credential holds no scopes"
    );
    assert_eq!(forged.credential_id, "cred-forged");
    let minting = row(&rows, 6);
    assert_eq!(
        minting.credential_id, "cred-1",
        "the issuance span acts under the root's credential"
    );
    assert!(minting.violations.is_empty(), "{minting:?}");
    let early = row(&rows, 7);
    assert_eq!(early.violations, vec!["credential_not_yet_valid"]);
    let valid = row(&rows, 8);
    assert!(valid.violations.is_empty(), "{valid:?}");
    assert_eq!(valid.credential_id, "cred-2");
    assert_eq!(
        valid.credential_scopes,
        vec!["orders:write"],
        "scopes come from the issuance record"
    );
    let late = row(&rows, 9);
    assert_eq!(late.violations, vec!["credential_expired"]);

    let count = harness
        .count(&format!(
            "SELECT toUInt64(any(ViolationCount)) FROM agent_workflows WHERE WorkflowId = '{}'",
            trace_hex(trace)
        ))
        .await;
    assert_eq!(count, 5);
    let issued_sql = format!(
        "SELECT count() FROM agent_credentials WHERE WorkflowId = '{}'",
        trace_hex(trace)
    );
    assert_eq!(harness.wait_for_count(&issued_sql, 1, WAIT).await, 1);
    let issued: Vec<Issued> = harness
        .rows(&format!(
            "SELECT CredentialId, SpanId, Scopes, IssuerService FROM agent_credentials WHERE WorkflowId = '{}'",
            trace_hex(trace)
        ))
        .await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].credential_id, "cred-2");
    assert_eq!(issued[0].span_id, span_hex(6));
    assert_eq!(issued[0].scopes, vec!["orders:write"]);
    assert_eq!(issued[0].issuer_service, "vault");
}

#[tokio::test(flavor = "multi_thread")]
async fn root_scopes_beyond_issuance_flagged() {
    let harness = Harness::start(policy_config("credentials_exceeds")).await;
    let trace = 91;
    let issuance = SpanSpec::new(trace, 5, Some(1), "mint credential", 6, 8)
        .attr("agent_ledger.credential.event", "issued")
        .attr("agent_ledger.credential.id", "cred-1")
        .attr("agent_ledger.credential.scopes", "invoices:read")
        .build();
    harness
        .export(request_from("vault", vec![issuance]))
        .await
        .unwrap();
    harness
        .export(request(vec![
            root_span(trace, 1, None, 5, 100).build(),
            chat_span(trace, 2, 1, 10, 20).build(),
            tool(trace, 3, 21, "lookup_invoice").build(),
        ]))
        .await
        .unwrap();
    let rows = checked(&harness, trace, 4).await;
    assert_eq!(
        row(&rows, 1).violations,
        vec!["scope_exceeds_issuance"],
        "the root declares invoices:write, which was not issued"
    );
    assert!(row(&rows, 3).violations.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_root_credential_flags_every_step() {
    let harness = Harness::start(policy_config("credentials_expired_root")).await;
    let trace = 92;
    harness
        .export(request(vec![
            root_span(trace, 1, None, 0, 100)
                .attr("agent_ledger.credential.expires_at", "2020-01-01T00:00:00Z")
                .build(),
            chat_span(trace, 2, 1, 10, 20).build(),
            tool(trace, 3, 21, "lookup_invoice").build(),
        ]))
        .await
        .unwrap();
    let rows = checked(&harness, trace, 3).await;
    for row in &rows {
        assert_eq!(row.violations, vec!["credential_expired"], "{row:?}");
    }
    let count = harness
        .count(&format!(
            "SELECT toUInt64(any(ViolationCount)) FROM agent_workflows WHERE WorkflowId = '{}'",
            trace_hex(trace)
        ))
        .await;
    assert_eq!(count, 3);
    let stored = harness
        .count(&format!(
            "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
            trace_hex(trace)
        ))
        .await;
    assert_eq!(stored, 3, "violations never drop spans");
}
