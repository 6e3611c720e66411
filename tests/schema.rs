//! The schema on the embedded ClickHouse. The single-node DDL with its TTLs
//! is applied and read back from `system.tables`. The cluster DDL needs
//! ZooKeeper or Keeper, so it cannot run here; the engine's own SQL parser
//! (`formatQuery`) checks it instead.

mod common;

use std::time::Duration;

use agent_ledger::clickhouse::schema::Schema;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn single_node_schema_has_ttls() {
    let mut config = test_config("schema_ttl");
    config.clickhouse.retention.agent_spans = Duration::from_secs(800 * 86_400);
    let schema = Schema::new(&config.clickhouse);
    let applied = agent_ledger::clickhouse::migrate(&config.clickhouse, &schema)
        .await
        .expect("schema applies");
    assert_eq!(applied, vec![1]);
    let client = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    let expected = [
        (
            "agent_spans",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(800)",
        ),
        (
            "agent_spans_trace_id_ts",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(800)",
        ),
        (
            "agent_workflows",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(400)",
        ),
        (
            "agent_rejected_spans",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(400)",
        ),
        (
            "agent_credentials",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(400)",
        ),
        (
            "agent_ledger_entries",
            "TTL toDateTime(ReceivedAt) + toIntervalDay(400)",
        ),
        (
            "agent_ledger_checkpoints",
            "TTL toDateTime(SignedAt) + toIntervalDay(400)",
        ),
        (
            "agent_verify_runs",
            "TTL toDateTime(StartedAt) + toIntervalDay(400)",
        ),
    ];
    for (table, ttl) in expected {
        let engine: String = client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(&config.clickhouse.database)
            .bind(table)
            .fetch_one()
            .await
            .unwrap_or_else(|error| panic!("{table}: {error}"));
        assert!(engine.starts_with("MergeTree"), "{table}: {engine}");
        assert!(engine.contains(ttl), "{table}: {engine}");
        assert!(
            engine.contains("ttl_only_drop_parts = 1"),
            "{table}: {engine}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_schema_parses() {
    let mut config = test_config("schema_cluster");
    config.clickhouse.cluster = Some("audit".to_owned());
    let schema = Schema::new(&config.clickhouse);
    let mut statements = schema.bootstrap();
    statements.extend(
        schema
            .migrations()
            .into_iter()
            .flat_map(|migration| migration.statements),
    );
    // formatQuery only parses, so the database need not exist.
    config.clickhouse.cluster = None;
    config.clickhouse.database = "default".to_owned();
    let client = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    let mut distributed = 0;
    for statement in &statements {
        let formatted: String = client
            .query_raw("SELECT formatQuery({statement:String})")
            .param("statement", statement.as_str())
            .fetch_one()
            .await
            .unwrap_or_else(|error| panic!("ClickHouse cannot parse:\n{statement}\n{error}"));
        assert!(formatted.contains("ON CLUSTER audit"), "{formatted}");
        if formatted.contains("ENGINE = Distributed(audit, ") {
            distributed += 1;
        }
    }
    assert_eq!(
        distributed, 9,
        "one Distributed table per table, the migrations table included"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_command_prints_cluster_ddl() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-ledger"))
        .args(["schema", "--cluster", "audit"])
        .env_remove("AGENT_LEDGER_CONFIG")
        .env("AGENT_LEDGER_CLICKHOUSE_RETENTION", "2y")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let script = String::from_utf8(output.stdout).unwrap();
    assert!(
        script.contains("CREATE DATABASE IF NOT EXISTS agent_ledger ON CLUSTER audit;"),
        "{script}"
    );
    assert!(script.contains("CREATE TABLE IF NOT EXISTS agent_ledger.agent_spans ON CLUSTER audit AS agent_ledger.agent_spans_local"));
    assert!(
        script.contains("TTL toDateTime(ReceivedAt) + INTERVAL 731 DAY"),
        "{script}"
    );

    let rejected = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-ledger"))
        .args(["schema", "--cluster", "audit-1"])
        .env_remove("AGENT_LEDGER_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("clickhouse.cluster"));
}

#[test]
fn cluster_client_waits_for_shards() {
    let mut config = test_config("schema_client");
    let single = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    assert_eq!(single.get_setting("distributed_foreground_insert"), None);
    config.clickhouse.cluster = Some("audit".to_owned());
    let clustered = agent_ledger::clickhouse::client(&config.clickhouse).unwrap();
    assert_eq!(
        clustered.get_setting("distributed_foreground_insert"),
        Some("1"),
        "a confirmed insert is stored on the shards"
    );
}
