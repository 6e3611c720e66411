//! The workflow policy: which facts a workflow must state.

use serde::{Deserialize, Serialize};

use crate::span::Span;

use super::{Summary, ToolRules};

/// The OpenTelemetry end-user attribute, read as the authorizer when a root
/// has no `agent_ledger.origin.authorized_by`.
pub const ENDUSER_ID: &str = "enduser.id";

/// The valid values of `agent_ledger.origin.type`.
pub const ORIGIN_TYPES: [&str; 6] = [
    "user_request",
    "schedule",
    "event",
    "api",
    "agent_delegation",
    "other",
];

/// Reason given to a trace in which no span marks a workflow root.
pub const NO_ROOT_REASON: &str = "no span carries agent_ledger.origin.type: set it on the span that wraps the agent task, \
together with agent_ledger.origin.source, agent_ledger.task.spec, agent_ledger.credential.id and agent_ledger.credential.scopes";

/// One requirement of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Requirement {
    #[serde(rename = "origin.type")]
    OriginType,
    #[serde(rename = "origin.source")]
    OriginSource,
    #[serde(rename = "task.spec")]
    TaskSpec,
    #[serde(rename = "origin.authorized_by")]
    AuthorizedBy,
    #[serde(rename = "credential.id")]
    CredentialId,
    #[serde(rename = "credential.issuer")]
    CredentialIssuer,
    #[serde(rename = "credential.scopes")]
    CredentialScopes,
    #[serde(rename = "credential.expires_at")]
    CredentialExpiresAt,
    #[serde(rename = "agent.name")]
    AgentName,
    #[serde(rename = "agent.version")]
    AgentVersion,
    #[serde(rename = "model.version")]
    ModelVersion,
}

impl Requirement {
    /// Whether the requirement is met by the root span's own attributes
    /// (so the receiver can check it before the workflow is assembled).
    /// Every requirement.
    pub const ALL: [Requirement; 11] = [
        Requirement::OriginType,
        Requirement::OriginSource,
        Requirement::TaskSpec,
        Requirement::AuthorizedBy,
        Requirement::CredentialId,
        Requirement::CredentialIssuer,
        Requirement::CredentialScopes,
        Requirement::CredentialExpiresAt,
        Requirement::AgentName,
        Requirement::AgentVersion,
        Requirement::ModelVersion,
    ];

    pub fn on_root(self) -> bool {
        !matches!(
            self,
            Requirement::AgentName | Requirement::AgentVersion | Requirement::ModelVersion
        )
    }

    fn root_attribute(self) -> &'static str {
        match self {
            Requirement::OriginType => "agent_ledger.origin.type",
            Requirement::OriginSource => "agent_ledger.origin.source",
            Requirement::TaskSpec => "agent_ledger.task.spec",
            Requirement::AuthorizedBy => "agent_ledger.origin.authorized_by",
            Requirement::CredentialId => "agent_ledger.credential.id",
            Requirement::CredentialIssuer => "agent_ledger.credential.issuer",
            Requirement::CredentialScopes => "agent_ledger.credential.scopes",
            Requirement::CredentialExpiresAt => "agent_ledger.credential.expires_at",
            Requirement::AgentName => "gen_ai.agent.name",
            Requirement::AgentVersion => "gen_ai.agent.version",
            Requirement::ModelVersion => "gen_ai.response.model",
        }
    }
}

/// The requirements every workflow must meet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Requirements checked; the default is the contract's default policy.
    #[serde(default = "default_requirements")]
    pub require: Vec<Requirement>,
    /// Tool rules: the scopes each tool requires and which tools write.
    #[serde(default)]
    pub tools: ToolRules,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require: default_requirements(),
            tools: ToolRules::default(),
        }
    }
}

fn default_requirements() -> Vec<Requirement> {
    vec![
        Requirement::OriginType,
        Requirement::OriginSource,
        Requirement::TaskSpec,
        Requirement::CredentialId,
        Requirement::CredentialScopes,
        Requirement::AgentName,
        Requirement::ModelVersion,
    ]
}

impl Policy {
    /// Every failed requirement of a workflow, as reasons.
    pub fn reasons(&self, root: &Span, summary: &Summary) -> Vec<String> {
        let mut reasons = root_reasons(self, root);
        for requirement in &self.require {
            if let Some(reason) = workflow_reason(*requirement, summary) {
                reasons.push(reason);
            }
        }
        reasons
    }
}

/// The failed requirements that the root span alone decides.
/// Names of the root attributes that [`root_reasons`] may read.
pub fn root_attribute_names() -> impl Iterator<Item = &'static str> {
    Requirement::ALL
        .into_iter()
        .filter(|requirement| requirement.on_root())
        .map(Requirement::root_attribute)
        .chain([ENDUSER_ID])
}

pub fn root_reasons(policy: &Policy, root: &Span) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(origin) = root.text(Requirement::OriginType.root_attribute())
        && !ORIGIN_TYPES.contains(&origin.trim())
    {
        reasons.push(format!(
            "invalid agent_ledger.origin.type {origin:?} on root span: expected one of {}",
            ORIGIN_TYPES.join(", ")
        ));
    }
    for requirement in policy
        .require
        .iter()
        .filter(|requirement| requirement.on_root())
    {
        if !root_has(*requirement, root) {
            reasons.push(format!(
                "missing {} on root span",
                requirement.root_attribute()
            ));
        }
    }
    reasons
}

fn root_has(requirement: Requirement, root: &Span) -> bool {
    match requirement {
        Requirement::AuthorizedBy => {
            root.text("agent_ledger.origin.authorized_by").is_some()
                || root.text(ENDUSER_ID).is_some()
        }
        Requirement::CredentialScopes => root
            .attribute("agent_ledger.credential.scopes")
            .is_some_and(|value| !value.to_string_list(None).is_empty()),
        other => root.text(other.root_attribute()).is_some(),
    }
}

fn workflow_reason(requirement: Requirement, summary: &Summary) -> Option<String> {
    let missing = match requirement {
        Requirement::AgentName => summary.agent_name.is_empty(),
        Requirement::AgentVersion => summary.agent_version.is_empty(),
        Requirement::ModelVersion => summary.model_versions.is_empty(),
        _ => return None,
    };
    missing.then(|| match requirement {
        Requirement::AgentName => "missing agent name: set gen_ai.agent.name on the root span or on an invoke_agent span inside the workflow".to_owned(),
        Requirement::AgentVersion => "missing agent version: set gen_ai.agent.version on the root span or on an invoke_agent span inside the workflow".to_owned(),
        _ => "missing model version: no model call in the workflow reports gen_ai.response.model (or a model name its instrumentation records), and the root span does not set it".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;
    use crate::testing::{self, agent, chat, root, span};
    use crate::validate::{Status, evaluate};

    struct Case {
        name: &'static str,
        policy: Policy,
        root: Span,
        inside: Vec<Span>,
        expected: Vec<String>,
    }

    fn without(mut span: Span, key: &str) -> Span {
        span.attributes.0.retain(|(name, _)| name != key);
        span
    }

    fn with(span: Span, key: &str, value: Value) -> Span {
        let mut span = without(span, key);
        span.attributes.0.push((key.into(), value));
        span
    }

    fn text(value: &str) -> Value {
        Value::Str(value.into())
    }

    fn missing_on_root(attribute: &str) -> String {
        format!("missing {attribute} on root span")
    }

    fn workflow_missing(requirement: Requirement) -> String {
        workflow_reason(requirement, &Summary::default()).expect("a workflow requirement")
    }

    /// Builds a workflow of `root` and `inside` and returns the reasons that
    /// `policy` gives it.
    fn reasons(policy: &Policy, root: Span, inside: Vec<Span>) -> Vec<String> {
        let root_span = root.clone();
        let mut spans = vec![root];
        spans.extend(inside);
        let workflow = testing::workflow(spans, &[]);
        policy.reasons(&root_span, &Summary::of(&workflow))
    }

    fn model_call() -> Vec<Span> {
        vec![chat(2, 1).times(10, 20).build()]
    }

    fn cases() -> Vec<Case> {
        let default = Policy::default;
        let full_root = || root(1).build();
        let stripped = |key: &str| without(full_root(), key);
        let scoped = |value: Value| with(full_root(), "agent_ledger.credential.scopes", value);
        let mut with_authorized_by = Policy::default();
        with_authorized_by.require.push(Requirement::AuthorizedBy);
        let on_resource = span(1, "handle_request")
            .attr("agent_ledger.origin.type", "schedule")
            .resource_attr("agent_ledger.origin.source", "cron")
            .resource_attr("agent_ledger.task.spec", "nightly report")
            .resource_attr("agent_ledger.credential.id", "cred-9")
            .resource_attr("agent_ledger.credential.scopes", "reports:write")
            .resource_attr("gen_ai.agent.name", "reporter")
            .build();

        vec![
            Case {
                name: "complete workflow",
                policy: default(),
                root: full_root(),
                inside: model_call(),
                expected: vec![],
            },
            Case {
                name: "origin type missing",
                policy: default(),
                root: stripped("agent_ledger.origin.type"),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.origin.type")],
            },
            Case {
                name: "origin source missing",
                policy: default(),
                root: stripped("agent_ledger.origin.source"),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.origin.source")],
            },
            Case {
                name: "task spec missing",
                policy: default(),
                root: stripped("agent_ledger.task.spec"),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.task.spec")],
            },
            Case {
                name: "credential id missing",
                policy: default(),
                root: stripped("agent_ledger.credential.id"),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.credential.id")],
            },
            Case {
                name: "credential scopes missing",
                policy: default(),
                root: stripped("agent_ledger.credential.scopes"),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.credential.scopes")],
            },
            Case {
                name: "agent name missing",
                policy: default(),
                root: stripped("gen_ai.agent.name"),
                inside: model_call(),
                expected: vec![workflow_missing(Requirement::AgentName)],
            },
            Case {
                name: "model version missing",
                policy: default(),
                root: full_root(),
                inside: vec![],
                expected: vec![workflow_missing(Requirement::ModelVersion)],
            },
            Case {
                name: "invalid origin type",
                policy: default(),
                root: with(full_root(), "agent_ledger.origin.type", text("manual")),
                inside: model_call(),
                expected: vec![
                    "invalid agent_ledger.origin.type \"manual\" on root span: expected one of \
                     user_request, schedule, event, api, agent_delegation, other"
                        .to_owned(),
                ],
            },
            Case {
                name: "scopes as string array",
                policy: default(),
                root: scoped(Value::Array(vec![
                    text("tickets:read"),
                    text("tickets:write"),
                ])),
                inside: model_call(),
                expected: vec![],
            },
            Case {
                name: "scopes as space-separated string",
                policy: default(),
                root: scoped(text("tickets:read tickets:write")),
                inside: model_call(),
                expected: vec![],
            },
            Case {
                name: "scopes as empty string",
                policy: default(),
                root: scoped(text("")),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.credential.scopes")],
            },
            Case {
                name: "scopes as blank string",
                policy: default(),
                root: scoped(text("   ")),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.credential.scopes")],
            },
            Case {
                name: "scopes as empty array",
                policy: default(),
                root: scoped(Value::Array(vec![])),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.credential.scopes")],
            },
            Case {
                name: "authorized_by given",
                policy: with_authorized_by.clone(),
                root: with(
                    full_root(),
                    "agent_ledger.origin.authorized_by",
                    text("alice"),
                ),
                inside: model_call(),
                expected: vec![],
            },
            Case {
                name: "enduser.id for authorized_by",
                policy: with_authorized_by.clone(),
                root: with(full_root(), "enduser.id", text("alice")),
                inside: model_call(),
                expected: vec![],
            },
            Case {
                name: "authorized_by missing",
                policy: with_authorized_by,
                root: full_root(),
                inside: model_call(),
                expected: vec![missing_on_root("agent_ledger.origin.authorized_by")],
            },
            Case {
                name: "agent name on invoke_agent inside",
                policy: default(),
                root: stripped("gen_ai.agent.name"),
                inside: vec![
                    agent(2, 1, "researcher").times(5, 50).build(),
                    chat(3, 2).times(10, 20).build(),
                ],
                expected: vec![],
            },
            Case {
                name: "model version from response model",
                policy: default(),
                root: full_root(),
                inside: vec![
                    span(2, "chat")
                        .parent(1)
                        .attr("gen_ai.operation.name", "chat")
                        .attr("gen_ai.response.model", "claude-sonnet-4-20250514")
                        .build(),
                ],
                expected: vec![],
            },
            Case {
                name: "custom policy with fewer requirements",
                policy: Policy {
                    require: vec![Requirement::OriginType, Requirement::CredentialId],
                    ..Policy::default()
                },
                root: span(1, "task")
                    .attr("agent_ledger.origin.type", "event")
                    .attr("agent_ledger.credential.id", "cred-2")
                    .build(),
                inside: vec![],
                expected: vec![],
            },
            Case {
                name: "every requirement",
                policy: Policy {
                    require: Requirement::ALL.to_vec(),
                    ..Policy::default()
                },
                root: full_root(),
                inside: model_call(),
                expected: vec![
                    missing_on_root("agent_ledger.origin.authorized_by"),
                    missing_on_root("agent_ledger.credential.issuer"),
                    missing_on_root("agent_ledger.credential.expires_at"),
                    workflow_missing(Requirement::AgentVersion),
                ],
            },
            Case {
                name: "attributes on the resource",
                policy: default(),
                root: on_resource,
                inside: model_call(),
                expected: vec![],
            },
        ]
    }

    #[test]
    fn policy_reasons_per_rule() {
        for case in cases() {
            let actual = reasons(&case.policy, case.root, case.inside);
            assert_eq!(actual, case.expected, "case {}", case.name);
        }
    }

    #[test]
    fn root_reasons_skip_workflow_requirements() {
        let root_span = without(root(1).build(), "gen_ai.agent.name");

        let reasons = root_reasons(&Policy::default(), &root_span);

        assert!(
            reasons.is_empty(),
            "agent name and model version are not root requirements: {reasons:?}"
        );
    }

    #[test]
    fn evaluate_sets_status_from_reasons() {
        let valid = testing::workflow(vec![root(1).build(), chat(2, 1).build()], &[]);
        let rejected = testing::workflow(vec![root(1).build()], &[]);

        let valid_verdict = evaluate(&valid, &Policy::default());
        let rejected_verdict = evaluate(&rejected, &Policy::default());

        assert_eq!(
            valid_verdict.status,
            Status::Valid,
            "workflow with a model call"
        );
        assert_eq!(
            rejected_verdict.status,
            Status::Rejected,
            "workflow without a model call"
        );
        assert_eq!(
            rejected_verdict.reasons,
            vec![workflow_missing(Requirement::ModelVersion)],
            "reasons of the workflow without a model call"
        );
    }

    #[test]
    fn policy_from_yaml_names() {
        let yaml = "require: [origin.type, credential.expires_at, model.version]";

        let policy: Policy = serde_yaml_ng::from_str(yaml).expect("policy parses");

        let expected = vec![
            Requirement::OriginType,
            Requirement::CredentialExpiresAt,
            Requirement::ModelVersion,
        ];
        assert_eq!(policy.require, expected, "requirements in YAML order");
    }

    #[test]
    fn single_model_name_is_version() {
        let request_only = span(2, "chat gpt-4o")
            .parent(1)
            .attr("gen_ai.operation.name", "chat")
            .attr("gen_ai.request.model", "gpt-4o")
            .build();

        let actual = reasons(&Policy::default(), root(1).build(), vec![request_only]);

        assert!(
            actual.is_empty(),
            "a framework that records only gen_ai.request.model names the version with it: {actual:?}"
        );
    }

    #[test]
    fn requirement_list_complete() {
        // The match has no wildcard, so a new requirement fails to compile
        // here until it gets a position in `Requirement::ALL`.
        let position = |requirement: Requirement| match requirement {
            Requirement::OriginType => 0,
            Requirement::OriginSource => 1,
            Requirement::TaskSpec => 2,
            Requirement::AuthorizedBy => 3,
            Requirement::CredentialId => 4,
            Requirement::CredentialIssuer => 5,
            Requirement::CredentialScopes => 6,
            Requirement::CredentialExpiresAt => 7,
            Requirement::AgentName => 8,
            Requirement::AgentVersion => 9,
            Requirement::ModelVersion => 10,
        };
        for (index, requirement) in Requirement::ALL.into_iter().enumerate() {
            assert_eq!(position(requirement), index, "{requirement:?}");
        }
    }
}
