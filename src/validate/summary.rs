//! The workflow summary: origin, agent, models and credential, gathered from
//! the root and the steps inside.

use crate::preset::StepKind;
use crate::span::{Span, Value};
use crate::workflow::Workflow;

/// A credential as a span describes it. It never carries the secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credential {
    pub id: String,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub issued_at_unix_nano: Option<i64>,
    pub expires_at_unix_nano: Option<i64>,
}

impl Credential {
    /// The credential a span names with `agent_ledger.credential.*`, if any.
    pub fn of(span: &Span) -> Option<Credential> {
        let id = span.attributes.get_text("agent_ledger.credential.id")?;
        Some(Credential {
            id,
            issuer: span
                .attributes
                .get_text("agent_ledger.credential.issuer")
                .unwrap_or_default(),
            scopes: span
                .attributes
                .get("agent_ledger.credential.scopes")
                .map(|value| value.to_string_list(None))
                .unwrap_or_default(),
            issued_at_unix_nano: span
                .attributes
                .get("agent_ledger.credential.issued_at")
                .and_then(parse_time),
            expires_at_unix_nano: span
                .attributes
                .get("agent_ledger.credential.expires_at")
                .and_then(parse_time),
        })
    }
}

/// What a workflow states about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub origin_type: String,
    pub origin_source: String,
    pub task_spec: String,
    pub authorized_by: String,
    pub received_at_unix_nano: i64,
    pub agent_name: String,
    pub agent_id: String,
    pub agent_version: String,
    pub agent_names: Vec<String>,
    pub model_names: Vec<String>,
    pub model_versions: Vec<String>,
    pub provider: String,
    pub credential: Credential,
    pub tools_used: Vec<String>,
    pub step_count: u32,
}

impl Summary {
    /// Gathers the summary of `workflow`: origin and credential from the
    /// root; agent and model from the root, else from the steps inside.
    pub fn of(workflow: &Workflow) -> Summary {
        let mut summary = Summary::default();
        if let Some(root) = workflow.root() {
            summary.read_root(&root.span);
        }
        let root_facts = workflow.root().map(|root| &root.facts);
        let members = workflow
            .steps
            .iter()
            .filter(|step| step.kind != StepKind::Context);
        for step in members.clone() {
            let facts = &step.facts;
            push_unique(&mut summary.agent_names, facts.agent_name.as_deref());
            push_unique(&mut summary.model_names, facts.request_model.as_deref());
            push_unique(&mut summary.model_versions, facts.response_model.as_deref());
            if step.kind == StepKind::Tool {
                push_unique(&mut summary.tools_used, facts.tool_name.as_deref());
            }
        }
        let first = |pick: fn(&crate::preset::StepFacts) -> Option<&String>| -> String {
            root_facts
                .and_then(pick)
                .or_else(|| {
                    members
                        .clone()
                        .filter(|step| step.kind == StepKind::Agent)
                        .find_map(|step| pick(&step.facts))
                })
                .or_else(|| members.clone().find_map(|step| pick(&step.facts)))
                .cloned()
                .unwrap_or_default()
        };
        summary.agent_name = first(|facts| facts.agent_name.as_ref());
        summary.agent_id = first(|facts| facts.agent_id.as_ref());
        summary.agent_version = first(|facts| facts.agent_version.as_ref());
        summary.provider = first(|facts| facts.provider.as_ref());
        summary.step_count = members.count() as u32;
        summary
    }

    fn read_root(&mut self, root: &Span) {
        let text = |key: &str| root.text(key).unwrap_or_default();
        self.origin_type = text("agent_ledger.origin.type");
        self.origin_source = text("agent_ledger.origin.source");
        self.task_spec = text("agent_ledger.task.spec");
        self.authorized_by = root
            .text("agent_ledger.origin.authorized_by")
            .or_else(|| root.text("enduser.id"))
            .unwrap_or_default();
        self.received_at_unix_nano = root
            .attribute("agent_ledger.origin.received_at")
            .and_then(parse_time)
            .unwrap_or(root.start_unix_nano as i64);
        self.credential = Credential::of(root).unwrap_or_default();
    }
}

fn push_unique(list: &mut Vec<String>, value: Option<&str>) {
    if let Some(value) = value
        && !list.iter().any(|existing| existing == value)
    {
        list.push(value.to_owned());
    }
}

/// Parses a time attribute: an RFC 3339 string or integer Unix nanoseconds.
pub fn parse_time(value: &Value) -> Option<i64> {
    match value {
        Value::Int(nanos) => Some(*nanos),
        Value::Str(text) => {
            let text = text.trim();
            if let Ok(nanos) = text.parse::<i64>() {
                return Some(nanos);
            }
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .and_then(|time| time.timestamp_nanos_opt())
        }
        _ => None,
    }
}
