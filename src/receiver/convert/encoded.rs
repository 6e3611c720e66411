//! Checks the spans of a request still in its protobuf encoding, as the
//! gRPC and OTLP/HTTP protobuf listeners receive it.
//!
//! The request is split into its resources, scopes and spans without
//! decoding them ([`wire::split_request`]). Each span is copied whole into
//! its spool record and read from there by the wire decoder, so the
//! record's bytes are the span as sent and its texts share them. The
//! resource and scope of a group are decoded with prost once.
//!
//! Redaction comes first, as on the decoded path. A span goes through
//! prost's types, where it is redacted and encoded again, in three cases:
//!
//! - a value of it matches a pattern ([`Redactor::value_search`]);
//! - the attribute limits changed it, because a secret could hide in what
//!   they cut;
//! - the wire decoder leaves it to prost.
//!
//! A resource with a secret is encoded again after redaction. Anything the
//! split does not read sends the whole request down the decoded path.
//!
//! A receiver that spools span bodies passes the names of the attributes
//! read on arrival ([`ArrivalKeys`]). Each other attribute is checked as
//! usual, but left out of the span when its value is a scalar within the
//! size limit ([`Span::arrival_only`]). The assembler reads the whole span
//! back from the spool when it needs it.
//!
//! For a request that prost encoded, the spans, quarantine rows and
//! redactions are those of the decoded path, `RawSpan` bytes included. A
//! sender whose encoding differs from prost's (fields in another order,
//! unknown fields) gets its span's bytes kept as sent. Where a span needs
//! prost, it is decoded on its own, so prost's nesting limit counts from
//! the span rather than from the request.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::{
    ArrivalKeys, Converted, LimitStats, Origin, RequestContext, add_span, convert_request,
    convert_resource, convert_scope, raw_copy, record, wire,
};
use crate::otlp;
use crate::redact::{Redactions, Redactor};
use crate::span::{Resource, Scope, Span};

/// Redacts and checks every span of the encoded request `body`, like
/// [`Redactor::redact_request`] followed by [`convert_request`]. The error
/// is prost's reason why `body` is not an `ExportTraceServiceRequest`.
///
/// With `keys`, spans keep only the attributes that arrival reads, when
/// they can ([`Span::arrival_only`]). Only a receiver that spools span
/// bodies passes them.
pub fn convert_encoded(
    body: Bytes,
    redactor: &Redactor,
    keys: Option<&ArrivalKeys>,
    context: &RequestContext,
) -> Result<(Converted, Redactions), prost::DecodeError> {
    if let Some(done) = convert_split(&body, redactor, keys, context) {
        return Ok(done);
    }
    let mut request = otlp::ExportTraceServiceRequest::decode(body)?;
    let redactions = redactor.redact_request(&mut request);
    Ok((convert_request(request, context), redactions))
}

/// Converts `body` group by group, or returns `None` for the decoded path.
fn convert_split(
    body: &Bytes,
    redactor: &Redactor,
    keys: Option<&ArrivalKeys>,
    context: &RequestContext,
) -> Option<(Converted, Redactions)> {
    let groups = wire::split_request(body)?;
    let sent = groups
        .iter()
        .flat_map(|group| &group.scopes)
        .map(|(_, spans)| spans.len())
        .sum();
    let mut converted = Converted {
        spans: Vec::with_capacity(sent),
        ..Default::default()
    };
    let mut found = Redactions::default();
    for group in groups {
        let mut raw_resource = otlp::Resource::decode(body.slice_ref(group.resource)).ok()?;
        let before = found.total();
        redactor.redact_resource(&mut raw_resource, &mut found);
        let resource_bytes = if found.total() > before {
            Bytes::from(raw_resource.encode_to_vec())
        } else {
            body.slice_ref(group.resource)
        };
        let mut stats = LimitStats::default();
        let resource = convert_resource(&raw_resource, &context.limits, &mut stats);
        converted.add_stats(stats);
        for (scope_bytes, spans) in group.scopes {
            let raw_scope = otlp::InstrumentationScope::decode(body.slice_ref(scope_bytes)).ok()?;
            let scope = convert_scope(&raw_scope);
            let origin = Origin::new(&raw_resource, &raw_scope, &resource, scope);
            for encoding in spans {
                if let Ok((resource, scope)) = &origin.checked
                    && let Some(span) = direct(
                        encoding,
                        &resource_bytes,
                        scope_bytes,
                        resource,
                        scope,
                        redactor,
                        keys,
                        context,
                    )
                {
                    converted.spans.push(span);
                    continue;
                }
                // The span as prost reads it, redacted and checked as on
                // the decoded path.
                let mut span = otlp::Span::decode(body.slice_ref(encoding)).ok()?;
                redactor.redact_one_span(&mut span, &mut found);
                let raw = raw_copy(&resource_bytes, scope_bytes, &span);
                add_span(&span, &origin, context, raw, None, &mut converted);
            }
        }
    }
    Some((converted, found))
}

/// Copies the span `encoding` into its spool record and reads it from
/// there. Returns `None` when the span has to go through prost's types:
/// the wire decoder leaves it to prost, the attribute limits changed it, or
/// a value of it matches a redaction pattern.
///
/// With `keys`, attributes that arrival does not read are left out of the
/// span ([`Span::arrival_only`]), unless the redactor has to search the
/// span's values.
#[allow(clippy::too_many_arguments)]
fn direct(
    encoding: &[u8],
    resource_bytes: &[u8],
    scope_bytes: &[u8],
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    redactor: &Redactor,
    keys: Option<&ArrivalKeys>,
    context: &RequestContext,
) -> Option<Span> {
    let raw = record(resource_bytes, scope_bytes, encoding.len(), |bytes| {
        bytes.extend_from_slice(encoding)
    });
    let view = raw.slice(raw.len() - encoding.len()..);
    let search = redactor.value_search(encoding);
    let mut stats = LimitStats::default();
    let span = wire::decode_span(
        &view,
        resource.clone(),
        scope.clone(),
        context,
        raw,
        None,
        keys.filter(|_| search.is_none()),
        &mut stats,
    )?;
    let unchanged = stats.dropped == 0 && stats.truncated == 0;
    let redacts = search.is_some_and(|search| search.matches(&span));
    (unchanged && !redacts).then_some(span)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::wire::tests::{any_span, attributes, context};
    use super::super::{RequestContext, span_from_raw};
    use super::*;
    use crate::config::RedactConfig;
    use crate::otlp::{AnyValue, KeyValue, any_value};
    use crate::preset::{ORIGIN_TYPE, Resolver};
    use crate::redact::CustomPattern;
    use crate::span::Value;
    use crate::validate::{Policy, Requirement, issuance, root_reasons};

    const PASSWORD: &str = "db password=hunter22 retry=3";
    const BEARER: &str = "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";

    fn redactor(enabled: bool, custom: Option<&str>) -> Redactor {
        let patterns = custom
            .map(|regex| CustomPattern {
                name: "acme_token".to_owned(),
                regex: regex.to_owned(),
            })
            .into_iter()
            .collect();
        Redactor::new(&RedactConfig {
            enabled,
            patterns,
            skip_keys: Vec::new(),
        })
        .unwrap()
    }

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(Bytes::copy_from_slice(
                    value.as_bytes(),
                ))),
            }),
        }
    }

    fn valid_span(n: u8, attributes: Vec<KeyValue>) -> otlp::Span {
        otlp::Span {
            trace_id: vec![1; 16],
            span_id: vec![n; 8],
            name: Bytes::from_static(b"tool"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes,
            ..Default::default()
        }
    }

    fn request(resource: Vec<KeyValue>, spans: Vec<otlp::Span>) -> otlp::ExportTraceServiceRequest {
        otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(otlp::Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope {
                        name: Bytes::from_static(b"agent"),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Both paths over `request`: the encoded one and the decoded one.
    fn both(
        request: &otlp::ExportTraceServiceRequest,
        redactor: &Redactor,
        context: &RequestContext,
    ) -> ((Converted, Redactions), (Converted, Redactions)) {
        let body = Bytes::from(request.encode_to_vec());
        let encoded = convert_encoded(body, redactor, None, context).expect("the request decodes");
        let mut decoded = request.clone();
        let redactions = redactor.redact_request(&mut decoded);
        (encoded, (convert_request(decoded, context), redactions))
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[test]
    fn clean_spans_share_their_record() {
        let request = request(
            vec![text("service.name", "planner")],
            vec![valid_span(1, vec![text("gen_ai.prompt", "plan the trip")])],
        );
        let body = Bytes::from(request.encode_to_vec());

        let (converted, found) =
            convert_encoded(body, &redactor(true, None), None, &context(1024, 4096)).unwrap();

        assert_eq!(found.total(), 0);
        let span = &converted.spans[0];
        let record = span.raw.as_ptr_range();
        let Some(Value::Str(prompt)) = span.attributes.get("gen_ai.prompt") else {
            panic!("the prompt is text: {span:?}");
        };
        assert_eq!(&**prompt, "plan the trip");
        assert!(
            record.contains(&prompt.as_bytes().as_ptr()),
            "the value is a view of the spool record"
        );
        assert_eq!(&*span.resource.service_name, "planner");
    }

    #[test]
    fn secrets_redacted_in_span_resource_and_record() {
        let request = request(
            vec![
                text("service.name", "planner"),
                text("deploy.note", PASSWORD),
            ],
            vec![
                valid_span(1, vec![text("http.header", BEARER)]),
                valid_span(2, vec![text("gen_ai.prompt", "plan the trip")]),
            ],
        );

        let ((converted, found), (decoded, expected)) =
            both(&request, &redactor(true, None), &context(1024, 4096));

        assert_eq!(found, expected);
        assert_eq!(found.total(), 2, "{found:?}");
        assert_eq!(converted.spans, decoded.spans);
        for span in &converted.spans {
            assert!(
                !contains(&span.raw, "hunter22"),
                "resource redacted in RawSpan"
            );
            assert!(!contains(&span.raw, "eyJzdWIi"), "span redacted in RawSpan");
        }
        assert_eq!(
            converted.spans[0]
                .attributes
                .get_text("http.header")
                .as_deref(),
            Some("Authorization: Bearer [REDACTED:jwt]")
        );
    }

    #[test]
    fn secret_past_the_size_limit_redacted_in_record() {
        let long = format!("{}{PASSWORD}", "x".repeat(40));
        let request = request(Vec::new(), vec![valid_span(1, vec![text("note", &long)])]);

        let ((converted, _), (decoded, _)) =
            both(&request, &redactor(true, None), &context(1024, 24));

        assert_eq!(converted.spans, decoded.spans);
        assert_eq!(converted.truncated_values, 1);
        assert!(
            !contains(&converted.spans[0].raw, "hunter22"),
            "the whole value is redacted in RawSpan, not only the part kept"
        );
    }

    #[test]
    fn anchored_configured_pattern_redacted() {
        let redactor = redactor(true, Some("^tok_[a-z]{8}$"));
        let request = request(
            Vec::new(),
            vec![valid_span(1, vec![text("api.key", "tok_abcdefgh")])],
        );

        let ((converted, found), (decoded, expected)) =
            both(&request, &redactor, &context(1024, 4096));

        assert_eq!(found, expected);
        assert_eq!(converted.spans, decoded.spans);
        assert_eq!(
            converted.spans[0].attributes.get_text("api.key").as_deref(),
            Some("[REDACTED:acme_token]")
        );
        assert!(!contains(&converted.spans[0].raw, "tok_abcdefgh"));
    }

    #[test]
    fn undecodable_bodies_fail_as_prost_fails() {
        let redactor = redactor(true, None);
        let context = context(1024, 4096);
        let cases: [&[u8]; 4] = [
            // A request field longer than the body.
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            // The request field as a varint.
            &[0x08, 0x01],
            // A span field as a varint inside a valid group.
            &[0x0a, 0x04, 0x12, 0x02, 0x10, 0x01],
            // A field number of zero.
            &[0x00, 0x00],
        ];
        for body in cases {
            let prost = otlp::ExportTraceServiceRequest::decode(body);
            let encoded = convert_encoded(Bytes::from_static(body), &redactor, None, &context);
            assert!(prost.is_err(), "{body:?} is not a request");
            assert!(encoded.is_err(), "{body:?} is refused");
        }
    }

    #[test]
    fn arrival_keys_leave_out_other_attributes() {
        let list = AnyValue {
            value: Some(any_value::Value::ArrayValue(otlp::ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::IntValue(1)),
                }],
            })),
        };
        let step = valid_span(
            1,
            vec![
                text("gen_ai.prompt", "plan the trip"),
                text("gen_ai.operation.name", "chat"),
                text("agent_ledger.credential.id", "cred-7"),
                KeyValue {
                    key: Bytes::from_static(b"retry.count"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(3)),
                    }),
                },
                KeyValue {
                    key: Bytes::from_static(b"retry.delays"),
                    value: Some(list),
                },
            ],
        );
        let root = valid_span(
            2,
            vec![
                text("gen_ai.prompt", "plan the trip"),
                text(ORIGIN_TYPE, "user_request"),
                text("enduser.id", "alice"),
            ],
        );
        let body = Bytes::from(request(Vec::new(), vec![step, root]).encode_to_vec());
        let keys = ArrivalKeys::new(&Resolver::default());

        let (converted, _) = convert_encoded(
            body,
            &redactor(true, None),
            Some(&keys),
            &context(1024, 4096),
        )
        .unwrap();

        let [step, root] = &converted.spans[..] else {
            panic!("two spans: {:?}", converted.spans);
        };
        let names: Vec<&str> = step.attributes.0.iter().map(|(key, _)| &**key).collect();
        assert_eq!(
            names,
            [
                "gen_ai.operation.name",
                "agent_ledger.credential.id",
                "retry.delays"
            ],
            "names the presets read, agent_ledger names and lists are kept"
        );
        assert!(step.arrival_only);
        let names: Vec<&str> = root.attributes.0.iter().map(|(key, _)| &**key).collect();
        assert_eq!(
            names,
            [ORIGIN_TYPE, "enduser.id"],
            "a root keeps what the policy checks on it"
        );
        let context = context(1024, 4096);
        let full = span_from_raw(step.raw.clone(), &context).expect("the record decodes");
        assert_eq!(full.attributes.0.len(), 5, "the record has every attribute");
    }

    /// Requests of one or two groups with secrets in some resources,
    /// span attributes and event names.
    fn any_request() -> impl Strategy<Value = otlp::ExportTraceServiceRequest> {
        let secret = prop_oneof![Just(PASSWORD), Just(BEARER), Just("tok_abcdefgh")];
        let span = (
            any_span(),
            prop::option::of(secret.clone()),
            prop::option::of(secret.clone()),
        )
            .prop_map(|(mut span, attribute, event_name)| {
                if let Some(secret) = attribute {
                    span.attributes.push(text("note", secret));
                }
                if let (Some(secret), Some(event)) = (event_name, span.events.first_mut()) {
                    event.name = Bytes::from_static(secret.as_bytes());
                }
                span
            });
        let scope = prop::collection::vec(span, 0..4).prop_map(|spans| otlp::ScopeSpans {
            scope: Some(otlp::InstrumentationScope {
                name: Bytes::from_static(b"agent"),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        });
        let group = (
            attributes(),
            prop::option::of(secret),
            prop::collection::vec(scope, 1..3),
        )
            .prop_map(|(mut attributes, secret, scope_spans)| {
                if let Some(secret) = secret {
                    attributes.push(text("deploy.note", secret));
                }
                otlp::ResourceSpans {
                    resource: Some(otlp::Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans,
                    ..Default::default()
                }
            });
        prop::collection::vec(group, 1..3)
            .prop_map(|resource_spans| otlp::ExportTraceServiceRequest { resource_spans })
    }

    /// Attributes that arrival reads, with values that make spans roots,
    /// steps of a kind or credential issuances.
    fn arrival_attribute() -> impl Strategy<Value = KeyValue> {
        let key = prop::sample::select(vec![
            ORIGIN_TYPE,
            "agent_ledger.credential.id",
            "agent_ledger.credential.event",
            "agent_ledger.credential.scopes",
            "agent_ledger.origin.authorized_by",
            "gen_ai.operation.name",
            "gen_ai.tool.name",
            "gen_ai.agent.name",
            "gen_ai.request.model",
            "openinference.span.kind",
            "enduser.id",
        ]);
        let value = prop::sample::select(vec![
            "issued",
            "chat",
            "execute_tool",
            "invoke_agent",
            "user_request",
            "LLM",
            "TOOL",
            "cred-1",
            "orders:read",
            " ",
        ]);
        (key, value).prop_map(|(key, value)| text(key, value))
    }

    proptest! {
        #[test]
        fn encoded_matches_decoded(
            request in any_request(),
            enabled in any::<bool>(),
            custom in any::<bool>(),
            max_attributes in prop_oneof![Just(1024usize), 1usize..6],
            max_value_bytes in prop_oneof![Just(4096usize), 8usize..48],
        ) {
            let redactor = redactor(enabled, custom.then_some("^tok_[a-z]{8}$"));
            let context = context(max_attributes, max_value_bytes);

            let ((converted, found), (decoded, expected)) = both(&request, &redactor, &context);

            prop_assert_eq!(found, expected);
            prop_assert_eq!(converted.spans, decoded.spans);
            prop_assert_eq!(converted.rejected, decoded.rejected);
            prop_assert_eq!(converted.dropped_attributes, decoded.dropped_attributes);
            prop_assert_eq!(converted.truncated_values, decoded.truncated_values);
        }

        #[test]
        fn arrival_keys_change_nothing_arrival_reads(
            request in any_request(),
            added in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), arrival_attribute()),
                0..12,
            ),
            enabled in any::<bool>(),
            // A configured pattern has every value searched, so that no
            // attribute is left out.
            custom in prop::bool::weighted(0.2),
            max_attributes in prop_oneof![Just(1024usize), 1usize..6],
            max_value_bytes in prop_oneof![Just(4096usize), 8usize..48],
        ) {
            let mut request = request;
            let mut spans: Vec<&mut otlp::Span> = request
                .resource_spans
                .iter_mut()
                .flat_map(|group| &mut group.scope_spans)
                .flat_map(|scope| &mut scope.spans)
                .collect();
            if !spans.is_empty() {
                for (span, position, attribute) in added {
                    let count = spans.len();
                    let span = &mut spans[span.index(count)];
                    let at = position.index(span.attributes.len() + 1);
                    span.attributes.insert(at, attribute);
                }
            }
            let redactor = redactor(enabled, custom.then_some("^tok_[a-z]{8}$"));
            let context = context(max_attributes, max_value_bytes);
            let resolver = Resolver::default();
            let keys = ArrivalKeys::new(&resolver);
            let policy = Policy {
                require: Requirement::ALL.to_vec(),
                ..Policy::default()
            };
            let body = Bytes::from(request.encode_to_vec());

            let (kept, kept_found) =
                convert_encoded(body.clone(), &redactor, Some(&keys), &context).unwrap();
            let (full, full_found) = convert_encoded(body, &redactor, None, &context).unwrap();

            prop_assert_eq!(kept_found, full_found);
            prop_assert_eq!(kept.rejected, full.rejected);
            prop_assert_eq!(kept.dropped_attributes, full.dropped_attributes);
            prop_assert_eq!(kept.truncated_values, full.truncated_values);
            prop_assert_eq!(kept.spans.len(), full.spans.len());
            for (kept, full) in kept.spans.iter().zip(&full.spans) {
                prop_assert_eq!(resolver.classify(kept), resolver.classify(full));
                prop_assert_eq!(issuance(kept), issuance(full));
                prop_assert_eq!(root_reasons(&policy, kept), root_reasons(&policy, full));
                let restored = Span {
                    attributes: full.attributes.clone(),
                    arrival_only: false,
                    ..kept.clone()
                };
                prop_assert_eq!(&restored, full);
                if kept.arrival_only {
                    let read_again = span_from_raw(kept.raw.clone(), &context);
                    prop_assert_eq!(read_again.as_ref(), Some(full));
                } else {
                    prop_assert_eq!(&kept.attributes, &full.attributes);
                }
            }
        }

        #[test]
        fn damaged_bodies_fail_as_prost_fails(
            request in any_request(),
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut body = request.encode_to_vec();
            prop_assume!(!body.is_empty());
            for (index, byte) in damage {
                let at = index.index(body.len());
                body[at] = byte;
            }
            let redactor = redactor(true, None);
            let context = context(1024, 4096);

            let prost = otlp::ExportTraceServiceRequest::decode(body.as_slice());
            let encoded = convert_encoded(Bytes::from(body), &redactor, None, &context);

            prop_assert_eq!(prost.is_ok(), encoded.is_ok());
            if let (Ok(request), Ok((converted, _))) = (prost, encoded) {
                let mut request = request;
                redactor.redact_request(&mut request);
                let decoded = convert_request(request, &context);
                prop_assert_eq!(converted.spans.len(), decoded.spans.len());
                prop_assert_eq!(converted.rejected.len(), decoded.rejected.len());
            }
        }
    }
}
