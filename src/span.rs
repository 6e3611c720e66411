//! Typed spans: what the receiver produces once the OTLP checks have passed.
//!
//! Every later stage works on these types and never re-checks raw bytes.
//! Ids are fixed-size arrays, strings are valid UTF-8, and the resource and
//! scope are shared between the spans of one request.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Immutable UTF-8 text that shares the buffer it was decoded from. A span's
/// texts point into the received request or into the record read back from
/// the spool, so cloning one into a row copies no bytes.
pub use bytestring::ByteString as Str;

/// A 16-byte trace id that is not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id that is not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses 32 hex digits; `None` for any other text or the all-zero id.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// Lower-case hex, as stored in ClickHouse.
    pub fn to_hex(self) -> String {
        lower_hex(&self.0)
    }
}

impl SpanId {
    /// Parses 16 hex digits; `None` for any other text or the all-zero id.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// Lower-case hex, as stored in ClickHouse.
    pub fn to_hex(self) -> String {
        lower_hex(&self.0)
    }
}

/// Lower-case hex of `bytes`, for ids and digests. `hex::encode` goes
/// through a character iterator, which costs more than the rest of building
/// a span row's id columns.
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut text = vec![0u8; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut text).expect("the buffer has room for two digits per byte");
    String::from_utf8(text).expect("hex digits are ASCII")
}

/// A keyed digest of a span's encoding, which distinguishes a re-sent span
/// from a different span reusing its ids.
///
/// It is POLYVAL over the bytes, zero-padded to 16-byte blocks and followed
/// by a block holding their length, under a random key drawn once per
/// process. For two different encodings of at most `n` blocks, the chance
/// that they get the same digest is at most `(n + 1) / 2^128` over the key,
/// whatever the sender chose. That bound holds only while the key and the
/// digests stay inside the process. Digests are compared in memory and are
/// never stored, logged or sent. A new process hashes the spool's spans
/// again under its own key when it replays them.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentHash([u8; 16]);

impl ContentHash {
    /// Hashes `bytes` under the process's key.
    pub fn of(bytes: &[u8]) -> Self {
        use polyval::universal_hash::UniversalHash;
        static KEYED: std::sync::OnceLock<polyval::Polyval> = std::sync::OnceLock::new();
        let mut hasher = KEYED
            .get_or_init(|| {
                // A zero key maps every input to zero. It is drawn with
                // probability 2^-128, so drawing again costs nothing.
                let key = std::iter::repeat_with(rand::random::<[u8; 16]>)
                    .find(|key| *key != [0; 16])
                    .expect("the iterator never ends");
                polyval::Polyval::new(&key.into())
            })
            .clone();
        hasher.update_padded(bytes);
        let bits = (bytes.len() as u128) * 8;
        hasher.update_padded(&bits.to_le_bytes());
        ContentHash(hasher.finalize().into())
    }
}

impl fmt::Debug for ContentHash {
    /// Leaves the digest out: it is meaningful only inside this process.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentHash(..)")
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Str, Value)>),
    Empty,
}

impl Value {
    /// Returns the value's text, or `None` when it is blank.
    pub fn non_blank_text(&self) -> Option<String> {
        self.non_blank_str().map(Cow::into_owned)
    }

    /// Returns the value's text like [`Value::non_blank_text`], borrowing
    /// the text of a string.
    pub fn non_blank_str(&self) -> Option<Cow<'_, str>> {
        let text = match self {
            Value::Str(text) => Cow::Borrowed(&**text),
            other => Cow::Owned(other.to_text().to_string()),
        };
        (!text.trim().is_empty()).then_some(text)
    }

    /// Returns the value's text like [`Value::non_blank_text`], sharing the
    /// buffer of a string.
    pub fn non_blank_shared(&self) -> Option<Str> {
        match self {
            Value::Str(text) => (!text.trim().is_empty()).then(|| text.clone()),
            other => other
                .non_blank_str()
                .map(|text| Str::from(text.into_owned())),
        }
    }

    /// The value as text, the way it is stored in a ClickHouse `Map` column:
    /// scalars in their natural form, arrays and key-value lists as JSON.
    pub fn to_text(&self) -> Str {
        match self {
            Value::Str(text) => text.clone(),
            Value::Bool(flag) => Str::from_static(if *flag { "true" } else { "false" }),
            Value::Int(number) => number.to_string().into(),
            Value::Double(number) => number.to_string().into(),
            Value::Bytes(bytes) => hex::encode(bytes).into(),
            Value::Empty => Str::new(),
            Value::Array(_) | Value::Map(_) => self.to_json().to_string().into(),
        }
    }

    /// The value as JSON; bytes become lower-case hex strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(text) => serde_json::Value::String(text.to_string()),
            Value::Bool(flag) => serde_json::Value::Bool(*flag),
            Value::Int(number) => serde_json::Value::from(*number),
            Value::Double(number) => serde_json::Value::from(*number),
            Value::Bytes(bytes) => serde_json::Value::String(hex::encode(bytes)),
            Value::Empty => serde_json::Value::Null,
            Value::Array(items) => items.iter().map(Value::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// A list of strings: the items of a string array, or the words of one
    /// string split by `separator` (`None` splits on whitespace).
    pub fn to_string_list(&self, separator: Option<char>) -> Vec<String> {
        let split = |text: &str| -> Vec<String> {
            let parts: Vec<&str> = match separator {
                Some(separator) => text.split(separator).collect(),
                None => text.split_whitespace().collect(),
            };
            parts
                .into_iter()
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self {
            Value::Str(text) => split(text),
            Value::Array(items) => items
                .iter()
                .filter_map(|item| item.as_str())
                .flat_map(split)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Ordered attributes as sent; lookups are linear, which is faster than a
/// map for the 10 to 30 attributes a span carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(Str, Value)>);

impl Attributes {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// The value of `key` as non-empty text, if present.
    pub fn get_text(&self, key: &str) -> Option<String> {
        self.get(key)?.non_blank_text()
    }

    /// Attribute pairs as text, for a ClickHouse `Map(String, String)`.
    pub fn to_text_pairs(&self) -> Vec<(Str, Str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.clone(), value.to_text()))
            .collect()
    }

    /// Attribute pairs as owned text.
    pub fn to_owned_text_pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_text().to_string()))
            .collect()
    }

    /// Approximate heap size, for the assembler's memory bound.
    pub fn approx_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(key, value)| key.len() + value_bytes(value) + 32)
            .sum()
    }
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Str(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        Value::Array(items) => items.iter().map(value_bytes).sum::<usize>() + 16,
        Value::Map(entries) => entries
            .iter()
            .map(|(key, value)| key.len() + value_bytes(value) + 16)
            .sum(),
        _ => 8,
    }
}

/// The resource a span was reported under.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Attributes,
    pub service_name: Str,
}

/// The instrumentation scope that produced a span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub name: Str,
    pub version: Str,
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: Str,
    pub attributes: Attributes,
}

/// A span link as the client sent it, or as the linker added it.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// Lower-case hex; links may point outside the trace, so the ids are kept
    /// as text rather than parsed.
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: Str,
    pub attributes: Attributes,
}

/// Span kind names as the OpenTelemetry Collector's ClickHouse exporter
/// stores them.
pub fn span_kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

/// Status code names as the OpenTelemetry Collector's ClickHouse exporter
/// stores them.
pub fn status_code_name(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// A span that passed the receiver's checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: Str,
    pub name: Str,
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub status_code: i32,
    pub status_message: Str,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
    /// Server time at which the request carrying the span arrived.
    pub received_at_unix_nano: i64,
    /// Who submitted the span: a token name or certificate subject, empty
    /// when the receiver does not authenticate senders.
    pub sender: Arc<str>,
    /// Digest of the span's protobuf encoding with its resource and scope,
    /// which distinguishes a re-sent span from a different span that reuses
    /// the ids.
    pub content_hash: ContentHash,
    /// The span as received (a protobuf `ResourceSpans` holding only this
    /// span), kept for the spool and the quarantine table's `RawSpan` column.
    pub raw: bytes::Bytes,
    /// Where the span is in the spool, once appended there.
    pub spool: Option<crate::spool::Location>,
    /// Set on spans replayed from the spool whose rows ClickHouse already
    /// holds: they are assembled again for their workflow's verdict but not
    /// written a second time.
    pub already_stored: bool,
    /// Set when only the attributes that the receiver and the assembler
    /// read on arrival were kept ([`crate::receiver::convert::ArrivalKeys`]).
    /// Such a span is read back in full from its spool record before its
    /// attributes are used for anything else.
    pub arrival_only: bool,
}

impl Span {
    /// An attribute of the span, or else of its resource.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .get(key)
            .or_else(|| self.resource.attributes.get(key))
    }

    /// An attribute of the span or its resource as non-empty text.
    pub fn text(&self, key: &str) -> Option<String> {
        self.attributes
            .get_text(key)
            .or_else(|| self.resource.attributes.get_text(key))
    }

    /// Duration in nanoseconds.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// Approximate memory held by the span, for the assembler's bound.
    pub fn approx_bytes(&self) -> usize {
        let events: usize = self
            .events
            .iter()
            .map(|event| event.name.len() + event.attributes.approx_bytes() + 32)
            .sum();
        let links: usize = self
            .links
            .iter()
            .map(|link| 64 + link.attributes.approx_bytes())
            .sum();
        256 + self.name.len()
            + self.status_message.len()
            + self.attributes.approx_bytes()
            + events
            + links
            + self.raw.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hex_round_trip() {
        let trace = TraceId([
            0x00, 0x01, 0x0a, 0x0f, 0x10, 0x7f, 0x80, 0x9a, 0xab, 0xbc, 0xcd, 0xde, 0xef, 0xf0,
            0xfe, 0xff,
        ]);
        assert_eq!(trace.to_hex(), "00010a0f107f809aabbccddeeff0feff");
        assert_eq!(TraceId::from_hex(&trace.to_hex()), Some(trace));
        let span = SpanId([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03]);
        assert_eq!(span.to_hex(), "deadbeef00010203");
        assert_eq!(SpanId::from_hex(&span.to_hex()), Some(span));
    }

    #[test]
    fn content_hash_tells_encodings_apart() {
        let record: Vec<u8> = (0..100u8).collect();
        assert_eq!(ContentHash::of(&record), ContentHash::of(&record.clone()));
        let mut changed = record.clone();
        changed[57] ^= 1;
        // Zero padding to a whole block must not make an encoding collide
        // with the same bytes followed by zeros, nor the empty encoding
        // with a zero byte.
        let mut padded = record.clone();
        padded.resize(112, 0);
        let mut one_more = record.clone();
        one_more.push(0);
        let others = [changed, padded, one_more];
        for other in &others {
            assert_ne!(
                ContentHash::of(&record),
                ContentHash::of(other),
                "{other:?}"
            );
        }
        assert_ne!(ContentHash::of(&[]), ContentHash::of(&[0]));
        assert_ne!(ContentHash::of(&[0; 16]), ContentHash::of(&[0; 32]));
    }
}
