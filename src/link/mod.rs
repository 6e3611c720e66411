//! Linker: gives every step of a workflow its step index and the steps that
//! caused it, each with its basis (`tool_call_id`, `sequence`, `explicit`,
//! `parent`). Links the client sent are kept; the linker's are added beside
//! them when rows are built.

mod messages;

use std::collections::{HashMap, HashSet};

use crate::preset::StepKind;
use crate::span::SpanId;
use crate::workflow::{Step, Workflow};

/// Attribute naming a step's causes directly: hex span ids, as a string
/// array or one comma-separated string.
pub const CAUSED_BY: &str = "agent_ledger.step.caused_by";

/// Why the linker says one step caused another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basis {
    ToolCallId,
    Sequence,
    Explicit,
    Parent,
}

impl Basis {
    /// The value of `agent_ledger.link.basis`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::ToolCallId => "tool_call_id",
            Basis::Sequence => "sequence",
            Basis::Explicit => "explicit",
            Basis::Parent => "parent",
        }
    }
}

/// One cause of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cause {
    pub span_id: SpanId,
    pub basis: Basis,
}

/// The linker's result for one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepLinks {
    pub step_index: u32,
    pub causes: Vec<Cause>,
}

/// Model-call message facts, computed once per workflow.
struct CallIds {
    requested: HashMap<SpanId, Vec<String>>,
    results: HashMap<SpanId, Vec<String>>,
}

/// Links every step of `workflow`; the result is in the workflow's step
/// order. `written` holds the span ids of steps written earlier (for a late
/// segment), which may be parents or explicit causes of the new steps.
pub fn link(workflow: &Workflow, written: &HashSet<SpanId>) -> Vec<StepLinks> {
    let all: Vec<&Step> = workflow.steps.iter().collect();
    let ids = call_ids(&all);
    let mut present: HashSet<SpanId> = all.iter().map(|step| step.span.span_id).collect();
    present.extend(written.iter().copied());
    workflow
        .steps
        .iter()
        .enumerate()
        .map(|(offset, step)| StepLinks {
            step_index: workflow.first_step_index + offset as u32,
            causes: causes(step, &all, &ids, &present),
        })
        .collect()
}

fn call_ids(steps: &[&Step]) -> CallIds {
    let mut requested = HashMap::new();
    let mut results = HashMap::new();
    for step in steps.iter().filter(|step| step.kind == StepKind::Inference) {
        let span_id = step.span.span_id;
        requested.insert(
            span_id,
            messages::requested_call_ids(&step.span, step.facts.output_messages.as_deref()),
        );
        results.insert(
            span_id,
            messages::result_call_ids(&step.span, step.facts.input_messages.as_deref()),
        );
    }
    CallIds { requested, results }
}

fn causes(step: &Step, all: &[&Step], ids: &CallIds, present: &HashSet<SpanId>) -> Vec<Cause> {
    let explicit = explicit_causes(step, present);
    if !explicit.is_empty() {
        return explicit;
    }
    let found = match step.kind {
        StepKind::Tool => tool_causes(step, all, ids),
        StepKind::Inference => inference_causes(step, all, ids),
        _ => Vec::new(),
    };
    if !found.is_empty() {
        return found;
    }
    parent_cause(step, present)
}

fn explicit_causes(step: &Step, present: &HashSet<SpanId>) -> Vec<Cause> {
    let Some(value) = step.span.attributes.get(CAUSED_BY) else {
        return Vec::new();
    };
    value
        .to_string_list(Some(','))
        .iter()
        .filter_map(|text| SpanId::from_hex(text))
        .filter(|span_id| present.contains(span_id) && *span_id != step.span.span_id)
        .map(|span_id| Cause {
            span_id,
            basis: Basis::Explicit,
        })
        .collect()
}

fn parent_cause(step: &Step, present: &HashSet<SpanId>) -> Vec<Cause> {
    step.span
        .parent_span_id
        .filter(|parent| present.contains(parent))
        .map(|span_id| {
            vec![Cause {
                span_id,
                basis: Basis::Parent,
            }]
        })
        .unwrap_or_default()
}

/// A tool step is caused by the model call whose output requested its call
/// id, else by the latest model call in its agent scope that ended before it
/// started.
fn tool_causes(step: &Step, all: &[&Step], ids: &CallIds) -> Vec<Cause> {
    if let Some(call_id) = step.facts.tool_call_id.as_deref() {
        let requester = all
            .iter()
            .filter(|other| other.kind == StepKind::Inference)
            .filter(|other| other.span.start_unix_nano <= step.span.start_unix_nano)
            .filter(|other| {
                ids.requested[&other.span.span_id]
                    .iter()
                    .any(|id| id == call_id)
            })
            .max_by_key(|other| other.span.end_unix_nano);
        if let Some(requester) = requester {
            return vec![Cause {
                span_id: requester.span.span_id,
                basis: Basis::ToolCallId,
            }];
        }
    }
    all.iter()
        .filter(|other| same_scope(step, other) && other.kind == StepKind::Inference)
        .filter(|other| other.span.end_unix_nano <= step.span.start_unix_nano)
        .max_by_key(|other| (other.span.end_unix_nano, other.span.start_unix_nano))
        .map(|model| {
            vec![Cause {
                span_id: model.span.span_id,
                basis: Basis::Sequence,
            }]
        })
        .unwrap_or_default()
}

/// A model call is caused by the tool steps whose results first appear in
/// its input, else by the tool steps in its agent scope that ended after the
/// previous model call and before it started.
fn inference_causes(step: &Step, all: &[&Step], ids: &CallIds) -> Vec<Cause> {
    let earlier_models: Vec<&&Step> = all
        .iter()
        .filter(|other| {
            other.kind == StepKind::Inference && other.span.span_id != step.span.span_id
        })
        .filter(|other| other.span.start_unix_nano < step.span.start_unix_nano)
        .collect();
    let seen_before: HashSet<&String> = earlier_models
        .iter()
        .filter(|other| same_scope(step, other))
        .flat_map(|other| ids.results[&other.span.span_id].iter())
        .collect();
    let fresh: Vec<&String> = ids.results[&step.span.span_id]
        .iter()
        .filter(|id| !seen_before.contains(id))
        .collect();
    let by_id: Vec<Cause> = all
        .iter()
        .filter(|other| other.kind == StepKind::Tool)
        .filter(|other| {
            other
                .facts
                .tool_call_id
                .as_ref()
                .is_some_and(|id| fresh.contains(&id))
        })
        .map(|tool| Cause {
            span_id: tool.span.span_id,
            basis: Basis::ToolCallId,
        })
        .collect();
    if !by_id.is_empty() {
        return by_id;
    }
    let previous_end = earlier_models
        .iter()
        .filter(|other| same_scope(step, other))
        .map(|other| other.span.end_unix_nano)
        .max()
        .unwrap_or(0);
    all.iter()
        .filter(|other| same_scope(step, other) && other.kind == StepKind::Tool)
        .filter(|other| other.span.end_unix_nano >= previous_end && previous_end > 0)
        .filter(|other| other.span.end_unix_nano <= step.span.start_unix_nano)
        .map(|tool| Cause {
            span_id: tool.span.span_id,
            basis: Basis::Sequence,
        })
        .collect()
}

fn same_scope(step: &Step, other: &Step) -> bool {
    step.agent_span == other.agent_span
}
