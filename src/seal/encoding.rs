//! The canonical encoding of stored rows, version 1.
//!
//! Takes the rows the receiver writes and produces byte strings that two
//! different rows never share, so a hash over the encoding changes whenever
//! any meaningful column changes. The verifier reads the rows back from
//! ClickHouse and encodes them again with the same functions.
//!
//! The rules, which `docs/sealing.md` states for auditors:
//!
//! - An encoding starts with its tag, a string such as
//!   `agent-ledger/span-row/v1`; the tag names the row type and the version.
//! - Columns follow in the fixed order listed in each `encode_*` function,
//!   and for span rows in [`write_span_row`].
//! - A string is its length in bytes as an unsigned 64-bit big-endian integer,
//!   then its UTF-8 bytes.
//! - `UInt8`, `UInt32`, `UInt64` and `Int64` (timestamps in Unix nanoseconds)
//!   are fixed-width big-endian integers.
//! - A nullable value is the byte `0` when null, else the byte `1` and the
//!   value.
//! - An array or map is its element count (64-bit big-endian), then each
//!   element in stored order; a map element is its key, then its value.
//!
//! Every value is either fixed-width or length-prefixed and the columns come
//! in a fixed order, so the encoding is prefix-free: no two different rows
//! encode alike.

use sha2::{Digest, Sha256};

use crate::clickhouse::columns::{ColumnWriter, Skip, SpanColumns, write_span_row};
use crate::clickhouse::rows::{CredentialRow, RejectedRow, WorkflowRow};
use crate::span::lower_hex;

/// Tag of the `agent_spans` row encoding.
pub const SPAN_ROW_TAG: &str = "agent-ledger/span-row/v1";
/// Tag of the workflow header encoding.
pub const HEADER_TAG: &str = "agent-ledger/workflow-header/v1";
/// Tag of the `agent_workflows` row encoding.
pub const WORKFLOW_ROW_TAG: &str = "agent-ledger/workflow-row/v1";
/// Tag of the `agent_rejected_spans` row encoding.
pub const REJECTED_ROW_TAG: &str = "agent-ledger/rejected-row/v1";
/// Tag of the `agent_credentials` row encoding.
pub const CREDENTIAL_ROW_TAG: &str = "agent-ledger/credential-row/v1";

/// Appends canonical values to a buffer.
#[derive(Default)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    /// An encoder whose output starts with `tag`.
    pub fn new(tag: &str) -> Self {
        Encoder::with_buffer(Vec::with_capacity(1024), tag)
    }

    /// Creates an encoder like [`Encoder::new`] that writes into `buffer`,
    /// which is cleared first. Reusing one buffer for many rows saves an
    /// allocation per row.
    pub fn with_buffer(mut buffer: Vec<u8>, tag: &str) -> Self {
        buffer.clear();
        let mut encoder = Encoder { bytes: buffer };
        encoder.str(tag);
        encoder
    }

    /// Returns the bytes encoded so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    fn length(&mut self, len: usize) {
        self.bytes.extend_from_slice(&(len as u64).to_be_bytes());
    }

    pub fn str(&mut self, text: &str) {
        self.length(text.len());
        self.bytes.extend_from_slice(text.as_bytes());
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn opt_i64(&mut self, value: Option<i64>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.i64(value);
            }
        }
    }

    pub fn i64s(&mut self, values: &[i64]) {
        self.length(values.len());
        for value in values {
            self.i64(*value);
        }
    }

    pub fn strs<S: AsRef<str>>(&mut self, values: &[S]) {
        self.length(values.len());
        for value in values {
            self.str(value.as_ref());
        }
    }

    pub fn pairs<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(K, V)]) {
        self.length(pairs.len());
        for (key, value) in pairs {
            self.str(key.as_ref());
            self.str(value.as_ref());
        }
    }

    pub fn pair_lists<K: AsRef<str>, V: AsRef<str>>(&mut self, lists: &[Vec<(K, V)>]) {
        self.length(lists.len());
        for pairs in lists {
            self.pairs(pairs);
        }
    }
}

/// Encodes an `agent_spans` row: every column except `PrevHash` and
/// `RowHash`, in table order.
pub fn encode_span_row(row: &SpanColumns<'_>) -> Vec<u8> {
    encode_span_row_into(row, Vec::with_capacity(1024))
}

/// Encodes `row` like [`encode_span_row`] into `buffer`, which is cleared
/// first. Reusing one buffer for many rows saves an allocation per row.
pub fn encode_span_row_into(row: &SpanColumns<'_>, buffer: Vec<u8>) -> Vec<u8> {
    let mut encoder = Encoder::with_buffer(buffer, SPAN_ROW_TAG);
    write_span_row(row, &mut encoder, &mut Skip);
    encoder.finish()
}

impl ColumnWriter for Encoder {
    fn count(&mut self, count: usize) {
        self.length(count);
    }

    fn text(&mut self, text: &str) {
        self.str(text);
    }

    fn int(&mut self, value: i64) {
        self.i64(value);
    }

    fn u8(&mut self, value: u8) {
        Encoder::u8(self, value);
    }

    fn u32(&mut self, value: u32) {
        Encoder::u32(self, value);
    }

    fn u64(&mut self, value: u64) {
        Encoder::u64(self, value);
    }

    fn nullable_int(&mut self, value: Option<i64>) {
        self.opt_i64(value);
    }
}

/// The facts a workflow's chain starts from: its ids, origin, agent and
/// credential.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header<'a> {
    pub workflow_id: &'a str,
    pub root_span_id: &'a str,
    pub origin_type: &'a str,
    pub origin_source: &'a str,
    pub task_spec: &'a str,
    pub authorized_by: &'a str,
    pub origin_received_at: i64,
    pub agent_name: &'a str,
    pub agent_id: &'a str,
    pub agent_version: &'a str,
    pub credential_id: &'a str,
    pub credential_issuer: &'a str,
    pub credential_scopes: &'a [String],
    pub credential_issued_at: Option<i64>,
    pub credential_expires_at: Option<i64>,
}

impl<'a> Header<'a> {
    /// The header as the verdict row stores it.
    pub fn of(row: &'a WorkflowRow) -> Self {
        Header {
            workflow_id: &row.workflow_id,
            root_span_id: &row.root_span_id,
            origin_type: &row.origin_type,
            origin_source: &row.origin_source,
            task_spec: &row.task_spec,
            authorized_by: &row.authorized_by,
            origin_received_at: row.origin_received_at,
            agent_name: &row.agent_name,
            agent_id: &row.agent_id,
            agent_version: &row.agent_version,
            credential_id: &row.credential_id,
            credential_issuer: &row.credential_issuer,
            credential_scopes: &row.credential_scopes,
            credential_issued_at: row.credential_issued_at,
            credential_expires_at: row.credential_expires_at,
        }
    }

    /// Encodes the header, in field order.
    pub fn encode(&self) -> Vec<u8> {
        let mut encoder = Encoder::new(HEADER_TAG);
        for text in [
            self.workflow_id,
            self.root_span_id,
            self.origin_type,
            self.origin_source,
            self.task_spec,
        ] {
            encoder.str(text);
        }
        encoder.str(self.authorized_by);
        encoder.i64(self.origin_received_at);
        for text in [
            self.agent_name,
            self.agent_id,
            self.agent_version,
            self.credential_id,
            self.credential_issuer,
        ] {
            encoder.str(text);
        }
        encoder.strs(self.credential_scopes);
        encoder.opt_i64(self.credential_issued_at);
        encoder.opt_i64(self.credential_expires_at);
        encoder.finish()
    }

    /// `HeaderHash`: SHA-256 of the encoded header, lower-case hex.
    pub fn hash(&self) -> String {
        lower_hex(&Sha256::digest(self.encode()))
    }
}

/// Encodes an `agent_workflows` row: every column, in table order.
pub fn encode_workflow_row(row: &WorkflowRow) -> Vec<u8> {
    let mut encoder = Encoder::new(WORKFLOW_ROW_TAG);
    for text in [&row.workflow_id, &row.root_span_id] {
        encoder.str(text);
    }
    encoder.u32(row.revision);
    encoder.u32(row.segment);
    encoder.str(&row.status);
    encoder.strs(&row.reasons);
    encoder.i64(row.timestamp);
    encoder.u64(row.duration);
    for text in [
        &row.origin_type,
        &row.origin_source,
        &row.task_spec,
        &row.authorized_by,
    ] {
        encoder.str(text);
    }
    encoder.i64(row.origin_received_at);
    for text in [&row.agent_name, &row.agent_id, &row.agent_version] {
        encoder.str(text);
    }
    for list in [&row.agent_names, &row.model_names, &row.model_versions] {
        encoder.strs(list);
    }
    for text in [&row.provider, &row.credential_id, &row.credential_issuer] {
        encoder.str(text);
    }
    encoder.strs(&row.credential_scopes);
    encoder.opt_i64(row.credential_issued_at);
    encoder.opt_i64(row.credential_expires_at);
    encoder.u32(row.step_count);
    encoder.strs(&row.tools_used);
    encoder.u32(row.violation_count);
    encoder.u32(row.row_count);
    for text in [&row.header_hash, &row.chain_head, &row.sender] {
        encoder.str(text);
    }
    encoder.i64(row.received_at);
    encoder.i64(row.written_at);
    encoder.str(&row.ledger_instance_id);
    encoder.u64(row.ledger_seq);
    encoder.finish()
}

/// Encodes an `agent_rejected_spans` row: every column, in table order.
pub fn encode_rejected_row(row: &RejectedRow) -> Vec<u8> {
    let mut encoder = Encoder::new(REJECTED_ROW_TAG);
    encoder.i64(row.timestamp);
    for text in [
        &row.trace_id,
        &row.span_id,
        &row.parent_span_id,
        &row.trace_state,
    ] {
        encoder.str(text);
    }
    for text in [&row.span_name, &row.span_kind, &row.service_name] {
        encoder.str(text);
    }
    encoder.pairs(&row.resource_attributes);
    encoder.str(&row.scope_name);
    encoder.str(&row.scope_version);
    encoder.pairs(&row.span_attributes);
    encoder.u64(row.duration);
    for text in [
        &row.status_code,
        &row.status_message,
        &row.reason,
        &row.detail,
        &row.sender,
    ] {
        encoder.str(text);
    }
    encoder.i64(row.received_at);
    encoder.str(&row.raw_span);
    encoder.str(&row.ledger_instance_id);
    encoder.u64(row.ledger_seq);
    encoder.finish()
}

/// Encodes an `agent_credentials` row: every column, in table order.
pub fn encode_credential_row(row: &CredentialRow) -> Vec<u8> {
    let mut encoder = Encoder::new(CREDENTIAL_ROW_TAG);
    for text in [
        &row.credential_id,
        &row.workflow_id,
        &row.span_id,
        &row.issuer,
    ] {
        encoder.str(text);
    }
    encoder.strs(&row.scopes);
    encoder.opt_i64(row.issued_at);
    encoder.opt_i64(row.expires_at);
    encoder.str(&row.issuer_service);
    encoder.str(&row.sender);
    encoder.i64(row.received_at);
    encoder.str(&row.ledger_instance_id);
    encoder.u64(row.ledger_seq);
    encoder.finish()
}

/// `RowHash`: SHA-256 over the previous hash's 32 bytes followed by the
/// row's encoding, lower-case hex. `prev_hash` is lower-case hex; text that
/// is not 64 hex digits is hashed as its UTF-8 bytes, so a damaged value
/// still yields a (non-matching) hash instead of an error.
pub fn row_hash(prev_hash: &str, encoding: &[u8]) -> String {
    lower_hex(&chained_digest(&PrevHash::of(prev_hash), encoding))
}

/// A previous hash as it enters [`row_hash`].
enum PrevHash<'a> {
    /// The 32 bytes of a hash.
    Digest([u8; 32]),
    /// Text that is not 64 hex digits, hashed as it is.
    Text(&'a str),
}

impl<'a> PrevHash<'a> {
    /// Reads `text`, a hash in hex.
    fn of(text: &'a str) -> Self {
        let mut digest = [0u8; 32];
        match hex::decode_to_slice(text, &mut digest) {
            Ok(()) => PrevHash::Digest(digest),
            Err(_) => PrevHash::Text(text),
        }
    }
}

/// Computes the digest that [`row_hash`] gives in hex, from a previous
/// hash already read.
fn chained_digest(prev: &PrevHash<'_>, encoding: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match prev {
        PrevHash::Digest(digest) => hasher.update(digest),
        PrevHash::Text(text) => hasher.update(text.as_bytes()),
    }
    hasher.update(encoding);
    hasher.finalize().into()
}

/// A hash chain over the rows of a segment, as [`row_hash`] links them.
/// Each row's hash is carried to the next as bytes, so only the first
/// previous hash is read from hex.
pub struct RowChain<'a> {
    prev: PrevHash<'a>,
    /// The previous hash as the first row stores it.
    first_text: &'a str,
    /// The hex of the last row's hash, once a row was added.
    last_hex: Option<[u8; 64]>,
}

impl<'a> RowChain<'a> {
    /// Starts a chain whose first row follows `prev_hash`, a hash in hex.
    pub fn after(prev_hash: &'a str) -> Self {
        RowChain {
            prev: PrevHash::of(prev_hash),
            first_text: prev_hash,
            last_hex: None,
        }
    }

    /// Returns the `PrevHash` text of the next row: the hash of the last
    /// row added, else the hash the chain started after.
    pub fn prev_text(&self) -> &str {
        match &self.last_hex {
            Some(digits) => std::str::from_utf8(digits).expect("hex digits are ASCII"),
            None => self.first_text,
        }
    }

    /// Adds the row whose canonical encoding is `encoding`. Its `RowHash`
    /// is then [`RowChain::prev_text`].
    pub fn push(&mut self, encoding: &[u8]) {
        let digest = chained_digest(&self.prev, encoding);
        let mut digits = [0u8; 64];
        hex::encode_to_slice(digest, &mut digits).expect("64 digits hold 32 bytes");
        self.prev = PrevHash::Digest(digest);
        self.last_hex = Some(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_length_prefixed() {
        let encode = |first: &str, second: &str| {
            let mut encoder = Encoder::new("t");
            encoder.str(first);
            encoder.str(second);
            encoder.finish()
        };
        assert_ne!(encode("ab", "c"), encode("a", "bc"));
        assert_ne!(encode("", "x"), encode("x", ""));
    }

    #[test]
    fn null_differs_from_zero() {
        let encode = |value: Option<i64>| {
            let mut encoder = Encoder::new("t");
            encoder.opt_i64(value);
            encoder.finish()
        };
        assert_ne!(encode(None), encode(Some(0)));
    }

    #[test]
    fn map_entries_keep_their_pairing() {
        let encode = |pairs: &[(&str, &str)]| {
            let mut encoder = Encoder::new("t");
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            encoder.pairs(&pairs);
            encoder.finish()
        };
        assert_ne!(
            encode(&[("a", "b"), ("c", "d")]),
            encode(&[("a", "bc"), ("", "d")])
        );
        assert_ne!(encode(&[("a", "b")]), encode(&[("a", "b"), ("", "")]));
    }

    #[test]
    fn row_hash_depends_on_previous_hash() {
        let encoding = b"row";
        let first = row_hash(&"00".repeat(32), encoding);
        let second = row_hash(&"01".repeat(32), encoding);
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
        assert_eq!(
            first,
            row_hash(&"00".repeat(32), encoding),
            "hashing is deterministic"
        );
    }
}
