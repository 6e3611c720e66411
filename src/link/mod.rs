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
                .as_deref()
                .is_some_and(|id| fresh.iter().any(|fresh_id| fresh_id.as_str() == id))
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

/// Whether `other` is in the scope `step` looks in: the subtree of the
/// step's nearest agent span, or the whole workflow when it has none.
fn same_scope(step: &Step, other: &Step) -> bool {
    step.agent_span.is_none() || step.agent_span == other.agent_span
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::span::{Span, Value};
    use crate::testing::{self, agent, chat, root, span, span_hex, span_id, tool};

    struct Case {
        name: &'static str,
        spans: Vec<Span>,
        /// Expected causes of some steps, by span number.
        expected: Vec<(u64, Vec<(u64, Basis)>)>,
    }

    fn causes(list: &[(u64, Basis)]) -> Vec<Cause> {
        list.iter()
            .map(|(id, basis)| Cause {
                span_id: span_id(*id),
                basis: *basis,
            })
            .collect()
    }

    /// Builds GenAI output messages that request `call_ids`.
    fn genai_requests(call_ids: &[&str]) -> String {
        let parts: Vec<_> = call_ids
            .iter()
            .map(|id| json!({"type": "tool_call", "id": id, "name": "search", "arguments": {"q": "x"}}))
            .collect();
        json!([{"role": "assistant", "parts": parts, "finish_reason": "tool_call"}]).to_string()
    }

    /// Builds GenAI input messages that carry the results of `call_ids`.
    fn genai_results(call_ids: &[&str]) -> String {
        let mut messages =
            vec![json!({"role": "user", "parts": [{"type": "text", "content": "find x"}]})];
        for id in call_ids {
            messages.push(json!({
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": id, "response": "found"}]
            }));
        }
        json!(messages).to_string()
    }

    fn chat_requesting(id: u64, parent: u64, call_ids: &[&str]) -> testing::SpanBuilder {
        chat(id, parent).attr("gen_ai.output.messages", &genai_requests(call_ids))
    }

    fn chat_reading(id: u64, parent: u64, call_ids: &[&str]) -> testing::SpanBuilder {
        chat(id, parent).attr("gen_ai.input.messages", &genai_results(call_ids))
    }

    fn tool_call(id: u64, parent: u64, call_id: &str) -> testing::SpanBuilder {
        tool(id, parent, "search").attr("gen_ai.tool.call.id", call_id)
    }

    fn openinference_llm(id: u64, parent: u64) -> testing::SpanBuilder {
        span(id, "ChatOpenAI")
            .parent(parent)
            .attr("openinference.span.kind", "LLM")
            .attr("llm.model_name", "gpt-4o-2024-08-06")
    }

    fn id_cases() -> Vec<Case> {
        let openai_output = json!([{
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": "call_x",
                "type": "function",
                "function": {"name": "search", "arguments": "{\"q\":\"x\"}"}
            }]
        }]);
        let openai_input = json!([
            {"role": "user", "content": "find x"},
            {"role": "assistant", "tool_calls": openai_output[0]["tool_calls"]},
            {"role": "tool", "tool_call_id": "call_x", "content": "found"}
        ]);

        vec![
            Case {
                name: "tool by call id despite a later chat",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat_requesting(2, 1, &["call_a"]).times(10, 20).build(),
                    chat(3, 1).times(21, 25).build(),
                    tool_call(4, 1, "call_a").times(30, 40).build(),
                ],
                expected: vec![
                    (4, vec![(2, Basis::ToolCallId)]),
                    (3, vec![(1, Basis::Parent)]),
                ],
            },
            Case {
                name: "chat by tool results first seen in its input",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat_requesting(2, 1, &["call_a", "call_b"])
                        .times(10, 20)
                        .build(),
                    tool_call(3, 1, "call_a").times(21, 25).build(),
                    tool_call(4, 1, "call_b").times(22, 26).build(),
                    chat_reading(5, 1, &["call_a", "call_b"])
                        .attr("gen_ai.output.messages", &genai_requests(&["call_c"]))
                        .times(30, 40)
                        .build(),
                    tool_call(6, 1, "call_c").times(41, 45).build(),
                    chat_reading(7, 1, &["call_a", "call_b", "call_c"])
                        .times(50, 60)
                        .build(),
                ],
                expected: vec![
                    (3, vec![(2, Basis::ToolCallId)]),
                    (4, vec![(2, Basis::ToolCallId)]),
                    (5, vec![(3, Basis::ToolCallId), (4, Basis::ToolCallId)]),
                    (6, vec![(5, Basis::ToolCallId)]),
                    (7, vec![(6, Basis::ToolCallId)]),
                ],
            },
            Case {
                name: "OpenAI-style messages",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat(2, 1)
                        .attr("gen_ai.output.messages", &openai_output.to_string())
                        .times(10, 20)
                        .build(),
                    tool_call(3, 1, "call_x").times(21, 25).build(),
                    chat(4, 1)
                        .attr("gen_ai.input.messages", &openai_input.to_string())
                        .times(30, 40)
                        .build(),
                ],
                expected: vec![
                    (3, vec![(2, Basis::ToolCallId)]),
                    (4, vec![(3, Basis::ToolCallId)]),
                ],
            },
            Case {
                name: "OpenInference flattened attributes",
                spans: vec![
                    root(1).times(0, 100).build(),
                    openinference_llm(2, 1)
                        .attr("llm.output_messages.0.message.role", "assistant")
                        .attr(
                            "llm.output_messages.0.message.tool_calls.0.tool_call.id",
                            "call_oi",
                        )
                        .times(10, 20)
                        .build(),
                    span(3, "search")
                        .parent(1)
                        .attr("openinference.span.kind", "TOOL")
                        .attr("tool.name", "search")
                        .attr("tool_call.id", "call_oi")
                        .times(21, 25)
                        .build(),
                    openinference_llm(4, 1)
                        .attr("llm.input_messages.0.message.role", "user")
                        .attr("llm.input_messages.1.message.role", "assistant")
                        .attr("llm.input_messages.2.message.role", "tool")
                        .attr("llm.input_messages.2.message.tool_call_id", "call_oi")
                        .times(30, 40)
                        .build(),
                ],
                expected: vec![
                    (3, vec![(2, Basis::ToolCallId)]),
                    (4, vec![(3, Basis::ToolCallId)]),
                ],
            },
        ]
    }

    fn sequence_cases() -> Vec<Case> {
        vec![
            Case {
                name: "sequence without ids",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat(2, 1).times(10, 20).build(),
                    tool(6, 1, "lookup").times(12, 18).build(),
                    chat(3, 1).times(22, 28).build(),
                    tool(4, 1, "search").times(30, 35).build(),
                    chat(5, 1).times(40, 50).build(),
                ],
                expected: vec![
                    (4, vec![(3, Basis::Sequence)]),
                    (5, vec![(4, Basis::Sequence)]),
                    (3, vec![(1, Basis::Parent)]),
                    (6, vec![(1, Basis::Parent)]),
                ],
            },
            Case {
                name: "sequence within the agent scope",
                spans: vec![
                    root(1).times(0, 200).build(),
                    agent(2, 1, "writer").times(5, 100).build(),
                    agent(3, 1, "reviewer").times(5, 100).build(),
                    chat(4, 2).times(10, 20).build(),
                    chat(5, 3).times(10, 25).build(),
                    tool(6, 2, "draft").times(26, 30).build(),
                    tool(7, 3, "lint").times(27, 32).build(),
                    chat(8, 2).times(40, 50).build(),
                ],
                expected: vec![
                    (6, vec![(4, Basis::Sequence)]),
                    (7, vec![(5, Basis::Sequence)]),
                    (8, vec![(6, Basis::Sequence)]),
                    (4, vec![(2, Basis::Parent)]),
                    (2, vec![(1, Basis::Parent)]),
                ],
            },
        ]
    }

    fn explicit_and_parent_cases() -> Vec<Case> {
        let listed = format!("{}, 00000000000000ff, {}", span_hex(3), span_hex(4));
        let array = Value::Array(vec![
            Value::Str(span_hex(2).into()),
            Value::Str(span_hex(3).into()),
        ]);

        vec![
            Case {
                name: "explicit comma-separated ids",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat_requesting(2, 1, &["call_a"]).times(10, 20).build(),
                    chat(3, 1).times(21, 25).build(),
                    tool_call(4, 1, "call_a")
                        .attr(CAUSED_BY, &listed)
                        .times(30, 40)
                        .build(),
                ],
                expected: vec![(4, vec![(3, Basis::Explicit)])],
            },
            Case {
                name: "explicit string array",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat(2, 1).times(10, 20).build(),
                    tool(3, 1, "search").times(21, 25).build(),
                    chat(4, 1)
                        .attr_value(CAUSED_BY, array)
                        .times(30, 40)
                        .build(),
                ],
                expected: vec![(4, vec![(2, Basis::Explicit), (3, Basis::Explicit)])],
            },
            Case {
                name: "explicit with only unknown ids",
                spans: vec![
                    root(1).times(0, 100).build(),
                    chat_requesting(2, 1, &["call_a"]).times(10, 20).build(),
                    tool_call(3, 1, "call_a")
                        .attr(CAUSED_BY, "00000000000000ff,not-hex")
                        .times(21, 25)
                        .build(),
                ],
                expected: vec![(3, vec![(2, Basis::ToolCallId)])],
            },
            Case {
                name: "parent fallback",
                spans: vec![
                    root(1).times(0, 100).build(),
                    span(2, "retrieve documents")
                        .parent(1)
                        .times(10, 20)
                        .build(),
                    span(3, "rank documents").parent(2).times(11, 19).build(),
                    tool(4, 1, "search").times(21, 25).build(),
                ],
                expected: vec![
                    (2, vec![(1, Basis::Parent)]),
                    (3, vec![(2, Basis::Parent)]),
                    (4, vec![(1, Basis::Parent)]),
                    (1, vec![]),
                ],
            },
            Case {
                name: "root with a remote parent",
                spans: vec![
                    root(1).parent(99).times(0, 100).build(),
                    chat(2, 1).times(10, 20).build(),
                ],
                expected: vec![(1, vec![]), (2, vec![(1, Basis::Parent)])],
            },
        ]
    }

    #[test]
    fn link_causes_per_rule() {
        let cases = id_cases()
            .into_iter()
            .chain(sequence_cases())
            .chain(explicit_and_parent_cases());
        for case in cases {
            let workflow = testing::workflow(case.spans, &[]);

            let links = link(&workflow, &HashSet::new());

            let by_span: HashMap<SpanId, &StepLinks> = workflow
                .steps
                .iter()
                .zip(&links)
                .map(|(step, links)| (step.span.span_id, links))
                .collect();
            for (step, expected) in &case.expected {
                let actual = &by_span[&span_id(*step)].causes;
                assert_eq!(actual, &causes(expected), "case {}, step {step}", case.name);
            }
        }
    }

    #[test]
    fn link_step_indexes_with_offset() {
        let mut workflow = testing::workflow(
            vec![
                span(5, "e").times(40, 50).build(),
                span(3, "c").times(10, 30).build(),
                root(1).times(0, 100).build(),
                span(4, "d").times(40, 50).build(),
                span(2, "b").times(10, 20).build(),
            ],
            &[],
        );
        workflow.first_step_index = 5;

        let links = link(&workflow, &HashSet::new());

        let order: Vec<SpanId> = workflow
            .steps
            .iter()
            .map(|step| step.span.span_id)
            .collect();
        let expected_order: Vec<SpanId> = [1, 2, 3, 4, 5].into_iter().map(span_id).collect();
        assert_eq!(
            order, expected_order,
            "steps by start, then end, then span id"
        );
        let indexes: Vec<u32> = links.iter().map(|links| links.step_index).collect();
        assert_eq!(
            indexes,
            vec![5, 6, 7, 8, 9],
            "indexes continue from first_step_index"
        );
    }

    #[test]
    fn link_late_step_to_written() {
        let workflow = testing::workflow(
            vec![
                tool(7, 1, "notify").times(200, 210).build(),
                span(8, "audit")
                    .parent(7)
                    .attr(CAUSED_BY, &span_hex(2))
                    .times(201, 209)
                    .build(),
            ],
            &[],
        );
        let written: HashSet<SpanId> = [1, 2].into_iter().map(span_id).collect();

        let links = link(&workflow, &written);

        assert_eq!(
            links[0].causes,
            causes(&[(1, Basis::Parent)]),
            "parent written earlier"
        );
        assert_eq!(
            links[1].causes,
            causes(&[(2, Basis::Explicit)]),
            "explicit cause written earlier"
        );
    }
}
