//! Per-trace state of the assembler and the completion of one trace.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::preset::{Resolver, StepFacts, StepKind};
use crate::quarantine::Reason;
use crate::receiver::convert::{RequestContext, SpoolDecoder};
use crate::span::{ContentHash, Span, SpanId, TraceId};
use crate::spool::{Location, Spool};
use crate::validate::{self, Credential, Policy, Status, Verdict};
use crate::workflow::Workflow;

use super::table::SpanTable;
use super::{Emitted, Limits, Sealed, Storage, build_steps, seal};

/// Map keyed by trace or span id, looked up for every span. foldhash with a
/// random seed per map is cheaper than the standard library's SipHash.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Set keyed like [`FastMap`].
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Parent chains longer than this are treated as broken; real traces are a
/// few dozen levels deep, and the bound keeps a cyclic parent chain sent by
/// a faulty client from looping.
pub const MAX_DEPTH: usize = 4096;

/// The state of one span in the assembler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaState {
    /// Its body is buffered.
    Pending,
    /// Written with the workflow of this root.
    Written,
    /// Quarantined while waiting for its root, under this incomplete
    /// verdict key; recalled when the root arrives.
    Quarantined { key: SpanId },
    /// Quarantined and could not be read back.
    Abandoned,
}

/// What the assembler keeps about every accepted span.
#[derive(Clone, Debug)]
pub struct SpanMeta {
    pub parent: Option<SpanId>,
    pub is_root: bool,
    pub kind: Option<StepKind>,
    pub start_unix_nano: u64,
    pub content_hash: ContentHash,
    pub state: MetaState,
    /// Key of the incomplete verdict this span was quarantined under, kept
    /// after a recall so that the re-evaluation supersedes that verdict.
    pub incomplete_key: Option<SpanId>,
}

impl SpanMeta {
    /// The metadata of `span`; `is_root` and `kind` are what
    /// [`Resolver::classify`] returns for it.
    pub fn new(span: &Span, is_root: bool, kind: Option<StepKind>) -> Self {
        SpanMeta {
            parent: span.parent_span_id,
            is_root,
            kind,
            start_unix_nano: span.start_unix_nano,
            content_hash: span.content_hash,
            state: MetaState::Pending,
            incomplete_key: None,
        }
    }
}

/// A workflow already written, for late spans.
#[derive(Clone, Debug)]
pub struct WrittenWorkflow {
    pub verdict: Arc<Verdict>,
    pub storage: Storage,
    pub revision: u32,
    pub segment: u32,
    pub next_step_index: u32,
    /// The hash chain so far, which a late segment continues.
    pub chain: Option<crate::seal::Chain>,
}

/// Where a span belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    /// Under this workflow root.
    Root(SpanId),
    /// Under no root; its chain ends at this parentless span.
    Top(SpanId),
    /// Under no root; its chain ends at this span id, which has not arrived.
    Missing(SpanId),
}

/// A span waiting for its workflow: the body itself, or its location in
/// the spool.
pub enum Pending {
    Memory(Box<(Span, StepFacts)>),
    Spooled(Spooled),
}

/// A waiting span whose body is in the spool.
pub struct Spooled {
    pub location: Location,
    pub received_at_unix_nano: i64,
    pub sender: Arc<str>,
    pub already_stored: bool,
}

/// Memory a spooled span costs while it waits: its metadata, its entry in
/// the pending map and this record, not its body.
const SPOOLED_SPAN_BYTES: usize = 256;

impl Pending {
    /// Builds the waiting form of `span`: its spool location when it has one,
    /// otherwise its body with the facts `resolver` finds in it.
    pub fn new(span: Span, resolver: &Resolver) -> Pending {
        debug_assert!(
            span.spool.is_some() || !span.arrival_only,
            "a span that kept only its arrival attributes has a spool record"
        );
        match span.spool {
            Some(location) => Pending::Spooled(Spooled {
                location,
                received_at_unix_nano: span.received_at_unix_nano,
                sender: span.sender.clone(),
                already_stored: span.already_stored,
            }),
            None => {
                let facts = resolver.resolve(&span);
                Pending::Memory(Box::new((span, facts)))
            }
        }
    }

    pub fn approx_bytes(&self) -> usize {
        match self {
            Pending::Memory(entry) => entry.0.approx_bytes(),
            Pending::Spooled(_) => SPOOLED_SPAN_BYTES,
        }
    }
}

/// Reads spooled bodies back and resolves their facts.
#[derive(Clone, Copy)]
pub struct Loader<'a> {
    pub resolver: &'a Resolver,
    pub spool: Option<&'a Spool>,
    pub limits: crate::receiver::convert::AttributeLimits,
}

impl Loader<'_> {
    /// Returns the spans and their facts, in the order given. Each
    /// `content_hash` is the hash recorded when that span was accepted, so
    /// a body read back is not hashed again. Spooled bodies are read in one
    /// pass over the spool; a span whose body cannot be read is logged and
    /// left out.
    fn load(
        &self,
        trace_id: TraceId,
        entries: Vec<(SpanId, Pending, Option<ContentHash>)>,
    ) -> Vec<(Span, StepFacts)> {
        let mut loaded = Vec::with_capacity(entries.len());
        let mut spooled = Vec::new();
        for (span_id, pending, content_hash) in entries {
            match pending {
                Pending::Memory(entry) => loaded.push(*entry),
                Pending::Spooled(body) => spooled.push((span_id, body, content_hash)),
            }
        }
        if spooled.is_empty() {
            return loaded;
        }
        let Some(spool) = self.spool else {
            tracing::error!(trace_id = %trace_id, spans = spooled.len(), "spans were spooled but the assembler has no spool to read them from");
            return loaded;
        };
        let locations: Vec<Location> = spooled.iter().map(|(_, body, _)| body.location).collect();
        let bodies = spool.read_many(&locations);
        let mut decoder = SpoolDecoder::default();
        for ((span_id, body, content_hash), read) in spooled.into_iter().zip(bodies) {
            let context = RequestContext {
                received_at_unix_nano: body.received_at_unix_nano,
                sender: body.sender,
                limits: self.limits,
            };
            let span = read.map_err(|error| error.to_string()).and_then(|bytes| {
                decoder
                    .decode(bytes, &context, content_hash)
                    .ok_or_else(|| "it no longer decodes".to_owned())
            });
            match span {
                Ok(mut span) => {
                    span.spool = Some(body.location);
                    span.already_stored = body.already_stored;
                    let facts = self.resolver.resolve(&span);
                    loaded.push((span, facts));
                }
                Err(error) => {
                    tracing::error!(trace_id = %trace_id, span_id = %span_id, %error, "reading a span back from the spool failed; the span is lost");
                }
            }
        }
        loaded
    }
}

/// Everything buffered and remembered about one trace.
pub struct TraceState {
    pub pending: SpanTable<Pending>,
    pub meta: SpanTable<SpanMeta>,
    pub written: SpanTable<WrittenWorkflow>,
    /// Revision of each incomplete verdict written, by its key.
    pub incomplete: SpanTable<u32>,
    pub first_pending: Option<Instant>,
    pub last_arrival: Instant,
    /// Earliest time a completion run can decide something new.
    pub next_check: Instant,
    pub recall_in_flight: bool,
    pub recall_due: Option<Instant>,
    pub recall_attempts: u32,
    /// Credentials that issuance records in the trace describe.
    pub issued: Vec<Credential>,
    /// Time of this trace's earliest entry in the assembler's check queue.
    pub queued: Option<Instant>,
    /// Handed out as due and not completed since, so not queued again.
    pub handed_out: bool,
}

impl TraceState {
    pub fn new(now: Instant) -> Self {
        TraceState {
            pending: SpanTable::default(),
            meta: SpanTable::default(),
            written: SpanTable::default(),
            incomplete: SpanTable::default(),
            first_pending: None,
            last_arrival: now,
            next_check: now,
            recall_in_flight: false,
            recall_due: None,
            recall_attempts: 0,
            issued: Vec::new(),
            queued: None,
            handed_out: false,
        }
    }

    /// Remembers the credential `span` describes when it is an issuance
    /// record.
    pub fn note_issuance(&mut self, span: &Span) {
        if let Some(credential) = validate::issuance(span)
            && !self.issued.iter().any(|known| known.id == credential.id)
        {
            self.issued.push(credential);
        }
    }

    pub fn add_pending(&mut self, span_id: SpanId, pending: Pending, now: Instant) {
        self.last_arrival = now;
        self.next_check = now;
        self.first_pending.get_or_insert(now);
        self.pending.insert(span_id, pending);
    }

    /// Adds a recalled span without counting it as a new arrival.
    pub fn add_pending_recalled(&mut self, span: Span, resolver: &Resolver, now: Instant) {
        self.first_pending.get_or_insert(now);
        self.next_check = now;
        self.pending
            .insert(span.span_id, Pending::new(span, resolver));
    }

    /// When a completion run may first decide something: once the trace has
    /// been quiet for the settle time or its first waiting span has waited
    /// out the root wait, and not before `next_check`. `None` while nothing
    /// waits or a recall is in flight, or when the time lies beyond what an
    /// `Instant` can hold.
    pub fn due_at(&self, limits: &Limits) -> Option<Instant> {
        if self.pending.is_empty() || self.recall_in_flight {
            return None;
        }
        let quiet = self.last_arrival.checked_add(limits.settle);
        let waited_out = self
            .first_pending
            .and_then(|first| first.checked_add(limits.root_wait));
        let ready = match (quiet, waited_out) {
            (Some(quiet), Some(waited_out)) => quiet.min(waited_out),
            (ready, None) | (None, ready) => ready?,
        };
        Some(ready.max(self.next_check))
    }

    /// Quarantined span ids whose root is now buffered, so their bodies must
    /// be read back before the workflow is written.
    pub fn awaiting_recall(&self) -> Vec<SpanId> {
        self.meta
            .iter()
            .filter(|(_, meta)| matches!(meta.state, MetaState::Quarantined { .. }))
            .filter(|(span_id, _)| match self.owner(**span_id) {
                Owner::Root(root) => self.pending.contains_key(&root),
                _ => false,
            })
            .map(|(span_id, _)| *span_id)
            .collect()
    }

    fn owner(&self, span_id: SpanId) -> Owner {
        let mut current = span_id;
        for _ in 0..MAX_DEPTH {
            let Some(meta) = self.meta.get(&current) else {
                return Owner::Missing(current);
            };
            if meta.is_root {
                return Owner::Root(current);
            }
            match meta.parent {
                Some(parent) => current = parent,
                None => return Owner::Top(current),
            }
        }
        Owner::Missing(current)
    }

    /// Keys every quarantined span by the span its chain waits for, as
    /// [`write_incomplete`] does; used after a replay.
    pub fn reassign_quarantine_keys(&mut self) {
        let quarantined: Vec<SpanId> = self
            .meta
            .iter()
            .filter(|(_, meta)| matches!(meta.state, MetaState::Quarantined { .. }))
            .map(|(span_id, _)| *span_id)
            .collect();
        for span_id in quarantined {
            let key = match self.owner(span_id) {
                Owner::Root(key) | Owner::Top(key) | Owner::Missing(key) => key,
            };
            if let Some(meta) = self.meta.get_mut(&span_id) {
                meta.state = MetaState::Quarantined { key };
                meta.incomplete_key = Some(key);
            }
        }
    }

    /// For each ancestor of a workflow root, the root whose context it is
    /// (the earliest-starting root when several share an ancestor).
    fn context_roots(&self) -> HashMap<SpanId, SpanId> {
        let mut roots: Vec<(u64, SpanId)> = self
            .meta
            .iter()
            .filter(|(_, meta)| meta.is_root)
            .map(|(span_id, meta)| (meta.start_unix_nano, *span_id))
            .collect();
        roots.sort();
        let mut context = HashMap::new();
        for (_, root) in roots {
            let mut current = self.meta.get(&root).and_then(|meta| meta.parent);
            for _ in 0..MAX_DEPTH {
                let Some(span_id) = current else { break };
                let Some(meta) = self.meta.get(&span_id) else {
                    break;
                };
                if meta.is_root {
                    break;
                }
                context.entry(span_id).or_insert(root);
                current = meta.parent;
            }
        }
        context
    }

    fn has_root(&self) -> bool {
        self.meta.values().any(|meta| meta.is_root)
    }

    fn take_pending(
        &mut self,
        trace_id: TraceId,
        span_ids: &[SpanId],
        released: &mut Released,
        loader: Loader<'_>,
    ) -> Vec<(Span, StepFacts)> {
        let mut entries = Vec::with_capacity(span_ids.len());
        for span_id in span_ids {
            if let Some(entry) = self.pending.remove(span_id) {
                released.spans += 1;
                released.bytes += entry.approx_bytes();
                let content_hash = self.meta.get(span_id).map(|meta| meta.content_hash);
                entries.push((*span_id, entry, content_hash));
            }
        }
        if self.pending.is_empty() {
            self.first_pending = None;
        }
        loader.load(trace_id, entries)
    }
}

/// Buffered spans handed on by a completion run.
#[derive(Default)]
pub struct Released {
    pub spans: usize,
    pub bytes: usize,
}

/// One completion run over a trace.
pub struct Completion<'a> {
    pub trace: &'a mut TraceState,
    pub trace_id: TraceId,
    pub now: Instant,
    pub force: bool,
    pub limits: &'a Limits,
    pub policy: &'a Policy,
    pub loader: Loader<'a>,
}

/// Pending spans grouped by where they go.
#[derive(Default)]
struct Groups {
    /// Members and context spans of each root.
    by_root: HashMap<SpanId, (Vec<SpanId>, HashSet<SpanId>)>,
    /// Spans under a parentless span in a trace with no root at all.
    no_root: HashMap<SpanId, Vec<SpanId>>,
    /// Spans whose chain ends at a span that has not arrived.
    missing: HashMap<SpanId, Vec<SpanId>>,
}

impl Completion<'_> {
    pub fn run(mut self, out: &mut Vec<Emitted>) -> Released {
        let mut released = Released::default();
        let groups = self.group();
        let quiet =
            self.force || self.now.duration_since(self.trace.last_arrival) >= self.limits.settle;
        let mut waiting_for_recall = false;
        if quiet {
            for (root, (members, context)) in groups.by_root {
                waiting_for_recall |=
                    !self.complete_root(root, members, context, out, &mut released);
            }
            for (top, members) in groups.no_root {
                self.complete_no_root(top, members, out, &mut released);
            }
        }
        let waited_out = self
            .trace
            .first_pending
            .is_some_and(|first| self.now.duration_since(first) >= self.limits.root_wait);
        if waited_out {
            for (key, members) in groups.missing {
                self.complete_missing(key, members, Reason::RootSpanMissing, out, &mut released);
            }
        }
        self.trace.next_check = match (waiting_for_recall, self.trace.first_pending) {
            (true, _) => self.now,
            (false, Some(first)) => first + self.limits.root_wait,
            (false, None) => self.now,
        };
        released
    }

    fn group(&self) -> Groups {
        let context_roots = self.trace.context_roots();
        let has_root = self.trace.has_root();
        let mut groups = Groups::default();
        for span_id in self.trace.pending.keys() {
            match self.trace.owner(*span_id) {
                Owner::Root(root) => groups.by_root.entry(root).or_default().0.push(*span_id),
                Owner::Top(top) => match context_roots.get(&top) {
                    Some(root) => {
                        let entry = groups.by_root.entry(*root).or_default();
                        entry.0.push(*span_id);
                        entry.1.insert(*span_id);
                    }
                    None if !has_root => groups.no_root.entry(top).or_default().push(*span_id),
                    None => groups.missing.entry(top).or_default().push(*span_id),
                },
                Owner::Missing(key) => groups.missing.entry(key).or_default().push(*span_id),
            }
        }
        groups
    }

    /// Writes the workflow of `root`, or its late segment. Returns false when
    /// it must wait for quarantined spans to be recalled.
    fn complete_root(
        &mut self,
        root: SpanId,
        members: Vec<SpanId>,
        context: HashSet<SpanId>,
        out: &mut Vec<Emitted>,
        released: &mut Released,
    ) -> bool {
        if let Some(written) = self.trace.written.get(&root).cloned() {
            self.write_late(root, written, members, context, out, released);
            return true;
        }
        if !self.trace.pending.contains_key(&root) {
            return true;
        }
        let awaiting = self.trace.awaiting_recall();
        if !awaiting.is_empty() {
            if !self.trace.recall_in_flight && self.trace.recall_due.is_none() {
                self.trace.recall_due = Some(self.now);
                self.trace.recall_attempts = 0;
            }
            return false;
        }
        let revision = self.superseded_revision(root) + 1;
        let spans = self
            .trace
            .take_pending(self.trace_id, &members, released, self.loader);
        let steps = build_steps(spans, &context, &self.trace.meta);
        let workflow = Workflow {
            trace_id: self.trace_id,
            root_span_id: root,
            steps,
            revision,
            segment: 0,
            first_step_index: 0,
            prior: None,
        };
        let sealed = seal(
            workflow,
            None,
            &HashSet::new(),
            self.policy,
            &self.trace.issued,
        );
        self.emit(root, sealed, out);
        true
    }

    /// The highest revision of incomplete verdicts whose spans now belong to
    /// `root`, which the new verdict supersedes.
    fn superseded_revision(&mut self, root: SpanId) -> u32 {
        let mut keys: HashSet<SpanId> = HashSet::new();
        keys.insert(root);
        for (span_id, meta) in &self.trace.meta {
            if let Some(key) = meta.incomplete_key
                && self.trace.owner(*span_id) == Owner::Root(root)
            {
                keys.insert(key);
            }
        }
        keys.iter()
            .filter_map(|key| self.trace.incomplete.get(key))
            .copied()
            .max()
            .unwrap_or(0)
    }

    fn write_late(
        &mut self,
        root: SpanId,
        written: WrittenWorkflow,
        members: Vec<SpanId>,
        context: HashSet<SpanId>,
        out: &mut Vec<Emitted>,
        released: &mut Released,
    ) {
        let spans = self
            .trace
            .take_pending(self.trace_id, &members, released, self.loader);
        let steps = build_steps(spans, &context, &self.trace.meta);
        let mut verdict = (*written.verdict).clone();
        let summary = Arc::make_mut(&mut verdict.summary);
        summary.step_count += steps
            .iter()
            .filter(|step| step.kind != StepKind::Context)
            .count() as u32;
        let workflow = Workflow {
            trace_id: self.trace_id,
            root_span_id: root,
            steps,
            revision: written.revision + 1,
            segment: written.segment + 1,
            first_step_index: written.next_step_index,
            prior: Some(written.verdict.clone()),
        };
        let known: HashSet<SpanId> = self
            .trace
            .meta
            .iter()
            .filter(|(_, meta)| meta.state == MetaState::Written)
            .map(|(span_id, _)| *span_id)
            .collect();
        let mut sealed = seal(
            workflow,
            Some(verdict),
            &known,
            self.policy,
            &self.trace.issued,
        );
        sealed.storage = written.storage.clone();
        self.emit(root, sealed, out);
    }

    /// Chains the rows of `sealed` onto what was written of `root` before,
    /// records it as written, and hands it on.
    fn emit(&mut self, root: SpanId, mut sealed: Sealed, out: &mut Vec<Emitted>) {
        let prior = self
            .trace
            .written
            .get(&root)
            .and_then(|written| written.chain.clone());
        crate::seal::seal(&mut sealed, prior.as_ref());
        self.record_written(root, &sealed);
        out.push(Emitted::Workflow(Box::new(sealed)));
    }

    fn record_written(&mut self, root: SpanId, sealed: &Sealed) {
        for step in &sealed.workflow.steps {
            if let Some(meta) = self.trace.meta.get_mut(&step.span.span_id) {
                meta.state = MetaState::Written;
            }
        }
        let workflow = &sealed.workflow;
        self.trace.written.insert(
            root,
            WrittenWorkflow {
                verdict: sealed.verdict.clone(),
                storage: sealed.storage.clone(),
                revision: workflow.revision,
                segment: workflow.segment,
                next_step_index: workflow.first_step_index + workflow.steps.len() as u32,
                chain: sealed.chain.clone(),
            },
        );
    }

    /// Rejects spans of a trace in which no span carries the origin type.
    fn complete_no_root(
        &mut self,
        top: SpanId,
        members: Vec<SpanId>,
        out: &mut Vec<Emitted>,
        released: &mut Released,
    ) {
        if let Some(written) = self.trace.written.get(&top).cloned() {
            self.write_late(top, written, members, HashSet::new(), out, released);
            return;
        }
        let spans = self
            .trace
            .take_pending(self.trace_id, &members, released, self.loader);
        let steps = build_steps(spans, &HashSet::new(), &self.trace.meta);
        let workflow = Workflow {
            trace_id: self.trace_id,
            root_span_id: top,
            steps,
            revision: 1,
            segment: 0,
            first_step_index: 0,
            prior: None,
        };
        let verdict = validate::no_root_verdict(&workflow);
        let mut sealed = seal(
            workflow,
            Some(verdict),
            &HashSet::new(),
            self.policy,
            &self.trace.issued,
        );
        sealed.storage =
            Storage::Quarantine(Reason::NoWorkflowRoot, validate::NO_ROOT_REASON.to_owned());
        self.emit(top, sealed, out);
    }

    fn complete_missing(
        &mut self,
        key: SpanId,
        members: Vec<SpanId>,
        reason: Reason,
        out: &mut Vec<Emitted>,
        released: &mut Released,
    ) {
        let spans = self
            .trace
            .take_pending(self.trace_id, &members, released, self.loader);
        write_incomplete(self.trace, self.trace_id, key, spans, reason, out);
    }
}

/// Writes spans as an incomplete workflow keyed by `key`, the span id their
/// chain is waiting for.
///
/// NOTE: when the chain waits for an intermediate span rather than the root,
/// the later valid verdict is keyed by the root and carries a higher
/// revision, but the incomplete row keyed by the intermediate span stays
/// the newest row for that key.
fn write_incomplete(
    trace: &mut TraceState,
    trace_id: TraceId,
    key: SpanId,
    spans: Vec<(Span, StepFacts)>,
    reason: Reason,
    out: &mut Vec<Emitted>,
) {
    if spans.is_empty() {
        return;
    }
    let revision = trace.incomplete.get(&key).copied().unwrap_or(0) + 1;
    trace.incomplete.insert(key, revision);
    for (span, _) in &spans {
        if let Some(meta) = trace.meta.get_mut(&span.span_id) {
            meta.state = MetaState::Quarantined { key };
            meta.incomplete_key = Some(key);
        }
    }
    let steps = build_steps(spans, &HashSet::new(), &trace.meta);
    let workflow = Workflow {
        trace_id,
        root_span_id: key,
        steps,
        revision,
        segment: 0,
        first_step_index: 0,
        prior: None,
    };
    let detail = match reason {
        Reason::Evicted => format!(
            "evicted from the buffer before root span {key} arrived; the workflow is evaluated again if it arrives"
        ),
        _ => format!(
            "root span {key} did not arrive within the root wait; the workflow is evaluated again if it arrives"
        ),
    };
    let verdict = validate::incomplete_verdict(&workflow, detail.clone());
    debug_assert_eq!(verdict.status, Status::Incomplete);
    let sealed = Sealed {
        links: Vec::new(),
        checks: Vec::new(),
        verdict: Arc::new(verdict),
        storage: Storage::Quarantine(reason, detail),
        span_rows: Vec::new(),
        chain: None,
        workflow,
    };
    out.push(Emitted::Workflow(Box::new(sealed)));
}

/// Quarantines every span of `trace` that is still waiting, grouped by the
/// span id each waits for.
pub fn quarantine_waiting(
    trace: &mut TraceState,
    trace_id: TraceId,
    reason: Reason,
    loader: Loader<'_>,
    out: &mut Vec<Emitted>,
) -> Released {
    let mut released = Released::default();
    let mut groups: HashMap<SpanId, Vec<SpanId>> = HashMap::new();
    for span_id in trace.pending.keys() {
        let key = match trace.owner(*span_id) {
            Owner::Root(key) | Owner::Top(key) | Owner::Missing(key) => key,
        };
        groups.entry(key).or_default().push(*span_id);
    }
    for (key, members) in groups {
        let spans = trace.take_pending(trace_id, &members, &mut released, loader);
        write_incomplete(trace, trace_id, key, spans, reason, out);
    }
    released
}
