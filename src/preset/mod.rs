//! Attribute presets: how each instrumentation names the things the audit
//! trail needs (agent, model, tool, tool call id, step kind).
//!
//! A [`Resolver`] holds the active presets in order and turns one span into
//! [`StepFacts`]. Resolution is deterministic: span attributes are searched
//! before resource attributes; within each, presets are tried in the
//! configured order and, within a preset, names in their listed order; the
//! first non-empty value wins. For the step kind, the first matching rule of
//! the first preset that has one wins.

mod builtin;

use serde::{Deserialize, Serialize};

use crate::span::Span;

pub use builtin::builtin_presets;

/// Attribute that marks a workflow root.
pub const ORIGIN_TYPE: &str = "agent_ledger.origin.type";

/// What a step is, as stored in `agent_spans.StepKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Root,
    Context,
    Agent,
    Inference,
    Tool,
    Other,
}

impl StepKind {
    /// The name stored in ClickHouse.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Root => "root",
            StepKind::Context => "context",
            StepKind::Agent => "agent",
            StepKind::Inference => "inference",
            StepKind::Tool => "tool",
            StepKind::Other => "other",
        }
    }
}

/// A rule that gives a span a step kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRule {
    pub kind: StepKind,
    /// Attribute whose value decides; with `equals`, the value must match
    /// (case-insensitive), without it the attribute must be present.
    #[serde(default)]
    pub attribute: Option<String>,
    #[serde(default)]
    pub equals: Vec<String>,
    /// Span name prefixes that decide when no attribute is named.
    #[serde(default)]
    pub span_name_prefix: Vec<String>,
}

/// One instrumentation's attribute names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preset {
    pub name: String,
    pub agent_name: Vec<String>,
    pub agent_id: Vec<String>,
    pub agent_version: Vec<String>,
    pub request_model: Vec<String>,
    pub response_model: Vec<String>,
    pub provider: Vec<String>,
    pub tool_name: Vec<String>,
    pub tool_call_id: Vec<String>,
    /// Attributes holding a model call's input messages (JSON).
    pub input_messages: Vec<String>,
    /// Attributes holding a model call's output messages (JSON).
    pub output_messages: Vec<String>,
    pub kinds: Vec<KindRule>,
}

/// The facts about one span that the validator and linker need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepFacts {
    pub is_root: bool,
    pub kind: Option<StepKind>,
    pub agent_name: Option<String>,
    pub agent_id: Option<String>,
    pub agent_version: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub tool_name: Option<String>,
    pub tool_call_id: Option<String>,
    pub input_messages: Option<String>,
    pub output_messages: Option<String>,
}

/// Active presets, in precedence order.
#[derive(Clone, Debug)]
pub struct Resolver {
    presets: Vec<Preset>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(builtin_presets())
    }
}

type Field = fn(&Preset) -> &Vec<String>;

impl Resolver {
    /// A resolver over `presets`, the first taking precedence.
    pub fn new(presets: Vec<Preset>) -> Self {
        Resolver { presets }
    }

    /// Names of the active presets, in order.
    pub fn names(&self) -> Vec<&str> {
        self.presets
            .iter()
            .map(|preset| preset.name.as_str())
            .collect()
    }

    /// Resolves the facts of one span.
    pub fn resolve(&self, span: &Span) -> StepFacts {
        let lookup = |field: Field| self.lookup(span, field);
        let response_model = lookup(|preset| &preset.response_model);
        let request_model = lookup(|preset| &preset.request_model);
        StepFacts {
            is_root: span.attributes.get_text(ORIGIN_TYPE).is_some(),
            kind: self.kind(span),
            agent_name: lookup(|preset| &preset.agent_name),
            agent_id: lookup(|preset| &preset.agent_id),
            agent_version: lookup(|preset| &preset.agent_version),
            response_model,
            request_model,
            provider: lookup(|preset| &preset.provider),
            tool_name: lookup(|preset| &preset.tool_name),
            tool_call_id: lookup(|preset| &preset.tool_call_id),
            input_messages: span_only(span, &self.presets, |preset| &preset.input_messages),
            output_messages: span_only(span, &self.presets, |preset| &preset.output_messages),
        }
    }

    fn lookup(&self, span: &Span, field: Field) -> Option<String> {
        span_only(span, &self.presets, field).or_else(|| {
            self.presets
                .iter()
                .flat_map(|preset| field(preset).iter())
                .find_map(|name| span.resource.attributes.get_text(name))
        })
    }

    fn kind(&self, span: &Span) -> Option<StepKind> {
        self.presets
            .iter()
            .flat_map(|preset| preset.kinds.iter())
            .find(|rule| rule_matches(rule, span))
            .map(|rule| rule.kind)
    }
}

fn span_only(span: &Span, presets: &[Preset], field: Field) -> Option<String> {
    presets
        .iter()
        .flat_map(|preset| field(preset).iter())
        .find_map(|name| span.attributes.get_text(name))
}

fn rule_matches(rule: &KindRule, span: &Span) -> bool {
    if let Some(attribute) = &rule.attribute {
        let Some(value) = span.attributes.get_text(attribute) else {
            return false;
        };
        return rule.equals.is_empty()
            || rule
                .equals
                .iter()
                .any(|expected| expected.eq_ignore_ascii_case(value.trim()));
    }
    rule.span_name_prefix
        .iter()
        .any(|prefix| span.name.starts_with(prefix.as_str()))
}
