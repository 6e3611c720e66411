//! OTLP/JSON: decodes `ExportTraceServiceRequest` bodies into the lenient
//! [`crate::otlp`] types and encodes `ExportTraceServiceResponse`.
//!
//! The encoding is the Protobuf JSON mapping with the OTLP changes: field
//! names in lowerCamelCase, trace and span ids as hex strings (not base64),
//! enums as integers (names are accepted too), 64-bit integers as strings or
//! numbers, `bytesValue` as base64. Unknown fields are ignored and `null`
//! means the default, as the mapping requires. A body that is not such JSON
//! fails as a whole with [`JsonError`]. An id that is not hex fails only its
//! span: it decodes to [`INVALID_ID`], whose length no id has, so the
//! receiver's per-span checks reject that span as `invalid_trace_id` or
//! `invalid_span_id` and keep the others.

use base64::Engine;
use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::{
    AnyValue, ArrayValue, Event, ExportTraceServiceRequest, ExportTraceServiceResponse,
    InstrumentationScope, KeyValue, KeyValueList, Link, Resource, ResourceSpans, ScopeSpans, Span,
    Status, any_value,
};

/// What an id that is not hex decodes to: one byte, a length that neither a
/// trace id (16) nor a span id (8) has, and not all zero, so a parent id
/// that is not hex is rejected rather than read as "no parent".
pub const INVALID_ID: [u8; 1] = [0xff];

/// Maximum nesting of arrays and key-value lists in one attribute value;
/// serde_json's own recursion limit (128) stops deeper bodies first.
const MAX_VALUE_DEPTH: usize = 64;

/// A body that is not an OTLP/JSON trace export request.
#[derive(Debug, thiserror::Error)]
#[error("invalid OTLP/JSON trace export request: {0}")]
pub struct JsonError(#[from] serde_json::Error);

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    let request: JsonRequest = serde_json::from_slice(body)?;
    Ok(request.into_otlp())
}

/// Encodes an `ExportTraceServiceResponse` as OTLP/JSON; `rejectedSpans`
/// is an int64 and therefore a string.
pub fn encode_response(response: &ExportTraceServiceResponse) -> Vec<u8> {
    let json = JsonResponse {
        partial_success: response
            .partial_success
            .as_ref()
            .map(|partial| JsonPartialSuccess {
                rejected_spans: partial.rejected_spans.to_string(),
                error_message: partial.error_message.clone(),
            }),
    };
    serde_json::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_success: Option<JsonPartialSuccess>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPartialSuccess {
    rejected_spans: String,
    error_message: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonRequest {
    #[serde(deserialize_with = "list")]
    resource_spans: Vec<JsonResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResourceSpans {
    resource: Option<JsonResource>,
    #[serde(deserialize_with = "list")]
    scope_spans: Vec<JsonScopeSpans>,
    #[serde(deserialize_with = "text")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResource {
    #[serde(deserialize_with = "list")]
    attributes: Vec<JsonKeyValue>,
    #[serde(deserialize_with = "uint32")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonScopeSpans {
    scope: Option<JsonScope>,
    #[serde(deserialize_with = "list")]
    spans: Vec<JsonSpan>,
    #[serde(deserialize_with = "text")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonScope {
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(deserialize_with = "text")]
    version: String,
    #[serde(deserialize_with = "list")]
    attributes: Vec<JsonKeyValue>,
    #[serde(deserialize_with = "uint32")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonSpan {
    #[serde(deserialize_with = "text")]
    trace_id: String,
    #[serde(deserialize_with = "text")]
    span_id: String,
    #[serde(deserialize_with = "text")]
    trace_state: String,
    #[serde(deserialize_with = "text")]
    parent_span_id: String,
    #[serde(deserialize_with = "uint32")]
    flags: u32,
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(deserialize_with = "span_kind")]
    kind: i32,
    #[serde(deserialize_with = "uint64")]
    start_time_unix_nano: u64,
    #[serde(deserialize_with = "uint64")]
    end_time_unix_nano: u64,
    #[serde(deserialize_with = "list")]
    attributes: Vec<JsonKeyValue>,
    #[serde(deserialize_with = "uint32")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "list")]
    events: Vec<JsonEvent>,
    #[serde(deserialize_with = "uint32")]
    dropped_events_count: u32,
    #[serde(deserialize_with = "list")]
    links: Vec<JsonLink>,
    #[serde(deserialize_with = "uint32")]
    dropped_links_count: u32,
    status: Option<JsonStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonEvent {
    #[serde(deserialize_with = "uint64")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(deserialize_with = "list")]
    attributes: Vec<JsonKeyValue>,
    #[serde(deserialize_with = "uint32")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonLink {
    #[serde(deserialize_with = "text")]
    trace_id: String,
    #[serde(deserialize_with = "text")]
    span_id: String,
    #[serde(deserialize_with = "text")]
    trace_state: String,
    #[serde(deserialize_with = "list")]
    attributes: Vec<JsonKeyValue>,
    #[serde(deserialize_with = "uint32")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "uint32")]
    flags: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonStatus {
    #[serde(deserialize_with = "text")]
    message: String,
    #[serde(deserialize_with = "status_code")]
    code: i32,
}

/// A key-value pair whose value passed [`check_any_value`].
#[derive(Deserialize)]
#[serde(try_from = "RawKeyValue")]
struct JsonKeyValue {
    key: String,
    value: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawKeyValue {
    #[serde(deserialize_with = "text")]
    key: String,
    value: Option<serde_json::Value>,
}

impl TryFrom<RawKeyValue> for JsonKeyValue {
    type Error = String;

    fn try_from(raw: RawKeyValue) -> Result<Self, String> {
        if let Some(value) = &raw.value {
            check_any_value(value, 0)
                .map_err(|message| format!("attribute {}: {message}", raw.key))?;
        }
        Ok(JsonKeyValue {
            key: raw.key,
            value: raw.value,
        })
    }
}

impl JsonRequest {
    fn into_otlp(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .resource_spans
                .into_iter()
                .map(JsonResourceSpans::into_otlp)
                .collect(),
        }
    }
}

impl JsonResourceSpans {
    fn into_otlp(self) -> ResourceSpans {
        ResourceSpans {
            resource: self.resource.map(|resource| Resource {
                attributes: key_values(resource.attributes),
                dropped_attributes_count: resource.dropped_attributes_count,
            }),
            scope_spans: self
                .scope_spans
                .into_iter()
                .map(JsonScopeSpans::into_otlp)
                .collect(),
            schema_url: self.schema_url.into_bytes(),
        }
    }
}

impl JsonScopeSpans {
    fn into_otlp(self) -> ScopeSpans {
        ScopeSpans {
            scope: self.scope.map(|scope| InstrumentationScope {
                name: scope.name.into_bytes().into(),
                version: scope.version.into_bytes().into(),
                attributes: key_values(scope.attributes),
                dropped_attributes_count: scope.dropped_attributes_count,
            }),
            spans: self.spans.into_iter().map(JsonSpan::into_otlp).collect(),
            schema_url: self.schema_url.into_bytes(),
        }
    }
}

impl JsonSpan {
    fn into_otlp(self) -> Span {
        Span {
            trace_id: id_bytes(&self.trace_id),
            span_id: id_bytes(&self.span_id),
            trace_state: self.trace_state.into_bytes().into(),
            parent_span_id: id_bytes(&self.parent_span_id),
            flags: self.flags,
            name: self.name.into_bytes().into(),
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            attributes: key_values(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
            events: self.events.into_iter().map(JsonEvent::into_otlp).collect(),
            dropped_events_count: self.dropped_events_count,
            links: self.links.into_iter().map(JsonLink::into_otlp).collect(),
            dropped_links_count: self.dropped_links_count,
            status: self.status.map(|status| Status {
                message: status.message.into_bytes().into(),
                code: status.code,
            }),
        }
    }
}

impl JsonEvent {
    fn into_otlp(self) -> Event {
        Event {
            time_unix_nano: self.time_unix_nano,
            name: self.name.into_bytes().into(),
            attributes: key_values(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
        }
    }
}

impl JsonLink {
    fn into_otlp(self) -> Link {
        Link {
            trace_id: id_bytes(&self.trace_id),
            span_id: id_bytes(&self.span_id),
            trace_state: self.trace_state.into_bytes().into(),
            attributes: key_values(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
            flags: self.flags,
        }
    }
}

/// Decodes a hex id; an empty string is an empty id, and text that is not
/// hex is [`INVALID_ID`].
fn id_bytes(text: &str) -> Vec<u8> {
    hex::decode(text.trim()).unwrap_or_else(|_| INVALID_ID.to_vec())
}

fn key_values(pairs: Vec<JsonKeyValue>) -> Vec<KeyValue> {
    pairs
        .into_iter()
        .map(|pair| KeyValue {
            key: pair.key.into_bytes().into(),
            value: pair.value.map(any_value_of),
        })
        .collect()
}

/// Converts an `AnyValue` object. Values were checked when the body was
/// deserialized (see [`check_any_value`]), so this conversion cannot fail.
fn any_value_of(json: serde_json::Value) -> AnyValue {
    use any_value::Value as Raw;
    let serde_json::Value::Object(map) = json else {
        return AnyValue { value: None };
    };
    let value = map.into_iter().find_map(|(key, field)| {
        if field.is_null() {
            return None;
        }
        Some(match key.as_str() {
            "stringValue" => Raw::StringValue(Bytes::copy_from_slice(
                field.as_str().unwrap_or_default().as_bytes(),
            )),
            "boolValue" => Raw::BoolValue(field.as_bool().unwrap_or_default()),
            "intValue" => Raw::IntValue(parse_i64(&field).unwrap_or_default()),
            "doubleValue" => Raw::DoubleValue(parse_f64(&field).unwrap_or_default()),
            "bytesValue" => Raw::BytesValue(parse_base64(&field).unwrap_or_default()),
            "arrayValue" => Raw::ArrayValue(ArrayValue {
                values: nested_values(field),
            }),
            "kvlistValue" => Raw::KvlistValue(KeyValueList {
                values: nested_pairs(field),
            }),
            _ => return None,
        })
    });
    AnyValue { value }
}

fn nested_values(field: serde_json::Value) -> Vec<AnyValue> {
    match values_of(field) {
        Some(serde_json::Value::Array(items)) => items.into_iter().map(any_value_of).collect(),
        _ => Vec::new(),
    }
}

fn nested_pairs(field: serde_json::Value) -> Vec<KeyValue> {
    let Some(serde_json::Value::Array(items)) = values_of(field) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| match item {
            serde_json::Value::Object(mut pair) => Some(KeyValue {
                key: pair
                    .remove("key")
                    .and_then(|key| key.as_str().map(str::to_owned))
                    .unwrap_or_default()
                    .into_bytes()
                    .into(),
                value: pair
                    .remove("value")
                    .filter(|value| !value.is_null())
                    .map(any_value_of),
            }),
            _ => None,
        })
        .collect()
}

/// The `values` list of an `ArrayValue` or `KeyValueList` object.
fn values_of(field: serde_json::Value) -> Option<serde_json::Value> {
    match field {
        serde_json::Value::Object(mut map) => map.remove("values"),
        _ => None,
    }
}

/// Checks an `AnyValue` as deserialized, so that the conversion above never
/// meets a value it cannot represent: one field per object, each of the
/// right JSON type.
fn check_any_value(json: &serde_json::Value, depth: usize) -> Result<(), String> {
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "attribute value nested deeper than {MAX_VALUE_DEPTH} levels"
        ));
    }
    let serde_json::Value::Object(map) = json else {
        return Err(format!("expected an AnyValue object, found {json}"));
    };
    for (key, field) in map.iter().filter(|(_, field)| !field.is_null()) {
        match key.as_str() {
            "stringValue" if field.is_string() => {}
            "boolValue" if field.is_boolean() => {}
            "intValue" if parse_i64(field).is_some() => {}
            "doubleValue" if parse_f64(field).is_some() => {}
            "bytesValue" if parse_base64(field).is_some() => {}
            "arrayValue" => check_nested(field, depth, false)?,
            "kvlistValue" => check_nested(field, depth, true)?,
            "stringValue" | "boolValue" | "intValue" | "doubleValue" | "bytesValue" => {
                return Err(format!("invalid {key} {field}"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_nested(field: &serde_json::Value, depth: usize, pairs: bool) -> Result<(), String> {
    let values = match field {
        serde_json::Value::Object(map) => map.get("values"),
        _ => {
            return Err(format!(
                "expected an object with a values list, found {field}"
            ));
        }
    };
    let items = match values {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::Array(items)) => items,
        Some(other) => return Err(format!("expected a values list, found {other}")),
    };
    for item in items {
        match (pairs, item) {
            (false, value) => check_any_value(value, depth + 1)?,
            (true, serde_json::Value::Object(pair)) => match pair.get("value") {
                Some(value) if !value.is_null() => check_any_value(value, depth + 1)?,
                _ => {}
            },
            (true, other) => return Err(format!("expected a key-value object, found {other}")),
        }
    }
    Ok(())
}

/// A list; `null` is the empty list.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string; `null` is the empty string.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// A uint64 from a number or a decimal string; `null` is zero.
fn uint64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let json = serde_json::Value::deserialize(deserializer)?;
    if json.is_null() {
        return Ok(0);
    }
    parse_u64(&json).ok_or_else(|| {
        de::Error::custom(format!("expected an unsigned 64-bit integer, found {json}"))
    })
}

/// A uint32 from a number or a decimal string; `null` is zero.
fn uint32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let json = serde_json::Value::deserialize(deserializer)?;
    if json.is_null() {
        return Ok(0);
    }
    parse_u64(&json)
        .and_then(|number| u32::try_from(number).ok())
        .ok_or_else(|| {
            de::Error::custom(format!("expected an unsigned 32-bit integer, found {json}"))
        })
}

/// `Span.kind`: an integer, or the enum value's name (`SPAN_KIND_CLIENT`).
fn span_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    const NAMES: [&str; 6] = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    enumeration(deserializer, &NAMES, "span kind")
}

/// `Status.code`: an integer, or the enum value's name (`STATUS_CODE_ERROR`).
fn status_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    const NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
    enumeration(deserializer, &NAMES, "status code")
}

fn enumeration<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &[&str],
    what: &str,
) -> Result<i32, D::Error> {
    let json = serde_json::Value::deserialize(deserializer)?;
    if json.is_null() {
        return Ok(0);
    }
    if let Some(name) = json.as_str()
        && let Some(index) = names.iter().position(|known| *known == name)
    {
        return Ok(index as i32);
    }
    parse_i64(&json)
        .and_then(|number| i32::try_from(number).ok())
        .ok_or_else(|| de::Error::custom(format!("invalid {what} {json}: expected an integer")))
}

fn parse_u64(json: &serde_json::Value) -> Option<u64> {
    match json {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn parse_i64(json: &serde_json::Value) -> Option<i64> {
    match json {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A double from a number, or a string holding a number, `NaN`,
/// `Infinity` or `-Infinity`, as the Protobuf JSON mapping allows.
fn parse_f64(json: &serde_json::Value) -> Option<f64> {
    match json {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => match text.trim() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Base64 in the standard or URL-safe alphabet, padded or not, as the
/// Protobuf JSON mapping allows.
fn parse_base64(json: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let text = json.as_str()?.trim();
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> ExportTraceServiceRequest {
        decode_request(text.as_bytes()).expect("decodes")
    }

    fn first_span(request: &ExportTraceServiceRequest) -> &Span {
        &request.resource_spans[0].scope_spans[0].spans[0]
    }

    const COLLECTOR_SHAPE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
        "scopeSpans":[{"scope":{"name":"lib","version":"1.0"},"spans":[{
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",
        "name":"chat gpt-4o","kind":3,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
        "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"d","value":{"doubleValue":"NaN"}},
        {"key":"b","value":{"bytesValue":"AQID"}},{"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"},{"boolValue":true}]}}},
        {"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"intValue":7}}]}}}],
        "events":[{"timeUnixNano":"1544712660500000000","name":"e"}],
        "links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b170","attributes":[]}],
        "status":{"code":2,"message":"boom"},"unknownField":{"x":1}}]}]}]}"#;

    #[test]
    fn collector_shape_decodes() {
        let request = decode(COLLECTOR_SHAPE);
        let span = first_span(&request);
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(hex::encode(&span.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!(span.kind, 3);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
        assert_eq!(hex::encode(&span.links[0].span_id), "eee19b7ec3c1b170");
        let value = |index: usize| span.attributes[index].value.clone().unwrap().value.unwrap();
        assert_eq!(value(0), any_value::Value::IntValue(42));
        assert!(matches!(value(1), any_value::Value::DoubleValue(number) if number.is_nan()));
        assert_eq!(value(2), any_value::Value::BytesValue(vec![1, 2, 3]));
        let any_value::Value::ArrayValue(array) = value(3) else {
            panic!("array expected")
        };
        assert_eq!(array.values.len(), 2);
        let any_value::Value::KvlistValue(list) = value(4) else {
            panic!("kvlist expected")
        };
        assert_eq!(&list.values[0].key[..], b"k");
    }

    #[test]
    fn enum_names_accepted() {
        let request = decode(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_OK"}}]}]}]}"#,
        );
        let span = first_span(&request);
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 1);
    }

    #[test]
    fn malformed_ids_decode_to_invalid_id() {
        let request = decode(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex","spanId":"zzzzzzzzzzzzzzzz","parentSpanId":"xyz"}]}]}]}"#,
        );
        let span = first_span(&request);
        assert_eq!(span.trace_id, INVALID_ID);
        assert_eq!(span.span_id, INVALID_ID);
        assert_eq!(span.parent_span_id, INVALID_ID);
    }

    #[test]
    fn nulls_and_empty_body_are_defaults() {
        assert_eq!(decode("{}").resource_spans.len(), 0);
        let request = decode(
            r#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"spans":[{"name":null,"attributes":null,"startTimeUnixNano":null}]}]}]}"#,
        );
        let span = first_span(&request);
        assert!(span.name.is_empty());
        assert_eq!(span.start_time_unix_nano, 0);
    }

    #[test]
    fn invalid_bodies_rejected() {
        let cases = [
            "not json",
            r#"{"resourceSpans":{}}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"b","value":{"bytesValue":"***"}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"i","value":{"intValue":1.5}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"s","value":{"stringValue":3}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
        ];
        for body in cases {
            assert!(
                decode_request(body.as_bytes()).is_err(),
                "{body} should be rejected"
            );
        }
    }

    #[test]
    fn deep_values_rejected() {
        let mut value = r#"{"stringValue":"leaf"}"#.to_owned();
        for _ in 0..(MAX_VALUE_DEPTH + 2) {
            value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
        }
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"deep","value":{value}}}]}}}}]}}"#
        );
        assert!(decode_request(body.as_bytes()).is_err());
    }

    #[test]
    fn response_encodes_rejected_spans_as_string() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(super::super::ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "x".to_owned(),
            }),
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_response(&response)).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedSpans"], "2");
        assert_eq!(json["partialSuccess"]["errorMessage"], "x");
        assert_eq!(
            encode_response(&ExportTraceServiceResponse {
                partial_success: None
            }),
            b"{}"
        );
    }
}
