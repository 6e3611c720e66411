//! The OTLP gRPC `TraceService`, served by tonic with the lenient message
//! types of [`crate::otlp`].
//!
//! The service is written out by hand (what tonic's code generator would
//! produce) so that it can use those types and correct one status: tonic
//! answers a message over the size limit with `OUT_OF_RANGE`, which OTLP
//! clients retry forever, and the OTLP specification asks for
//! `RESOURCE_EXHAUSTED`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::Receiver;
use crate::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// The gRPC method path of OTLP trace export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `grpc-status` values used here.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The tower service for tonic's router.
#[derive(Clone)]
pub struct TraceService {
    receiver: Arc<Receiver>,
    max_request_size: usize,
}

impl TraceService {
    /// A service over `receiver` accepting requests up to `max_request_size`
    /// bytes, compressed or not.
    pub fn new(receiver: Arc<Receiver>, max_request_size: usize) -> Self {
        TraceService {
            receiver,
            max_request_size,
        }
    }
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export(Arc<Receiver>);

impl UnaryService<ExportTraceServiceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move {
            let sender: Arc<str> = Arc::from("");
            receiver
                .export(request.into_inner(), sender)
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
        let limit = self.max_request_size;
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(unimplemented());
            }
            let mut encodings = EnabledCompressionEncodings::default();
            encodings.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<
                ExportTraceServiceResponse,
                ExportTraceServiceRequest,
            >::default())
            .apply_compression_config(encodings, encodings)
            .apply_max_message_size_config(Some(limit), None);
            let response = grpc.unary(Export(receiver), request).await;
            Ok(size_limit_status(response))
        })
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
