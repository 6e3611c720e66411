//! ClickHouse: the schema, the row types, and the sink that writes them.
//!
//! Everything goes through the official `clickhouse` crate over HTTP with
//! LZ4 compression. `agent_spans` rows are encoded in RowBinary by
//! [`encode`] and sent as they are. The other tables' rows go through the
//! crate's serializer, which checks them against the table's schema.
//! Inserts are synchronous (`async_insert=0`, because ClickHouse 26.2
//! turned asynchronous inserts on by default and an asynchronous insert is
//! confirmed before it is stored).

pub mod columns;
pub mod encode;
pub mod rows;
pub mod schema;
pub mod sink;
mod tls;

use std::time::Duration;

use crate::config::ClickhouseConfig;

pub use sink::{Sink, SinkHandle};

/// A ClickHouse failure, classified for retrying.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: network errors, timeouts, overload, read-only replicas.
    #[error("ClickHouse is unavailable ({code}): {message}")]
    Retryable { code: String, message: String },
    /// Retrying the same request cannot succeed: bad data, schema mismatch.
    #[error("ClickHouse rejected the request ({code}): {message}")]
    Permanent { code: String, message: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid clickhouse.ca_file {path}: {message}")]
    CaFile {
        path: std::path::PathBuf,
        message: String,
    },
}

impl StoreError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Retryable { .. })
    }

    /// A bounded code for metrics and logs: the ClickHouse exception code,
    /// or the kind of client error.
    pub fn code(&self) -> &str {
        match self {
            StoreError::Retryable { code, .. } | StoreError::Permanent { code, .. } => code,
            StoreError::Config(_) | StoreError::CaFile { .. } => "config",
        }
    }
}

/// ClickHouse exception codes that describe a passing condition. The codes
/// are from ClickHouse's `ErrorCodes.cpp`: 3 UNEXPECTED_END_OF_FILE,
/// 159 TIMEOUT_EXCEEDED, 164 READONLY, 202 TOO_MANY_SIMULTANEOUS_QUERIES,
/// 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR, 241 MEMORY_LIMIT_EXCEEDED,
/// 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS, 285 TOO_FEW_LIVE_REPLICAS,
/// 319 UNKNOWN_STATUS_OF_INSERT, 425 SYSTEM_ERROR, 999 KEEPER_EXCEPTION,
/// 1000 POCO_EXCEPTION.
pub const RETRYABLE_CODES: [u32; 14] = [
    3, 159, 164, 202, 209, 210, 241, 242, 252, 285, 319, 425, 999, 1000,
];

/// Classifies an error of the `clickhouse` crate.
pub fn classify(error: clickhouse::error::Error) -> StoreError {
    use clickhouse::error::Error;
    let message = error_chain(&error);
    match &error {
        Error::Network(_) | Error::TimedOut => StoreError::Retryable {
            code: "network".to_owned(),
            message,
        },
        Error::BadResponse(text) => match exception_code(text) {
            Some(code) if RETRYABLE_CODES.contains(&code) => StoreError::Retryable {
                code: code.to_string(),
                message,
            },
            Some(code) => StoreError::Permanent {
                code: code.to_string(),
                message,
            },
            // A response without an exception code comes from a proxy or a
            // server that is starting or stopping.
            None => StoreError::Retryable {
                code: "http".to_owned(),
                message,
            },
        },
        _ => StoreError::Permanent {
            code: "client".to_owned(),
            message,
        },
    }
}

/// The error and its sources, so that a network error names its cause
/// (such as an unknown certificate issuer) rather than only "network error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The number in `Code: 241. DB::Exception: ...`.
pub fn exception_code(text: &str) -> Option<u32> {
    let start = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A client for `config`, with the database selected. An `https://` URL is
/// served over rustls, trusting `clickhouse.ca_file` when set and the
/// system's trust store otherwise.
pub fn client(config: &ClickhouseConfig) -> Result<clickhouse::Client, StoreError> {
    let password = config.resolved_password()?;
    let base = match tls::https_connector(config)? {
        Some(connector) => clickhouse::Client::with_http_client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(tls::POOL_IDLE_TIMEOUT)
                .build(connector),
        ),
        None => clickhouse::Client::default(),
    };
    let mut client = base
        .with_url(&config.url)
        .with_user(&config.user)
        .with_database(&config.database)
        .with_compression(clickhouse::Compression::Lz4)
        .with_setting("async_insert", "0")
        .with_setting(
            "max_execution_time",
            config.timeout.as_secs().max(1).to_string(),
        );
    if config.cluster.is_some() {
        // An insert into a Distributed table returns once every shard has
        // stored its rows, not when they are queued on the receiving node,
        // so a confirmed insert is stored.
        client = client.with_setting("distributed_foreground_insert", "1");
    }
    if !password.is_empty() {
        client = client.with_password(password);
    }
    Ok(client)
}

/// A client without a database selected, for creating it.
fn server_client(config: &ClickhouseConfig) -> Result<clickhouse::Client, StoreError> {
    Ok(client(config)?.with_database("default"))
}

/// Creates the database and applies every missing migration of `schema`.
/// Returns the versions applied now.
pub async fn migrate(
    config: &ClickhouseConfig,
    schema: &schema::Schema,
) -> Result<Vec<u32>, StoreError> {
    let database = &schema.database;
    let mut server = server_client(config)?;
    if schema.cluster.is_some() {
        server = server.with_setting("distributed_foreground_insert", "1");
    }
    for statement in schema.bootstrap() {
        server.query(&statement).execute().await.map_err(classify)?;
    }
    let applied: Vec<u32> = server
        .query(&format!(
            "SELECT Version FROM {database}.agent_schema_migrations"
        ))
        .fetch_all()
        .await
        .map_err(classify)?;
    let mut now_applied = Vec::new();
    for migration in schema.migrations() {
        if applied.contains(&migration.version) {
            continue;
        }
        for statement in &migration.statements {
            server.query(statement).execute().await.map_err(classify)?;
        }
        server
            .query(&format!(
                "INSERT INTO {database}.agent_schema_migrations (Version, Description, AppliedAt) VALUES (?, ?, now64(9))"
            ))
            .bind(migration.version)
            .bind(migration.description)
            .execute()
            .await
            .map_err(classify)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applied schema migration"
        );
        now_applied.push(migration.version);
    }
    Ok(now_applied)
}

/// Checks that the server responds and the schema is at the latest version.
pub async fn is_ready(client: &clickhouse::Client, database: &str) -> bool {
    let latest = schema::LATEST_VERSION;
    let query = format!("SELECT max(Version) FROM {database}.agent_schema_migrations");
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client.query(&query).fetch_one::<u32>(),
    )
    .await;
    matches!(result, Ok(Ok(version)) if version >= latest)
}

/// A quarantined span read back for re-admission: the span as received,
/// who sent it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecalledSpan {
    pub raw: Vec<u8>,
    pub sender: String,
    pub received_at_unix_nano: i64,
}

/// Reads quarantined spans back (their `RawSpan`, `Sender` and
/// `ReceivedAt`), for re-admission.
pub async fn recall_quarantined(
    client: &clickhouse::Client,
    trace_id: &str,
    span_ids: &[String],
) -> Result<Vec<RecalledSpan>, StoreError> {
    let rows: Vec<(String, String, i64)> = client
        .query(
            "SELECT any(RawSpan), any(Sender), toInt64(any(toUnixTimestamp64Nano(ReceivedAt))) \
             FROM agent_rejected_spans \
             WHERE TraceId = ? AND SpanId IN ? AND Reason IN ('root_span_missing', 'evicted') \
             GROUP BY SpanId",
        )
        .bind(trace_id)
        .bind(span_ids)
        .fetch_all()
        .await
        .map_err(classify)?;
    use base64::Engine;
    Ok(rows
        .into_iter()
        .filter_map(|(raw, sender, received_at_unix_nano)| {
            let raw = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
            Some(RecalledSpan {
                raw,
                sender,
                received_at_unix_nano,
            })
        })
        .collect())
}

/// What ClickHouse already holds for some traces; used when the spool is
/// replayed after a restart, so that nothing is stored twice.
#[derive(Debug, Default)]
pub struct StoredState {
    /// `(TraceId, SpanId)` of rows in `agent_spans`.
    pub spans: std::collections::HashSet<(String, String)>,
    /// `(TraceId, SpanId, Reason)` of rows in `agent_rejected_spans`.
    pub rejected: std::collections::HashSet<(String, String, String)>,
    /// The newest verdict of every workflow of these traces.
    pub verdicts: Vec<rows::WorkflowRow>,
    /// The next step index of every stored workflow, by `(TraceId, RootSpanId)`.
    pub next_step: std::collections::HashMap<(String, String), u32>,
}

/// Trace ids per lookup query; keeps each query's `IN` list small.
const LOOKUP_CHUNK: usize = 1000;

/// Reads what ClickHouse holds for `trace_ids`.
pub async fn stored_state(
    client: &clickhouse::Client,
    trace_ids: &[String],
) -> Result<StoredState, StoreError> {
    let mut state = StoredState::default();
    for chunk in trace_ids.chunks(LOOKUP_CHUNK) {
        let spans: Vec<(String, String)> = client
            .query("SELECT TraceId, SpanId FROM agent_spans WHERE TraceId IN ?")
            .bind(chunk)
            .fetch_all()
            .await
            .map_err(classify)?;
        state.spans.extend(spans);
        let rejected: Vec<(String, String, String)> = client
            .query("SELECT TraceId, SpanId, Reason FROM agent_rejected_spans WHERE TraceId IN ?")
            .bind(chunk)
            .fetch_all()
            .await
            .map_err(classify)?;
        state.rejected.extend(rejected);
        let verdicts: Vec<rows::WorkflowRow> = client
            .query(
                "SELECT ?fields FROM agent_workflows WHERE WorkflowId IN ? \
                 ORDER BY WorkflowId, RootSpanId, Revision DESC, Segment DESC LIMIT 1 BY WorkflowId, RootSpanId",
            )
            .bind(chunk)
            .fetch_all()
            .await
            .map_err(classify)?;
        state.verdicts.extend(verdicts);
        let next_step: Vec<(String, String, u32)> = client
            .query(
                "SELECT TraceId, WorkflowRootSpanId, toUInt32(max(StepIndex) + 1) FROM agent_spans \
                 WHERE TraceId IN ? GROUP BY TraceId, WorkflowRootSpanId",
            )
            .bind(chunk)
            .fetch_all()
            .await
            .map_err(classify)?;
        state.next_step.extend(
            next_step
                .into_iter()
                .map(|(trace, root, next)| ((trace, root), next)),
        );
    }
    Ok(state)
}
