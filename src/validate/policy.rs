//! The workflow policy: which facts a workflow must state.

use serde::{Deserialize, Serialize};

use crate::span::Span;

use super::{Summary, ToolRules};

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
                || root.text("enduser.id").is_some()
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
