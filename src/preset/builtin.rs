//! The built-in presets. Attribute names come from the instrumentations'
//! own documentation and from spans recorded with their code.

use super::{KindRule, Preset, StepKind};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

fn attribute_rule(kind: StepKind, attribute: &str, equals: &[&str]) -> KindRule {
    KindRule {
        kind,
        attribute: Some(attribute.to_owned()),
        equals: names(equals),
        span_name_prefix: Vec::new(),
        span_name: Vec::new(),
    }
}

fn present_rule(kind: StepKind, attribute: &str) -> KindRule {
    KindRule {
        kind,
        attribute: Some(attribute.to_owned()),
        equals: Vec::new(),
        span_name_prefix: Vec::new(),
        span_name: Vec::new(),
    }
}

fn name_rule(kind: StepKind, prefixes: &[&str]) -> KindRule {
    KindRule {
        kind,
        attribute: None,
        equals: Vec::new(),
        span_name_prefix: names(prefixes),
        span_name: Vec::new(),
    }
}

fn exact_name_rule(kind: StepKind, span_names: &[&str]) -> KindRule {
    KindRule {
        kind,
        attribute: None,
        equals: Vec::new(),
        span_name_prefix: Vec::new(),
        span_name: names(span_names),
    }
}

/// OpenTelemetry GenAI semantic conventions.
pub fn genai() -> Preset {
    Preset {
        name: "genai".to_owned(),
        agent_name: names(&["gen_ai.agent.name"]),
        agent_id: names(&["gen_ai.agent.id"]),
        agent_version: names(&["gen_ai.agent.version"]),
        request_model: names(&["gen_ai.request.model"]),
        // A framework that records only the requested model (Strands, Google
        // ADK) records a single model name, and that name is the version.
        response_model: names(&["gen_ai.response.model", "gen_ai.request.model"]),
        provider: names(&["gen_ai.provider.name", "gen_ai.system"]),
        tool_name: names(&["gen_ai.tool.name"]),
        tool_call_id: names(&["gen_ai.tool.call.id"]),
        input_messages: names(&["gen_ai.input.messages"]),
        output_messages: names(&["gen_ai.output.messages"]),
        tool_output: Vec::new(),
        kinds: vec![
            attribute_rule(
                StepKind::Agent,
                "gen_ai.operation.name",
                &["invoke_agent", "create_agent", "invoke_workflow"],
            ),
            attribute_rule(
                StepKind::Inference,
                "gen_ai.operation.name",
                &["chat", "text_completion", "generate_content", "embeddings"],
            ),
            attribute_rule(StepKind::Tool, "gen_ai.operation.name", &["execute_tool"]),
            // Span names are "{operation} {target}"; the space keeps a span
            // such as LangGraph's "chatbot" node out.
            name_rule(StepKind::Agent, &["invoke_agent ", "create_agent "]),
            name_rule(
                StepKind::Inference,
                &["chat ", "text_completion ", "generate_content "],
            ),
            name_rule(StepKind::Tool, &["execute_tool "]),
            present_rule(StepKind::Tool, "gen_ai.tool.name"),
            present_rule(StepKind::Inference, "gen_ai.request.model"),
        ],
    }
}

/// OpenInference (Arize), as used by its LangChain, LlamaIndex and OpenAI
/// Agents instrumentations.
pub fn openinference() -> Preset {
    Preset {
        name: "openinference".to_owned(),
        agent_name: names(&["agent.name", "graph.node.id"]),
        request_model: names(&["llm.model_name"]),
        response_model: names(&["llm.model_name"]),
        provider: names(&["llm.provider", "llm.system"]),
        tool_name: names(&["tool.name"]),
        tool_call_id: names(&["tool_call.id", "tool.id"]),
        input_messages: names(&["llm.input_messages", "input.value"]),
        output_messages: names(&["llm.output_messages", "output.value"]),
        tool_output: names(&["output.value"]),
        kinds: vec![
            attribute_rule(StepKind::Agent, "openinference.span.kind", &["AGENT"]),
            attribute_rule(StepKind::Inference, "openinference.span.kind", &["LLM"]),
            attribute_rule(StepKind::Tool, "openinference.span.kind", &["TOOL"]),
            attribute_rule(
                StepKind::Other,
                "openinference.span.kind",
                &[
                    "CHAIN",
                    "RETRIEVER",
                    "EMBEDDING",
                    "RERANKER",
                    "GUARDRAIL",
                    "EVALUATOR",
                ],
            ),
        ],
        ..Preset::default()
    }
}

/// OpenLLMetry (Traceloop).
pub fn openllmetry() -> Preset {
    Preset {
        name: "openllmetry".to_owned(),
        agent_name: names(&["traceloop.entity.name"]),
        request_model: names(&["llm.request.model"]),
        response_model: names(&["llm.response.model"]),
        provider: names(&["llm.vendor"]),
        input_messages: names(&["traceloop.entity.input"]),
        output_messages: names(&["traceloop.entity.output"]),
        // The LangChain instrumentation records no call id on tool spans.
        // It records the tool's `ToolMessage`, which contains the id, in both
        // of these (OpenLLMetry 0.62).
        tool_output: names(&["gen_ai.tool.call.result", "traceloop.entity.output"]),
        kinds: vec![
            attribute_rule(StepKind::Agent, "traceloop.span.kind", &["agent"]),
            attribute_rule(StepKind::Tool, "traceloop.span.kind", &["tool"]),
            attribute_rule(
                StepKind::Other,
                "traceloop.span.kind",
                &["workflow", "task"],
            ),
            attribute_rule(
                StepKind::Inference,
                "llm.request.type",
                &["chat", "completion"],
            ),
        ],
        ..Preset::default()
    }
}

/// CrewAI's own spans.
pub fn crewai() -> Preset {
    Preset {
        name: "crewai".to_owned(),
        agent_name: names(&["crewai.agent.role", "agent_role"]),
        agent_id: names(&["crewai.agent.id", "agent_id"]),
        request_model: names(&["crewai.llm.model", "llm"]),
        response_model: names(&["crewai.llm.model", "llm"]),
        tool_name: names(&["crewai.tool.name", "tool_name"]),
        kinds: vec![
            name_rule(
                StepKind::Agent,
                &[
                    "execute agent",
                    "Agent Execution",
                    "execute crew",
                    "Crew Execution",
                ],
            ),
            name_rule(StepKind::Inference, &["call llm", "LLM Call"]),
            name_rule(
                StepKind::Tool,
                &["call tool", "Tool Usage", "Tool Execution"],
            ),
        ],
        ..Preset::default()
    }
}

/// Strands Agents, whose spans follow the GenAI conventions with a few names
/// of their own.
pub fn strands() -> Preset {
    Preset {
        name: "strands".to_owned(),
        agent_name: names(&["gen_ai.agent.name", "agent.name"]),
        request_model: names(&["gen_ai.request.model"]),
        response_model: names(&["gen_ai.request.model"]),
        tool_name: names(&["gen_ai.tool.name", "tool.name"]),
        tool_call_id: names(&["gen_ai.tool.call.id", "tool.id"]),
        kinds: vec![
            exact_name_rule(StepKind::Other, &["execute_event_loop_cycle"]),
            name_rule(StepKind::Other, &["Cycle "]),
            name_rule(StepKind::Agent, &["invoke_agent "]),
            exact_name_rule(StepKind::Inference, &["chat", "Model invoke"]),
            name_rule(StepKind::Tool, &["execute_tool ", "Tool: "]),
        ],
        ..Preset::default()
    }
}

/// Every built-in preset, in default precedence order.
pub fn builtin_presets() -> Vec<Preset> {
    vec![genai(), openinference(), openllmetry(), crewai(), strands()]
}
