//! The load generator's command line: sends agent workflows to an OTLP gRPC
//! endpoint and prints one line of `key=value` figures at the end.
//!
//! `spans_sent` counts the spans of acknowledged requests (`spans_failed`
//! those given up), `spans_per_s` is acknowledged spans per second, and the
//! `ack_*_ms` figures are acknowledgement latencies per request, retries
//! included.
//!
//! ```text
//! cargo run --release --example loadgen -- --endpoint http://127.0.0.1:4317 --spans 200000
//! ```

use std::time::Duration;

use agent_ledger::loadgen::{self, Limit, Options, Shape};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Sends agent-shaped OTLP traffic and reports acknowledged spans per second and latencies"
)]
struct Args {
    /// OTLP gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Concurrent gRPC connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Workflows in each export request.
    #[arg(long, default_value_t = 50)]
    workflows_per_request: usize,
    /// Spans per workflow: root, invoke_agent, then alternating chat and
    /// execute_tool spans.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Length of the root's agent_ledger.task.spec, in bytes.
    #[arg(long, default_value_t = 500)]
    task_spec_bytes: usize,
    /// Length of a tool span's arguments and of its result, in bytes each.
    #[arg(long, default_value_t = 200)]
    tool_payload_bytes: usize,
    /// Minimum attributes per span.
    #[arg(long, default_value_t = 15)]
    min_attributes: usize,
    /// Maximum attributes per span.
    #[arg(long, default_value_t = 25)]
    max_attributes: usize,
    /// Share of workflows whose root lacks the credential scopes (0 to 1).
    #[arg(long, default_value_t = 0.05)]
    invalid_fraction: f64,
    /// Spans to send, rounded up to whole requests.
    #[arg(long, default_value_t = 2_000_000, conflicts_with = "duration")]
    spans: u64,
    /// Send for this long instead of a number of spans, such as `60s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,
    /// Give a request up when it still fails this long after its first
    /// attempt, such as `5m`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_retry_time: Duration,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send at most this many spans per second, such as `12000`. Without
    /// it, each request goes out as soon as a connection is free.
    #[arg(long)]
    rate: Option<f64>,
}

impl Args {
    fn options(&self) -> Options {
        Options {
            endpoint: self.endpoint.clone(),
            connections: self.connections,
            workflows_per_request: self.workflows_per_request,
            invalid_fraction: self.invalid_fraction,
            shape: Shape {
                steps: self.steps,
                task_spec_bytes: self.task_spec_bytes,
                tool_payload_bytes: self.tool_payload_bytes,
                min_attributes: self.min_attributes,
                max_attributes: self.max_attributes,
            },
            limit: match self.duration {
                Some(duration) => Limit::Duration(duration),
                None => Limit::Spans(self.spans),
            },
            gzip: self.gzip,
            max_retry_time: self.max_retry_time,
            rate: self.rate,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(loadgen::run(args.options()))?;
    if let Some(error) = &report.last_error {
        eprintln!(
            "loadgen: {} spans were not acknowledged; last error: {error}",
            report.spans_failed
        );
    }
    println!("{}", report.summary_line());
    if report.spans_failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
