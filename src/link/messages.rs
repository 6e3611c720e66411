//! Tool call ids in model-call messages.
//!
//! A model call's output names the tool calls it requested; its input carries
//! the results of earlier tool calls. Both are read from the JSON message
//! attributes (`gen_ai.output.messages`, `gen_ai.input.messages` and the
//! presets' equivalents, in the GenAI, OpenAI, Anthropic and Bedrock shapes)
//! and from OpenInference's flattened message attributes
//! (`llm.output_messages.0.message.tool_calls.0.tool_call.id`). Instrumentations
//! that put messages in span events instead are read too: the GenAI event
//! `gen_ai.client.inference.operation.details` with `gen_ai.input.messages`
//! and `gen_ai.output.messages`, and the older `gen_ai.choice` (output) and
//! `gen_ai.tool.message` (input) events that Strands Agents records.

use serde_json::Value as Json;

use crate::span::{Event, Span};

/// Keys that hold a tool call id in the message shapes above.
const ID_KEYS: [&str; 6] = [
    "id",
    "tool_call_id",
    "call_id",
    "toolCallId",
    "tool_use_id",
    "toolUseId",
];

/// Event carrying `gen_ai.input.messages` and `gen_ai.output.messages` in
/// the GenAI semantic conventions since 1.37.
const DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";

/// Older GenAI event with one output choice in its `message` attribute.
const CHOICE_EVENT: &str = "gen_ai.choice";

/// Older GenAI event with one tool result: the call id in `id`, or inside
/// the JSON `content`.
const TOOL_MESSAGE_EVENT: &str = "gen_ai.tool.message";

/// Part or message types that carry a tool result.
const RESULT_TYPES: [&str; 5] = [
    "tool_call_response",
    "function_call_output",
    "tool_result",
    "toolResult",
    "tool-result",
];

/// Roles of messages that carry a tool result.
const RESULT_ROLES: [&str; 2] = ["tool", "function"];

/// Tool call ids requested in a model call's output.
pub fn requested_call_ids(span: &Span, output_messages: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(json) = output_messages.and_then(|text| serde_json::from_str::<Json>(text).ok()) {
        collect_ids(&json, &mut ids);
    }
    for (key, value) in &span.attributes.0 {
        if key.starts_with("llm.output_messages.") && key.ends_with(".tool_call.id") {
            push(&mut ids, value.to_text().to_string());
        }
    }
    for event in &span.events {
        let attribute = match &*event.name {
            DETAILS_EVENT => "gen_ai.output.messages",
            CHOICE_EVENT => "message",
            _ => continue,
        };
        if let Some(json) = event_json(event, attribute) {
            collect_ids(&json, &mut ids);
        }
    }
    ids
}

/// Tool call ids whose results appear in a model call's input.
pub fn result_call_ids(span: &Span, input_messages: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(json) = input_messages.and_then(|text| serde_json::from_str::<Json>(text).ok()) {
        collect_result_ids(&json, false, &mut ids);
    }
    collect_flattened_results(span, &mut ids);
    for event in &span.events {
        match &*event.name {
            DETAILS_EVENT => {
                if let Some(json) = event_json(event, "gen_ai.input.messages") {
                    collect_result_ids(&json, false, &mut ids);
                }
            }
            TOOL_MESSAGE_EVENT => {
                if let Some(id) = event.attributes.get_text("id") {
                    push(&mut ids, id);
                }
                if let Some(json) = event_json(event, "content") {
                    collect_result_ids(&json, true, &mut ids);
                }
            }
            _ => {}
        }
    }
    ids
}

/// Parses an event attribute that holds JSON text.
fn event_json(event: &Event, attribute: &str) -> Option<Json> {
    let text = event.attributes.get_text(attribute)?;
    serde_json::from_str(&text).ok()
}

fn collect_ids(json: &Json, ids: &mut Vec<String>) {
    match json {
        Json::Object(map) => {
            for (key, value) in map {
                if ID_KEYS.contains(&key.as_str()) {
                    if let Some(id) = value.as_str() {
                        push(ids, id.to_owned());
                    }
                } else {
                    collect_ids(value, ids);
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| collect_ids(item, ids)),
        Json::String(text) if looks_like_json(text) => {
            if let Ok(inner) = serde_json::from_str::<Json>(text) {
                collect_ids(&inner, ids);
            }
        }
        _ => {}
    }
}

fn collect_result_ids(json: &Json, inside_result: bool, ids: &mut Vec<String>) {
    match json {
        Json::Object(map) => {
            let is_result = inside_result || is_result_object(map);
            for (key, value) in map {
                if is_result && ID_KEYS.contains(&key.as_str()) {
                    if let Some(id) = value.as_str() {
                        push(ids, id.to_owned());
                    }
                } else {
                    collect_result_ids(value, is_result, ids);
                }
            }
        }
        Json::Array(items) => items
            .iter()
            .for_each(|item| collect_result_ids(item, inside_result, ids)),
        Json::String(text) if looks_like_json(text) => {
            if let Ok(inner) = serde_json::from_str::<Json>(text) {
                collect_result_ids(&inner, inside_result, ids);
            }
        }
        _ => {}
    }
}

fn is_result_object(map: &serde_json::Map<String, Json>) -> bool {
    let field = |name: &str| map.get(name).and_then(Json::as_str);
    field("type").is_some_and(|kind| RESULT_TYPES.contains(&kind))
        || field("role").is_some_and(|role| RESULT_ROLES.contains(&role))
        || map.contains_key("toolResult")
}

/// OpenInference input messages: `llm.input_messages.N.message.role = tool`
/// with `llm.input_messages.N.message.tool_call_id`.
fn collect_flattened_results(span: &Span, ids: &mut Vec<String>) {
    const PREFIX: &str = "llm.input_messages.";
    const SUFFIX: &str = ".message.tool_call_id";
    for (key, value) in &span.attributes.0 {
        let Some(index) = key
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
        else {
            continue;
        };
        let role_key = format!("{PREFIX}{index}.message.role");
        let role = span.attributes.get_text(&role_key).unwrap_or_default();
        if RESULT_ROLES.contains(&role.as_str()) {
            push(ids, value.to_text().to_string());
        }
    }
}

fn looks_like_json(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with('{') || trimmed.starts_with('[')
}

fn push(ids: &mut Vec<String>, id: String) {
    if !id.is_empty() && !ids.contains(&id) {
        ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::span;

    struct Shape {
        name: &'static str,
        output: Json,
        input: Json,
    }

    fn genai() -> Shape {
        Shape {
            name: "GenAI parts",
            output: json!([{
                "role": "assistant",
                "parts": [
                    {"type": "text", "content": "Checking."},
                    {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
                ],
                "finish_reason": "tool_call"
            }]),
            input: json!([
                {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
                ]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]}
            ]),
        }
    }

    fn openai() -> Shape {
        let tool_calls = json!([{
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
        }]);
        Shape {
            name: "OpenAI chat completions",
            output: json!([{"role": "assistant", "content": null, "tool_calls": tool_calls}]),
            input: json!([
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": tool_calls},
                {"role": "tool", "tool_call_id": "call_1", "content": "rainy"}
            ]),
        }
    }

    fn anthropic() -> Shape {
        let tool_use = json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}});
        Shape {
            name: "Anthropic messages",
            output: json!([{"role": "assistant", "content": [{"type": "text", "text": "Checking."}, tool_use]}]),
            input: json!([
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [tool_use]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "rainy"}]}
            ]),
        }
    }

    fn bedrock() -> Shape {
        let tool_use = json!({"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}});
        Shape {
            name: "Bedrock Converse",
            output: json!([{"role": "assistant", "content": [{"text": "Checking."}, tool_use]}]),
            input: json!([
                {"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [tool_use]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "rainy"}]}}]}
            ]),
        }
    }

    fn check_shape(shape: Shape) {
        let plain = span(1, "chat").build();
        let output = shape.output.to_string();
        let input = shape.input.to_string();

        let requested = requested_call_ids(&plain, Some(&output));
        let results = result_call_ids(&plain, Some(&input));

        assert_eq!(
            requested,
            vec!["call_1"],
            "requested ids, shape {}",
            shape.name
        );
        assert_eq!(results, vec!["call_1"], "result ids, shape {}", shape.name);
    }

    #[test]
    fn call_ids_per_shape() {
        for shape in [genai(), openai(), anthropic()] {
            check_shape(shape);
        }
    }

    #[test]
    fn call_ids_bedrock_shape() {
        check_shape(bedrock());
    }

    #[test]
    fn call_ids_inside_json_string() {
        let plain = span(1, "chat").build();
        let output = json!({"messages": genai().output.to_string()}).to_string();
        let input = json!({"messages": openai().input.to_string()}).to_string();
        let input_as_string = Json::String(anthropic().input.to_string()).to_string();

        let requested = requested_call_ids(&plain, Some(&output));
        let results = result_call_ids(&plain, Some(&input));
        let results_top_level = result_call_ids(&plain, Some(&input_as_string));

        assert_eq!(
            requested,
            vec!["call_1"],
            "requested ids in a nested JSON string"
        );
        assert_eq!(
            results,
            vec!["call_1"],
            "result ids in a nested JSON string"
        );
        assert_eq!(
            results_top_level,
            vec!["call_1"],
            "result ids in a top-level JSON string"
        );
    }

    #[test]
    fn call_ids_flattened_openinference() {
        let flattened = span(1, "ChatOpenAI")
            .attr(
                "llm.output_messages.0.message.tool_calls.0.tool_call.id",
                "call_1",
            )
            .attr(
                "llm.output_messages.0.message.tool_calls.1.tool_call.id",
                "call_2",
            )
            .attr(
                "llm.output_messages.1.message.tool_calls.0.tool_call.id",
                "call_1",
            )
            .attr("llm.input_messages.0.message.role", "user")
            .attr("llm.input_messages.0.message.tool_call_id", "call_0")
            .attr("llm.input_messages.2.message.role", "tool")
            .attr("llm.input_messages.2.message.tool_call_id", "call_3")
            .build();

        let requested = requested_call_ids(&flattened, None);
        let results = result_call_ids(&flattened, None);

        assert_eq!(
            requested,
            vec!["call_1", "call_2"],
            "requested ids, each once"
        );
        assert_eq!(results, vec!["call_3"], "result ids of tool messages only");
    }

    #[test]
    fn call_ids_without_messages() {
        let plain = span(1, "chat").build();

        let requested = requested_call_ids(&plain, Some("not json"));
        let results = result_call_ids(&plain, None);

        assert!(
            requested.is_empty(),
            "text that is not JSON has no ids: {requested:?}"
        );
        assert!(results.is_empty(), "no messages, no ids: {results:?}");
    }

    #[test]
    fn result_ids_skip_requests() {
        let plain = span(1, "chat").build();
        let input = json!([
            {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function"}]}
        ])
        .to_string();

        let results = result_call_ids(&plain, Some(&input));

        assert!(
            results.is_empty(),
            "a request in the input is not a result: {results:?}"
        );
    }
}
