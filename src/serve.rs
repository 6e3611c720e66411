//! `agent-ledger serve`: wires the pipeline together and runs it until
//! SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::assembler::restore::restore;
use crate::assembler::task::{self, RecallFn};
use crate::assembler::{Assembler, Limits, Recall};
use crate::clickhouse::sink::Sink;
use crate::config::{AuthRequire, Config};
use crate::metrics::Metrics;
use crate::preset::Resolver;
use crate::receiver::Receiver;
use crate::receiver::auth::{Authenticator, TokenStore};
use crate::receiver::convert::{ArrivalKeys, AttributeLimits, RequestContext, span_from_raw};
use crate::receiver::gate::Gate;
use crate::receiver::grpc::TraceService;
use crate::receiver::limit::RequestLimiter;
use crate::receiver::reload::{self, Reloadable};
use crate::receiver::tls::{self, ServerTls, TlsFiles};
use crate::spool::{RecordPosition, Spool};

/// Largest HTTP/2 frame the gRPC listener accepts. OTLP exporters send
/// batches of hundreds of kilobytes, which at the protocol's default of
/// 16 KiB arrive in dozens of frames. Larger frames took about 0.35 µs
/// less CPU per span on arrival in `scripts/bench` on a 2-core machine
/// (BENCHMARKS.md has the runs).
const GRPC_MAX_FRAME_SIZE: u32 = 256 * 1024;

/// A running receiver, for tests and for [`run`].
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, completes what can be completed, writes everything
    /// to ClickHouse, and waits until that is done.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.done.await.context("the receiver task panicked")?
    }
}

/// Runs the receiver until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!(
        "shutdown requested; finishing in-flight requests and writing buffered workflows"
    );
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What every OTLP listener shares: TLS, authentication and limits.
pub struct Security {
    /// The TLS configuration, when `tls.cert` is set.
    pub tls: Option<Arc<ServerTls>>,
    /// Authentication and request limits.
    pub gate: Arc<Gate>,
    /// Maximum open connections per listener.
    pub max_connections: usize,
    reloadable: Vec<Arc<dyn Reloadable>>,
}

impl Security {
    /// Loads the certificates and the token file named in `config`.
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Security> {
        let require = config.auth.effective_require(&config.tls);
        let mut reloadable: Vec<Arc<dyn Reloadable>> = Vec::new();
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: config.tls.client_ca.clone(),
                    require_client_certificate: config.tls.client_ca.is_some()
                        && require != AuthRequire::Either,
                };
                let tls = ServerTls::load(files).context("cannot load the TLS files")?;
                reloadable.push(tls.clone());
                Some(tls)
            }
            _ => None,
        };
        let tokens = match &config.auth.tokens_file {
            Some(path) => {
                let tokens = TokenStore::load(path).context("cannot load auth.tokens_file")?;
                if tokens.is_empty() {
                    tracing::warn!(path = %path.display(), "the token file lists no tokens; every request that needs a token is refused until one is added with `agent-ledger token add`");
                }
                reloadable.push(tokens.clone());
                Some(tokens)
            }
            None => None,
        };
        let authenticator = Authenticator::new(require, tokens);
        let limiter = RequestLimiter::new(&config.limits);
        Ok(Security {
            tls,
            gate: Arc::new(Gate::new(authenticator, limiter, metrics)),
            max_connections: config.limits.max_connections,
            reloadable,
        })
    }
}

/// Starts every stage and the listeners; returns once they accept.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let security = Security::load(&config, metrics.clone())?;
    let client = crate::clickhouse::client(&config.clickhouse)?;
    if config.clickhouse.create_schema {
        crate::clickhouse::migrate(&config.clickhouse, &crate::clickhouse::schema::Schema::new(&config.clickhouse)).await.with_context(|| {
            format!(
                "cannot apply the schema at {}; check that ClickHouse is running and clickhouse.url is right",
                config.clickhouse.display_url()
            )
        })?;
    }
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let (spool, records) = open_spool(&config, &metrics)?;
    let ledger = crate::seal::ledger::Ledger::open(&client, &config.seal)
        .await
        .context("cannot start the ledger")?;
    let (sink, sink_handle, sink_queue) = Sink::new(
        client.clone(),
        config.clickhouse.clone(),
        metrics.clone(),
        ledger,
    );
    let sink_task = tokio::spawn(sink.with_spool(spool.clone()).run(sink_queue));

    let resolver = Resolver::new(config.presets()?);
    let arrival_keys = Arc::new(ArrivalKeys::new(&resolver));
    let mut assembler =
        Assembler::new(limits(&config), config.policy.clone(), resolver).with_spool(spool.clone());
    let mut replayed = Vec::new();
    let stats = restore(&mut assembler, &spool, &records, &client, &mut replayed)
        .await
        .context("cannot replay the spool; ClickHouse must answer so that replayed spans are not stored twice")?;
    if stats.records > 0 {
        tracing::info!(
            records = stats.records,
            waiting = stats.spans_waiting,
            already_stored = stats.spans_stored,
            quarantine_rows_rewritten = stats.rejected_resent,
            "replayed the spool"
        );
    }
    let (assembler_handle, assembler_queue) = task::channel();
    let assembler_task = tokio::spawn(task::run(
        assembler,
        assembler_queue,
        sink_handle,
        recall_fn(client.clone(), config.limits.attribute_limits()),
        metrics.clone(),
        replayed,
    ));

    let redactor = crate::redact::Redactor::new(&config.redact).map_err(anyhow::Error::msg)?;
    let receiver = Receiver::new(assembler_handle, metrics.clone(), config.policy.clone())
        .with_spool(spool.clone())
        .with_arrival_keys(arrival_keys)
        .with_redactor(Arc::new(redactor))
        .with_attribute_limits(config.limits.attribute_limits())
        .with_backlog_limit(backlog_limit(config.assembler.max_buffered_spans));
    let receiver = Arc::new(receiver);
    let grpc_listener = tokio::net::TcpListener::bind(config.otlp.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on otlp.grpc_addr {}", config.otlp.grpc_addr))?;
    let grpc_listener = tls::listen(
        grpc_listener,
        security.tls.clone(),
        security.max_connections,
        metrics.clone(),
    )?;
    let grpc_addr = grpc_listener.local_addr();
    let http_listener = tokio::net::TcpListener::bind(config.otlp.http_addr)
        .await
        .with_context(|| format!("cannot listen on otlp.http_addr {}", config.otlp.http_addr))?;
    let http_listener = tls::listen(
        http_listener,
        security.tls.clone(),
        security.max_connections,
        metrics.clone(),
    )?;
    let http_addr = http_listener.local_addr();
    let admin_listener = crate::admin::bind(config.admin.addr)
        .await
        .with_context(|| format!("cannot listen on admin.addr {}", config.admin.addr))?;
    let admin_addr = admin_listener.local_addr()?;
    warn_if_exposed(grpc_addr, &config);
    warn_if_exposed(http_addr, &config);

    let (shutdown, shutdown_watch) = watch::channel(false);
    let reload_task = reload::spawn(
        security.reloadable.clone(),
        reload::POLL_INTERVAL,
        metrics.clone(),
        shutdown_watch.clone(),
    );
    let service = TraceService::new(
        receiver.clone(),
        security.gate.clone(),
        config.otlp.max_request_size.as_u64() as usize,
    );
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .max_frame_size(GRPC_MAX_FRAME_SIZE)
            .add_service(service)
            .serve_with_incoming_shutdown(
                grpc_listener.into_stream(),
                signalled(shutdown_watch.clone()),
            ),
    );
    let max_request_size = config.otlp.max_request_size.as_u64() as usize;
    let http_task = tokio::spawn(crate::receiver::http::serve(
        http_listener,
        receiver.clone(),
        security.gate.clone(),
        max_request_size,
        signalled(shutdown_watch.clone()),
    ));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin_listener,
        registry,
        client,
        config.clickhouse.database.clone(),
        signalled(shutdown_watch.clone()),
    ));
    tracing::info!(%grpc_addr, %http_addr, %admin_addr, tls = security.tls.is_some(), auth = config.auth.effective_require(&config.tls).name(), database = %config.clickhouse.database, settle = ?config.assembler.settle, root_wait = ?config.assembler.root_wait, "agent-ledger is receiving OTLP over gRPC and HTTP");

    let done = tokio::spawn(async move {
        let mut watch = shutdown_watch;
        let _ = watch.wait_for(|stop| *stop).await;
        receiver.stop_accepting();
        grpc_task
            .await
            .context("the gRPC server task panicked")?
            .context("the gRPC server failed")?;
        http_task
            .await
            .context("the OTLP/HTTP server task panicked")?
            .context("the OTLP/HTTP server failed")?;
        drop(receiver);
        assembler_task
            .await
            .context("the assembler task panicked")?;
        sink_task.await.context("the sink task panicked")?;
        spool.close();
        spool.trim();
        let _ = reload_task.await;
        admin_task
            .await
            .context("the admin task panicked")?
            .context("the admin server failed")?;
        Ok(())
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        shutdown,
        done,
    })
}

/// Opens the spool, reporting what had to be repaired.
fn open_spool(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<Spool>, Vec<RecordPosition>)> {
    let (spool, records, repairs) = Spool::open(&config.spool)
        .with_context(|| format!("cannot open the spool in {}", config.spool.dir.display()))?;
    metrics.spool_replayed_records.inc_by(records.len() as u64);
    if repairs.torn_bytes > 0 || repairs.corrupt_records > 0 {
        tracing::warn!(dir = %config.spool.dir.display(), torn_bytes = repairs.torn_bytes, corrupt_records = repairs.corrupt_records, "the spool was repaired at start");
    }
    Ok((spool, records))
}

/// Returns the number of waiting spans at which the receiver starts
/// rejecting requests. It is 90% of the assembler's bound, which leaves room
/// for requests already accepted, so an overload leads to client retries
/// instead of workflows written early as evicted.
fn backlog_limit(max_buffered_spans: usize) -> usize {
    max_buffered_spans / 10 * 9
}

fn limits(config: &Config) -> Limits {
    let assembler = &config.assembler;
    Limits {
        settle: assembler.settle,
        root_wait: assembler.root_wait,
        max_buffered_spans: assembler.max_buffered_spans,
        max_buffered_bytes: assembler.max_buffered_bytes.as_u64() as usize,
        max_retained_spans: assembler.max_retained_spans,
        attributes: config.limits.attribute_limits(),
    }
}

fn recall_fn(client: clickhouse::Client, limits: AttributeLimits) -> RecallFn {
    Arc::new(move |request: Recall| {
        let client = client.clone();
        Box::pin(async move {
            let trace_id = request.trace_id.to_hex();
            let span_ids: Vec<String> = request.span_ids.iter().map(|id| id.to_hex()).collect();
            match crate::clickhouse::recall_quarantined(&client, &trace_id, &span_ids).await {
                Ok(recalled) => recalled
                    .into_iter()
                    .filter_map(|span| {
                        let context = RequestContext {
                            received_at_unix_nano: span.received_at_unix_nano,
                            sender: Arc::from(span.sender),
                            limits,
                        };
                        span_from_raw(bytes::Bytes::from(span.raw), &context)
                    })
                    .collect(),
                Err(error) => {
                    tracing::warn!(trace_id = %trace_id, code = error.code(), %error, "reading quarantined spans back failed; retrying");
                    Vec::new()
                }
            }
        })
    })
}

/// Warns at start-up about a listener other hosts can reach without TLS or
/// without sender authentication.
fn warn_if_exposed(addr: std::net::SocketAddr, config: &Config) {
    if addr.ip().is_loopback() {
        return;
    }
    let require = config.auth.effective_require(&config.tls);
    if require == AuthRequire::None {
        tracing::warn!(%addr, "the OTLP listener is reachable from other hosts without sender authentication; anyone who can reach it can write to the audit trail. Set auth.tokens_file or tls.client_ca");
    }
    if !config.tls.enabled() {
        tracing::warn!(%addr, "the OTLP listener is reachable from other hosts without TLS; spans and bearer tokens cross the network in clear text and can be read or altered. Set tls.cert and tls.key");
    }
}

async fn signalled(mut watch: watch::Receiver<bool>) {
    let _ = watch.wait_for(|stop| *stop).await;
}
