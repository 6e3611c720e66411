//! The span factory: one agent workflow as OTLP spans.
//!
//! A workflow is a root span that carries the origin, task and credential
//! attributes, an `invoke_agent` span under it, and alternating `chat` and
//! `execute_tool` spans under the agent, following the OpenTelemetry GenAI
//! conventions: each model call's output messages name the tool call it
//! requests, and the next model call's input messages carry that call's
//! result. Filler attributes bring every span to its attribute count, which
//! varies between the shape's minimum and maximum. The same inputs always
//! give the same spans.

use crate::otlp::{self, AnyValue, ArrayValue, KeyValue, any_value::Value};

/// OTLP span kinds used here.
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// Time between the starts of consecutive steps; every step ends within it.
const STEP_NANOS: u64 = 100_000_000;
const CHAT_NANOS: u64 = 90_000_000;
const TOOL_NANOS: u64 = 40_000_000;
const MILLI: u64 = 1_000_000;

/// Valid scopes of the workflow credential.
const SCOPES: [&str; 2] = ["orders:read", "tickets:write"];

/// Text that payloads are cut from.
const PROSE: &str = "Check the status of order 1042, compare it with the carrier's tracking events, \
and answer the customer in two short sentences without promising a delivery date. ";

/// The size and attribute layout of generated workflows.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Spans per workflow: the root, an `invoke_agent` span, then
    /// alternating `chat` and `execute_tool` spans. At least 2.
    pub steps: usize,
    /// Length of `agent_ledger.task.spec` on the root, in bytes.
    pub task_spec_bytes: usize,
    /// Length of `gen_ai.tool.call.arguments` and of
    /// `gen_ai.tool.call.result` on tool spans, in bytes each.
    pub tool_payload_bytes: usize,
    /// Minimum attributes per span. A span still carries every attribute
    /// its kind needs when that is more.
    pub min_attributes: usize,
    /// Maximum attributes per span, unless its kind needs more.
    pub max_attributes: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            steps: 8,
            task_spec_bytes: 500,
            tool_payload_bytes: 200,
            min_attributes: 15,
            max_attributes: 25,
        }
    }
}

impl Shape {
    /// Checks that the shape can be generated.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps < 2 {
            return Err(format!(
                "steps is {}, but a workflow needs at least 2 (root and agent)",
                self.steps
            ));
        }
        if self.steps > usize::from(u8::MAX) {
            return Err(format!(
                "steps is {}, above the maximum of {}",
                self.steps,
                u8::MAX
            ));
        }
        if self.min_attributes > self.max_attributes {
            return Err(format!(
                "min_attributes {} is above max_attributes {}",
                self.min_attributes, self.max_attributes
            ));
        }
        Ok(())
    }

    /// Attribute count of one span, spread over the configured range.
    fn attribute_target(&self, variant: u64, step: usize) -> usize {
        let range = (self.max_attributes - self.min_attributes + 1) as u64;
        let spread = variant.wrapping_mul(7).wrapping_add(step as u64 * 3) % range;
        self.min_attributes + spread as usize
    }
}

/// The kind of a workflow step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Root,
    Agent,
    /// The model call of the given turn, counted from 0.
    Chat(usize),
    /// The tool call that the model call of the same turn requested.
    Tool(usize),
}

/// Returns the role of step `step` (0 is the root).
pub fn role(step: usize) -> Role {
    match step {
        0 => Role::Root,
        1 => Role::Agent,
        _ if (step - 2).is_multiple_of(2) => Role::Chat((step - 2) / 2),
        _ => Role::Tool((step - 2) / 2),
    }
}

/// The ids of one workflow's spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowIds {
    pub trace_id: [u8; 16],
    /// One span id per step, in step order.
    pub span_ids: Vec<[u8; 8]>,
}

/// One workflow to generate.
#[derive(Clone, Debug)]
pub struct WorkflowSpec<'a> {
    pub shape: &'a Shape,
    pub ids: &'a WorkflowIds,
    /// A valid workflow's root carries every attribute the default policy
    /// requires; an invalid one lacks `agent_ledger.credential.scopes`.
    pub valid: bool,
    /// Start time of the root, in Unix nanoseconds.
    pub start_unix_nano: u64,
    /// Varies the attribute counts between workflows.
    pub variant: u64,
}

/// Builds the spans of one workflow in the order an SDK exports them,
/// which is by end time, so the agent and then the root come last.
pub fn workflow_spans(spec: &WorkflowSpec<'_>) -> Vec<otlp::Span> {
    let steps = spec.shape.steps;
    let mut spans: Vec<otlp::Span> = (2..steps).map(|step| step_span(spec, step)).collect();
    spans.push(step_span(spec, 1));
    spans.push(step_span(spec, 0));
    spans
}

fn step_span(spec: &WorkflowSpec<'_>, step: usize) -> otlp::Span {
    let role = role(step);
    let (start, end) = step_times(spec, role);
    let mut attributes = semantic_attributes(spec, role);
    pad_attributes(
        &mut attributes,
        spec.shape.attribute_target(spec.variant, step),
    );
    let parent = match role {
        Role::Root => Vec::new(),
        Role::Agent => spec.ids.span_ids[0].to_vec(),
        Role::Chat(_) | Role::Tool(_) => spec.ids.span_ids[1].to_vec(),
    };
    otlp::Span {
        trace_id: spec.ids.trace_id.to_vec(),
        span_id: spec.ids.span_ids[step].to_vec(),
        parent_span_id: parent,
        name: span_name(role).into_bytes().into(),
        kind: span_kind(role),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(otlp::Status {
            message: Vec::new().into(),
            code: 1,
        }),
        ..Default::default()
    }
}

fn step_times(spec: &WorkflowSpec<'_>, role: Role) -> (u64, u64) {
    let base = spec.start_unix_nano;
    let total = spec.shape.steps as u64 * STEP_NANOS + 2 * MILLI;
    match role {
        Role::Root => (base, base + total),
        Role::Agent => (base + MILLI, base + total - MILLI),
        Role::Chat(turn) => {
            let start = base + (2 * turn as u64 + 1) * STEP_NANOS;
            (start, start + CHAT_NANOS)
        }
        Role::Tool(turn) => {
            let start = base + (2 * turn as u64 + 2) * STEP_NANOS;
            (start, start + TOOL_NANOS)
        }
    }
}

fn span_name(role: Role) -> String {
    match role {
        Role::Root => "handle support ticket".to_owned(),
        Role::Agent => "invoke_agent support-bot".to_owned(),
        Role::Chat(_) => "chat gpt-4o".to_owned(),
        Role::Tool(_) => "execute_tool lookup_order".to_owned(),
    }
}

fn span_kind(role: Role) -> i32 {
    match role {
        Role::Root => KIND_SERVER,
        Role::Agent | Role::Tool(_) => KIND_INTERNAL,
        Role::Chat(_) => KIND_CLIENT,
    }
}

fn semantic_attributes(spec: &WorkflowSpec<'_>, role: Role) -> Vec<KeyValue> {
    match role {
        Role::Root => root_attributes(spec),
        Role::Agent => agent_attributes(),
        Role::Chat(turn) => chat_attributes(spec.shape, turn),
        Role::Tool(turn) => tool_attributes(spec.shape, turn),
    }
}

fn root_attributes(spec: &WorkflowSpec<'_>) -> Vec<KeyValue> {
    let mut attributes = vec![
        string("agent_ledger.origin.type", "user_request"),
        string("agent_ledger.origin.source", "support-portal"),
        string("agent_ledger.origin.authorized_by", "user-1042"),
        string("agent_ledger.task.spec", &prose(spec.shape.task_spec_bytes)),
        string("agent_ledger.credential.id", "cred-support-bot-2026-12"),
        string("agent_ledger.credential.issuer", "vault.internal"),
        string("agent_ledger.credential.issued_at", "2026-01-01T00:00:00Z"),
        string("agent_ledger.credential.expires_at", "2027-01-01T00:00:00Z"),
        string("gen_ai.agent.name", "support-bot"),
        string("gen_ai.agent.id", "agent-7f3a"),
        string("gen_ai.agent.version", "1.4.2"),
        string("http.route", "/tickets/{id}/answer"),
    ];
    if spec.valid {
        attributes.push(strings("agent_ledger.credential.scopes", &SCOPES));
    }
    attributes
}

fn agent_attributes() -> Vec<KeyValue> {
    vec![
        string("gen_ai.operation.name", "invoke_agent"),
        string("gen_ai.agent.name", "support-bot"),
        string("gen_ai.agent.id", "agent-7f3a"),
        string("gen_ai.agent.version", "1.4.2"),
        string(
            "gen_ai.agent.description",
            "Answers order questions from the support portal using the order tools.",
        ),
        string("gen_ai.provider.name", "openai"),
        string("gen_ai.request.model", "gpt-4o"),
        string("gen_ai.conversation.id", "conv-5d2e9b"),
    ]
}

fn chat_attributes(shape: &Shape, turn: usize) -> Vec<KeyValue> {
    let requests_tool = tool_step(turn) < shape.steps;
    vec![
        string("gen_ai.operation.name", "chat"),
        string("gen_ai.provider.name", "openai"),
        string("gen_ai.request.model", "gpt-4o"),
        string("gen_ai.response.model", "gpt-4o-2024-08-06"),
        string("gen_ai.response.id", &format!("chatcmpl-{turn:04}")),
        strings(
            "gen_ai.response.finish_reasons",
            &[if requests_tool { "tool_calls" } else { "stop" }],
        ),
        int("gen_ai.usage.input_tokens", 812 + 40 * turn as i64),
        int("gen_ai.usage.output_tokens", 64),
        double("gen_ai.request.temperature", 0.2),
        int("gen_ai.request.max_tokens", 1024),
        string("gen_ai.conversation.id", "conv-5d2e9b"),
        string("server.address", "api.openai.example"),
        string("gen_ai.input.messages", &input_messages(turn)),
        string(
            "gen_ai.output.messages",
            &output_messages(turn, requests_tool),
        ),
    ]
}

fn tool_attributes(shape: &Shape, turn: usize) -> Vec<KeyValue> {
    vec![
        string("gen_ai.operation.name", "execute_tool"),
        string("gen_ai.tool.name", "lookup_order"),
        string("gen_ai.tool.call.id", &call_id(turn)),
        string("gen_ai.tool.type", "function"),
        string(
            "gen_ai.tool.description",
            "Reads an order and its shipment events.",
        ),
        string(
            "gen_ai.tool.call.arguments",
            &json_payload("query", shape.tool_payload_bytes),
        ),
        string(
            "gen_ai.tool.call.result",
            &json_payload("result", shape.tool_payload_bytes),
        ),
        string("gen_ai.conversation.id", "conv-5d2e9b"),
    ]
}

/// Returns the step index of the tool call requested in chat turn `turn`.
fn tool_step(turn: usize) -> usize {
    2 * turn + 3
}

fn call_id(turn: usize) -> String {
    format!("call_{turn:03}")
}

/// Builds the model call's input messages: the user's question and, after
/// the first turn, the result of the previous turn's tool call.
fn input_messages(turn: usize) -> String {
    let question = r#"{"role":"user","parts":[{"type":"text","content":"Where is my order 1042? It was due on Monday."}]}"#;
    if turn == 0 {
        return format!("[{question}]");
    }
    let previous = call_id(turn - 1);
    format!(
        r#"[{question},{{"role":"tool","parts":[{{"type":"tool_call_response","id":"{previous}","response":"order 1042 shipped"}}]}}]"#
    )
}

/// Builds the model call's output messages: a tool call request, or the
/// final reply to the user.
fn output_messages(turn: usize, requests_tool: bool) -> String {
    if requests_tool {
        let id = call_id(turn);
        return format!(
            r#"[{{"role":"assistant","parts":[{{"type":"tool_call","id":"{id}","name":"lookup_order","arguments":{{"order_id":"1042"}}}}]}}]"#
        );
    }
    r#"[{"role":"assistant","parts":[{"type":"text","content":"Your order shipped on Tuesday and is with the carrier."}],"finish_reason":"stop"}]"#.to_owned()
}

fn pad_attributes(attributes: &mut Vec<KeyValue>, target: usize) {
    let mut index = 0;
    while attributes.len() < target {
        attributes.push(string(
            &format!("app.context.{index:02}"),
            &format!("value-{index:02}-7c41d9"),
        ));
        index += 1;
    }
}

/// Returns `len` bytes of ASCII prose.
pub fn prose(len: usize) -> String {
    PROSE.chars().cycle().take(len).collect()
}

/// Builds a JSON object `{"<key>":"<prose>"}` of exactly `len` bytes, or
/// the shortest such object when `len` is smaller.
pub fn json_payload(key: &str, len: usize) -> String {
    let frame = key.len() + 7;
    format!(r#"{{"{key}":"{}"}}"#, prose(len.saturating_sub(frame)))
}

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue::string(key, value)
}

fn strings(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|value| AnyValue {
            value: Some(Value::StringValue(value.as_bytes().to_vec().into())),
        })
        .collect();
    KeyValue {
        key: key.as_bytes().to_vec().into(),
        value: any(Value::ArrayValue(ArrayValue { values })),
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec().into(),
        value: any(Value::IntValue(value)),
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec().into(),
        value: any(Value::DoubleValue(value)),
    }
}

/// Builds the resource of generated requests: one instrumented agent service.
pub fn resource() -> otlp::Resource {
    otlp::Resource {
        attributes: vec![
            string("service.name", "support-bot"),
            string("service.version", "1.4.2"),
            string("deployment.environment.name", "production"),
            string("host.name", "agent-host-3"),
            string("telemetry.sdk.name", "opentelemetry"),
            string("telemetry.sdk.language", "python"),
            string("telemetry.sdk.version", "1.38.0"),
        ],
        dropped_attributes_count: 0,
    }
}

/// Builds the instrumentation scope of generated spans.
pub fn scope() -> otlp::InstrumentationScope {
    otlp::InstrumentationScope {
        name: b"agent-ledger-loadgen".to_vec().into(),
        version: env!("CARGO_PKG_VERSION").as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// Builds an export request that contains `spans` under [`resource`] and
/// [`scope`].
pub fn request(spans: Vec<otlp::Span>) -> otlp::ExportTraceServiceRequest {
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::receiver::convert::{RequestContext, convert_request};
    use crate::validate::{Policy, root_reasons};

    fn ids(steps: usize) -> WorkflowIds {
        WorkflowIds {
            trace_id: [7; 16],
            span_ids: (0..steps).map(|step| [step as u8 + 1; 8]).collect(),
        }
    }

    fn spans(shape: &Shape, valid: bool, variant: u64) -> Vec<otlp::Span> {
        let ids = ids(shape.steps);
        let spec = WorkflowSpec {
            shape,
            ids: &ids,
            valid,
            start_unix_nano: 1_796_000_000_000_000_000,
            variant,
        };
        workflow_spans(&spec)
    }

    fn text(span: &otlp::Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|pair| pair.key == key.as_bytes())
            .and_then(|pair| match pair.value.as_ref()?.value.as_ref()? {
                Value::StringValue(bytes) => Some(String::from_utf8(bytes.to_vec()).unwrap()),
                _ => None,
            })
    }

    fn root_check(valid: bool) -> Vec<String> {
        let request = request(spans(&Shape::default(), valid, 0));
        let context = RequestContext {
            received_at_unix_nano: 1,
            sender: Arc::from(""),
            limits: Default::default(),
        };
        let converted = convert_request(request, &context);
        assert!(
            converted.rejected.is_empty(),
            "generated spans pass the per-span checks"
        );
        let root = converted.spans.last().expect("the root is exported last");
        root_reasons(&Policy::default(), root)
    }

    #[test]
    fn workflow_has_one_span_per_step() {
        for steps in [2, 3, 8, 21] {
            let shape = Shape {
                steps,
                ..Shape::default()
            };
            assert_eq!(spans(&shape, true, 0).len(), steps);
        }
    }

    #[test]
    fn roles_alternate_chat_and_tool() {
        let roles: Vec<Role> = (0..8).map(role).collect();
        let expected = [
            Role::Root,
            Role::Agent,
            Role::Chat(0),
            Role::Tool(0),
            Role::Chat(1),
            Role::Tool(1),
            Role::Chat(2),
            Role::Tool(2),
        ];
        assert_eq!(roles, expected);
    }

    #[test]
    fn attribute_counts_stay_in_range() {
        let shape = Shape::default();
        let mut seen = std::collections::BTreeSet::new();
        for variant in 0..50 {
            for span in spans(&shape, true, variant) {
                let count = span.attributes.len();
                assert!(
                    (15..=25).contains(&count),
                    "span {:?} has {count} attributes",
                    String::from_utf8_lossy(&span.name)
                );
                seen.insert(count);
            }
        }
        assert!(
            seen.len() > 5,
            "attribute counts vary across the range, saw {seen:?}"
        );
    }

    #[test]
    fn payload_sizes_match_shape() {
        let shape = Shape::default();
        let spans = spans(&shape, true, 0);
        let root = spans.last().unwrap();
        assert_eq!(text(root, "agent_ledger.task.spec").unwrap().len(), 500);
        let tools: Vec<&otlp::Span> = spans
            .iter()
            .filter(|span| text(span, "gen_ai.operation.name").as_deref() == Some("execute_tool"))
            .collect();
        assert_eq!(tools.len(), 3);
        for tool in tools {
            assert_eq!(text(tool, "gen_ai.tool.call.arguments").unwrap().len(), 200);
            assert_eq!(text(tool, "gen_ai.tool.call.result").unwrap().len(), 200);
        }
    }

    #[test]
    fn payload_sizes_follow_the_shape() {
        let shape = Shape {
            task_spec_bytes: 2000,
            tool_payload_bytes: 1000,
            ..Shape::default()
        };
        let spans = spans(&shape, true, 0);
        assert_eq!(
            text(spans.last().unwrap(), "agent_ledger.task.spec")
                .unwrap()
                .len(),
            2000
        );
        assert_eq!(
            text(&spans[1], "gen_ai.tool.call.arguments").unwrap().len(),
            1000
        );
    }

    #[test]
    fn valid_root_passes_root_checks() {
        assert_eq!(root_check(true), Vec::<String>::new());
    }

    #[test]
    fn invalid_root_lacks_scopes() {
        assert_eq!(
            root_check(false),
            vec!["missing agent_ledger.credential.scopes on root span".to_owned()]
        );
    }

    #[test]
    fn steps_hang_under_the_agent() {
        let shape = Shape::default();
        let ids = ids(shape.steps);
        let spans = spans(&shape, true, 0);
        let root = spans.last().unwrap();
        assert!(root.parent_span_id.is_empty());
        assert_eq!(spans[spans.len() - 2].parent_span_id, ids.span_ids[0]);
        for span in &spans[..spans.len() - 2] {
            assert_eq!(span.parent_span_id, ids.span_ids[1]);
        }
    }

    #[test]
    fn chats_name_the_tool_calls() {
        let spans = spans(&Shape::default(), true, 0);
        let first_chat = text(&spans[0], "gen_ai.output.messages").unwrap();
        assert!(first_chat.contains(r#""id":"call_000""#), "{first_chat}");
        assert_eq!(text(&spans[1], "gen_ai.tool.call.id").unwrap(), "call_000");
        let second_chat = text(&spans[2], "gen_ai.input.messages").unwrap();
        assert!(second_chat.contains(r#""id":"call_000""#), "{second_chat}");
    }

    #[test]
    fn shape_rejects_one_step() {
        let error = Shape {
            steps: 1,
            ..Shape::default()
        }
        .validate()
        .unwrap_err();
        assert!(error.contains("at least 2"), "{error}");
    }

    #[test]
    fn shape_rejects_inverted_attribute_range() {
        let error = Shape {
            min_attributes: 30,
            ..Shape::default()
        }
        .validate()
        .unwrap_err();
        assert!(error.contains("min_attributes 30"), "{error}");
    }
}
