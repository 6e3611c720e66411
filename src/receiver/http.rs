//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed.
//!
//! Takes the request body, enforces `otlp.max_request_size` before and after
//! decompression, decodes JSON into the lenient [`crate::otlp`] types and
//! hands the request to [`Receiver::export`], which checks a protobuf body
//! as it does on gRPC and applies the same per-span checks and
//! partial-success rules to both. The response body is in the request's
//! content type: an `ExportTraceServiceResponse` on success and a
//! `google.rpc.Status` on failure, as the OTLP specification requires. Statuses:
//! 200 (with `partial_success` when spans were rejected), 400 for a body that
//! cannot be decoded, 404 for other paths, 405 for other methods, 413 for a
//! body over the size limit, 415 for another content type or encoding, and
//! the status [`http_status`] gives each [`ExportError`].

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use prost::Message;

use super::gate::{Gate, Refusal};
use super::tls::ConnectionInfo;
use super::{ExportBody, ExportError, Receiver};
use crate::otlp::{self, ExportTraceServiceResponse};

/// The OTLP/HTTP path of trace export.
pub const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// gRPC codes carried in the `google.rpc.Status` body of a failure, as the
/// OTLP specification pairs them with HTTP statuses.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_UNAVAILABLE: i32 = 14;

/// The HTTP response to a failed export: the status, the gRPC code for the
/// body, and the delay for `Retry-After` where the client should retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpFailure {
    pub status: StatusCode,
    pub code: i32,
    pub retry_after: Option<Duration>,
}

/// Maps every [`ExportError`] to its HTTP response; the HTTP counterpart of
/// [`ExportError::to_status`]. The match has no catch-all arm, so a new
/// variant does not compile until it is mapped here.
pub fn http_status(error: &ExportError) -> HttpFailure {
    match error {
        ExportError::Unavailable
        | ExportError::SpoolFull
        | ExportError::SpoolFailed
        | ExportError::Backlogged => HttpFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: CODE_UNAVAILABLE,
            retry_after: error.retry_after(),
        },
        ExportError::Malformed(_) => HttpFailure {
            status: StatusCode::BAD_REQUEST,
            code: CODE_INVALID_ARGUMENT,
            retry_after: None,
        },
    }
}

/// `google.rpc.Status`, without details.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The body encoding of a request and its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// The format named by `Content-Type`, ignoring parameters such as
    /// `charset`; `None` for any other type.
    fn of(headers: &HeaderMap) -> Option<Format> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case(PROTOBUF) {
            Some(Format::Protobuf)
        } else if essence.eq_ignore_ascii_case(JSON) {
            Some(Format::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => PROTOBUF,
            Format::Json => JSON,
        }
    }
}

/// A failure to turn a request body into an export request.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body exceeds otlp.max_request_size ({limit} bytes){stage}")]
    TooLarge { limit: usize, stage: &'static str },
    #[error("reading the request body failed: {0}")]
    Read(String),
    #[error("the gzip-compressed request body cannot be decompressed: {0}")]
    Gzip(std::io::Error),
    #[error(transparent)]
    Json(otlp::json::JsonError),
}

impl BodyError {
    fn failure(&self) -> HttpFailure {
        match self {
            BodyError::TooLarge { .. } => HttpFailure {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: CODE_RESOURCE_EXHAUSTED,
                retry_after: None,
            },
            BodyError::Read(_) | BodyError::Gzip(_) | BodyError::Json(_) => HttpFailure {
                status: StatusCode::BAD_REQUEST,
                code: CODE_INVALID_ARGUMENT,
                retry_after: None,
            },
        }
    }

    /// The label of the `requests` metric.
    fn metric_code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "resource_exhausted",
            _ => "invalid_argument",
        }
    }
}

struct HttpState {
    receiver: Arc<Receiver>,
    gate: Arc<Gate>,
    max_request_size: usize,
}

/// Serves OTLP/HTTP on `listener` (plain TCP or TLS, see [`super::tls`])
/// until `shutdown` resolves, then finishes the requests in flight. Every
/// request passes `gate` (authentication and limits) before its body is
/// read.
pub async fn serve(
    listener: super::tls::Listener,
    receiver: Arc<Receiver>,
    gate: Arc<Gate>,
    max_request_size: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(HttpState {
        receiver,
        gate,
        max_request_size,
    });
    let router = Router::new()
        .route(TRACES_PATH, post(export))
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    let service = router.into_make_service_with_connect_info::<ConnectionInfo>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn export(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(connection): ConnectInfo<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let pass = match state.gate.check(&headers, Some(&connection)) {
        Ok(pass) => pass,
        Err(refusal) => return refused(refusal),
    };
    let response = export_checked(&state, headers, body, pass.sender.clone()).await;
    drop(pass);
    response
}

/// The response to a request the gate refused: 401 with
/// `WWW-Authenticate: Bearer`, or 429/503 with `Retry-After`.
fn refused(refusal: Refusal) -> Response {
    let status = refusal.http_status();
    let mut response = plain(status, refusal.to_string());
    if let Some(delay) = refusal.retry_after() {
        let seconds = super::limit::retry_after_seconds(delay).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    if matches!(refusal, Refusal::Unauthenticated(_)) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

async fn export_checked(
    state: &HttpState,
    headers: HeaderMap,
    body: Body,
    sender: Arc<str>,
) -> Response {
    let Some(format) = Format::of(&headers) else {
        state.receiver.count_request("unsupported_media_type");
        let found = headers
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let message = format!(
            "unsupported content type {}: send {PROTOBUF} or {JSON}",
            found
                .map(|value| format!("{value:?}"))
                .unwrap_or_else(|| "(none)".to_owned())
        );
        tracing::debug!(%message, "rejected an OTLP/HTTP request");
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    };
    let gzip = match content_encoding(&headers) {
        Ok(gzip) => gzip,
        Err(message) => {
            state.receiver.count_request("unsupported_media_type");
            tracing::debug!(%message, "rejected an OTLP/HTTP request");
            return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
        }
    };
    let request = match read_request(state, &headers, body, format, gzip).await {
        Ok(request) => request,
        Err(error) => {
            state.receiver.count_request(error.metric_code());
            tracing::debug!(%error, "rejected an OTLP/HTTP request");
            return failure(format, error.failure(), error.to_string());
        }
    };
    match state.receiver.export(request, sender).await {
        Ok(response) => success(format, &response),
        Err(error) => failure(format, http_status(&error), error.to_string()),
    }
}

/// Whether the body is gzip-compressed; an error names an unsupported
/// `Content-Encoding`.
fn content_encoding(headers: &HeaderMap) -> Result<bool, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if text.is_empty() || text.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(format!(
            "unsupported content encoding {text:?}: send gzip or an uncompressed body"
        ))
    }
}

async fn read_request(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    format: Format,
    gzip: bool,
) -> Result<ExportBody, BodyError> {
    let limit = state.max_request_size;
    let too_large = |stage| BodyError::TooLarge { limit, stage };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(""));
    }
    let bytes = collect_limited(body, limit).await?;
    // Decompression and JSON decoding are CPU work of up to the size limit,
    // which would hold up other requests on this runtime thread.
    tokio::task::spawn_blocking(move || decode(bytes, format, gzip, limit))
        .await
        .map_err(|error| BodyError::Read(error.to_string()))?
}

async fn collect_limited(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| BodyError::Read(error.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, stage: "" });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Decompresses the body and decodes JSON. A protobuf body is handed over
/// as it is, for the receiver to check as on the gRPC path.
fn decode(
    bytes: Vec<u8>,
    format: Format,
    gzip: bool,
    limit: usize,
) -> Result<ExportBody, BodyError> {
    let plain = if gzip { gunzip(&bytes, limit)? } else { bytes };
    match format {
        Format::Protobuf => Ok(ExportBody::Encoded(bytes::Bytes::from(plain))),
        Format::Json => otlp::json::decode_request(&plain)
            .map(ExportBody::Decoded)
            .map_err(BodyError::Json),
    }
}

/// Decompresses at most `limit` bytes; one byte more means the body is over
/// the limit once decompressed.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut decompressed = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut decompressed)
        .map_err(BodyError::Gzip)?;
    if decompressed.len() > limit {
        return Err(BodyError::TooLarge {
            limit,
            stage: " after gzip decompression",
        });
    }
    Ok(decompressed)
}

fn success(format: Format, response: &ExportTraceServiceResponse) -> Response {
    let body = match format {
        Format::Protobuf => response.encode_to_vec(),
        Format::Json => otlp::json::encode_response(response),
    };
    encoded(StatusCode::OK, format, body)
}

fn failure(format: Format, failure: HttpFailure, message: String) -> Response {
    let status = RpcStatus {
        code: failure.code,
        message,
    };
    let body = match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::json!({ "code": status.code, "message": status.message })
            .to_string()
            .into_bytes(),
    };
    let mut response = encoded(failure.status, format, body);
    if let Some(delay) = failure.retry_after {
        let seconds = delay.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn encoded(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_503_with_retry_after() {
        let failure = http_status(&ExportError::Unavailable);
        assert_eq!(failure.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(failure.code, CODE_UNAVAILABLE);
        assert!(failure.retry_after.is_some());
    }

    #[test]
    fn content_type_parameters_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(Format::of(&headers), Some(Format::Json));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(Format::of(&headers), None);
    }

    #[test]
    fn gunzip_stops_at_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[0u8; 4096]).unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(gunzip(&compressed, 4096).unwrap().len(), 4096);
        assert!(matches!(
            gunzip(&compressed, 4095),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(gunzip(b"not gzip", 4096), Err(BodyError::Gzip(_))));
    }
}
