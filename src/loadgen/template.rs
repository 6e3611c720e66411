//! Pre-encoded export requests whose ids are patched per request.
//!
//! A [`Template`] is one export request encoded once with placeholder ids,
//! plus the byte offsets of every trace id, span id and parent span id in
//! it. Rendering copies the bytes and writes the real ids of the request's
//! workflows at those offsets, which keeps the protobuf encoding valid
//! because every id keeps its length. [`Templates`] is a pool of them that
//! realises the requested fraction of invalid workflows.

use prost::Message;

use super::shape::{self, Shape, WorkflowIds, WorkflowSpec};

/// First two bytes of every placeholder id. The pair never occurs in valid
/// UTF-8 (0xE2 cannot follow 0xF1), so text values cannot contain it.
/// Numeric fields can, so [`find_patches`] checks the whole placeholder and
/// [`Template::build`] the count.
const MARK: [u8; 2] = [0xF1, 0xE2];
const TRACE_MARK: u8 = b'T';
const SPAN_MARK: u8 = b'S';
/// Last eight bytes of a placeholder trace id.
const TRACE_PAD: [u8; 8] = [0xA5; 8];

/// Workflows in the template pool; the invalid fraction is realised to
/// within one in this many workflows.
const POOL_WORKFLOWS: usize = 1000;

/// A placeholder id's position and the id that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Patch {
    offset: usize,
    /// Workflow position within the request.
    slot: u32,
    /// `None` for the trace id, else the step whose span id goes here.
    step: Option<u8>,
}

/// One export request, encoded once.
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    patches: Vec<Patch>,
    workflows: usize,
    invalid_workflows: usize,
}

impl Template {
    /// Encodes a request with one workflow per entry of `valid`.
    pub fn build(shape: &Shape, valid: &[bool], start_unix_nano: u64) -> Template {
        let mut spans = Vec::with_capacity(valid.len() * shape.steps);
        for (slot, is_valid) in valid.iter().enumerate() {
            let ids = placeholder_ids(slot as u32, shape.steps);
            let spec = WorkflowSpec {
                shape,
                ids: &ids,
                valid: *is_valid,
                start_unix_nano,
                variant: slot as u64,
            };
            spans.extend(shape::workflow_spans(&spec));
        }
        let bytes = shape::request(spans).encode_to_vec();
        let patches = find_patches(&bytes, valid.len(), shape.steps);
        // Each span carries a trace id and a span id, each non-root span a
        // parent span id.
        let expected = valid.len() * (3 * shape.steps - 1);
        assert_eq!(
            patches.len(),
            expected,
            "every placeholder id of the template is found exactly once"
        );
        let invalid_workflows = valid.iter().filter(|is_valid| !**is_valid).count();
        Template {
            bytes,
            patches,
            workflows: valid.len(),
            invalid_workflows,
        }
    }

    /// Writes the request whose first workflow has sequence number
    /// `first_workflow` into `out`, replacing its contents.
    pub fn render(&self, salt: u64, first_workflow: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        for patch in &self.patches {
            let workflow = first_workflow + u64::from(patch.slot);
            match patch.step {
                None => {
                    out[patch.offset..patch.offset + 16].copy_from_slice(&trace_id(salt, workflow))
                }
                Some(step) => out[patch.offset..patch.offset + 8]
                    .copy_from_slice(&span_id(salt, workflow, step)),
            }
        }
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Returns whether the encoded request is empty, which it never is.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn placeholder_ids(slot: u32, steps: usize) -> WorkflowIds {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&placeholder(TRACE_MARK, 0, slot));
    trace_id[8..].copy_from_slice(&TRACE_PAD);
    let span_ids = (0..steps)
        .map(|step| placeholder(SPAN_MARK, step as u8, slot))
        .collect();
    WorkflowIds { trace_id, span_ids }
}

fn placeholder(kind: u8, step: u8, slot: u32) -> [u8; 8] {
    let mut id = [0u8; 8];
    id[..2].copy_from_slice(&MARK);
    id[2] = kind;
    id[3] = step;
    id[4..].copy_from_slice(&slot.to_be_bytes());
    id
}

/// Finds every placeholder in `bytes` written for `workflows` workflows of
/// `steps` steps.
fn find_patches(bytes: &[u8], workflows: usize, steps: usize) -> Vec<Patch> {
    let mut patches = Vec::new();
    let mut offset = 0;
    while offset + 8 <= bytes.len() {
        match read_placeholder(&bytes[offset..], workflows, steps) {
            Some((patch, len)) => {
                patches.push(Patch { offset, ..patch });
                offset += len;
            }
            None => offset += 1,
        }
    }
    patches
}

/// Reads the placeholder at the start of `bytes` and its length, if there
/// is one.
fn read_placeholder(bytes: &[u8], workflows: usize, steps: usize) -> Option<(Patch, usize)> {
    if bytes[..2] != MARK {
        return None;
    }
    let slot = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
    if slot as usize >= workflows {
        return None;
    }
    match bytes[2] {
        TRACE_MARK if bytes[3] == 0 && bytes.get(8..16) == Some(&TRACE_PAD[..]) => Some((
            Patch {
                offset: 0,
                slot,
                step: None,
            },
            16,
        )),
        SPAN_MARK if usize::from(bytes[3]) < steps => Some((
            Patch {
                offset: 0,
                slot,
                step: Some(bytes[3]),
            },
            8,
        )),
        _ => None,
    }
}

/// Returns the trace id of workflow number `workflow` in a run with
/// `salt`. The salt keeps runs against the same database apart.
pub fn trace_id(salt: u64, workflow: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(salt | 1).to_be_bytes());
    id[8..].copy_from_slice(&workflow.to_be_bytes());
    id
}

/// Returns the span id of step `step` of workflow number `workflow`, which
/// is never zero.
pub fn span_id(salt: u64, workflow: u64, step: u8) -> [u8; 8] {
    let mixed = splitmix64(salt ^ workflow.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(step));
    (mixed | 1).to_be_bytes()
}

fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// Counts of one rendered request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub spans: u64,
    pub workflows: u64,
    pub invalid_workflows: u64,
}

/// The pool of templates that requests rotate through.
#[derive(Clone, Debug)]
pub struct Templates {
    templates: Vec<Template>,
    workflows_per_request: usize,
    steps: usize,
}

impl Templates {
    /// Builds enough templates of `workflows_per_request` workflows each
    /// that `invalid_fraction` of the workflows across them are invalid.
    pub fn new(
        shape: &Shape,
        workflows_per_request: usize,
        invalid_fraction: f64,
        start_unix_nano: u64,
    ) -> Templates {
        let count = POOL_WORKFLOWS.div_ceil(workflows_per_request).max(1);
        let templates = (0..count)
            .map(|index| {
                let valid: Vec<bool> = (0..workflows_per_request)
                    .map(|slot| {
                        !is_invalid(
                            (index * workflows_per_request + slot) as u64,
                            invalid_fraction,
                        )
                    })
                    .collect();
                Template::build(shape, &valid, start_unix_nano)
            })
            .collect();
        Templates {
            templates,
            workflows_per_request,
            steps: shape.steps,
        }
    }

    /// Renders request number `index` into `out`.
    pub fn render(&self, salt: u64, index: u64, out: &mut Vec<u8>) -> RequestInfo {
        let template = &self.templates[(index % self.templates.len() as u64) as usize];
        template.render(salt, index * self.workflows_per_request as u64, out);
        RequestInfo {
            spans: (template.workflows * self.steps) as u64,
            workflows: template.workflows as u64,
            invalid_workflows: template.invalid_workflows as u64,
        }
    }

    /// Spans in every request.
    pub fn spans_per_request(&self) -> u64 {
        (self.workflows_per_request * self.steps) as u64
    }

    /// Average encoded bytes per span.
    pub fn bytes_per_span(&self) -> f64 {
        let bytes: usize = self.templates.iter().map(Template::len).sum();
        bytes as f64 / (self.templates.len() as u64 * self.spans_per_request()) as f64
    }
}

/// Returns whether pool workflow `position` is invalid. It spreads
/// `fraction` evenly: one invalid workflow each time the running share
/// crosses a whole number.
fn is_invalid(position: u64, fraction: f64) -> bool {
    let before = (position as f64 * fraction).floor();
    let after = ((position + 1) as f64 * fraction).floor();
    after > before
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::otlp::ExportTraceServiceRequest;
    use crate::receiver::convert::{RequestContext, convert_request};
    use crate::validate::{Policy, root_reasons};

    const START: u64 = 1_796_000_000_000_000_000;

    fn decode(bytes: &[u8]) -> Vec<crate::otlp::Span> {
        let request = ExportTraceServiceRequest::decode(bytes).expect("a rendered request decodes");
        request
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect()
    }

    #[test]
    fn render_patches_every_id() {
        let shape = Shape::default();
        let template = Template::build(&shape, &[true; 10], START);
        let mut out = Vec::new();
        template.render(42, 1000, &mut out);
        let spans = decode(&out);
        assert_eq!(spans.len(), 80);
        let traces: HashSet<Vec<u8>> = spans.iter().map(|span| span.trace_id.clone()).collect();
        let expected: HashSet<Vec<u8>> = (1000..1010)
            .map(|workflow| trace_id(42, workflow).to_vec())
            .collect();
        assert_eq!(traces, expected);
        for span in &spans {
            assert_ne!(span.span_id[..2], MARK, "span id still holds a placeholder");
            assert!(
                span.parent_span_id.is_empty() || span.parent_span_id[..2] != MARK,
                "parent id still holds a placeholder"
            );
        }
    }

    #[test]
    fn parents_point_into_the_same_workflow() {
        let template = Template::build(&Shape::default(), &[true; 5], START);
        let mut out = Vec::new();
        template.render(7, 0, &mut out);
        let spans = decode(&out);
        let ids: HashSet<(Vec<u8>, Vec<u8>)> = spans
            .iter()
            .map(|span| (span.trace_id.clone(), span.span_id.clone()))
            .collect();
        assert_eq!(
            ids.len(),
            spans.len(),
            "every span id is unique within its trace"
        );
        for span in spans.iter().filter(|span| !span.parent_span_id.is_empty()) {
            assert!(ids.contains(&(span.trace_id.clone(), span.parent_span_id.clone())));
        }
        assert_eq!(
            spans
                .iter()
                .filter(|span| span.parent_span_id.is_empty())
                .count(),
            5
        );
    }

    #[test]
    fn requests_get_distinct_trace_ids() {
        let templates = Templates::new(&Shape::default(), 10, 0.0, START);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for index in 0..300 {
            templates.render(9, index, &mut out);
            for span in decode(&out)
                .iter()
                .filter(|span| span.parent_span_id.is_empty())
            {
                assert!(
                    seen.insert(span.trace_id.clone()),
                    "trace id repeats in request {index}"
                );
            }
        }
        assert_eq!(seen.len(), 3000);
    }

    #[test]
    fn invalid_fraction_is_realised() {
        for (fraction, expected) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000)] {
            let templates = Templates::new(&Shape::default(), 50, fraction, START);
            let mut out = Vec::new();
            let invalid: u64 = (0..20)
                .map(|index| templates.render(1, index, &mut out).invalid_workflows)
                .sum();
            assert_eq!(
                invalid, expected,
                "invalid workflows at fraction {fraction}"
            );
        }
    }

    #[test]
    fn invalid_roots_fail_root_checks() {
        let templates = Templates::new(&Shape::default(), 20, 0.25, START);
        let mut out = Vec::new();
        let info = templates.render(3, 0, &mut out);
        let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        let context = RequestContext {
            received_at_unix_nano: 1,
            sender: Arc::from(""),
            limits: Default::default(),
        };
        let converted = convert_request(request, &context);
        assert!(converted.rejected.is_empty());
        assert_eq!(converted.spans.len() as u64, info.spans);
        let failing = converted
            .spans
            .iter()
            .filter(|span| span.parent_span_id.is_none())
            .filter(|span| !root_reasons(&Policy::default(), span).is_empty())
            .count();
        assert_eq!(failing as u64, info.invalid_workflows);
        assert_eq!(info.invalid_workflows, 5);
    }

    #[test]
    fn default_spans_are_about_one_kib() {
        let templates = Templates::new(&Shape::default(), 50, 0.05, START);
        let bytes = templates.bytes_per_span();
        assert!((800.0..1300.0).contains(&bytes), "{bytes} bytes per span");
    }

    #[test]
    fn span_ids_are_never_zero() {
        for workflow in 0..10_000 {
            for step in 0..8 {
                assert_ne!(span_id(0, workflow, step), [0; 8]);
            }
        }
    }
}
