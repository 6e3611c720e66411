//! Workflow assembly end to end: a receiver on a loopback port, real OTLP
//! clients, and the embedded ClickHouse engine as storage.

mod common;

use std::time::{Duration, SystemTime};

use clickhouse::Row;
use common::*;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredStep {
    span_id: String,
    step_index: u32,
    step_kind: String,

    workflow_root_span_id: String,
    agent_name: String,
    model_name: String,
    model_version: String,
    origin_type: String,
    origin_source: String,
    task_spec: String,
    authorized_by: String,
    credential_id: String,
    credential_issuer: String,
    credential_scopes: Vec<String>,
    workflow_credential_id: String,
    tool_name: String,
    tool_call_id: String,
    service_name: String,
    received_at: i64,
    late: u8,
    segment: u32,
    causes: Vec<(String, String)>,
}

const STEP_COLUMNS: &str = "SpanId, StepIndex, StepKind, WorkflowRootSpanId, AgentName, ModelName, ModelVersion, \
    OriginType, OriginSource, TaskSpec, AuthorizedBy, CredentialId, CredentialIssuer, CredentialScopes, \
    WorkflowCredentialId, ToolName, ToolCallId, ServiceName, toUnixTimestamp64Nano(ReceivedAt) AS ReceivedAt, Late, Segment, \
    arrayFilter((id, basis) -> basis != '', arrayZip(`Links.SpanId`, \
        arrayMap(a -> a['agent_ledger.link.basis'], `Links.Attributes`))) AS Causes";

async fn steps(harness: &Harness, trace: &str) -> Vec<StoredStep> {
    harness
        .rows(&format!("SELECT {STEP_COLUMNS} FROM agent_spans WHERE TraceId = '{trace}' ORDER BY Segment, StepIndex"))
        .await
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Verdict {
    root_span_id: String,
    revision: u32,
    status: String,
    reasons: Vec<String>,
    agent_names: Vec<String>,
    model_versions: Vec<String>,
    step_count: u32,
}

/// The verdict rows of a trace, once `expected` of them are written.
async fn verdicts(harness: &Harness, trace: &str, expected: u64) -> Vec<Verdict> {
    let sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&sql, expected, WAIT).await,
        expected,
        "verdict rows of {trace}"
    );
    harness
        .rows(&format!(
            "SELECT RootSpanId, Revision, Status, Reasons, AgentNames, ModelVersions, StepCount \
             FROM agent_workflows WHERE WorkflowId = '{trace}' ORDER BY RootSpanId, Revision, Segment"
        ))
        .await
}

async fn rejected(harness: &Harness, trace: &str) -> Vec<(String, String)> {
    harness
        .rows(&format!(
            "SELECT SpanId, Reason FROM agent_rejected_spans WHERE TraceId = '{trace}' ORDER BY SpanId, Reason"
        ))
        .await
}

fn scopes(list: &[&str]) -> Value {
    let items: Vec<StringValue> = list
        .iter()
        .map(|scope| StringValue::from(scope.to_string()))
        .collect();
    Value::Array(Array::String(items))
}

/// Sends a five-step workflow with the OpenTelemetry SDK; returns the trace
/// id and the span ids of root, agent, first chat, tool, second chat.
async fn send_sdk_workflow(url: &str, gzip: bool) -> (String, [String; 5]) {
    let provider = sdk_provider(url, gzip);
    let tracer = provider.tracer("workflow-test");
    let base = SystemTime::now() - Duration::from_secs(10);
    let at = |millis: u64| base + Duration::from_millis(millis);
    let root = tracer
        .span_builder("handle request")
        .with_kind(SpanKind::Server)
        .with_start_time(at(0))
        .with_attributes(vec![
            KeyValue::new("agent_ledger.origin.type", "user_request"),
            KeyValue::new("agent_ledger.origin.source", "web-app"),
            KeyValue::new("agent_ledger.origin.authorized_by", "alice@example.com"),
            KeyValue::new("agent_ledger.task.spec", "Refund order 9"),
            KeyValue::new("agent_ledger.credential.id", "cred-42"),
            KeyValue::new("agent_ledger.credential.issuer", "vault"),
            KeyValue::new(
                "agent_ledger.credential.scopes",
                scopes(&["orders:read", "refunds:write"]),
            ),
        ])
        .start(&tracer);
    let root_context = Context::current_with_span(root);
    let agent = tracer
        .span_builder("invoke_agent refunds")
        .with_start_time(at(1))
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", "refund-agent"),
        ])
        .start_with_context(&tracer, &root_context);
    let agent_context = root_context.with_span(agent);
    let chat = |start: u64, end: u64, input: &str, output: &str| {
        let mut span = tracer
            .span_builder("chat gpt-4o")
            .with_kind(SpanKind::Client)
            .with_start_time(at(start))
            .with_attributes(vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", "gpt-4o"),
                KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
                KeyValue::new("gen_ai.input.messages", input.to_owned()),
                KeyValue::new("gen_ai.output.messages", output.to_owned()),
            ])
            .start_with_context(&tracer, &agent_context);
        let id = span.span_context().span_id().to_string();
        span.end_with_timestamp(at(end));
        id
    };
    let first = chat(
        2,
        50,
        r#"[{"role":"user","parts":[{"type":"text","content":"refund order 9"}]}]"#,
        r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"call_refund","name":"refund","arguments":{"order":9}}]}]"#,
    );
    let mut tool = tracer
        .span_builder("execute_tool refund")
        .with_start_time(at(51))
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", "refund"),
            KeyValue::new("gen_ai.tool.call.id", "call_refund"),
        ])
        .start_with_context(&tracer, &agent_context);
    let tool_id = tool.span_context().span_id().to_string();
    tool.end_with_timestamp(at(70));
    let second = chat(
        71,
        90,
        r#"[{"role":"user","parts":[{"type":"text","content":"refund order 9"}]},{"role":"assistant","parts":[{"type":"tool_call","id":"call_refund","name":"refund"}]},{"role":"tool","parts":[{"type":"tool_call_response","id":"call_refund","response":"done"}]}]"#,
        r#"[{"role":"assistant","parts":[{"type":"text","content":"Refunded."}]}]"#,
    );
    let agent_id = agent_context.span().span_context().span_id().to_string();
    agent_context.span().end_with_timestamp(at(95));
    let root_id = root_context.span().span_context().span_id().to_string();
    let trace = root_context.span().span_context().trace_id().to_string();
    root_context.span().end_with_timestamp(at(100));
    drop(agent_context);
    drop(root_context);
    sdk_flush(provider).await;
    (trace, [root_id, agent_id, first, tool_id, second])
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_workflow_stored_with_contract_columns() {
    let harness = Harness::start(test_config("valid")).await;
    let (trace, [root, agent, first, tool, second]) =
        send_sdk_workflow(&harness.grpc_url(), false).await;
    let sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&sql, 1, WAIT).await,
        1,
        "one verdict is written"
    );

    let verdict = &verdicts(&harness, &trace, 1).await[0];
    assert_eq!(verdict.status, "valid", "reasons: {:?}", verdict.reasons);
    assert_eq!(verdict.root_span_id, root);
    assert_eq!(verdict.agent_names, vec!["refund-agent"]);
    assert_eq!(verdict.model_versions, vec!["gpt-4o-2024-08-06"]);
    assert_eq!(verdict.step_count, 5);

    let stored = steps(&harness, &trace).await;
    let ids: Vec<&str> = stored.iter().map(|step| step.span_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![&root, &agent, &first, &tool, &second],
        "steps in start order"
    );
    for (index, step) in stored.iter().enumerate() {
        assert_eq!(step.step_index, index as u32);
        assert_eq!(step.workflow_root_span_id, root);
        assert_eq!(step.origin_type, "user_request");
        assert_eq!(step.origin_source, "web-app");
        assert_eq!(step.task_spec, "Refund order 9");
        assert_eq!(step.authorized_by, "alice@example.com");
        assert_eq!(step.credential_id, "cred-42");
        assert_eq!(step.credential_issuer, "vault");
        assert_eq!(step.credential_scopes, vec!["orders:read", "refunds:write"]);
        assert_eq!(step.workflow_credential_id, "cred-42");
        assert_eq!(step.agent_name, "refund-agent");
        assert_eq!(step.service_name, "sdk-agent");
        assert!(step.received_at > 0);
        assert_eq!(step.late, 0);
    }
    let kinds: Vec<&str> = stored.iter().map(|step| step.step_kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["root", "agent", "inference", "tool", "inference"]
    );
    assert_eq!(stored[2].model_name, "gpt-4o");
    assert_eq!(stored[2].model_version, "gpt-4o-2024-08-06");
    assert_eq!(stored[3].tool_name, "refund");
    assert_eq!(stored[3].tool_call_id, "call_refund");
    assert_eq!(
        stored[3].causes,
        vec![(first.clone(), "tool_call_id".to_owned())],
        "tool caused by the model call that requested it"
    );
    assert_eq!(
        stored[4].causes,
        vec![(tool.clone(), "tool_call_id".to_owned())],
        "next model call caused by the tool"
    );
    assert_eq!(stored[2].causes, vec![(agent.clone(), "parent".to_owned())]);
    assert_eq!(stored[1].causes, vec![(root.clone(), "parent".to_owned())]);
    assert!(stored[0].causes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_request_from_sdk_stored() {
    let harness = Harness::start(test_config("sdk_gzip")).await;
    let (trace, _) = send_sdk_workflow(&harness.grpc_url(), true).await;
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 5, WAIT).await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn children_sent_before_root() {
    let harness = Harness::start(test_config("children_first")).await;
    let chat = chat_span(1, 3, 2, 10, 20).build();
    let tool = tool_span(1, 4, 2, 21, 30).build();
    harness.export(request(vec![chat, tool])).await.unwrap();
    let agent = SpanSpec::new(1, 2, Some(1), "invoke_agent billing", 5, 40)
        .attr("gen_ai.operation.name", "invoke_agent")
        .attr("gen_ai.agent.name", "billing-bot")
        .build();
    harness.export(request(vec![agent])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    harness
        .export(request(vec![root_span(1, 1, None, 0, 50).build()]))
        .await
        .unwrap();

    let trace = trace_hex(1);
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 4, WAIT).await, 4);
    let stored = steps(&harness, &trace).await;
    let ids: Vec<String> = stored.iter().map(|step| step.span_id.clone()).collect();
    assert_eq!(
        ids,
        vec![span_hex(1), span_hex(2), span_hex(3), span_hex(4)]
    );
    assert_eq!(
        stored[3].causes,
        vec![(span_hex(3), "sequence".to_owned())],
        "tool without call id follows the model call"
    );
    let verdict = &verdicts(&harness, &trace, 1).await[0];
    assert_eq!(verdict.status, "valid", "reasons: {:?}", verdict.reasons);
}

#[tokio::test(flavor = "multi_thread")]
async fn root_below_http_server_span() {
    let harness = Harness::start(test_config("below_http")).await;
    let server = SpanSpec::new(2, 1, None, "POST /tasks", 0, 100).build();
    let root = root_span(2, 2, Some(1), 5, 90).build();
    let chat = chat_span(2, 3, 2, 10, 20).build();
    harness
        .export(request(vec![chat, root, server]))
        .await
        .unwrap();

    let trace = trace_hex(2);
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 3, WAIT).await, 3);
    let stored = steps(&harness, &trace).await;
    let kinds: Vec<(&str, &str)> = stored
        .iter()
        .map(|step| (step.span_id.as_str(), step.step_kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (span_hex(1).as_str(), "context"),
            (span_hex(2).as_str(), "root"),
            (span_hex(3).as_str(), "inference")
        ]
    );
    assert!(
        stored
            .iter()
            .all(|step| step.workflow_root_span_id == span_hex(2))
    );
    let verdicts = verdicts(&harness, &trace, 1).await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].root_span_id, span_hex(2));
    assert_eq!(verdicts[0].status, "valid");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_workflow_quarantined_with_reasons() {
    let harness = Harness::start(test_config("rejected")).await;
    let root = SpanSpec::new(3, 1, None, "handle task", 0, 50)
        .attr("agent_ledger.origin.type", "schedule")
        .attr("agent_ledger.task.spec", "Nightly cleanup")
        .attr("agent_ledger.credential.id", "cred-9")
        .build();
    let chat = chat_span(3, 2, 1, 10, 20).build();
    let response = harness.export(request(vec![chat, root])).await.unwrap();
    let partial = response
        .partial_success
        .expect("root failing the policy is reported at once");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("missing agent_ledger.origin.source on root span"),
        "{}",
        partial.error_message
    );
    assert!(
        partial
            .error_message
            .contains("missing agent_ledger.credential.scopes on root span"),
        "{}",
        partial.error_message
    );
    assert!(partial.error_message.contains(&span_hex(1)));

    let trace = trace_hex(3);
    let sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 1, WAIT).await, 1);
    let verdict = &verdicts(&harness, &trace, 1).await[0];
    assert_eq!(verdict.status, "rejected");
    assert_eq!(
        verdict.reasons,
        vec![
            "missing agent_ledger.origin.source on root span".to_owned(),
            "missing agent_ledger.credential.scopes on root span".to_owned(),
            "missing agent name: set gen_ai.agent.name on the root span or on an invoke_agent span inside the workflow".to_owned(),
        ]
    );
    let quarantined = rejected(&harness, &trace).await;
    assert_eq!(
        quarantined,
        vec![
            (span_hex(1), "policy_rejected".to_owned()),
            (span_hex(2), "policy_rejected".to_owned())
        ]
    );
    assert_eq!(
        harness
            .count(&format!(
                "SELECT count() FROM agent_spans WHERE TraceId = '{trace}'"
            ))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_without_root_rejected() {
    let harness = Harness::start(test_config("no_root")).await;
    let top = SpanSpec::new(4, 1, None, "invoke_agent helper", 0, 50)
        .attr("gen_ai.agent.name", "helper")
        .build();
    let chat = chat_span(4, 2, 1, 10, 20).build();
    harness.export(request(vec![chat, top])).await.unwrap();
    let trace = trace_hex(4);
    let sql = format!("SELECT count() FROM agent_rejected_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&verdict_sql, 1, WAIT).await, 1);
    let quarantined = rejected(&harness, &trace).await;
    assert!(
        quarantined
            .iter()
            .all(|(_, reason)| reason == "no_workflow_root"),
        "{quarantined:?}"
    );
    let verdict = &verdicts(&harness, &trace, 1).await[0];
    assert_eq!(verdict.status, "rejected");
    assert!(
        verdict.reasons[0].starts_with("no span carries agent_ledger.origin.type"),
        "{:?}",
        verdict.reasons
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incomplete_workflow_admitted_when_root_arrives() {
    let mut config = test_config("incomplete");
    config.assembler.root_wait = Duration::from_secs(1);
    let harness = Harness::start(config).await;
    let chat = chat_span(5, 2, 1, 10, 20).build();
    let tool = tool_span(5, 3, 1, 21, 30).build();
    harness.export(request(vec![chat, tool])).await.unwrap();

    let trace = trace_hex(5);
    let quarantine_sql = format!(
        "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{trace}' AND Reason = 'root_span_missing'"
    );
    assert_eq!(harness.wait_for_count(&quarantine_sql, 2, WAIT).await, 2);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(harness.wait_for_count(&verdict_sql, 1, WAIT).await, 1);
    let first = verdicts(&harness, &trace, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].status, "incomplete");
    assert_eq!(first[0].root_span_id, span_hex(1));
    assert_eq!(first[0].revision, 1);

    harness
        .export(request(vec![root_span(5, 1, None, 0, 50).build()]))
        .await
        .unwrap();
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&sql, 3, WAIT).await,
        3,
        "quarantined spans are admitted"
    );
    assert_eq!(harness.wait_for_count(&verdict_sql, 2, WAIT).await, 2);
    let all = verdicts(&harness, &trace, 2).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].status, "valid", "reasons: {:?}", all[1].reasons);
    assert_eq!(
        all[1].revision, 2,
        "the new verdict supersedes the incomplete one"
    );
    assert_eq!(
        harness.count(&quarantine_sql).await,
        2,
        "quarantine rows stay as history"
    );
    let stored = steps(&harness, &trace).await;
    assert_eq!(stored[2].causes, vec![(span_hex(2), "sequence".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_child_extends_written_workflow() {
    let harness = Harness::start(test_config("late")).await;
    let spans = vec![
        root_span(6, 1, None, 0, 100).build(),
        chat_span(6, 2, 1, 10, 20).build(),
    ];
    harness.export(request(spans)).await.unwrap();
    let trace = trace_hex(6);
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);

    harness
        .export(request(vec![tool_span(6, 3, 1, 30, 40).build()]))
        .await
        .unwrap();
    assert_eq!(harness.wait_for_count(&sql, 3, WAIT).await, 3);
    let verdict_sql = format!("SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&verdict_sql, 2, WAIT).await,
        2,
        "the late segment writes a new verdict revision"
    );
    let stored = steps(&harness, &trace).await;
    let late = &stored[2];
    assert_eq!(late.span_id, span_hex(3));
    assert_eq!(late.late, 1);
    assert_eq!(late.segment, 1);
    assert_eq!(late.step_index, 2);
    assert_eq!(
        late.origin_type, "event",
        "late steps carry the workflow's origin"
    );
    assert_eq!(late.credential_id, "cred-1");
    assert_eq!(late.causes, vec![(span_hex(1), "parent".to_owned())]);
    assert_eq!(
        harness
            .count(&format!(
                "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{trace}'"
            ))
            .await,
        0
    );
    let all = verdicts(&harness, &trace, 2).await;
    assert_eq!(all.last().unwrap().step_count, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn resent_request_stored_once() {
    let harness = Harness::start(test_config("resent")).await;
    let spans = || {
        vec![
            root_span(7, 1, None, 0, 100).build(),
            chat_span(7, 2, 1, 10, 20).build(),
        ]
    };
    harness.export(request(spans())).await.unwrap();
    harness.export(request(spans())).await.unwrap();
    let trace = trace_hex(7);
    let sql = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(harness.wait_for_count(&sql, 2, WAIT).await, 2);
    harness.export(request(spans())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        harness.count(&sql).await,
        2,
        "re-sent spans are not stored again"
    );
    assert_eq!(
        harness
            .count(&format!(
                "SELECT count() FROM agent_workflows WHERE WorkflowId = '{trace}'"
            ))
            .await,
        1
    );

    let (_, metrics) = http_get(&format!("{}/metrics", harness.admin_url())).await;
    assert!(
        metrics.contains("agent_ledger_spans_duplicate_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_duplicate_quarantined() {
    let harness = Harness::start(test_config("conflict")).await;
    harness
        .export(request(vec![
            root_span(8, 1, None, 0, 100).build(),
            chat_span(8, 2, 1, 10, 20).build(),
        ]))
        .await
        .unwrap();
    let changed = chat_span(8, 2, 1, 10, 25).build();
    harness.export(request(vec![changed])).await.unwrap();
    let trace = trace_hex(8);
    let sql = format!(
        "SELECT count() FROM agent_rejected_spans WHERE TraceId = '{trace}' AND Reason = 'conflicting_duplicate'"
    );
    assert_eq!(harness.wait_for_count(&sql, 1, WAIT).await, 1);
    let stored = format!("SELECT count() FROM agent_spans WHERE TraceId = '{trace}'");
    assert_eq!(
        harness.wait_for_count(&stored, 2, WAIT).await,
        2,
        "the first copy is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_writes_buffered_workflows() {
    let mut config = test_config("shutdown");
    config.assembler.settle = Duration::from_secs(60);
    let mut harness = Harness::start(config).await;
    harness
        .export(request(vec![
            root_span(9, 1, None, 0, 100).build(),
            chat_span(9, 2, 1, 10, 20).build(),
        ]))
        .await
        .unwrap();
    harness.stop().await;
    let sql = format!(
        "SELECT count() FROM agent_spans WHERE TraceId = '{}'",
        trace_hex(9)
    );
    assert_eq!(
        harness.count(&sql).await,
        2,
        "shutdown completes waiting workflows"
    );
}
