//! OTLP/JSON decode plus the receiver's per-span checks on arbitrary bytes.
//! Besides not panicking, every decoded span must end either converted or
//! rejected.

#![no_main]

use std::sync::Arc;

use agent_ledger::otlp::json::decode_request;
use agent_ledger::receiver::convert::{RequestContext, convert_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_request(data) else {
        return;
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource| resource.scope_spans.iter())
        .map(|scope| scope.spans.len())
        .sum();
    let context = RequestContext {
        received_at_unix_nano: 1,
        sender: Arc::from("fuzz"),
        limits: Default::default(),
    };
    let converted = convert_request(request, &context);
    assert_eq!(converted.spans.len() + converted.rejected.len(), spans);
});
