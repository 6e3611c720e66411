//! Configuration: one YAML file, overridden by environment variables.
//!
//! Every setting can be set by `AGENT_LEDGER_` plus its YAML path in upper
//! snake case (`clickhouse.url` is `AGENT_LEDGER_CLICKHOUSE_URL`), and a few
//! short names are fixed aliases (`AGENT_LEDGER_SETTLE`,
//! `AGENT_LEDGER_ROOT_WAIT`). Each default is defined once, in the
//! `Default` impls below. [`Config::load`] returns a validated value.

mod env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::preset::Preset;
use crate::validate::Policy;

pub use env::ALIASES;

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
    pub admin: AdminConfig,
    pub clickhouse: ClickhouseConfig,
    pub assembler: AssemblerConfig,
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
    /// Maximum request size, before and after decompression. The OTLP
    /// specification recommends accepting at least 64 MiB.
    pub max_request_size: ByteSize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
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
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        ClickhouseConfig {
            url: "http://127.0.0.1:8123".to_owned(),
            database: "agent_ledger".to_owned(),
            user: "default".to_owned(),
            password: String::new(),
            password_file: None,
            create_schema: true,
            batch_rows: 20_000,
            batch_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
        }
    }
}

impl ClickhouseConfig {
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
            max_retained_spans: 2_000_000,
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
        env::apply(&mut tree, vars)?;
        let origin = path
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("(environment)"));
        let config: Config =
            serde_yaml_ng::from_value(tree).map_err(|source| ConfigError::Parse {
                path: origin,
                source,
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
        if !is_identifier(&self.clickhouse.database) {
            return invalid(
                "clickhouse.database",
                "must be a plain identifier: letters, digits and underscores",
            );
        }
        if self.clickhouse.batch_rows == 0 {
            return invalid("clickhouse.batch_rows", "must be at least 1");
        }
        if self.otlp.max_request_size.as_u64() < 1024 {
            return invalid("otlp.max_request_size", "must be at least 1KiB");
        }
        self.validate_seal()?;
        crate::redact::Redactor::new(&self.redact).map_err(|message| ConfigError::Invalid {
            setting: "redact.patterns",
            message,
        })?;
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

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
