//! Test fixtures: a builder for typed spans, and a workflow built from spans
//! the way the assembler builds one.
//!
//! Ids come from small integers (`span_id(2)` is `0000000000000002`) and
//! times are whole milliseconds after [`BASE_UNIX_NANO`], so a test reads as
//! a timeline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::preset::{Resolver, StepKind};
use crate::span::{Attributes, ContentHash, Resource, Scope, Span, SpanId, TraceId, Value};
use crate::workflow::{Step, Workflow, sort_steps};

/// Unix time in nanoseconds that span times count from (2023-11-14), so
/// that no span starts at zero.
pub(crate) const BASE_UNIX_NANO: u64 = 1_700_000_000_000_000_000;

/// Trace id 1, the trace of every span unless a test sets another.
pub(crate) const TRACE: u64 = 1;

/// Builds a trace id from a small integer. `n` must not be zero.
pub(crate) fn trace_id(n: u64) -> TraceId {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(bytes)
}

/// Builds a span id from a small integer. `n` must not be zero.
pub(crate) fn span_id(n: u64) -> SpanId {
    SpanId(n.to_be_bytes())
}

/// Formats `span_id(n)` as lower-case hex.
pub(crate) fn span_hex(n: u64) -> String {
    span_id(n).to_hex()
}

/// Converts `ms` milliseconds after [`BASE_UNIX_NANO`] to Unix nanoseconds.
pub(crate) fn at_ms(ms: u64) -> u64 {
    BASE_UNIX_NANO + ms * 1_000_000
}

/// Builder for a [`Span`] of trace [`TRACE`] that runs from 0 to 1 ms.
pub(crate) struct SpanBuilder {
    span: Span,
    resource: Resource,
}

/// Starts a span with id `id` and name `name`.
pub(crate) fn span(id: u64, name: &str) -> SpanBuilder {
    SpanBuilder {
        span: Span {
            trace_id: trace_id(TRACE),
            span_id: span_id(id),
            parent_span_id: None,
            trace_state: Default::default(),
            name: name.into(),
            kind: 1,
            start_unix_nano: at_ms(0),
            end_unix_nano: at_ms(1),
            attributes: Attributes::default(),
            events: Vec::new(),
            links: Vec::new(),
            status_code: 0,
            status_message: Default::default(),
            resource: Arc::new(Resource::default()),
            scope: Arc::new(Scope::default()),
            received_at_unix_nano: 0,
            sender: Arc::from(""),
            content_hash: ContentHash::default(),
            raw: bytes::Bytes::new(),
            spool: None,
            already_stored: false,
            arrival_only: false,
        },
        resource: Resource {
            attributes: Attributes::default(),
            service_name: "agent".into(),
        },
    }
}

impl SpanBuilder {
    pub(crate) fn trace(mut self, n: u64) -> Self {
        self.span.trace_id = trace_id(n);
        self
    }

    pub(crate) fn parent(mut self, id: u64) -> Self {
        self.span.parent_span_id = Some(span_id(id));
        self
    }

    /// Sets start and end in milliseconds after [`BASE_UNIX_NANO`].
    pub(crate) fn times(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.span.start_unix_nano = at_ms(start_ms);
        self.span.end_unix_nano = at_ms(end_ms);
        self
    }

    /// Adds a string attribute.
    pub(crate) fn attr(self, key: &str, value: &str) -> Self {
        self.attr_value(key, Value::Str(value.into()))
    }

    /// Adds an attribute of any type.
    pub(crate) fn attr_value(mut self, key: &str, value: Value) -> Self {
        self.span.attributes.0.push((key.into(), value));
        self
    }

    /// Adds a string attribute to the span's resource.
    pub(crate) fn resource_attr(mut self, key: &str, value: &str) -> Self {
        let value = Value::Str(value.into());
        self.resource.attributes.0.push((key.into(), value));
        self
    }

    /// Finishes the span. The content hash covers every field the builder
    /// sets, so two builds with the same calls are duplicates of each other
    /// and builds that differ in any attribute are not.
    pub(crate) fn build(mut self) -> Span {
        self.span.resource = Arc::new(self.resource);
        self.span.content_hash = ContentHash::of(format!("{:?}", self.span).as_bytes());
        self.span
    }
}

/// Starts a workflow root that meets the default policy on its own
/// attributes and names agent `planner`. The model version that the policy
/// also requires must come from a model call inside.
pub(crate) fn root(id: u64) -> SpanBuilder {
    span(id, "handle_request")
        .attr("agent_ledger.origin.type", "user_request")
        .attr("agent_ledger.origin.source", "web-app")
        .attr("agent_ledger.task.spec", "summarize the open tickets")
        .attr("agent_ledger.credential.id", "cred-1")
        .attr_value(
            "agent_ledger.credential.scopes",
            Value::Array(vec![Value::Str("tickets:read".into())]),
        )
        .attr("gen_ai.agent.name", "planner")
}

/// Starts a GenAI `chat` model call that reports model version
/// `gpt-4o-2024-08-06`.
pub(crate) fn chat(id: u64, parent: u64) -> SpanBuilder {
    span(id, "chat gpt-4o")
        .parent(parent)
        .attr("gen_ai.operation.name", "chat")
        .attr("gen_ai.request.model", "gpt-4o")
        .attr("gen_ai.response.model", "gpt-4o-2024-08-06")
}

/// Starts a GenAI `execute_tool` step for tool `name`.
pub(crate) fn tool(id: u64, parent: u64, name: &str) -> SpanBuilder {
    span(id, &format!("execute_tool {name}"))
        .parent(parent)
        .attr("gen_ai.operation.name", "execute_tool")
        .attr("gen_ai.tool.name", name)
}

/// Starts a GenAI `invoke_agent` step for agent `name`.
pub(crate) fn agent(id: u64, parent: u64, name: &str) -> SpanBuilder {
    span(id, &format!("invoke_agent {name}"))
        .parent(parent)
        .attr("gen_ai.operation.name", "invoke_agent")
        .attr("gen_ai.agent.name", name)
}

/// Assembles one workflow from `spans` with the default presets, as the
/// assembler does. `context` lists the span ids stored as context spans. The
/// root is the span that carries the origin type, else the first span.
pub(crate) fn workflow(spans: Vec<Span>, context: &[u64]) -> Workflow {
    let resolver = Resolver::default();
    let context: HashSet<SpanId> = context.iter().map(|id| span_id(*id)).collect();
    let resolved: Vec<_> = spans
        .into_iter()
        .map(|span| {
            let facts = resolver.resolve(&span);
            (span, facts)
        })
        .collect();
    let ancestry: HashMap<SpanId, Ancestor> = resolved
        .iter()
        .map(|(span, facts)| {
            let ancestor = Ancestor {
                parent: span.parent_span_id,
                is_root: facts.is_root,
                kind: facts.kind,
            };
            (span.span_id, ancestor)
        })
        .collect();
    let trace_id = resolved
        .first()
        .map(|(span, _)| span.trace_id)
        .unwrap_or(trace_id(TRACE));
    let root_span_id = resolved
        .iter()
        .find(|(_, facts)| facts.is_root)
        .or(resolved.first())
        .map(|(span, _)| span.span_id)
        .unwrap_or(span_id(1));

    let mut steps: Vec<Step> = resolved
        .into_iter()
        .map(|(span, facts)| {
            let kind = if context.contains(&span.span_id) {
                StepKind::Context
            } else if facts.is_root {
                StepKind::Root
            } else {
                facts.kind.unwrap_or(StepKind::Other)
            };
            let agent_span = nearest_agent(&span, &ancestry);
            Step {
                span,
                facts,
                kind,
                agent_span,
            }
        })
        .collect();
    sort_steps(&mut steps);

    Workflow {
        trace_id,
        root_span_id,
        steps,
        revision: 1,
        segment: 0,
        first_step_index: 0,
        prior: None,
    }
}

/// Parent, root flag and kind of one span, for the agent-scope walk.
struct Ancestor {
    parent: Option<SpanId>,
    is_root: bool,
    kind: Option<StepKind>,
}

/// Finds the nearest ancestor whose kind is Agent, stopping at the workflow
/// root.
fn nearest_agent(span: &Span, ancestry: &HashMap<SpanId, Ancestor>) -> Option<SpanId> {
    let mut current = span.parent_span_id;
    while let Some(id) = current {
        let ancestor = ancestry.get(&id)?;
        if ancestor.is_root {
            return None;
        }
        if ancestor.kind == Some(StepKind::Agent) {
            return Some(id);
        }
        current = ancestor.parent;
    }
    None
}
