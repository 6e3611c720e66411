//! Sends rendered requests over several gRPC connections and measures the
//! acknowledgements.
//!
//! Every connection runs one request at a time. A request that fails with
//! `UNAVAILABLE`, or `RESOURCE_EXHAUSTED` with `RetryInfo`, is sent again
//! after the delay in `RetryInfo` (exponential backoff without one), as OTLP
//! exporters do, until [`Options::max_retry_time`] has passed
//! since its first attempt. The acknowledgement latency of a request runs
//! from its first attempt to the final `OK`, so it includes the retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use hdrhistogram::Histogram;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::shape::Shape;
use super::template::{RequestInfo, Templates};
use crate::otlp::ExportTraceServiceResponse;

/// First retry delay when the receiver names none; doubles per attempt.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest retry delay when the receiver names none.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Highest latency the histogram records, in microseconds (one hour);
/// longer ones are recorded as this.
const LATENCY_MAX_MICROS: u64 = 3_600_000_000;

/// When to stop sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// At least this many spans, rounded up to whole requests.
    Spans(u64),
    /// Start no request after this much time.
    Duration(Duration),
}

/// A load run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// OTLP gRPC endpoint, such as `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Concurrent gRPC connections, each with one request in flight.
    pub connections: usize,
    pub workflows_per_request: usize,
    /// Share of workflows whose root lacks `agent_ledger.credential.scopes`,
    /// from 0 to 1.
    pub invalid_fraction: f64,
    pub shape: Shape,
    pub limit: Limit,
    /// Compress requests with gzip.
    pub gzip: bool,
    /// A request still failing this long after its first attempt is given up.
    pub max_retry_time: Duration,
    /// Maximum spans per second. Request `n` (counting from 0) is sent no
    /// earlier than `n × spans per request ÷ rate` seconds after the start.
    /// When the receiver is slower, requests go out late and the
    /// acknowledged rate stays below this one. `None` sends each request as
    /// soon as a connection is free.
    pub rate: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            connections: 4,
            workflows_per_request: 50,
            invalid_fraction: 0.05,
            shape: Shape::default(),
            limit: Limit::Spans(2_000_000),
            gzip: false,
            max_retry_time: Duration::from_secs(300),
            rate: None,
        }
    }
}

impl Options {
    /// Checks the settings before anything is sent.
    pub fn validate(&self) -> Result<(), RunError> {
        let invalid = |message: String| Err(RunError::InvalidOptions(message));
        if self.connections == 0 {
            return invalid("connections must be at least 1".to_owned());
        }
        if self.workflows_per_request == 0 {
            return invalid("workflows per request must be at least 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.invalid_fraction) {
            return invalid(format!(
                "invalid fraction {} is outside 0 to 1",
                self.invalid_fraction
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid(format!(
                "rate {rate} is not a positive number of spans per second"
            ));
        }
        self.shape.validate().map_err(RunError::InvalidOptions)
    }
}

/// A load run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid load generator settings: {0}")]
    InvalidOptions(String),
    #[error(
        "cannot connect to {endpoint}: {source}; check that the receiver is running and the endpoint is right"
    )]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Counts and latencies of a load run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Spans in requests the receiver acknowledged with `OK`.
    pub spans_acked: u64,
    /// Spans in requests given up after a non-retryable error or the
    /// retry time.
    pub spans_failed: u64,
    /// Workflows in acknowledged requests, and how many of them invalid.
    pub workflows_acked: u64,
    pub invalid_workflows_acked: u64,
    /// Sum of `partial_success.rejected_spans` over all responses.
    pub rejected_reported: u64,
    pub requests: u64,
    pub retries: u64,
    pub bytes_per_span: f64,
    pub elapsed: Duration,
    /// Acknowledgement latency of each acknowledged request, in
    /// microseconds.
    pub latency_micros: Histogram<u64>,
    /// The last error of a failed request, if any.
    pub last_error: Option<String>,
}

impl Report {
    fn new() -> Report {
        Report {
            spans_acked: 0,
            spans_failed: 0,
            workflows_acked: 0,
            invalid_workflows_acked: 0,
            rejected_reported: 0,
            requests: 0,
            retries: 0,
            bytes_per_span: 0.0,
            elapsed: Duration::ZERO,
            latency_micros: Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
                .expect("the histogram bounds are valid"),
            last_error: None,
        }
    }

    fn merge(&mut self, other: &Report) {
        self.spans_acked += other.spans_acked;
        self.spans_failed += other.spans_failed;
        self.workflows_acked += other.workflows_acked;
        self.invalid_workflows_acked += other.invalid_workflows_acked;
        self.rejected_reported += other.rejected_reported;
        self.requests += other.requests;
        self.retries += other.retries;
        self.latency_micros
            .add(&other.latency_micros)
            .expect("histograms with the same bounds merge");
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }

    /// Acknowledged spans per second of the run.
    pub fn spans_per_second(&self) -> f64 {
        self.spans_acked as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Returns a latency quantile in milliseconds.
    pub fn ack_ms(&self, quantile: f64) -> f64 {
        self.latency_micros.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Formats the figures as one line of `key=value` pairs.
    pub fn summary_line(&self) -> String {
        format!(
            "spans_sent={} spans_failed={} spans_per_s={:.0} ack_p50_ms={:.1} ack_p99_ms={:.1} ack_max_ms={:.1} \
             requests={} retries={} workflows={} invalid_workflows={} rejected_reported={} bytes_per_span={:.0} elapsed_s={:.2}",
            self.spans_acked,
            self.spans_failed,
            self.spans_per_second(),
            self.ack_ms(0.5),
            self.ack_ms(0.99),
            self.latency_micros.max() as f64 / 1000.0,
            self.requests,
            self.retries,
            self.workflows_acked,
            self.invalid_workflows_acked,
            self.rejected_reported,
            self.bytes_per_span,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Shared by the connections of one run.
struct Plan {
    templates: Templates,
    salt: u64,
    /// Requests to send; `u64::MAX` when the run is limited by time.
    requests: u64,
    deadline: Option<Instant>,
    next_request: AtomicU64,
    options: Options,
    started: Instant,
}

impl Plan {
    /// Claims the next request number, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        let index = self.next_request.fetch_add(1, Ordering::Relaxed);
        (index < self.requests).then_some(index)
    }

    /// Returns when request `index` is due under [`Options::rate`].
    fn due(&self, index: u64) -> Option<Instant> {
        let rate = self.options.rate?;
        let spans = index as f64 * self.templates.spans_per_request() as f64;
        Some(self.started + Duration::from_secs_f64(spans / rate))
    }
}

/// Runs a load against `options.endpoint` and reports what was
/// acknowledged.
pub async fn run(options: Options) -> Result<Report, RunError> {
    options.validate()?;
    let templates = Templates::new(
        &options.shape,
        options.workflows_per_request,
        options.invalid_fraction,
        crate::now_unix_nano() as u64,
    );
    let channels = connect(&options).await?;
    let started = Instant::now();
    let plan = Arc::new(Plan {
        requests: match options.limit {
            Limit::Spans(spans) => spans.div_ceil(templates.spans_per_request()),
            Limit::Duration(_) => u64::MAX,
        },
        deadline: match options.limit {
            Limit::Duration(duration) => Some(started + duration),
            Limit::Spans(_) => None,
        },
        salt: rand::random::<u64>(),
        next_request: AtomicU64::new(0),
        templates,
        options,
        started,
    });
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|channel| tokio::spawn(connection_loop(channel, plan.clone())))
        .collect();
    let mut report = Report::new();
    for task in tasks {
        let part = task
            .await
            .expect("a load generator connection task does not panic");
        report.merge(&part);
    }
    report.elapsed = started.elapsed();
    report.bytes_per_span = plan.templates.bytes_per_span();
    Ok(report)
}

async fn connect(options: &Options) -> Result<Vec<Channel>, RunError> {
    let mut channels = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let connect_error = |source| RunError::Connect {
            endpoint: options.endpoint.clone(),
            source,
        };
        let channel = Channel::from_shared(options.endpoint.clone())
            .map_err(|_| {
                RunError::InvalidOptions(format!(
                    "endpoint {:?} is not a valid URI",
                    options.endpoint
                ))
            })?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(connect_error)?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Sends requests over one connection until the run is over.
async fn connection_loop(channel: Channel, plan: Arc<Plan>) -> Report {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    if plan.options.gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    let mut report = Report::new();
    let mut buffer = Vec::new();
    while let Some(index) = plan.claim() {
        if let Some(due) = plan.due(index) {
            tokio::time::sleep_until(due.into()).await;
        }
        let info = plan.templates.render(plan.salt, index, &mut buffer);
        let body = Bytes::copy_from_slice(&buffer);
        let started = Instant::now();
        let outcome = send_with_retries(&mut grpc, body, &plan.options, &mut report).await;
        record(&mut report, info, outcome, started.elapsed());
    }
    report
}

fn record(
    report: &mut Report,
    info: RequestInfo,
    outcome: Result<ExportTraceServiceResponse, tonic::Status>,
    latency: Duration,
) {
    report.requests += 1;
    match outcome {
        Ok(response) => {
            report.spans_acked += info.spans;
            report.workflows_acked += info.workflows;
            report.invalid_workflows_acked += info.invalid_workflows;
            let rejected = response
                .partial_success
                .map_or(0, |partial| partial.rejected_spans);
            report.rejected_reported += rejected.max(0) as u64;
            let micros = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
            report
                .latency_micros
                .record(micros)
                .expect("the latency is within the histogram bounds");
        }
        Err(status) => {
            report.spans_failed += info.spans;
            report.last_error = Some(format!("{:?}: {}", status.code(), status.message()));
        }
    }
}

async fn send_with_retries(
    grpc: &mut tonic::client::Grpc<Channel>,
    body: Bytes,
    options: &Options,
    report: &mut Report,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let first_attempt = Instant::now();
    let mut backoff = BACKOFF_INITIAL;
    loop {
        let status = match export(grpc, body.clone()).await {
            Ok(response) => return Ok(response),
            Err(status) => status,
        };
        let Some(delay) = retry_delay(&status, backoff) else {
            return Err(status);
        };
        if first_attempt.elapsed() + delay > options.max_retry_time {
            return Err(status);
        }
        report.retries += 1;
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// How long to wait before sending a failed request again, or `None` when
/// it must not be retried. OTLP retries `UNAVAILABLE` always and
/// `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo`.
pub fn retry_delay(status: &tonic::Status, backoff: Duration) -> Option<Duration> {
    let requested = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    match status.code() {
        tonic::Code::Unavailable => Some(requested.unwrap_or(backoff)),
        tonic::Code::ResourceExhausted => requested,
        _ => None,
    }
}

async fn export(
    grpc: &mut tonic::client::Grpc<Channel>,
    body: Bytes,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    grpc.ready().await.map_err(|error| {
        tonic::Status::unavailable(format!("the connection is not ready: {error}"))
    })?;
    let path = http::uri::PathAndQuery::from_static(crate::receiver::grpc::EXPORT_PATH);
    grpc.unary(tonic::Request::new(body), path, EncodedCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A codec that sends already encoded request bytes and decodes the
/// response with prost.
#[derive(Clone, Copy, Debug, Default)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| {
                tonic::Status::internal(format!("cannot decode the export response: {error}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;
    use crate::receiver::{ExportError, RETRY_DELAY};

    const BACKOFF: Duration = Duration::from_millis(300);

    fn with_retry_info(code: tonic::Code, delay: Duration) -> tonic::Status {
        tonic::Status::with_error_details(code, "busy", ErrorDetails::with_retry_info(Some(delay)))
    }

    #[test]
    fn unavailable_waits_retry_info_delay() {
        let status = ExportError::Unavailable.to_status();
        assert_eq!(retry_delay(&status, BACKOFF), Some(RETRY_DELAY));
    }

    #[test]
    fn unavailable_without_retry_info_backs_off() {
        let status = tonic::Status::unavailable("connection refused");
        assert_eq!(retry_delay(&status, BACKOFF), Some(BACKOFF));
    }

    #[test]
    fn resource_exhausted_retries_only_with_retry_info() {
        let requested = with_retry_info(tonic::Code::ResourceExhausted, Duration::from_secs(2));
        assert_eq!(
            retry_delay(&requested, BACKOFF),
            Some(Duration::from_secs(2))
        );
        let bare = tonic::Status::resource_exhausted("request too large");
        assert_eq!(retry_delay(&bare, BACKOFF), None);
    }

    #[test]
    fn other_codes_are_not_retried() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
            tonic::Code::Internal,
        ] {
            assert_eq!(
                retry_delay(&with_retry_info(code, Duration::from_secs(1)), BACKOFF),
                None,
                "{code:?}"
            );
        }
    }

    #[test]
    fn options_reject_zero_connections() {
        let error = Options {
            connections: 0,
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            error.to_string().contains("connections must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn summary_line_names_the_figures() {
        let mut report = Report::new();
        report.spans_acked = 800;
        report.elapsed = Duration::from_secs(2);
        report.latency_micros.record(1500).unwrap();
        let line = report.summary_line();
        for key in [
            "spans_sent=800 ",
            "spans_per_s=400 ",
            "ack_p50_ms=1.5 ",
            "ack_p99_ms=1.5 ",
        ] {
            assert!(line.contains(key), "{key:?} missing from {line}");
        }
    }
}
