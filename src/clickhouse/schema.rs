//! The ClickHouse schema and its migrations.
//!
//! Each migration has a version; `agent_schema_migrations` records the
//! versions applied. Statements use `IF NOT EXISTS` so that a migration
//! interrupted half-way can run again.

/// Rows kept in each table's deduplication window: a batch retried after an
/// ambiguous failure is dropped by ClickHouse when its token is among the
/// last this many inserts. Set on every MergeTree table, the materialized
/// view's target included, because a non-replicated table has no window by
/// default.
pub const DEDUPLICATION_WINDOW: u32 = 10_000;

/// One schema migration.
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub statements: Vec<String>,
}

/// Every migration, in order, for database `database`.
pub fn migrations(database: &str) -> Vec<Migration> {
    vec![Migration {
        version: 1,
        description: "audit trail tables",
        statements: vec![
            agent_spans(database),
            trace_id_ts(database),
            trace_id_ts_view(database),
            agent_workflows(database),
            agent_rejected_spans(database),
            agent_credentials(database),
            agent_ledger_entries(database),
            agent_ledger_checkpoints(database),
            agent_verify_runs(database),
        ],
    }]
}

/// The statements that create the database and the migrations table.
pub fn bootstrap(database: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.agent_schema_migrations (
    Version UInt32,
    Description String,
    AppliedAt DateTime64(9, 'UTC')
) ENGINE = MergeTree
ORDER BY Version"
        ),
    ]
}

/// The full DDL as one script, for `agent-ledger schema`.
pub fn script(database: &str) -> String {
    let mut script = String::new();
    for statement in bootstrap(database) {
        script.push_str(&statement);
        script.push_str(";\n\n");
    }
    for migration in migrations(database) {
        script.push_str(&format!(
            "-- migration {}: {}\n",
            migration.version, migration.description
        ));
        for statement in migration.statements {
            script.push_str(&statement);
            script.push_str(";\n\n");
        }
    }
    script
}

fn settings() -> String {
    format!(
        "SETTINGS index_granularity = 8192, non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    )
}

const OTEL_COLUMNS: &str = "    Timestamp DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),";

fn agent_spans(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_spans (
{OTEL_COLUMNS}
    `Events.Timestamp` Array(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    `Events.Name` Array(LowCardinality(String)) CODEC(ZSTD(1)),
    `Events.Attributes` Array(Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    `Links.TraceId` Array(String) CODEC(ZSTD(1)),
    `Links.SpanId` Array(String) CODEC(ZSTD(1)),
    `Links.TraceState` Array(String) CODEC(ZSTD(1)),
    `Links.Attributes` Array(Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    WorkflowRootSpanId String CODEC(ZSTD(1)),
    StepIndex UInt32 CODEC(ZSTD(1)),
    StepKind LowCardinality(String) CODEC(ZSTD(1)),
    AgentName LowCardinality(String) CODEC(ZSTD(1)),
    AgentId String CODEC(ZSTD(1)),
    AgentVersion LowCardinality(String) CODEC(ZSTD(1)),
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    OriginType LowCardinality(String) CODEC(ZSTD(1)),
    OriginSource LowCardinality(String) CODEC(ZSTD(1)),
    TaskSpec String CODEC(ZSTD(1)),
    AuthorizedBy String CODEC(ZSTD(1)),
    CredentialId String CODEC(ZSTD(1)),
    CredentialIssuer LowCardinality(String) CODEC(ZSTD(1)),
    CredentialScopes Array(String) CODEC(ZSTD(1)),
    CredentialIssuedAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    CredentialExpiresAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    WorkflowCredentialId String CODEC(ZSTD(1)),
    ToolName LowCardinality(String) CODEC(ZSTD(1)),
    ToolCallId String CODEC(ZSTD(1)),
    Violations Array(LowCardinality(String)) CODEC(ZSTD(1)),
    RedactedCount UInt32 CODEC(ZSTD(1)),
    RedactedKinds Array(LowCardinality(String)) CODEC(ZSTD(1)),
    WriteAction UInt8 CODEC(ZSTD(1)),
    Sender LowCardinality(String) CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Late UInt8 CODEC(ZSTD(1)),
    Segment UInt32 CODEC(ZSTD(1)),
    PrevHash String CODEC(ZSTD(1)),
    RowHash String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_credential CredentialId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(ReceivedAt)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), TraceId)
{}",
        settings()
    )
}

fn trace_id_ts(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_spans_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
{}",
        settings()
    )
}

fn trace_id_ts_view(database: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.agent_spans_trace_id_ts_mv
TO {database}.agent_spans_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {database}.agent_spans
WHERE TraceId != ''
GROUP BY TraceId"
    )
}

fn agent_workflows(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_workflows (
    WorkflowId String CODEC(ZSTD(1)),
    RootSpanId String CODEC(ZSTD(1)),
    Revision UInt32 CODEC(ZSTD(1)),
    Segment UInt32 CODEC(ZSTD(1)),
    Status LowCardinality(String) CODEC(ZSTD(1)),
    Reasons Array(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    OriginType LowCardinality(String) CODEC(ZSTD(1)),
    OriginSource LowCardinality(String) CODEC(ZSTD(1)),
    TaskSpec String CODEC(ZSTD(1)),
    AuthorizedBy String CODEC(ZSTD(1)),
    OriginReceivedAt DateTime64(9, 'UTC') CODEC(ZSTD(1)),
    AgentName LowCardinality(String) CODEC(ZSTD(1)),
    AgentId String CODEC(ZSTD(1)),
    AgentVersion LowCardinality(String) CODEC(ZSTD(1)),
    AgentNames Array(String) CODEC(ZSTD(1)),
    ModelNames Array(String) CODEC(ZSTD(1)),
    ModelVersions Array(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    CredentialId String CODEC(ZSTD(1)),
    CredentialIssuer LowCardinality(String) CODEC(ZSTD(1)),
    CredentialScopes Array(String) CODEC(ZSTD(1)),
    CredentialIssuedAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    CredentialExpiresAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    StepCount UInt32 CODEC(ZSTD(1)),
    ToolsUsed Array(String) CODEC(ZSTD(1)),
    ViolationCount UInt32 CODEC(ZSTD(1)),
    RowCount UInt32 CODEC(ZSTD(1)),
    HeaderHash String CODEC(ZSTD(1)),
    ChainHead String CODEC(ZSTD(1)),
    Sender LowCardinality(String) CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    WrittenAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    LedgerInstanceId LowCardinality(String) CODEC(ZSTD(1)),
    LedgerSeq UInt64 CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(ReceivedAt)
ORDER BY (WorkflowId, RootSpanId, Revision)
{}",
        settings()
    )
}

fn agent_rejected_spans(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_rejected_spans (
{OTEL_COLUMNS}
    Reason LowCardinality(String) CODEC(ZSTD(1)),
    Detail String CODEC(ZSTD(1)),
    Sender LowCardinality(String) CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    RawSpan String CODEC(ZSTD(1)),
    LedgerInstanceId LowCardinality(String) CODEC(ZSTD(1)),
    LedgerSeq UInt64 CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(ReceivedAt)
ORDER BY (TraceId, SpanId, ReceivedAt)
{}",
        settings()
    )
}

fn agent_credentials(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_credentials (
    CredentialId String CODEC(ZSTD(1)),
    WorkflowId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Issuer LowCardinality(String) CODEC(ZSTD(1)),
    Scopes Array(String) CODEC(ZSTD(1)),
    IssuedAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    ExpiresAt Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    IssuerService LowCardinality(String) CODEC(ZSTD(1)),
    Sender LowCardinality(String) CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    LedgerInstanceId LowCardinality(String) CODEC(ZSTD(1)),
    LedgerSeq UInt64 CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(ReceivedAt)
ORDER BY (CredentialId, WorkflowId)
{}",
        settings()
    )
}

fn agent_ledger_entries(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_ledger_entries (
    InstanceId LowCardinality(String) CODEC(ZSTD(1)),
    Seq UInt64 CODEC(Delta, ZSTD(1)),
    Kind LowCardinality(String) CODEC(ZSTD(1)),
    WorkflowId String CODEC(ZSTD(1)),
    RootSpanId String CODEC(ZSTD(1)),
    Segment UInt32 CODEC(ZSTD(1)),
    ChainHead String CODEC(ZSTD(1)),
    RowCount UInt32 CODEC(ZSTD(1)),
    PrevEntryHash String CODEC(ZSTD(1)),
    EntryHash String CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(ReceivedAt)
ORDER BY (InstanceId, Seq)
{}",
        settings()
    )
}

fn agent_ledger_checkpoints(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_ledger_checkpoints (
    InstanceId LowCardinality(String) CODEC(ZSTD(1)),
    FirstSeq UInt64 CODEC(ZSTD(1)),
    LastSeq UInt64 CODEC(ZSTD(1)),
    LastEntryHash String CODEC(ZSTD(1)),
    SignedAt DateTime64(9, 'UTC') CODEC(ZSTD(1)),
    KeyId String CODEC(ZSTD(1)),
    Signature String CODEC(ZSTD(1))
) ENGINE = MergeTree
ORDER BY (InstanceId, LastSeq)
{}",
        settings()
    )
}

fn agent_verify_runs(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.agent_verify_runs (
    RunId String CODEC(ZSTD(1)),
    InstanceId LowCardinality(String) CODEC(ZSTD(1)),
    StartedAt DateTime64(9, 'UTC') CODEC(ZSTD(1)),
    FinishedAt DateTime64(9, 'UTC') CODEC(ZSTD(1)),
    PeriodFrom Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    PeriodTo Nullable(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    WorkflowId String CODEC(ZSTD(1)),
    Result LowCardinality(String) CODEC(ZSTD(1)),
    RowsChecked UInt64 CODEC(ZSTD(1)),
    EntriesChecked UInt64 CODEC(ZSTD(1)),
    CheckpointsChecked UInt64 CODEC(ZSTD(1)),
    Findings UInt64 CODEC(ZSTD(1)),
    FindingCounts Map(LowCardinality(String), UInt64) CODEC(ZSTD(1)),
    KeyIds Array(String) CODEC(ZSTD(1)),
    Version LowCardinality(String) CODEC(ZSTD(1))
) ENGINE = MergeTree
ORDER BY (StartedAt, RunId)
{}",
        settings()
    )
}
