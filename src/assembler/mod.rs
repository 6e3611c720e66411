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

#[cfg(test)]
mod properties;
pub mod restore;
mod state;
mod table;
pub mod task;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{self, StepLinks};
use crate::preset::{Resolver, StepKind};
use crate::quarantine::{Reason, RejectedSpan};
use crate::receiver::convert::{AttributeLimits, RequestContext, span_from_raw};
use crate::span::{Span, SpanId, TraceId};
use crate::spool::{Location, Spool};
use crate::validate::{self, Credential, Policy, Status, StepCheck, Verdict};
use crate::workflow::{Step, Workflow, sort_steps};

use state::{FastMap, FastSet, MetaState, SpanMeta, TraceState};
use table::SpanTable;

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
    /// Attribute limits applied when spooled spans are converted again; the
    /// same as the receiver's, so a span reads back as it was checked.
    pub attributes: AttributeLimits,
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
    /// The `agent_spans` rows in RowBinary, chained and encoded by
    /// [`crate::seal::seal`].
    pub span_rows: Vec<crate::clickhouse::encode::EncodedSpan>,
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
    traces: FastMap<TraceId, Box<TraceState>>,
    buffered_spans: usize,
    buffered_bytes: usize,
    retained_spans: usize,
    /// Traces with no pending spans, oldest first, for retention.
    idle: VecDeque<(TraceId, Instant)>,
    /// Traces with spans waiting; completion checks only these, not every
    /// retained trace.
    active: FastSet<TraceId>,
    /// Traces that may have a recall due, so that recalls are looked for
    /// among these instead of among every trace with waiting spans.
    recalls: FastSet<TraceId>,
    /// When each trace with waiting spans is next worth a completion run,
    /// earliest first, so that finding due traces does not visit every
    /// waiting trace. A trace may have stale later entries; its
    /// `TraceState::queued` names the one that counts.
    checks: BinaryHeap<Reverse<(Instant, TraceId)>>,
    /// Where waiting spans' bodies are read back from; without a spool they
    /// are held in memory.
    spool: Option<Arc<Spool>>,
}

impl Assembler {
    /// An empty assembler.
    pub fn new(limits: Limits, policy: Policy, resolver: Resolver) -> Self {
        Assembler {
            limits,
            policy,
            resolver,
            traces: FastMap::default(),
            buffered_spans: 0,
            buffered_bytes: 0,
            retained_spans: 0,
            idle: VecDeque::new(),
            active: FastSet::default(),
            recalls: FastSet::default(),
            checks: BinaryHeap::new(),
            spool: None,
        }
    }

    /// Reads the bodies of spooled spans from `spool` and releases the
    /// locations of spans it drops.
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// The spool holding waiting spans' bodies, if any.
    pub fn spool(&self) -> Option<Arc<Spool>> {
        self.spool.clone()
    }

    /// The attribute limits spooled spans are converted with.
    pub fn attribute_limits(&self) -> AttributeLimits {
        self.limits.attributes
    }

    fn release_location(&self, location: Option<Location>) {
        if let (Some(spool), Some(location)) = (&self.spool, location) {
            spool.release([location]);
        }
    }

    /// Spans currently waiting.
    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    /// Traces with spans waiting.
    pub fn pending_traces(&self) -> usize {
        self.active.len()
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
        let span_trace = span.trace_id;
        let trace = self
            .traces
            .entry(span.trace_id)
            .or_insert_with(|| Box::new(TraceState::new(now)));
        if let Some(meta) = trace.meta.get(&span.span_id) {
            if meta.content_hash == span.content_hash {
                intake.duplicates += 1;
                let location = span.spool;
                self.release_location(location);
            } else {
                intake.conflicting += 1;
                let detail = format!(
                    "span {} of trace {} was already accepted with different content; the first copy is kept",
                    span.span_id, span.trace_id
                );
                out.push(Emitted::Rejected(Box::new(RejectedSpan::from_span(
                    &self.in_full(span),
                    Reason::ConflictingDuplicate,
                    detail,
                ))));
            }
            return;
        }
        intake.accepted += 1;
        trace.note_issuance(&span);
        let (is_root, kind) = self.resolver.classify(&span);
        trace
            .meta
            .insert(span.span_id, SpanMeta::new(&span, is_root, kind));
        self.retained_spans += 1;
        self.buffered_spans += 1;
        let span_id = span.span_id;
        let pending = state::Pending::new(span, &self.resolver);
        self.buffered_bytes += pending.approx_bytes();
        trace.add_pending(span_id, pending, now);
        self.active.insert(span_trace);
        self.schedule(span_trace);
    }

    /// Returns `span` with every attribute: a span that kept only those read
    /// on arrival is read again from its spool record, which it carries.
    fn in_full(&self, span: Span) -> Span {
        if !span.arrival_only {
            return span;
        }
        let context = RequestContext {
            received_at_unix_nano: span.received_at_unix_nano,
            sender: span.sender.clone(),
            limits: self.limits.attributes,
        };
        match span_from_raw(span.raw.clone(), &context) {
            Some(full) => Span {
                content_hash: span.content_hash,
                spool: span.spool,
                ..full
            },
            None => {
                tracing::warn!(
                    trace_id = %span.trace_id,
                    span_id = %span.span_id,
                    "failed to decode a span's spool record again, so its quarantine row lists only the attributes read on arrival"
                );
                span
            }
        }
    }

    /// Queues `trace_id` for its next check unless an entry at least as
    /// early is queued or the trace is already handed out as due.
    fn schedule(&mut self, trace_id: TraceId) {
        let Some(trace) = self.traces.get_mut(&trace_id) else {
            return;
        };
        if trace.handed_out {
            return;
        }
        let Some(at) = trace.due_at(&self.limits) else {
            return;
        };
        if trace.queued.is_none_or(|queued| at < queued) {
            trace.queued = Some(at);
            self.checks.push(Reverse((at, trace_id)));
        }
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
            if let Some(meta) = trace.meta.get_mut(&span.span_id) {
                meta.state = MetaState::Pending;
            }
            self.buffered_spans += 1;
            self.buffered_bytes += span.approx_bytes();
            trace.add_pending_recalled(span, &self.resolver, now);
            self.active.insert(trace_id);
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
            self.recalls.insert(trace_id);
        }
        self.schedule(trace_id);
    }

    /// Recalls to start now: traces whose root has arrived for spans that
    /// were quarantined while waiting for it.
    pub fn take_recalls(&mut self, now: Instant) -> Vec<Recall> {
        let mut recalls = Vec::new();
        let traces = &mut self.traces;
        self.recalls.retain(|trace_id| {
            let Some(trace) = traces.get_mut(trace_id) else {
                return false;
            };
            let Some(due) = trace.recall_due else {
                return false;
            };
            if trace.recall_in_flight || due > now {
                return true;
            }
            trace.recall_due = None;
            let span_ids = trace.awaiting_recall();
            if span_ids.is_empty() {
                return false;
            }
            trace.recall_in_flight = true;
            recalls.push(Recall {
                trace_id: *trace_id,
                span_ids,
            });
            false
        });
        recalls
    }

    /// The traces whose completion may decide something now.
    pub fn due(&mut self, now: Instant) -> Vec<TraceId> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, trace_id))) = self.checks.peek() {
            if at > now {
                break;
            }
            self.checks.pop();
            let Some(trace) = self.traces.get_mut(&trace_id) else {
                continue;
            };
            if trace.queued != Some(at) {
                continue;
            }
            trace.queued = None;
            match trace.due_at(&self.limits) {
                Some(ready) if ready <= now => {
                    trace.handed_out = true;
                    due.push(trace_id);
                }
                Some(_) => self.schedule(trace_id),
                None => {}
            }
        }
        due
    }

    /// Completes the given traces (from [`Assembler::due`]).
    pub fn complete(&mut self, traces: &[TraceId], now: Instant, out: &mut Vec<Emitted>) {
        for trace_id in traces {
            self.complete_trace(*trace_id, now, false, out);
        }
    }

    /// Forgets idle traces beyond the retention bound.
    pub fn expire(&mut self, now: Instant) {
        self.expire_idle(now);
    }

    /// Completes what is due: settled workflows, late segments, and spans
    /// whose root wait has run out.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        let due = self.due(now);
        self.complete(&due, now, out);
        self.expire_idle(now);
    }

    /// Completes every trace that can be completed now, ignoring the settle
    /// time; used at shutdown.
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        let all = self.active_traces();
        self.flush_traces(&all, now, out);
    }

    /// Returns the traces with waiting spans.
    pub fn active_traces(&self) -> Vec<TraceId> {
        self.active.iter().copied().collect()
    }

    /// Completes `traces` like [`Assembler::flush`], so that a large backlog
    /// can be written in steps.
    pub fn flush_traces(&mut self, traces: &[TraceId], now: Instant, out: &mut Vec<Emitted>) {
        for trace_id in traces {
            self.complete_trace(*trace_id, now, true, out);
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
            loader: state::Loader {
                resolver: &self.resolver,
                spool: self.spool.as_deref(),
                limits: self.limits.attributes,
            },
        }
        .run(out);
        self.release(released);
        if trace.recall_due.is_some() {
            self.recalls.insert(trace_id);
        }
        trace.handed_out = false;
        if trace.pending.is_empty() {
            // The trace is now kept only for duplicates and late spans, so
            // the room its waiting spans took is given back.
            trace.pending.shrink_to_fit();
            trace.meta.shrink_to_fit();
            self.idle.push_back((trace_id, now));
            self.active.remove(&trace_id);
        }
        self.traces.insert(trace_id, trace);
        self.schedule(trace_id);
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
            .active
            .iter()
            .filter_map(|trace_id| {
                let first = self.traces.get(trace_id)?.first_pending?;
                Some((first, *trace_id))
            })
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
        let loader = state::Loader {
            resolver: &self.resolver,
            spool: self.spool.as_deref(),
            limits: self.limits.attributes,
        };
        let released =
            state::quarantine_waiting(&mut trace, trace_id, Reason::Evicted, loader, out);
        self.release(released);
        self.idle.push_back((trace_id, now));
        self.active.remove(&trace_id);
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
    meta: &SpanTable<SpanMeta>,
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
fn nearest_agent(span: &Span, meta: &SpanTable<SpanMeta>) -> Option<SpanId> {
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

/// A waiting span to copy forward in the spool.
#[derive(Clone, Debug)]
pub struct Move {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub location: Location,
    pub received_at_unix_nano: i64,
    pub sender: Arc<str>,
}

impl Assembler {
    /// The spooled spans waiting in `segments`, so that they can be copied
    /// forward and the segments deleted.
    pub fn spooled_in(&self, segments: &[u64]) -> Vec<Move> {
        let mut moves = Vec::new();
        for (trace_id, trace) in &self.traces {
            for (span_id, pending) in &trace.pending {
                let state::Pending::Spooled(spooled) = pending else {
                    continue;
                };
                if segments.contains(&spooled.location.segment) {
                    moves.push(Move {
                        trace_id: *trace_id,
                        span_id: *span_id,
                        location: spooled.location,
                        received_at_unix_nano: spooled.received_at_unix_nano,
                        sender: spooled.sender.clone(),
                    });
                }
            }
        }
        moves
    }

    /// Points moved spans at their new locations; returns the locations no
    /// longer needed (the old ones, and new copies of spans that completed
    /// meanwhile) for release.
    pub fn relocate(&mut self, moves: &[Move], new_locations: &[Location]) -> Vec<Location> {
        let mut unused = Vec::with_capacity(moves.len());
        for (moved, new_location) in moves.iter().zip(new_locations) {
            let pending = self
                .traces
                .get_mut(&moved.trace_id)
                .and_then(|trace| trace.pending.get_mut(&moved.span_id));
            match pending {
                Some(state::Pending::Spooled(spooled)) if spooled.location == moved.location => {
                    spooled.location = *new_location;
                    unused.push(moved.location);
                }
                _ => unused.push(*new_location),
            }
        }
        unused
    }

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
            let loader = state::Loader {
                resolver: &self.resolver,
                spool: self.spool.as_deref(),
                limits: self.limits.attributes,
            };
            if let Some(trace) = self.traces.get_mut(&trace_id) {
                let released = state::quarantine_waiting(
                    trace,
                    trace_id,
                    Reason::RootSpanMissing,
                    loader,
                    out,
                );
                self.release(released);
            }
            self.active.remove(&trace_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, agent, chat, root, span, span_id, tool, trace_id};

    const SETTLE: Duration = Duration::from_secs(10);
    const ROOT_WAIT: Duration = Duration::from_secs(60);

    fn limits() -> Limits {
        Limits {
            settle: SETTLE,
            root_wait: ROOT_WAIT,
            max_buffered_spans: 10_000,
            max_buffered_bytes: 1 << 30,
            max_retained_spans: 100_000,
            attributes: AttributeLimits::default(),
        }
    }

    fn assembler(limits: Limits) -> Assembler {
        Assembler::new(limits, Policy::default(), Resolver::default())
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn sealed(out: &[Emitted]) -> Vec<&Sealed> {
        out.iter()
            .filter_map(|emitted| match emitted {
                Emitted::Workflow(sealed) => Some(sealed.as_ref()),
                Emitted::Rejected(_) => None,
            })
            .collect()
    }

    fn rejected(out: &[Emitted]) -> Vec<&RejectedSpan> {
        out.iter()
            .filter_map(|emitted| match emitted {
                Emitted::Rejected(span) => Some(span.as_ref()),
                Emitted::Workflow(_) => None,
            })
            .collect()
    }

    /// Span numbers of a workflow's steps, in step order.
    fn step_numbers(sealed: &Sealed) -> Vec<u64> {
        sealed
            .workflow
            .steps
            .iter()
            .map(|step| u64::from_be_bytes(step.span.span_id.0))
            .collect()
    }

    fn only(out: &[Emitted]) -> &Sealed {
        let all = sealed(out);
        assert_eq!(all.len(), 1, "exactly one workflow emitted");
        all[0]
    }

    #[test]
    fn children_complete_after_root_settles() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        let children = vec![
            chat(2, 1).times(10, 20).build(),
            tool(3, 1, "search").times(21, 25).build(),
        ];
        assembler.insert(children, t0, &mut out);
        assembler.tick(t0 + secs(30), &mut out);
        assert!(out.is_empty(), "children wait for their root");

        assembler.insert(vec![root(1).times(0, 100).build()], t0 + secs(30), &mut out);
        assembler.tick(t0 + secs(39), &mut out);
        assert!(out.is_empty(), "the root settles for 10 s");

        assembler.tick(t0 + secs(40), &mut out);
        let workflow = only(&out);
        assert_eq!(workflow.workflow.root_span_id, span_id(1), "root span id");
        assert_eq!(step_numbers(workflow), vec![1, 2, 3], "steps");
        assert_eq!(workflow.verdict.status, Status::Valid, "status");
        assert_eq!(workflow.storage, Storage::Spans, "storage");
        assert_eq!(workflow.workflow.revision, 1, "revision");
        assert_eq!(workflow.links.len(), 3, "one link entry per step");
        assert_eq!(assembler.buffered_spans(), 0, "nothing left buffered");
    }

    /// Traces are handed out once each, when their time comes: a root's
    /// settle time from its last arrival, the root wait for spans without
    /// one, and earlier again when a root arrives during the root wait.
    #[test]
    fn due_traces_handed_out_once() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        assembler.insert(vec![root(1).trace(1).build()], t0, &mut out);
        assembler.insert(vec![root(2).trace(2).build()], t0 + secs(5), &mut out);
        assembler.insert(vec![chat(4, 3).trace(3).build()], t0 + secs(5), &mut out);
        assembler.insert(vec![chat(6, 5).trace(4).build()], t0 + secs(5), &mut out);

        assert!(
            assembler.due(t0 + secs(9)).is_empty(),
            "nothing has settled"
        );
        assert_eq!(
            assembler.due(t0 + secs(10)),
            vec![trace_id(1)],
            "first root settles"
        );
        assert!(
            assembler.due(t0 + secs(12)).is_empty(),
            "a trace handed out is not handed out again before its completion"
        );
        let mut quiet = assembler.due(t0 + secs(15));
        quiet.sort();
        assert_eq!(
            quiet,
            vec![trace_id(2), trace_id(3), trace_id(4)],
            "the second root settles; rootless traces get a first look"
        );
        assembler.complete(
            &[trace_id(1), trace_id(2), trace_id(3), trace_id(4)],
            t0 + secs(15),
            &mut out,
        );
        assert_eq!(sealed(&out).len(), 2, "both settled roots are written");

        assembler.insert(vec![root(3).trace(3).build()], t0 + secs(20), &mut out);
        assert!(
            assembler.due(t0 + secs(29)).is_empty(),
            "the late root settles first"
        );
        assert_eq!(
            assembler.due(t0 + secs(30)),
            vec![trace_id(3)],
            "a root arriving during the root wait makes its trace due earlier"
        );
        assert!(
            assembler.due(t0 + secs(64)).is_empty(),
            "the other rootless trace waits out its root wait"
        );
        assert_eq!(assembler.due(t0 + secs(65)), vec![trace_id(4)], "root wait");
    }

    #[test]
    fn root_below_context_span() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        let spans = vec![
            span(1, "POST /tasks").times(0, 200).build(),
            root(2).parent(1).times(10, 100).build(),
            chat(3, 2).times(20, 30).build(),
        ];
        assembler.insert(spans, t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);

        let workflow = only(&out);
        let kinds: Vec<StepKind> = workflow
            .workflow
            .steps
            .iter()
            .map(|step| step.kind)
            .collect();
        assert_eq!(workflow.workflow.root_span_id, span_id(2), "root span id");
        assert_eq!(
            kinds,
            vec![StepKind::Context, StepKind::Root, StepKind::Inference],
            "step kinds"
        );
        assert_eq!(workflow.verdict.status, Status::Valid, "status");
        assert_eq!(
            workflow.verdict.summary.step_count, 2,
            "context span not counted"
        );
    }

    #[test]
    fn nested_root_is_own_workflow() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        let spans = vec![
            root(1).times(0, 200).build(),
            tool(2, 1, "delegate").times(10, 150).build(),
            root(3)
                .parent(2)
                .attr("gen_ai.agent.name", "researcher")
                .times(20, 140)
                .build(),
            chat(4, 3).times(30, 40).build(),
            chat(5, 1).times(160, 170).build(),
        ];
        assembler.insert(spans, t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);

        let mut workflows = sealed(&out);
        workflows.sort_by_key(|sealed| sealed.workflow.root_span_id);
        assert_eq!(workflows.len(), 2, "two workflows");
        assert_eq!(step_numbers(workflows[0]), vec![1, 2, 5], "outer workflow");
        assert_eq!(step_numbers(workflows[1]), vec![3, 4], "nested workflow");
        assert_eq!(
            workflows[1].workflow.root_span_id,
            span_id(3),
            "nested root"
        );
    }

    #[test]
    fn duplicate_counted_conflict_rejected() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        let first = assembler.insert(vec![chat(2, 1).build()], t0, &mut out);
        let same = assembler.insert(vec![chat(2, 1).build()], t0, &mut out);
        assert_eq!(first.accepted, 1, "first copy accepted");
        assert_eq!(same.duplicates, 1, "identical copy counted as duplicate");
        assert_eq!(same.accepted, 0, "identical copy not accepted again");
        assert!(out.is_empty(), "identical copy emits nothing");

        let changed = chat(2, 1).attr("gen_ai.usage.input_tokens", "12").build();
        let conflict = assembler.insert(vec![changed], t0, &mut out);

        assert_eq!(
            conflict.conflicting, 1,
            "different content counted as conflicting"
        );
        let rows = rejected(&out);
        assert_eq!(rows.len(), 1, "conflicting copy quarantined");
        assert_eq!(rows[0].reason, Some(Reason::ConflictingDuplicate), "reason");
        assert_eq!(rows[0].span_id, testing::span_hex(2), "span id");
        assert_eq!(
            assembler.buffered_spans(),
            1,
            "only the first copy is buffered"
        );
    }

    /// Converts a chat span from its encoding as a receiver with a spool
    /// does, so that it keeps only the attributes read on arrival.
    fn spooled_chat(prompt: &str) -> Span {
        use crate::otlp;
        let text = |key: &str, value: &str| otlp::KeyValue {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            value: Some(otlp::AnyValue {
                value: Some(otlp::any_value::Value::StringValue(
                    bytes::Bytes::copy_from_slice(value.as_bytes()),
                )),
            }),
        };

        let span = otlp::Span {
            trace_id: trace_id(testing::TRACE).0.to_vec(),
            span_id: span_id(2).0.to_vec(),
            parent_span_id: span_id(1).0.to_vec(),
            name: bytes::Bytes::from_static(b"chat"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.prompt", prompt),
            ],
            ..Default::default()
        };

        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                scope_spans: vec![otlp::ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };

        let body = bytes::Bytes::from(prost::Message::encode_to_vec(&request));
        let context = RequestContext {
            received_at_unix_nano: 1,
            sender: Arc::from("tester"),
            limits: AttributeLimits::default(),
        };
        let keys = crate::receiver::convert::ArrivalKeys::new(&Resolver::default());
        let redactor = crate::redact::Redactor::new(&Default::default()).unwrap();
        let (converted, _) =
            crate::receiver::convert::convert_encoded(body, &redactor, Some(&keys), &context)
                .unwrap();

        let mut span = converted.spans.into_iter().next().expect("one span");
        span.spool = Some(Location {
            segment: 1,
            offset: 0,
            len: span.raw.len() as u32,
            crc: 0,
        });
        span
    }

    #[test]
    fn conflict_row_lists_every_attribute() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let first = spooled_chat("plan the trip");
        assert!(first.arrival_only, "the prompt is left out on arrival");
        assert!(first.attributes.get("gen_ai.prompt").is_none());

        assembler.insert(vec![first], t0, &mut out);
        let conflict = assembler.insert(vec![spooled_chat("book the hotel")], t0, &mut out);

        assert_eq!(conflict.conflicting, 1);
        let rows = rejected(&out);
        assert_eq!(rows.len(), 1, "conflicting copy quarantined");
        assert_eq!(rows[0].reason, Some(Reason::ConflictingDuplicate));
        assert!(
            rows[0]
                .span_attributes
                .contains(&("gen_ai.prompt".into(), "book the hotel".into())),
            "the row has the attribute left out on arrival: {:?}",
            rows[0].span_attributes
        );
        assert_eq!(rows[0].sender, "tester");
    }

    #[test]
    fn duplicate_after_write_counted() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let spans = vec![
            root(1).times(0, 100).build(),
            chat(2, 1).times(10, 20).build(),
        ];
        assembler.insert(spans, t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);
        out.clear();

        let again = assembler.insert(
            vec![chat(2, 1).times(10, 20).build()],
            t0 + secs(20),
            &mut out,
        );
        assembler.tick(t0 + secs(30), &mut out);

        assert_eq!(again.duplicates, 1, "re-sent span counted as duplicate");
        assert!(out.is_empty(), "no late segment for a duplicate");
    }

    #[test]
    fn root_wait_expiry_then_recall() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let child = || chat(2, 1).times(10, 20).build();

        assembler.insert(vec![child()], t0, &mut out);
        assembler.tick(t0 + ROOT_WAIT - secs(1), &mut out);
        assert!(out.is_empty(), "child waits for the root wait");

        assembler.tick(t0 + ROOT_WAIT, &mut out);
        let incomplete = only(&out);
        assert_eq!(
            incomplete.verdict.status,
            Status::Incomplete,
            "incomplete verdict"
        );
        assert!(
            matches!(
                incomplete.storage,
                Storage::Quarantine(Reason::RootSpanMissing, _)
            ),
            "quarantined as root_span_missing: {:?}",
            incomplete.storage
        );
        assert_eq!(
            incomplete.workflow.root_span_id,
            span_id(1),
            "keyed by the missing root"
        );
        assert_eq!(incomplete.workflow.revision, 1, "first revision");
        out.clear();

        let root_arrival = t0 + secs(100);
        assembler.insert(vec![root(1).times(0, 100).build()], root_arrival, &mut out);
        assembler.tick(root_arrival + SETTLE, &mut out);
        assert!(
            out.is_empty(),
            "the workflow waits for its quarantined spans"
        );

        let recalls = assembler.take_recalls(root_arrival + SETTLE);
        let expected = vec![Recall {
            trace_id: trace_id(testing::TRACE),
            span_ids: vec![span_id(2)],
        }];
        assert_eq!(recalls, expected, "recall of the quarantined child");
        let repeated = assembler.take_recalls(root_arrival + SETTLE);
        assert!(
            repeated.is_empty(),
            "no second recall while one is in flight"
        );

        let recalled_at = root_arrival + SETTLE + secs(1);
        assembler.recalled(trace_id(testing::TRACE), vec![child()], recalled_at);
        assembler.tick(recalled_at, &mut out);

        let complete = only(&out);
        assert_eq!(complete.verdict.status, Status::Valid, "valid verdict");
        assert_eq!(
            complete.workflow.revision, 2,
            "the new verdict supersedes revision 1"
        );
        assert_eq!(
            step_numbers(complete),
            vec![1, 2],
            "root and recalled child"
        );
        assert_eq!(complete.storage, Storage::Spans, "stored in agent_spans");
    }

    #[test]
    fn recall_supersedes_intermediate_key() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let child = || chat(3, 2).times(10, 20).build();

        assembler.insert(vec![child()], t0, &mut out);
        assembler.tick(t0 + ROOT_WAIT, &mut out);
        let incomplete = only(&out);
        assert_eq!(
            incomplete.workflow.root_span_id,
            span_id(2),
            "keyed by the missing parent"
        );
        assert_eq!(incomplete.workflow.revision, 1, "first revision");
        out.clear();

        let arrival = t0 + secs(100);
        let ancestors = vec![
            root(1).times(0, 100).build(),
            agent(2, 1, "researcher").times(5, 90).build(),
        ];
        assembler.insert(ancestors, arrival, &mut out);
        assembler.tick(arrival + SETTLE, &mut out);
        let recalls = assembler.take_recalls(arrival + SETTLE);
        assert_eq!(recalls.len(), 1, "one recall");
        assembler.recalled(trace_id(testing::TRACE), vec![child()], arrival + SETTLE);
        assembler.tick(arrival + SETTLE, &mut out);

        let complete = only(&out);
        assert_eq!(
            step_numbers(complete),
            vec![1, 2, 3],
            "root, agent and recalled child"
        );
        assert_eq!(
            complete.workflow.revision, 2,
            "the new verdict supersedes revision 1"
        );
    }

    #[test]
    fn late_span_becomes_segment() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let spans = vec![
            root(1).times(0, 100).build(),
            chat(2, 1).times(10, 20).build(),
        ];
        assembler.insert(spans, t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);
        let first_verdict = only(&out).verdict.clone();
        out.clear();

        let late = tool(3, 1, "notify").times(110, 120).build();
        assembler.insert(vec![late], t0 + secs(20), &mut out);
        assembler.tick(t0 + secs(30), &mut out);

        let segment = only(&out);
        let prior = segment
            .workflow
            .prior
            .as_ref()
            .expect("late segment has a prior verdict");
        assert_eq!(segment.workflow.segment, 1, "segment");
        assert_eq!(segment.workflow.first_step_index, 2, "step index continues");
        assert_eq!(segment.workflow.revision, 2, "revision");
        assert!(
            Arc::ptr_eq(prior, &first_verdict),
            "prior is the written verdict"
        );
        assert_eq!(step_numbers(segment), vec![3], "only the late step");
        assert_eq!(
            segment.storage,
            Storage::Spans,
            "stored like the written workflow"
        );
        assert_eq!(
            segment.verdict.summary.step_count, 3,
            "step count includes the late step"
        );
        assert_eq!(segment.links[0].step_index, 2, "link step index");
        assert_eq!(
            segment.links[0].causes,
            vec![link::Cause {
                span_id: span_id(1),
                basis: link::Basis::Parent
            }],
            "late step linked to its written parent"
        );
    }

    #[test]
    fn no_root_trace_quarantined() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();

        let spans = vec![
            span(1, "GET /health").times(0, 50).build(),
            chat(2, 1).times(10, 20).build(),
        ];
        assembler.insert(spans, t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);

        let workflow = only(&out);
        let expected_storage =
            Storage::Quarantine(Reason::NoWorkflowRoot, validate::NO_ROOT_REASON.to_owned());
        assert_eq!(workflow.storage, expected_storage, "storage");
        assert_eq!(workflow.verdict.status, Status::Rejected, "status");
        assert_eq!(
            workflow.verdict.reasons,
            vec![validate::NO_ROOT_REASON],
            "reasons"
        );
        assert_eq!(
            step_numbers(workflow),
            vec![1, 2],
            "every span of the trace"
        );
    }

    #[test]
    fn buffer_bound_evicts_oldest() {
        let mut assembler = assembler(Limits {
            max_buffered_spans: 3,
            ..limits()
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        let waiting = vec![
            chat(2, 1).trace(2).times(10, 20).build(),
            tool(3, 1, "search").trace(2).times(21, 25).build(),
        ];
        assembler.insert(waiting, t0, &mut out);
        assert!(out.is_empty(), "within the bound");

        let complete = vec![
            root(1).trace(3).times(0, 100).build(),
            chat(2, 1).trace(3).times(10, 20).build(),
        ];
        let intake = assembler.insert(complete, t0 + secs(1), &mut out);

        assert_eq!(
            intake.accepted, 2,
            "the new root and its child are accepted"
        );
        let evicted = only(&out);
        assert_eq!(
            evicted.workflow.trace_id,
            trace_id(2),
            "oldest waiting trace evicted"
        );
        assert_eq!(
            evicted.verdict.status,
            Status::Incomplete,
            "incomplete verdict"
        );
        assert!(
            matches!(evicted.storage, Storage::Quarantine(Reason::Evicted, _)),
            "quarantined as evicted: {:?}",
            evicted.storage
        );
        assert_eq!(step_numbers(evicted), vec![2, 3], "evicted spans");
        assert_eq!(
            assembler.buffered_spans(),
            2,
            "the new trace stays buffered"
        );
        out.clear();

        assembler.tick(t0 + secs(1) + SETTLE, &mut out);
        let written = only(&out);
        assert_eq!(
            written.workflow.trace_id,
            trace_id(3),
            "new trace completes"
        );
        assert_eq!(written.verdict.status, Status::Valid, "new trace is valid");
    }

    #[test]
    fn flush_completes_before_settle() {
        let mut assembler = assembler(limits());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let spans = vec![
            root(1).times(0, 100).build(),
            chat(2, 1).times(10, 20).build(),
            chat(3, 1).trace(2).times(10, 20).build(),
        ];
        assembler.insert(spans, t0, &mut out);

        assembler.flush(t0, &mut out);
        let flushed = only(&out);
        assert_eq!(
            flushed.workflow.trace_id,
            trace_id(testing::TRACE),
            "complete trace flushed"
        );
        assert_eq!(flushed.verdict.status, Status::Valid, "valid");
        assert_eq!(
            assembler.pending_traces(),
            1,
            "the trace without a root still waits"
        );
        out.clear();

        assembler.quarantine_all_waiting(&mut out);
        let quarantined = only(&out);
        assert_eq!(quarantined.workflow.trace_id, trace_id(2), "waiting trace");
        assert!(
            matches!(
                quarantined.storage,
                Storage::Quarantine(Reason::RootSpanMissing, _)
            ),
            "quarantined as root_span_missing: {:?}",
            quarantined.storage
        );
        assert_eq!(assembler.buffered_spans(), 0, "nothing left buffered");
    }

    #[test]
    fn retained_bound_forgets_idle_traces() {
        let mut assembler = assembler(Limits {
            max_retained_spans: 2,
            ..limits()
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        let trace_spans = |trace: u64| {
            vec![
                root(1).trace(trace).times(0, 100).build(),
                chat(2, 1).trace(trace).times(10, 20).build(),
            ]
        };
        assembler.insert(trace_spans(2), t0, &mut out);
        assembler.tick(t0 + SETTLE, &mut out);
        assembler.insert(trace_spans(3), t0 + secs(20), &mut out);
        assembler.tick(t0 + secs(30), &mut out);
        assert_eq!(sealed(&out).len(), 2, "both traces written");

        let older = assembler.insert(
            vec![chat(2, 1).trace(2).times(10, 20).build()],
            t0 + secs(40),
            &mut out,
        );
        let newer = assembler.insert(
            vec![chat(2, 1).trace(3).times(10, 20).build()],
            t0 + secs(40),
            &mut out,
        );

        assert_eq!(older.accepted, 1, "the older trace was forgotten");
        assert_eq!(newer.duplicates, 1, "the newer trace is still retained");
    }
}
