//! The workflow summary: origin, agent, models and credential, gathered from
//! the root and the steps inside.

use crate::preset::StepKind;
use crate::span::{Span, Str, Value};
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
        let id = span.text("agent_ledger.credential.id")?;
        Some(Credential {
            id,
            issuer: span
                .text("agent_ledger.credential.issuer")
                .unwrap_or_default(),
            scopes: span
                .attribute("agent_ledger.credential.scopes")
                .map(|value| value.to_string_list(None))
                .unwrap_or_default(),
            issued_at_unix_nano: span
                .attribute("agent_ledger.credential.issued_at")
                .and_then(parse_time),
            expires_at_unix_nano: span
                .attribute("agent_ledger.credential.expires_at")
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
        let first = |pick: fn(&crate::preset::StepFacts) -> Option<&Str>| -> String {
            root_facts
                .and_then(pick)
                .or_else(|| {
                    members
                        .clone()
                        .filter(|step| step.kind == StepKind::Agent)
                        .find_map(|step| pick(&step.facts))
                })
                .or_else(|| members.clone().find_map(|step| pick(&step.facts)))
                .map(|text| text.to_string())
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
            .or_else(|| root.text(super::policy::ENDUSER_ID))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, agent, at_ms, chat, root, span, tool};

    /// 2024-05-01T12:00:00Z in Unix nanoseconds.
    const MAY_FIRST_NOON: i64 = 1_714_564_800_000_000_000;

    fn text(value: &str) -> Value {
        Value::Str(value.into())
    }

    #[test]
    fn parse_time_formats() {
        let cases = vec![
            (
                "RFC 3339 with Z",
                text("2024-05-01T12:00:00Z"),
                Some(MAY_FIRST_NOON),
            ),
            (
                "RFC 3339 with offset",
                text("2024-05-01T14:00:00+02:00"),
                Some(MAY_FIRST_NOON),
            ),
            (
                "RFC 3339 with nanoseconds",
                text("2024-05-01T12:00:00.000000123Z"),
                Some(MAY_FIRST_NOON + 123),
            ),
            (
                "integer nanos as Int",
                Value::Int(MAY_FIRST_NOON),
                Some(MAY_FIRST_NOON),
            ),
            (
                "integer nanos as string",
                text("1714564800000000000"),
                Some(MAY_FIRST_NOON),
            ),
            (
                "integer nanos with spaces",
                text(" 1714564800000000000 "),
                Some(MAY_FIRST_NOON),
            ),
            ("garbage", text("yesterday"), None),
            ("empty string", text(""), None),
            ("date without time", text("2024-05-01"), None),
            ("boolean", Value::Bool(true), None),
            ("double", Value::Double(1.5), None),
        ];
        for (name, value, expected) in cases {
            assert_eq!(parse_time(&value), expected, "case {name}");
        }
    }

    #[test]
    fn summary_names_deduplicated_in_order() {
        let workflow = testing::workflow(
            vec![
                root(1).times(0, 100).build(),
                agent(2, 1, "researcher").times(5, 90).build(),
                chat(3, 2).times(10, 20).build(),
                span(4, "chat claude")
                    .parent(1)
                    .times(30, 40)
                    .attr("gen_ai.operation.name", "chat")
                    .attr("gen_ai.request.model", "claude-sonnet-4")
                    .attr("gen_ai.response.model", "claude-sonnet-4-20250514")
                    .build(),
                chat(5, 2).times(50, 60).build(),
                agent(6, 1, "planner").times(70, 80).build(),
            ],
            &[],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.agent_names,
            vec!["planner", "researcher"],
            "agent names"
        );
        assert_eq!(
            summary.model_names,
            vec!["gpt-4o", "claude-sonnet-4"],
            "model names"
        );
        assert_eq!(
            summary.model_versions,
            vec!["gpt-4o-2024-08-06", "claude-sonnet-4-20250514"],
            "model versions"
        );
        assert_eq!(
            summary.agent_name, "planner",
            "the root's agent comes first"
        );
    }

    #[test]
    fn summary_agent_prefers_agent_steps() {
        let workflow = testing::workflow(
            vec![
                span(1, "task")
                    .attr("agent_ledger.origin.type", "api")
                    .times(0, 100)
                    .build(),
                chat(2, 1)
                    .times(10, 20)
                    .attr("gen_ai.agent.name", "chat-agent")
                    .build(),
                agent(3, 1, "researcher").times(30, 40).build(),
            ],
            &[],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.agent_name, "researcher",
            "agent of the first invoke_agent step"
        );
    }

    #[test]
    fn summary_tools_used() {
        let workflow = testing::workflow(
            vec![
                root(1).times(0, 100).build(),
                tool(2, 1, "search").times(10, 20).build(),
                tool(3, 1, "fetch").times(30, 40).build(),
                tool(4, 1, "search").times(50, 60).build(),
                chat(5, 1)
                    .times(70, 80)
                    .attr("gen_ai.tool.name", "not_a_tool_step")
                    .build(),
            ],
            &[],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.tools_used,
            vec!["search", "fetch"],
            "tool names of tool steps"
        );
    }

    #[test]
    fn summary_step_count_skips_context() {
        let workflow = testing::workflow(
            vec![
                span(1, "POST /tasks").times(0, 200).build(),
                root(2).parent(1).times(10, 100).build(),
                chat(3, 2).times(20, 30).build(),
            ],
            &[1],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.step_count, 2,
            "root and model call, not the context span"
        );
    }

    #[test]
    fn summary_origin_from_root() {
        let workflow = testing::workflow(
            vec![
                root(1)
                    .times(0, 100)
                    .attr("enduser.id", "alice")
                    .attr("agent_ledger.origin.received_at", "2024-05-01T12:00:00Z")
                    .build(),
            ],
            &[],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(summary.origin_type, "user_request", "origin type");
        assert_eq!(summary.origin_source, "web-app", "origin source");
        assert_eq!(summary.task_spec, "summarize the open tickets", "task spec");
        assert_eq!(
            summary.authorized_by, "alice",
            "enduser.id as authorizing principal"
        );
        assert_eq!(
            summary.received_at_unix_nano, MAY_FIRST_NOON,
            "received time"
        );
    }

    #[test]
    fn summary_received_at_defaults_to_start() {
        let workflow = testing::workflow(vec![root(1).times(7, 100).build()], &[]);

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.received_at_unix_nano,
            at_ms(7) as i64,
            "root start time"
        );
    }

    #[test]
    fn credential_from_root_attributes() {
        let root_span = span(1, "task")
            .attr("agent_ledger.credential.id", "cred-1")
            .attr("agent_ledger.credential.issuer", "vault")
            .attr(
                "agent_ledger.credential.scopes",
                "tickets:read  tickets:write",
            )
            .attr("agent_ledger.credential.issued_at", "2024-05-01T12:00:00Z")
            .attr_value(
                "agent_ledger.credential.expires_at",
                Value::Int(MAY_FIRST_NOON + 1),
            )
            .build();

        let credential = Credential::of(&root_span).expect("the span names a credential");

        assert_eq!(credential.id, "cred-1", "id");
        assert_eq!(credential.issuer, "vault", "issuer");
        assert_eq!(
            credential.scopes,
            vec!["tickets:read", "tickets:write"],
            "scopes"
        );
        assert_eq!(
            credential.issued_at_unix_nano,
            Some(MAY_FIRST_NOON),
            "issued at"
        );
        assert_eq!(
            credential.expires_at_unix_nano,
            Some(MAY_FIRST_NOON + 1),
            "expires at"
        );
    }

    #[test]
    fn credential_from_resource() {
        let workflow = testing::workflow(
            vec![
                span(1, "task")
                    .attr("agent_ledger.origin.type", "schedule")
                    .resource_attr("agent_ledger.credential.id", "cred-9")
                    .resource_attr("agent_ledger.credential.scopes", "reports:write")
                    .build(),
            ],
            &[],
        );

        let summary = Summary::of(&workflow);

        assert_eq!(
            summary.credential.id, "cred-9",
            "credential id from the resource"
        );
        assert_eq!(
            summary.credential.scopes,
            vec!["reports:write"],
            "scopes from the resource"
        );
    }
}
