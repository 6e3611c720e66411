//! `agent_spans` rows in ClickHouse's RowBinary format, encoded once when
//! a workflow segment is sealed, right after its rows are chained.
//!
//! The sink keeps each span row as its encoded bytes (about half the
//! memory of a [`SpanRow`] and the buffers it points into) and sends them
//! with an `INSERT INTO agent_spans (<SPAN_COLUMNS>) FORMAT RowBinary`, so
//! a retried batch is not serialized again. The column list starts with the columns
//! a batch's deduplication token and a quarantine row need, so that they
//! are read from the front of an encoded row.
//!
//! RowBinary, as ClickHouse reads it: integers and `DateTime64` are little
//! endian. `String` and `LowCardinality(String)` are a LEB128 length and
//! the bytes. `Array` and `Map` are a LEB128 count and the elements, and a
//! map entry is its key, then its value. `Nullable` is a byte that is 1 for
//! NULL, or 0 followed by the value.

use bytes::Bytes;

use super::columns::{ColumnWriter, Skip, SpanColumns, write_span_row};
use super::rows::{RejectedRow, SpanRow};
use crate::quarantine::Reason;
use crate::seal::encoding::{Encoder, RowChain, SPAN_ROW_TAG};
use crate::span::Str;

/// The columns of an encoded span row, in the order [`encode_span_row`]
/// writes them: identity first, then the columns of a quarantine row.
pub const SPAN_COLUMNS: &[&str] = &[
    "TraceId",
    "SpanId",
    "Segment",
    "Timestamp",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Sender",
    "ReceivedAt",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
    "WorkflowRootSpanId",
    "StepIndex",
    "StepKind",
    "AgentName",
    "AgentId",
    "AgentVersion",
    "ModelName",
    "ModelVersion",
    "Provider",
    "OriginType",
    "OriginSource",
    "TaskSpec",
    "AuthorizedBy",
    "CredentialId",
    "CredentialIssuer",
    "CredentialScopes",
    "CredentialIssuedAt",
    "CredentialExpiresAt",
    "WorkflowCredentialId",
    "ToolName",
    "ToolCallId",
    "Violations",
    "RedactedCount",
    "RedactedKinds",
    "WriteAction",
    "Late",
    "PrevHash",
    "RowHash",
];

/// Builds the statement that inserts encoded span rows into `table`.
pub fn span_insert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} ({}) FORMAT RowBinary",
        SPAN_COLUMNS
            .iter()
            .map(|column| format!("`{column}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One `agent_spans` row in RowBinary, in [`SPAN_COLUMNS`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSpan(pub Bytes);

/// Encodes the rows of one workflow segment into a single buffer and
/// returns each row as a view of it, so that the rows cost one allocation.
/// The rows are written to a reused buffer of the thread first, and the
/// result is allocated at their exact size.
pub fn encode_span_rows(rows: &[SpanColumns<'_>]) -> Vec<EncodedSpan> {
    encode_rows_with(rows.len(), |index, out| encode_span_row(&rows[index], out))
}

/// Encodes `count` rows into one allocation as [`encode_span_rows`]
/// describes, calling `write` with each row's index and the buffer to
/// append that row to.
fn encode_rows_with(count: usize, mut write: impl FnMut(usize, &mut Vec<u8>)) -> Vec<EncodedSpan> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut ends = Vec::with_capacity(count);
    let buffer = SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        for index in 0..count {
            write(index, scratch);
            ends.push(scratch.len());
        }
        let buffer = Bytes::copy_from_slice(scratch);
        if scratch.capacity() > MAX_SCRATCH {
            *scratch = Vec::new();
        }
        buffer
    });
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let row = EncodedSpan(buffer.slice(start..end));
            start = end;
            row
        })
        .collect()
}

/// Encodes stored rows like [`encode_span_rows`].
pub fn encode_stored_rows(rows: &[SpanRow]) -> Vec<EncodedSpan> {
    let columns: Vec<SpanColumns<'_>> = rows.iter().map(SpanRow::columns).collect();
    encode_span_rows(&columns)
}

/// Largest scratch buffer kept between calls. A segment with larger rows
/// gets a new buffer next time.
const MAX_SCRATCH: usize = 1024 * 1024;

/// Writes `row` in [`SPAN_COLUMNS`] order.
pub fn encode_span_row(row: &SpanColumns<'_>, out: &mut Vec<u8>) {
    let mut w = RowWriter(out);
    write_span_row(row, &mut Skip, &mut w);
    w.text(&row.prev_hash);
    w.text(&row.row_hash);
}

/// Chains the rows of one workflow segment onto `prev_hash` and encodes
/// them like [`encode_span_rows`], with one walk over each row for both
/// its canonical encoding and its RowBinary. The rows' own `PrevHash` and
/// `RowHash` are not read. Returns the encoded rows and the hash of the
/// last row (`prev_hash` when there are none), equal to what
/// [`crate::seal::chain_rows`] followed by [`encode_stored_rows`] give.
pub fn encode_chained_span_rows(
    rows: &[SpanColumns<'_>],
    prev_hash: &str,
) -> (Vec<EncodedSpan>, String) {
    thread_local! {
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut canonical = CANONICAL.take();
    let mut chain = RowChain::after(prev_hash);
    let encoded = encode_rows_with(rows.len(), |index, out| {
        let mut encoder = Encoder::with_buffer(std::mem::take(&mut canonical), SPAN_ROW_TAG);
        let mut w = RowWriter(out);
        write_span_row(&rows[index], &mut encoder, &mut w);
        w.text(chain.prev_text());
        chain.push(encoder.bytes());
        w.text(chain.prev_text());
        canonical = encoder.finish();
    });
    if canonical.capacity() <= MAX_SCRATCH {
        CANONICAL.set(canonical);
    }
    (encoded, chain.prev_text().to_owned())
}

struct RowWriter<'a>(&'a mut Vec<u8>);

impl ColumnWriter for RowWriter<'_> {
    /// Writes a length or count. ClickHouse's `VarUInt` is the same
    /// unsigned LEB128 as a protobuf varint.
    fn count(&mut self, count: usize) {
        // Most lengths and counts fit in one byte.
        match u8::try_from(count) {
            Ok(byte) if byte < 0x80 => self.0.push(byte),
            _ => prost::encoding::encode_varint(count as u64, self.0),
        }
    }

    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.0.extend_from_slice(text.as_bytes());
    }

    fn int(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes a `Nullable(Int64)`, which is 1 for null, else 0 followed by
    /// the value.
    fn nullable_int(&mut self, value: Option<i64>) {
        match value {
            Some(value) => {
                self.u8(0);
                self.int(value);
            }
            None => self.u8(1),
        }
    }
}

/// An encoded row that ends early or has text that is not UTF-8. Rows
/// come from [`encode_span_row`], so this is a bug, not bad input.
#[derive(Debug, thiserror::Error)]
#[error("an encoded agent_spans row is cut short or not UTF-8")]
pub struct Malformed;

/// Reads the leading columns of an encoded span row.
struct RowReader<'a>(&'a [u8]);

impl<'a> RowReader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < count {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, Malformed> {
        let len = prost::encoding::decode_varint(&mut self.0).map_err(|_| Malformed)?;
        usize::try_from(len).map_err(|_| Malformed)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.len()?;
        self.take(len)
    }

    fn text(&mut self) -> Result<String, Malformed> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Malformed)
    }

    fn pairs(&mut self) -> Result<Vec<(Str, Str)>, Malformed> {
        let count = self.len()?;
        (0..count)
            .map(|_| Ok((Str::from(self.text()?), Str::from(self.text()?))))
            .collect()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, Malformed> {
        self.array().map(i64::from_le_bytes)
    }
}

impl EncodedSpan {
    /// Reads the row's identity: its trace id, span id and segment, as the
    /// deduplication token hashes them.
    pub fn identity(&self) -> Result<(&[u8], &[u8], u32), Malformed> {
        let mut reader = RowReader(&self.0);
        Ok((reader.bytes()?, reader.bytes()?, reader.u32()?))
    }

    /// Builds the quarantine row for this span, with `detail`.
    pub fn rejected(&self, reason: Reason, detail: String) -> Result<RejectedRow, Malformed> {
        let mut r = RowReader(&self.0);
        let trace_id = r.text()?;
        let span_id = r.text()?;
        let _segment = r.u32()?;
        Ok(RejectedRow {
            trace_id,
            span_id,
            timestamp: r.i64()?,
            parent_span_id: r.text()?,
            trace_state: r.text()?,
            span_name: r.text()?,
            span_kind: r.text()?,
            service_name: r.text()?,
            resource_attributes: r.pairs()?,
            scope_name: r.text()?,
            scope_version: r.text()?,
            span_attributes: r.pairs()?,
            duration: r.u64()?,
            status_code: r.text()?,
            status_message: r.text()?,
            sender: r.text()?,
            received_at: r.i64()?,
            reason: reason.code().to_owned(),
            detail,
            raw_span: String::new(),
            ledger_instance_id: String::new(),
            ledger_seq: 0,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clickhouse::Row;

    use super::*;
    use crate::span::Str;

    fn pairs(items: &[(&str, &str)]) -> Vec<(Str, Str)> {
        items
            .iter()
            .map(|(key, value)| (Str::from(*key), Str::from(*value)))
            .collect()
    }

    /// Builds a row whose leading columns all differ, with a multi-byte
    /// length.
    pub(crate) fn row() -> SpanRow {
        SpanRow {
            timestamp: 1_700_000_000_000_000_001,
            trace_id: "0000000000000000000000000000002a".into(),
            span_id: "0000000000000007".into(),
            parent_span_id: "0000000000000001".into(),
            trace_state: "vendor=1".into(),
            span_name: "chat gpt-4o".into(),
            span_kind: "Client".into(),
            service_name: "support-agent".into(),
            resource_attributes: pairs(&[("service.name", "support-agent")]),
            scope_name: "scope".into(),
            scope_version: "1.2".into(),
            span_attributes: pairs(&[("gen_ai.prompt", &"p".repeat(300)), ("k", "")]),
            duration: 99,
            status_code: "Ok".into(),
            status_message: "fine".into(),
            events_timestamp: vec![5],
            events_name: vec!["tick".into()],
            events_attributes: vec![pairs(&[("a", "b")])],
            links_trace_id: Vec::new(),
            links_span_id: Vec::new(),
            links_trace_state: Vec::new(),
            links_attributes: Vec::new(),
            workflow_root_span_id: "0000000000000001".into(),
            step_index: 3,
            step_kind: "chat".into(),
            agent_name: "support".into(),
            agent_id: "agent-1".into(),
            agent_version: "1".into(),
            model_name: "gpt-4o".into(),
            model_version: "gpt-4o-2024".into(),
            provider: "openai".into(),
            origin_type: "ticket".into(),
            origin_source: "zendesk".into(),
            task_spec: "answer".into(),
            authorized_by: "alice".into(),
            credential_id: "cred-1".into(),
            credential_issuer: "vault".into(),
            credential_scopes: vec!["tickets:read".into()],
            credential_issued_at: Some(1),
            credential_expires_at: None,
            workflow_credential_id: "cred-1".into(),
            tool_name: Str::new(),
            tool_call_id: Str::new(),
            violations: Vec::new(),
            redacted_count: 0,
            redacted_kinds: Vec::new(),
            write_action: 0,
            sender: "token-a".into(),
            received_at: 1_700_000_000_000_000_999,
            late: 1,
            segment: 2,
            prev_hash: "00".into(),
            row_hash: "ff".into(),
        }
    }

    /// [`row`] with a value in every list and optional column.
    pub(crate) fn full_row() -> SpanRow {
        SpanRow {
            events_timestamp: vec![5, 6],
            events_name: vec!["tick".into(), "tock".into()],
            events_attributes: vec![pairs(&[("a", "b")]), Vec::new()],
            links_trace_id: vec!["0000000000000000000000000000002b".into()],
            links_span_id: vec!["0000000000000009".into()],
            links_trace_state: vec!["v=2".into()],
            links_attributes: vec![pairs(&[("agent_ledger.link.type", "caused_by")])],
            credential_expires_at: Some(-3),
            tool_name: "lookup".into(),
            tool_call_id: "call_1".into(),
            violations: vec!["scope_violation".into(), "credential_expired".into()],
            redacted_count: 1,
            redacted_kinds: vec!["email".into()],
            write_action: 1,
            ..row()
        }
    }

    /// Pins both encodings of [`full_row`] by their SHA-256. Stored rows
    /// must keep hashing the same, and ClickHouse must keep reading the
    /// RowBinary columns in the same order.
    #[test]
    fn span_row_encodings_are_stable() {
        use sha2::{Digest, Sha256};
        let row = full_row();
        let canonical = crate::seal::encoding::encode_span_row(&row.columns());
        let mut rowbinary = Vec::new();
        encode_span_row(&row.columns(), &mut rowbinary);
        assert_eq!(
            hex::encode(Sha256::digest(&canonical)),
            "791cccb828959de5d78209f8b84dd7f60c7d74870eee4b1dc9b519ebc7538cfd",
            "canonical encoding changed"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&rowbinary)),
            "9f15b09d67078414285718710f0178a75bf4ca292fb330bf0352884ef1016d09",
            "RowBinary encoding changed"
        );
    }

    #[test]
    fn counts_are_leb128() {
        for count in [
            0,
            1,
            127,
            128,
            200,
            255,
            256,
            300,
            16_383,
            16_384,
            usize::MAX,
        ] {
            let mut ours = Vec::new();
            RowWriter(&mut ours).count(count);
            let mut expected = Vec::new();
            prost::encoding::encode_varint(count as u64, &mut expected);
            assert_eq!(ours, expected, "count {count}");
        }
    }

    #[test]
    fn span_columns_match_the_row() {
        let mut ours: Vec<&str> = SPAN_COLUMNS.to_vec();
        let mut row: Vec<&str> = SpanRow::COLUMN_NAMES.to_vec();
        ours.sort_unstable();
        row.sort_unstable();
        assert_eq!(ours, row, "SPAN_COLUMNS names each SpanRow column once");
        let sql = span_insert_sql("agent_spans");
        assert!(sql.starts_with("INSERT INTO agent_spans (`TraceId`, `SpanId`, `Segment`, "));
        assert!(sql.ends_with("`RowHash`) FORMAT RowBinary"), "{sql}");
    }

    #[test]
    fn quarantine_row_read_from_front() {
        let row = row();
        let encoded = encode_one(&row);
        let (trace_id, span_id, segment) = encoded.identity().unwrap();
        assert_eq!(trace_id, row.trace_id.as_bytes());
        assert_eq!(span_id, row.span_id.as_bytes());
        assert_eq!(segment, 2);

        let rejected = encoded
            .rejected(Reason::ClickhouseRejected, "Code: 27".into())
            .unwrap();
        assert_eq!(
            rejected,
            RejectedRow {
                timestamp: row.timestamp,
                trace_id: row.trace_id.to_string(),
                span_id: row.span_id.clone(),
                parent_span_id: row.parent_span_id.clone(),
                trace_state: row.trace_state.to_string(),
                span_name: row.span_name.to_string(),
                span_kind: row.span_kind.to_string(),
                service_name: row.service_name.to_string(),
                resource_attributes: row.resource_attributes.clone(),
                scope_name: row.scope_name.to_string(),
                scope_version: row.scope_version.to_string(),
                span_attributes: row.span_attributes.clone(),
                duration: row.duration,
                status_code: row.status_code.to_string(),
                status_message: row.status_message.to_string(),
                reason: "clickhouse_rejected".into(),
                detail: "Code: 27".into(),
                sender: row.sender.to_string(),
                received_at: row.received_at,
                raw_span: String::new(),
                ledger_instance_id: String::new(),
                ledger_seq: 0,
            }
        );
    }

    #[test]
    fn rows_in_shared_buffer_stay_intact() {
        let mut rows: Vec<SpanRow> = (0..50).map(|_| row()).collect();
        for (index, row) in rows.iter_mut().enumerate() {
            row.step_index = index as u32;
        }
        let encoded = encode_stored_rows(&rows);
        assert_eq!(encoded.len(), rows.len());
        for (row, encoded) in rows.iter().zip(&encoded) {
            assert_eq!(*encoded, encode_one(row));
        }
        assert!(encode_span_rows(&[]).is_empty());
    }

    fn encode_one(row: &SpanRow) -> EncodedSpan {
        let mut bytes = Vec::new();
        encode_span_row(&row.columns(), &mut bytes);
        EncodedSpan(bytes.into())
    }

    #[test]
    fn cut_rows_are_malformed() {
        let row = row();
        let encoded = encode_one(&row);
        // ReceivedAt is the last column a quarantine row reads; its value
        // occurs once in the encoding.
        let received_at = row.received_at.to_le_bytes();
        let end = encoded
            .0
            .windows(8)
            .position(|window| window == received_at)
            .unwrap()
            + 8;
        assert!(end < encoded.0.len());
        for len in 0..=encoded.0.len() {
            let cut = EncodedSpan(encoded.0.slice(..len));
            let read = cut.rejected(Reason::ClickhouseRejected, String::new());
            assert_eq!(read.is_ok(), len >= end, "row cut at {len} of {end}");
        }
        assert!(EncodedSpan(encoded.0.slice(..40)).identity().is_err());
    }
}
