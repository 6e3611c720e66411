//! The assembler, validator and linker on arbitrary span sets: spans of a
//! few traces with arbitrary parents (cycles included), roles, times and
//! arrival batches go through the receiver's conversion into the assembler.
//! After a flush and `quarantine_all_waiting`, every span must appear
//! exactly once among the written workflows and the quarantine rows.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_ledger::assembler::{Assembler, Emitted, Limits};
use agent_ledger::otlp::{self, KeyValue};
use agent_ledger::preset::{Resolver, builtin_presets};
use agent_ledger::receiver::convert::{AttributeLimits, RequestContext, convert_request};
use agent_ledger::validate::Policy;
use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    spans: Vec<SpanInput>,
    expire: bool,
    max_buffered_spans: u8,
}

#[derive(Arbitrary, Debug)]
struct SpanInput {
    trace: u8,
    parent: Option<u8>,
    role: u8,
    start_ms: u16,
    duration_ms: u16,
    batch: u8,
    with_call_id: bool,
}

const ROLES: usize = 5;

fn attributes(role: u8, with_call_id: bool) -> Vec<KeyValue> {
    let mut attributes = match role as usize % ROLES {
        0 => vec![
            KeyValue::string("agent_ledger.origin.type", "event"),
            KeyValue::string("agent_ledger.origin.source", "queue"),
            KeyValue::string("agent_ledger.task.spec", "fuzz"),
            KeyValue::string("agent_ledger.credential.id", "cred"),
            KeyValue::string("agent_ledger.credential.scopes", "a:read"),
            KeyValue::string("gen_ai.agent.name", "fuzzer"),
        ],
        1 => vec![
            KeyValue::string("gen_ai.operation.name", "chat"),
            KeyValue::string("gen_ai.response.model", "model-1"),
            KeyValue::string(
                "gen_ai.output.messages",
                r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"call-1","name":"search"}]}]"#,
            ),
        ],
        2 => vec![
            KeyValue::string("gen_ai.operation.name", "execute_tool"),
            KeyValue::string("gen_ai.tool.name", "search"),
        ],
        3 => vec![KeyValue::string("gen_ai.operation.name", "invoke_agent")],
        _ => vec![KeyValue::string("agent_ledger.step.caused_by", "0000000000000001,zz")],
    };
    if with_call_id {
        attributes.push(KeyValue::string("gen_ai.tool.call.id", "call-1"));
    }
    attributes
}

fn span(index: usize, input: &SpanInput) -> otlp::Span {
    let id = |n: u64| (n + 1).to_be_bytes().to_vec();
    let mut trace_id = vec![0xab; 16];
    trace_id[15] = input.trace % 3 + 1;
    let start = 1_700_000_000_000_000_000 + u64::from(input.start_ms) * 1_000_000;
    otlp::Span {
        trace_id,
        span_id: id(index as u64),
        parent_span_id: input.parent.map(|parent| id(u64::from(parent % 40))).unwrap_or_default(),
        name: Bytes::from_static(b"step"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + u64::from(input.duration_ms) * 1_000_000,
        attributes: attributes(input.role, input.with_call_id),
        ..Default::default()
    }
}

fuzz_target!(|input: Input| {
    let spans: Vec<otlp::Span> = input
        .spans
        .iter()
        .take(40)
        .enumerate()
        .map(|(index, spec)| span(index, spec))
        .collect();
    let context = RequestContext {
        received_at_unix_nano: 1,
        sender: Arc::from("fuzz"),
        limits: AttributeLimits::default(),
    };
    let limits = Limits {
        settle: Duration::from_secs(10),
        root_wait: Duration::from_secs(60),
        max_buffered_spans: usize::from(input.max_buffered_spans).max(1),
        max_buffered_bytes: 1 << 30,
        max_retained_spans: 100_000,
        attributes: AttributeLimits::default(),
    };
    let mut assembler = Assembler::new(limits, Policy::default(), Resolver::new(builtin_presets()));
    let start = Instant::now();
    let mut out = Vec::new();
    let mut expected = HashSet::new();
    for batch in 0..4u8 {
        let now = start + Duration::from_secs(u64::from(batch));
        let arriving: Vec<otlp::Span> = spans
            .iter()
            .zip(&input.spans)
            .filter(|(_, spec)| spec.batch % 4 == batch)
            .map(|(span, _)| span.clone())
            .collect();
        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: None,
                scope_spans: vec![otlp::ScopeSpans {
                    scope: None,
                    spans: arriving,
                    schema_url: Vec::new(),
                }],
                schema_url: Vec::new(),
            }],
        };
        let converted = convert_request(request, &context);
        for span in &converted.spans {
            expected.insert((span.trace_id.to_hex(), span.span_id.to_hex()));
        }
        assembler.insert(converted.spans, now, &mut out);
        assembler.tick(now, &mut out);
    }
    let later = start + Duration::from_secs(if input.expire { 120 } else { 20 });
    assembler.tick(later, &mut out);
    assembler.flush(later, &mut out);
    assembler.quarantine_all_waiting(&mut out);

    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for emitted in &out {
        match emitted {
            Emitted::Workflow(sealed) => {
                for step in &sealed.workflow.steps {
                    let key = (step.span.trace_id.to_hex(), step.span.span_id.to_hex());
                    *seen.entry(key).or_default() += 1;
                }
            }
            Emitted::Rejected(rejected) => {
                let key = (rejected.trace_id.clone(), rejected.span_id.clone());
                *seen.entry(key).or_default() += 1;
            }
        }
    }
    for key in &expected {
        assert_eq!(seen.get(key), Some(&1), "span {key:?}");
    }
    assert_eq!(seen.len(), expected.len());
});
