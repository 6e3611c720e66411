//! The assembled workflow: what the assembler hands to the validator, the
//! linker and the sink.

use std::sync::Arc;

use crate::preset::{StepFacts, StepKind};
use crate::span::{Span, SpanId, TraceId};

/// One span of a workflow with the facts resolved from its attributes.
#[derive(Clone, Debug)]
pub struct Step {
    pub span: Span,
    pub facts: StepFacts,
    pub kind: StepKind,
    /// The nearest agent span above this step within the workflow, if any.
    pub agent_span: Option<SpanId>,
}

/// A workflow, or a late segment of one that was already written.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub trace_id: TraceId,
    pub root_span_id: SpanId,
    /// Steps in step order; the root and context spans included.
    pub steps: Vec<Step>,
    /// Verdict revision; each evaluation of the same workflow increments it.
    pub revision: u32,
    /// Chain segment: 0 for the first write, then one per late batch.
    pub segment: u32,
    /// Step index of the first step of this segment.
    pub first_step_index: u32,
    /// For a late segment: the verdict of the written workflow, whose origin,
    /// agent and credential the late steps inherit.
    pub prior: Option<Arc<crate::validate::Verdict>>,
}

impl Workflow {
    /// The root step, when present in this segment.
    pub fn root(&self) -> Option<&Step> {
        self.steps.iter().find(|step| step.kind == StepKind::Root)
    }

    /// Whether this is a late segment of an already written workflow.
    pub fn is_late(&self) -> bool {
        self.prior.is_some()
    }
}

/// Orders steps by start time, then end time, then span id.
pub fn sort_steps(steps: &mut [Step]) {
    steps.sort_by_key(|step| {
        (
            step.span.start_unix_nano,
            step.span.end_unix_nano,
            step.span.span_id,
        )
    });
}
