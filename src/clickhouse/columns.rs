//! The columns of an `agent_spans` row, borrowed from where they live.
//!
//! The sealer reads them from a sealed workflow's steps, and the verifier
//! from a [`SpanRow`] read back from ClickHouse. Both the canonical
//! encoding that `RowHash` covers and the RowBinary the sink sends are
//! written from this view. So a row hashes the same whichever way it was
//! built, and sealing does not copy each span's texts into a row first.
//!
//! [`write_span_row`] lays out the columns for both encodings, so the
//! order of the canonical encoding lives in one place with the RowBinary
//! order beside it.
//!
//! Lists keep the shape of their source: a stored row's `Events.*` and
//! `Links.*` columns are separate arrays that a changed row may give
//! different lengths, and the verifier must encode them as stored.

use std::borrow::Cow;
use std::fmt;

use super::rows::SpanRow;
use crate::span::{Attributes, Event, Link, SpanId, Str, Value};

/// A `Map(String, String)` column.
#[derive(Clone, Copy, Debug)]
pub enum Pairs<'a> {
    /// Key and value texts of a stored row.
    Text(&'a [(Str, Str)]),
    /// Attributes of a span. Values that are not strings are written as
    /// [`Value::to_text`] gives them.
    Values(&'a Attributes),
    /// The attributes of a link the linker added: `agent_ledger.link.type`
    /// is `caused_by`, and `agent_ledger.link.basis` is this basis.
    CausedBy(&'static str),
}

/// Keys and link type of the attributes the linker gives the links it adds.
const LINK_TYPE: &str = "agent_ledger.link.type";
const LINK_BASIS: &str = "agent_ledger.link.basis";
const LINK_TYPE_CAUSED_BY: &str = "caused_by";

impl Pairs<'_> {
    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        match self {
            Pairs::Text(pairs) => pairs.len(),
            Pairs::Values(attributes) => attributes.0.len(),
            Pairs::CausedBy(_) => 2,
        }
    }

    /// Returns whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `entry` with each key and value text, in order.
    pub fn for_each(&self, mut entry: impl FnMut(&str, &str)) {
        match self {
            Pairs::Text(pairs) => pairs.iter().for_each(|(key, value)| entry(key, value)),
            Pairs::Values(attributes) => {
                for (key, value) in &attributes.0 {
                    match value {
                        Value::Str(text) => entry(key, text),
                        other => entry(key, &other.to_text()),
                    }
                }
            }
            Pairs::CausedBy(basis) => {
                entry(LINK_TYPE, LINK_TYPE_CAUSED_BY);
                entry(LINK_BASIS, basis);
            }
        }
    }

    /// Copies the entries into owned texts.
    pub fn to_vec(&self) -> Vec<(Str, Str)> {
        match self {
            Pairs::Text(pairs) => pairs.to_vec(),
            Pairs::Values(attributes) => attributes.to_text_pairs(),
            Pairs::CausedBy(_) => {
                let mut pairs = Vec::with_capacity(2);
                self.for_each(|key, value| pairs.push((Str::from(key), Str::from(value))));
                pairs
            }
        }
    }
}

/// The `Events.*` columns.
#[derive(Clone, Copy, Debug)]
pub enum Events<'a> {
    /// A span's events.
    Span(&'a [Event]),
    /// The columns of a stored row.
    Columns {
        timestamps: &'a [i64],
        names: &'a [Str],
        attributes: &'a [Vec<(Str, Str)>],
    },
}

/// A span id as lower-case hex: borrowed from a stored row, or written from
/// the id's bytes without an allocation.
#[derive(Clone, Debug)]
pub enum IdText<'a> {
    /// The text of a stored row, or another text that outlives the view.
    Stored(&'a str),
    /// The hex digits of an id.
    Hex([u8; 16]),
}

impl IdText<'_> {
    /// Builds the hex text of `id`, or the empty text when there is no id.
    pub fn of(id: Option<SpanId>) -> Self {
        match id {
            Some(id) => {
                let mut digits = [0u8; 16];
                hex::encode_to_slice(id.0, &mut digits).expect("16 digits hold 8 bytes");
                IdText::Hex(digits)
            }
            None => IdText::Stored(""),
        }
    }
}

impl std::ops::Deref for IdText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            IdText::Stored(text) => text,
            IdText::Hex(digits) => std::str::from_utf8(digits).expect("hex digits are ASCII"),
        }
    }
}

impl fmt::Display for IdText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// One link of a span's row: the span's own or one the linker added.
#[derive(Clone, Debug)]
pub struct LinkColumns<'a> {
    pub trace_id: &'a str,
    pub span_id: IdText<'a>,
    pub trace_state: &'a str,
    pub attributes: Pairs<'a>,
}

impl<'a> LinkColumns<'a> {
    /// Borrows a link of the span.
    pub fn of(link: &'a Link) -> Self {
        LinkColumns {
            trace_id: &link.trace_id,
            span_id: IdText::Stored(&link.span_id),
            trace_state: &link.trace_state,
            attributes: Pairs::Values(&link.attributes),
        }
    }
}

/// The `Links.*` columns.
#[derive(Clone, Debug)]
pub enum Links<'a> {
    /// The span's links followed by the links the linker added.
    Items(Vec<LinkColumns<'a>>),
    /// The columns of a stored row.
    Columns {
        trace_ids: &'a [String],
        span_ids: &'a [String],
        trace_states: &'a [Str],
        attributes: &'a [Vec<(Str, Str)>],
    },
}

/// A writer of one of the two encodings of a span row. Its provided methods
/// write the list and map columns, which both encodings lay out as a count
/// followed by the elements.
pub trait ColumnWriter {
    /// Writes a count or a length.
    fn count(&mut self, count: usize);
    /// Writes a text.
    fn text(&mut self, text: &str);
    /// Writes a signed 64-bit integer.
    fn int(&mut self, value: i64);
    /// Writes an unsigned 8-bit integer.
    fn u8(&mut self, value: u8);
    /// Writes an unsigned 32-bit integer.
    fn u32(&mut self, value: u32);
    /// Writes an unsigned 64-bit integer.
    fn u64(&mut self, value: u64);
    /// Writes a signed 64-bit integer that may be null.
    fn nullable_int(&mut self, value: Option<i64>);

    /// Writes a list of texts.
    fn texts<'t>(&mut self, texts: impl ExactSizeIterator<Item = &'t str>) {
        self.count(texts.len());
        texts.for_each(|text| self.text(text));
    }

    /// Writes a map.
    fn pairs(&mut self, pairs: &Pairs<'_>) {
        self.count(pairs.len());
        pairs.for_each(|key, value| {
            self.text(key);
            self.text(value);
        });
    }

    /// Writes a list of maps.
    fn pair_lists<'p>(&mut self, lists: impl ExactSizeIterator<Item = Pairs<'p>>) {
        self.count(lists.len());
        lists.for_each(|pairs| self.pairs(&pairs));
    }
}

/// A writer that writes nothing, for the encoding a caller of
/// [`write_span_row`] does not want.
pub struct Skip;

impl ColumnWriter for Skip {
    fn count(&mut self, _: usize) {}
    fn text(&mut self, _: &str) {}
    fn int(&mut self, _: i64) {}
    fn u8(&mut self, _: u8) {}
    fn u32(&mut self, _: u32) {}
    fn u64(&mut self, _: u64) {}
    fn nullable_int(&mut self, _: Option<i64>) {}
}

/// A writer that passes each column on to two writers.
struct Both<'w, C, R>(&'w mut C, &'w mut R);

impl<C: ColumnWriter, R: ColumnWriter> ColumnWriter for Both<'_, C, R> {
    fn count(&mut self, count: usize) {
        self.0.count(count);
        self.1.count(count);
    }

    fn text(&mut self, text: &str) {
        self.0.text(text);
        self.1.text(text);
    }

    fn int(&mut self, value: i64) {
        self.0.int(value);
        self.1.int(value);
    }

    fn u8(&mut self, value: u8) {
        self.0.u8(value);
        self.1.u8(value);
    }

    fn u32(&mut self, value: u32) {
        self.0.u32(value);
        self.1.u32(value);
    }

    fn u64(&mut self, value: u64) {
        self.0.u64(value);
        self.1.u64(value);
    }

    fn nullable_int(&mut self, value: Option<i64>) {
        self.0.nullable_int(value);
        self.1.nullable_int(value);
    }
}

/// Writes the columns of a span row except `PrevHash` and `RowHash`, to
/// `canonical` in table order (after the tag the caller wrote) and to
/// `rowbinary` in the order of the sink's insert statement. The orders
/// differ only in where the ids, `Segment`, `Timestamp`, `Sender`,
/// `ReceivedAt` and `Late` go, so the maps and lists are walked once for
/// both. Either writer may be [`Skip`].
pub fn write_span_row(
    row: &SpanColumns<'_>,
    canonical: &mut impl ColumnWriter,
    rowbinary: &mut impl ColumnWriter,
) {
    canonical.int(row.timestamp);
    {
        let mut both = Both(&mut *canonical, &mut *rowbinary);
        both.text(row.trace_id);
        both.text(&row.span_id);
    }
    rowbinary.u32(row.segment);
    rowbinary.int(row.timestamp);
    {
        let mut both = Both(&mut *canonical, &mut *rowbinary);
        both.text(&row.parent_span_id);
        both.text(row.trace_state);
        both.text(row.span_name);
        both.text(row.span_kind);
        both.text(row.service_name);
        both.pairs(&row.resource_attributes);
        both.text(row.scope_name);
        both.text(row.scope_version);
        both.pairs(&row.span_attributes);
        both.u64(row.duration);
        both.text(row.status_code);
        both.text(row.status_message);
    }
    rowbinary.text(row.sender);
    rowbinary.int(row.received_at);
    {
        let mut both = Both(&mut *canonical, &mut *rowbinary);
        row.events.write_timestamps(&mut both);
        row.events.write_names(&mut both);
        row.events.write_attributes(&mut both);
        row.links.write_trace_ids(&mut both);
        row.links.write_span_ids(&mut both);
        row.links.write_trace_states(&mut both);
        row.links.write_attributes(&mut both);

        both.text(row.workflow_root_span_id);
        both.u32(row.step_index);
        both.text(row.step_kind);
        both.text(row.agent_name);
        both.text(row.agent_id);
        both.text(row.agent_version);
        both.text(row.model_name);
        both.text(row.model_version);
        both.text(row.provider);
        both.text(row.origin_type);
        both.text(row.origin_source);
        both.text(row.task_spec);
        both.text(row.authorized_by);

        both.text(row.credential_id);
        both.text(row.credential_issuer);
        both.texts(row.credential_scopes.iter().map(String::as_str));
        both.nullable_int(row.credential_issued_at);
        both.nullable_int(row.credential_expires_at);
        both.text(row.workflow_credential_id);

        both.text(row.tool_name);
        both.text(row.tool_call_id);
        both.texts(row.violations.iter().copied());
        both.u32(row.redacted_count);
        both.texts(row.redacted_kinds.iter().map(String::as_str));
        both.u8(row.write_action);
    }
    canonical.text(row.sender);
    canonical.int(row.received_at);
    canonical.u8(row.late);
    canonical.u32(row.segment);
    rowbinary.u8(row.late);
}

impl Events<'_> {
    /// Writes `Events.Timestamp`.
    pub fn write_timestamps(&self, w: &mut impl ColumnWriter) {
        match self {
            Events::Span(events) => {
                w.count(events.len());
                events
                    .iter()
                    .for_each(|event| w.int(event.time_unix_nano as i64));
            }
            Events::Columns { timestamps, .. } => {
                w.count(timestamps.len());
                timestamps.iter().for_each(|time| w.int(*time));
            }
        }
    }

    /// Writes `Events.Name`.
    pub fn write_names(&self, w: &mut impl ColumnWriter) {
        match self {
            Events::Span(events) => w.texts(events.iter().map(|event| &*event.name)),
            Events::Columns { names, .. } => w.texts(names.iter().map(|name| &**name)),
        }
    }

    /// Writes `Events.Attributes`.
    pub fn write_attributes(&self, w: &mut impl ColumnWriter) {
        match self {
            Events::Span(events) => {
                w.pair_lists(events.iter().map(|event| Pairs::Values(&event.attributes)))
            }
            Events::Columns { attributes, .. } => {
                w.pair_lists(attributes.iter().map(|pairs| Pairs::Text(pairs)))
            }
        }
    }
}

impl Links<'_> {
    /// Writes `Links.TraceId`.
    pub fn write_trace_ids(&self, w: &mut impl ColumnWriter) {
        match self {
            Links::Items(links) => w.texts(links.iter().map(|link| link.trace_id)),
            Links::Columns { trace_ids, .. } => w.texts(trace_ids.iter().map(String::as_str)),
        }
    }

    /// Writes `Links.SpanId`.
    pub fn write_span_ids(&self, w: &mut impl ColumnWriter) {
        match self {
            Links::Items(links) => w.texts(links.iter().map(|link| &*link.span_id)),
            Links::Columns { span_ids, .. } => w.texts(span_ids.iter().map(String::as_str)),
        }
    }

    /// Writes `Links.TraceState`.
    pub fn write_trace_states(&self, w: &mut impl ColumnWriter) {
        match self {
            Links::Items(links) => w.texts(links.iter().map(|link| link.trace_state)),
            Links::Columns { trace_states, .. } => {
                w.texts(trace_states.iter().map(|state| &**state))
            }
        }
    }

    /// Writes `Links.Attributes`.
    pub fn write_attributes(&self, w: &mut impl ColumnWriter) {
        match self {
            Links::Items(links) => w.pair_lists(links.iter().map(|link| link.attributes)),
            Links::Columns { attributes, .. } => {
                w.pair_lists(attributes.iter().map(|pairs| Pairs::Text(pairs)))
            }
        }
    }
}

/// Every column of an `agent_spans` row, borrowed.
#[derive(Clone, Debug)]
pub struct SpanColumns<'a> {
    pub timestamp: i64,
    pub trace_id: &'a str,
    pub span_id: IdText<'a>,
    pub parent_span_id: IdText<'a>,
    pub trace_state: &'a str,
    pub span_name: &'a str,
    pub span_kind: &'a str,
    pub service_name: &'a str,
    pub resource_attributes: Pairs<'a>,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub span_attributes: Pairs<'a>,
    pub duration: u64,
    pub status_code: &'a str,
    pub status_message: &'a str,
    pub events: Events<'a>,
    pub links: Links<'a>,
    pub workflow_root_span_id: &'a str,
    pub step_index: u32,
    pub step_kind: &'a str,
    pub agent_name: &'a str,
    pub agent_id: &'a str,
    pub agent_version: &'a str,
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub provider: &'a str,
    pub origin_type: &'a str,
    pub origin_source: &'a str,
    pub task_spec: &'a str,
    pub authorized_by: &'a str,
    pub credential_id: &'a str,
    pub credential_issuer: &'a str,
    pub credential_scopes: &'a [String],
    pub credential_issued_at: Option<i64>,
    pub credential_expires_at: Option<i64>,
    pub workflow_credential_id: &'a str,
    pub tool_name: &'a str,
    pub tool_call_id: &'a str,
    pub violations: Vec<&'a str>,
    pub redacted_count: u32,
    pub redacted_kinds: Cow<'a, [String]>,
    pub write_action: u8,
    pub sender: &'a str,
    pub received_at: i64,
    pub late: u8,
    pub segment: u32,
    pub prev_hash: Cow<'a, str>,
    pub row_hash: Cow<'a, str>,
}

impl SpanRow {
    /// Borrows the row's columns, as stored.
    pub fn columns(&self) -> SpanColumns<'_> {
        SpanColumns {
            timestamp: self.timestamp,
            trace_id: &self.trace_id,
            span_id: IdText::Stored(&self.span_id),
            parent_span_id: IdText::Stored(&self.parent_span_id),
            trace_state: &self.trace_state,
            span_name: &self.span_name,
            span_kind: &self.span_kind,
            service_name: &self.service_name,
            resource_attributes: Pairs::Text(&self.resource_attributes),
            scope_name: &self.scope_name,
            scope_version: &self.scope_version,
            span_attributes: Pairs::Text(&self.span_attributes),
            duration: self.duration,
            status_code: &self.status_code,
            status_message: &self.status_message,
            events: Events::Columns {
                timestamps: &self.events_timestamp,
                names: &self.events_name,
                attributes: &self.events_attributes,
            },
            links: Links::Columns {
                trace_ids: &self.links_trace_id,
                span_ids: &self.links_span_id,
                trace_states: &self.links_trace_state,
                attributes: &self.links_attributes,
            },
            workflow_root_span_id: &self.workflow_root_span_id,
            step_index: self.step_index,
            step_kind: &self.step_kind,
            agent_name: &self.agent_name,
            agent_id: &self.agent_id,
            agent_version: &self.agent_version,
            model_name: &self.model_name,
            model_version: &self.model_version,
            provider: &self.provider,
            origin_type: &self.origin_type,
            origin_source: &self.origin_source,
            task_spec: &self.task_spec,
            authorized_by: &self.authorized_by,
            credential_id: &self.credential_id,
            credential_issuer: &self.credential_issuer,
            credential_scopes: &self.credential_scopes,
            credential_issued_at: self.credential_issued_at,
            credential_expires_at: self.credential_expires_at,
            workflow_credential_id: &self.workflow_credential_id,
            tool_name: &self.tool_name,
            tool_call_id: &self.tool_call_id,
            violations: self.violations.iter().map(String::as_str).collect(),
            redacted_count: self.redacted_count,
            redacted_kinds: Cow::Borrowed(&self.redacted_kinds),
            write_action: self.write_action,
            sender: &self.sender,
            received_at: self.received_at,
            late: self.late,
            segment: self.segment,
            prev_hash: Cow::Borrowed(&self.prev_hash),
            row_hash: Cow::Borrowed(&self.row_hash),
        }
    }
}

impl SpanColumns<'_> {
    /// Copies the columns into an owned row.
    pub fn to_row(&self) -> SpanRow {
        let text = |value: &str| Str::from(value);
        let (events_timestamp, events_name, events_attributes) = match self.events {
            Events::Span(events) => (
                events
                    .iter()
                    .map(|event| event.time_unix_nano as i64)
                    .collect(),
                events.iter().map(|event| event.name.clone()).collect(),
                events
                    .iter()
                    .map(|event| event.attributes.to_text_pairs())
                    .collect(),
            ),
            Events::Columns {
                timestamps,
                names,
                attributes,
            } => (timestamps.to_vec(), names.to_vec(), attributes.to_vec()),
        };
        let (links_trace_id, links_span_id, links_trace_state, links_attributes) = match &self.links
        {
            Links::Items(links) => (
                links.iter().map(|link| link.trace_id.to_owned()).collect(),
                links.iter().map(|link| link.span_id.to_string()).collect(),
                links.iter().map(|link| text(link.trace_state)).collect(),
                links.iter().map(|link| link.attributes.to_vec()).collect(),
            ),
            Links::Columns {
                trace_ids,
                span_ids,
                trace_states,
                attributes,
            } => (
                trace_ids.to_vec(),
                span_ids.to_vec(),
                trace_states.to_vec(),
                attributes.to_vec(),
            ),
        };
        SpanRow {
            timestamp: self.timestamp,
            trace_id: text(self.trace_id),
            span_id: self.span_id.to_string(),
            parent_span_id: self.parent_span_id.to_string(),
            trace_state: text(self.trace_state),
            span_name: text(self.span_name),
            span_kind: text(self.span_kind),
            service_name: text(self.service_name),
            resource_attributes: self.resource_attributes.to_vec(),
            scope_name: text(self.scope_name),
            scope_version: text(self.scope_version),
            span_attributes: self.span_attributes.to_vec(),
            duration: self.duration,
            status_code: text(self.status_code),
            status_message: text(self.status_message),
            events_timestamp,
            events_name,
            events_attributes,
            links_trace_id,
            links_span_id,
            links_trace_state,
            links_attributes,
            workflow_root_span_id: text(self.workflow_root_span_id),
            step_index: self.step_index,
            step_kind: text(self.step_kind),
            agent_name: text(self.agent_name),
            agent_id: text(self.agent_id),
            agent_version: text(self.agent_version),
            model_name: text(self.model_name),
            model_version: text(self.model_version),
            provider: text(self.provider),
            origin_type: text(self.origin_type),
            origin_source: text(self.origin_source),
            task_spec: text(self.task_spec),
            authorized_by: text(self.authorized_by),
            credential_id: self.credential_id.to_owned(),
            credential_issuer: self.credential_issuer.to_owned(),
            credential_scopes: self.credential_scopes.to_vec(),
            credential_issued_at: self.credential_issued_at,
            credential_expires_at: self.credential_expires_at,
            workflow_credential_id: text(self.workflow_credential_id),
            tool_name: text(self.tool_name),
            tool_call_id: text(self.tool_call_id),
            violations: self
                .violations
                .iter()
                .map(|code| code.to_string())
                .collect(),
            redacted_count: self.redacted_count,
            redacted_kinds: self.redacted_kinds.to_vec(),
            write_action: self.write_action,
            sender: text(self.sender),
            received_at: self.received_at,
            late: self.late,
            segment: self.segment,
            prev_hash: self.prev_hash.to_string(),
            row_hash: self.row_hash.to_string(),
        }
    }
}
