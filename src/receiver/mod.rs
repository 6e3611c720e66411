//! Receiver: the OTLP endpoint.
//!
//! Takes OTLP export requests, redacts secrets ([`crate::redact`]), runs
//! the per-span checks, reports rejected
//! spans (and workflow roots whose own attributes fail the policy) in
//! `partial_success`, and queues the checked spans for the assembler. The
//! mapping from receiver errors to gRPC statuses is in [`ExportError`].

pub mod convert;
pub mod grpc;

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
use crate::validate::{Policy, root_reasons};

use convert::{RequestContext, convert_request};

/// Maximum length of `partial_success.error_message`; OTLP clients log it,
/// and a bounded message keeps one bad batch from flooding their logs.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Delay suggested to clients in `RetryInfo` when the receiver is
/// overloaded or stopping.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why an export request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The receiver is shutting down or its pipeline has stopped; the client
    /// should retry, here or at another instance.
    #[error("the receiver is not accepting spans right now; retry later")]
    Unavailable,
}

impl ExportError {
    /// The gRPC status of the error, with `RetryInfo` where the client
    /// should retry.
    pub fn to_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self {
            ExportError::Unavailable => tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                self.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
            ),
        }
    }
}

/// The receiver's shared state.
pub struct Receiver {
    assembler: AssemblerHandle,
    metrics: Arc<Metrics>,
    policy: Policy,
    redactor: Arc<Redactor>,
    stopping: AtomicBool,
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
        }
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

    /// Handles one decoded export request from `sender`.
    pub async fn export(
        &self,
        request: ExportTraceServiceRequest,
        sender: Arc<str>,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let result = self.export_inner(request, sender).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(ExportError::Unavailable) => "unavailable",
        };
        self.metrics
            .requests
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
        result
    }

    async fn export_inner(
        &self,
        mut request: ExportTraceServiceRequest,
        sender: Arc<str>,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ExportError::Unavailable);
        }
        let context = RequestContext {
            received_at_unix_nano: crate::now_unix_nano(),
            sender,
        };
        let redactions = self.redactor.redact_request(&mut request);
        self.metrics.count_redactions(&redactions);
        let converted = convert_request(request, &context);
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
        let batch = Batch {
            spans: converted.spans,
            rejected: converted.rejected,
        };
        self.assembler
            .send(batch)
            .await
            .map_err(|_| ExportError::Unavailable)?;
        Ok(report.into_response())
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
