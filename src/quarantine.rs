//! Quarantine: spans the receiver will not store in `agent_spans`, each with
//! the reason code of the contract and a detail an operator can act on.

use std::fmt;

use bytes::Bytes;

use crate::span::Str;

/// Reason codes of the `agent_rejected_spans.Reason` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidTraceId,
    InvalidSpanId,
    InvalidTimestamps,
    InvalidUtf8,
    NoWorkflowRoot,
    RootSpanMissing,
    Evicted,
    PolicyRejected,
    ConflictingDuplicate,
    ClickhouseRejected,
}

impl Reason {
    /// Every reason, for metrics that pre-register their label values.
    pub const ALL: [Reason; 10] = [
        Reason::InvalidTraceId,
        Reason::InvalidSpanId,
        Reason::InvalidTimestamps,
        Reason::InvalidUtf8,
        Reason::NoWorkflowRoot,
        Reason::RootSpanMissing,
        Reason::Evicted,
        Reason::PolicyRejected,
        Reason::ConflictingDuplicate,
        Reason::ClickhouseRejected,
    ];

    /// The code stored in ClickHouse and used as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidTraceId => "invalid_trace_id",
            Reason::InvalidSpanId => "invalid_span_id",
            Reason::InvalidTimestamps => "invalid_timestamps",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::NoWorkflowRoot => "no_workflow_root",
            Reason::RootSpanMissing => "root_span_missing",
            Reason::Evicted => "evicted",
            Reason::PolicyRejected => "policy_rejected",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
            Reason::ClickhouseRejected => "clickhouse_rejected",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A quarantined span in the shape of an `agent_rejected_spans` row: the
/// OpenTelemetry columns as far as they could be read, the reason, and the
/// span as received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RejectedSpan {
    pub timestamp_unix_nano: i64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub span_name: String,
    pub span_kind: String,
    pub service_name: String,
    pub resource_attributes: Vec<(Str, Str)>,
    pub scope_name: String,
    pub scope_version: String,
    pub span_attributes: Vec<(Str, Str)>,
    pub duration_nanos: u64,
    pub status_code: String,
    pub status_message: String,
    pub reason: Option<Reason>,
    pub detail: String,
    pub sender: String,
    pub received_at_unix_nano: i64,
    /// Protobuf `ResourceSpans` holding only this span, with its resource and
    /// scope, exactly as received.
    pub raw_span: Bytes,
    /// Where the span is in the spool; released once the row is stored.
    pub location: Option<crate::spool::Location>,
}

impl RejectedSpan {
    /// The quarantine row of a span that passed the receiver's checks.
    pub fn from_span(span: &crate::span::Span, reason: Reason, detail: String) -> Self {
        RejectedSpan {
            timestamp_unix_nano: span.start_unix_nano as i64,
            trace_id: span.trace_id.to_hex(),
            span_id: span.span_id.to_hex(),
            parent_span_id: span
                .parent_span_id
                .map(|id| id.to_hex())
                .unwrap_or_default(),
            trace_state: span.trace_state.to_string(),
            span_name: span.name.to_string(),
            span_kind: crate::span::span_kind_name(span.kind).to_owned(),
            service_name: span.resource.service_name.to_string(),
            resource_attributes: span.resource.attributes.to_text_pairs(),
            scope_name: span.scope.name.to_string(),
            scope_version: span.scope.version.to_string(),
            span_attributes: span.attributes.to_text_pairs(),
            duration_nanos: span.duration_nanos(),
            status_code: crate::span::status_code_name(span.status_code).to_owned(),
            status_message: span.status_message.to_string(),
            reason: Some(reason),
            detail,
            sender: span.sender.to_string(),
            received_at_unix_nano: span.received_at_unix_nano,
            raw_span: span.raw.clone(),
            location: span.spool,
        }
    }
}
