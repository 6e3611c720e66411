//! The Grafana dashboards under `grafana/dashboards`, run against a seeded
//! audit trail in the embedded ClickHouse.
//!
//! Each panel's SQL goes through the same macro expansion the ClickHouse
//! data source plugin (grafana-clickhouse-datasource, `pkg/macros`) does on
//! the server: `$__timeFilter(col)` becomes `col >= toDateTime(from) AND col
//! <= toDateTime(to)`, `$__timeInterval(col)` becomes
//! `toStartOfInterval(toDateTime(col), INTERVAL n second)`, and so on.
//! Template variables are replaced the way Grafana formats them. Every
//! panel must have expected rows here, so a new panel without a check fails.

mod common;

use std::collections::BTreeMap;

use agent_ledger::evidence::ResultSet;
use agent_ledger::evidence::result::{FORMAT, text};
use common::seed::*;
use common::*;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Dashboard time range: the seeded period, in Unix seconds.
fn range() -> (i64, i64) {
    let base = base_nanos() as i64 / 1_000_000_000;
    (base - 86_400, base + 10 * 86_400)
}

/// Panel interval of the test. Grafana derives it from the time range and
/// the panel width; one day keeps the buckets predictable.
const INTERVAL_SECONDS: i64 = 86_400;

/// The provisioned data source every panel must use.
const DATASOURCE_UID: &str = "agent-ledger-clickhouse";

static SEEDED: OnceCell<Seeded> = OnceCell::const_new();

async fn seeded() -> &'static Seeded {
    SEEDED.get_or_init(|| seed("dashboards")).await
}

fn dashboard(file: &str) -> Value {
    let path = format!("{}/grafana/dashboards/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Expands the plugin's macros and the template variables in `sql`.
fn expand(sql: &str, variables: &[(&str, &str)]) -> String {
    let (from, to) = range();
    let mut sql = sql.to_owned();
    for (name, value) in variables {
        // Grafana's sqlstring format doubles single quotes and quotes the value.
        let quoted = format!("'{}'", value.replace('\'', "''"));
        sql = sql.replace(&format!("${{{name}:sqlstring}}"), &quoted);
        sql = sql.replace(&format!("${{{name}}}"), value);
        sql = sql.replace(&format!("${name}"), value);
    }
    sql = expand_macro(&sql, "$__timeFilter(", |column| {
        format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})")
    });
    sql = expand_macro(&sql, "$__timeInterval(", |column| {
        format!("toStartOfInterval(toDateTime({column}), INTERVAL {INTERVAL_SECONDS} second)")
    });
    sql = sql.replace("$__fromTime", &format!("toDateTime({from})"));
    sql = sql.replace("$__toTime", &format!("toDateTime({to})"));
    sql = sql.replace("$__interval_s", &INTERVAL_SECONDS.to_string());
    assert!(
        !sql.contains('$'),
        "a macro or variable was left unexpanded:\n{sql}"
    );
    sql
}

/// Replaces each `prefix` + argument + `)` with `expansion(argument)`.
fn expand_macro(sql: &str, prefix: &str, expansion: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find(prefix) {
        out.push_str(&rest[..start]);
        let after = &rest[start + prefix.len()..];
        let end = after
            .find(')')
            .unwrap_or_else(|| panic!("unclosed {prefix} in {sql}"));
        out.push_str(&expansion(after[..end].trim()));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn run(sql: &str) -> ResultSet {
    let client = seeded().await.client();
    let bytes = client
        .query_raw(sql)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes(FORMAT)
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|error| panic!("query failed:\n{sql}\n{error}"));
    ResultSet::parse(&bytes).unwrap()
}

/// Every panel of `file` with its expanded SQL.
fn panels(file: &str, variables: &[(&str, &str)]) -> Vec<(String, String)> {
    let dashboard = dashboard(file);
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_owned();
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title} has no targets"));
        assert_eq!(targets.len(), 1, "{title}");
        let target = &targets[0];
        assert_eq!(target["datasource"]["uid"], DATASOURCE_UID, "{title}");
        assert_eq!(
            target["datasource"]["type"], "grafana-clickhouse-datasource",
            "{title}"
        );
        assert_eq!(target["editorType"], "sql", "{title}");
        panels.push((title, expand(target["rawSql"].as_str().unwrap(), variables)));
    }
    panels
}

fn column(result: &ResultSet, name: &str) -> Vec<String> {
    assert!(
        result.column(name).is_some(),
        "no column {name} in {:?}",
        result.columns
    );
    result.values(name).iter().map(text).collect()
}

/// Sums a long-format time series: value column per label.
fn totals(result: &ResultSet, label: &str, value: &str) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for (key, count) in column(result, label).into_iter().zip(result.values(value)) {
        *totals.entry(key).or_insert(0) += count.as_i64().unwrap();
    }
    totals
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), *value))
        .collect()
}

#[test]
fn macros_expanded_like_plugin() {
    let (from, to) = range();
    let sql = expand(
        "SELECT $__timeInterval(Timestamp) AS t WHERE $__timeFilter(ReceivedAt) AND x < $__toTime",
        &[],
    );
    let expected = format!(
        "SELECT toStartOfInterval(toDateTime(Timestamp), INTERVAL 86400 second) AS t \
         WHERE ReceivedAt >= toDateTime({from}) AND ReceivedAt <= toDateTime({to}) AND x < toDateTime({to})"
    );
    assert_eq!(sql, expected);
    assert_eq!(
        expand("WHERE id = ${w:sqlstring}", &[("w", "a'b")]),
        "WHERE id = 'a''b'"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overview_panels_return_rows() {
    for (title, sql) in panels("overview.json", &[]) {
        let result = run(&sql).await;
        match title.as_str() {
            "Workflows by status" => {
                let expected = map(&[("incomplete", 1), ("rejected", 1), ("valid", 10)]);
                assert_eq!(
                    totals(&result, "Status", "Workflows"),
                    expected,
                    "newest revisions only"
                );
                assert_eq!(result.columns[0].name, "time");
            }
            "Rejection and incomplete reasons" => {
                assert_eq!(column(&result, "Workflows"), vec!["1"; 4]);
                let reasons = column(&result, "Reason");
                assert!(
                    reasons.contains(&"missing agent_ledger.origin.source on root span".to_owned()),
                    "{reasons:?}"
                );
                assert!(
                    reasons
                        .iter()
                        .any(|reason| reason.starts_with("root span <span id> did not arrive")),
                    "{reasons:?}"
                );
            }
            "Agents and model versions" => {
                assert_eq!(
                    column(&result, "AgentName"),
                    vec!["billing-bot", "ops-bot", "support-bot", "support-bot"]
                );
                assert_eq!(
                    column(&result, "ModelVersion"),
                    vec![
                        "gpt-4o-2024-08-06",
                        "gpt-4o-2024-08-06",
                        "gpt-4o-v1",
                        "gpt-4o-v2"
                    ]
                );
                assert_eq!(column(&result, "Workflows"), vec!["2", "1", "3", "3"]);
            }
            "Tools used" => {
                assert_eq!(
                    column(&result, "Tool"),
                    vec![
                        "fetch",
                        "close_ticket",
                        "delete_ticket",
                        "lookup_order",
                        "refund"
                    ]
                );
                assert_eq!(column(&result, "Calls"), vec!["2", "1", "1", "1", "1"]);
            }
            "Step latency percentiles" => {
                // The base day holds model calls of 10 ms and 1 ms and tool
                // calls of 9 ms and 1 ms: [1, 1, 1, 1, 1, 9, 9, 10, 10].
                let first = &result.rows[0];
                let index = |name: &str| result.column(name).unwrap();
                assert_eq!(first[index("p50_ms")].as_f64(), Some(1.0));
                assert_eq!(first[index("p99_ms")].as_f64(), Some(10.0));
                assert_eq!(
                    result.rows.len(),
                    7,
                    "one bucket per day with model or tool calls"
                );
            }
            other => panic!("panel {other:?} of the Overview dashboard has no expected rows"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_panels_return_rows() {
    for (title, sql) in panels("credentials.json", &[]) {
        let result = run(&sql).await;
        match title.as_str() {
            "Violations over time" => {
                let expected = map(&[("credential_expired", 1), ("scope_violation", 1)]);
                assert_eq!(totals(&result, "Violation", "Steps"), expected);
            }
            "Steps outside credential validity" => assert_eq!(column(&result, "Steps"), vec!["1"]),
            "Steps with violations" => {
                assert_eq!(
                    column(&result, "ToolName"),
                    vec!["close_ticket", "delete_ticket"],
                    "newest first"
                );
                assert_eq!(
                    column(&result, "WorkflowId"),
                    vec![direct_trace(UNATTENDED); 2]
                );
            }
            "Credential usage" => {
                assert_eq!(
                    column(&result, "CredentialId"),
                    vec!["cred-1", "cred-ops", "cred-support"]
                );
                assert_eq!(column(&result, "Steps"), vec!["6", "4", "15"]);
                assert_eq!(column(&result, "StepsOutsideValidity"), vec!["0", "1", "0"]);
            }
            "Unattended write actions" => {
                assert_eq!(
                    column(&result, "WorkflowId"),
                    vec![direct_trace(UNATTENDED)]
                );
                assert_eq!(
                    column(&result, "WriteTools"),
                    vec![r#"["close_ticket","delete_ticket"]"#]
                );
            }
            other => panic!("panel {other:?} of the Credentials dashboard has no expected rows"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_variable_lists_workflows() {
    let dashboard = dashboard("workflow.json");
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(variable["name"], "workflow_id");
    assert_eq!(variable["query"]["datasource"]["uid"], DATASOURCE_UID);
    let result = run(&expand(variable["query"]["rawSql"].as_str().unwrap(), &[])).await;
    let listed = column(&result, "WorkflowId");
    let mut expected: Vec<String> = [VALID, REJECTED, INCOMPLETE, COMPLETED_LATER]
        .into_iter()
        .map(trace_hex)
        .collect();
    expected.extend(
        [UNATTENDED, AUTHORIZED]
            .into_iter()
            .chain(SERIES.iter().map(|(trace, _)| *trace))
            .map(direct_trace),
    );
    for workflow in &expected {
        assert!(
            listed.contains(workflow),
            "{workflow} missing from {listed:?}"
        );
    }
    assert_eq!(listed.len(), expected.len());
    assert_eq!(listed[0], direct_trace(306), "newest first");
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_panels_return_rows() {
    let workflow = trace_hex(COMPLETED_LATER);
    for (title, sql) in panels("workflow.json", &[("workflow_id", &workflow)]) {
        let result = run(&sql).await;
        match title.as_str() {
            "Verdict" => {
                assert_eq!(
                    column(&result, "Revision"),
                    vec!["2"],
                    "the newest revision"
                );
                assert_eq!(column(&result, "Status"), vec!["valid"]);
                assert_eq!(column(&result, "CredentialId"), vec!["cred-1"]);
            }
            "Steps" => {
                assert_eq!(column(&result, "StepIndex"), vec!["0", "1", "2"]);
                assert_eq!(
                    column(&result, "StepKind"),
                    vec!["root", "inference", "tool"]
                );
                assert_eq!(
                    column(&result, "CausedBy"),
                    vec!["[]", r##"["#0 (parent)"]"##, r##"["#1 (sequence)"]"##]
                );
                assert_eq!(column(&result, "CredentialId"), vec!["cred-1"; 3]);
                assert_eq!(column(&result, "TraceId"), vec![workflow.as_str(); 3]);
            }
            "Quarantined spans" => {
                assert_eq!(column(&result, "SpanId"), vec![span_hex(2), span_hex(3)]);
                assert_eq!(column(&result, "Reason"), vec!["root_span_missing"; 2]);
                assert_eq!(
                    column(&result, "Admitted"),
                    vec!["1"; 2],
                    "admitted when the root arrived"
                );
            }
            "Trace" => {
                let names: Vec<&str> = result
                    .columns
                    .iter()
                    .map(|column| column.name.as_str())
                    .collect();
                let expected = [
                    "traceID",
                    "spanID",
                    "parentSpanID",
                    "serviceName",
                    "operationName",
                    "startTime",
                    "duration",
                    "tags",
                    "serviceTags",
                ];
                assert_eq!(names, expected, "the columns the plugin's trace view reads");
                assert_eq!(
                    column(&result, "spanID"),
                    vec![span_hex(1), span_hex(2), span_hex(3)]
                );
                assert_eq!(
                    column(&result, "parentSpanID"),
                    vec![String::new(), span_hex(1), span_hex(1)]
                );
                assert_eq!(
                    result.values("duration")[1].as_f64(),
                    Some(10.0),
                    "milliseconds"
                );
                let tags = &result.values("tags")[1];
                assert!(
                    tags.as_array()
                        .unwrap()
                        .contains(&json!({ "key": "gen_ai.request.model", "value": "gpt-4o" })),
                    "{tags}"
                );
            }
            other => panic!("panel {other:?} of the Workflow dashboard has no expected rows"),
        }
    }
}

#[test]
fn steps_link_opens_trace_view() {
    let dashboard = dashboard("workflow.json");
    let steps = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|panel| panel["title"] == "Steps")
        .unwrap();
    let link = &steps["fieldConfig"]["overrides"][0]["properties"][0]["value"][0];
    assert_eq!(
        steps["fieldConfig"]["overrides"][0]["matcher"]["options"],
        "TraceId"
    );
    let url = link["url"].as_str().unwrap();
    let (path, query) = url.split_once('?').unwrap();
    assert_eq!(path, "/explore");
    let panes = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("panes="))
        .unwrap();
    let panes: Value = serde_json::from_str(&percent_decode(panes)).unwrap();
    let explore = &panes["trace"]["queries"][0];
    assert_eq!(explore["queryType"], "traces");
    assert_eq!(explore["datasource"]["uid"], DATASOURCE_UID);
    let trace_panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|panel| panel["title"] == "Trace")
        .unwrap();
    let panel_sql = trace_panel["targets"][0]["rawSql"].as_str().unwrap();
    assert_eq!(
        explore["rawSql"]
            .as_str()
            .unwrap()
            .replace("'${__value.raw}'", "${workflow_id:sqlstring}"),
        panel_sql,
        "the link runs the trace panel's query for the clicked trace"
    );
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            out.push(u8::from_str_radix(&text[index + 1..index + 3], 16).unwrap());
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn integrity_panels_return_rows() {
    let signed_at = (base_nanos() as i64 + 2 * HOUR) / 1_000_000_000;
    for (title, sql) in panels("integrity.json", &[]) {
        let before = chrono::Utc::now().timestamp();
        let result = run(&sql).await;
        let after = chrono::Utc::now().timestamp();
        match title.as_str() {
            "Checkpoint age by instance" => {
                // The seeding receiver signs a checkpoint of its own at
                // shutdown, under its host name; the seeded instance is
                // checked here.
                let instances = column(&result, "InstanceId");
                let seeded = instances
                    .iter()
                    .position(|instance| instance == "ledger-a")
                    .expect("the seeded instance has a row");
                assert_eq!(column(&result, "KeyId")[seeded], "k2");
                assert_eq!(column(&result, "LastSeq")[seeded], "20");
                let age = result.values("AgeSeconds")[seeded].as_i64().unwrap();
                assert!(
                    age >= before - signed_at - 1 && age <= after - signed_at + 1,
                    "{age}"
                );
            }
            "Ledger entries not covered by a checkpoint" => {
                // Only the seeded instances; the seeding receiver has its own.
                let seeded: Vec<(String, String)> = column(&result, "InstanceId")
                    .into_iter()
                    .zip(column(&result, "Uncovered"))
                    .filter(|(instance, _)| instance.starts_with("ledger-"))
                    .collect();
                let expected = [("ledger-a", "5"), ("ledger-b", "3")]
                    .map(|(instance, count)| (instance.to_owned(), count.to_owned()));
                assert_eq!(seeded, expected);
            }
            "Verify runs" => {
                assert_eq!(column(&result, "RunId"), vec!["run-2", "run-1"]);
                assert_eq!(column(&result, "Result"), vec!["findings", "clean"]);
                assert_eq!(
                    column(&result, "FindingCounts"),
                    vec![r#"{"row_hash_mismatch":2}"#, "{}"]
                );
            }
            "Redactions by kind" => {
                assert_eq!(
                    totals(&result, "Kind", "Redactions"),
                    map(&[("api_key", 1), ("bearer_token", 2)])
                );
            }
            "Redactions by agent" => {
                assert_eq!(column(&result, "Kind"), vec!["api_key", "bearer_token"]);
                assert_eq!(column(&result, "AgentName"), vec!["support-bot"; 2]);
                assert_eq!(column(&result, "Redactions"), vec!["1", "2"]);
            }
            other => panic!("panel {other:?} of the Integrity dashboard has no expected rows"),
        }
    }
}

#[test]
fn provisioning_names_dashboards_and_datasource() {
    let root = env!("CARGO_MANIFEST_DIR");
    let datasource = std::fs::read_to_string(format!(
        "{root}/grafana/provisioning/datasources/clickhouse.yaml"
    ))
    .unwrap();
    assert!(
        datasource.contains(&format!("uid: {DATASOURCE_UID}")),
        "{datasource}"
    );
    assert!(
        datasource.contains("type: grafana-clickhouse-datasource"),
        "{datasource}"
    );
    assert!(
        datasource.contains("defaultTable: agent_spans"),
        "{datasource}"
    );
    let mut uids: Vec<String> = [
        "overview.json",
        "credentials.json",
        "workflow.json",
        "integrity.json",
    ]
    .iter()
    .map(|file| dashboard(file)["uid"].as_str().unwrap().to_owned())
    .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 4, "each dashboard has its own uid");
    let files = std::fs::read_dir(format!("{root}/grafana/dashboards"))
        .unwrap()
        .count();
    assert_eq!(files, 4, "every dashboard file is checked by this test");
}
