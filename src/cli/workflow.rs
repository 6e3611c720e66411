//! `agent-ledger workflow TRACE_ID`: one trace's workflows, as stored.

use anyhow::Context;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::span::TraceId;

/// Output format of the `workflow` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VerdictRow {
    root_span_id: String,
    revision: u32,
    status: String,
    reasons: Vec<String>,
    origin_type: String,
    origin_source: String,
    task_spec: String,
    authorized_by: String,
    agent_name: String,
    agent_version: String,
    agent_names: Vec<String>,
    model_names: Vec<String>,
    model_versions: Vec<String>,
    credential_id: String,
    credential_issuer: String,
    credential_scopes: Vec<String>,
    step_count: u32,
}

#[derive(Debug, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StepRow {
    step_index: u32,
    span_id: String,
    span_name: String,
    step_kind: String,
    agent_name: String,
    tool_name: String,
    model_version: String,
    duration: u64,
    status_code: String,
    credential_id: String,
    late: u8,
    causes: Vec<(String, String)>,
}

#[derive(Debug, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QuarantineRow {
    reason: String,
    spans: u64,
}

/// One workflow with its steps, as printed.
#[derive(Debug, Serialize)]
struct Report {
    verdict: VerdictRow,
    steps: Vec<StepRow>,
}

/// Prints the workflows of `trace_id`.
pub async fn run(config: &Config, trace_id: &str, format: Format) -> anyhow::Result<()> {
    let trace_id = TraceId::from_hex(trace_id)
        .with_context(|| {
            format!("invalid trace id {trace_id:?}: expected 32 hex digits, not all zero")
        })?
        .to_hex();
    let client = crate::clickhouse::client(&config.clickhouse)?;
    let verdicts: Vec<VerdictRow> = client
        .query(
            "SELECT ?fields FROM agent_workflows WHERE WorkflowId = ? \
             ORDER BY RootSpanId, Revision DESC, WrittenAt DESC LIMIT 1 BY RootSpanId",
        )
        .bind(&trace_id)
        .fetch_all()
        .await
        .with_context(|| {
            format!(
                "cannot read agent_workflows from {}",
                config.clickhouse.display_url()
            )
        })?;
    let mut reports = Vec::new();
    for verdict in verdicts {
        let steps = steps(&client, &trace_id, &verdict.root_span_id).await?;
        reports.push(Report { verdict, steps });
    }
    let quarantine: Vec<QuarantineRow> = client
        .query("SELECT Reason, count() AS Spans FROM agent_rejected_spans WHERE TraceId = ? GROUP BY Reason ORDER BY Reason")
        .bind(&trace_id)
        .fetch_all()
        .await
        .context("cannot read agent_rejected_spans")?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "trace_id": trace_id, "workflows": reports, "quarantine": quarantine })
        ),
        Format::Table => print_table(&trace_id, &reports, &quarantine),
    }
    if reports.is_empty() && quarantine.is_empty() {
        anyhow::bail!(
            "no workflow and no quarantined span found for trace {trace_id}; it may not be complete yet (settle time) or was sent elsewhere"
        );
    }
    Ok(())
}

async fn steps(
    client: &clickhouse::Client,
    trace_id: &str,
    root: &str,
) -> anyhow::Result<Vec<StepRow>> {
    client
        .query(
            "SELECT StepIndex, SpanId, SpanName, StepKind, AgentName, ToolName, ModelVersion, Duration, StatusCode, \
             CredentialId, Late, \
             arrayFilter((id, basis) -> basis != '', \
                 arrayZip(`Links.SpanId`, arrayMap(a -> a['agent_ledger.link.basis'], `Links.Attributes`))) AS Causes \
             FROM agent_spans WHERE TraceId = ? AND WorkflowRootSpanId = ? ORDER BY StepIndex",
        )
        .bind(trace_id)
        .bind(root)
        .fetch_all()
        .await
        .context("cannot read agent_spans")
}

fn print_table(trace_id: &str, reports: &[Report], quarantine: &[QuarantineRow]) {
    println!("trace {trace_id}");
    for report in reports {
        let verdict = &report.verdict;
        println!();
        println!(
            "workflow root {}  revision {}  status {}",
            verdict.root_span_id, verdict.revision, verdict.status
        );
        for reason in &verdict.reasons {
            println!("  reason: {reason}");
        }
        println!(
            "  origin: {} from {}{}",
            or_dash(&verdict.origin_type),
            or_dash(&verdict.origin_source),
            authorized(&verdict.authorized_by)
        );
        println!("  task: {}", or_dash(&verdict.task_spec));
        println!(
            "  agent: {} {}  (agents: {})",
            or_dash(&verdict.agent_name),
            verdict.agent_version,
            verdict.agent_names.join(", ")
        );
        println!(
            "  models: {}  versions: {}",
            verdict.model_names.join(", "),
            verdict.model_versions.join(", ")
        );
        println!(
            "  credential: {} issued by {}  scopes: {}",
            or_dash(&verdict.credential_id),
            or_dash(&verdict.credential_issuer),
            verdict.credential_scopes.join(" ")
        );
        if !report.steps.is_empty() {
            println!("  steps:");
        }
        for step in &report.steps {
            print_step(step, &report.steps);
        }
    }
    if !quarantine.is_empty() {
        println!();
        println!("quarantined spans:");
        for row in quarantine {
            println!("  {}: {}", row.reason, row.spans);
        }
    }
}

fn print_step(step: &StepRow, steps: &[StepRow]) {
    let what = match step.step_kind.as_str() {
        "tool" => format!("tool {}", step.tool_name),
        "inference" => format!("model {}", step.model_version),
        _ => step.agent_name.clone(),
    };
    let causes: Vec<String> = step
        .causes
        .iter()
        .map(|(span_id, basis)| {
            let index = steps
                .iter()
                .find(|other| &other.span_id == span_id)
                .map(|other| other.step_index);
            match index {
                Some(index) => format!("#{index} ({basis})"),
                None => format!("{span_id} ({basis})"),
            }
        })
        .collect();
    println!(
        "    #{:<3} {:<9} {:<32} {:<28} {:>9.1}ms {:<5} cred {}{}{}",
        step.step_index,
        step.step_kind,
        truncate(&step.span_name, 32),
        truncate(&what, 28),
        step.duration as f64 / 1e6,
        step.status_code,
        or_dash(&step.credential_id),
        if causes.is_empty() {
            String::new()
        } else {
            format!("  caused by {}", causes.join(", "))
        },
        if step.late == 1 { "  (late)" } else { "" },
    );
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn authorized(by: &str) -> String {
    if by.is_empty() {
        String::new()
    } else {
        format!(", authorized by {by}")
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}
