//! The ClickHouse schema and its migrations, for one server or a cluster.
//!
//! Each migration has a version; `agent_schema_migrations` records the
//! versions applied. Statements use `IF NOT EXISTS` so that a migration
//! interrupted half-way can run again.
//!
//! On one server every table is a `MergeTree`. On a cluster
//! (`clickhouse.cluster`) every statement runs `ON CLUSTER`, each table is a
//! `ReplicatedMergeTree` named `<table>_local`, and a `Distributed` table under
//! the plain name routes reads and writes to the shards. Queries, dashboards
//! and the sink therefore use the same table names in both layouts.
//!
//! Rows expire by a `TTL` on the time agent-ledger received them
//! (`ReceivedAt`), never on a time a sender reported. Checkpoints and verify
//! runs, which agent-ledger creates itself, expire by the time it signed or
//! started them. Tables are partitioned by that time and set
//! `ttl_only_drop_parts = 1`, so ClickHouse drops whole expired parts instead
//! of rewriting parts row by row. The migrations table never expires.

use crate::config::{ClickhouseConfig, Retention};

/// Rows kept in each table's deduplication window: a batch retried after an
/// ambiguous failure is dropped by ClickHouse when its token is among the
/// last this many inserts. Set on every MergeTree table, the materialized
/// view's target included, because a non-replicated table has no window by
/// default.
pub const DEDUPLICATION_WINDOW: u32 = 10_000;

/// The newest migration version.
pub const LATEST_VERSION: u32 = 1;

/// One schema migration.
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub statements: Vec<String>,
}

/// Target database, cluster and retention of the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub database: String,
    /// Cluster for `ON CLUSTER` statements; `None` for one server.
    pub cluster: Option<String>,
    pub retention: Retention,
}

/// One MergeTree table of the schema.
struct Table {
    name: &'static str,
    /// Column and index definitions.
    columns: String,
    partition_by: Option<&'static str>,
    order_by: &'static str,
    /// The column the TTL counts from, and the retention setting that
    /// gives its length.
    ttl: Option<(&'static str, &'static str)>,
    /// Expression that picks the shard of a row in a cluster: rows of one
    /// workflow land on one shard.
    shard_key: &'static str,
}

impl Schema {
    /// Builds the schema the configuration describes.
    pub fn new(config: &ClickhouseConfig) -> Self {
        Schema {
            database: config.database.clone(),
            cluster: config.cluster.clone(),
            retention: config.retention.clone(),
        }
    }

    /// Returns every migration, in order.
    pub fn migrations(&self) -> Vec<Migration> {
        let mut statements = Vec::new();
        for table in [agent_spans(), trace_id_ts()] {
            statements.extend(self.create_table(&table));
        }
        statements.push(self.trace_id_ts_view());
        let rest = [
            agent_workflows(),
            agent_rejected_spans(),
            agent_credentials(),
            agent_ledger_entries(),
            agent_ledger_checkpoints(),
            agent_verify_runs(),
        ];
        for table in rest {
            statements.extend(self.create_table(&table));
        }
        vec![Migration {
            version: 1,
            description: "audit trail tables",
            statements,
        }]
    }

    /// Returns the statements that create the database and the migrations
    /// table.
    pub fn bootstrap(&self) -> Vec<String> {
        let mut statements = vec![format!(
            "CREATE DATABASE IF NOT EXISTS {}{}",
            self.database,
            self.on_cluster()
        )];
        statements.extend(self.create_table(&schema_migrations()));
        statements
    }

    /// Writes the full DDL as one script, for `agent-ledger schema`.
    pub fn script(&self) -> String {
        let mut script = String::new();
        for statement in self.bootstrap() {
            script.push_str(&statement);
            script.push_str(";\n\n");
        }
        for migration in self.migrations() {
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

    fn on_cluster(&self) -> String {
        self.cluster
            .as_ref()
            .map(|cluster| format!(" ON CLUSTER {cluster}"))
            .unwrap_or_default()
    }

    /// `CREATE TABLE` for one server, or the replicated table and its
    /// `Distributed` table for a cluster.
    fn create_table(&self, table: &Table) -> Vec<String> {
        let database = &self.database;
        let Some(cluster) = &self.cluster else {
            return vec![format!(
                "CREATE TABLE IF NOT EXISTS {database}.{} (\n{}\n) ENGINE = MergeTree\n{}",
                table.name,
                table.columns,
                self.table_clauses(table, "non_replicated_deduplication_window")
            )];
        };
        let local = format!("{}_local", table.name);
        let engine = format!(
            "ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/{local}', '{{replica}}')"
        );
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster} (\n{}\n) ENGINE = {engine}\n{}",
                table.columns,
                self.table_clauses(table, "replicated_deduplication_window")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{} ON CLUSTER {cluster} AS {database}.{local}\nENGINE = Distributed({cluster}, {database}, {local}, {})",
                table.name, table.shard_key
            ),
        ]
    }

    /// PARTITION BY, ORDER BY, TTL and SETTINGS of a table.
    fn table_clauses(&self, table: &Table, window_setting: &str) -> String {
        let mut clauses = String::new();
        if let Some(partition_by) = table.partition_by {
            clauses.push_str(&format!("PARTITION BY {partition_by}\n"));
        }
        clauses.push_str(&format!("ORDER BY {}\n", table.order_by));
        let mut settings =
            format!("index_granularity = 8192, {window_setting} = {DEDUPLICATION_WINDOW}");
        // NOTE: `CREATE TABLE IF NOT EXISTS` leaves an existing table as it
        // is, so a changed retention needs `ALTER TABLE ... MODIFY TTL`.
        if let Some((column, setting)) = table.ttl {
            let days = self
                .retention
                .days(setting)
                .expect("every TTL names a retention setting");
            clauses.push_str(&format!("TTL toDateTime({column}) + INTERVAL {days} DAY\n"));
            settings.push_str(", ttl_only_drop_parts = 1");
        }
        clauses.push_str(&format!("SETTINGS {settings}"));
        clauses
    }

    /// Creates the materialized view that fills the trace index. On a cluster it
    /// runs on every shard, from the local span table to the local index.
    fn trace_id_ts_view(&self) -> String {
        let database = &self.database;
        let suffix = if self.cluster.is_some() { "_local" } else { "" };
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.agent_spans_trace_id_ts_mv{}
TO {database}.agent_spans_trace_id_ts{suffix}
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End,
    max(ReceivedAt) AS ReceivedAt
FROM {database}.agent_spans{suffix}
WHERE TraceId != ''
GROUP BY TraceId",
            self.on_cluster()
        )
    }
}

fn schema_migrations() -> Table {
    Table {
        name: "agent_schema_migrations",
        columns: "    Version UInt32,
    Description String,
    AppliedAt DateTime64(9, 'UTC')"
            .to_owned(),
        partition_by: None,
        order_by: "Version",
        ttl: None,
        shard_key: "Version",
    }
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

fn agent_spans() -> Table {
    Table {
        name: "agent_spans",
        columns: format!(
            "{OTEL_COLUMNS}
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
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1"
        ),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(ServiceName, SpanName, toDateTime(Timestamp), TraceId)",
        ttl: Some(("ReceivedAt", "agent_spans")),
        shard_key: "cityHash64(TraceId)",
    }
}

fn trace_id_ts() -> Table {
    Table {
        name: "agent_spans_trace_id_ts",
        columns: "    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1"
            .to_owned(),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(TraceId, Start)",
        ttl: Some(("ReceivedAt", "agent_spans")),
        shard_key: "cityHash64(TraceId)",
    }
}

fn agent_workflows() -> Table {
    Table {
        name: "agent_workflows",
        columns: "    WorkflowId String CODEC(ZSTD(1)),
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
    LedgerSeq UInt64 CODEC(ZSTD(1))"
            .to_owned(),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(WorkflowId, RootSpanId, Revision)",
        ttl: Some(("ReceivedAt", "agent_workflows")),
        shard_key: "cityHash64(WorkflowId)",
    }
}

fn agent_rejected_spans() -> Table {
    Table {
        name: "agent_rejected_spans",
        columns: format!(
            "{OTEL_COLUMNS}
    Reason LowCardinality(String) CODEC(ZSTD(1)),
    Detail String CODEC(ZSTD(1)),
    Sender LowCardinality(String) CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    RawSpan String CODEC(ZSTD(1)),
    LedgerInstanceId LowCardinality(String) CODEC(ZSTD(1)),
    LedgerSeq UInt64 CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1"
        ),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(TraceId, SpanId, ReceivedAt)",
        ttl: Some(("ReceivedAt", "agent_rejected_spans")),
        shard_key: "cityHash64(TraceId)",
    }
}

fn agent_credentials() -> Table {
    Table {
        name: "agent_credentials",
        columns: "    CredentialId String CODEC(ZSTD(1)),
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
    LedgerSeq UInt64 CODEC(ZSTD(1))"
            .to_owned(),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(CredentialId, WorkflowId)",
        ttl: Some(("ReceivedAt", "agent_credentials")),
        shard_key: "cityHash64(CredentialId)",
    }
}

fn agent_ledger_entries() -> Table {
    Table {
        name: "agent_ledger_entries",
        columns: "    InstanceId LowCardinality(String) CODEC(ZSTD(1)),
    Seq UInt64 CODEC(Delta, ZSTD(1)),
    Kind LowCardinality(String) CODEC(ZSTD(1)),
    WorkflowId String CODEC(ZSTD(1)),
    RootSpanId String CODEC(ZSTD(1)),
    Segment UInt32 CODEC(ZSTD(1)),
    ChainHead String CODEC(ZSTD(1)),
    RowCount UInt32 CODEC(ZSTD(1)),
    PrevEntryHash String CODEC(ZSTD(1)),
    EntryHash String CODEC(ZSTD(1)),
    ReceivedAt DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))"
            .to_owned(),
        partition_by: Some("toDate(ReceivedAt)"),
        order_by: "(InstanceId, Seq)",
        ttl: Some(("ReceivedAt", "agent_ledger_entries")),
        shard_key: "cityHash64(InstanceId)",
    }
}

fn agent_ledger_checkpoints() -> Table {
    Table {
        name: "agent_ledger_checkpoints",
        columns: "    InstanceId LowCardinality(String) CODEC(ZSTD(1)),
    FirstSeq UInt64 CODEC(ZSTD(1)),
    LastSeq UInt64 CODEC(ZSTD(1)),
    LastEntryHash String CODEC(ZSTD(1)),
    SignedAt DateTime64(9, 'UTC') CODEC(ZSTD(1)),
    KeyId String CODEC(ZSTD(1)),
    Signature String CODEC(ZSTD(1))"
            .to_owned(),
        partition_by: Some("toYYYYMM(SignedAt)"),
        order_by: "(InstanceId, LastSeq)",
        ttl: Some(("SignedAt", "agent_ledger_checkpoints")),
        shard_key: "cityHash64(InstanceId)",
    }
}

fn agent_verify_runs() -> Table {
    Table {
        name: "agent_verify_runs",
        columns: "    RunId String CODEC(ZSTD(1)),
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
    Version LowCardinality(String) CODEC(ZSTD(1))"
            .to_owned(),
        partition_by: Some("toYYYYMM(StartedAt)"),
        order_by: "(StartedAt, RunId)",
        ttl: Some(("StartedAt", "agent_verify_runs")),
        shard_key: "cityHash64(RunId)",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Tables with rows that expire, and the column their TTL counts from.
    const EXPIRING: [(&str, &str); 8] = [
        ("agent_spans", "ReceivedAt"),
        ("agent_spans_trace_id_ts", "ReceivedAt"),
        ("agent_workflows", "ReceivedAt"),
        ("agent_rejected_spans", "ReceivedAt"),
        ("agent_credentials", "ReceivedAt"),
        ("agent_ledger_entries", "ReceivedAt"),
        ("agent_ledger_checkpoints", "SignedAt"),
        ("agent_verify_runs", "StartedAt"),
    ];

    fn schema(cluster: Option<&str>) -> Schema {
        Schema {
            database: "audit_db".to_owned(),
            cluster: cluster.map(str::to_owned),
            retention: Retention::default(),
        }
    }

    fn statements(schema: &Schema) -> Vec<String> {
        let mut all = schema.bootstrap();
        all.extend(
            schema
                .migrations()
                .into_iter()
                .flat_map(|migration| migration.statements),
        );
        all
    }

    /// Finds the statement that creates `name` exactly (not `name_local`).
    fn create(statements: &[String], name: &str) -> String {
        let prefix = format!("CREATE TABLE IF NOT EXISTS audit_db.{name} ");
        statements
            .iter()
            .find(|statement| statement.starts_with(&prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn cluster_statements_run_on_cluster() {
        for statement in statements(&schema(Some("audit"))) {
            assert!(statement.contains(" ON CLUSTER audit"), "{statement}");
        }
    }

    #[test]
    fn cluster_tables_replicated_behind_distributed() {
        let all = statements(&schema(Some("audit")));
        for (table, _) in EXPIRING
            .iter()
            .chain([("agent_schema_migrations", "")].iter())
        {
            let local = create(&all, &format!("{table}_local"));
            let path = format!(
                "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/audit_db/{table}_local', '{{replica}}')"
            );
            assert!(local.contains(&path), "{local}");
            assert!(
                local.contains(&format!(
                    "replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
                )),
                "{local}"
            );
            let distributed = create(&all, table);
            let engine = format!(
                "AS audit_db.{table}_local\nENGINE = Distributed(audit, audit_db, {table}_local, "
            );
            assert!(distributed.contains(&engine), "{distributed}");
        }
        let spans = create(&all, "agent_spans");
        assert!(
            spans.ends_with("cityHash64(TraceId))"),
            "rows of one workflow share a shard: {spans}"
        );
    }

    #[test]
    fn cluster_view_reads_local_tables() {
        let all = statements(&schema(Some("audit")));
        let view = all
            .iter()
            .find(|statement| statement.contains("MATERIALIZED VIEW"))
            .unwrap();
        assert!(
            view.contains("ON CLUSTER audit\nTO audit_db.agent_spans_trace_id_ts_local"),
            "{view}"
        );
        assert!(view.contains("FROM audit_db.agent_spans_local"), "{view}");
    }

    #[test]
    fn ttl_on_receive_time_in_both_layouts() {
        for cluster in [None, Some("audit")] {
            let all = statements(&schema(cluster));
            for (table, column) in EXPIRING {
                let name = if cluster.is_some() {
                    format!("{table}_local")
                } else {
                    table.to_owned()
                };
                let statement = create(&all, &name);
                assert!(
                    statement.contains(&format!("TTL toDateTime({column}) + INTERVAL 400 DAY")),
                    "{statement}"
                );
                assert!(statement.contains("ttl_only_drop_parts = 1"), "{statement}");
            }
            let migrations = create(
                &all,
                if cluster.is_some() {
                    "agent_schema_migrations_local"
                } else {
                    "agent_schema_migrations"
                },
            );
            assert!(
                !migrations.contains("TTL"),
                "applied migrations never expire: {migrations}"
            );
        }
    }

    #[test]
    fn single_node_uses_merge_tree() {
        let all = statements(&schema(None));
        for statement in &all {
            assert!(
                !statement.contains("ON CLUSTER") && !statement.contains("Replicated"),
                "{statement}"
            );
        }
        let spans = create(&all, "agent_spans");
        assert!(
            spans.contains("ENGINE = MergeTree\nPARTITION BY toDate(ReceivedAt)"),
            "{spans}"
        );
        assert!(
            spans.contains(&format!(
                "non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
            )),
            "{spans}"
        );
    }

    #[test]
    fn retention_per_table() {
        let mut schema = schema(None);
        schema.retention.agent_spans = Duration::from_secs(800 * 86_400);
        schema.retention.agent_verify_runs = Duration::from_secs(3 * 365 * 86_400);
        let all = statements(&schema);
        assert!(create(&all, "agent_spans").contains("+ INTERVAL 800 DAY"));
        assert!(
            create(&all, "agent_spans_trace_id_ts").contains("+ INTERVAL 800 DAY"),
            "the trace index follows the spans"
        );
        assert!(create(&all, "agent_verify_runs").contains("+ INTERVAL 1095 DAY"));
        assert!(create(&all, "agent_workflows").contains("+ INTERVAL 400 DAY"));
    }

    #[test]
    fn latest_version_matches_migrations() {
        let newest = schema(None)
            .migrations()
            .iter()
            .map(|migration| migration.version)
            .max();
        assert_eq!(newest, Some(LATEST_VERSION));
    }
}
