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

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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
    if let Some(found) = output_messages.and_then(|text| read_json(text, false)) {
        push_all(&mut ids, found.inside);
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
        if let Some(found) = event_json(event, attribute, false) {
            push_all(&mut ids, found.inside);
        }
    }
    ids
}

/// Tool call ids whose results appear in a model call's input.
pub fn result_call_ids(span: &Span, input_messages: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(found) = input_messages.and_then(|text| read_json(text, true)) {
        push_all(&mut ids, found.outside);
    }
    collect_flattened_results(span, &mut ids);
    for event in &span.events {
        match &*event.name {
            DETAILS_EVENT => {
                if let Some(found) = event_json(event, "gen_ai.input.messages", true) {
                    push_all(&mut ids, found.outside);
                }
            }
            TOOL_MESSAGE_EVENT => {
                if let Some(id) = event.attributes.get_text("id") {
                    push(&mut ids, id);
                }
                if let Some(found) = event_json(event, "content", false) {
                    push_all(&mut ids, found.inside);
                }
            }
            _ => {}
        }
    }
    ids
}

/// Reads the ids in an event attribute that contains JSON text.
fn event_json(event: &Event, attribute: &str, outside: bool) -> Option<Found> {
    let text = event.attributes.get_text(attribute)?;
    read_json(&text, outside)
}

/// The tool call ids in one JSON value, read two ways.
///
/// `inside` counts the string under every id key, as for a value that is a
/// tool result or a model's output as a whole. `outside` counts them only
/// within objects that mark themselves as tool results (by `type`, `role`
/// or a `toolResult` key), as for a model's input. Ids inside JSON text in
/// a string value count as if that text were in its place.
///
/// The JSON is read as it streams, without building a document. An object
/// that repeats a key counts only the key's last value, as a parsed
/// document would.
#[derive(Default)]
struct Found {
    inside: Vec<String>,
    outside: Vec<String>,
    /// The value is a string in the marker list it was read for.
    marked: bool,
}

impl Found {
    fn is_empty(&self) -> bool {
        self.inside.is_empty() && self.outside.is_empty()
    }

    /// Adds the ids of `other`, a part of this value.
    fn append(&mut self, other: Found) {
        self.inside.extend(other.inside);
        self.outside.extend(other.outside);
    }
}

/// Reads `text` as one JSON value and returns `None` when it is not JSON.
/// The `outside` reading is made only when asked for.
fn read_json(text: &str, outside: bool) -> Option<Found> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found = Walk {
        outside,
        slot: Slot::Value,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    deserializer.end().ok()?;
    Some(found)
}

/// The kind of key whose value is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Any value.
    Value,
    /// The value of an id key.
    Id,
    /// The value of a key whose string marks a tool result when it is one
    /// of these.
    Marker(&'static [&'static str]),
}

/// Reads one JSON value into a [`Found`].
struct Walk {
    outside: bool,
    slot: Slot,
}

impl Walk {
    fn value(&self) -> Walk {
        Walk {
            outside: self.outside,
            slot: Slot::Value,
        }
    }

    fn text(&self, text: &str) -> Found {
        let nested = || {
            looks_like_json(text)
                .then(|| read_json(text, self.outside))
                .flatten()
                .unwrap_or_default()
        };
        match self.slot {
            Slot::Id => Found {
                inside: vec![text.to_owned()],
                outside: if self.outside {
                    nested().outside
                } else {
                    Vec::new()
                },
                marked: false,
            },
            Slot::Value => nested(),
            Slot::Marker(marks) => Found {
                marked: marks.contains(&text),
                ..nested()
            },
        }
    }

    /// Clears the `inside` ids of a value under an id key: there, only a
    /// string counts, and [`Walk::text`] reads it.
    fn finish(&self, mut found: Found) -> Found {
        if self.slot == Slot::Id {
            found.inside.clear();
        }
        found
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Found;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Found, E> {
        Ok(self.text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(item) = items.next_element_seed(self.value())? {
            found.append(item);
        }
        Ok(self.finish(found))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        // Keys whose values contain ids, with those ids. A repeated key
        // replaces its earlier entry.
        let mut entries: Vec<(String, Found)> = Vec::new();
        let mut key = String::new();
        let (mut typed, mut role, mut tool_result) = (false, false, false);
        while let Some(kind) = map.next_key_seed(KeySeed(&mut key))? {
            let slot = match kind {
                Key::Id => Slot::Id,
                Key::Type => Slot::Marker(&RESULT_TYPES),
                Key::Role => Slot::Marker(&RESULT_ROLES),
                Key::ToolResult | Key::Other => Slot::Value,
            };
            let value = map.next_value_seed(Walk {
                outside: self.outside,
                slot,
            })?;
            match kind {
                Key::Type => typed = value.marked,
                Key::Role => role = value.marked,
                Key::ToolResult => tool_result = true,
                Key::Id | Key::Other => {}
            }
            entries.retain(|(earlier, _)| *earlier != key);
            if !value.is_empty() {
                entries.push((key.clone(), value));
            }
        }
        let mut found = Found::default();
        for (_, entry) in entries {
            found.append(entry);
        }
        if self.outside && (typed || role || tool_result) {
            found.outside = found.inside.clone();
        }
        Ok(self.finish(found))
    }
}

/// Keys that change how their value is read.
enum Key {
    Id,
    Type,
    Role,
    ToolResult,
    Other,
}

/// Reads an object key into its buffer and returns its [`Key`].
struct KeySeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        self.0.clear();
        self.0.push_str(key);
        Ok(match key {
            _ if ID_KEYS.contains(&key) => Key::Id,
            "type" => Key::Type,
            "role" => Key::Role,
            "toolResult" => Key::ToolResult,
            _ => Key::Other,
        })
    }
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

fn push_all(ids: &mut Vec<String>, found: Vec<String>) {
    for id in found {
        push(ids, id);
    }
}

fn push(ids: &mut Vec<String>, id: String) {
    if !id.is_empty() && !ids.contains(&id) {
        ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

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

    /// Collects the ids of a parsed document the way [`Found`] reads the
    /// stream: `inside_result` false for the `outside` reading, true for the
    /// `inside` one.
    fn document_ids(json: &Json, inside_result: bool, ids: &mut Vec<String>) {
        match json {
            Json::Object(map) => {
                let field = |name: &str| map.get(name).and_then(Json::as_str);
                let is_result = inside_result
                    || field("type").is_some_and(|kind| RESULT_TYPES.contains(&kind))
                    || field("role").is_some_and(|role| RESULT_ROLES.contains(&role))
                    || map.contains_key("toolResult");
                for (key, value) in map {
                    if is_result && ID_KEYS.contains(&key.as_str()) {
                        if let Some(id) = value.as_str() {
                            push(ids, id.to_owned());
                        }
                    } else {
                        document_ids(value, is_result, ids);
                    }
                }
            }
            Json::Array(items) => items
                .iter()
                .for_each(|item| document_ids(item, inside_result, ids)),
            Json::String(text) if looks_like_json(text) => {
                if let Ok(inner) = serde_json::from_str::<Json>(text) {
                    document_ids(&inner, inside_result, ids);
                }
            }
            _ => {}
        }
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids.dedup();
        ids.retain(|id| !id.is_empty());
        ids
    }

    /// Returns both readings of `text` from the stream, as sorted sets.
    fn streamed(text: &str) -> (Vec<String>, Vec<String>) {
        let inside = read_json(text, false).map(|found| found.inside);
        let outside = read_json(text, true).map(|found| found.outside);
        (
            sorted(inside.unwrap_or_default()),
            sorted(outside.unwrap_or_default()),
        )
    }

    /// Returns both readings of `text` from its parsed document.
    fn parsed(text: &str) -> (Vec<String>, Vec<String>) {
        let Ok(json) = serde_json::from_str::<Json>(text) else {
            return (Vec::new(), Vec::new());
        };
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        document_ids(&json, true, &mut inside);
        document_ids(&json, false, &mut outside);
        (sorted(inside), sorted(outside))
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(ID_KEYS.to_vec()).prop_map(str::to_owned),
            prop::sample::select(vec![
                "type",
                "role",
                "toolResult",
                "content",
                "parts",
                "name"
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn any_text() -> impl Strategy<Value = String> {
        let marks: Vec<&str> = RESULT_TYPES.iter().chain(&RESULT_ROLES).copied().collect();
        prop_oneof![
            prop::sample::select(marks).prop_map(str::to_owned),
            prop::sample::select(vec!["call_1", "call_2", "toolu_3", "", "assistant", "text"])
                .prop_map(str::to_owned),
            "[a-z\\\\\"{}\\[\\] ]{0,8}",
        ]
    }

    fn any_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            any_text().prop_map(Json::String),
            any::<i32>().prop_map(Json::from),
            any::<bool>().prop_map(Json::Bool),
            Just(Json::Null),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::vec((any_key(), inner.clone()), 0..5)
                    .prop_map(|entries| Json::Object(entries.into_iter().collect())),
                // JSON text inside a string, as some instrumentations send
                // tool results.
                inner.prop_map(|nested| Json::String(nested.to_string())),
            ]
        })
    }

    proptest! {
        #[test]
        fn stream_reads_as_document(json in any_json(), damage in any::<Option<prop::sample::Index>>()) {
            let mut text = json.to_string();
            if let Some(at) = damage {
                let at = at.index(text.len().max(1));
                if text.is_char_boundary(at) {
                    text.truncate(at);
                }
            }
            prop_assert_eq!(streamed(&text), parsed(&text), "text: {}", text);
        }
    }

    #[test]
    fn repeated_key_counts_its_last_value() {
        let text = r#"[
            {"id": "call_first", "id": "call_last"},
            {"type": "tool_result", "type": "text", "tool_call_id": "call_unmarked"},
            {"type": "text", "type": "tool_result", "tool_call_id": "call_marked"},
            {"content": {"id": "call_gone"}, "content": "plain"}
        ]"#;

        assert_eq!(streamed(text), parsed(text));
        assert_eq!(
            streamed(text),
            (
                vec![
                    "call_last".to_owned(),
                    "call_marked".to_owned(),
                    "call_unmarked".to_owned()
                ],
                vec!["call_marked".to_owned()]
            )
        );
    }

    #[test]
    fn invalid_json_has_no_ids() {
        for text in [
            r#"{"id": "call_1"} trailing"#,
            r#"{"id": "call_1""#,
            r#"[{"id": "call_1"}, ]"#,
        ] {
            assert_eq!(streamed(text), (Vec::new(), Vec::new()), "{text}");
            assert_eq!(parsed(text), (Vec::new(), Vec::new()), "{text}");
        }
    }
}
