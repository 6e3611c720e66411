//! Receiver: the OTLP endpoint.
//!
//! Takes OTLP export requests, redacts secrets ([`crate::redact`]), runs
//! the per-span checks, reports rejected
//! spans (and workflow roots whose own attributes fail the policy) in
//! `partial_success`, and queues the checked spans for the assembler. The
//! mapping from receiver errors to gRPC statuses is in [`ExportError`], and
//! to HTTP statuses in [`http::http_status`].
//!
//! Before a request reaches [`Receiver::export`], its listener accepts the
//! connection through [`tls`] and passes the request through [`gate`]
//! (authentication and limits), which names the sender.

pub mod auth;
pub mod convert;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod limit;
pub mod reload;
pub mod throttle;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::assembler::task::{AssemblerHandle, Batch};
use crate::metrics::{CodeLabel, Metrics};
use crate::otlp::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::preset::ORIGIN_TYPE;
use crate::quarantine::RejectedSpan;
use crate::redact::Redactor;
use crate::span::Span;
use crate::spool::{RejectedEntry, Spool, SpoolError};
use crate::validate::{Policy, root_reasons};

use convert::{ArrivalKeys, AttributeLimits, RequestContext, convert_encoded, convert_request};

/// Maximum length of `partial_success.error_message`; OTLP clients log it,
/// and a bounded message keeps one bad batch from flooding their logs.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Delay suggested to clients in `RetryInfo` when the receiver is stopping.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a request waits for the backlog to drain below its limit before
/// it is refused, and how often it looks.
const BACKLOG_WAIT: Duration = Duration::from_secs(2);
const BACKLOG_POLL: Duration = Duration::from_millis(25);

/// Delay suggested when the spool is full: ClickHouse needs a few seconds to
/// confirm older spans, and a shorter delay only adds refused requests.
pub const SPOOL_FULL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The reason an export request failed as a whole. Nothing of the request
/// was acknowledged. OTLP clients retry every variant but
/// [`ExportError::Malformed`].
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The receiver is shutting down or its pipeline has stopped; the client
    /// should retry, here or at another instance.
    #[error("the receiver is not accepting spans right now; retry later")]
    Unavailable,
    /// The spool's disk budget is used up until ClickHouse catches up.
    #[error("the receiver's spool is full while ClickHouse catches up; retry later")]
    SpoolFull,
    /// Writing to the spool failed, for example because the disk is full.
    #[error("the receiver could not store the request durably; retry later")]
    SpoolFailed,
    /// The spans waiting for their workflows are near the assembler's bound
    /// (`assembler.max_buffered_spans`) while traces due for completion wait
    /// for the sink, because ClickHouse is catching up. Taking more would
    /// make the assembler write waiting workflows early as evicted.
    #[error("the receiver's backlog is full while ClickHouse catches up; retry later")]
    Backlogged,
    /// The body is not an OTLP protobuf `ExportTraceServiceRequest`. Its
    /// status is one that clients do not retry, because the same bytes
    /// fail again.
    #[error(
        "the request body is not an OTLP protobuf ExportTraceServiceRequest: {0}; check that the exporter sends OTLP traces"
    )]
    Malformed(prost::DecodeError),
}

impl ExportError {
    /// Returns the delay to suggest before a retry, or `None` when
    /// retrying cannot help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::SpoolFull => Some(SPOOL_FULL_RETRY_DELAY),
            ExportError::Unavailable | ExportError::SpoolFailed | ExportError::Backlogged => {
                Some(RETRY_DELAY)
            }
            ExportError::Malformed(_) => None,
        }
    }

    /// A bounded label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ExportError::Unavailable => "unavailable",
            ExportError::SpoolFull => "spool_full",
            ExportError::SpoolFailed => "spool_failed",
            ExportError::Backlogged => "backlog_full",
            ExportError::Malformed(_) => "invalid_argument",
        }
    }

    /// The gRPC status of the error: `UNAVAILABLE` with `RetryInfo`, which
    /// OTLP clients retry, or `INVALID_ARGUMENT` for a malformed body.
    pub fn to_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self.retry_after() {
            Some(delay) => tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                self.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// An export request's body: decoded already (OTLP/JSON), or the protobuf
/// encoding as received (gRPC and OTLP/HTTP protobuf), which the receiver
/// checks without decoding it into prost's types where it can.
pub enum ExportBody {
    Decoded(ExportTraceServiceRequest),
    Encoded(bytes::Bytes),
}

impl From<ExportTraceServiceRequest> for ExportBody {
    fn from(request: ExportTraceServiceRequest) -> Self {
        ExportBody::Decoded(request)
    }
}

/// The receiver's shared state.
pub struct Receiver {
    assembler: AssemblerHandle,
    metrics: Arc<Metrics>,
    policy: Policy,
    redactor: Arc<Redactor>,
    stopping: AtomicBool,
    spool: Option<Arc<Spool>>,
    arrival_keys: Option<Arc<ArrivalKeys>>,
    attribute_limits: AttributeLimits,
    backlog_limit: Option<usize>,
}

impl Receiver {
    /// A receiver feeding `assembler`.
    pub fn new(assembler: AssemblerHandle, metrics: Arc<Metrics>, policy: Policy) -> Self {
        let redactor =
            Redactor::new(&Default::default()).expect("the built-in redaction patterns compile");
        Receiver {
            assembler,
            metrics,
            policy,
            redactor: Arc::new(redactor),
            stopping: AtomicBool::new(false),
            spool: None,
            arrival_keys: None,
            attribute_limits: AttributeLimits::default(),
            backlog_limit: None,
        }
    }

    /// Applies `limits` to the attributes of every span.
    pub fn with_attribute_limits(mut self, limits: AttributeLimits) -> Self {
        self.attribute_limits = limits;
        self
    }

    /// Delays requests while the backlog is full. The backlog is full when
    /// traces due for completion wait for the sink (the `completion_backlog`
    /// gauge) and either the assembler has at least `spans` waiting spans
    /// (the `buffered_spans` gauge) or the spool is nearly full. Nearly full
    /// means that unconfirmed spans take 80% of its disk budget, or its
    /// segment files 95%. A request waits up to two seconds for the backlog
    /// to drain, which paces senders to ClickHouse's speed, and is then
    /// rejected with [`ExportError::Backlogged`]. Spans that only wait for a root never
    /// cause a rejection. The oldest of them are evicted instead, so they
    /// cannot block the roots of other workflows.
    pub fn with_backlog_limit(mut self, spans: usize) -> Self {
        self.backlog_limit = Some(spans);
        self
    }

    /// Appends every request to `spool` before acknowledging it.
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Keeps in memory only the attributes named in `keys` of the spans it
    /// spools, which the assembler reads back in full when it needs them.
    /// Without a spool every attribute is kept.
    pub fn with_arrival_keys(mut self, keys: Arc<ArrivalKeys>) -> Self {
        self.arrival_keys = Some(keys);
        self
    }

    /// Uses `redactor` instead of the built-in patterns alone.
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// Makes every later request fail with `UNAVAILABLE`.
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Counts a request that failed before it reached [`Receiver::export`],
    /// such as one over the size limit; `code` is the metric label.
    pub fn count_request(&self, code: &str) {
        self.metrics
            .requests
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Handles one export request from `sender`, the name
    /// [`gate::Gate::check`] returned; it is stored in `Sender` of every row.
    pub async fn export(
        &self,
        request: impl Into<ExportBody>,
        sender: Arc<str>,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let result = self.export_inner(request.into(), sender).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.count_request(code);
        result
    }

    async fn export_inner(
        &self,
        body: ExportBody,
        sender: Arc<str>,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ExportError::Unavailable);
        }
        // NOTE: the gauges are updated when the assembler takes a batch, so
        // concurrent requests that arrive before then all pass this check.
        // The 10% margin below the bound absorbs that only up to about
        // `max_buffered_spans / 10` spans in flight.
        if self.backlogged() {
            // A short wait paces the sender to ClickHouse's speed; a refusal
            // would make it wait for the whole retry delay instead.
            let deadline = tokio::time::Instant::now() + BACKLOG_WAIT;
            while self.backlogged() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ExportError::Backlogged);
                }
                tokio::time::sleep(BACKLOG_POLL).await;
            }
        }
        let context = RequestContext {
            received_at_unix_nano: crate::now_unix_nano(),
            sender,
            limits: self.attribute_limits,
        };
        let (converted, redactions) = match body {
            ExportBody::Decoded(mut request) => {
                let redactions = self.redactor.redact_request(&mut request);
                (convert_request(request, &context), redactions)
            }
            ExportBody::Encoded(bytes) => {
                match convert_encoded(bytes, &self.redactor, self.arrival_keys(), &context) {
                    Ok(done) => done,
                    Err(error) => {
                        tracing::debug!(%error, sender = %context.sender, "rejected a request body that is not an ExportTraceServiceRequest");
                        return Err(ExportError::Malformed(error));
                    }
                }
            }
        };
        self.metrics.count_redactions(&redactions);
        self.count_limits(&converted);
        let received = converted.spans.len() + converted.rejected.len();
        if received == 0 {
            return Ok(ExportTraceServiceResponse {
                partial_success: None,
            });
        }
        self.metrics.spans_received.inc_by(received as u64);
        let mut report = Report::default();
        for rejected in &converted.rejected {
            report.add_rejected(rejected);
        }
        for span in &converted.spans {
            self.check_root(span, &mut report);
        }
        let mut batch = Batch {
            spans: converted.spans,
            rejected: converted.rejected,
        };
        self.spool(&mut batch, &context).await?;
        self.assembler
            .send(batch)
            .await
            .map_err(|_| ExportError::Unavailable)?;
        Ok(report.into_response())
    }

    /// Checks whether the backlog limit of [`Receiver::with_backlog_limit`]
    /// is reached.
    fn backlogged(&self) -> bool {
        self.backlog_limit.is_some_and(|limit| {
            self.metrics.completion_backlog.get() > 0
                && (self.metrics.buffered_spans.get() >= limit as i64 || self.spool_nearly_full())
        })
    }

    /// Checks whether the spans ClickHouse has not confirmed yet take 80%
    /// of the spool's disk budget, or its segment files 95%. The first
    /// falls with every confirmation, so held requests are let through at
    /// ClickHouse's pace. Segment files shrink only a whole segment at a
    /// time, and their line leaves room for the segments that confirmed
    /// spans do not free yet.
    /// Returns the names of the attributes kept on arrival, when spans are
    /// spooled.
    fn arrival_keys(&self) -> Option<&ArrivalKeys> {
        self.spool.as_ref().and(self.arrival_keys.as_deref())
    }

    fn spool_nearly_full(&self) -> bool {
        self.spool.as_ref().is_some_and(|spool| {
            let max = spool.max_bytes();
            spool.live_bytes() >= max / 10 * 8 || spool.bytes() >= max / 20 * 19
        })
    }

    fn count_limits(&self, converted: &convert::Converted) {
        if converted.dropped_attributes > 0 || converted.truncated_values > 0 {
            tracing::debug!(
                dropped = converted.dropped_attributes,
                truncated = converted.truncated_values,
                "attribute limits applied to a request"
            );
        }
        self.metrics
            .attributes_dropped
            .inc_by(converted.dropped_attributes);
        self.metrics
            .attribute_values_truncated
            .inc_by(converted.truncated_values);
    }

    /// Appends the batch to the spool and records where each span went.
    async fn spool(&self, batch: &mut Batch, context: &RequestContext) -> Result<(), ExportError> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let spans: Vec<&[u8]> = batch.spans.iter().map(|span| &span.raw[..]).collect();
        let rejected: Vec<RejectedEntry> = batch
            .rejected
            .iter()
            .map(|span| RejectedEntry {
                reason: span
                    .reason
                    .unwrap_or(crate::quarantine::Reason::InvalidSpanId),
                detail: span.detail.clone(),
                raw: span.raw_span.to_vec(),
            })
            .collect();
        let appended = spool
            .append(
                context.received_at_unix_nano,
                &context.sender,
                &spans,
                &rejected,
            )
            .await
            .map_err(spool_error)?;
        for (span, location) in batch.spans.iter_mut().zip(appended.spans) {
            span.spool = Some(location);
        }
        for (span, location) in batch.rejected.iter_mut().zip(appended.rejected) {
            span.location = Some(location);
        }
        Ok(())
    }

    /// Reports a workflow root whose own attributes fail the policy, so the
    /// sender's SDK logs the reason at once; the span still goes on, and the
    /// full verdict is written when the workflow is complete.
    fn check_root(&self, span: &Span, report: &mut Report) {
        if span.attributes.get(ORIGIN_TYPE).is_none() {
            return;
        }
        let reasons = root_reasons(&self.policy, span);
        if !reasons.is_empty() {
            report.add(
                &span.trace_id.to_hex(),
                &span.span_id.to_hex(),
                &format!("workflow root fails the policy: {}", reasons.join("; ")),
            );
        }
    }
}

/// The `partial_success` being built for one request.
#[derive(Default)]
struct Report {
    rejected: i64,
    message: String,
    omitted: usize,
}

impl Report {
    fn add_rejected(&mut self, span: &RejectedSpan) {
        let reason = span
            .reason
            .map(|reason| reason.code())
            .unwrap_or("rejected");
        self.add(
            &span.trace_id,
            &span.span_id,
            &format!("{reason}: {}", span.detail),
        );
    }

    fn add(&mut self, trace_id: &str, span_id: &str, text: &str) {
        self.rejected += 1;
        let entry = format!("trace {trace_id} span {span_id}: {text}");
        let separator = if self.message.is_empty() { "" } else { "; " };
        if self.message.len() + separator.len() + entry.len() <= MAX_ERROR_MESSAGE - 64 {
            self.message.push_str(separator);
            self.message.push_str(&entry);
        } else {
            self.omitted += 1;
        }
    }

    fn into_response(mut self) -> ExportTraceServiceResponse {
        if self.rejected == 0 {
            return ExportTraceServiceResponse {
                partial_success: None,
            };
        }
        if self.omitted > 0 {
            self.message
                .push_str(&format!("; and {} more", self.omitted));
        }
        let message = format!("{} spans rejected: {}", self.rejected, self.message);
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: self.rejected,
                error_message: truncate(message, MAX_ERROR_MESSAGE),
            }),
        }
    }
}

fn spool_error(error: SpoolError) -> ExportError {
    match error {
        SpoolError::Full { used, max } => {
            tracing::debug!(
                used,
                max,
                "spool full; the request is answered as retryable"
            );
            ExportError::SpoolFull
        }
        error => {
            tracing::error!(%error, "appending to the spool failed; the client gets a retryable response and nothing of the request is acknowledged");
            ExportError::SpoolFailed
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that finds the backlog full waits for it to drain and is
    /// then accepted. A request that still finds it full after the wait is
    /// rejected.
    #[tokio::test(start_paused = true)]
    async fn backlogged_request_waits_then_proceeds() {
        let (assembler, mut batches) = crate::assembler::task::channel();
        let metrics = Arc::new(Metrics::default());
        let receiver = Arc::new(
            Receiver::new(assembler, metrics.clone(), Policy::default()).with_backlog_limit(10),
        );
        metrics.buffered_spans.set(10);
        metrics.completion_backlog.set(1);

        let waiting = tokio::spawn({
            let receiver = receiver.clone();
            async move {
                receiver
                    .export(ExportTraceServiceRequest::default(), Arc::from("sender"))
                    .await
            }
        });
        tokio::time::sleep(BACKLOG_WAIT / 2).await;
        assert!(
            !waiting.is_finished(),
            "the request waits while the backlog is full"
        );
        metrics.completion_backlog.set(0);
        let assembler_queue = tokio::spawn(async move { batches.recv().await });
        assert!(
            waiting.await.unwrap().is_ok(),
            "accepted once the backlog drained"
        );
        drop(assembler_queue);

        metrics.completion_backlog.set(1);
        let rejected = receiver
            .export(ExportTraceServiceRequest::default(), Arc::from("sender"))
            .await;
        assert!(
            matches!(rejected, Err(ExportError::Backlogged)),
            "rejected after the wait: {rejected:?}"
        );
    }
}
