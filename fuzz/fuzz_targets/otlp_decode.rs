//! OTLP/protobuf decode plus the receiver's per-span checks on arbitrary
//! bytes. Besides not panicking, every decoded span must end either
//! converted or rejected, and a converted span must read back unchanged
//! from the bytes that the spool keeps.

#![no_main]

use std::sync::Arc;

use agent_ledger::otlp::ExportTraceServiceRequest;
use agent_ledger::receiver::convert::{
    AttributeLimits, RequestContext, convert_request, span_from_raw,
};
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
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return;
    };
    let sent: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    let converted = convert_request(request, &context);
    assert_eq!(converted.spans.len() + converted.rejected.len(), sent);
    for span in &converted.spans {
        assert!(span.start_unix_nano > 0 && span.end_unix_nano >= span.start_unix_nano);
        let again = span_from_raw(&span.raw, &context);
        assert_eq!(again.as_ref(), Some(span));
    }
});
