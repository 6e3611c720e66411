//! Assembler: groups spans into workflows and decides when each is complete.
//!
//! Takes typed spans from the receiver and emits [`Sealed`] workflows
//! (validated and linked) and quarantined spans for the sink. A workflow is
//! complete when its root has arrived and no span of its trace has arrived
//! for the settle time. Spans whose root has not arrived within the root wait,
//! or that are evicted when the buffer bound is reached, are quarantined and
//! their workflow is written as `incomplete`; when the root arrives later the
//! quarantined spans are recalled from ClickHouse and the workflow is
//! evaluated again. Spans of a written workflow that arrive later become a
//! late segment. A span whose ids were already accepted is dropped when its
//! content is identical and quarantined as `conflicting_duplicate` when not.
//!
//! The assembler is synchronous and driven by [`task`]; its memory is bounded
//! by the buffered-span limits and by the number of spans whose metadata it
//! retains for duplicate detection and late spans.

mod state;
pub mod task;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{self, StepLinks};
use crate::preset::{Resolver, StepKind};
use crate::quarantine::{Reason, RejectedSpan};
use crate::span::{Span, SpanId, TraceId};
use crate::validate::{self, Credential, Policy, Status, StepCheck, Verdict};
use crate::workflow::{Step, Workflow, sort_steps};

use state::{MetaState, SpanMeta, TraceState};

/// Assembler limits and timings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Quiet time after which a trace whose root is present is complete.
    pub settle: Duration,
    /// How long spans wait for their root before they are quarantined.
    pub root_wait: Duration,
    /// Maximum spans held while waiting; above it the oldest traces are
    /// evicted.
    pub max_buffered_spans: usize,
    /// Maximum approximate bytes held while waiting.
    pub max_buffered_bytes: usize,
    /// Maximum spans whose metadata is retained after their workflow was
    /// written, for duplicate detection and late spans.
    pub max_retained_spans: usize,
}

/// How the spans of a sealed workflow are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// In `agent_spans`.
    Spans,
    /// In `agent_rejected_spans` with this reason and detail.
    Quarantine(Reason, String),
}

/// A workflow (or late segment) ready for the sink.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub workflow: Workflow,
    pub verdict: Arc<Verdict>,
    pub links: Vec<StepLinks>,
    /// Credential checks of each step, in step order.
    pub checks: Vec<StepCheck>,
    pub storage: Storage,
    /// The `agent_spans` rows, chained by [`crate::seal::seal`].
    pub span_rows: Vec<crate::clickhouse::rows::SpanRow>,
    /// The chain after this segment; set by [`crate::seal::seal`].
    pub chain: Option<crate::seal::Chain>,
}

/// What the assembler hands to the sink.
#[derive(Clone, Debug)]
pub enum Emitted {
    Workflow(Box<Sealed>),
    Rejected(Box<RejectedSpan>),
}

/// Counts of what happened to arriving spans, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Intake {
    pub accepted: usize,
    pub duplicates: usize,
    pub conflicting: usize,
}

/// A request to read quarantined spans back from ClickHouse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recall {
    pub trace_id: TraceId,
    pub span_ids: Vec<SpanId>,
}

/// Recalls waiting longer than this for their rows proceed with what they
/// have; by then the quarantine rows are long written or lost.
const RECALL_ATTEMPTS: u32 = 20;

/// The assembler state.
pub struct Assembler {
    limits: Limits,
    policy: Policy,
    resolver: Resolver,
    traces: HashMap<TraceId, TraceState>,
    buffered_spans: usize,
    buffered_bytes: usize,
    retained_spans: usize,
    /// Traces with no pending spans, oldest first, for retention.
    idle: VecDeque<(TraceId, Instant)>,
}

impl Assembler {
    /// An empty assembler.
    pub fn new(limits: Limits, policy: Policy, resolver: Resolver) -> Self {
        Assembler {
            limits,
            policy,
            resolver,
            traces: HashMap::new(),
            buffered_spans: 0,
            buffered_bytes: 0,
            retained_spans: 0,
            idle: VecDeque::new(),
        }
    }

    /// Spans currently waiting.
    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    /// Traces with spans waiting.
    pub fn pending_traces(&self) -> usize {
        self.traces
            .values()
            .filter(|trace| !trace.pending.is_empty())
            .count()
    }

    /// Adds arriving spans; emits conflicting duplicates and, when the buffer
    /// bound is exceeded, evicted workflows.
    pub fn insert(&mut self, spans: Vec<Span>, now: Instant, out: &mut Vec<Emitted>) -> Intake {
        let mut intake = Intake::default();
        for span in spans {
            self.insert_one(span, now, out, &mut intake);
        }
        self.enforce_bounds(now, out);
        intake
    }

    fn insert_one(
        &mut self,
        span: Span,
        now: Instant,
        out: &mut Vec<Emitted>,
        intake: &mut Intake,
    ) {
        let trace = self
            .traces
            .entry(span.trace_id)
            .or_insert_with(|| TraceState::new(now));
        if let Some(meta) = trace.meta.get(&span.span_id) {
            if meta.content_hash == span.content_hash {
                intake.duplicates += 1;
            } else {
                intake.conflicting += 1;
                let detail = format!(
                    "span {} of trace {} was already accepted with different content; the first copy is kept",
                    span.span_id, span.trace_id
                );
                out.push(Emitted::Rejected(Box::new(RejectedSpan::from_span(
                    &span,
                    Reason::ConflictingDuplicate,
                    detail,
                ))));
            }
            return;
        }
        intake.accepted += 1;
        trace.note_issuance(&span);
        let facts = self.resolver.resolve(&span);
        trace
            .meta
            .insert(span.span_id, SpanMeta::new(&span, &facts));
        self.retained_spans += 1;
        self.buffered_spans += 1;
        self.buffered_bytes += span.approx_bytes();
        trace.add_pending(span, facts, now);
    }

    /// Adds spans read back from quarantine for a trace awaiting its recall.
    pub fn recalled(&mut self, trace_id: TraceId, spans: Vec<Span>, now: Instant) {
        let Some(trace) = self.traces.get_mut(&trace_id) else {
            return;
        };
        let mut missing = trace.awaiting_recall();
        for span in spans {
            let is_quarantined = trace
                .meta
                .get(&span.span_id)
                .is_some_and(|meta| matches!(meta.state, MetaState::Quarantined { .. }));
            if !is_quarantined {
                continue;
            }
            missing.retain(|span_id| *span_id != span.span_id);
            trace.note_issuance(&span);
            let facts = self.resolver.resolve(&span);
            if let Some(meta) = trace.meta.get_mut(&span.span_id) {
                meta.state = MetaState::Pending;
            }
            self.buffered_spans += 1;
            self.buffered_bytes += span.approx_bytes();
            trace.add_pending_recalled(span, facts, now);
        }
        trace.recall_attempts += 1;
        if missing.is_empty() || trace.recall_attempts >= RECALL_ATTEMPTS {
            if !missing.is_empty() {
                tracing::warn!(trace_id = %trace_id, missing = missing.len(), "quarantined spans could not be read back; the workflow is evaluated without them");
                for span_id in missing {
                    if let Some(meta) = trace.meta.get_mut(&span_id) {
                        meta.state = MetaState::Abandoned;
                    }
                }
            }
            trace.recall_in_flight = false;
        } else {
            trace.recall_in_flight = false;
            trace.recall_due = Some(now + Duration::from_millis(500));
        }
    }

    /// Recalls to start now: traces whose root has arrived for spans that
    /// were quarantined while waiting for it.
    pub fn take_recalls(&mut self, now: Instant) -> Vec<Recall> {
        let mut recalls = Vec::new();
        for (trace_id, trace) in &mut self.traces {
            if trace.recall_in_flight || trace.recall_due.is_none_or(|due| due > now) {
                continue;
            }
            let span_ids = trace.awaiting_recall();
            if span_ids.is_empty() {
                trace.recall_due = None;
                continue;
            }
            trace.recall_in_flight = true;
            trace.recall_due = None;
            recalls.push(Recall {
                trace_id: *trace_id,
                span_ids,
            });
        }
        recalls
    }

    /// Completes what is due: settled workflows, late segments, and spans
    /// whose root wait has run out.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        let due: Vec<TraceId> = self
            .traces
            .iter()
            .filter(|(_, trace)| trace.is_due(now, &self.limits))
            .map(|(trace_id, _)| *trace_id)
            .collect();
        for trace_id in due {
            self.complete_trace(trace_id, now, false, out);
        }
        self.expire_idle(now);
    }

    /// Completes every trace that can be completed now, ignoring the settle
    /// time; used at shutdown.
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        let all: Vec<TraceId> = self.traces.keys().copied().collect();
        for trace_id in all {
            self.complete_trace(trace_id, now, true, out);
        }
    }

    fn complete_trace(
        &mut self,
        trace_id: TraceId,
        now: Instant,
        force: bool,
        out: &mut Vec<Emitted>,
    ) {
        let Some(mut trace) = self.traces.remove(&trace_id) else {
            return;
        };
        let released = state::Completion {
            trace: &mut trace,
            trace_id,
            now,
            force,
            limits: &self.limits,
            policy: &self.policy,
        }
        .run(out);
        self.release(released);
        if trace.pending.is_empty() {
            self.idle.push_back((trace_id, now));
        }
        self.traces.insert(trace_id, trace);
    }

    fn release(&mut self, released: state::Released) {
        self.buffered_spans -= released.spans;
        self.buffered_bytes = self.buffered_bytes.saturating_sub(released.bytes);
    }

    fn enforce_bounds(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        if !self.over_bounds() {
            return;
        }
        let mut order: Vec<(Instant, TraceId)> = self
            .traces
            .iter()
            .filter_map(|(trace_id, trace)| trace.first_pending.map(|first| (first, *trace_id)))
            .collect();
        order.sort();
        for (_, trace_id) in order {
            if !self.over_bounds() {
                break;
            }
            self.evict(trace_id, now, out);
        }
    }

    fn over_bounds(&self) -> bool {
        self.buffered_spans > self.limits.max_buffered_spans
            || self.buffered_bytes > self.limits.max_buffered_bytes
    }

    /// Writes a waiting trace now: its complete workflows as usual, the rest
    /// as `incomplete` with reason `evicted`.
    fn evict(&mut self, trace_id: TraceId, now: Instant, out: &mut Vec<Emitted>) {
        tracing::debug!(trace_id = %trace_id, "buffer bound reached; evicting the oldest waiting trace");
        self.complete_trace(trace_id, now, true, out);
        let Some(mut trace) = self.traces.remove(&trace_id) else {
            return;
        };
        let released = state::quarantine_waiting(&mut trace, trace_id, Reason::Evicted, out);
        self.release(released);
        self.idle.push_back((trace_id, now));
        self.traces.insert(trace_id, trace);
    }

    /// Forgets traces with nothing pending, oldest first, once the retained
    /// metadata exceeds its bound.
    fn expire_idle(&mut self, _now: Instant) {
        while self.retained_spans > self.limits.max_retained_spans {
            let Some((trace_id, _)) = self.idle.pop_front() else {
                break;
            };
            let forget = self
                .traces
                .get(&trace_id)
                .is_some_and(|trace| trace.pending.is_empty() && !trace.recall_in_flight);
            if forget && let Some(trace) = self.traces.remove(&trace_id) {
                self.retained_spans -= trace.meta.len();
            }
        }
    }
}

/// Seals one workflow: validates it (unless the verdict is given), checks
/// each step's credential against the root's and the trace's issuance
/// records (`issued`), and links its steps. The hash chain is added when it
/// is emitted, once its storage is final.
fn seal(
    workflow: Workflow,
    verdict: Option<Verdict>,
    written: &HashSet<SpanId>,
    policy: &Policy,
    issued: &[Credential],
) -> Sealed {
    let verdict = Arc::new(verdict.unwrap_or_else(|| validate::evaluate(&workflow, policy)));
    let links = link::link(&workflow, written);
    let checks = validate::check_steps(
        &workflow,
        &verdict.summary.credential,
        issued,
        &policy.tools,
    );
    let storage = match verdict.status {
        Status::Valid => Storage::Spans,
        Status::Rejected => Storage::Quarantine(Reason::PolicyRejected, verdict.reasons.join("; ")),
        Status::Incomplete => {
            Storage::Quarantine(Reason::RootSpanMissing, verdict.reasons.join("; "))
        }
    };
    Sealed {
        workflow,
        verdict,
        links,
        checks,
        storage,
        span_rows: Vec::new(),
        chain: None,
    }
}

/// Builds steps from spans of one workflow: kinds, agent scopes, order.
fn build_steps(
    spans: Vec<(Span, crate::preset::StepFacts)>,
    context: &HashSet<SpanId>,
    meta: &HashMap<SpanId, SpanMeta>,
) -> Vec<Step> {
    let mut steps: Vec<Step> = spans
        .into_iter()
        .map(|(span, facts)| {
            let kind = if context.contains(&span.span_id) {
                StepKind::Context
            } else if facts.is_root {
                StepKind::Root
            } else {
                facts.kind.unwrap_or(StepKind::Other)
            };
            let agent_span = nearest_agent(&span, meta);
            Step {
                span,
                facts,
                kind,
                agent_span,
            }
        })
        .collect();
    sort_steps(&mut steps);
    steps
}

/// The nearest ancestor that is an agent span, stopping at the workflow root.
fn nearest_agent(span: &Span, meta: &HashMap<SpanId, SpanMeta>) -> Option<SpanId> {
    let mut current = span.parent_span_id;
    let mut hops = 0;
    while let Some(span_id) = current {
        let parent = meta.get(&span_id)?;
        if parent.is_root {
            return None;
        }
        if parent.kind == Some(StepKind::Agent) {
            return Some(span_id);
        }
        current = parent.parent;
        hops += 1;
        if hops > state::MAX_DEPTH {
            return None;
        }
    }
    None
}

impl Assembler {
    /// Quarantines every span still waiting for its root; used at shutdown,
    /// when nothing else would keep them.
    pub fn quarantine_all_waiting(&mut self, out: &mut Vec<Emitted>) {
        let waiting: Vec<TraceId> = self
            .traces
            .iter()
            .filter(|(_, trace)| !trace.pending.is_empty())
            .map(|(trace_id, _)| *trace_id)
            .collect();
        for trace_id in waiting {
            if let Some(trace) = self.traces.get_mut(&trace_id) {
                let released =
                    state::quarantine_waiting(trace, trace_id, Reason::RootSpanMissing, out);
                self.release(released);
            }
        }
    }
}
