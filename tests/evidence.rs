//! Evidence queries against a seeded audit trail in the embedded
//! ClickHouse: each query's rows, `evidence pack` with its manifest, and the
//! command's errors, run through the real binary.

mod common;

use agent_ledger::evidence::{self, Period, ResultSet, result::text};
use common::seed::*;
use common::*;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static SEEDED: OnceCell<Seeded> = OnceCell::const_new();

/// Returns the trail shared by every test in this file, seeded once.
async fn seeded() -> &'static Seeded {
    SEEDED.get_or_init(|| seed("evidence")).await
}

/// Runs query `name` over the seeded period.
async fn run(name: &str, parameters: &[(&str, &str)]) -> ResultSet {
    let seeded = seeded().await;
    let (from, to) = seeded.period();
    run_in(name, parameters, &from, &to).await
}

async fn run_in(name: &str, parameters: &[(&str, &str)], from: &str, to: &str) -> ResultSet {
    let seeded = seeded().await;
    let query = evidence::find(name).unwrap();
    let period = query
        .uses_period()
        .then(|| Period::parse(from, to, chrono::Utc::now()).unwrap());
    let parameters: Vec<(String, String)> = parameters
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let request = evidence::prepare(query, &parameters, period, false).unwrap();
    evidence::execute(&seeded.client(), &request)
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// Returns the values of one column as text.
fn column(result: &ResultSet, name: &str) -> Vec<String> {
    assert!(
        result.column(name).is_some(),
        "no column {name} in {:?}",
        result.columns
    );
    result.values(name).iter().map(text).collect()
}

/// Returns one row as a map from column name to value.
fn row(result: &ResultSet, index: usize) -> serde_json::Map<String, Value> {
    result
        .columns
        .iter()
        .map(|column| column.name.clone())
        .zip(result.rows[index].iter().cloned())
        .collect()
}

fn at(offset: i64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(base_nanos() as i64 + offset);
    time.format("%Y-%m-%d %H:%M:%S%.9f").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_trail_steps_with_causes() {
    let trace = trace_hex(VALID);
    let result = run("workflow-trail", &[("workflow_id", &trace)]).await;
    assert_eq!(result.rows.len(), 3, "{:?}", result.rows);
    assert_eq!(column(&result, "StepIndex"), vec!["0", "1", "2"]);
    assert_eq!(
        column(&result, "StepKind"),
        vec!["root", "inference", "tool"]
    );
    assert_eq!(
        column(&result, "SpanId"),
        vec![span_hex(1), span_hex(2), span_hex(3)]
    );
    assert_eq!(
        column(&result, "CausedBy"),
        vec!["[]", r##"["#0 (parent)"]"##, r##"["#1 (sequence)"]"##]
    );
    for index in 0..3 {
        let step = row(&result, index);
        assert_eq!(step["Status"], "valid");
        assert_eq!(step["Revision"], 1);
        assert_eq!(step["OriginSource"], "billing-queue");
        assert_eq!(step["CredentialId"], "cred-1");
        assert_eq!(
            step["CredentialScopes"],
            json!(["invoices:read", "invoices:write"])
        );
        assert_eq!(step["Quarantine"], "");
    }
    assert_eq!(row(&result, 2)["ToolName"], "fetch");
    assert_eq!(row(&result, 1)["ModelVersion"], "gpt-4o-2024-08-06");
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_trail_rejected_shows_quarantine() {
    let trace = trace_hex(REJECTED);
    let result = run("workflow-trail", &[("workflow_id", &trace)]).await;
    assert_eq!(result.rows.len(), 2, "{:?}", result.rows);
    assert_eq!(column(&result, "SpanId"), vec![span_hex(1), span_hex(2)]);
    assert_eq!(
        column(&result, "Quarantine"),
        vec!["policy_rejected", "policy_rejected"]
    );
    assert!(
        column(&result, "QuarantineDetail")[0]
            .contains("missing agent_ledger.origin.source on root span")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_trail_uses_newest_revision() {
    let trace = trace_hex(COMPLETED_LATER);
    let result = run("workflow-trail", &[("workflow_id", &trace.to_uppercase())]).await;
    assert_eq!(
        result.rows.len(),
        3,
        "admitted spans are stored steps, not quarantine rows: {:?}",
        result.rows
    );
    assert_eq!(column(&result, "Status"), vec!["valid"; 3]);
    assert_eq!(column(&result, "Revision"), vec!["2"; 3]);
    assert_eq!(column(&result, "Quarantine"), vec![""; 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_by_credential_lists_steps() {
    let result = run("actions-by-credential", &[("credential_id", "cred-ops")]).await;
    let workflow = direct_trace(UNATTENDED);
    assert_eq!(column(&result, "WorkflowId"), vec![workflow.as_str(); 4]);
    assert_eq!(
        column(&result, "StepKind"),
        vec!["root", "inference", "tool", "tool"]
    );
    assert_eq!(
        column(&result, "ToolName"),
        vec!["", "", "delete_ticket", "close_ticket"]
    );
    assert_eq!(
        column(&result, "Timestamp"),
        vec![at(0), at(60_000_000_000), at(600_000_000_000), at(2 * HOUR)]
    );
    assert_eq!(column(&result, "AgentName"), vec!["ops-bot"; 4]);
    assert_eq!(column(&result, "OriginSource"), vec!["cron"; 4]);

    let receiver_steps = run("actions-by-credential", &[("credential_id", "cred-1")]).await;
    let mut workflows = column(&receiver_steps, "WorkflowId");
    workflows.sort();
    workflows.dedup();
    assert_eq!(
        workflows,
        vec![trace_hex(VALID), trace_hex(COMPLETED_LATER)]
    );
    assert_eq!(receiver_steps.rows.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_by_credential_bound_to_period() {
    let (_, to) = seeded().await.period();
    let after = rfc3339(base_nanos() as i64 + 3 * HOUR);
    let result = run_in(
        "actions-by-credential",
        &[("credential_id", "cred-ops")],
        &after,
        &to,
    )
    .await;
    assert!(result.rows.is_empty(), "{:?}", result.rows);
    let before = rfc3339(base_nanos() as i64 + HOUR);
    let result = run_in(
        "actions-by-credential",
        &[("credential_id", "cred-ops")],
        &before,
        &to,
    )
    .await;
    assert_eq!(column(&result, "ToolName"), vec!["close_ticket"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_actions_flagged() {
    let result = run("unauthorized-actions", &[]).await;
    assert_eq!(
        column(&result, "ToolName"),
        vec!["delete_ticket", "close_ticket"]
    );
    assert_eq!(
        column(&result, "Violations"),
        vec![r#"["scope_violation"]"#, r#"["credential_expired"]"#]
    );
    assert_eq!(column(&result, "CredentialId"), vec!["cred-ops"; 2]);
    assert_eq!(column(&result, "WriteAction"), vec!["1"; 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unattended_writes_exclude_authorized() {
    let result = run("unattended-write-actions", &[]).await;
    assert_eq!(
        result.rows.len(),
        1,
        "the refund authorized by user-100 is not listed: {:?}",
        result.rows
    );
    let workflow = row(&result, 0);
    assert_eq!(workflow["WorkflowId"], direct_trace(UNATTENDED));
    assert_eq!(workflow["WriteSteps"], 2);
    assert_eq!(
        workflow["WriteTools"],
        json!(["close_ticket", "delete_ticket"])
    );
    assert_eq!(workflow["FirstWriteAt"], at(600_000_000_000));
    assert_eq!(workflow["OriginSource"], "cron");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_and_incomplete_by_reason() {
    let result = run("rejected-and-incomplete-workflows", &[]).await;
    let day = chrono::DateTime::from_timestamp_nanos(base_nanos() as i64)
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(column(&result, "Day"), vec![day.as_str(); 4]);
    assert_eq!(
        column(&result, "Status"),
        vec!["incomplete", "rejected", "rejected", "rejected"]
    );
    let reasons = column(&result, "Reason");
    assert!(
        reasons[0].starts_with("root span <span id> did not arrive within the root wait"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].starts_with("missing agent name"),
        "{}",
        reasons[1]
    );
    assert_eq!(
        reasons[2],
        "missing agent_ledger.credential.scopes on root span"
    );
    assert_eq!(
        reasons[3],
        "missing agent_ledger.origin.source on root span"
    );
    assert_eq!(
        column(&result, "Workflows"),
        vec!["1"; 4],
        "the workflow completed later is not counted"
    );
    assert_eq!(
        row(&result, 0)["ExampleWorkflowIds"],
        json!([trace_hex(INCOMPLETE)])
    );
    assert_eq!(
        row(&result, 1)["ExampleWorkflowIds"],
        json!([trace_hex(REJECTED)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_inventory_counts_workflows() {
    let result = run("agent-inventory", &[]).await;
    assert_eq!(
        column(&result, "AgentName"),
        vec!["billing-bot", "ops-bot", "support-bot"]
    );
    assert_eq!(column(&result, "AgentVersion"), vec!["", "2.0.0", "1.4.2"]);
    assert_eq!(column(&result, "Workflows"), vec!["2", "1", "7"]);
    assert_eq!(column(&result, "ModelCalls"), vec!["2", "1", "6"]);
    assert_eq!(column(&result, "ToolCalls"), vec!["2", "2", "2"]);
    let support = row(&result, 2);
    assert_eq!(support["ModelVersions"], json!(["gpt-4o-v1", "gpt-4o-v2"]));
    assert_eq!(support["FirstSeen"], at(30 * 60 * 1_000_000_000));
    assert_eq!(support["LastSeen"], at(6 * DAY + 1_000_000_000));
    assert_eq!(
        row(&result, 0)["ModelVersions"],
        json!(["gpt-4o-2024-08-06"])
    );
    assert_eq!(row(&result, 1)["Providers"], json!(["openai"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn model_version_changes_with_counts() {
    let result = run("model-version-changes", &[]).await;
    assert_eq!(
        result.rows.len(),
        2,
        "only support-bot changed versions: {:?}",
        result.rows
    );
    assert_eq!(column(&result, "AgentName"), vec!["support-bot"; 2]);
    assert_eq!(
        column(&result, "ChangedAt"),
        vec![at(3 * DAY + 1_000_000_000), at(6 * DAY + 1_000_000_000)]
    );
    assert_eq!(
        column(&result, "PreviousVersion"),
        vec!["gpt-4o-v1", "gpt-4o-v2"]
    );
    assert_eq!(
        column(&result, "NewVersion"),
        vec!["gpt-4o-v2", "gpt-4o-v1"]
    );
    assert_eq!(column(&result, "WorkflowsBefore"), vec!["2", "3"]);
    assert_eq!(column(&result, "WorkflowsAfter"), vec!["3", "1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_usage_flags_use_after_expiry() {
    let result = run("credential-usage", &[]).await;
    assert_eq!(
        column(&result, "CredentialId"),
        vec!["cred-1", "cred-ops", "cred-support"]
    );
    assert_eq!(column(&result, "Steps"), vec!["6", "4", "15"]);
    assert_eq!(column(&result, "Workflows"), vec!["2", "1", "7"]);
    assert_eq!(column(&result, "StepsOutsideValidity"), vec!["0", "1", "0"]);
    assert_eq!(column(&result, "IssuanceRecorded"), vec!["1", "0", "0"]);
    assert_eq!(
        column(&result, "LifetimeSeconds"),
        vec!["", "7200", "950400"]
    );
    assert_eq!(row(&result, 1)["Scopes"], json!(["tickets:read"]));
    assert_eq!(row(&result, 1)["ExpiresAt"], at(HOUR));
    assert_eq!(row(&result, 0)["Issuer"], "vault");
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_by_source_maps_agents_to_tools() {
    let result = run("triggers-by-source", &[]).await;
    assert_eq!(
        column(&result, "OriginSource"),
        vec!["billing-queue", "cron", "support-portal"]
    );
    assert_eq!(
        column(&result, "AgentName"),
        vec!["billing-bot", "ops-bot", "support-bot"]
    );
    assert_eq!(column(&result, "Workflows"), vec!["2", "1", "7"]);
    assert_eq!(
        column(&result, "Tools"),
        vec![
            r#"["fetch"]"#,
            r#"["close_ticket","delete_ticket"]"#,
            r#"["lookup_order","refund"]"#
        ]
    );
    assert_eq!(column(&result, "WriteActions"), vec!["0", "2", "1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redactions_by_kind_and_agent() {
    let result = run("redactions", &[]).await;
    assert_eq!(column(&result, "Kind"), vec!["api_key", "bearer_token"]);
    assert_eq!(column(&result, "AgentName"), vec!["support-bot"; 2]);
    assert_eq!(column(&result, "Redactions"), vec!["1", "2"]);
    assert_eq!(column(&result, "Steps"), vec!["1", "2"]);
    assert_eq!(column(&result, "Workflows"), vec!["1", "1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn integrity_status_checkpoints_and_runs() {
    let before = chrono::Utc::now();
    let result = run("integrity-status", &[]).await;
    let after = chrono::Utc::now();
    assert_eq!(
        column(&result, "Kind"),
        vec!["checkpoint", "checkpoint", "verify_run", "verify_run"]
    );
    assert_eq!(
        column(&result, "InstanceId"),
        vec!["ledger-a", "ledger-b", "ledger-a", "ledger-a"]
    );
    let ledger_a = row(&result, 0);
    assert_eq!(ledger_a["At"], at(2 * HOUR));
    assert_eq!(ledger_a["KeyIds"], json!(["k1", "k2"]));
    assert_eq!(ledger_a["Checkpoints"], 2);
    assert_eq!(ledger_a["LastSeq"], 20);
    assert_eq!(ledger_a["EntriesUncovered"], 5);
    let signed_at = (base_nanos() as i64 + 2 * HOUR) / 1_000_000_000;
    let age = ledger_a["AgeSeconds"].as_i64().unwrap();
    assert!(
        age >= before.timestamp() - signed_at - 1 && age <= after.timestamp() - signed_at + 1,
        "{age}"
    );
    let ledger_b = row(&result, 1);
    assert_eq!(ledger_b["At"], Value::Null, "no checkpoint signed");
    assert_eq!(ledger_b["EntriesUncovered"], 3);
    assert_eq!(column(&result, "Result")[2..], ["clean", "findings"]);
    assert_eq!(row(&result, 3)["Findings"], 2);
    assert_eq!(
        row(&result, 3)["FindingCounts"],
        json!({ "row_hash_mismatch": 2 })
    );
}

/// Runs the binary with the seeded database; returns success, standard
/// output and standard error.
async fn cli(arguments: &[&str]) -> (bool, String, String) {
    let seeded = seeded().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-ledger"))
        .args(arguments)
        .env_remove("AGENT_LEDGER_CONFIG")
        .env("AGENT_LEDGER_CLICKHOUSE_URL", &seeded.config.clickhouse.url)
        .env(
            "AGENT_LEDGER_CLICKHOUSE_DATABASE",
            &seeded.config.clickhouse.database,
        )
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn pack_manifest_matches_files() {
    use sha2::{Digest, Sha256};
    let (from, to) = seeded().await.period();
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("pack");
    let trace = trace_hex(VALID);
    let workflow = format!("workflow_id={trace}");
    let arguments = [
        "evidence",
        "pack",
        "--from",
        &from,
        "--to",
        &to,
        "--out",
        out.to_str().unwrap(),
        "--param",
        &workflow,
    ];
    let (ok, stdout, stderr) = cli(&arguments).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote 10 query results"), "{stdout}");

    let manifest = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let mut listed = Vec::new();
    for line in manifest.lines() {
        let (hash, file) = line.split_once("  ").expect("sha256sum line");
        let contents = std::fs::read(out.join(file)).unwrap();
        assert_eq!(hash, hex::encode(Sha256::digest(&contents)), "{file}");
        listed.push(file.to_owned());
    }
    let mut present: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "SHA256SUMS")
        .collect();
    present.sort();
    assert_eq!(listed, present, "the manifest lists every file but itself");
    assert_eq!(listed.len(), 11, "ten results and the summary");

    let check = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    let unauthorized = std::fs::read_to_string(out.join("unauthorized-actions.csv")).unwrap();
    assert!(
        unauthorized.starts_with("# query: unauthorized-actions\n# question: "),
        "{unauthorized}"
    );
    assert!(unauthorized.contains("# row count: 2\n"), "{unauthorized}");
    assert!(
        unauthorized.contains("# controls: SOC 2 CC6.1"),
        "{unauthorized}"
    );
    assert!(unauthorized.contains(&format!(
        "# agent-ledger version: {}\n",
        env!("CARGO_PKG_VERSION")
    )));
    let trail = std::fs::read_to_string(out.join("workflow-trail.csv")).unwrap();
    assert!(
        trail.contains(&format!("# parameters: workflow_id={trace}\n")),
        "{trail}"
    );
    assert!(
        trail.contains("# period: not used by this query\n"),
        "{trail}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains(
            "- actions-by-credential: query actions-by-credential needs --param credential_id=VALUE"
        ),
        "{summary}"
    );
    assert!(summary.contains("| redactions | SOC 2 CC6.1, SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b) | 2 | redactions.csv |"), "{summary}");

    let (ok, _, stderr) = cli(&arguments).await;
    assert!(!ok, "a second pack into the same folder fails");
    assert!(stderr.contains("is not empty"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_writes_file_with_header() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("redactions.md");
    let arguments = [
        "evidence",
        "run",
        "redactions",
        "--from",
        "-3650d",
        "--to",
        "now",
        "--format",
        "markdown",
    ];
    let (ok, _, stderr) = cli(&[&arguments[..], &["--out", out.to_str().unwrap()]].concat()).await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# Evidence: redactions\n"), "{text}");
    assert!(text.contains("- **row count:** 2\n"), "{text}");
    assert!(text.contains("| bearer_token"), "{text}");

    let (ok, stdout, stderr) = cli(&[
        "evidence",
        "run",
        "unauthorized-actions",
        "--from",
        "-3650d",
        "--to",
        "now",
        "--format",
        "json",
    ])
    .await;
    assert!(ok, "{stderr}");
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["header"]["query"], "unauthorized-actions");
    assert_eq!(document["rows"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_errors_name_the_problem() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "evidence",
                "run",
                "who-did-it",
                "--from",
                "-1d",
                "--to",
                "now",
            ],
            "unknown evidence query \"who-did-it\"",
        ),
        (
            &[
                "evidence",
                "run",
                "actions-by-credential",
                "--from",
                "-1d",
                "--to",
                "now",
            ],
            "needs --param credential_id=VALUE",
        ),
        (
            &[
                "evidence",
                "run",
                "redactions",
                "--from",
                "yesterday",
                "--to",
                "now",
            ],
            "invalid time \"yesterday\"",
        ),
        (&["evidence", "run", "redactions"], "needs a period"),
        (
            &[
                "evidence",
                "run",
                "redactions",
                "--from",
                "now",
                "--to",
                "-1d",
            ],
            "empty period",
        ),
    ];
    for (arguments, expected) in cases {
        let (ok, _, stderr) = cli(arguments).await;
        assert!(!ok, "{arguments:?} fails");
        assert!(stderr.contains(expected), "{arguments:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_every_query() {
    let (ok, stdout, stderr) = cli(&["evidence", "list"]).await;
    assert!(ok, "{stderr}");
    for query in evidence::catalog() {
        assert!(stdout.contains(query.name), "{}: {stdout}", query.name);
    }
    assert!(stdout.contains("from, to, credential_id"), "{stdout}");
}
