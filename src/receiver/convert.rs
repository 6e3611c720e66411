//! Per-span checks at the edge: turns OTLP messages into typed spans, or into
//! quarantine rows with the reason they failed.

use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::otlp;
use crate::quarantine::{Reason, RejectedSpan};
use crate::span::{Attributes, Event, Link, Resource, Scope, Span, SpanId, TraceId, Value};

/// The outcome of checking one request's spans.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Span>,
    pub rejected: Vec<RejectedSpan>,
}

/// Context shared by every span of one request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub received_at_unix_nano: i64,
    pub sender: Arc<str>,
}

/// Checks every span of `request`; a failing span never affects the others.
pub fn convert_request(
    request: otlp::ExportTraceServiceRequest,
    context: &RequestContext,
) -> Converted {
    let mut converted = Converted::default();
    for resource_spans in request.resource_spans {
        convert_resource_spans(resource_spans, context, &mut converted);
    }
    converted
}

fn convert_resource_spans(
    resource_spans: otlp::ResourceSpans,
    context: &RequestContext,
    converted: &mut Converted,
) {
    let raw_resource = resource_spans.resource.unwrap_or_default();
    let resource = convert_resource(&raw_resource);
    for scope_spans in resource_spans.scope_spans {
        let raw_scope = scope_spans.scope.clone().unwrap_or_default();
        let scope = convert_scope(&raw_scope);
        for span in scope_spans.spans {
            let raw = raw_copy(&raw_resource, &raw_scope, &span);
            let outcome = match (&resource, &scope) {
                (Ok(resource), Ok(scope)) => {
                    convert_span(&span, resource.clone(), scope.clone(), context, raw.clone())
                }
                (Err(detail), _) | (_, Err(detail)) => Err((Reason::InvalidUtf8, detail.clone())),
            };
            match outcome {
                Ok(span) => converted.spans.push(span),
                Err((reason, detail)) => converted.rejected.push(rejected_from_raw(
                    &span,
                    &raw_resource,
                    &raw_scope,
                    reason,
                    detail,
                    context,
                    raw,
                )),
            }
        }
    }
}

/// The span as received, alone in a `ResourceSpans` with its resource and
/// scope, so a quarantined span can be read back whole.
fn raw_copy(
    resource: &otlp::Resource,
    scope: &otlp::InstrumentationScope,
    span: &otlp::Span,
) -> Arc<Vec<u8>> {
    let message = otlp::ResourceSpans {
        resource: Some(resource.clone()),
        scope_spans: vec![otlp::ScopeSpans {
            scope: Some(scope.clone()),
            spans: vec![span.clone()],
            schema_url: Vec::new(),
        }],
        schema_url: Vec::new(),
    };
    Arc::new(message.encode_to_vec())
}

fn convert_resource(resource: &otlp::Resource) -> Result<Arc<Resource>, String> {
    let attributes = convert_attributes(&resource.attributes)
        .map_err(|key| format!("resource attribute {key} is not valid UTF-8"))?;
    let service_name = attributes.get_text("service.name").unwrap_or_default();
    Ok(Arc::new(Resource {
        attributes,
        service_name,
    }))
}

fn convert_scope(scope: &otlp::InstrumentationScope) -> Result<Arc<Scope>, String> {
    let name = utf8(&scope.name).ok_or("instrumentation scope name is not valid UTF-8")?;
    let version = utf8(&scope.version).ok_or("instrumentation scope version is not valid UTF-8")?;
    Ok(Arc::new(Scope { name, version }))
}

type Failure = (Reason, String);

fn convert_span(
    span: &otlp::Span,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    context: &RequestContext,
    raw: Arc<Vec<u8>>,
) -> Result<Span, Failure> {
    let trace_id = check_trace_id(&span.trace_id)?;
    let span_id = check_span_id(&span.span_id, "span id")?;
    let parent_span_id = check_parent_id(&span.parent_span_id)?;
    check_times(span.start_time_unix_nano, span.end_time_unix_nano)?;
    let text = |bytes: &[u8], what: &str| {
        utf8(bytes).ok_or_else(|| (Reason::InvalidUtf8, format!("{what} is not valid UTF-8")))
    };
    let attributes = convert_attributes(&span.attributes).map_err(|key| {
        (
            Reason::InvalidUtf8,
            format!("attribute {key} is not valid UTF-8"),
        )
    })?;
    let status = span.status.clone().unwrap_or_default();
    let content_hash = Sha256::digest(raw.as_slice()).into();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: text(&span.trace_state, "trace state")?,
        name: text(&span.name, "span name")?,
        kind: span.kind,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes,
        events: convert_events(&span.events)?,
        links: convert_links(&span.links)?,
        status_code: status.code,
        status_message: text(&status.message, "status message")?,
        resource,
        scope,
        received_at_unix_nano: context.received_at_unix_nano,
        sender: context.sender.clone(),
        content_hash,
        raw,
    })
}

fn check_trace_id(bytes: &[u8]) -> Result<TraceId, Failure> {
    let id: [u8; 16] = bytes.try_into().map_err(|_| {
        (
            Reason::InvalidTraceId,
            format!("trace id has {} bytes, expected 16", bytes.len()),
        )
    })?;
    if id == [0; 16] {
        return Err((Reason::InvalidTraceId, "trace id is all zero".to_owned()));
    }
    Ok(TraceId(id))
}

fn check_span_id(bytes: &[u8], what: &str) -> Result<SpanId, Failure> {
    let id: [u8; 8] = bytes.try_into().map_err(|_| {
        (
            Reason::InvalidSpanId,
            format!("{what} has {} bytes, expected 8", bytes.len()),
        )
    })?;
    if id == [0; 8] {
        return Err((Reason::InvalidSpanId, format!("{what} is all zero")));
    }
    Ok(SpanId(id))
}

/// An empty or all-zero parent id means the span has no parent.
fn check_parent_id(bytes: &[u8]) -> Result<Option<SpanId>, Failure> {
    if bytes.is_empty() || bytes.iter().all(|byte| *byte == 0) {
        return Ok(None);
    }
    check_span_id(bytes, "parent span id").map(Some)
}

fn check_times(start: u64, end: u64) -> Result<(), Failure> {
    if start == 0 {
        return Err((Reason::InvalidTimestamps, "start time is zero".to_owned()));
    }
    if end < start {
        return Err((
            Reason::InvalidTimestamps,
            format!("end time {end} is before start time {start}"),
        ));
    }
    Ok(())
}

fn convert_events(events: &[otlp::Event]) -> Result<Vec<Event>, Failure> {
    events
        .iter()
        .map(|event| {
            let name = utf8(&event.name).ok_or_else(|| {
                (
                    Reason::InvalidUtf8,
                    "event name is not valid UTF-8".to_owned(),
                )
            })?;
            let attributes = convert_attributes(&event.attributes).map_err(|key| {
                (
                    Reason::InvalidUtf8,
                    format!("event {name} attribute {key} is not valid UTF-8"),
                )
            })?;
            Ok(Event {
                time_unix_nano: event.time_unix_nano,
                name,
                attributes,
            })
        })
        .collect()
}

fn convert_links(links: &[otlp::Link]) -> Result<Vec<Link>, Failure> {
    links
        .iter()
        .map(|link| {
            let attributes = convert_attributes(&link.attributes).map_err(|key| {
                (
                    Reason::InvalidUtf8,
                    format!("link attribute {key} is not valid UTF-8"),
                )
            })?;
            let trace_state = utf8(&link.trace_state).ok_or_else(|| {
                (
                    Reason::InvalidUtf8,
                    "link trace state is not valid UTF-8".to_owned(),
                )
            })?;
            Ok(Link {
                trace_id: hex::encode(&link.trace_id),
                span_id: hex::encode(&link.span_id),
                trace_state,
                attributes,
            })
        })
        .collect()
}

/// Converts attributes; the error is the (lossy) key whose key or value is
/// not valid UTF-8.
fn convert_attributes(pairs: &[otlp::KeyValue]) -> Result<Attributes, String> {
    let mut attributes = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let key = utf8(&pair.key).ok_or_else(|| String::from_utf8_lossy(&pair.key).into_owned())?;
        let value = convert_value(pair.value.as_ref()).ok_or_else(|| key.clone())?;
        attributes.push((key, value));
    }
    Ok(Attributes(attributes))
}

fn convert_value(value: Option<&otlp::AnyValue>) -> Option<Value> {
    use otlp::any_value::Value as Raw;
    let Some(raw) = value.and_then(|value| value.value.as_ref()) else {
        return Some(Value::Empty);
    };
    Some(match raw {
        Raw::StringValue(bytes) => Value::Str(utf8(bytes)?),
        Raw::BoolValue(flag) => Value::Bool(*flag),
        Raw::IntValue(number) => Value::Int(*number),
        Raw::DoubleValue(number) => Value::Double(*number),
        Raw::BytesValue(bytes) => Value::Bytes(bytes.clone()),
        Raw::ArrayValue(array) => Value::Array(
            array
                .values
                .iter()
                .map(|item| convert_value(Some(item)))
                .collect::<Option<_>>()?,
        ),
        Raw::KvlistValue(list) => {
            let mut entries = Vec::with_capacity(list.values.len());
            for pair in &list.values {
                entries.push((utf8(&pair.key)?, convert_value(pair.value.as_ref())?));
            }
            Value::Map(entries)
        }
    })
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lossy_pairs(pairs: &[otlp::KeyValue]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|pair| {
            let value = convert_lossy_value(pair.value.as_ref());
            (lossy(&pair.key), value)
        })
        .collect()
}

fn convert_lossy_value(value: Option<&otlp::AnyValue>) -> String {
    match convert_value(value) {
        Some(value) => value.to_text(),
        None => match value.and_then(|value| value.value.as_ref()) {
            Some(otlp::any_value::Value::StringValue(bytes)) => lossy(bytes),
            _ => "[invalid UTF-8]".to_owned(),
        },
    }
}

/// The quarantine row of a span that failed the checks, read as far as its
/// bytes allow (invalid UTF-8 is replaced with U+FFFD).
fn rejected_from_raw(
    span: &otlp::Span,
    resource: &otlp::Resource,
    scope: &otlp::InstrumentationScope,
    reason: Reason,
    detail: String,
    context: &RequestContext,
    raw: Arc<Vec<u8>>,
) -> RejectedSpan {
    let resource_attributes = lossy_pairs(&resource.attributes);
    let service_name = resource_attributes
        .iter()
        .find(|(key, _)| key == "service.name")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let status = span.status.clone().unwrap_or_default();
    RejectedSpan {
        timestamp_unix_nano: span.start_time_unix_nano as i64,
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: hex::encode(&span.parent_span_id),
        trace_state: lossy(&span.trace_state),
        span_name: lossy(&span.name),
        span_kind: crate::span::span_kind_name(span.kind).to_owned(),
        service_name,
        resource_attributes,
        scope_name: lossy(&scope.name),
        scope_version: lossy(&scope.version),
        span_attributes: lossy_pairs(&span.attributes),
        duration_nanos: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        status_code: crate::span::status_code_name(status.code).to_owned(),
        status_message: lossy(&status.message),
        reason: Some(reason),
        detail,
        sender: context.sender.to_string(),
        received_at_unix_nano: context.received_at_unix_nano,
        raw_span: raw.as_ref().clone(),
    }
}

/// Decodes a `RawSpan` column value back into a typed span, for re-admitting
/// a quarantined span whose workflow root arrived later.
pub fn span_from_raw(raw: &[u8], context: &RequestContext) -> Option<Span> {
    let resource_spans = otlp::ResourceSpans::decode(raw).ok()?;
    let request = otlp::ExportTraceServiceRequest {
        resource_spans: vec![resource_spans],
    };
    convert_request(request, context).spans.into_iter().next()
}
