//! Property test of preset resolution: matching a span's attributes against
//! every preset name in one pass gives the same facts as looking each name
//! up in turn, the way the presets state their precedence.

use proptest::prelude::*;

use super::builtin::{crewai, genai, openinference, openllmetry, strands};
use super::*;
use crate::span::{Str, Value};
use crate::testing::span;

/// Resolves the facts by looking up each name in turn: span attributes before
/// resource attributes, presets in order, names in their listed order.
fn resolve_by_lookup(presets: &[Preset], span: &Span) -> StepFacts {
    let in_span = |field: Field| {
        presets
            .iter()
            .flat_map(|preset| field(preset).iter())
            .find_map(|name| span.attributes.get_text(name))
    };
    let lookup = |field: Field| {
        in_span(field)
            .or_else(|| {
                presets
                    .iter()
                    .flat_map(|preset| field(preset).iter())
                    .find_map(|name| span.resource.attributes.get_text(name))
            })
            .map(Str::from)
    };
    let kind = presets
        .iter()
        .flat_map(|preset| preset.kinds.iter())
        .find(|rule| match &rule.attribute {
            Some(attribute) => span.attributes.get_text(attribute).is_some_and(|value| {
                rule.equals.is_empty()
                    || rule
                        .equals
                        .iter()
                        .any(|expected| expected.eq_ignore_ascii_case(value.trim()))
            }),
            None => {
                rule.span_name.iter().any(|name| *name == *span.name)
                    || rule
                        .span_name_prefix
                        .iter()
                        .any(|prefix| span.name.starts_with(prefix.as_str()))
            }
        })
        .map(|rule| rule.kind);
    let tool_call_id = lookup(|preset| &preset.tool_call_id).or_else(|| {
        (kind == Some(StepKind::Tool))
            .then(|| {
                presets
                    .iter()
                    .flat_map(|preset| preset.tool_output.iter())
                    .filter_map(|name| span.attributes.get_text(name))
                    .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                    .find_map(|json| find_call_id(&json, 0))
                    .map(Str::from)
            })
            .flatten()
    });
    StepFacts {
        is_root: span.attributes.get_text(ORIGIN_TYPE).is_some(),
        kind,
        agent_name: lookup(|preset| &preset.agent_name),
        agent_id: lookup(|preset| &preset.agent_id),
        agent_version: lookup(|preset| &preset.agent_version),
        response_model: lookup(|preset| &preset.response_model),
        request_model: lookup(|preset| &preset.request_model),
        provider: lookup(|preset| &preset.provider),
        tool_name: lookup(|preset| &preset.tool_name),
        tool_call_id,
        input_messages: in_span(|preset| &preset.input_messages).map(Str::from),
        output_messages: in_span(|preset| &preset.output_messages).map(Str::from),
    }
}

/// Lists every attribute name the built-in presets read, plus one they do
/// not.
fn preset_names() -> Vec<String> {
    let mut names: Vec<String> = builtin_presets()
        .iter()
        .flat_map(|preset| {
            let fields: [&Vec<String>; 11] = [
                &preset.agent_name,
                &preset.agent_id,
                &preset.agent_version,
                &preset.request_model,
                &preset.response_model,
                &preset.provider,
                &preset.tool_name,
                &preset.tool_call_id,
                &preset.input_messages,
                &preset.output_messages,
                &preset.tool_output,
            ];
            let rules = preset
                .kinds
                .iter()
                .filter_map(|rule| rule.attribute.clone());
            fields
                .into_iter()
                .flatten()
                .cloned()
                .chain(rules)
                .collect::<Vec<_>>()
        })
        .collect();
    names.push(ORIGIN_TYPE.to_owned());
    names.push("unrelated.attribute".to_owned());
    names.sort();
    names.dedup();
    names
}

/// Values that exercise blank text, kind rule values in other cases, tool
/// output JSON with and without a call id, and non-text values.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Str(Str::from_static(""))),
        Just(Value::Str(Str::from_static("  "))),
        Just(Value::Str(Str::from_static("TOOL"))),
        Just(Value::Str(Str::from_static("llm"))),
        Just(Value::Str(Str::from_static("agent"))),
        Just(Value::Str(Str::from_static("execute_tool"))),
        Just(Value::Str(Str::from_static("Chat"))),
        Just(Value::Str(Str::from_static("invoke_agent"))),
        Just(Value::Str(Str::from_static(r#"{"tool_call_id":"call-7"}"#))),
        Just(Value::Str(Str::from_static(
            r#"{"data":{"tool_call_id":"call-8"}}"#
        ))),
        "[a-z]{1,6}".prop_map(|text| Value::Str(Str::from(text))),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn attributes(names: Vec<String>) -> impl Strategy<Value = Vec<(String, Value)>> {
    proptest::collection::vec((proptest::sample::select(names), value()), 0..24)
}

fn presets() -> impl Strategy<Value = Vec<Preset>> {
    let all = vec![genai(), openinference(), openllmetry(), crewai(), strands()];
    proptest::sample::subsequence(all.clone(), 1..=all.len()).prop_shuffle()
}

fn span_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("chat gpt-4o".to_owned()),
        Just("execute_tool search".to_owned()),
        Just("invoke_agent planner".to_owned()),
        Just("Crew.kickoff".to_owned()),
        "[a-z_. ]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn one_pass_resolution_matches_name_by_name_lookup(
        presets in presets(),
        name in span_name(),
        span_attributes in attributes(preset_names()),
        resource_attributes in attributes(preset_names()),
    ) {
        let mut builder = span(1, &name);
        for (key, value) in span_attributes {
            builder = builder.attr_value(&key, value);
        }
        for (key, value) in resource_attributes {
            let text = value.to_text().to_string();
            builder = builder.resource_attr(&key, &text);
        }
        let span = builder.build();
        let resolver = Resolver::new(presets.clone());
        prop_assert_eq!(resolver.resolve(&span), resolve_by_lookup(&presets, &span));
    }
}
