//! Sealing end to end. A receiver writes workflows to the embedded
//! ClickHouse and the stored trail is tampered with in SQL. The real
//! `agent-ledger verify` binary must name each change with its kind and
//! ids, and exit 0 for an untouched trail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_ledger::clickhouse::rows::{CheckpointRow, LedgerEntryRow, SpanRow, WorkflowRow};
use agent_ledger::config::Config;
use agent_ledger::otlp::{self, AnyValue, ArrayValue, KeyValue, any_value};
use agent_ledger::span::Str;
use common::*;
use serde_json::Value;

/// Spans per workflow sent by [`send_workflows`].
const SPANS_PER_WORKFLOW: u64 = 4;

fn sealed_config(test: &str, dir: &Path) -> Config {
    let mut config = test_config(test);
    config.seal.instance_id = format!("it-{test}");
    config.seal.signing_key_file = Some(dir.join("ledger.key"));
    config.seal.checkpoint_dir = Some(dir.join("checkpoints"));
    config
}

/// Creates a key pair and a receiver, sends `traces` as valid four-step
/// workflows and stops the receiver, which writes the final checkpoint.
async fn sealed_trail(test: &str, traces: &[u64]) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    agent_ledger::seal::keys::generate(&dir.path().join("ledger.key")).unwrap();
    let mut harness = Harness::start(sealed_config(test, dir.path())).await;
    send_workflows(&harness, traces).await;
    harness.stop().await;
    (harness, dir)
}

async fn send_workflows(harness: &Harness, traces: &[u64]) {
    for trace in traces {
        harness
            .export(request(vec![
                root_span(*trace, 1, None, 0, 100).build(),
                chat_span(*trace, 2, 1, 10, 20).build(),
                tool_span(*trace, 3, 1, 21, 30).build(),
                chat_span(*trace, 4, 1, 31, 40).build(),
            ]))
            .await
            .unwrap();
    }
    let sql = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId IN ({})",
        traces
            .iter()
            .map(|trace| format!("'{}'", trace_hex(*trace)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let expected = traces.len() as u64;
    assert_eq!(
        harness.wait_for_count(&sql, expected, WAIT).await,
        expected,
        "verdicts written"
    );
}

/// The outcome of one `agent-ledger verify --format json` run.
struct Verified {
    status: i32,
    json: Value,
    stderr: String,
}

impl Verified {
    fn findings(&self) -> Vec<Value> {
        self.json["report"]["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.findings()
            .into_iter()
            .filter(|finding| finding["kind"] == kind)
            .collect()
    }
}

/// Runs the binary against the harness's database.
async fn verify(harness: &Harness, args: &[&str]) -> Verified {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-ledger"));
    command
        .arg("verify")
        .args(["--format", "json"])
        .args(args)
        .env(
            "AGENT_LEDGER_CLICKHOUSE_URL",
            &harness.config.clickhouse.url,
        )
        .env(
            "AGENT_LEDGER_CLICKHOUSE_DATABASE",
            &harness.config.clickhouse.database,
        )
        .env("AGENT_LEDGER_INSTANCE_ID", "verifier");
    let output = tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Verified {
        status: output.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

fn key_args(dir: &Path) -> Vec<String> {
    vec![
        "--public-key".to_owned(),
        dir.join("ledger.key.pub").display().to_string(),
        "--checkpoint-dir".to_owned(),
        dir.join("checkpoints").display().to_string(),
    ]
}

async fn verify_with_keys(harness: &Harness, dir: &Path, extra: &[&str]) -> Verified {
    let mut args = key_args(dir);
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    verify(harness, &args).await
}

async fn execute(harness: &Harness, sql: &str) {
    harness
        .client
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|error| panic!("{sql} failed: {error}"));
}

async fn span_rows(harness: &Harness, trace: u64) -> Vec<SpanRow> {
    harness
        .rows(&format!(
            "SELECT ?fields FROM agent_spans WHERE TraceId = '{}' ORDER BY Segment, StepIndex",
            trace_hex(trace)
        ))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn untouched_trail_verifies_clean() {
    let (harness, dir) = sealed_trail("seal_clean", &[60, 61, 62]).await;
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(
        verified.status, 0,
        "{:#} {}",
        verified.json, verified.stderr
    );
    assert_eq!(verified.json["result"], "clean");
    assert!(verified.findings().is_empty(), "{:#}", verified.json);
    let report = &verified.json["report"];
    assert_eq!(report["workflows_checked"], 3);
    assert!(
        report["rows_checked"].as_u64().unwrap() >= 3 * SPANS_PER_WORKFLOW,
        "{report:#}"
    );
    assert!(
        report["checkpoints_checked"].as_u64().unwrap() >= 2,
        "a stored checkpoint and its file: {report:#}"
    );
    assert_eq!(report["signatures_checked"], true);

    let one = verify_with_keys(&harness, dir.path(), &["--workflow", &trace_hex(61)]).await;
    assert_eq!(one.status, 0, "{:#}", one.json);
    assert_eq!(one.json["report"]["workflows_checked"], 1);
    let period = verify_with_keys(
        &harness,
        dir.path(),
        &["--from", "2000-01-01", "--to", "2200-01-01"],
    )
    .await;
    assert_eq!(period.status, 0, "{:#} {}", period.json, period.stderr);
    assert_eq!(period.json["report"]["workflows_checked"], 3);

    let runs = harness
        .count("SELECT count() FROM agent_verify_runs WHERE Result = 'clean'")
        .await;
    assert_eq!(runs, 3, "each run is recorded");
}

fn value_attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec().into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn text_pairs(row: &[(Str, Str)]) -> Vec<(String, String)> {
    row.iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A workflow whose spans carry every kind of column content: attribute
/// values that are not strings, resource attributes, events, the span's own
/// links next to the linker's, trace state, a status message and a
/// redaction marker. Its rows are stored as sealed and verify clean.
#[tokio::test(flavor = "multi_thread")]
async fn rows_of_every_column_kind_verify_clean() {
    use any_value::Value as V;

    let dir = tempfile::tempdir().unwrap();
    agent_ledger::seal::keys::generate(&dir.path().join("ledger.key")).unwrap();
    let mut harness = Harness::start(sealed_config("seal_columns", dir.path())).await;
    let trace = 80;
    let mut chat = chat_span(trace, 2, 1, 10, 20)
        .attr(
            "gen_ai.output.messages",
            r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"call_7","name":"fetch"}]}]"#,
        )
        .attr("note", "token [REDACTED:github_token] was here")
        .build();
    chat.trace_state = "vendor=1".into();
    chat.attributes.extend([
        value_attr("gen_ai.usage.input_tokens", V::IntValue(812)),
        value_attr("gen_ai.request.temperature", V::DoubleValue(0.25)),
        value_attr("cache.hit", V::BoolValue(true)),
        value_attr(
            "tags",
            V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::StringValue("a".into())),
                }],
            }),
        ),
        value_attr("digest", V::BytesValue(vec![0xab, 0x01])),
    ]);
    chat.events.push(otlp::Event {
        time_unix_nano: base_nanos() + 15_000_000,
        name: "gen_ai.choice".into(),
        attributes: vec![value_attr("index", V::IntValue(0))],
        dropped_attributes_count: 0,
    });
    chat.status = Some(otlp::Status {
        message: "slow answer".into(),
        code: 1,
    });
    let mut tool = tool_span(trace, 3, 1, 21, 30)
        .attr("gen_ai.tool.call.id", "call_7")
        .build();
    tool.links.push(otlp::Link {
        trace_id: trace_id(900),
        span_id: span_id(901),
        trace_state: "other=2".into(),
        attributes: vec![KeyValue::string("reason", "follows")],
        dropped_attributes_count: 0,
        flags: 0,
    });
    let mut request = request(vec![root_span(trace, 1, None, 0, 100).build(), chat, tool]);
    let resource = request.resource_spans[0].resource.as_mut().unwrap();
    resource
        .attributes
        .push(value_attr("process.pid", V::IntValue(4242)));
    harness.export(request).await.unwrap();
    let sql = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}'",
        trace_hex(trace)
    );
    assert_eq!(harness.wait_for_count(&sql, 1, WAIT).await, 1);
    harness.stop().await;

    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(
        verified.status, 0,
        "{:#} {}",
        verified.json, verified.stderr
    );
    assert!(
        verified.json["report"]["rows_checked"].as_u64().unwrap() >= 3,
        "{:#}",
        verified.json
    );

    let rows = span_rows(&harness, trace).await;
    assert_eq!(rows.len(), 3);
    let (chat, tool) = (&rows[1], &rows[2]);
    assert!(
        text_pairs(&chat.resource_attributes).contains(&("process.pid".into(), "4242".into())),
        "{:?}",
        chat.resource_attributes
    );
    let attributes = text_pairs(&chat.span_attributes);
    for expected in [
        ("gen_ai.usage.input_tokens", "812"),
        ("gen_ai.request.temperature", "0.25"),
        ("cache.hit", "true"),
        ("tags", r#"["a"]"#),
        ("digest", "ab01"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            attributes.contains(&expected),
            "{expected:?} in {attributes:?}"
        );
    }
    assert_eq!(&*chat.trace_state, "vendor=1");
    assert_eq!(&*chat.status_message, "slow answer");
    assert_eq!(chat.events_name, vec![Str::from("gen_ai.choice")]);
    assert_eq!(
        chat.events_timestamp,
        vec![(base_nanos() + 15_000_000) as i64]
    );
    assert_eq!(
        text_pairs(&chat.events_attributes[0]),
        vec![("index".to_owned(), "0".to_owned())]
    );
    assert_eq!(chat.redacted_kinds, vec!["github_token".to_owned()]);
    assert_eq!(chat.redacted_count, 1);

    assert_eq!(tool.links_trace_id, vec![trace_hex(900), trace_hex(trace)]);
    assert_eq!(tool.links_span_id, vec![span_hex(901), span_hex(2)]);
    assert_eq!(
        tool.links_trace_state,
        vec![Str::from("other=2"), Str::new()]
    );
    assert_eq!(
        text_pairs(&tool.links_attributes[0]),
        vec![("reason".to_owned(), "follows".to_owned())]
    );
    assert_eq!(
        text_pairs(&tool.links_attributes[1]),
        vec![
            ("agent_ledger.link.type".to_owned(), "caused_by".to_owned()),
            (
                "agent_ledger.link.basis".to_owned(),
                "tool_call_id".to_owned()
            ),
        ]
    );
    assert_eq!(&*tool.tool_call_id, "call_7");
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_links_rows_in_step_order() {
    let (harness, _dir) = sealed_trail("seal_links", &[63]).await;
    let rows = span_rows(&harness, 63).await;
    let verdicts: Vec<WorkflowRow> = harness
        .rows(&format!(
            "SELECT ?fields FROM agent_workflows WHERE WorkflowId = '{}'",
            trace_hex(63)
        ))
        .await;
    let verdict = &verdicts[0];
    assert_eq!(rows.len() as u64, SPANS_PER_WORKFLOW);
    assert_eq!(
        rows[0].prev_hash, verdict.header_hash,
        "the first row starts from the header"
    );
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].row_hash,
            "step {} links to step {}",
            pair[1].step_index, pair[0].step_index
        );
    }
    assert_eq!(verdict.chain_head, rows.last().unwrap().row_hash);
    assert_eq!(verdict.row_count as u64, SPANS_PER_WORKFLOW);
    assert_eq!(verdict.header_hash.len(), 64);
    let entries: Vec<LedgerEntryRow> = harness
        .rows(&format!(
            "SELECT ?fields FROM agent_ledger_entries WHERE WorkflowId = '{}'",
            trace_hex(63)
        ))
        .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].chain_head, verdict.chain_head);
    assert_eq!(entries[0].instance_id, "it-seal_links");
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_attribute_is_row_modified() {
    let (harness, dir) = sealed_trail("seal_altered", &[64, 65]).await;
    let target = span_hex(3);
    execute(
        &harness,
        &format!(
            "ALTER TABLE agent_spans UPDATE SpanAttributes = mapUpdate(SpanAttributes, map('gen_ai.tool.name', 'wire_money')) \
             WHERE TraceId = '{}' AND SpanId = '{target}' SETTINGS mutations_sync = 1",
            trace_hex(64)
        ),
    )
    .await;
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let modified = verified.of_kind("row_modified");
    assert_eq!(modified.len(), 1, "{:#}", verified.json);
    assert_eq!(modified[0]["span_id"], target.as_str());
    assert_eq!(modified[0]["workflow_id"], trace_hex(64).as_str());
    assert_eq!(modified[0]["table"], "agent_spans");
    assert_eq!(
        verified.findings().len(),
        1,
        "nothing else is reported: {:#}",
        verified.json
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_row_is_row_missing() {
    let (harness, dir) = sealed_trail("seal_deleted", &[66]).await;
    let rows = span_rows(&harness, 66).await;
    let victim = &rows[2];
    execute(
        &harness,
        &format!(
            "ALTER TABLE agent_spans DELETE WHERE TraceId = '{}' AND SpanId = '{}' SETTINGS mutations_sync = 1",
            victim.trace_id, victim.span_id
        ),
    )
    .await;
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let missing = verified.of_kind("row_missing");
    assert_eq!(missing.len(), 1, "{:#}", verified.json);
    assert_eq!(missing[0]["workflow_id"], &*victim.trace_id);
    assert_eq!(missing[0]["step_index"], victim.step_index);
    assert!(
        verified.of_kind("row_inserted").is_empty(),
        "{:#}",
        verified.json
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_row_is_row_inserted() {
    let (harness, dir) = sealed_trail("seal_forged", &[67]).await;
    let rows = span_rows(&harness, 67).await;
    // A plausible forgery: a new tool step after step 1, linked to it, with
    // a correctly computed hash.
    let mut forged = rows[2].clone();
    forged.span_id = span_hex(99);
    forged.tool_name = "wire_money".into();
    forged.step_index = rows[2].step_index;
    let mut chained = vec![forged];
    agent_ledger::seal::chain_rows(&mut chained, &rows[1].row_hash);
    let mut insert = harness
        .client
        .insert::<SpanRow>("agent_spans")
        .await
        .unwrap();
    insert.write(&chained[0]).await.unwrap();
    insert.end().await.unwrap();

    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let inserted = verified.of_kind("row_inserted");
    assert_eq!(inserted.len(), 1, "{:#}", verified.json);
    assert_eq!(inserted[0]["span_id"], span_hex(99).as_str());
    assert_eq!(inserted[0]["workflow_id"], trace_hex(67).as_str());
    assert_eq!(
        verified.findings().len(),
        1,
        "the real rows still verify: {:#}",
        verified.json
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_workflow_and_entry_reported() {
    let (harness, dir) = sealed_trail("seal_workflow_gone", &[68, 69]).await;
    let trace = trace_hex(68);
    let seq: u64 = harness
        .count(&format!("SELECT any(Seq) FROM agent_ledger_entries WHERE Kind = 'segment' AND WorkflowId = '{trace}'"))
        .await;
    for (table, column) in [
        ("agent_spans", "TraceId"),
        ("agent_workflows", "WorkflowId"),
        ("agent_ledger_entries", "WorkflowId"),
    ] {
        execute(
            &harness,
            &format!(
                "ALTER TABLE {table} DELETE WHERE {column} = '{trace}' SETTINGS mutations_sync = 1"
            ),
        )
        .await;
    }
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let entry_missing = verified.of_kind("entry_missing");
    assert_eq!(entry_missing.len(), 1, "{:#}", verified.json);
    assert_eq!(entry_missing[0]["seq"], seq);
    assert_eq!(entry_missing[0]["instance_id"], "it-seal_workflow_gone");
    let verdict_missing: Vec<Value> = verified
        .of_kind("row_missing")
        .into_iter()
        .filter(|finding| finding["table"] == "agent_workflows")
        .collect();
    assert_eq!(
        verdict_missing.len(),
        1,
        "the verdict batch lost a row: {:#}",
        verified.json
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_checkpoint_is_invalid() {
    let (harness, dir) = sealed_trail("seal_checkpoint", &[70]).await;
    execute(
        &harness,
        &format!(
            "ALTER TABLE agent_ledger_checkpoints UPDATE LastEntryHash = '{}' WHERE 1 SETTINGS mutations_sync = 1",
            "ab".repeat(32)
        ),
    )
    .await;
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let invalid = verified.of_kind("checkpoint_invalid");
    assert!(!invalid.is_empty(), "{:#}", verified.json);
    assert!(
        invalid
            .iter()
            .all(|finding| finding["instance_id"] == "it-seal_checkpoint")
    );
    let details: Vec<&str> = invalid
        .iter()
        .filter_map(|finding| finding["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|detail| detail.contains("signature does not verify")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|detail| detail.contains("is not the EntryHash")),
        "{details:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_public_key_is_checkpoint_invalid() {
    let (harness, dir) = sealed_trail("seal_wrong_key", &[71]).await;
    let other = dir.path().join("other.key");
    let other_id = agent_ledger::seal::keys::generate(&other).unwrap();
    let public = format!("{}.pub", other.display());
    let verified = verify(&harness, &["--public-key", &public]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let invalid = verified.of_kind("checkpoint_invalid");
    assert!(!invalid.is_empty(), "{:#}", verified.json);
    let detail = invalid[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("no --public-key has that key id"),
        "{detail}"
    );
    assert_ne!(invalid[0]["key_id"], other_id.as_str());
    assert_eq!(
        verified.findings().len(),
        invalid.len(),
        "only the checkpoints fail: {:#}",
        verified.json
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_off_entries_found_against_files() {
    let dir = tempfile::tempdir().unwrap();
    agent_ledger::seal::keys::generate(&dir.path().join("ledger.key")).unwrap();
    let config = sealed_config("seal_cut", dir.path());
    let mut harness = Harness::start(config.clone()).await;
    send_workflows(&harness, &[72]).await;
    harness.stop().await;
    let first_last_seq: u64 = harness
        .count("SELECT max(LastSeq) FROM agent_ledger_checkpoints")
        .await;
    let mut harness = Harness::start(config).await;
    send_workflows(&harness, &[73]).await;
    harness.stop().await;

    for table in ["agent_ledger_entries", "agent_ledger_checkpoints"] {
        let column = if table == "agent_ledger_entries" {
            "Seq"
        } else {
            "LastSeq"
        };
        execute(&harness, &format!("ALTER TABLE {table} DELETE WHERE {column} > {first_last_seq} SETTINGS mutations_sync = 1")).await;
    }
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 1, "{:#}", verified.json);
    let missing_checkpoints = verified.of_kind("checkpoint_missing");
    assert_eq!(missing_checkpoints.len(), 1, "{:#}", verified.json);
    let cut: Vec<Value> = verified
        .of_kind("entry_missing")
        .into_iter()
        .filter(|finding| {
            finding["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("but the checkpoint signed at")
        })
        .collect();
    assert_eq!(cut.len(), 1, "{:#}", verified.json);
    assert_eq!(cut[0]["seq"], first_last_seq + 1);

    let without_files = verify(
        &harness,
        &[
            "--public-key",
            &format!("{}/ledger.key.pub", dir.path().display()),
        ],
    )
    .await;
    assert!(
        without_files.of_kind("checkpoint_missing").is_empty(),
        "without the files the cut is not visible in the ledger itself"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sequence_continues_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = sealed_config("seal_restart", dir.path());
    agent_ledger::seal::keys::generate(&dir.path().join("ledger.key")).unwrap();
    let mut harness = Harness::start(config.clone()).await;
    send_workflows(&harness, &[74]).await;
    harness.stop().await;
    let mut harness = Harness::start(config).await;
    send_workflows(&harness, &[75]).await;
    harness.stop().await;

    let seqs: Vec<u64> = harness
        .rows("SELECT Seq FROM agent_ledger_entries ORDER BY Seq")
        .await;
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "one sequence without gaps over both runs");
    let checkpoints: Vec<CheckpointRow> = harness
        .rows("SELECT ?fields FROM agent_ledger_checkpoints ORDER BY LastSeq")
        .await;
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(checkpoints[1].first_seq, checkpoints[0].last_seq + 1);
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 0, "{:#}", verified.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_segment_extends_chain() {
    let dir = tempfile::tempdir().unwrap();
    agent_ledger::seal::keys::generate(&dir.path().join("ledger.key")).unwrap();
    let mut harness = Harness::start(sealed_config("seal_late", dir.path())).await;
    send_workflows(&harness, &[76]).await;
    harness
        .export(request(vec![tool_span(76, 9, 1, 41, 50).build()]))
        .await
        .unwrap();
    let sql = format!(
        "SELECT count() FROM agent_workflows WHERE WorkflowId = '{}'",
        trace_hex(76)
    );
    assert_eq!(
        harness.wait_for_count(&sql, 2, WAIT).await,
        2,
        "the late segment writes a new revision"
    );
    harness.stop().await;

    let rows = span_rows(&harness, 76).await;
    assert_eq!(rows.len() as u64, SPANS_PER_WORKFLOW + 1);
    let late = rows.last().unwrap();
    assert_eq!(late.segment, 1);
    assert_eq!(
        late.prev_hash,
        rows[rows.len() - 2].row_hash,
        "the late segment continues from the previous head"
    );
    let verified = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(verified.status, 0, "{:#}", verified.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_rows_not_failures() {
    let (harness, dir) = sealed_trail("seal_expired", &[77]).await;
    execute(
        &harness,
        &format!(
            "ALTER TABLE agent_spans DELETE WHERE TraceId = '{}' SETTINGS mutations_sync = 1",
            trace_hex(77)
        ),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let verified = verify_with_keys(&harness, dir.path(), &["--retention", "1s"]).await;
    assert_eq!(verified.status, 0, "{:#}", verified.json);
    let expired = verified.of_kind("expired");
    assert_eq!(
        expired.len() as u64,
        SPANS_PER_WORKFLOW,
        "{:#}",
        verified.json
    );
    let strict = verify_with_keys(&harness, dir.path(), &[]).await;
    assert_eq!(strict.status, 1);
    assert_eq!(
        strict.of_kind("row_missing").len() as u64,
        SPANS_PER_WORKFLOW
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_that_cannot_run_exits_2() {
    let (harness, _dir) = sealed_trail("seal_exit2", &[78]).await;
    let bad_id = verify(&harness, &["--workflow", "not-hex"]).await;
    assert_eq!(bad_id.status, 2, "{}", bad_id.stderr);
    assert!(
        bad_id.stderr.contains("invalid --workflow \"not-hex\""),
        "{}",
        bad_id.stderr
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-ledger"));
    command
        .args(["verify", "--format", "json"])
        .env("AGENT_LEDGER_CLICKHOUSE_URL", "http://127.0.0.1:9")
        .env(
            "AGENT_LEDGER_CLICKHOUSE_DATABASE",
            &harness.config.clickhouse.database,
        );
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_accepts_checkpoint_signature() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl is not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ledger.key");
    let keygen = Command::new(env!("CARGO_BIN_EXE_agent-ledger"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let mut harness = Harness::start(sealed_config("seal_openssl", dir.path())).await;
    send_workflows(&harness, &[79]).await;
    harness.stop().await;

    let files = agent_ledger::seal::checkpoint::read_dir(&dir.path().join("checkpoints")).unwrap();
    let (_, file) = files.last().expect("a checkpoint file");
    let message = dir.path().join("message");
    let signature = dir.path().join("signature");
    std::fs::write(&message, &file.message).unwrap();
    use base64::Engine;
    std::fs::write(
        &signature,
        base64::engine::general_purpose::STANDARD
            .decode(&file.signature)
            .unwrap(),
    )
    .unwrap();
    let public: PathBuf = format!("{}.pub", key.display()).into();
    let output = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(&public)
        .arg("-in")
        .arg(&message)
        .arg("-sigfile")
        .arg(&signature)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Signature Verified Successfully"),
        "{stdout}"
    );

    std::fs::write(&message, file.message.replace("last_seq=", "last_seq=9")).unwrap();
    let tampered = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(&public)
        .arg("-in")
        .arg(&message)
        .arg("-sigfile")
        .arg(&signature)
        .output()
        .unwrap();
    assert!(
        !tampered.status.success(),
        "openssl rejects a changed message"
    );

    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(&public)
        .output()
        .unwrap();
    use sha2::Digest;
    let key_id = hex::encode(sha2::Sha256::digest(&der.stdout));
    assert_eq!(
        &key_id[..16],
        file.key_id,
        "the key id is the SHA-256 of the public key's DER"
    );
}
