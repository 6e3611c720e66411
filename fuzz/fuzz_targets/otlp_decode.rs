//! OTLP/protobuf requests on arbitrary bytes, through both ways the
//! receiver checks them: decoded into prost's types (OTLP/JSON takes this
//! way after its own decoding) and from the encoding as gRPC hands it over,
//! with redaction in both. Besides not panicking, every decoded span must
//! end either converted or rejected. Both ways must agree on the spans,
//! rejections and redactions of a request that prost decodes. A converted
//! span must read back unchanged from the bytes that the spool keeps.
//!
//! The encoded way decodes each span with prost on its own where it needs
//! prost, so prost's nesting limit counts from the span, not from the
//! request: a request that prost refuses as nested too deeply may be
//! accepted there. Nothing is asserted for requests prost refuses.

#![no_main]

use std::sync::Arc;

use agent_ledger::otlp::ExportTraceServiceRequest;
use agent_ledger::receiver::convert::{
    AttributeLimits, RequestContext, convert_encoded, convert_request, span_from_raw,
};
use agent_ledger::redact::Redactor;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&limit_byte, body)) = data.split_first() else {
        return;
    };
    let context = RequestContext {
        received_at_unix_nano: 1,
        sender: Arc::from("fuzz"),
        limits: AttributeLimits {
            max_attributes: usize::from(limit_byte % 8) + 1,
            max_value_bytes: 64 + usize::from(limit_byte),
        },
    };
    let redactor = Redactor::new(&Default::default()).expect("the built-in patterns compile");
    let encoded = convert_encoded(Bytes::copy_from_slice(body), &redactor, None, &context);
    let Ok(mut request) = ExportTraceServiceRequest::decode(body) else {
        return;
    };
    let sent: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    let redactions = redactor.redact_request(&mut request);
    let converted = convert_request(request, &context);
    assert_eq!(converted.spans.len() + converted.rejected.len(), sent);
    let (encoded, encoded_redactions) = encoded.expect("a request prost decodes is accepted");
    assert_eq!(encoded_redactions, redactions);
    assert_eq!(encoded.spans.len(), converted.spans.len());
    assert_eq!(encoded.rejected.len(), converted.rejected.len());
    for span in converted.spans.iter().chain(&encoded.spans) {
        assert!(span.start_unix_nano > 0 && span.end_unix_nano >= span.start_unix_nano);
        let again = span_from_raw(span.raw.clone(), &context);
        assert_eq!(again.as_ref(), Some(span));
    }
});
