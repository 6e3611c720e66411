//! Attribute presets: how each instrumentation names the things the audit
//! trail needs (agent, model, tool, tool call id, step kind).
//!
//! A [`Resolver`] holds the active presets in order and turns one span into
//! [`StepFacts`]. Resolution is deterministic: span attributes are searched
//! before resource attributes; within each, presets are tried in the
//! configured order and, within a preset, names in their listed order; the
//! first non-empty value wins. For the step kind, the first matching rule of
//! the first preset that has one wins. A tool step without a call id
//! attribute takes the first `tool_call_id` key found in the JSON of the
//! presets' `tool_output` attributes, in the same order.

mod builtin;
#[cfg(test)]
mod properties;

use std::cell::OnceCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::span::{Attributes, Span, Str, Value};

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
    /// Whole span names that decide when no attribute is named.
    #[serde(default)]
    pub span_name: Vec<String>,
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
    /// Attributes holding a tool step's output as JSON, searched for a
    /// `tool_call_id` key when no `tool_call_id` attribute names the call
    /// (LangChain's `ToolMessage`, which OpenInference records in
    /// `output.value`).
    pub tool_output: Vec<String>,
    pub kinds: Vec<KindRule>,
}

/// The facts about one span that the validator and linker need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepFacts {
    pub is_root: bool,
    pub kind: Option<StepKind>,
    pub agent_name: Option<Str>,
    pub agent_id: Option<Str>,
    pub agent_version: Option<Str>,
    pub request_model: Option<Str>,
    pub response_model: Option<Str>,
    pub provider: Option<Str>,
    pub tool_name: Option<Str>,
    pub tool_call_id: Option<Str>,
    pub input_messages: Option<Str>,
    pub output_messages: Option<Str>,
}

/// Active presets, in precedence order.
#[derive(Clone, Debug)]
pub struct Resolver {
    presets: Vec<Preset>,
    names: Names,
}

/// Marks a name that a span's attributes do not hold.
const ABSENT: u32 = u32::MAX;

/// Every attribute name the presets read, numbered, and for each field the
/// numbers of its names in precedence order. A span's attributes are then
/// matched against all names in one pass ([`Found`]) instead of being
/// scanned once per name.
#[derive(Clone, Debug)]
struct Names {
    ids: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    agent_name: Vec<u32>,
    agent_id: Vec<u32>,
    agent_version: Vec<u32>,
    request_model: Vec<u32>,
    response_model: Vec<u32>,
    provider: Vec<u32>,
    tool_name: Vec<u32>,
    tool_call_id: Vec<u32>,
    input_messages: Vec<u32>,
    output_messages: Vec<u32>,
    tool_output: Vec<u32>,
    /// For each kind rule, presets and rules in order, its attribute.
    rules: Vec<Option<u32>>,
    origin_type: u32,
}

impl Names {
    fn new(presets: &[Preset]) -> Names {
        let mut ids = HashMap::default();
        let mut id = |name: &str| -> u32 {
            let next = ids.len() as u32;
            *ids.entry(Box::from(name)).or_insert(next)
        };
        let mut field = |field: Field| -> Vec<u32> {
            presets
                .iter()
                .flat_map(|preset| field(preset).iter())
                .map(|name| id(name))
                .collect()
        };

        let agent_name = field(|preset| &preset.agent_name);
        let agent_id = field(|preset| &preset.agent_id);
        let agent_version = field(|preset| &preset.agent_version);
        let request_model = field(|preset| &preset.request_model);
        let response_model = field(|preset| &preset.response_model);
        let provider = field(|preset| &preset.provider);
        let tool_name = field(|preset| &preset.tool_name);
        let tool_call_id = field(|preset| &preset.tool_call_id);
        let input_messages = field(|preset| &preset.input_messages);
        let output_messages = field(|preset| &preset.output_messages);
        let tool_output = field(|preset| &preset.tool_output);
        let rules = presets
            .iter()
            .flat_map(|preset| preset.kinds.iter())
            .map(|rule| rule.attribute.as_deref().map(&mut id))
            .collect();
        let origin_type = id(ORIGIN_TYPE);

        Names {
            ids,
            agent_name,
            agent_id,
            agent_version,
            request_model,
            response_model,
            provider,
            tool_name,
            tool_call_id,
            input_messages,
            output_messages,
            tool_output,
            rules,
            origin_type,
        }
    }

    /// Position of the first attribute under each name, or [`ABSENT`].
    fn positions(&self, attributes: &Attributes) -> Vec<u32> {
        let mut positions = vec![ABSENT; self.ids.len()];
        for (position, (key, _)) in attributes.0.iter().enumerate() {
            if let Some(&id) = self.ids.get(&**key) {
                let slot = &mut positions[id as usize];
                if *slot == ABSENT {
                    *slot = position as u32;
                }
            }
        }
        positions
    }
}

/// Positions of the presets' names among a span's attributes and, once a
/// lookup falls back to them, its resource attributes.
struct Found<'a> {
    names: &'a Names,
    span: &'a Span,
    in_span: Vec<u32>,
    in_resource: OnceCell<Vec<u32>>,
}

impl<'a> Found<'a> {
    fn new(names: &'a Names, span: &'a Span) -> Found<'a> {
        Found {
            names,
            span,
            in_span: names.positions(&span.attributes),
            in_resource: OnceCell::new(),
        }
    }

    /// Returns the first value with non-blank text among `ids` in the
    /// span's attributes, as [`Attributes::get_text`] would find it.
    fn span_value(&self, ids: &[u32]) -> Option<&'a Value> {
        value_at(&self.span.attributes, &self.in_span, ids)
    }

    /// Returns the text of [`Found::span_value`], else of the same lookup
    /// among resource attributes, sharing the buffer of a string.
    fn text(&self, ids: &[u32]) -> Option<Str> {
        self.span_value(ids)
            .or_else(|| {
                let attributes = &self.span.resource.attributes;
                let in_resource = self
                    .in_resource
                    .get_or_init(|| self.names.positions(attributes));
                value_at(attributes, in_resource, ids)
            })
            .and_then(Value::non_blank_shared)
    }
}

fn value_at<'a>(attributes: &'a Attributes, positions: &[u32], ids: &[u32]) -> Option<&'a Value> {
    ids.iter().find_map(|&id| {
        let position = positions[id as usize];
        if position == ABSENT {
            return None;
        }
        let value = &attributes.0[position as usize].1;
        value.non_blank_str().is_some().then_some(value)
    })
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
        let names = Names::new(&presets);
        Resolver { presets, names }
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
        let names = &self.names;
        let found = Found::new(names, span);
        let kind = self.kind(&found);
        let tool_call_id = found.text(&names.tool_call_id).or_else(|| {
            (kind == Some(StepKind::Tool))
                .then(|| call_id_in_output(&found, &names.tool_output))
                .flatten()
                .map(Str::from)
        });
        StepFacts {
            is_root: self.is_root(&found),
            kind,
            agent_name: found.text(&names.agent_name),
            agent_id: found.text(&names.agent_id),
            agent_version: found.text(&names.agent_version),
            response_model: found.text(&names.response_model),
            request_model: found.text(&names.request_model),
            provider: found.text(&names.provider),
            tool_name: found.text(&names.tool_name),
            tool_call_id,
            input_messages: found
                .span_value(&names.input_messages)
                .and_then(Value::non_blank_shared),
            output_messages: found
                .span_value(&names.output_messages)
                .and_then(Value::non_blank_shared),
        }
    }

    /// Returns whether `span` is a workflow root, and its step kind: the
    /// facts the assembler keeps about a span whose body waits in the
    /// spool, without the text that [`Resolver::resolve`] copies out of it.
    /// Names of the attributes that [`Resolver::classify`] reads: the
    /// workflow root's origin type and the attributes of the kind rules.
    pub fn classifying_names(&self) -> impl Iterator<Item = &str> {
        let names = &self.names;
        names
            .ids
            .iter()
            .filter(|(_, id)| **id == names.origin_type || names.rules.contains(&Some(**id)))
            .map(|(name, _)| &**name)
    }

    pub fn classify(&self, span: &Span) -> (bool, Option<StepKind>) {
        let found = Found::new(&self.names, span);
        (self.is_root(&found), self.kind(&found))
    }

    fn is_root(&self, found: &Found<'_>) -> bool {
        found.span_value(&[self.names.origin_type]).is_some()
    }

    fn kind(&self, found: &Found<'_>) -> Option<StepKind> {
        self.presets
            .iter()
            .flat_map(|preset| preset.kinds.iter())
            .zip(&self.names.rules)
            .find(|(rule, attribute)| rule_matches(rule, **attribute, found))
            .map(|(rule, _)| rule.kind)
    }
}

/// Finds the first `tool_call_id` in the JSON of the `tool_output`
/// attributes.
fn call_id_in_output(found: &Found<'_>, tool_output: &[u32]) -> Option<String> {
    tool_output
        .iter()
        .filter_map(|&id| found.span_value(&[id])?.non_blank_str())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .find_map(|json| find_call_id(&json, 0))
}

/// Maximum object depth that [`find_call_id`] searches. LangChain's
/// `ToolMessage` keeps the id two levels down
/// (`{"type": "tool", "data": {"tool_call_id": ...}}`).
const MAX_CALL_ID_DEPTH: usize = 4;

fn find_call_id(json: &serde_json::Value, depth: usize) -> Option<String> {
    let serde_json::Value::Object(map) = json else {
        return None;
    };
    if let Some(id) = map
        .get("tool_call_id")
        .and_then(|id| id.as_str())
        .filter(|id| !id.is_empty())
    {
        return Some(id.to_owned());
    }
    if depth >= MAX_CALL_ID_DEPTH {
        return None;
    }
    map.values()
        .find_map(|value| find_call_id(value, depth + 1))
}

fn rule_matches(rule: &KindRule, attribute: Option<u32>, found: &Found<'_>) -> bool {
    if let Some(attribute) = attribute {
        let Some(value) = found
            .span_value(&[attribute])
            .and_then(Value::non_blank_str)
        else {
            return false;
        };
        return rule.equals.is_empty()
            || rule
                .equals
                .iter()
                .any(|expected| expected.eq_ignore_ascii_case(value.trim()));
    }
    let name = &*found.span.name;
    rule.span_name.iter().any(|candidate| candidate == name)
        || rule
            .span_name_prefix
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::builtin::{crewai, genai, openinference, openllmetry, strands};
    use super::*;
    use crate::testing::span;

    struct KindCase {
        name: &'static str,
        preset: fn() -> Preset,
        span_name: &'static str,
        attributes: &'static [(&'static str, &'static str)],
        expected: Option<StepKind>,
    }

    const KIND_CASES: &[KindCase] = &[
        KindCase {
            name: "genai invoke_agent operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "invoke_agent")],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "genai create_agent operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "create_agent")],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "genai invoke_workflow operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "invoke_workflow")],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "genai chat operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "chat")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai text_completion operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "text_completion")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai generate_content operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "generate_content")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai embeddings operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "embeddings")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai execute_tool operation",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "execute_tool")],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "genai operation in upper case",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.operation.name", "CHAT")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai operation before span name",
            preset: genai,
            span_name: "chat gpt-4o",
            attributes: &[("gen_ai.operation.name", "execute_tool")],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "genai invoke_agent name prefix",
            preset: genai,
            span_name: "invoke_agent planner",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "genai create_agent name prefix",
            preset: genai,
            span_name: "create_agent planner",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "genai chat name prefix",
            preset: genai,
            span_name: "chat gpt-4o",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai text_completion name prefix",
            preset: genai,
            span_name: "text_completion davinci",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai generate_content name prefix",
            preset: genai,
            span_name: "generate_content gemini-2.0-flash",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai execute_tool name prefix",
            preset: genai,
            span_name: "execute_tool get_weather",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "genai tool name present",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.tool.name", "get_weather")],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "genai request model present",
            preset: genai,
            span_name: "run",
            attributes: &[("gen_ai.request.model", "gpt-4o")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "genai unknown span",
            preset: genai,
            span_name: "POST /tasks",
            attributes: &[],
            expected: None,
        },
        KindCase {
            name: "openinference AGENT",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "AGENT")],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "openinference LLM",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "LLM")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "openinference llm in lower case",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "llm")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "openinference TOOL",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "TOOL")],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "openinference CHAIN",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "CHAIN")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference RETRIEVER",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "RETRIEVER")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference EMBEDDING",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "EMBEDDING")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference RERANKER",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "RERANKER")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference GUARDRAIL",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "GUARDRAIL")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference EVALUATOR",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "EVALUATOR")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openinference unknown kind",
            preset: openinference,
            span_name: "run",
            attributes: &[("openinference.span.kind", "PROMPT")],
            expected: None,
        },
        KindCase {
            name: "openllmetry agent",
            preset: openllmetry,
            span_name: "run",
            attributes: &[("traceloop.span.kind", "agent")],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "openllmetry tool",
            preset: openllmetry,
            span_name: "run",
            attributes: &[("traceloop.span.kind", "tool")],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "openllmetry workflow",
            preset: openllmetry,
            span_name: "run",
            attributes: &[("traceloop.span.kind", "workflow")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openllmetry task",
            preset: openllmetry,
            span_name: "run",
            attributes: &[("traceloop.span.kind", "task")],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "openllmetry chat request",
            preset: openllmetry,
            span_name: "openai.chat",
            attributes: &[("llm.request.type", "chat")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "openllmetry completion request",
            preset: openllmetry,
            span_name: "openai.completion",
            attributes: &[("llm.request.type", "completion")],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "crewai Crew Execution",
            preset: crewai,
            span_name: "Crew Execution",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "crewai execute crew",
            preset: crewai,
            span_name: "execute crew",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "crewai Agent Execution",
            preset: crewai,
            span_name: "Agent Execution",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "crewai execute agent",
            preset: crewai,
            span_name: "execute agent",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "crewai LLM Call",
            preset: crewai,
            span_name: "LLM Call",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "crewai call llm",
            preset: crewai,
            span_name: "call llm",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "crewai Tool Usage",
            preset: crewai,
            span_name: "Tool Usage",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "crewai Tool Execution",
            preset: crewai,
            span_name: "Tool Execution",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "crewai call tool",
            preset: crewai,
            span_name: "call tool",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "strands event loop cycle",
            preset: strands,
            span_name: "execute_event_loop_cycle",
            attributes: &[],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "strands numbered cycle",
            preset: strands,
            span_name: "Cycle 3",
            attributes: &[],
            expected: Some(StepKind::Other),
        },
        KindCase {
            name: "strands invoke_agent",
            preset: strands,
            span_name: "invoke_agent weather_bot",
            attributes: &[],
            expected: Some(StepKind::Agent),
        },
        KindCase {
            name: "strands chat",
            preset: strands,
            span_name: "chat",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "strands Model invoke",
            preset: strands,
            span_name: "Model invoke",
            attributes: &[],
            expected: Some(StepKind::Inference),
        },
        KindCase {
            name: "strands execute_tool",
            preset: strands,
            span_name: "execute_tool get_weather",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
        KindCase {
            name: "strands Tool: prefix",
            preset: strands,
            span_name: "Tool: get_weather",
            attributes: &[],
            expected: Some(StepKind::Tool),
        },
    ];

    #[test]
    fn kind_rules_per_preset() {
        for case in KIND_CASES {
            let resolver = Resolver::new(vec![(case.preset)()]);
            let mut builder = span(1, case.span_name);
            for (key, value) in case.attributes {
                builder = builder.attr(key, value);
            }

            let span = builder.build();
            let facts = resolver.resolve(&span);

            assert_eq!(facts.kind, case.expected, "case {}", case.name);
            assert_eq!(
                resolver.classify(&span),
                (facts.is_root, case.expected),
                "classify, case {}",
                case.name
            );
        }
    }

    #[test]
    fn kind_cases_cover_every_builtin() {
        for preset in builtin_presets() {
            let covered = KIND_CASES
                .iter()
                .any(|case| (case.preset)().name == preset.name);

            assert!(covered, "no kind case for preset {}", preset.name);
        }
    }

    #[test]
    fn resolve_span_before_resource() {
        let with_both = span(1, "run")
            .attr("agent.name", "span-agent")
            .resource_attr("gen_ai.agent.name", "resource-agent")
            .resource_attr("gen_ai.request.model", "resource-model")
            .build();

        let facts = Resolver::default().resolve(&with_both);

        assert_eq!(
            facts.agent_name.as_deref(),
            Some("span-agent"),
            "a lower preset's name on the span beats a higher preset's name on the resource"
        );
        assert_eq!(
            facts.request_model.as_deref(),
            Some("resource-model"),
            "the resource fills what the span lacks"
        );
    }

    #[test]
    fn tool_call_id_from_openllmetry_result() {
        let result = r#"{"output": {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ToolMessage"], "kwargs": {"content": "shipped", "type": "tool", "name": "lookup_order", "tool_call_id": "call_order_1042", "status": "success"}}}"#;
        let tool = span(1, "execute_tool lookup_order")
            .attr("gen_ai.operation.name", "execute_tool")
            .attr("traceloop.span.kind", "tool")
            .attr("gen_ai.tool.name", "lookup_order")
            .attr("gen_ai.tool.call.result", result)
            .build();
        let with_id = span(2, "execute_tool lookup_order")
            .attr("gen_ai.operation.name", "execute_tool")
            .attr("gen_ai.tool.call.id", "call_explicit")
            .attr("gen_ai.tool.call.result", result)
            .build();
        let not_a_tool = span(3, "chat")
            .attr("gen_ai.operation.name", "chat")
            .attr("gen_ai.tool.call.result", result)
            .build();

        let resolver = Resolver::default();

        assert_eq!(
            resolver.resolve(&tool).tool_call_id.as_deref(),
            Some("call_order_1042")
        );
        assert_eq!(
            resolver.resolve(&with_id).tool_call_id.as_deref(),
            Some("call_explicit"),
            "an explicit call id wins over the recorded result"
        );
        assert_eq!(
            resolver.resolve(&not_a_tool).tool_call_id,
            None,
            "only tool steps take their call id from a result"
        );
    }

    #[test]
    fn resolve_first_preset_wins() {
        let with_both = span(1, "run")
            .attr("gen_ai.agent.name", "genai-agent")
            .attr("agent.name", "openinference-agent")
            .build();

        let genai_first = Resolver::new(vec![genai(), openinference()]).resolve(&with_both);
        let openinference_first = Resolver::new(vec![openinference(), genai()]).resolve(&with_both);

        assert_eq!(
            genai_first.agent_name.as_deref(),
            Some("genai-agent"),
            "genai listed first"
        );
        assert_eq!(
            openinference_first.agent_name.as_deref(),
            Some("openinference-agent"),
            "openinference listed first"
        );
    }

    #[test]
    fn kind_first_preset_wins() {
        let both = span(1, "execute_tool search")
            .attr("openinference.span.kind", "LLM")
            .build();

        let default_order = Resolver::default().resolve(&both);
        let openinference_first = Resolver::new(vec![openinference(), genai()]).resolve(&both);

        assert_eq!(
            default_order.kind,
            Some(StepKind::Tool),
            "genai name rule comes first"
        );
        assert_eq!(
            openinference_first.kind,
            Some(StepKind::Inference),
            "openinference listed first"
        );
    }

    #[test]
    fn resolve_first_listed_name() {
        let with_both = span(1, "chat")
            .attr("gen_ai.system", "openai")
            .attr("gen_ai.provider.name", "azure.ai.openai")
            .build();
        let with_system = span(2, "chat").attr("gen_ai.system", "openai").build();

        let resolver = Resolver::default();

        assert_eq!(
            resolver.resolve(&with_both).provider.as_deref(),
            Some("azure.ai.openai"),
            "gen_ai.provider.name is listed before gen_ai.system"
        );
        assert_eq!(
            resolver.resolve(&with_system).provider.as_deref(),
            Some("openai"),
            "gen_ai.system alone"
        );
    }

    #[test]
    fn resolve_skips_empty_values() {
        let blank = span(1, "run")
            .attr("gen_ai.agent.name", "  ")
            .attr("agent.name", "fallback-agent")
            .build();

        let facts = Resolver::default().resolve(&blank);

        assert_eq!(
            facts.agent_name.as_deref(),
            Some("fallback-agent"),
            "blank value skipped"
        );
    }

    #[test]
    fn resolve_root_and_messages_from_span_only() {
        let resource_only = span(1, "run")
            .resource_attr(ORIGIN_TYPE, "user_request")
            .resource_attr("gen_ai.input.messages", "[]")
            .build();
        let on_span = span(2, "run")
            .attr(ORIGIN_TYPE, "user_request")
            .attr("gen_ai.input.messages", "[]")
            .build();

        let resolver = Resolver::default();
        let from_resource = resolver.resolve(&resource_only);
        let from_span = resolver.resolve(&on_span);

        assert!(
            !from_resource.is_root,
            "origin type on the resource marks no root"
        );
        assert_eq!(
            from_resource.input_messages, None,
            "messages on the resource are ignored"
        );
        assert!(from_span.is_root, "origin type on the span marks the root");
        assert!(!resolver.classify(&resource_only).0, "classify agrees");
        assert!(resolver.classify(&on_span).0, "classify agrees");
        assert_eq!(
            from_span.input_messages.as_deref(),
            Some("[]"),
            "messages on the span"
        );
    }

    #[test]
    fn resolve_custom_preset() {
        let yaml = "
name: acme
agent_name: [acme.agent]
tool_name: [acme.tool]
tool_call_id: [acme.call]
kinds:
  - kind: tool
    attribute: acme.step
    equals: [tool]
  - kind: agent
    attribute: acme.agent
  - kind: inference
    span_name_prefix: ['llm.']
";
        let preset: Preset = serde_yaml_ng::from_str(yaml).expect("custom preset parses");
        let resolver = Resolver::new(vec![preset, genai()]);
        let tool_step = span(1, "step")
            .attr("acme.step", "TOOL")
            .attr("acme.tool", "crm_lookup")
            .attr("acme.call", "c-7")
            .build();
        let agent_step = span(2, "step").attr("acme.agent", "sales-bot").build();
        let model_step = span(3, "llm.generate").build();

        let tool_facts = resolver.resolve(&tool_step);
        let agent_facts = resolver.resolve(&agent_step);
        let model_facts = resolver.resolve(&model_step);

        assert_eq!(
            resolver.names(),
            vec!["acme", "genai"],
            "preset names in order"
        );
        assert_eq!(
            tool_facts.kind,
            Some(StepKind::Tool),
            "attribute rule with a value"
        );
        assert_eq!(
            tool_facts.tool_name.as_deref(),
            Some("crm_lookup"),
            "tool name"
        );
        assert_eq!(
            tool_facts.tool_call_id.as_deref(),
            Some("c-7"),
            "tool call id"
        );
        assert_eq!(
            agent_facts.kind,
            Some(StepKind::Agent),
            "attribute rule on presence"
        );
        assert_eq!(
            agent_facts.agent_name.as_deref(),
            Some("sales-bot"),
            "agent name"
        );
        assert_eq!(
            model_facts.kind,
            Some(StepKind::Inference),
            "span name prefix rule"
        );
    }

    #[test]
    fn custom_preset_rejects_unknown_field() {
        let yaml = "name: acme\nagent: [acme.agent]\n";

        let parsed = serde_yaml_ng::from_str::<Preset>(yaml);

        assert!(
            parsed.is_err(),
            "unknown field `agent` accepted: {parsed:?}"
        );
    }
}
