//! Measures `verify` in rows per second.
//!
//! Starts a receiver in this process, sends WORKFLOWS ten-step workflows over
//! OTLP gRPC into a fresh database, stops the receiver (which seals and
//! writes everything), then runs the verifier three times and prints each
//! run's rows per second. The database is dropped at the end.
//!
//! ```sh
//! AGENT_LEDGER_CLICKHOUSE_URL=http://127.0.0.1:8123 \
//!     cargo run --release --example verify_throughput -- 2000
//! ```

use std::time::Duration;

use agent_ledger::config::Config;
use agent_ledger::otlp::{self, ExportTraceServiceRequest, ExportTraceServiceResponse, KeyValue};
use agent_ledger::seal::verify::{self, NoProgress, Options};

/// Steps per workflow: a root, then alternating model and tool calls.
const STEPS: u64 = 10;
/// Workflows per OTLP request.
const WORKFLOWS_PER_REQUEST: u64 = 100;
/// Verification runs; each is printed.
const RUNS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let workflows: u64 = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(2000);
    let config = config()?;
    let running = agent_ledger::serve::start(config.clone()).await?;
    let url = format!("http://{}", running.grpc_addr);
    for first in (0..workflows).step_by(WORKFLOWS_PER_REQUEST as usize) {
        let last = (first + WORKFLOWS_PER_REQUEST).min(workflows);
        export(&url, request(first..last)).await?;
    }
    running.shutdown().await?;

    let client = agent_ledger::clickhouse::client(&config.clickhouse)?;
    let stored: u64 = client
        .query("SELECT count() FROM agent_spans")
        .fetch_one()
        .await?;
    println!("stored {stored} rows of {workflows} workflows");
    for run in 1..=RUNS {
        let report = verify::run(&client, &Options::default(), &mut NoProgress).await?;
        println!(
            "run {run}: {} rows, {} entries, {} findings in {:.2}s: {:.0} rows/s",
            report.rows_checked,
            report.entries_checked,
            report.findings.len(),
            report.elapsed_seconds,
            report.rows_per_second()
        );
    }
    client
        .query(&format!("DROP DATABASE {}", config.clickhouse.database))
        .execute()
        .await?;
    Ok(())
}

fn config() -> anyhow::Result<Config> {
    let mut config = Config::load(None)?;
    config.otlp.grpc_addr = "127.0.0.1:0".parse()?;
    config.admin.addr = "127.0.0.1:0".parse()?;
    config.clickhouse.database = format!("bench_verify_{}", std::process::id());
    config.assembler.settle = Duration::from_millis(300);
    config.seal.instance_id = "bench".to_owned();
    Ok(config)
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue::string(key, value)
}

fn span(trace: u64, index: u64) -> otlp::Span {
    let mut trace_id = vec![0xbe; 8];
    trace_id.extend_from_slice(&trace.to_be_bytes());
    let span_id = |n: u64| (n | 0x1000_0000_0000_0000).to_be_bytes().to_vec();
    let base = 1_796_000_000_000_000_000 + trace * 1_000_000_000;
    let mut attributes = vec![attribute("gen_ai.agent.name", "bench-agent")];
    let name: &[u8] = if index == 0 {
        attributes.extend([
            attribute("agent_ledger.origin.type", "event"),
            attribute("agent_ledger.origin.source", "queue"),
            attribute(
                "agent_ledger.task.spec",
                "Reconcile the invoices of one customer.",
            ),
            attribute("agent_ledger.credential.id", "cred-bench"),
            attribute(
                "agent_ledger.credential.scopes",
                "invoices:read invoices:write",
            ),
        ]);
        b"handle task"
    } else if index % 2 == 1 {
        attributes.extend([
            attribute("gen_ai.operation.name", "chat"),
            attribute("gen_ai.request.model", "gpt-4o"),
            attribute("gen_ai.response.model", "gpt-4o-2024-08-06"),
        ]);
        b"chat gpt-4o"
    } else {
        attributes.extend([
            attribute("gen_ai.operation.name", "execute_tool"),
            attribute("gen_ai.tool.name", "lookup_invoice"),
        ]);
        b"execute_tool lookup_invoice"
    };
    otlp::Span {
        trace_id,
        span_id: span_id(index + 1),
        parent_span_id: if index == 0 { Vec::new() } else { span_id(1) },
        name: name.to_vec().into(),
        kind: 1,
        start_time_unix_nano: base + index * 10_000_000,
        end_time_unix_nano: base
            + index * 10_000_000
            + if index == 0 { 200_000_000 } else { 5_000_000 },
        attributes,
        ..Default::default()
    }
}

fn request(traces: std::ops::Range<u64>) -> ExportTraceServiceRequest {
    let spans = traces
        .flat_map(|trace| (0..STEPS).map(move |index| span(trace + 1, index)))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![attribute("service.name", "bench")],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: None,
                spans,
                schema_url: Vec::new(),
            }],
            schema_url: Vec::new(),
        }],
    }
}

async fn export(
    url: &str,
    request: ExportTraceServiceRequest,
) -> anyhow::Result<ExportTraceServiceResponse> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec =
        tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
    let path = http::uri::PathAndQuery::from_static(agent_ledger::receiver::grpc::EXPORT_PATH);
    Ok(grpc
        .unary(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}
