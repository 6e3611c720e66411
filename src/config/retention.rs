//! Retention per table: how long ClickHouse keeps rows, counted from the
//! time agent-ledger received them.
//!
//! The setting is written as one duration for every table (`retention:
//! 400d`) or as a map with one duration per table. Tables left out of the
//! map keep their default. The schema turns each value into a `TTL` of whole
//! days, rounded up, so a table never keeps rows for less than configured.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::ConfigError;

/// Shortest retention accepted: TTLs are whole days, and a shorter value
/// would drop rows before anyone could read them.
pub const MIN_RETENTION: Duration = Duration::from_secs(86_400);

/// Default retention of every table: 400 days covers a 12-month SOC 2
/// Type II observation period plus the weeks an audit takes after it.
const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

/// Retention of each table that has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// `agent_spans` and `agent_spans_trace_id_ts`, its trace index.
    #[serde(with = "whole_days")]
    pub agent_spans: Duration,
    #[serde(with = "whole_days")]
    pub agent_workflows: Duration,
    #[serde(with = "whole_days")]
    pub agent_rejected_spans: Duration,
    #[serde(with = "whole_days")]
    pub agent_credentials: Duration,
    #[serde(with = "whole_days")]
    pub agent_ledger_entries: Duration,
    /// Counted from `SignedAt`, the time the instance signed the checkpoint.
    #[serde(with = "whole_days")]
    pub agent_ledger_checkpoints: Duration,
    /// Counted from `StartedAt`, the time the verify run started.
    #[serde(with = "whole_days")]
    pub agent_verify_runs: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::all(DEFAULT_RETENTION)
    }
}

impl Retention {
    /// Returns the same retention for every table.
    pub fn all(duration: Duration) -> Self {
        Retention {
            agent_spans: duration,
            agent_workflows: duration,
            agent_rejected_spans: duration,
            agent_credentials: duration,
            agent_ledger_entries: duration,
            agent_ledger_checkpoints: duration,
            agent_verify_runs: duration,
        }
    }

    /// Lists every table name with its retention.
    pub fn tables(&self) -> [(&'static str, Duration); 7] {
        [
            ("agent_spans", self.agent_spans),
            ("agent_workflows", self.agent_workflows),
            ("agent_rejected_spans", self.agent_rejected_spans),
            ("agent_credentials", self.agent_credentials),
            ("agent_ledger_entries", self.agent_ledger_entries),
            ("agent_ledger_checkpoints", self.agent_ledger_checkpoints),
            ("agent_verify_runs", self.agent_verify_runs),
        ]
    }

    /// Retention of `table` in whole days, rounded up; `None` for a table
    /// without one.
    pub fn days(&self, table: &str) -> Option<u64> {
        let (_, duration) = self.tables().into_iter().find(|(name, _)| *name == table)?;
        Some(duration.as_secs().div_ceil(MIN_RETENTION.as_secs()))
    }

    /// Rejects a retention shorter than [`MIN_RETENTION`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (table, duration) in self.tables() {
            if duration < MIN_RETENTION {
                return Err(ConfigError::Invalid {
                    setting: "clickhouse.retention",
                    message: format!(
                        "{table} is set to {}; the minimum is 1d, and SOC 2 Type II evidence needs at least 1y",
                        humantime::format_duration(duration)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Durations written in days (`400d`) when they are whole days, because
/// humantime's own form of 400 days is `1year 1month 4days 7h 26m 24s`.
mod whole_days {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let seconds = duration.as_secs();
        if seconds.is_multiple_of(86_400) && duration.subsec_nanos() == 0 {
            serializer.serialize_str(&format!("{}d", seconds / 86_400))
        } else {
            serializer.serialize_str(&humantime::format_duration(*duration).to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Accepts one duration for every table, or a map per table.
pub(super) fn deserialize_retention<'de, D>(deserializer: D) -> Result<Retention, D::Error>
where
    D: Deserializer<'de>,
{
    use serde::de::Error;
    let value = serde_yaml_ng::Value::deserialize(deserializer)?;
    match value {
        serde_yaml_ng::Value::String(text) => humantime::parse_duration(&text)
            .map(Retention::all)
            .map_err(|error| {
                D::Error::custom(format!(
                    "invalid retention {text:?}: {error}; write it like 400d or 2y"
                ))
            }),
        other => serde_yaml_ng::from_value(other).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_in_days() {
        let retention = Retention {
            agent_verify_runs: Duration::from_secs(36 * 3_600),
            ..Retention::default()
        };
        let yaml = serde_yaml_ng::to_string(&retention).unwrap();
        assert!(yaml.contains("agent_spans: 400d\n"), "{yaml}");
        assert!(yaml.contains("agent_verify_runs: 1day 12h\n"), "{yaml}");
        let read: Retention = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(read, retention);
    }

    #[test]
    fn days_round_up() {
        let retention = Retention::all(Duration::from_secs(86_400 * 365 + 1));
        assert_eq!(retention.days("agent_spans"), Some(366));
        assert_eq!(retention.days("agent_schema_migrations"), None);
    }

    #[test]
    fn default_covers_audit_year() {
        let retention = Retention::default();
        for (table, _) in retention.tables() {
            assert!(retention.days(table).unwrap() >= 400, "{table}");
        }
    }

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<crate::config::Config, ConfigError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        crate::config::Config::load_with(Some(file.path()), &vars)
    }

    fn days(config: &crate::config::Config, table: &str) -> u64 {
        config.clickhouse.retention.days(table).unwrap()
    }

    #[test]
    fn one_value_in_file_sets_every_table() {
        let config = load("clickhouse:\n  retention: 2y\n", &[]).unwrap();
        for (table, _) in config.clickhouse.retention.tables() {
            assert_eq!(days(&config, table), 731, "{table}");
        }
    }

    #[test]
    fn map_in_file_keeps_other_defaults() {
        let config = load("clickhouse:\n  retention:\n    agent_spans: 800d\n", &[]).unwrap();
        assert_eq!(days(&config, "agent_spans"), 800);
        assert_eq!(days(&config, "agent_workflows"), 400);
    }

    #[test]
    fn table_variable_overrides_one_value() {
        let vars = [
            ("AGENT_LEDGER_CLICKHOUSE_RETENTION", "500d"),
            ("AGENT_LEDGER_CLICKHOUSE_RETENTION_AGENT_SPANS", "800d"),
        ];
        let config = load("", &vars).unwrap();
        assert_eq!(days(&config, "agent_spans"), 800);
        assert_eq!(days(&config, "agent_credentials"), 500);
    }

    #[test]
    fn table_variable_overrides_file_value() {
        let vars = [("AGENT_LEDGER_CLICKHOUSE_RETENTION_AGENT_VERIFY_RUNS", "3y")];
        let config = load("clickhouse:\n  retention: 450d\n", &vars).unwrap();
        assert_eq!(days(&config, "agent_verify_runs"), 1096);
        assert_eq!(days(&config, "agent_spans"), 450);
    }

    #[test]
    fn too_short_retention_rejected() {
        let error = load("clickhouse:\n  retention:\n    agent_workflows: 12h\n", &[]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("agent_workflows is set to 12h"),
            "{message}"
        );
    }

    #[test]
    fn unknown_table_rejected() {
        let error = load("clickhouse:\n  retention:\n    agent_span: 800d\n", &[]).unwrap_err();
        assert!(error.to_string().contains("agent_span"), "{error}");
    }

    #[test]
    fn cluster_from_environment() {
        let config = load("", &[("AGENT_LEDGER_CLICKHOUSE_CLUSTER", "audit")]).unwrap();
        assert_eq!(config.clickhouse.cluster.as_deref(), Some("audit"));
        let error = load("", &[("AGENT_LEDGER_CLICKHOUSE_CLUSTER", "audit-1")]).unwrap_err();
        assert!(error.to_string().contains("clickhouse.cluster"), "{error}");
    }
}
