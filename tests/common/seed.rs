//! A seeded audit trail for the evidence and dashboard tests.
//!
//! Four workflows go through a real receiver over OTLP: one valid, one
//! rejected, one left incomplete, and one incomplete that becomes valid
//! when its root arrives. Rows that stages still under construction will
//! write (violations, redactions, write actions, credential issuance,
//! ledger entries, checkpoints, verify runs) are inserted directly, with the
//! crate's row types or SQL INSERTs, at fixed times after `base_nanos()`.

use std::time::Duration;

use agent_ledger::clickhouse::rows::{SpanRow, WorkflowRow};

use super::*;

pub const HOUR: i64 = 3_600_000_000_000;
pub const DAY: i64 = 24 * HOUR;

/// Trace numbers of the workflows sent through the receiver.
pub const VALID: u64 = 101;
pub const REJECTED: u64 = 102;
pub const INCOMPLETE: u64 = 103;
pub const COMPLETED_LATER: u64 = 104;

/// Trace numbers of the workflows inserted directly.
pub const UNATTENDED: u64 = 201;
pub const AUTHORIZED: u64 = 202;
/// Model version series of support-bot on gpt-4o: one workflow a day from
/// day 1, versions v1, v1, v2, v2, v2, v1.
pub const SERIES: [(u64, &str); 6] = [
    (301, "gpt-4o-v1"),
    (302, "gpt-4o-v1"),
    (303, "gpt-4o-v2"),
    (304, "gpt-4o-v2"),
    (305, "gpt-4o-v2"),
    (306, "gpt-4o-v1"),
];

/// cred-support, used by every support-bot workflow: valid from a day
/// before the base time to ten days after.
pub const SUPPORT_SCOPES: [&str; 2] = ["orders:read", "refunds:write"];
pub const SUPPORT_ISSUED_AT: i64 = 1_796_000_000_000_000_000 - DAY;
pub const SUPPORT_EXPIRES_AT: i64 = 1_796_000_000_000_000_000 + 10 * DAY;

/// The seeded database.
#[derive(Clone, Debug)]
pub struct Seeded {
    pub config: agent_ledger::config::Config,
}

impl Seeded {
    pub fn client(&self) -> clickhouse::Client {
        agent_ledger::clickhouse::client(&self.config.clickhouse).expect("client")
    }

    /// Returns the period that contains every seeded row, as RFC 3339 texts.
    pub fn period(&self) -> (String, String) {
        (
            rfc3339(base_nanos() as i64 - DAY),
            rfc3339(base_nanos() as i64 + 10 * DAY),
        )
    }
}

pub fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Hex trace id of a directly inserted workflow.
pub fn direct_trace(n: u64) -> String {
    format!("cdcdcdcdcdcdcdcd{n:016x}")
}

/// Hex span id of a directly inserted step.
pub fn direct_span(trace: u64, step: u64) -> String {
    format!("{:016x}", 0x2000_0000_0000_0000 | (trace << 8) | step)
}

/// Seeds a new database and returns it once everything is stored.
pub async fn seed(test: &str) -> Seeded {
    let mut config = test_config(test);
    config.assembler.root_wait = Duration::from_secs(1);
    let mut harness = Harness::start(config.clone()).await;
    send_workflows(&harness).await;
    insert_direct_rows(&harness.client).await;
    harness.stop().await;
    remove_receiver_ledger(&harness.client).await;
    Seeded { config }
}

/// Removes the ledger entries and checkpoints the seeding receiver wrote
/// under its own instance id, so that the integrity queries see only the
/// seeded instances `ledger-a` and `ledger-b`.
async fn remove_receiver_ledger(client: &clickhouse::Client) {
    for table in ["agent_ledger_entries", "agent_ledger_checkpoints"] {
        client
            .query(&format!(
                "ALTER TABLE {table} DELETE WHERE InstanceId NOT LIKE 'ledger-%' SETTINGS mutations_sync = 1"
            ))
            .execute()
            .await
            .unwrap_or_else(|error| panic!("removing the receiver's rows from {table} failed: {error}"));
    }
}

async fn send_workflows(harness: &Harness) {
    let valid = vec![
        root_span(VALID, 1, None, 0, 100).build(),
        chat_span(VALID, 2, 1, 10, 20).build(),
        tool_span(VALID, 3, 1, 21, 30).build(),
    ];
    harness.export(request(valid)).await.unwrap();
    let rejected_root = SpanSpec::new(REJECTED, 1, None, "handle task", 0, 50)
        .attr("agent_ledger.origin.type", "schedule")
        .attr("agent_ledger.task.spec", "Nightly cleanup")
        .attr("agent_ledger.credential.id", "cred-9")
        .build();
    harness
        .export(request(vec![
            rejected_root,
            chat_span(REJECTED, 2, 1, 10, 20).build(),
        ]))
        .await
        .unwrap();
    for trace in [INCOMPLETE, COMPLETED_LATER] {
        let orphans = vec![
            chat_span(trace, 2, 1, 10, 20).build(),
            tool_span(trace, 3, 1, 21, 30).build(),
        ];
        harness.export(request(orphans)).await.unwrap();
    }
    let incomplete_sql = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}' AND Status = 'incomplete'",
        trace_hex(COMPLETED_LATER)
    );
    assert_eq!(
        harness.wait_for_count(&incomplete_sql, 1, WAIT).await,
        1,
        "incomplete verdict written"
    );
    harness
        .export(request(vec![
            root_span(COMPLETED_LATER, 1, None, 0, 50).build(),
        ]))
        .await
        .unwrap();
    let verdicts = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId IN ('{}', '{}', '{}', '{}')",
        trace_hex(VALID),
        trace_hex(REJECTED),
        trace_hex(INCOMPLETE),
        trace_hex(COMPLETED_LATER)
    );
    assert_eq!(
        harness.wait_for_count(&verdicts, 5, WAIT).await,
        5,
        "every verdict revision written"
    );
}

async fn insert_direct_rows(client: &clickhouse::Client) {
    let mut spans = unattended_workflow();
    spans.extend(authorized_workflow());
    let mut workflows = vec![
        workflow_row(UNATTENDED, "ops-bot", 0),
        workflow_row(AUTHORIZED, "support-bot", 30 * 60 * 1_000_000_000),
    ];
    for (day, (trace, version)) in SERIES.iter().enumerate() {
        let at = (day as i64 + 1) * DAY;
        spans.extend(series_workflow(*trace, version, at));
        workflows.push(workflow_row(*trace, "support-bot", at));
    }
    insert(client, "agent_spans", &spans).await;
    insert(client, "agent_workflows", &workflows).await;
    for statement in integrity_inserts() {
        client
            .query(&statement)
            .execute()
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

async fn insert<T>(client: &clickhouse::Client, table: &str, rows: &[T])
where
    T: clickhouse::RowOwned + clickhouse::RowWrite + serde::Serialize,
    T: for<'a> clickhouse::Row<Value<'a> = T>,
{
    let mut insert = client.insert::<T>(table).await.expect("insert starts");
    for row in rows {
        insert.write(row).await.expect("row written");
    }
    insert.end().await.expect("insert ends");
}

/// ops-bot on a schedule, no authorizing principal, credential cred-ops
/// valid from base - 1h to base + 1h: a model call, then two write actions,
/// one outside its scopes and one after the credential expired.
fn unattended_workflow() -> Vec<SpanRow> {
    let trace = UNATTENDED;
    let at = |offset: i64| base_nanos() as i64 + offset;
    let mut root = step(trace, 1, None, 0, "root", "nightly ticket cleanup", at(0));
    root.duration = (3 * HOUR) as u64;
    let chat = SpanRow {
        model_name: "gpt-4o".into(),
        model_version: "gpt-4o-2024-08-06".into(),
        provider: "openai".into(),
        ..step(
            trace,
            2,
            Some(1),
            1,
            "inference",
            "chat gpt-4o",
            at(60_000_000_000),
        )
    };
    let delete = SpanRow {
        tool_name: "delete_ticket".into(),
        write_action: 1,
        violations: vec!["scope_violation".to_owned()],
        ..step(
            trace,
            3,
            Some(1),
            2,
            "tool",
            "execute_tool delete_ticket",
            at(600_000_000_000),
        )
    };
    let close = SpanRow {
        tool_name: "close_ticket".into(),
        write_action: 1,
        violations: vec!["credential_expired".to_owned()],
        ..step(
            trace,
            4,
            Some(1),
            3,
            "tool",
            "execute_tool close_ticket",
            at(2 * HOUR),
        )
    };
    let mut rows = vec![root, chat, delete, close];
    for row in &mut rows {
        row.agent_name = "ops-bot".into();
        row.agent_version = "2.0.0".into();
        row.origin_type = "schedule".into();
        row.origin_source = "cron".into();
        row.task_spec = ("Close stale tickets".to_owned()).into();
        set_credential(row, "cred-ops", &["tickets:read"], at(-HOUR), at(HOUR));
    }
    rows
}

/// support-bot on a user request authorized by user-100: a refund (a write
/// action with a human principal) whose arguments held two secrets, and a
/// lookup that held one.
fn authorized_workflow() -> Vec<SpanRow> {
    let trace = AUTHORIZED;
    let at = |offset: i64| base_nanos() as i64 + 30 * 60 * 1_000_000_000 + offset;
    let root = step(trace, 1, None, 0, "root", "handle refund request", at(0));
    let lookup = SpanRow {
        tool_name: "lookup_order".into(),
        redacted_count: 1,
        redacted_kinds: vec!["bearer_token".to_owned()],
        ..step(
            trace,
            2,
            Some(1),
            1,
            "tool",
            "execute_tool lookup_order",
            at(1_000_000_000),
        )
    };
    let refund = SpanRow {
        tool_name: "refund".into(),
        write_action: 1,
        redacted_count: 2,
        redacted_kinds: vec!["bearer_token".to_owned(), "api_key".to_owned()],
        ..step(
            trace,
            3,
            Some(1),
            2,
            "tool",
            "execute_tool refund",
            at(2_000_000_000),
        )
    };
    let mut rows = vec![root, lookup, refund];
    for row in &mut rows {
        row.agent_name = "support-bot".into();
        row.agent_version = "1.4.2".into();
        row.origin_type = "user_request".into();
        row.origin_source = "support-portal".into();
        row.authorized_by = "user-100".into();
        row.task_spec = ("Refund order 1042".to_owned()).into();
        set_credential(
            row,
            "cred-support",
            &SUPPORT_SCOPES,
            SUPPORT_ISSUED_AT,
            SUPPORT_EXPIRES_AT,
        );
    }
    rows
}

/// One workflow of the model version series: a root and one model call.
fn series_workflow(trace: u64, version: &str, offset: i64) -> Vec<SpanRow> {
    let at = base_nanos() as i64 + offset;
    let root = step(trace, 1, None, 0, "root", "answer question", at);
    let chat = SpanRow {
        model_name: "gpt-4o".into(),
        model_version: version.into(),
        ..step(
            trace,
            2,
            Some(1),
            1,
            "inference",
            "chat gpt-4o",
            at + 1_000_000_000,
        )
    };
    let mut rows = vec![root, chat];
    for row in &mut rows {
        row.agent_name = "support-bot".into();
        row.agent_version = "1.4.2".into();
        row.origin_type = "user_request".into();
        row.origin_source = "support-portal".into();
        row.authorized_by = "user-200".into();
        set_credential(
            row,
            "cred-support",
            &SUPPORT_SCOPES,
            SUPPORT_ISSUED_AT,
            SUPPORT_EXPIRES_AT,
        );
    }
    rows
}

fn set_credential(row: &mut SpanRow, id: &str, scopes: &[&str], issued_at: i64, expires_at: i64) {
    row.credential_id = id.to_owned();
    row.workflow_credential_id = id.into();
    row.credential_issuer = "vault".to_owned();
    row.credential_scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    row.credential_issued_at = Some(issued_at);
    row.credential_expires_at = Some(expires_at);
}

/// Builds a step with the given identity and time, everything else empty.
fn step(
    trace: u64,
    span: u64,
    parent: Option<u64>,
    index: u32,
    kind: &str,
    name: &str,
    at: i64,
) -> SpanRow {
    SpanRow {
        timestamp: at,
        trace_id: direct_trace(trace).into(),
        span_id: direct_span(trace, span),
        parent_span_id: parent
            .map(|parent| direct_span(trace, parent))
            .unwrap_or_default(),
        trace_state: Default::default(),
        span_name: name.into(),
        span_kind: "Internal".into(),
        service_name: "seeded-agent".into(),
        resource_attributes: vec![("service.name".into(), "seeded-agent".into())],
        scope_name: "seed".into(),
        scope_version: Default::default(),
        span_attributes: Vec::new(),
        duration: 1_000_000,
        status_code: "Unset".into(),
        status_message: Default::default(),
        events_timestamp: Vec::new(),
        events_name: Vec::new(),
        events_attributes: Vec::new(),
        links_trace_id: Vec::new(),
        links_span_id: Vec::new(),
        links_trace_state: Vec::new(),
        links_attributes: Vec::new(),
        workflow_root_span_id: direct_span(trace, 1).into(),
        step_index: index,
        step_kind: kind.into(),
        agent_name: Default::default(),
        agent_id: Default::default(),
        agent_version: Default::default(),
        model_name: Default::default(),
        model_version: Default::default(),
        provider: Default::default(),
        origin_type: Default::default(),
        origin_source: Default::default(),
        task_spec: Default::default(),
        authorized_by: Default::default(),
        credential_id: String::new(),
        credential_issuer: String::new(),
        credential_scopes: Vec::new(),
        credential_issued_at: None,
        credential_expires_at: None,
        workflow_credential_id: Default::default(),
        tool_name: Default::default(),
        tool_call_id: Default::default(),
        violations: Vec::new(),
        redacted_count: 0,
        redacted_kinds: Vec::new(),
        write_action: 0,
        sender: "seed".into(),
        received_at: agent_ledger::now_unix_nano(),
        late: 0,
        segment: 0,
        prev_hash: String::new(),
        row_hash: String::new(),
    }
}

/// Builds the valid verdict of a directly inserted workflow.
fn workflow_row(trace: u64, agent: &str, offset: i64) -> WorkflowRow {
    let now = agent_ledger::now_unix_nano();
    WorkflowRow {
        workflow_id: direct_trace(trace),
        root_span_id: direct_span(trace, 1),
        revision: 1,
        segment: 0,
        status: "valid".to_owned(),
        reasons: Vec::new(),
        timestamp: base_nanos() as i64 + offset,
        duration: 1_000_000,
        origin_type: String::new(),
        origin_source: String::new(),
        task_spec: String::new(),
        authorized_by: String::new(),
        origin_received_at: base_nanos() as i64 + offset,
        agent_name: agent.to_owned(),
        agent_id: String::new(),
        agent_version: String::new(),
        agent_names: vec![agent.to_owned()],
        model_names: Vec::new(),
        model_versions: Vec::new(),
        provider: String::new(),
        credential_id: String::new(),
        credential_issuer: String::new(),
        credential_scopes: Vec::new(),
        credential_issued_at: None,
        credential_expires_at: None,
        step_count: 0,
        tools_used: Vec::new(),
        violation_count: 0,
        row_count: 0,
        header_hash: String::new(),
        chain_head: String::new(),
        sender: "seed".to_owned(),
        received_at: now,
        written_at: now,
        ledger_instance_id: String::new(),
        ledger_seq: 0,
    }
}

/// Builds INSERTs of credential issuance, ledger entries, checkpoints and
/// verify runs. Instance ledger-a has entries 1 to 25 and checkpoints up to
/// 10 (key k1) and 20 (key k2). Instance ledger-b has entries 1 to 3 and no
/// checkpoint. One
/// verify run is clean, one found two row hash mismatches.
fn integrity_inserts() -> Vec<String> {
    let at = |offset: i64| {
        format!(
            "fromUnixTimestamp64Nano(toInt64({}))",
            base_nanos() as i64 + offset
        )
    };
    vec![
        format!(
            "INSERT INTO agent_credentials (CredentialId, WorkflowId, SpanId, Issuer, Scopes, IssuedAt, ExpiresAt, \
             IssuerService, Sender, ReceivedAt) VALUES \
             ('cred-1', '', '', 'vault', ['invoices:read', 'invoices:write'], {}, {}, 'vault-agent', 'seed', now64(9))",
            at(-DAY),
            at(DAY)
        ),
        format!(
            "INSERT INTO agent_ledger_entries (InstanceId, Seq, Kind, WorkflowId, RootSpanId, Segment, ChainHead, \
             PrevEntryHash, EntryHash, ReceivedAt) \
             SELECT 'ledger-a', number + 1, 'workflow', '', '', 0, '', '', '', {} FROM numbers(25) \
             UNION ALL \
             SELECT 'ledger-b', number + 1, 'workflow', '', '', 0, '', '', '', {} FROM numbers(3)",
            at(HOUR / 2),
            at(HOUR / 2)
        ),
        format!(
            "INSERT INTO agent_ledger_checkpoints (InstanceId, FirstSeq, LastSeq, LastEntryHash, SignedAt, KeyId, \
             Signature) VALUES ('ledger-a', 1, 10, 'h10', {}, 'k1', 's1'), ('ledger-a', 11, 20, 'h20', {}, 'k2', 's2')",
            at(HOUR),
            at(2 * HOUR)
        ),
        format!(
            "INSERT INTO agent_verify_runs (RunId, InstanceId, StartedAt, FinishedAt, PeriodFrom, PeriodTo, WorkflowId, \
             Result, RowsChecked, EntriesChecked, CheckpointsChecked, Findings, FindingCounts, KeyIds, Version) VALUES \
             ('run-1', 'ledger-a', {}, {}, NULL, NULL, '', 'clean', 40, 25, 2, 0, map(), ['k1', 'k2'], '0.1.0'), \
             ('run-2', 'ledger-a', {}, {}, NULL, NULL, '', 'findings', 40, 25, 2, 2, map('row_hash_mismatch', 2), ['k2'], '0.1.0')",
            at(3 * HOUR),
            at(3 * HOUR + 1_000_000_000),
            at(4 * HOUR),
            at(4 * HOUR + 1_000_000_000)
        ),
    ]
}
