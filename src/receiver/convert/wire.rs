//! Decodes the protobuf encoding of a span straight into a [`Span`],
//! without prost's message types in between: spans read back from the
//! spool, and spans of a request as received ([`super::encoded`]), whose
//! envelope [`split_request`] splits.
//!
//! The prost path builds an `otlp::Span`, with a buffer per field and a
//! vector grown one attribute at a time, which [`super::convert_span`]
//! then turns into a [`Span`]. Here the fields are read from the record's
//! bytes and each text becomes a [`Str`] that shares them. The result is
//! the same as the prost path's: the same checks, limits and defaults.
//!
//! Only the encodings that prost writes are read here. Anything else (a
//! singular field that appears twice, a known field with another wire
//! type, values nested deeper than [`MAX_DEPTH`]) and a span that fails a
//! check make [`decode_span`] return `None`. Attributes past the count
//! limit are checked here too, although the prost path leaves them
//! unchecked, so such a span also goes to the prost path. The caller then
//! takes the prost path, which decides those cases, so a span decoded here
//! is always the span the prost path returns.

use bytes::Bytes;
use prost::encoding::decode_varint;

use super::{
    ArrivalKeys, AttributeLimits, LimitStats, Limited, RequestContext, check_parent_id,
    check_span_id, check_times, check_trace_id,
};
use crate::span::{ContentHash, Event, Link, Resource, Scope, Span, Str, Value, lower_hex};
use std::sync::Arc;

/// A field's value as it appears on the wire.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// The encoding is left to the prost path: it is invalid, fails a check,
/// or has a form this decoder does not read.
struct Stop;

type Walk = Result<(), Stop>;

/// Calls `field` with the number and value of each field of the message
/// `bytes`. Group wire types, which OTLP does not use, stop the walk.
fn walk<'a>(mut bytes: &'a [u8], mut field: impl FnMut(u32, Field<'a>) -> Walk) -> Walk {
    while !bytes.is_empty() {
        let key = decode_varint(&mut bytes).map_err(|_| Stop)?;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return Err(Stop);
        }
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Field::Varint(decode_varint(&mut bytes).map_err(|_| Stop)?),
            1 => Field::Fixed64(u64::from_le_bytes(take::<8>(&mut bytes)?)),
            2 => {
                let len = decode_varint(&mut bytes).map_err(|_| Stop)?;
                let len = usize::try_from(len).map_err(|_| Stop)?;
                if len > bytes.len() {
                    return Err(Stop);
                }
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Field::Bytes(value)
            }
            5 => {
                take::<4>(&mut bytes)?;
                Field::Fixed32
            }
            _ => return Err(Stop),
        };
        field(number, value)?;
    }
    Ok(())
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], Stop> {
    if bytes.len() < N {
        return Err(Stop);
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    Ok(head.try_into().expect("split_at returns N bytes"))
}

/// Marks field `number` as seen. A second occurrence stops the walk,
/// since prost merges or overwrites it.
fn once(seen: &mut u32, number: u32) -> Walk {
    let bit = 1u32 << number;
    if *seen & bit != 0 {
        return Err(Stop);
    }
    *seen |= bit;
    Ok(())
}

/// Decodes the span encoding `span`, a view of a spool record, with the
/// resource and scope already converted. `raw` is the whole record and
/// `content_hash` its hash when known. What the attribute limits changed is
/// added to `stats`. Returns `None` when the prost path has to decide.
///
/// With `keys`, a span attribute whose name `keys` does not keep is still
/// checked. It is left out when its value is a scalar within the size
/// limit, and the span is then marked [`Span::arrival_only`].
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_span(
    span: &Bytes,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    context: &RequestContext,
    raw: Bytes,
    content_hash: Option<ContentHash>,
    keys: Option<&ArrivalKeys>,
    stats: &mut LimitStats,
) -> Option<Span> {
    let mut parts = SpanParts::default();
    let limits = &context.limits;
    let mut attributes = Limited::new(limits, 32);
    let mut seen = 0u32;
    let walked = walk(span, |number, field| {
        match (number, field) {
            (1..=5 | 15, Field::Bytes(bytes)) => {
                once(&mut seen, number)?;
                match number {
                    1 => parts.trace_id = bytes,
                    2 => parts.span_id = bytes,
                    3 => parts.trace_state = bytes,
                    4 => parts.parent_span_id = bytes,
                    5 => parts.name = bytes,
                    _ => parts.status = bytes,
                }
            }
            (6, Field::Varint(kind)) => {
                once(&mut seen, number)?;
                parts.kind = kind as i32;
            }
            (7 | 8, Field::Fixed64(time)) => {
                once(&mut seen, number)?;
                match number {
                    7 => parts.start = time,
                    _ => parts.end = time,
                }
            }
            (9, Field::Bytes(bytes)) => {
                let (key, value) = key_and_value(bytes)?;
                let left_out = match keys {
                    Some(keys) => left_out(key, value, keys, limits.max_value_bytes)?,
                    None => false,
                };
                if left_out {
                    attributes.skip();
                    parts.arrival_only = true;
                } else {
                    attributes.push(text(span, key)?, any_value(span, value, 0)?);
                }
            }
            (10, Field::Varint(dropped)) => {
                once(&mut seen, number)?;
                parts.dropped_attributes = dropped as u32;
            }
            (11, Field::Bytes(bytes)) => parts.events.push(event(span, bytes, limits, stats)?),
            (13, Field::Bytes(bytes)) => parts.links.push(link(span, bytes, limits, stats)?),
            (12 | 14, Field::Varint(_)) | (16, Field::Fixed32) => {}
            (1..=16, _) => return Err(Stop),
            _ => {}
        }
        Ok(())
    });
    walked.ok()?;
    let attributes = attributes.finish(parts.dropped_attributes, stats);
    parts
        .build(
            span,
            attributes,
            resource,
            scope,
            context,
            raw,
            content_hash,
        )
        .ok()
}

/// The encodings in one `ResourceSpans` of a request: its resource, and the
/// scope and spans of each of its `ScopeSpans`. A missing resource or scope
/// is empty, as prost decodes it.
pub(super) struct Group<'a> {
    pub resource: &'a [u8],
    pub scopes: Vec<(&'a [u8], Vec<&'a [u8]>)>,
}

/// Splits the encoding of an `ExportTraceServiceRequest` into its groups
/// without decoding the messages in them. Returns `None` when prost has to
/// decide: a known field with another wire type, a resource or scope sent
/// twice (prost merges them), a group wire type, or bytes that end early.
pub(super) fn split_request(body: &[u8]) -> Option<Vec<Group<'_>>> {
    let mut groups = Vec::new();
    let walked = walk(body, |number, field| match (number, field) {
        (1, Field::Bytes(bytes)) => {
            groups.push(group(bytes)?);
            Ok(())
        }
        (1, _) => Err(Stop),
        _ => Ok(()),
    });
    walked.ok()?;
    Some(groups)
}

/// Splits one `ResourceSpans`.
fn group(bytes: &[u8]) -> Result<Group<'_>, Stop> {
    let (resource, scope_spans) = head_and_items(bytes)?;
    let scopes = scope_spans
        .into_iter()
        .map(head_and_items)
        .collect::<Result<_, Stop>>()?;
    Ok(Group { resource, scopes })
}

/// Splits a `ResourceSpans` or a `ScopeSpans`, which share their layout:
/// a singular message in field 1 (the resource or scope), a repeated one
/// in field 2 (the `ScopeSpans` or spans) and the schema URL in field 3.
fn head_and_items(bytes: &[u8]) -> Result<(&[u8], Vec<&[u8]>), Stop> {
    let mut head: &[u8] = &[];
    let mut items = Vec::new();
    let mut seen = 0u32;
    walk(bytes, |number, field| match (number, field) {
        (1, Field::Bytes(value)) => {
            once(&mut seen, number)?;
            head = value;
            Ok(())
        }
        (2, Field::Bytes(value)) => {
            items.push(value);
            Ok(())
        }
        (3, Field::Bytes(_)) => Ok(()),
        (1..=3, _) => Err(Stop),
        _ => Ok(()),
    })?;
    Ok((head, items))
}

/// The fields of a span as read, before their checks.
#[derive(Default)]
struct SpanParts<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a [u8],
    parent_span_id: &'a [u8],
    name: &'a [u8],
    kind: i32,
    start: u64,
    end: u64,
    dropped_attributes: u32,
    events: Vec<Event>,
    links: Vec<Link>,
    status: &'a [u8],
    arrival_only: bool,
}

impl SpanParts<'_> {
    /// Runs the checks of [`super::convert_span`] and builds the span.
    #[allow(clippy::too_many_arguments)]
    fn build(
        self,
        base: &Bytes,
        attributes: crate::span::Attributes,
        resource: Arc<Resource>,
        scope: Arc<Scope>,
        context: &RequestContext,
        raw: Bytes,
        content_hash: Option<ContentHash>,
    ) -> Result<Span, Stop> {
        let trace_id = check_trace_id(self.trace_id).map_err(|_| Stop)?;
        let span_id = check_span_id(self.span_id, "span id").map_err(|_| Stop)?;
        let parent_span_id = check_parent_id(self.parent_span_id).map_err(|_| Stop)?;
        check_times(self.start, self.end).map_err(|_| Stop)?;
        let (status_code, status_message) = status(base, self.status)?;
        let content_hash = content_hash.unwrap_or_else(|| ContentHash::of(&raw));
        Ok(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state: text(base, self.trace_state)?,
            name: text(base, self.name)?,
            kind: self.kind,
            start_unix_nano: self.start,
            end_unix_nano: self.end,
            attributes,
            events: self.events,
            links: self.links,
            status_code,
            status_message,
            resource,
            scope,
            received_at_unix_nano: context.received_at_unix_nano,
            sender: context.sender.clone(),
            content_hash,
            raw,
            spool: None,
            already_stored: false,
            arrival_only: self.arrival_only,
        })
    }
}

/// Returns `bytes`, a view of `base`, as text sharing `base`'s buffer.
fn text(base: &Bytes, bytes: &[u8]) -> Result<Str, Stop> {
    if bytes.is_empty() {
        return Ok(Str::default());
    }
    Str::try_from(base.slice_ref(bytes)).map_err(|_| Stop)
}

/// Deepest nesting of arrays and key-value lists read here. Deeper values
/// stop the read and go to the prost path, which has its own recursion
/// limit.
const MAX_DEPTH: u32 = 16;

/// Reads a `KeyValue` at nesting `depth`.
fn pair(base: &Bytes, bytes: &[u8], depth: u32) -> Result<(Str, Value), Stop> {
    let (key, value) = key_and_value(bytes)?;
    Ok((text(base, key)?, any_value(base, value, depth)?))
}

/// Splits the `KeyValue` in `bytes` into the encodings of its key and its
/// value, empty when absent.
fn key_and_value(bytes: &[u8]) -> Result<(&[u8], &[u8]), Stop> {
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut seen = 0u32;
    walk(bytes, |number, field| match (number, field) {
        (1, Field::Bytes(bytes)) => {
            once(&mut seen, number)?;
            key = bytes;
            Ok(())
        }
        (2, Field::Bytes(bytes)) => {
            once(&mut seen, number)?;
            value = bytes;
            Ok(())
        }
        (1 | 2, _) => Err(Stop),
        _ => Ok(()),
    })?;
    Ok((key, value))
}

/// Checks the key and value encodings of a `KeyValue` as [`pair`] does and
/// returns whether the pair can be left out: its name is not one `keys`
/// keeps, and its value is a string, a number, a boolean or empty, within
/// `max_value_bytes`. Other values are read in full, under the attribute
/// limits.
fn left_out(
    key: &[u8],
    value: &[u8],
    keys: &ArrivalKeys,
    max_value_bytes: usize,
) -> Result<bool, Stop> {
    if keys.keeps(key) {
        return Ok(false);
    }
    std::str::from_utf8(key).map_err(|_| Stop)?;
    let mut scalar = true;
    let mut seen = 0u32;
    walk(value, |number, field| {
        if (1..=7).contains(&number) {
            once(&mut seen, 0)?;
        }
        match (number, field) {
            (1, Field::Bytes(text)) => {
                std::str::from_utf8(text).map_err(|_| Stop)?;
                scalar &= text.len() <= max_value_bytes;
            }
            (2 | 3, Field::Varint(_)) | (4, Field::Fixed64(_)) => {}
            (5..=7, Field::Bytes(_)) => scalar = false,
            (1..=7, _) => return Err(Stop),
            _ => {}
        }
        Ok(())
    })?;
    Ok(scalar)
}

/// Reads an `AnyValue` at nesting `depth`.
fn any_value(base: &Bytes, bytes: &[u8], depth: u32) -> Result<Value, Stop> {
    let mut value = Value::Empty;
    let mut seen = 0u32;
    walk(bytes, |number, field| {
        if (1..=7).contains(&number) {
            // At most one of the oneof's fields: prost keeps the last one,
            // and merges a repeated array or list.
            once(&mut seen, 0)?;
        }
        value = match (number, field) {
            (1, Field::Bytes(bytes)) => Value::Str(text(base, bytes)?),
            (2, Field::Varint(flag)) => Value::Bool(flag != 0),
            (3, Field::Varint(number)) => Value::Int(number as i64),
            (4, Field::Fixed64(bits)) => Value::Double(f64::from_bits(bits)),
            (5, Field::Bytes(bytes)) if depth < MAX_DEPTH => {
                Value::Array(items(bytes, |item| any_value(base, item, depth + 1))?)
            }
            (6, Field::Bytes(bytes)) if depth < MAX_DEPTH => {
                Value::Map(items(bytes, |item| pair(base, item, depth + 1))?)
            }
            (7, Field::Bytes(bytes)) => Value::Bytes(bytes.to_vec()),
            (1..=7, _) => return Err(Stop),
            _ => return Ok(()),
        };
        Ok(())
    })?;
    Ok(value)
}

/// Reads the items of an `ArrayValue` or `KeyValueList`, the messages in
/// its repeated field 1, with `read`.
fn items<T>(bytes: &[u8], mut read: impl FnMut(&[u8]) -> Result<T, Stop>) -> Result<Vec<T>, Stop> {
    let mut items = Vec::new();
    walk(bytes, |number, field| match (number, field) {
        (1, Field::Bytes(bytes)) => {
            items.push(read(bytes)?);
            Ok(())
        }
        (1, _) => Err(Stop),
        _ => Ok(()),
    })?;
    Ok(items)
}

/// Reads an `Event`.
fn event(
    base: &Bytes,
    bytes: &[u8],
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Event, Stop> {
    let mut time = 0;
    let mut name: &[u8] = &[];
    let mut dropped = 0;
    let mut attributes = Limited::new(limits, 4);
    let mut seen = 0u32;
    walk(bytes, |number, field| {
        match (number, field) {
            (1, Field::Fixed64(value)) => {
                once(&mut seen, number)?;
                time = value;
            }
            (2, Field::Bytes(value)) => {
                once(&mut seen, number)?;
                name = value;
            }
            (3, Field::Bytes(value)) => {
                let (key, value) = pair(base, value, 0)?;
                attributes.push(key, value);
            }
            (4, Field::Varint(value)) => {
                once(&mut seen, number)?;
                dropped = value as u32;
            }
            (1..=4, _) => return Err(Stop),
            _ => {}
        }
        Ok(())
    })?;
    Ok(Event {
        time_unix_nano: time,
        name: text(base, name)?,
        attributes: attributes.finish(dropped, stats),
    })
}

/// Reads a `Link`.
fn link(
    base: &Bytes,
    bytes: &[u8],
    limits: &AttributeLimits,
    stats: &mut LimitStats,
) -> Result<Link, Stop> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut trace_state: &[u8] = &[];
    let mut dropped = 0;
    let mut attributes = Limited::new(limits, 4);
    let mut seen = 0u32;
    walk(bytes, |number, field| {
        match (number, field) {
            (1..=3, Field::Bytes(value)) => {
                once(&mut seen, number)?;
                match number {
                    1 => trace_id = value,
                    2 => span_id = value,
                    _ => trace_state = value,
                }
            }
            (4, Field::Bytes(value)) => {
                let (key, value) = pair(base, value, 0)?;
                attributes.push(key, value);
            }
            (5, Field::Varint(value)) => {
                once(&mut seen, number)?;
                dropped = value as u32;
            }
            (6, Field::Fixed32) => {}
            (1..=6, _) => return Err(Stop),
            _ => {}
        }
        Ok(())
    })?;
    Ok(Link {
        trace_id: lower_hex(trace_id),
        span_id: lower_hex(span_id),
        trace_state: text(base, trace_state)?,
        attributes: attributes.finish(dropped, stats),
    })
}

/// Reads a `Status`: its code and message.
fn status(base: &Bytes, bytes: &[u8]) -> Result<(i32, Str), Stop> {
    let mut code = 0;
    let mut message: &[u8] = &[];
    let mut seen = 0u32;
    walk(bytes, |number, field| {
        match (number, field) {
            (2, Field::Bytes(value)) => {
                once(&mut seen, number)?;
                message = value;
            }
            (3, Field::Varint(value)) => {
                once(&mut seen, number)?;
                code = value as i32;
            }
            (2 | 3, _) => return Err(Stop),
            _ => {}
        }
        Ok(())
    })?;
    Ok((code, text(base, message)?))
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::{AttributeLimits, RecordParts, prost_span};
    use super::*;
    use crate::otlp::{self, AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};

    pub(in crate::receiver::convert) fn context(
        max_attributes: usize,
        max_value_bytes: usize,
    ) -> RequestContext {
        RequestContext {
            received_at_unix_nano: 42,
            sender: Arc::from("token-a"),
            limits: AttributeLimits {
                max_attributes,
                max_value_bytes,
            },
        }
    }

    /// Builds the spool record of `span`, and returns it with the span's
    /// encoding within it.
    fn record(span: otlp::Span) -> (Bytes, Bytes) {
        let record = otlp::ResourceSpans {
            resource: Some(otlp::Resource::default()),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope::default()),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        };
        let raw = Bytes::from(record.encode_to_vec());
        let parts = RecordParts::parse(raw.clone()).expect("the record splits");
        (raw, parts.span)
    }

    /// Decodes `span` of `raw` both ways.
    fn both(raw: &Bytes, span: &Bytes, context: &RequestContext) -> (Option<Span>, Option<Span>) {
        let resource = Arc::new(Resource::default());
        let scope = Arc::new(Scope::default());
        let direct = decode_span(
            span,
            resource.clone(),
            scope.clone(),
            context,
            raw.clone(),
            None,
            None,
            &mut LimitStats::default(),
        );
        let prost = prost_span(span.clone(), resource, scope, context, raw.clone(), None);
        (direct, prost)
    }

    fn value(value: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn pair(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
        }
    }

    fn strings(texts: &[&str]) -> any_value::Value {
        let values = texts
            .iter()
            .map(|text| AnyValue {
                value: Some(any_value::Value::StringValue(Bytes::copy_from_slice(
                    text.as_bytes(),
                ))),
            })
            .collect();
        any_value::Value::ArrayValue(ArrayValue { values })
    }

    /// Builds a span with every field this decoder reads.
    fn full_span() -> otlp::Span {
        use any_value::Value as V;
        otlp::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            trace_state: Bytes::from_static(b"vendor=1"),
            flags: 1,
            name: Bytes::from_static(b"chat gpt-4o"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![
                pair(
                    "text",
                    value(V::StringValue(Bytes::from_static("ünï".as_bytes()))),
                ),
                pair("flag", value(V::BoolValue(true))),
                pair("count", value(V::IntValue(-7))),
                pair("ratio", value(V::DoubleValue(0.25))),
                pair("blob", value(V::BytesValue(vec![0, 159, 255]))),
                pair("empty", None),
                pair("long", value(V::StringValue(Bytes::from("x".repeat(100))))),
                pair("reasons", value(strings(&["tool_calls", "stop"]))),
                pair(
                    "map",
                    value(V::KvlistValue(KeyValueList {
                        values: vec![pair("inner", value(strings(&["a"]))), pair("none", None)],
                    })),
                ),
            ],
            dropped_attributes_count: 2,
            events: vec![otlp::Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: Bytes::from_static(b"retry"),
                attributes: vec![pair("attempt", value(V::IntValue(2)))],
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 3,
            links: vec![otlp::Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                trace_state: Bytes::from_static(b"k=v"),
                attributes: vec![pair(
                    "why",
                    value(V::StringValue(Bytes::from_static(b"caused"))),
                )],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 1,
            status: Some(otlp::Status {
                message: Bytes::from_static(b"failed"),
                code: 2,
            }),
        }
    }

    #[test]
    fn full_span_decodes_directly() {
        let (raw, span) = record(full_span());
        for context in [context(1024, 4096), context(3, 16)] {
            let (direct, prost) = both(&raw, &span, &context);

            assert!(direct.is_some(), "decoded without prost");
            assert_eq!(direct, prost, "limits {:?}", context.limits);
        }
    }

    #[test]
    fn deep_nesting_left_to_prost() {
        let mut nested = any_value::Value::IntValue(1);
        for _ in 0..=MAX_DEPTH {
            nested = any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(nested),
                }],
            });
        }
        let mut span = full_span();
        span.attributes.push(pair("nested", value(nested)));
        let (raw, span) = record(span);

        let (direct, prost) = both(&raw, &span, &context(1024, 4096));

        assert_eq!(direct, None);
        assert!(prost.is_some(), "prost decodes the nested arrays");
    }

    #[test]
    fn repeated_singular_field_left_to_prost() {
        let (raw, span) = record(full_span());
        // A second `name` field after the span's own: prost keeps the last.
        let mut twice = span.to_vec();
        twice.extend_from_slice(&[5 << 3 | 2, 3, b'a', b'b', b'c']);
        let twice = Bytes::from(twice);

        let (direct, prost) = both(&raw, &twice, &context(1024, 4096));

        assert_eq!(direct, None);
        assert_eq!(prost.map(|span| span.name), Some(Str::from("abc")));
    }

    fn text_bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            4 => "[a-zé ]{0,12}".prop_map(Bytes::from),
            1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from),
        ]
    }

    fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(any::<u8>(), len..=len),
            1 => prop::collection::vec(any::<u8>(), 0..=len + 1),
        ]
    }

    fn any_attribute() -> impl Strategy<Value = KeyValue> {
        use any_value::Value as V;
        let scalar = prop_oneof![
            text_bytes().prop_map(V::StringValue),
            any::<bool>().prop_map(V::BoolValue),
            any::<i64>().prop_map(V::IntValue),
            any::<f64>().prop_map(V::DoubleValue),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(V::BytesValue),
        ];
        let nested = scalar.prop_recursive(3, 12, 3, |inner| {
            let item = prop_oneof![
                4 => inner.prop_map(|value| AnyValue { value: Some(value) }),
                1 => Just(AnyValue { value: None }),
            ];
            prop_oneof![
                prop::collection::vec(item.clone(), 0..3)
                    .prop_map(|values| V::ArrayValue(ArrayValue { values })),
                prop::collection::vec((text_bytes(), prop::option::of(item)), 0..3).prop_map(
                    |pairs| {
                        let values = pairs
                            .into_iter()
                            .map(|(key, value)| KeyValue { key, value })
                            .collect();
                        V::KvlistValue(KeyValueList { values })
                    }
                ),
            ]
        });
        let value = prop_oneof![
            8 => nested.prop_map(|value| Some(AnyValue { value: Some(value) })),
            1 => Just(None),
            1 => Just(Some(AnyValue { value: None })),
        ];
        (text_bytes(), value).prop_map(|(key, value)| KeyValue { key, value })
    }

    pub(in crate::receiver::convert) fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(any_attribute(), 0..6)
    }

    pub(in crate::receiver::convert) fn any_span() -> impl Strategy<Value = otlp::Span> {
        let event = (any::<u64>(), text_bytes(), attributes(), 0u32..3).prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| otlp::Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        );
        let link = (id(16), id(8), text_bytes(), attributes(), 0u32..3).prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count)| otlp::Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags: 0,
            },
        );
        let status = prop::option::of(
            (text_bytes(), -1i32..4).prop_map(|(message, code)| otlp::Status { message, code }),
        );
        let ids = (id(16), id(8), prop_oneof![Just(Vec::new()), id(8)]);
        let texts = (text_bytes(), text_bytes(), -1i32..7);
        let times = (0u64..4_000_000_000_000_000_000, 0u64..10_000_000_000);
        let lists = (
            attributes(),
            0u32..3,
            prop::collection::vec(event, 0..3),
            prop::collection::vec(link, 0..3),
            status,
        );
        (ids, texts, times, lists).prop_map(
            |(
                (trace_id, span_id, parent_span_id),
                (name, trace_state, kind),
                (start, duration),
                (attributes, dropped_attributes_count, events, links, status),
            )| otlp::Span {
                trace_id,
                span_id,
                parent_span_id,
                trace_state,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start.saturating_add(duration),
                attributes,
                dropped_attributes_count,
                events,
                links,
                status,
                ..Default::default()
            },
        )
    }

    proptest! {
        #[test]
        fn direct_matches_prost(
            span in any_span(),
            max_attributes in 1usize..5,
            max_value_bytes in 4usize..24,
        ) {
            // Past the count limit the prost path checks no attribute, so
            // there a span may go to it when this decoder finds one invalid.
            let all_kept = span.attributes.len() <= max_attributes
                && span.events.iter().all(|event| event.attributes.len() <= max_attributes)
                && span.links.iter().all(|link| link.attributes.len() <= max_attributes);
            let (raw, span) = record(span);
            let context = context(max_attributes, max_value_bytes);

            let (direct, prost) = both(&raw, &span, &context);

            if all_kept || direct.is_some() {
                prop_assert_eq!(direct, prost);
            }
        }

        #[test]
        fn direct_never_disagrees_on_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let span = Bytes::from(bytes);
            let raw = span.clone();

            let (direct, prost) = both(&raw, &span, &context(1024, 4096));

            if direct.is_some() {
                prop_assert_eq!(direct, prost);
            }
        }
    }
}
