//! Property tests of the assembler: whatever spans arrive, in whatever order
//! and batches, every span ends in exactly one place, a stored workflow or a
//! quarantine row, once the assembler has been flushed and the spans still
//! waiting for their root have been quarantined.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::testing::{self, span, trace_id};

/// One generated span: its trace, parent (an index into the spans before
/// it, or a span that never arrives), role and timing, and the batch it
/// arrives in.
#[derive(Clone, Debug)]
struct SpanSpec {
    trace: u64,
    parent: Option<ParentSpec>,
    role: u8,
    start_ms: u64,
    duration_ms: u64,
    batch: u8,
}

#[derive(Clone, Debug)]
enum ParentSpec {
    Earlier(prop::sample::Index),
    Missing(u64),
}

fn parent_spec() -> impl Strategy<Value = Option<ParentSpec>> {
    prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(|index| Some(ParentSpec::Earlier(index))),
        1 => (1000u64..1010).prop_map(|id| Some(ParentSpec::Missing(id))),
        1 => Just(None),
    ]
}

fn span_spec() -> impl Strategy<Value = SpanSpec> {
    (
        1u64..=3,
        parent_spec(),
        0u8..5,
        0u64..2_000,
        0u64..500,
        0u8..4,
    )
        .prop_map(
            |(trace, parent, role, start_ms, duration_ms, batch)| SpanSpec {
                trace,
                parent,
                role,
                start_ms,
                duration_ms,
                batch,
            },
        )
}

/// Builds the spans; span ids are 1, 2, ... in generation order.
fn build(specs: &[SpanSpec]) -> Vec<(u8, Span)> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let id = index as u64 + 1;
            let builder = match spec.role {
                0 => testing::root(id),
                1 => span(id, "chat gpt-4o")
                    .attr("gen_ai.operation.name", "chat")
                    .attr("gen_ai.response.model", "gpt-4o-2024-08-06"),
                2 => span(id, "execute_tool search").attr("gen_ai.operation.name", "execute_tool"),
                3 => span(id, "invoke_agent helper").attr("gen_ai.operation.name", "invoke_agent"),
                _ => span(id, "http request"),
            };
            let builder = match &spec.parent {
                Some(ParentSpec::Earlier(parent)) if index > 0 => {
                    builder.parent(parent.index(index) as u64 + 1)
                }
                Some(ParentSpec::Missing(parent)) => builder.parent(*parent),
                _ => builder,
            };
            let span = builder
                .trace(spec.trace)
                .times(spec.start_ms, spec.start_ms + spec.duration_ms)
                .build();
            (spec.batch, span)
        })
        .collect()
}

fn limits() -> Limits {
    Limits {
        settle: Duration::from_secs(10),
        root_wait: Duration::from_secs(60),
        max_buffered_spans: 25,
        max_buffered_bytes: 1 << 30,
        max_retained_spans: 100_000,
        attributes: AttributeLimits::default(),
    }
}

/// Feeds the batches a second apart, lets the settle time (and, when
/// `expire` is set, the root wait) pass, then flushes and quarantines what
/// still waits.
fn run(spans: Vec<(u8, Span)>, expire: bool, max_buffered_spans: usize) -> Vec<Emitted> {
    let mut assembler = Assembler::new(
        Limits {
            max_buffered_spans,
            ..limits()
        },
        Policy::default(),
        Resolver::default(),
    );
    let start = Instant::now();
    let mut out = Vec::new();
    for batch in 0..4u8 {
        let now = start + Duration::from_secs(u64::from(batch));
        let arriving: Vec<Span> = spans
            .iter()
            .filter(|(arrival, _)| *arrival == batch)
            .map(|(_, span)| span.clone())
            .collect();
        assembler.insert(arriving, now, &mut out);
        assembler.tick(now, &mut out);
    }
    let later = start + Duration::from_secs(if expire { 120 } else { 20 });
    assembler.tick(later, &mut out);
    assembler.flush(later, &mut out);
    assembler.quarantine_all_waiting(&mut out);
    out
}

/// How often each (trace id, span id) appears in stored workflows and
/// quarantine rows.
fn placements(out: &[Emitted]) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for emitted in out {
        match emitted {
            Emitted::Workflow(sealed) => {
                for step in &sealed.workflow.steps {
                    let key = (step.span.trace_id.to_hex(), step.span.span_id.to_hex());
                    *seen.entry(key).or_insert(0) += 1;
                }
            }
            Emitted::Rejected(rejected) => {
                let key = (rejected.trace_id.clone(), rejected.span_id.clone());
                *seen.entry(key).or_insert(0) += 1;
            }
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_span_placed_once(
        specs in prop::collection::vec(span_spec(), 1..40),
        expire in any::<bool>(),
        evict in any::<bool>(),
    ) {
        let spans = build(&specs);
        let expected: Vec<(String, String)> = spans
            .iter()
            .map(|(_, span)| (span.trace_id.to_hex(), span.span_id.to_hex()))
            .collect();

        let out = run(spans, expire, if evict { 5 } else { 10_000 });

        let seen = placements(&out);
        for key in &expected {
            prop_assert_eq!(seen.get(key).copied(), Some(1), "span {:?}", key);
        }
        prop_assert_eq!(seen.len(), expected.len(), "no span appears that was not sent");
    }
}

#[test]
fn placements_cover_traces() {
    let spans = build(&[SpanSpec {
        trace: 2,
        parent: None,
        role: 0,
        start_ms: 0,
        duration_ms: 10,
        batch: 0,
    }]);

    let out = run(spans, false, 10_000);

    let seen = placements(&out);
    assert_eq!(
        seen.get(&(trace_id(2).to_hex(), testing::span_hex(1))),
        Some(&1),
        "a lone root is written once"
    );
}
