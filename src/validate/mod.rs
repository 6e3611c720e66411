//! Validator: applies the workflow policy to an assembled workflow and
//! produces its verdict: status, every failed requirement as a reason, and
//! the summary (origin, agent, models, credential) that each stored row
//! carries. [`credentials`] checks each step against its credential.

pub mod credentials;
mod policy;
mod summary;

pub use credentials::{StepCheck, ToolRule, ToolRules, Violation, check_steps, issuance};
pub use policy::{NO_ROOT_REASON, Policy, Requirement, root_attribute_names, root_reasons};
pub use summary::{Credential, Summary, parse_time};

use std::sync::Arc;

use crate::workflow::Workflow;

/// Verdict status, as stored in `agent_workflows.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Valid,
    Rejected,
    Incomplete,
}

impl Status {
    /// The name stored in ClickHouse and used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Rejected => "rejected",
            Status::Incomplete => "incomplete",
        }
    }
}

/// The outcome of evaluating one workflow.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<String>,
    pub summary: Arc<Summary>,
}

/// Evaluates `workflow` against `policy`.
pub fn evaluate(workflow: &Workflow, policy: &Policy) -> Verdict {
    let summary = Summary::of(workflow);
    let reasons = match workflow.root() {
        Some(root) => policy.reasons(&root.span, &summary),
        None => vec![format!(
            "root span {} is missing from the workflow",
            workflow.root_span_id
        )],
    };
    let status = if reasons.is_empty() {
        Status::Valid
    } else {
        Status::Rejected
    };
    Verdict {
        status,
        reasons,
        summary: Arc::new(summary),
    }
}

/// The verdict of a trace in which no span carries the origin type.
pub fn no_root_verdict(workflow: &Workflow) -> Verdict {
    Verdict {
        status: Status::Rejected,
        reasons: vec![policy::NO_ROOT_REASON.to_owned()],
        summary: Arc::new(Summary::of(workflow)),
    }
}

/// The verdict of a workflow whose root did not arrive in time.
pub fn incomplete_verdict(workflow: &Workflow, reason: String) -> Verdict {
    Verdict {
        status: Status::Incomplete,
        reasons: vec![reason],
        summary: Arc::new(Summary::of(workflow)),
    }
}
