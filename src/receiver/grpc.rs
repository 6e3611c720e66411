//! The OTLP gRPC `TraceService`, served by tonic with the lenient message
//! types of [`crate::otlp`].
//!
//! Each request passes the [`Gate`] (authentication, limits) before its
//! body is read; a refused request is answered with the gate's status and
//! nothing of it is stored.
//!
//! The service is written out by hand (what tonic's code generator would
//! produce) for two reasons. Its codec hands the request message over as
//! the bytes received, which the receiver checks without decoding them into
//! prost's types where it can ([`super::convert::convert_encoded`]). A body
//! that is not a request gets `INVALID_ARGUMENT`. And it corrects one
//! status: tonic rejects a message over the size limit with
//! `OUT_OF_RANGE`, which OTLP clients retry forever, and the OTLP
//! specification asks for `RESOURCE_EXHAUSTED`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::gate::{Gate, Pass};
use super::tls::ConnectionInfo;
use super::{ExportBody, Receiver};
use crate::otlp::ExportTraceServiceResponse;

/// The gRPC method path of OTLP trace export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `grpc-status` values used here.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The tower service for tonic's router.
#[derive(Clone)]
pub struct TraceService {
    receiver: Arc<Receiver>,
    gate: Arc<Gate>,
    max_request_size: usize,
}

impl TraceService {
    /// A service over `receiver` admitting requests through `gate` and
    /// accepting them up to `max_request_size` bytes, compressed or not.
    pub fn new(receiver: Arc<Receiver>, gate: Arc<Gate>, max_request_size: usize) -> Self {
        TraceService {
            receiver,
            gate,
            max_request_size,
        }
    }
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// One admitted request; the pass holds its concurrency slot until the
/// request is answered.
struct Export {
    receiver: Arc<Receiver>,
    pass: Pass,
}

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        let sender = self.pass.sender.clone();
        Box::pin(async move {
            let body = ExportBody::Encoded(request.into_inner());
            receiver
                .export(body, sender)
                .await
                .map(tonic::Response::new)
                .map_err(|error| error.to_status())
        })
    }
}

impl<B> tower::Service<http::Request<B>> for TraceService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let receiver = self.receiver.clone();
        let gate = self.gate.clone();
        let limit = self.max_request_size;
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(unimplemented());
            }
            let connection = request.extensions().get::<ConnectionInfo>();
            let pass = match gate.check(request.headers(), connection) {
                Ok(pass) => pass,
                Err(refusal) => return Ok(refusal.to_status().into_http()),
            };
            let mut encodings = EnabledCompressionEncodings::default();
            encodings.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(ExportCodec)
                .apply_compression_config(encodings, encodings)
                .apply_max_message_size_config(Some(limit), None);
            let response = grpc.unary(Export { receiver, pass }, request).await;
            Ok(size_limit_status(response))
        })
    }
}

/// The codec of the export method: the request message as the bytes
/// received (decompressed), the response encoded by prost.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RequestBytes;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestBytes {
        RequestBytes
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        response: ExportTraceServiceResponse,
        buffer: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        response
            .encode(buffer)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

struct RequestBytes;

impl Decoder for RequestBytes {
    type Item = Bytes;
    type Error = tonic::Status;

    /// Takes the message's bytes; tonic's buffer hands them over without a
    /// copy.
    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining())))
    }
}

/// Rewrites tonic's `OUT_OF_RANGE` for an oversized message into
/// `RESOURCE_EXHAUSTED`; this service itself never answers `OUT_OF_RANGE`.
fn size_limit_status(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|status| status == OUT_OF_RANGE)
    {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
        );
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("request%20exceeds%20the%20maximum%20request%20size"),
        );
    }
    response
}

fn unimplemented() -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert("grpc-status", http::HeaderValue::from_static("12"));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}
