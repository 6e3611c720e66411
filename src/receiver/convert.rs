//! Per-span checks at the edge: turns OTLP messages into typed spans, or into
//! quarantine rows with the reason they failed.
//!
//! The attribute limits are applied here, so that every listener and every
//! re-conversion from the spool gets the same result: attributes past the
//! maximum count are dropped, keeping the first ones as sent, and counted in
//! `agent_ledger.dropped_attributes_count` (the sender's own dropped count
//! included); a value longer than the maximum size is truncated with
//! [`TRUNCATION_MARKER`] and its original length in bytes is stored in
//! `agent_ledger.truncated.<key>`. The span as received stays whole in the
//! spool and in `RawSpan`.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::otlp;
use crate::quarantine::{Reason, RejectedSpan};
use crate::span::{
    Attributes, ContentHash, Event, Link, Resource, Scope, Span, SpanId, Str, TraceId, Value,
    lower_hex,
};

mod encoded;
mod wire;

pub use encoded::convert_encoded;

/// Default maximum attributes of one span, resource, event or link: eight
/// times the OpenTelemetry SDK's default count limit of 128, so spans from
/// SDKs with raised limits pass unchanged.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 1024;

/// Default maximum size of one attribute value: large enough for a long
/// prompt or tool result, small enough to keep ClickHouse rows manageable.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// Appended to a truncated string value.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// Attribute that records how many attributes were dropped.
pub const DROPPED_ATTRIBUTES_COUNT: &str = "agent_ledger.dropped_attributes_count";

/// Prefix of the attribute that records a truncated value's original length.
pub const TRUNCATED_PREFIX: &str = "agent_ledger.truncated.";

/// Limits applied to the attributes of every span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributeLimits {
    /// Maximum attributes per span, resource, event or link.
    pub max_attributes: usize,
    /// Maximum bytes of one attribute value (string, bytes, or the JSON text
    /// of an array or key-value list).
    pub max_value_bytes: usize,
}

impl Default for AttributeLimits {
    fn default() -> Self {
        AttributeLimits {
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// The outcome of checking one request's spans.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Span>,
    pub rejected: Vec<RejectedSpan>,
    /// Attributes dropped by the count limit.
    pub dropped_attributes: u64,
    /// Attribute values truncated by the size limit.
    pub truncated_values: u64,
}

/// Context shared by every span of one request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub received_at_unix_nano: i64,
    pub sender: Arc<str>,
    pub limits: AttributeLimits,
}

/// What the attribute limits changed while converting.
#[derive(Clone, Copy, Debug, Default)]
struct LimitStats {
    dropped: u64,
    truncated: u64,
}

/// Checks every span of `request`; a failing span never affects the others.
pub fn convert_request(
    request: otlp::ExportTraceServiceRequest,
    context: &RequestContext,
) -> Converted {
    let mut converted = Converted::default();
    for resource_spans in request.resource_spans {
        convert_resource_spans(resource_spans, context, None, &mut converted);
    }
    converted
}

/// A `ResourceSpans` that contains one span, as the spool and `RawSpan`
/// store it. The fields are its encoding and, when already known, the span's
/// content hash.
#[derive(Clone, Copy)]
struct Single<'a> {
    raw: &'a Bytes,
    content_hash: Option<ContentHash>,
}

/// Converts one `ResourceSpans`. With `single`, that encoding becomes the
/// span's `raw` as is. Otherwise each span's `raw` is encoded afresh.
fn convert_resource_spans(
    resource_spans: otlp::ResourceSpans,
    context: &RequestContext,
    single: Option<Single<'_>>,
    converted: &mut Converted,
) {
    let raw_resource = resource_spans.resource.unwrap_or_default();
    let mut resource_stats = LimitStats::default();
    let resource = convert_resource(&raw_resource, &context.limits, &mut resource_stats);
    converted.add_stats(resource_stats);
    let resource_bytes = match single {
        Some(_) => Vec::new(),
        None => raw_resource.encode_to_vec(),
    };
    for scope_spans in resource_spans.scope_spans {
        let raw_scope = scope_spans.scope.clone().unwrap_or_default();
        let scope = convert_scope(&raw_scope);
        let scope_bytes = match single {
            Some(_) => Vec::new(),
            None => raw_scope.encode_to_vec(),
        };
        let origin = Origin::new(&raw_resource, &raw_scope, &resource, scope);
        for span in scope_spans.spans {
            let raw = match single {
                Some(single) => single.raw.clone(),
                None => raw_copy(&resource_bytes, &scope_bytes, &span),
            };
            let content_hash = single.and_then(|single| single.content_hash);
            add_span(&span, &origin, context, raw, content_hash, converted);
        }
    }
}

/// The resource and scope of a group of spans, as decoded for quarantine
/// rows and as checked.
struct Origin<'a> {
    raw_resource: &'a otlp::Resource,
    raw_scope: &'a otlp::InstrumentationScope,
    /// The checked resource and scope, or why the resource, or else the
    /// scope, failed its check.
    checked: Result<(Arc<Resource>, Arc<Scope>), String>,
}

impl<'a> Origin<'a> {
    fn new(
        raw_resource: &'a otlp::Resource,
        raw_scope: &'a otlp::InstrumentationScope,
        resource: &Result<Arc<Resource>, String>,
        scope: Result<Arc<Scope>, String>,
    ) -> Self {
        let checked = match (resource, scope) {
            (Ok(resource), Ok(scope)) => Ok((resource.clone(), scope)),
            (Err(detail), _) => Err(detail.clone()),
            (_, Err(detail)) => Err(detail),
        };
        Origin {
            raw_resource,
            raw_scope,
            checked,
        }
    }
}

/// Checks `span`, whose spool record is `raw`, and adds it or its
/// quarantine row to `converted`.
fn add_span(
    span: &otlp::Span,
    origin: &Origin<'_>,
    context: &RequestContext,
    raw: Bytes,
    content_hash: Option<ContentHash>,
    converted: &mut Converted,
) {
    let mut stats = LimitStats::default();
    let outcome = match &origin.checked {
        Ok((resource, scope)) => convert_span(
            span,
            resource.clone(),
            scope.clone(),
            context,
            raw.clone(),
            content_hash,
            &mut stats,
        ),
        Err(detail) => Err((Reason::InvalidUtf8, detail.clone())),
    };
    match outcome {
        Ok(span) => {
            converted.add_stats(stats);
            converted.spans.push(span);
        }
        Err((reason, detail)) => converted.rejected.push(rejected_from_raw(
            span,
            origin.raw_resource,
            origin.raw_scope,
            reason,
            detail,
            context,
            raw,
        )),
    }
}

/// The span as received, alone in a `ResourceSpans` with its resource and
/// scope, so a quarantined span can be read back whole.
fn raw_copy(resource: &[u8], scope: &[u8], span: &otlp::Span) -> Bytes {
    record(resource, scope, span.encoded_len(), |bytes| {
        span.encode_raw(bytes)
    })
}

/// Encodes `ResourceSpans { resource, scope_spans: [ScopeSpans { scope,
/// spans: [span] }] }` as prost does, from the encodings of the resource
/// and scope and a span of `span_len` bytes that `write_span` appends.
fn record(
    resource: &[u8],
    scope: &[u8],
    span_len: usize,
    write_span: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let scope_spans_len = 1
        + encoded_len_varint(scope.len() as u64)
        + scope.len()
        + 1
        + encoded_len_varint(span_len as u64)
        + span_len;
    let total = 1
        + encoded_len_varint(resource.len() as u64)
        + resource.len()
        + 1
        + encoded_len_varint(scope_spans_len as u64)
        + scope_spans_len;
    let mut bytes = Vec::with_capacity(total);
    encode_key(1, WireType::LengthDelimited, &mut bytes);
    encode_varint(resource.len() as u64, &mut bytes);
    bytes.extend_from_slice(resource);
    encode_key(2, WireType::LengthDelimited, &mut bytes);
    encode_varint(scope_spans_len as u64, &mut bytes);
    encode_key(1, WireType::LengthDelimited, &mut bytes);
    encode_varint(scope.len() as u64, &mut bytes);
    bytes.extend_from_slice(scope);
    encode_key(2, WireType::LengthDelimited, &mut bytes);
    encode_varint(span_len as u64, &mut bytes);
    write_span(&mut bytes);
    debug_assert_eq!(bytes.len(), total, "the span is {span_len} bytes long");
    Bytes::from(bytes)
}

impl Converted {
    fn add_stats(&mut self, stats: LimitStats) {
        self.dropped_attributes += stats.dropped;
        self.truncated_values += stats.truncated;
    }
}

fn convert_resource(
    resource: &otlp::Resource,
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Arc<Resource>, String> {
    let sent = Sent {
        pairs: &resource.attributes,
        dropped: resource.dropped_attributes_count,
    };
    let attributes = convert_attributes(sent, limits, stats)
        .map_err(|key| format!("resource attribute {key} is not valid UTF-8"))?;
    let service_name = attributes
        .get("service.name")
        .map(Value::to_text)
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_default();
    Ok(Arc::new(Resource {
        attributes,
        service_name,
    }))
}

fn convert_scope(scope: &otlp::InstrumentationScope) -> Result<Arc<Scope>, String> {
    let name = text(&scope.name).ok_or("instrumentation scope name is not valid UTF-8")?;
    let version = text(&scope.version).ok_or("instrumentation scope version is not valid UTF-8")?;
    Ok(Arc::new(Scope { name, version }))
}

type Failure = (Reason, String);

fn convert_span(
    span: &otlp::Span,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    context: &RequestContext,
    raw: Bytes,
    content_hash: Option<ContentHash>,
    stats: &mut LimitStats,
) -> Result<Span, Failure> {
    let trace_id = check_trace_id(&span.trace_id)?;
    let span_id = check_span_id(&span.span_id, "span id")?;
    let parent_span_id = check_parent_id(&span.parent_span_id)?;
    check_times(span.start_time_unix_nano, span.end_time_unix_nano)?;
    let checked = |bytes: &Bytes, what: &str| {
        text(bytes).ok_or_else(|| (Reason::InvalidUtf8, format!("{what} is not valid UTF-8")))
    };
    let sent = Sent {
        pairs: &span.attributes,
        dropped: span.dropped_attributes_count,
    };
    let limits = &context.limits;
    let attributes = convert_attributes(sent, limits, stats).map_err(|key| {
        (
            Reason::InvalidUtf8,
            format!("attribute {key} is not valid UTF-8"),
        )
    })?;
    let status = span.status.clone().unwrap_or_default();
    let content_hash = content_hash.unwrap_or_else(|| ContentHash::of(&raw));
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: checked(&span.trace_state, "trace state")?,
        name: checked(&span.name, "span name")?,
        kind: span.kind,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes,
        events: convert_events(&span.events, limits, stats)?,
        links: convert_links(&span.links, limits, stats)?,
        status_code: status.code,
        status_message: checked(&status.message, "status message")?,
        resource,
        scope,
        received_at_unix_nano: context.received_at_unix_nano,
        sender: context.sender.clone(),
        content_hash,
        raw,
        spool: None,
        already_stored: false,
        arrival_only: false,
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

fn convert_events(
    events: &[otlp::Event],
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Vec<Event>, Failure> {
    events
        .iter()
        .map(|event| {
            let name = text(&event.name).ok_or_else(|| {
                (
                    Reason::InvalidUtf8,
                    "event name is not valid UTF-8".to_owned(),
                )
            })?;
            let sent = Sent {
                pairs: &event.attributes,
                dropped: event.dropped_attributes_count,
            };
            let attributes = convert_attributes(sent, limits, stats).map_err(|key| {
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

fn convert_links(
    links: &[otlp::Link],
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Vec<Link>, Failure> {
    links
        .iter()
        .map(|link| {
            let sent = Sent {
                pairs: &link.attributes,
                dropped: link.dropped_attributes_count,
            };
            let attributes = convert_attributes(sent, limits, stats).map_err(|key| {
                (
                    Reason::InvalidUtf8,
                    format!("link attribute {key} is not valid UTF-8"),
                )
            })?;
            let trace_state = text(&link.trace_state).ok_or_else(|| {
                (
                    Reason::InvalidUtf8,
                    "link trace state is not valid UTF-8".to_owned(),
                )
            })?;
            Ok(Link {
                trace_id: lower_hex(&link.trace_id),
                span_id: lower_hex(&link.span_id),
                trace_state,
                attributes,
            })
        })
        .collect()
}

/// An attribute list as sent, with the sender's own dropped count.
#[derive(Clone, Copy)]
struct Sent<'a> {
    pairs: &'a [otlp::KeyValue],
    dropped: u32,
}

/// Converts attributes under `limits`; the error is the (lossy) key whose
/// key or value is not valid UTF-8. Dropped attributes are not checked.
fn convert_attributes(
    sent: Sent<'_>,
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Attributes, String> {
    let mut limited = Limited::new(limits, sent.pairs.len());
    let kept = sent.pairs.len().min(limits.max_attributes);
    for pair in &sent.pairs[..kept] {
        let key = text(&pair.key).ok_or_else(|| lossy(&pair.key))?;
        let value = convert_value(pair.value.as_ref()).ok_or_else(|| key.to_string())?;
        limited.push(key, value);
    }
    limited.drop_unchecked(sent.pairs.len() - kept);
    Ok(limited.finish(sent.dropped, stats))
}

/// Names of the span attributes that the receiver and the assembler read
/// when a span arrives: those that classify it
/// ([`crate::preset::Resolver::classify`]), those of a workflow root that
/// the policy checks ([`crate::validate::root_attribute_names`]), and every
/// `agent_ledger.*` name, credentials among them. A span whose body waits
/// in the spool is checked in full on arrival, but only these attributes
/// are kept in memory ([`Span::arrival_only`]).
#[derive(Clone, Debug, Default)]
pub struct ArrivalKeys {
    names: std::collections::HashSet<Box<[u8]>, foldhash::fast::RandomState>,
}

impl ArrivalKeys {
    /// Attribute names under this prefix are always kept.
    const PREFIX: &'static [u8] = b"agent_ledger.";

    /// Collects the names for the presets of `resolver` and the policy's
    /// root checks. Presets that change at runtime need a new set.
    pub fn new(resolver: &crate::preset::Resolver) -> Self {
        ArrivalKeys {
            names: resolver
                .classifying_names()
                .map(|name| Box::from(name.as_bytes()))
                .chain(
                    crate::validate::root_attribute_names().map(|name| Box::from(name.as_bytes())),
                )
                .collect(),
        }
    }

    /// Checks whether the attribute named `key` is kept on arrival.
    pub fn keeps(&self, key: &[u8]) -> bool {
        key.starts_with(Self::PREFIX) || self.names.contains(key)
    }
}

/// An attribute list being built under the limits: the first
/// `max_attributes` pairs sent, each value cut to `max_value_bytes`.
struct Limited<'a> {
    limits: &'a AttributeLimits,
    attributes: Vec<(Str, Value)>,
    truncations: Vec<(Str, Value)>,
    /// Pairs sent so far, kept or not.
    sent: usize,
    /// Pairs within the limits that were checked but left out
    /// ([`Limited::skip`]).
    skipped: usize,
}

impl<'a> Limited<'a> {
    /// Starts a list for about `expected` pairs.
    fn new(limits: &'a AttributeLimits, expected: usize) -> Self {
        Limited {
            limits,
            attributes: Vec::with_capacity(expected.min(limits.max_attributes) + 1),
            truncations: Vec::new(),
            sent: 0,
            skipped: 0,
        }
    }

    /// Adds the next pair sent. Within the count limit the pair is kept,
    /// its value truncated when too long. Past the limit it is only counted.
    fn push(&mut self, key: Str, value: Value) {
        self.sent += 1;
        if self.sent > self.limits.max_attributes {
            return;
        }
        let max = self.limits.max_value_bytes;
        // Most values are within the limit; checking them by reference
        // keeps them from being moved through `limit_value` and back.
        let value = if may_exceed(&value, max) {
            let (value, original_len) = limit_value(value, max);
            if let Some(original_len) = original_len {
                let record = Str::from(format!("{TRUNCATED_PREFIX}{key}"));
                self.truncations
                    .push((record, Value::Int(original_len as i64)));
            }
            value
        } else {
            value
        };
        self.attributes.push((key, value));
    }

    /// Counts the next pair sent without keeping it. The caller has checked
    /// that its value is within the size limit. Past the count limit it is
    /// dropped, as [`Limited::push`] would drop it.
    fn skip(&mut self) {
        self.sent += 1;
        if self.sent <= self.limits.max_attributes {
            self.skipped += 1;
        }
    }

    /// Counts `count` pairs sent past the count limit without checking them.
    fn drop_unchecked(&mut self, count: usize) {
        self.sent += count;
    }

    /// Finishes the list, whose sender had dropped `sender_dropped` pairs
    /// before sending: adds the truncation records and the dropped count.
    fn finish(mut self, sender_dropped: u32, stats: &mut LimitStats) -> Attributes {
        let dropped = self.sent - self.attributes.len() - self.skipped;
        stats.dropped += dropped as u64;
        stats.truncated += self.truncations.len() as u64;
        self.attributes.append(&mut self.truncations);
        let dropped_total = dropped as i64 + i64::from(sender_dropped);
        if dropped_total > 0 {
            self.attributes.push((
                Str::from_static(DROPPED_ATTRIBUTES_COUNT),
                Value::Int(dropped_total),
            ));
        }
        Attributes(self.attributes)
    }
}

/// Checks whether [`limit_value`] may change `value`: `false` means that
/// it returns the value unchanged.
fn may_exceed(value: &Value, max: usize) -> bool {
    match value {
        Value::Str(text) => text.len() > max,
        Value::Bytes(bytes) => bytes.len() > max,
        Value::Array(_) | Value::Map(_) => size_bound(value) > max,
        Value::Bool(_) | Value::Int(_) | Value::Double(_) | Value::Empty => false,
    }
}

/// Applies the size limit to one value; returns the original length in
/// bytes when the value was truncated.
fn limit_value(value: Value, max: usize) -> (Value, Option<usize>) {
    match value {
        Value::Str(text) if text.len() > max => {
            let original_len = text.len();
            (Value::Str(truncate_text(&text, max)), Some(original_len))
        }
        Value::Bytes(mut bytes) if bytes.len() > max => {
            let original_len = bytes.len();
            bytes.truncate(max);
            (Value::Bytes(bytes), Some(original_len))
        }
        Value::Array(_) | Value::Map(_) if size_bound(&value) > max => {
            let text = value.to_text();
            if text.len() <= max {
                return (value, None);
            }
            let original_len = text.len();
            (Value::Str(truncate_text(&text, max)), Some(original_len))
        }
        other => (other, None),
    }
}

/// An upper bound of the length of a value's stored text, cheap enough to
/// compute for every array: JSON escapes a byte into at most 6.
fn size_bound(value: &Value) -> usize {
    const SCALAR: usize = 32;
    const ESCAPE: usize = 6;
    match value {
        Value::Str(text) => ESCAPE * text.len() + 2,
        Value::Bytes(bytes) => 2 * bytes.len() + 2,
        Value::Array(items) => items.iter().map(|item| size_bound(item) + 1).sum::<usize>() + 2,
        Value::Map(entries) => {
            let entries: usize = entries
                .iter()
                .map(|(key, item)| ESCAPE * key.len() + size_bound(item) + 4)
                .sum();
            entries + 2
        }
        Value::Bool(_) | Value::Int(_) | Value::Double(_) | Value::Empty => SCALAR,
    }
}

/// Cuts `text` to at most `max` bytes, including [`TRUNCATION_MARKER`], at a
/// character boundary.
fn truncate_text(text: &str, max: usize) -> Str {
    let mut end = max.saturating_sub(TRUNCATION_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut truncated = String::with_capacity(end + TRUNCATION_MARKER.len());
    truncated.push_str(&text[..end]);
    truncated.push_str(TRUNCATION_MARKER);
    truncated.into()
}

fn convert_value(value: Option<&otlp::AnyValue>) -> Option<Value> {
    use otlp::any_value::Value as Raw;
    let Some(raw) = value.and_then(|value| value.value.as_ref()) else {
        return Some(Value::Empty);
    };
    Some(match raw {
        Raw::StringValue(bytes) => Value::Str(text(bytes)?),
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
                entries.push((text(&pair.key)?, convert_value(pair.value.as_ref())?));
            }
            Value::Map(entries)
        }
    })
}

/// Returns the bytes as text that shares their buffer, or `None` when they
/// are not valid UTF-8.
fn text(bytes: &Bytes) -> Option<Str> {
    Str::try_from(bytes.clone()).ok()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lossy_pairs(pairs: &[otlp::KeyValue]) -> Vec<(Str, Str)> {
    pairs
        .iter()
        .map(|pair| {
            let value = convert_lossy_value(pair.value.as_ref());
            (Str::from(lossy(&pair.key)), Str::from(value))
        })
        .collect()
}

fn convert_lossy_value(value: Option<&otlp::AnyValue>) -> String {
    match convert_value(value) {
        Some(value) => value.to_text().to_string(),
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
    raw: Bytes,
) -> RejectedSpan {
    let resource_attributes = lossy_pairs(&resource.attributes);
    let service_name = resource_attributes
        .iter()
        .find(|(key, _)| key == "service.name")
        .map(|(_, value)| value.to_string())
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
        raw_span: raw,
        location: None,
    }
}

/// Rebuilds the quarantine row of a span that failed the checks from the
/// span as received, for replaying the spool.
pub fn rejected_from_bytes(
    raw: &[u8],
    reason: Reason,
    detail: String,
    context: &RequestContext,
) -> Option<RejectedSpan> {
    let resource_spans = otlp::ResourceSpans::decode(raw).ok()?;
    let resource = resource_spans.resource.clone().unwrap_or_default();
    let scope_spans = resource_spans.scope_spans.first()?;
    let scope = scope_spans.scope.clone().unwrap_or_default();
    let span = scope_spans.spans.first()?;
    let raw = Bytes::copy_from_slice(raw);
    Some(rejected_from_raw(
        span, &resource, &scope, reason, detail, context, raw,
    ))
}

/// Decodes a `RawSpan` column value back into a typed span, for re-admitting
/// a quarantined span whose workflow root arrived later.
pub fn span_from_raw(raw: Bytes, context: &RequestContext) -> Option<Span> {
    SpoolDecoder::default().decode(raw, context, None)
}

/// Decodes spans read back from the spool, like [`span_from_raw`]. Spans
/// read one after another mostly share their resource and scope (the spans
/// of one trace from one service), so the decoder keeps the last resource
/// and scope it converted and reuses them while their encoding is the same.
/// The span itself is read straight from its encoding (the private `wire`
/// module) unless it has a form that only prost reads. The attribute
/// limits of every `context` must be the same.
#[derive(Default)]
pub struct SpoolDecoder {
    resource: Option<(Bytes, Arc<Resource>)>,
    scope: Option<(Bytes, Arc<Scope>)>,
}

impl SpoolDecoder {
    /// Decodes one spool record. A given `content_hash` is the hash
    /// computed on arrival, which is then not computed again.
    pub fn decode(
        &mut self,
        raw: Bytes,
        context: &RequestContext,
        content_hash: Option<ContentHash>,
    ) -> Option<Span> {
        let parts = RecordParts::parse(raw.clone())?;
        let limits = &context.limits;
        let resource = cached(&mut self.resource, parts.resource, |bytes| {
            let resource = otlp::Resource::decode(bytes).ok()?;
            convert_resource(&resource, limits, &mut LimitStats::default()).ok()
        })?;
        let scope = cached(&mut self.scope, parts.scope, |bytes| {
            convert_scope(&otlp::InstrumentationScope::decode(bytes).ok()?).ok()
        })?;
        let direct = wire::decode_span(
            &parts.span,
            resource.clone(),
            scope.clone(),
            context,
            raw.clone(),
            content_hash,
            None,
            &mut LimitStats::default(),
        );
        direct.or_else(|| prost_span(parts.span, resource, scope, context, raw, content_hash))
    }
}

/// Decodes a span encoding with prost and converts it, for what
/// [`wire::decode_span`] leaves undecided.
fn prost_span(
    span: Bytes,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    context: &RequestContext,
    raw: Bytes,
    content_hash: Option<ContentHash>,
) -> Option<Span> {
    let span = otlp::Span::decode(span).ok()?;
    let mut stats = LimitStats::default();
    convert_span(
        &span,
        resource,
        scope,
        context,
        raw,
        content_hash,
        &mut stats,
    )
    .ok()
}

/// Returns the converted value for `bytes`: the one in `slot` when it was
/// made from the same bytes, otherwise a new one from `convert`, kept in
/// `slot`.
fn cached<T>(
    slot: &mut Option<(Bytes, Arc<T>)>,
    bytes: Bytes,
    convert: impl FnOnce(Bytes) -> Option<Arc<T>>,
) -> Option<Arc<T>> {
    if let Some((key, value)) = slot
        && *key == bytes
    {
        return Some(value.clone());
    }
    let value = convert(bytes.clone())?;
    *slot = Some((bytes, value.clone()));
    Some(value)
}

/// The encodings of the resource, scope and span of a spool record: a
/// `ResourceSpans` with one `ScopeSpans` with one span. A missing
/// resource or scope is empty, as prost decodes it.
struct RecordParts {
    resource: Bytes,
    scope: Bytes,
    span: Bytes,
}

impl RecordParts {
    fn parse(raw: Bytes) -> Option<RecordParts> {
        let mut resource = Bytes::new();
        let mut scope_spans = None;
        for_each_field(raw, |tag, value| match tag {
            1 => resource = value,
            2 => {
                scope_spans.get_or_insert(value);
            }
            _ => {}
        })?;
        let mut scope = Bytes::new();
        let mut span = None;
        for_each_field(scope_spans?, |tag, value| match tag {
            1 => scope = value,
            2 => {
                span.get_or_insert(value);
            }
            _ => {}
        })?;
        Some(RecordParts {
            resource,
            scope,
            span: span?,
        })
    }
}

/// Calls `field` with the number and contents of each length-delimited
/// field of the message `bytes`, and skips fields of other wire types.
/// Returns `None` when the message does not decode.
fn for_each_field(mut bytes: Bytes, mut field: impl FnMut(u32, Bytes)) -> Option<()> {
    use prost::bytes::Buf;
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while bytes.has_remaining() {
        let (tag, wire_type) = decode_key(&mut bytes).ok()?;
        if wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
            if len > bytes.remaining() {
                return None;
            }
            field(tag, bytes.split_to(len));
        } else {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).ok()?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};

    /// Bytes that are not valid UTF-8: a lone continuation byte.
    const INVALID: &[u8] = &[b'a', 0x80, b'b'];

    const START: u64 = 1_700_000_000_000_000_000;

    fn context() -> RequestContext {
        RequestContext {
            received_at_unix_nano: 42,
            sender: Arc::from("token-a"),
            limits: AttributeLimits::default(),
        }
    }

    fn span_bytes(n: u8) -> Vec<u8> {
        vec![0, 0, 0, 0, 0, 0, 0, n]
    }

    fn id(n: u8) -> SpanId {
        SpanId([0, 0, 0, 0, 0, 0, 0, n])
    }

    fn valid_span(n: u8) -> otlp::Span {
        otlp::Span {
            trace_id: vec![7; 16],
            span_id: span_bytes(n),
            name: b"chat gpt-4o".to_vec().into(),
            kind: 3,
            start_time_unix_nano: START,
            end_time_unix_nano: START + 1_000,
            attributes: vec![KeyValue::string("gen_ai.operation.name", "chat")],
            ..Default::default()
        }
    }

    fn service(name: &str) -> otlp::Resource {
        otlp::Resource {
            attributes: vec![KeyValue::string("service.name", name)],
            dropped_attributes_count: 0,
        }
    }

    fn scope(name: &[u8]) -> otlp::InstrumentationScope {
        otlp::InstrumentationScope {
            name: name.to_vec().into(),
            version: b"1.0".to_vec().into(),
            ..Default::default()
        }
    }

    fn resource_spans(
        resource: otlp::Resource,
        scope: otlp::InstrumentationScope,
        spans: Vec<otlp::Span>,
    ) -> otlp::ResourceSpans {
        otlp::ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(scope),
                spans,
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }
    }

    fn request(groups: Vec<otlp::ResourceSpans>) -> otlp::ExportTraceServiceRequest {
        otlp::ExportTraceServiceRequest {
            resource_spans: groups,
        }
    }

    fn any(value: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn raw_string(bytes: &[u8]) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(bytes.to_vec().into())),
        }
    }

    fn pair(key: &[u8], value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.to_vec().into(),
            value,
        }
    }

    fn event(name: &[u8], attributes: Vec<KeyValue>) -> otlp::Event {
        otlp::Event {
            time_unix_nano: START + 10,
            name: name.to_vec().into(),
            attributes,
            dropped_attributes_count: 0,
        }
    }

    fn link_with(attributes: Vec<KeyValue>, trace_state: &[u8]) -> otlp::Link {
        otlp::Link {
            trace_id: vec![9; 16],
            span_id: span_bytes(9),
            trace_state: trace_state.to_vec().into(),
            attributes,
            ..Default::default()
        }
    }

    fn span_ids(spans: &[Span]) -> Vec<SpanId> {
        spans.iter().map(|span| span.span_id).collect()
    }

    type Mutation = fn(&mut otlp::Span);

    fn span_cases() -> Vec<(&'static str, Mutation, Option<Reason>)> {
        vec![
            ("valid span", |_| {}, None),
            (
                "trace id of 15 bytes",
                |span| span.trace_id = vec![7; 15],
                Some(Reason::InvalidTraceId),
            ),
            (
                "trace id of 17 bytes",
                |span| span.trace_id = vec![7; 17],
                Some(Reason::InvalidTraceId),
            ),
            (
                "trace id all zero",
                |span| span.trace_id = vec![0; 16],
                Some(Reason::InvalidTraceId),
            ),
            (
                "trace id empty",
                |span| span.trace_id = Vec::new(),
                Some(Reason::InvalidTraceId),
            ),
            (
                "span id of 7 bytes",
                |span| span.span_id = vec![2; 7],
                Some(Reason::InvalidSpanId),
            ),
            (
                "span id of 9 bytes",
                |span| span.span_id = vec![2; 9],
                Some(Reason::InvalidSpanId),
            ),
            (
                "span id all zero",
                |span| span.span_id = vec![0; 8],
                Some(Reason::InvalidSpanId),
            ),
            (
                "parent all zero",
                |span| span.parent_span_id = vec![0; 8],
                None,
            ),
            (
                "parent of 7 bytes",
                |span| span.parent_span_id = vec![3; 7],
                Some(Reason::InvalidSpanId),
            ),
            (
                "parent of 16 bytes",
                |span| span.parent_span_id = vec![3; 16],
                Some(Reason::InvalidSpanId),
            ),
            (
                "start time zero",
                |span| span.start_time_unix_nano = 0,
                Some(Reason::InvalidTimestamps),
            ),
            (
                "end before start",
                |span| span.end_time_unix_nano = span.start_time_unix_nano - 1,
                Some(Reason::InvalidTimestamps),
            ),
            (
                "end equal to start",
                |span| span.end_time_unix_nano = span.start_time_unix_nano,
                None,
            ),
            (
                "span name",
                |span| span.name = INVALID.to_vec().into(),
                Some(Reason::InvalidUtf8),
            ),
            (
                "trace state",
                |span| span.trace_state = INVALID.to_vec().into(),
                Some(Reason::InvalidUtf8),
            ),
            (
                "attribute key",
                |span| {
                    span.attributes
                        .push(pair(INVALID, any(any_value::Value::BoolValue(true))))
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "attribute value",
                |span| {
                    span.attributes
                        .push(pair(b"note", Some(raw_string(INVALID))))
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "nested array value",
                |span| {
                    let array = ArrayValue {
                        values: vec![raw_string(b"ok"), raw_string(INVALID)],
                    };
                    span.attributes
                        .push(pair(b"list", any(any_value::Value::ArrayValue(array))));
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "nested key-value list key",
                |span| {
                    let list = KeyValueList {
                        values: vec![pair(INVALID, Some(raw_string(b"ok")))],
                    };
                    span.attributes
                        .push(pair(b"map", any(any_value::Value::KvlistValue(list))));
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "event name",
                |span| span.events.push(event(INVALID, Vec::new())),
                Some(Reason::InvalidUtf8),
            ),
            (
                "event attribute",
                |span| {
                    span.events.push(event(
                        b"retry",
                        vec![pair(b"why", Some(raw_string(INVALID)))],
                    ))
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "link attribute",
                |span| {
                    span.links.push(link_with(
                        vec![pair(b"why", Some(raw_string(INVALID)))],
                        b"",
                    ))
                },
                Some(Reason::InvalidUtf8),
            ),
            (
                "link trace state",
                |span| span.links.push(link_with(Vec::new(), INVALID)),
                Some(Reason::InvalidUtf8),
            ),
            (
                "status message",
                |span| {
                    span.status = Some(otlp::Status {
                        message: INVALID.to_vec().into(),
                        code: 2,
                    })
                },
                Some(Reason::InvalidUtf8),
            ),
        ]
    }

    #[test]
    fn convert_per_span_checks() {
        for (name, mutate, expected) in span_cases() {
            let mut checked = valid_span(2);
            mutate(&mut checked);
            let spans = vec![valid_span(1), checked.clone(), valid_span(3)];
            let request = request(vec![resource_spans(service("agent"), scope(b"sdk"), spans)]);

            let converted = convert_request(request, &context());

            let reasons: Vec<Option<Reason>> =
                converted.rejected.iter().map(|row| row.reason).collect();
            match expected {
                None => {
                    assert_eq!(converted.spans.len(), 3, "case {name}: every span converts");
                    assert!(
                        reasons.is_empty(),
                        "case {name}: nothing rejected, got {reasons:?}"
                    );
                }
                Some(reason) => {
                    let neighbours = vec![id(1), id(3)];
                    assert_eq!(
                        span_ids(&converted.spans),
                        neighbours,
                        "case {name}: valid neighbours convert"
                    );
                    assert_eq!(reasons, vec![Some(reason)], "case {name}: reason");
                    let row = &converted.rejected[0];
                    assert_eq!(
                        row.span_id,
                        hex::encode(&checked.span_id),
                        "case {name}: rejected span id"
                    );
                    assert_eq!(row.sender, "token-a", "case {name}: sender");
                    assert!(!row.detail.is_empty(), "case {name}: detail");
                    assert!(!row.raw_span.is_empty(), "case {name}: raw span kept");
                }
            }
        }
    }

    #[test]
    fn convert_parent_id_forms() {
        let cases: Vec<(&str, Vec<u8>, Option<SpanId>)> = vec![
            ("empty", Vec::new(), None),
            ("all zero", vec![0; 8], None),
            ("four zero bytes", vec![0; 4], None),
            ("valid", span_bytes(5), Some(id(5))),
        ];
        for (name, parent, expected) in cases {
            let mut child = valid_span(2);
            child.parent_span_id = parent;
            let request = request(vec![resource_spans(
                service("agent"),
                scope(b"sdk"),
                vec![child],
            )]);

            let converted = convert_request(request, &context());

            assert_eq!(converted.spans.len(), 1, "case {name}: span converts");
            assert_eq!(
                converted.spans[0].parent_span_id, expected,
                "case {name}: parent"
            );
        }
    }

    #[test]
    fn convert_rejects_invalid_resource() {
        let bad_resource = otlp::Resource {
            attributes: vec![
                KeyValue::string("service.name", "broken"),
                pair(b"host.name", Some(raw_string(INVALID))),
            ],
            dropped_attributes_count: 0,
        };
        let request = request(vec![
            resource_spans(
                bad_resource,
                scope(b"sdk"),
                vec![valid_span(1), valid_span(2)],
            ),
            resource_spans(service("agent"), scope(b"sdk"), vec![valid_span(3)]),
        ]);

        let converted = convert_request(request, &context());

        let rejected: Vec<&str> = converted
            .rejected
            .iter()
            .map(|row| row.span_id.as_str())
            .collect();
        assert_eq!(
            rejected,
            vec!["0000000000000001", "0000000000000002"],
            "every span of the resource"
        );
        for row in &converted.rejected {
            assert_eq!(
                row.reason,
                Some(Reason::InvalidUtf8),
                "reason of span {}",
                row.span_id
            );
            assert_eq!(
                row.service_name, "broken",
                "service name of span {}",
                row.span_id
            );
        }
        assert_eq!(
            span_ids(&converted.spans).len(),
            1,
            "the other resource's span converts"
        );
    }

    #[test]
    fn convert_rejects_invalid_scope() {
        let request = request(vec![otlp::ResourceSpans {
            resource: Some(service("agent")),
            scope_spans: vec![
                otlp::ScopeSpans {
                    scope: Some(scope(INVALID)),
                    spans: vec![valid_span(1)],
                    schema_url: Vec::new(),
                },
                otlp::ScopeSpans {
                    scope: Some(scope(b"sdk")),
                    spans: vec![valid_span(2)],
                    schema_url: Vec::new(),
                },
            ],
            schema_url: Vec::new(),
        }]);

        let converted = convert_request(request, &context());

        let reasons: Vec<Option<Reason>> =
            converted.rejected.iter().map(|row| row.reason).collect();
        assert_eq!(
            reasons,
            vec![Some(Reason::InvalidUtf8)],
            "span of the invalid scope"
        );
        assert_eq!(converted.spans.len(), 1, "span of the valid scope converts");
    }

    #[test]
    fn convert_keeps_span_fields() {
        let mut full = valid_span(2);
        full.parent_span_id = span_bytes(1);
        full.trace_state = b"vendor=1".to_vec().into();
        full.attributes
            .push(pair(b"retries", any(any_value::Value::IntValue(3))));
        full.events
            .push(event(b"retry", vec![KeyValue::string("why", "timeout")]));
        full.links.push(link_with(Vec::new(), b""));
        full.status = Some(otlp::Status {
            message: b"upstream failed".to_vec().into(),
            code: 2,
        });
        let request = request(vec![resource_spans(
            service("agent"),
            scope(b"sdk"),
            vec![full],
        )]);

        let converted = convert_request(request, &context());

        let span = &converted.spans[0];
        assert_eq!(span.trace_id, TraceId([7; 16]), "trace id");
        assert_eq!(span.parent_span_id, Some(id(1)), "parent");
        assert_eq!(span.trace_state, "vendor=1", "trace state");
        assert_eq!(span.name, "chat gpt-4o", "name");
        assert_eq!(
            span.attributes.get("retries"),
            Some(&Value::Int(3)),
            "int attribute"
        );
        assert_eq!(span.events[0].name, "retry", "event name");
        assert_eq!(
            span.links[0].span_id, "0000000000000009",
            "link span id as hex"
        );
        assert_eq!(span.status_message, "upstream failed", "status message");
        assert_eq!(span.resource.service_name, "agent", "service name");
        assert_eq!(span.scope.name, "sdk", "scope name");
        assert_eq!(span.received_at_unix_nano, 42, "received time");
        assert_eq!(&*span.sender, "token-a", "sender");
    }

    #[test]
    fn convert_content_hash_tracks_content() {
        let mut changed = valid_span(1);
        changed.attributes.push(KeyValue::string("extra", "value"));
        let convert_one = |span: otlp::Span| {
            let request = request(vec![resource_spans(
                service("agent"),
                scope(b"sdk"),
                vec![span],
            )]);
            convert_request(request, &context()).spans.remove(0)
        };

        let first = convert_one(valid_span(1));
        let resent = convert_one(valid_span(1));
        let different = convert_one(changed);

        assert_eq!(
            first.content_hash, resent.content_hash,
            "same span, same hash"
        );
        assert_ne!(
            first.content_hash, different.content_hash,
            "changed attribute, new hash"
        );
    }

    #[test]
    fn span_from_raw_round_trip() {
        let mut child = valid_span(2);
        child.parent_span_id = span_bytes(1);
        child.events.push(event(b"retry", Vec::new()));
        let request = request(vec![resource_spans(
            service("agent"),
            scope(b"sdk"),
            vec![valid_span(1), child],
        )]);
        let converted = convert_request(request, &context());

        for span in &converted.spans {
            let decoded = span_from_raw(span.raw.clone(), &context());

            assert_eq!(decoded.as_ref(), Some(span), "span {}", span.span_id);
        }
    }

    #[test]
    fn decoder_reuses_unchanged_resource_and_scope() {
        let request = request(vec![
            resource_spans(
                service("a"),
                scope(b"sdk"),
                vec![valid_span(1), valid_span(2)],
            ),
            resource_spans(service("b"), scope(b"sdk"), vec![valid_span(3)]),
            resource_spans(service("a"), scope(b"other"), vec![valid_span(4)]),
        ]);
        let converted = convert_request(request, &context());
        let mut decoder = SpoolDecoder::default();
        let decoded: Vec<Span> = converted
            .spans
            .iter()
            .map(|span| decoder.decode(span.raw.clone(), &context(), None).unwrap())
            .collect();

        assert_eq!(decoded, converted.spans);
        assert!(Arc::ptr_eq(&decoded[0].resource, &decoded[1].resource));
        assert!(Arc::ptr_eq(&decoded[0].scope, &decoded[1].scope));
        assert_eq!(&*decoded[2].resource.service_name, "b");
        assert!(Arc::ptr_eq(&decoded[1].scope, &decoded[2].scope));
        assert_eq!(&*decoded[3].resource.service_name, "a");
        assert_eq!(&*decoded[3].scope.name, "other");
    }

    fn single_span() -> Span {
        let request = request(vec![resource_spans(
            service("a"),
            scope(b"sdk"),
            vec![valid_span(1)],
        )]);
        convert_request(request, &context()).spans.remove(0)
    }

    #[test]
    fn decoder_skips_unknown_record_fields() {
        let span = single_span();
        // Field 3 of ResourceSpans is schema_url; field 9 is unknown.
        let mut extended = span.raw.to_vec();
        extended.extend_from_slice(&[0x1a, 3, b'u', b'r', b'l', 0x48, 7]);
        let decoded = SpoolDecoder::default().decode(Bytes::from(extended), &context(), None);
        assert_eq!(decoded.map(|decoded| decoded.span_id), Some(span.span_id));
    }

    #[test]
    fn decoder_rejects_cut_records() {
        let span = single_span();
        for len in 0..span.raw.len() {
            let cut = span.raw.slice(..len);
            assert_eq!(
                SpoolDecoder::default().decode(cut, &context(), None),
                None,
                "record cut at {len}"
            );
        }
    }

    fn limited_context(max_attributes: usize, max_value_bytes: usize) -> RequestContext {
        RequestContext {
            limits: AttributeLimits {
                max_attributes,
                max_value_bytes,
            },
            ..context()
        }
    }

    fn convert_one(span: otlp::Span, context: &RequestContext) -> (Span, Converted) {
        let request = request(vec![resource_spans(
            service("agent"),
            scope(b"sdk"),
            vec![span],
        )]);
        let mut converted = convert_request(request, context);
        let span = converted.spans.remove(0);
        (span, converted)
    }

    #[test]
    fn limits_drop_attributes_past_maximum() {
        let mut many = valid_span(1);
        many.attributes = (0..6)
            .map(|n| KeyValue::string(&format!("key.{n}"), "value"))
            .collect();
        many.dropped_attributes_count = 2;

        let (span, converted) = convert_one(many, &limited_context(4, 1024));

        let keys: Vec<&str> = span.attributes.0.iter().map(|(key, _)| &**key).collect();
        assert_eq!(
            keys,
            vec!["key.0", "key.1", "key.2", "key.3", DROPPED_ATTRIBUTES_COUNT],
            "the first attributes are kept"
        );
        assert_eq!(
            span.attributes.get(DROPPED_ATTRIBUTES_COUNT),
            Some(&Value::Int(4)),
            "dropped here plus dropped by the sender"
        );
        assert_eq!(converted.dropped_attributes, 2, "counted");
    }

    #[test]
    fn limits_truncate_long_values() {
        let long = "é".repeat(100);
        let mut span = valid_span(1);
        span.attributes = vec![
            KeyValue::string("short", "fits"),
            KeyValue::string("prompt", &long),
            pair(b"blob", any(any_value::Value::BytesValue(vec![7; 300]))),
            pair(
                b"list",
                any(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![raw_string(long.as_bytes()); 3],
                })),
            ),
        ];

        let (span, converted) = convert_one(span, &limited_context(16, 64));

        let Some(Value::Str(prompt)) = span.attributes.get("prompt") else {
            panic!("prompt stays a string");
        };
        assert!(
            prompt.len() <= 64,
            "truncated to the maximum: {}",
            prompt.len()
        );
        assert!(prompt.ends_with(TRUNCATION_MARKER), "marked: {prompt}");
        assert_eq!(
            span.attributes.get("short"),
            Some(&Value::Str("fits".into())),
            "short value"
        );
        let cases = [
            ("prompt", 200),
            ("blob", 300),
            ("list", long.len() * 3 + 10),
        ];
        for (key, original) in cases {
            let record = span.attributes.get(&format!("{TRUNCATED_PREFIX}{key}"));
            assert_eq!(
                record,
                Some(&Value::Int(original as i64)),
                "original length of {key}"
            );
        }
        assert_eq!(
            span.attributes.get(&format!("{TRUNCATED_PREFIX}short")),
            None,
            "nothing recorded for a short value"
        );
        assert_eq!(converted.truncated_values, 3, "counted");
    }

    #[test]
    fn limits_apply_to_events_and_resource() {
        let mut span = valid_span(1);
        span.events.push(event(
            b"retry",
            vec![KeyValue::string("a", "1"), KeyValue::string("b", "2")],
        ));
        let resource = otlp::Resource {
            attributes: vec![
                KeyValue::string("service.name", "agent"),
                KeyValue::string("host.name", &"h".repeat(500)),
            ],
            dropped_attributes_count: 0,
        };
        let request = request(vec![resource_spans(resource, scope(b"sdk"), vec![span])]);

        let converted = convert_request(request, &limited_context(1, 100));

        let span = &converted.spans[0];
        assert_eq!(
            span.events[0].attributes.get(DROPPED_ATTRIBUTES_COUNT),
            Some(&Value::Int(1)),
            "event attributes limited"
        );
        assert_eq!(
            span.resource.attributes.get(DROPPED_ATTRIBUTES_COUNT),
            Some(&Value::Int(1)),
            "resource attributes limited"
        );
    }

    #[test]
    fn limits_leave_raw_span_whole() {
        let mut span = valid_span(1);
        span.attributes
            .push(KeyValue::string("prompt", &"x".repeat(500)));
        let original = span.clone();

        let (converted, _) = convert_one(span, &limited_context(16, 64));

        let raw = otlp::ResourceSpans::decode(converted.raw.clone()).unwrap();
        assert_eq!(
            raw.scope_spans[0].spans[0], original,
            "the span as received"
        );
    }

    fn arbitrary_span() -> impl proptest::strategy::Strategy<Value = otlp::Span> {
        use proptest::prelude::*;
        let id = |len: usize| prop::collection::vec(any::<u8>(), 0..=len);
        let text = prop::collection::vec(any::<u8>(), 0..12);
        let attribute = (text.clone(), text.clone())
            .prop_map(|(key, value)| pair(&key, Some(raw_string(&value))));
        (
            id(17),
            id(9),
            id(9),
            text,
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(attribute, 0..6),
        )
            .prop_map(
                |(trace_id, span_id, parent_span_id, name, start, end, attributes)| otlp::Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name: name.into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    ..Default::default()
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(request) = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()) {
                let _ = convert_request(request, &limited_context(3, 64));
            }
            let _ = span_from_raw(Bytes::from(bytes), &context());
        }

        #[test]
        fn every_span_converted_or_rejected(
            spans in proptest::collection::vec(arbitrary_span(), 0..20),
            max_attributes in 1usize..4,
        ) {
            let count = spans.len();
            let request = request(vec![resource_spans(service("agent"), scope(b"sdk"), spans)]);

            let converted = convert_request(request, &limited_context(max_attributes, 64));

            proptest::prop_assert_eq!(converted.spans.len() + converted.rejected.len(), count);
            for span in &converted.spans {
                proptest::prop_assert!(span.start_unix_nano > 0 && span.end_unix_nano >= span.start_unix_nano);
                let again = span_from_raw(span.raw.clone(), &limited_context(max_attributes, 64));
                proptest::prop_assert_eq!(again.as_ref(), Some(span), "the spooled span reads back the same");
            }
            for rejected in &converted.rejected {
                proptest::prop_assert!(rejected.reason.is_some());
                proptest::prop_assert_eq!(
                    span_from_raw(rejected.raw_span.clone(), &context()),
                    None
                );
            }
        }
    }

    #[test]
    fn span_from_raw_rejects_bad_input() {
        let mut invalid = valid_span(1);
        invalid.name = INVALID.to_vec().into();
        let request = request(vec![resource_spans(
            service("agent"),
            scope(b"sdk"),
            vec![invalid],
        )]);
        let rejected = convert_request(request, &context()).rejected.remove(0);

        let from_garbage = span_from_raw(Bytes::from_static(&[0xff, 0xff, 0xff]), &context());
        let from_rejected = span_from_raw(rejected.raw_span.clone(), &context());

        assert_eq!(from_garbage, None, "bytes that are not protobuf");
        assert_eq!(from_rejected, None, "a span that fails the checks again");
    }
}

#[cfg(test)]
mod raw_copy_tests {
    use super::*;

    #[test]
    fn raw_copy_matches_prost_encoding() {
        let resource = otlp::Resource {
            attributes: vec![otlp::KeyValue::string("service.name", "svc")],
            dropped_attributes_count: 0,
        };
        let scope = otlp::InstrumentationScope {
            name: b"scope".to_vec().into(),
            ..Default::default()
        };
        let span = otlp::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: b"chat".to_vec().into(),
            start_time_unix_nano: 5,
            end_time_unix_nano: 6,
            attributes: vec![otlp::KeyValue::string("k", &"v".repeat(300))],
            ..Default::default()
        };
        let expected = otlp::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(scope.clone()),
                spans: vec![span.clone()],
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }
        .encode_to_vec();
        let raw = raw_copy(&resource.encode_to_vec(), &scope.encode_to_vec(), &span);
        assert_eq!(&raw[..], expected.as_slice());
    }
}
