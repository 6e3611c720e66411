//! Prometheus metrics. Every label value is bounded: reason codes, statuses,
//! table names, never ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::quarantine::Reason;

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// A label set with one `status` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// A label set with one `table` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// A label set with one `code` label (gRPC status or ClickHouse exception).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// A label set with one `kind` label (a kind of redacted secret).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// A label set with one `limit` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

/// A label set for reloads of files: what was reloaded and the outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    pub kind: String,
    pub result: String,
}

/// Every metric the receiver exports.
#[derive(Default)]
pub struct Metrics {
    pub requests: Family<CodeLabel, Counter>,
    pub spans_received: Counter,
    pub spans_stored: Counter,
    pub spans_rejected: Family<ReasonLabel, Counter>,
    pub spans_duplicate: Counter,
    pub workflows: Family<StatusLabel, Counter>,
    pub late_segments: Counter,
    pub insert_retries: Family<TableLabel, Counter>,
    pub insert_failures: Family<TableLabel, Counter>,
    pub rows_written: Family<TableLabel, Counter>,
    pub buffered_spans: Gauge,
    pub completion_backlog: Gauge,
    pub pending_workflows: Gauge,
    pub sink_queue_rows: Gauge,
    pub insert_retries_by_code: Family<CodeLabel, Counter>,
    pub spool_bytes: Gauge,
    pub spool_segments: Gauge,
    pub spool_live_entries: Gauge,
    pub spool_oldest_live_seconds: Gauge,
    pub spool_fsyncs: Gauge,
    pub spool_replayed_records: Counter,
    pub spool_compacted_spans: Counter,
    pub secrets_redacted: Family<KindLabel, Counter>,
    pub unauthenticated: Family<ReasonLabel, Counter>,
    pub limited: Family<LimitLabel, Counter>,
    pub tls_handshake_failures: Family<ReasonLabel, Counter>,
    pub connections_refused: Counter,
    pub open_connections: Gauge,
    pub attributes_dropped: Counter,
    pub attribute_values_truncated: Counter,
    pub reloads: Family<ReloadLabel, Counter>,
}

impl Metrics {
    /// Registers every metric under the `agent_ledger` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("agent_ledger");
        registry.register(
            "requests",
            "OTLP export requests by response code",
            self.requests.clone(),
        );
        registry.register(
            "spans_received",
            "Spans received in OTLP requests",
            self.spans_received.clone(),
        );
        registry.register(
            "spans_stored",
            "Spans written to agent_spans",
            self.spans_stored.clone(),
        );
        registry.register(
            "spans_rejected",
            "Spans written to agent_rejected_spans, by reason",
            self.spans_rejected.clone(),
        );
        registry.register(
            "spans_duplicate",
            "Re-sent spans acknowledged but not stored again",
            self.spans_duplicate.clone(),
        );
        registry.register(
            "workflows",
            "Workflow verdicts written, by status",
            self.workflows.clone(),
        );
        registry.register(
            "late_segments",
            "Late segments written to existing workflows",
            self.late_segments.clone(),
        );
        registry.register(
            "clickhouse_insert_retries",
            "ClickHouse inserts retried, by table",
            self.insert_retries.clone(),
        );
        registry.register(
            "clickhouse_insert_failures",
            "ClickHouse insert attempts that failed, by table",
            self.insert_failures.clone(),
        );
        registry.register(
            "clickhouse_rows_written",
            "Rows confirmed by ClickHouse, by table",
            self.rows_written.clone(),
        );
        registry.register(
            "buffered_spans",
            "Spans waiting in the assembler",
            self.buffered_spans.clone(),
        );
        registry.register(
            "completion_backlog",
            "Traces due for completion that wait for room in the sink's queue",
            self.completion_backlog.clone(),
        );
        registry.register(
            "pending_workflows",
            "Traces with spans waiting in the assembler",
            self.pending_workflows.clone(),
        );
        registry.register(
            "sink_queue_rows",
            "Rows waiting to be written to ClickHouse",
            self.sink_queue_rows.clone(),
        );
        registry.register(
            "clickhouse_insert_retries_by_code",
            "ClickHouse inserts retried, by ClickHouse exception code or client error kind",
            self.insert_retries_by_code.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes in the spool's segment files",
            self.spool_bytes.clone(),
        );
        registry.register(
            "spool_segments",
            "Spool segment files",
            self.spool_segments.clone(),
        );
        registry.register(
            "spool_live_entries",
            "Spooled spans not yet confirmed by ClickHouse",
            self.spool_live_entries.clone(),
        );
        registry.register(
            "spool_oldest_live_seconds",
            "Age of the oldest spool segment holding unconfirmed spans",
            self.spool_oldest_live_seconds.clone(),
        );
        registry.register(
            "spool_fsyncs",
            "Syncs of spool segment files since start",
            self.spool_fsyncs.clone(),
        );
        registry.register(
            "spool_replayed_records",
            "Spool records replayed at start",
            self.spool_replayed_records.clone(),
        );
        registry.register(
            "spool_compacted_spans",
            "Waiting spans copied forward so that old segments can be deleted",
            self.spool_compacted_spans.clone(),
        );
        registry.register(
            "secrets_redacted",
            "Secrets replaced with [REDACTED:<kind>] in received spans, by kind",
            self.secrets_redacted.clone(),
        );
        self.register_security(registry);
        for reason in Reason::ALL {
            self.rejected(reason);
        }
    }

    /// Counts the redactions of one request.
    pub fn count_redactions(&self, redactions: &crate::redact::Redactions) {
        for (kind, count) in &redactions.by_kind {
            self.secrets_redacted
                .get_or_create(&KindLabel { kind: kind.clone() })
                .inc_by(*count);
        }
    }

    fn register_security(&self, registry: &mut Registry) {
        registry.register(
            "requests_unauthenticated",
            "Requests refused as unauthenticated, by reason",
            self.unauthenticated.clone(),
        );
        registry.register(
            "requests_limited",
            "Requests refused by a limit: overloaded (concurrency) or rate_limited (per sender)",
            self.limited.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because limits.max_connections was reached",
            self.connections_refused.clone(),
        );
        registry.register(
            "open_connections",
            "Open OTLP connections",
            self.open_connections.clone(),
        );
        registry.register(
            "attributes_dropped",
            "Attributes dropped by limits.max_span_attributes",
            self.attributes_dropped.clone(),
        );
        registry.register(
            "attribute_values_truncated",
            "Attribute values truncated by limits.max_attribute_value_size",
            self.attribute_values_truncated.clone(),
        );
        registry.register(
            "reloads",
            "Reloads of certificate and token files, by kind and result",
            self.reloads.clone(),
        );
    }

    /// The rejected-span counter of one reason.
    pub fn rejected(&self, reason: Reason) -> Counter {
        self.spans_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.code().to_owned(),
            })
            .clone()
    }
}
