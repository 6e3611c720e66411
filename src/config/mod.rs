//! Configuration: one YAML file, overridden by environment variables.
//!
//! Every setting can be set by `AGENT_LEDGER_` plus its YAML path in upper
//! snake case (`clickhouse.url` is `AGENT_LEDGER_CLICKHOUSE_URL`), and a few
//! short names are fixed aliases (`AGENT_LEDGER_SETTLE`,
//! `AGENT_LEDGER_ROOT_WAIT`). Each default is defined once, in the
//! `Default` impls below. [`Config::load`] returns a validated value.

mod env;
mod retention;
mod security;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::preset::Preset;
use crate::validate::Policy;

pub use env::ALIASES;
pub use retention::{MIN_RETENTION, Retention};
pub use security::{AuthConfig, AuthRequire, LimitsConfig, TlsConfig};

/// A configuration error; the message names the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("invalid value {value:?} in environment variable {name}: {message}")]
    Env {
        name: String,
        value: String,
        message: String,
    },
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub otlp: OtlpConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    pub clickhouse: ClickhouseConfig,
    pub assembler: AssemblerConfig,
    pub spool: SpoolConfig,
    pub policy: Policy,
    pub presets: PresetsConfig,
    pub seal: SealConfig,
    pub redact: RedactConfig,
    pub log: LogConfig,
}

/// OTLP listeners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/traces`, protobuf or JSON).
    pub http_addr: SocketAddr,
    /// Maximum request size, before and after decompression. The OTLP
    /// specification recommends accepting at least 64 MiB.
    pub max_request_size: ByteSize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_size: ByteSize::mib(64),
        }
    }
}

/// The admin endpoint: `/metrics`, `/healthz`, `/readyz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// The ClickHouse connection and write batching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickhouseConfig {
    /// HTTP(S) URL of the server.
    pub url: String,
    pub database: String,
    pub user: String,
    /// Password; prefer `AGENT_LEDGER_CLICKHOUSE_PASSWORD` or `password_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for an `https://` URL, in
    /// place of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Create and migrate the schema at start-up.
    pub create_schema: bool,
    /// A batch is written when it holds this many rows...
    pub batch_rows: usize,
    /// ...or when its oldest row has waited this long.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// First retry delay after a retryable failure; doubles up to
    /// `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Timeout of one insert or query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// ClickHouse cluster name (from the server's `remote_servers`). When
    /// set, the schema is created `ON CLUSTER` with replicated tables behind
    /// `Distributed` tables, and inserts wait until every shard stored them.
    pub cluster: Option<String>,
    /// How long each table keeps rows, counted from `ReceivedAt`, the time
    /// agent-ledger received them: one duration for every table, or one per
    /// table.
    #[serde(deserialize_with = "retention::deserialize_retention")]
    pub retention: Retention,
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        ClickhouseConfig {
            url: "http://127.0.0.1:8123".to_owned(),
            database: "agent_ledger".to_owned(),
            user: "default".to_owned(),
            password: String::new(),
            password_file: None,
            ca_file: None,
            create_schema: true,
            batch_rows: 10_000,
            batch_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
            cluster: None,
            retention: Retention::default(),
        }
    }
}

impl ClickhouseConfig {
    /// The URL without user information, for logs and errors.
    pub fn display_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://[hidden]@{}", &rest[at + 1..]),
            None => self.url.clone(),
        }
    }

    /// The password from the setting or the file, without a trailing newline.
    pub fn resolved_password(&self) -> Result<String, ConfigError> {
        match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| text.lines().next().unwrap_or_default().to_owned())
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            None => Ok(self.password.clone()),
        }
    }
}

/// Workflow assembly timings and memory bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssemblerConfig {
    /// Quiet time after which a workflow whose root is present is complete;
    /// longer than the OTel SDK's 5 s batch delay.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How long spans wait for their root before the workflow is written as
    /// `incomplete`.
    #[serde(with = "humantime_serde")]
    pub root_wait: Duration,
    /// Maximum spans buffered while waiting.
    pub max_buffered_spans: usize,
    /// Maximum approximate memory of buffered spans.
    pub max_buffered_bytes: ByteSize,
    /// Maximum spans whose ids are remembered after their workflow was
    /// written, for duplicate detection and late spans.
    pub max_retained_spans: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            settle: Duration::from_secs(10),
            root_wait: Duration::from_secs(600),
            max_buffered_spans: 1_000_000,
            max_buffered_bytes: ByteSize::gib(1),
            max_retained_spans: 500_000,
        }
    }
}

/// The durable spool between the receiver and the assembler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the segment files (`AGENT_LEDGER_SPOOL_DIR`); the
    /// default is `spool` in `$AGENT_LEDGER_DATA`, or in `.data`.
    pub dir: PathBuf,
    /// Disk budget (`AGENT_LEDGER_SPOOL_MAX_BYTES`). When the spool holds
    /// this much, requests are answered `UNAVAILABLE` until ClickHouse has
    /// confirmed older spans.
    pub max_bytes: ByteSize,
    /// Size at which a new segment file is started.
    pub segment_bytes: ByteSize,
    /// How long the writer gathers concurrent appends before one sync; `0s`
    /// syncs as soon as the queued appends are written.
    #[serde(with = "humantime_serde")]
    pub group_commit_interval: Duration,
    /// Maximum bytes written under one sync.
    pub group_commit_max_bytes: ByteSize,
    /// Age after which a segment's spans that still wait for their workflow
    /// are copied forward, so that the segment can be deleted.
    #[serde(with = "humantime_serde")]
    pub compact_after: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        let data = std::env::var_os("AGENT_LEDGER_DATA")
            .map_or_else(|| PathBuf::from(".data"), PathBuf::from);
        SpoolConfig {
            dir: data.join("spool"),
            max_bytes: ByteSize::gib(1),
            segment_bytes: ByteSize::mib(64),
            group_commit_interval: Duration::from_millis(2),
            group_commit_max_bytes: ByteSize::mib(8),
            compact_after: Duration::from_secs(60),
        }
    }
}

/// Attribute presets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresetsConfig {
    /// Built-in and custom presets to use, in precedence order.
    pub enabled: Vec<String>,
    /// User-defined presets, referenced by name in `enabled`.
    pub custom: Vec<Preset>,
}

impl Default for PresetsConfig {
    fn default() -> Self {
        PresetsConfig {
            enabled: crate::preset::builtin_presets()
                .into_iter()
                .map(|preset| preset.name)
                .collect(),
            custom: Vec::new(),
        }
    }
}

/// The hash-chained ledger and its checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Names this receiver's ledger (`AGENT_LEDGER_INSTANCE_ID`); each
    /// instance keeps its own sequence, so it must stay the same across
    /// restarts and differ between instances. Defaults to the host name.
    pub instance_id: String,
    /// Ed25519 private key (PKCS#8 PEM) that signs checkpoints
    /// (`AGENT_LEDGER_SIGNING_KEY_FILE`); without it checkpoints are
    /// unsigned.
    pub signing_key_file: Option<PathBuf>,
    /// Folder that receives one JSON file per checkpoint
    /// (`AGENT_LEDGER_CHECKPOINT_DIR`), kept outside ClickHouse.
    pub checkpoint_dir: Option<PathBuf>,
    /// Time between checkpoints; one is also written at shutdown.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Retention of the tables (the TTL on `ReceivedAt`), for `verify`: a
    /// missing row or entry received before now minus this is reported as
    /// expired instead of missing. Unset means nothing expires.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

/// Longest instance id; it is part of every ledger row and file name.
const MAX_INSTANCE_ID_LEN: usize = 128;

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            instance_id: gethostname::gethostname().to_string_lossy().into_owned(),
            signing_key_file: None,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_secs(60),
            retention: None,
        }
    }
}

/// Secret redaction in the receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Scan attribute values and event names for secrets and replace them
    /// with `[REDACTED:<kind>]`.
    pub enabled: bool,
    /// Extra patterns, each with a kind name (lower-case letters, digits
    /// and `_`) and a regular expression (Rust `regex` syntax).
    pub patterns: Vec<crate::redact::CustomPattern>,
    /// Attribute keys whose values are never scanned.
    pub skip_keys: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            patterns: Vec::new(),
            skip_keys: Vec::new(),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, such as `info` or `agent_ledger=debug`; the
    /// `RUST_LOG` variable overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads the file (if given), applies the environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Config::load_with(path, &vars)
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with(
        path: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut tree = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let tree: serde_yaml_ng::Value =
                    serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: path.to_owned(),
                        source,
                    })?;
                if tree.is_null() {
                    serde_yaml_ng::Value::Mapping(Default::default())
                } else {
                    tree
                }
            }
            None => serde_yaml_ng::Value::Mapping(Default::default()),
        };
        let file_tree = tree.clone();
        let applied = env::apply(&mut tree, vars)?;
        let origin = path
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("(environment)"));
        let config: Config = serde_yaml_ng::from_value(tree).map_err(|source| {
            blame_variable(&file_tree, &applied).unwrap_or(ConfigError::Parse {
                path: origin,
                source,
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        if self.assembler.settle.is_zero() {
            return invalid(
                "assembler.settle",
                "must be greater than zero, for example 10s",
            );
        }
        if self.assembler.root_wait < self.assembler.settle {
            return invalid(
                "assembler.root_wait",
                "must not be shorter than assembler.settle",
            );
        }
        if !(self.clickhouse.url.starts_with("http://")
            || self.clickhouse.url.starts_with("https://"))
        {
            return invalid(
                "clickhouse.url",
                "must start with http:// or https://, for example http://127.0.0.1:8123",
            );
        }
        if self.clickhouse.ca_file.is_some() && !self.clickhouse.url.starts_with("https://") {
            return invalid(
                "clickhouse.ca_file",
                "is set but clickhouse.url does not start with https://; use the server's HTTPS port, for example https://clickhouse.internal:8443",
            );
        }
        if !is_identifier(&self.clickhouse.database) {
            return invalid(
                "clickhouse.database",
                "must be a plain identifier: letters, digits and underscores",
            );
        }
        if let Some(cluster) = &self.clickhouse.cluster
            && !is_identifier(cluster)
        {
            return Err(ConfigError::Invalid {
                setting: "clickhouse.cluster",
                message: format!(
                    "{cluster:?} is not a plain identifier: use letters, digits and underscores"
                ),
            });
        }
        self.clickhouse.retention.validate()?;
        if self.clickhouse.batch_rows == 0 {
            return invalid("clickhouse.batch_rows", "must be at least 1");
        }
        if self.spool.segment_bytes.as_u64() < 64 * 1024 {
            return invalid("spool.segment_bytes", "must be at least 64KiB");
        }
        if self.spool.max_bytes < self.spool.segment_bytes {
            return invalid(
                "spool.max_bytes",
                "must not be smaller than spool.segment_bytes",
            );
        }
        if self.spool.compact_after < self.assembler.settle {
            return invalid(
                "spool.compact_after",
                "must not be shorter than assembler.settle",
            );
        }
        if self.otlp.max_request_size.as_u64() < 1024 {
            return invalid("otlp.max_request_size", "must be at least 1KiB");
        }
        self.validate_seal()?;
        crate::redact::Redactor::new(&self.redact).map_err(|message| ConfigError::Invalid {
            setting: "redact.patterns",
            message,
        })?;
        security::validate(&self.tls, &self.auth, &self.limits)?;
        self.presets().map(|_| ())
    }

    fn validate_seal(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        let id = &self.seal.instance_id;
        if id.trim().is_empty()
            || id.len() > MAX_INSTANCE_ID_LEN
            || id.chars().any(char::is_control)
        {
            return invalid(
                "seal.instance_id",
                "must be 1 to 128 characters without control characters, for example the host name",
            );
        }
        if self.seal.checkpoint_interval.is_zero() {
            return invalid(
                "seal.checkpoint_interval",
                "must be greater than zero, for example 1m",
            );
        }
        if self
            .seal
            .retention
            .is_some_and(|retention| retention.is_zero())
        {
            return invalid(
                "seal.retention",
                "must be greater than zero, for example 90d, or left unset",
            );
        }
        Ok(())
    }

    /// The enabled presets, in order.
    pub fn presets(&self) -> Result<Vec<Preset>, ConfigError> {
        let mut available = crate::preset::builtin_presets();
        available.extend(self.presets.custom.iter().cloned());
        self.presets
            .enabled
            .iter()
            .map(|name| {
                available
                    .iter()
                    .rev()
                    .find(|preset| &preset.name == name)
                    .cloned()
                    .ok_or_else(|| ConfigError::Invalid {
                        setting: "presets.enabled",
                        message: format!(
                            "unknown preset {name:?}: use a built-in one (genai, openinference, openllmetry, crewai, strands) or define it under presets.custom"
                        ),
                    })
            })
            .collect()
    }

    /// The configuration as YAML with defaults filled in, secrets left out.
    pub fn to_yaml(&self) -> String {
        let mut shown = self.clone();
        shown.clickhouse.password = String::new();
        serde_yaml_ng::to_string(&shown).unwrap_or_default()
    }
}

/// The environment variable whose value alone makes the configuration fail
/// to parse, so that the error names it rather than the file.
fn blame_variable(
    file_tree: &serde_yaml_ng::Value,
    applied: &[(String, String)],
) -> Option<ConfigError> {
    applied.iter().find_map(|(name, value)| {
        let mut tree = file_tree.clone();
        let single = [(name.clone(), value.clone())];
        env::apply(&mut tree, &single).ok()?;
        let error = serde_yaml_ng::from_value::<Config>(tree).err()?;
        let shown = if name.contains("PASSWORD") {
            "[hidden]".to_owned()
        } else {
            value.clone()
        };
        Some(ConfigError::Env {
            name: name.clone(),
            value: shown,
            message: error.to_string(),
        })
    })
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temporary file");
        file.write_all(text.as_bytes()).expect("write YAML");
        file
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_with(None, &vars(pairs))
    }

    #[test]
    fn defaults_without_file_or_env() {
        let config = load_env(&[]).expect("defaults are valid");

        assert_eq!(
            config,
            Config::default(),
            "no file and no variables give the defaults"
        );
        assert_eq!(
            config.otlp.grpc_addr.to_string(),
            "127.0.0.1:4317",
            "OTLP gRPC address"
        );
        assert_eq!(
            config.otlp.max_request_size,
            ByteSize::mib(64),
            "maximum request size"
        );
        assert_eq!(
            config.admin.addr.to_string(),
            "127.0.0.1:9464",
            "admin address"
        );
        assert_eq!(config.clickhouse.database, "agent_ledger", "database");
        assert_eq!(config.clickhouse.batch_rows, 10_000, "batch rows");
        assert_eq!(config.assembler.settle, Duration::from_secs(10), "settle");
        assert_eq!(
            config.assembler.root_wait,
            Duration::from_secs(600),
            "root wait"
        );
        assert_eq!(
            config.presets.enabled,
            vec!["genai", "openinference", "openllmetry", "crewai", "strands"],
            "every built-in preset"
        );
        assert_eq!(config.policy, Policy::default(), "default policy");
    }

    #[test]
    fn yaml_file_values() {
        let file = yaml_file(
            "
otlp:
  grpc_addr: 0.0.0.0:14317
  max_request_size: 8MiB
clickhouse:
  url: https://clickhouse.internal:8443
  database: audit
  batch_interval: 250ms
assembler:
  settle: 2s
  root_wait: 5m
presets:
  enabled: [openinference, genai]
policy:
  require: [origin.type, credential.id]
log:
  format: json
",
        );

        let config = Config::load_with(Some(file.path()), &[]).expect("file is valid");

        assert_eq!(
            config.otlp.grpc_addr.to_string(),
            "0.0.0.0:14317",
            "gRPC address"
        );
        assert_eq!(
            config.otlp.max_request_size,
            ByteSize::mib(8),
            "request size"
        );
        assert_eq!(
            config.clickhouse.url, "https://clickhouse.internal:8443",
            "url"
        );
        assert_eq!(config.clickhouse.database, "audit", "database");
        assert_eq!(
            config.clickhouse.batch_interval,
            Duration::from_millis(250),
            "interval"
        );
        assert_eq!(
            config.clickhouse.batch_rows, 10_000,
            "unset value keeps its default"
        );
        assert_eq!(config.assembler.settle, Duration::from_secs(2), "settle");
        assert_eq!(
            config.assembler.root_wait,
            Duration::from_secs(300),
            "root wait"
        );
        assert_eq!(
            config.presets.enabled,
            vec!["openinference", "genai"],
            "presets"
        );
        assert_eq!(config.policy.require.len(), 2, "policy requirements");
        assert_eq!(config.log.format, LogFormat::Json, "log format");
    }

    #[test]
    fn empty_yaml_file_gives_defaults() {
        let file = yaml_file("");

        let config = Config::load_with(Some(file.path()), &[]).expect("empty file is valid");

        assert_eq!(config, Config::default(), "defaults");
    }

    #[test]
    fn env_overrides_by_path_name() {
        type Read = fn(&Config) -> String;
        let cases: Vec<(&str, &str, Read, &str)> = vec![
            (
                "AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS",
                "500",
                |config| config.clickhouse.batch_rows.to_string(),
                "500",
            ),
            (
                "AGENT_LEDGER_OTLP_MAX_REQUEST_SIZE",
                "1MiB",
                |config| config.otlp.max_request_size.as_u64().to_string(),
                "1048576",
            ),
            (
                "AGENT_LEDGER_ASSEMBLER_SETTLE",
                "500ms",
                |config| format!("{:?}", config.assembler.settle),
                "500ms",
            ),
            (
                "AGENT_LEDGER_CLICKHOUSE_URL",
                "https://ch.example:8443",
                |config| config.clickhouse.url.clone(),
                "https://ch.example:8443",
            ),
            (
                "AGENT_LEDGER_CLICKHOUSE_CREATE_SCHEMA",
                "false",
                |config| config.clickhouse.create_schema.to_string(),
                "false",
            ),
            (
                "AGENT_LEDGER_CLICKHOUSE_PASSWORD_FILE",
                "/run/secrets/clickhouse",
                |config| format!("{:?}", config.clickhouse.password_file),
                "Some(\"/run/secrets/clickhouse\")",
            ),
            (
                "AGENT_LEDGER_ASSEMBLER_MAX_BUFFERED_BYTES",
                "256MiB",
                |config| config.assembler.max_buffered_bytes.as_u64().to_string(),
                "268435456",
            ),
            (
                "AGENT_LEDGER_LOG_LEVEL",
                "agent_ledger=debug",
                |config| config.log.level.clone(),
                "agent_ledger=debug",
            ),
        ];
        for (name, value, read, expected) in cases {
            let config = load_env(&[(name, value)])
                .unwrap_or_else(|error| panic!("{name}={value} is valid: {error}"));

            assert_eq!(read(&config), expected, "variable {name}");
        }
    }

    #[test]
    fn env_overrides_yaml_file() {
        let file = yaml_file("clickhouse:\n  batch_rows: 100\n");

        let config = Config::load_with(
            Some(file.path()),
            &vars(&[("AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS", "200")]),
        )
        .expect("valid");

        assert_eq!(
            config.clickhouse.batch_rows, 200,
            "the variable wins over the file"
        );
    }

    #[test]
    fn env_aliases() {
        let config = load_env(&[
            ("AGENT_LEDGER_SETTLE", "3s"),
            ("AGENT_LEDGER_ROOT_WAIT", "20m"),
            ("AGENT_LEDGER_OTLP_GRPC_ADDR", "0.0.0.0:14317"),
        ])
        .expect("valid");

        assert_eq!(
            config.assembler.settle,
            Duration::from_secs(3),
            "AGENT_LEDGER_SETTLE"
        );
        assert_eq!(
            config.assembler.root_wait,
            Duration::from_secs(1200),
            "AGENT_LEDGER_ROOT_WAIT"
        );
        assert_eq!(
            config.otlp.grpc_addr.to_string(),
            "0.0.0.0:14317",
            "AGENT_LEDGER_OTLP_GRPC_ADDR"
        );
    }

    #[test]
    fn env_path_name_beats_alias() {
        let path_first = [
            ("AGENT_LEDGER_ASSEMBLER_SETTLE", "3s"),
            ("AGENT_LEDGER_SETTLE", "7s"),
        ];
        let alias_first = [
            ("AGENT_LEDGER_SETTLE", "7s"),
            ("AGENT_LEDGER_ASSEMBLER_SETTLE", "3s"),
        ];
        for (name, pairs) in [
            ("path name first", path_first),
            ("alias first", alias_first),
        ] {
            let config = load_env(&pairs).expect("valid");

            assert_eq!(
                config.assembler.settle,
                Duration::from_secs(3),
                "case {name}"
            );
        }
    }

    #[test]
    fn env_list_settings() {
        let cases = [
            ("comma-separated", "genai,openinference"),
            ("with spaces", " genai , openinference "),
            ("YAML flow sequence", "[genai, openinference]"),
        ];
        for (name, value) in cases {
            let config = load_env(&[("AGENT_LEDGER_PRESETS_ENABLED", value)]).expect("valid");

            assert_eq!(
                config.presets.enabled,
                vec!["genai", "openinference"],
                "case {name}"
            );
        }
    }

    #[test]
    fn env_policy_requirements() {
        let config = load_env(&[("AGENT_LEDGER_POLICY_REQUIRE", "origin.type,model.version")])
            .expect("valid");

        assert_eq!(
            config.policy.require,
            vec![
                crate::validate::Requirement::OriginType,
                crate::validate::Requirement::ModelVersion
            ],
            "requirements from a comma-separated list"
        );
    }

    #[test]
    fn env_invalid_values_name_variable() {
        let cases = [
            ("AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS", "many"),
            ("AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS", "-5"),
            ("AGENT_LEDGER_CLICKHOUSE_CREATE_SCHEMA", "maybe"),
            ("AGENT_LEDGER_PRESETS_ENABLED", "[genai"),
        ];
        for (name, value) in cases {
            let error = load_env(&[(name, value)]).expect_err("invalid value");

            assert!(
                matches!(error, ConfigError::Env { .. }),
                "{name}={value}: environment error, got {error:?}"
            );
            assert!(
                error.to_string().contains(name),
                "{name}={value}: message names the variable: {error}"
            );
        }
    }

    #[test]
    fn env_invalid_string_values_name_variable() {
        let cases = [
            ("AGENT_LEDGER_ASSEMBLER_SETTLE", "soon"),
            ("AGENT_LEDGER_OTLP_MAX_REQUEST_SIZE", "big"),
            ("AGENT_LEDGER_OTLP_GRPC_ADDR", "localhost"),
        ];
        for (name, value) in cases {
            let error = load_env(&[(name, value)]).expect_err("invalid value");

            assert!(
                error.to_string().contains(name),
                "{name}={value}: message names the variable: {error}"
            );
        }
    }

    #[test]
    fn env_ignores_unknown_variables() {
        let config =
            load_env(&[("AGENT_LEDGER_NO_SUCH_SETTING", "1"), ("HOME", "/root")]).expect("valid");

        assert_eq!(
            config,
            Config::default(),
            "unknown variables change nothing"
        );
    }

    #[test]
    fn unknown_preset_rejected() {
        let error = load_env(&[("AGENT_LEDGER_PRESETS_ENABLED", "genai,langfuse")])
            .expect_err("unknown preset");

        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    setting: "presets.enabled",
                    ..
                }
            ),
            "error names presets.enabled: {error:?}"
        );
        assert!(
            error.to_string().contains("langfuse"),
            "message names the preset: {error}"
        );
    }

    #[test]
    fn custom_preset_enabled() {
        let file = yaml_file(
            "
presets:
  enabled: [acme, genai]
  custom:
    - name: acme
      agent_name: [acme.agent]
",
        );

        let config = Config::load_with(Some(file.path()), &[]).expect("valid");
        let presets = config.presets().expect("presets resolve");

        let names: Vec<&str> = presets.iter().map(|preset| preset.name.as_str()).collect();
        assert_eq!(names, vec!["acme", "genai"], "custom preset first");
        assert_eq!(
            presets[0].agent_name,
            vec!["acme.agent"],
            "custom attribute names"
        );
    }

    #[test]
    fn validate_rejects_settings() {
        let cases = [
            (
                "root wait shorter than settle",
                vec![
                    ("AGENT_LEDGER_SETTLE", "30s"),
                    ("AGENT_LEDGER_ROOT_WAIT", "10s"),
                ],
                "assembler.root_wait",
            ),
            (
                "zero settle",
                vec![("AGENT_LEDGER_SETTLE", "0s")],
                "assembler.settle",
            ),
            (
                "url without scheme",
                vec![("AGENT_LEDGER_CLICKHOUSE_URL", "clickhouse:8123")],
                "clickhouse.url",
            ),
            (
                "database with a dot",
                vec![("AGENT_LEDGER_CLICKHOUSE_DATABASE", "audit.spans")],
                "clickhouse.database",
            ),
            (
                "zero batch rows",
                vec![("AGENT_LEDGER_CLICKHOUSE_BATCH_ROWS", "0")],
                "clickhouse.batch_rows",
            ),
            (
                "request size below 1KiB",
                vec![("AGENT_LEDGER_OTLP_MAX_REQUEST_SIZE", "512B")],
                "otlp.max_request_size",
            ),
        ];
        for (name, pairs, expected) in cases {
            let error = load_env(&pairs).expect_err("invalid setting");

            let setting = match &error {
                ConfigError::Invalid { setting, .. } => *setting,
                other => panic!("case {name}: expected an invalid setting, got {other:?}"),
            };
            assert_eq!(setting, expected, "case {name}");
        }
    }

    #[test]
    fn unknown_yaml_key_rejected() {
        let cases = [
            ("top level", "otlpp:\n  grpc_addr: 0.0.0.0:4317\n", "otlpp"),
            ("nested", "clickhouse:\n  urll: http://x:8123\n", "urll"),
        ];
        for (name, yaml, key) in cases {
            let file = yaml_file(yaml);

            let error = Config::load_with(Some(file.path()), &[]).expect_err("unknown key");

            assert!(
                matches!(error, ConfigError::Parse { .. }),
                "case {name}: parse error, got {error:?}"
            );
            assert!(
                error.to_string().contains(key),
                "case {name}: message names {key}: {error}"
            );
        }
    }

    #[test]
    fn missing_file_rejected() {
        let error = Config::load_with(Some(Path::new("/nonexistent/agent-ledger.yaml")), &[])
            .expect_err("missing file");

        assert!(
            matches!(error, ConfigError::Read { .. }),
            "read error, got {error:?}"
        );
    }

    #[test]
    fn to_yaml_omits_password() {
        let file = yaml_file("clickhouse:\n  password: from-file-secret\n");
        let from_file = Config::load_with(Some(file.path()), &[]).expect("valid");
        let from_env =
            load_env(&[("AGENT_LEDGER_CLICKHOUSE_PASSWORD", "from-env-secret")]).expect("valid");

        let file_yaml = from_file.to_yaml();
        let env_yaml = from_env.to_yaml();

        assert_eq!(
            from_env.clickhouse.password, "from-env-secret",
            "password is loaded"
        );
        assert!(
            !file_yaml.contains("from-file-secret"),
            "password from the file: {file_yaml}"
        );
        assert!(
            !env_yaml.contains("from-env-secret"),
            "password from the variable: {env_yaml}"
        );
        assert!(
            !env_yaml.contains("password:"),
            "no password key: {env_yaml}"
        );
    }

    #[test]
    fn example_file_holds_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent-ledger.yaml");

        let config = Config::load_with(Some(&path), &[]).expect("the example file is valid");

        assert_eq!(
            config,
            Config::default(),
            "every value in the example is the default"
        );
    }

    #[test]
    fn display_url_hides_user_information() {
        let cases = [
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            (
                "https://writer:secret@ch.internal:8443/",
                "https://[hidden]@ch.internal:8443/",
            ),
            (
                "https://ch.internal:8443/path@x",
                "https://ch.internal:8443/path@x",
            ),
        ];
        for (url, expected) in cases {
            let config = ClickhouseConfig {
                url: url.to_owned(),
                ..ClickhouseConfig::default()
            };

            assert_eq!(config.display_url(), expected, "url {url}");
        }
    }

    #[test]
    fn ca_file_needs_https() {
        let error = load_env(&[("AGENT_LEDGER_CLICKHOUSE_CA_FILE", "/etc/ca.pem")])
            .expect_err("CA file with an http URL");

        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    setting: "clickhouse.ca_file",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn security_settings_from_env() {
        let config = load_env(&[
            ("AGENT_LEDGER_TLS_CERT", "/etc/agent-ledger/server.pem"),
            ("AGENT_LEDGER_TLS_KEY", "/etc/agent-ledger/server.key"),
            (
                "AGENT_LEDGER_TLS_CLIENT_CA",
                "/etc/agent-ledger/clients.pem",
            ),
            (
                "AGENT_LEDGER_AUTH_TOKENS_FILE",
                "/etc/agent-ledger/tokens.yaml",
            ),
            ("AGENT_LEDGER_AUTH_REQUIRE", "either"),
            ("AGENT_LEDGER_LIMITS_SENDER_REQUESTS_PER_SECOND", "50"),
            ("AGENT_LEDGER_LIMITS_MAX_ATTRIBUTE_VALUE_SIZE", "1MiB"),
        ])
        .expect("valid");

        assert_eq!(
            config.tls.cert.as_deref(),
            Some(Path::new("/etc/agent-ledger/server.pem")),
            "certificate"
        );
        assert_eq!(
            config.tls.client_ca.as_deref(),
            Some(Path::new("/etc/agent-ledger/clients.pem")),
            "client CA"
        );
        assert_eq!(config.auth.require, Some(AuthRequire::Either), "mode");
        assert_eq!(config.limits.sender_requests_per_second, 50, "rate");
        assert_eq!(
            config.limits.attribute_limits().max_value_bytes,
            1024 * 1024,
            "value size"
        );
    }

    #[test]
    fn to_yaml_loads_back() {
        let config = load_env(&[
            ("AGENT_LEDGER_SETTLE", "2s"),
            ("AGENT_LEDGER_PRESETS_ENABLED", "strands"),
        ])
        .expect("valid");
        let file = yaml_file(&config.to_yaml());

        let reloaded = Config::load_with(Some(file.path()), &[]).expect("printed YAML is valid");

        assert_eq!(
            reloaded, config,
            "printed configuration loads back unchanged"
        );
    }
}
