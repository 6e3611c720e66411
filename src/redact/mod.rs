//! Secret redaction: keeps credentials, tokens and keys out of the trail.
//!
//! Takes each decoded OTLP export request in the receiver and replaces
//! every secret it finds in attribute values (span, resource, event and link
//! attributes, strings nested in arrays and key-value lists included) and in
//! event names with `[REDACTED:<kind>]`. It runs before the per-span checks
//! turn the request into typed spans, so the typed spans, the quarantine
//! rows, `RawSpan`, content hashes and row hashes only ever see the redacted
//! text. Values under the credential attribute keys and configured skip keys
//! are left alone.
//!
//! The markers are the record of what was redacted: [`redacted_kinds`]
//! reads them back from a span when its row is built, so a span that was
//! quarantined and read back from `RawSpan` keeps its count. A sender that
//! writes such a marker itself is counted as if it had been redacted.
//!
//! Most values contain no secret, so each value first goes through a
//! literal search for the triggers of the built-in patterns: fixed strings
//! such as `eyJ`, `AKIA` or `://`, and keywords such as `bearer` or
//! `password` in any case (`prefilter.rs`). Only a value that contains a
//! trigger goes through the [`RegexSet`] of the built-in patterns. The
//! configured patterns have no triggers, so when there are any, their own
//! set runs on every value. Only the patterns that a set matches run again
//! to find and replace the matches.

mod patterns;
mod prefilter;
#[cfg(test)]
mod properties;

use std::collections::HashSet;

use regex::bytes::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::config::RedactConfig;
use crate::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, any_value};
use crate::span::{Attributes, Span, Value};
use prefilter::Prefilter;

pub use patterns::{BUILTIN, SKIPPED_KEYS};

/// Prefix of a redaction marker.
pub const MARKER_PREFIX: &str = "[REDACTED:";

/// Longest kind name of a configured pattern; it becomes a metric label.
const MAX_KIND_LEN: usize = 64;

/// An extra pattern from the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Kind name in the marker and the metric label: lower-case letters,
    /// digits and `_`.
    pub name: String,
    /// Regular expression in Rust `regex` syntax; a group named `secret`
    /// limits the replacement to that group.
    pub regex: String,
}

struct Pattern {
    kind: String,
    regex: Regex,
    group: Option<usize>,
}

/// Redactions made in one request, by kind, for metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redactions {
    pub by_kind: Vec<(String, u64)>,
}

impl Redactions {
    fn add(&mut self, kind: &str) {
        match self
            .by_kind
            .iter_mut()
            .find(|(existing, _)| existing == kind)
        {
            Some((_, count)) => *count += 1,
            None => self.by_kind.push((kind.to_owned(), 1)),
        }
    }

    /// Values redacted in all.
    pub fn total(&self) -> u64 {
        self.by_kind.iter().map(|(_, count)| count).sum()
    }
}

/// A search of a span's values for the patterns, as
/// [`Redactor::value_search`] returns it.
pub struct ValueSearch<'a> {
    redactor: &'a Redactor,
    /// Whether the encoding contains a built-in trigger, so that the
    /// built-in patterns are searched too.
    builtin: bool,
}

impl ValueSearch<'_> {
    /// Checks whether a pattern matches one of the values of `span` that
    /// [`Redactor::redact_one_span`] redacts.
    pub fn matches(&self, span: &Span) -> bool {
        let redactor = self.redactor;
        let matches = |bytes: &[u8]| {
            (self.builtin
                && redactor.prefilter.may_match(bytes)
                && redactor.builtin_set.is_match(bytes))
                || redactor
                    .custom_set
                    .as_ref()
                    .is_some_and(|set| set.is_match(bytes))
        };
        let pairs_match =
            |pairs: &[(crate::span::Str, Value)]| redactor.pairs_match(pairs, &matches);
        pairs_match(&span.attributes.0)
            || span
                .events
                .iter()
                .any(|event| matches(event.name.as_bytes()) || pairs_match(&event.attributes.0))
            || span
                .links
                .iter()
                .any(|link| pairs_match(&link.attributes.0))
    }
}

/// The compiled patterns and skip keys.
pub struct Redactor {
    enabled: bool,
    prefilter: Prefilter,
    /// The built-in patterns, the first `BUILTIN.len()` of `patterns`.
    builtin_set: RegexSet,
    /// The configured patterns, the rest of `patterns`, or `None` when
    /// there are none.
    custom_set: Option<RegexSet>,
    patterns: Vec<Pattern>,
    skip_keys: HashSet<Vec<u8>, foldhash::fast::RandomState>,
}

impl Redactor {
    /// Compiles the built-in and configured patterns; the error names the
    /// pattern that is invalid.
    pub fn new(config: &RedactConfig) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for builtin in BUILTIN {
            let regex = Regex::new(builtin.regex).expect("built-in patterns compile");
            patterns.push(pattern(builtin.kind.to_owned(), regex));
        }
        for custom in &config.patterns {
            check_kind(&custom.name)?;
            let regex = Regex::new(&custom.regex).map_err(|error| {
                format!(
                    "invalid regular expression of pattern {:?}: {error}",
                    custom.name
                )
            })?;
            patterns.push(pattern(custom.name.clone(), regex));
        }
        let builtin_set = RegexSet::new(BUILTIN.iter().map(|builtin| builtin.regex))
            .expect("built-in patterns compile together");
        let custom_set = if config.patterns.is_empty() {
            None
        } else {
            let regexes = patterns[BUILTIN.len()..]
                .iter()
                .map(|pattern| pattern.regex.as_str());
            let set = RegexSet::new(regexes).map_err(|error| {
                format!("the configured patterns do not compile together: {error}")
            })?;
            Some(set)
        };
        let mut skip_keys: HashSet<Vec<u8>, foldhash::fast::RandomState> = SKIPPED_KEYS
            .iter()
            .map(|key| key.as_bytes().to_vec())
            .collect();
        skip_keys.extend(config.skip_keys.iter().map(|key| key.as_bytes().to_vec()));
        Ok(Redactor {
            enabled: config.enabled,
            prefilter: Prefilter::new(BUILTIN),
            builtin_set,
            custom_set,
            patterns,
            skip_keys,
        })
    }

    /// Every kind name, built-in and configured, for metrics.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = Vec::new();
        for pattern in &self.patterns {
            if !kinds.contains(&pattern.kind.as_str()) {
                kinds.push(&pattern.kind);
            }
        }
        kinds
    }

    /// Redacts every secret in `request`.
    pub fn redact_request(&self, request: &mut ExportTraceServiceRequest) -> Redactions {
        let mut found = Redactions::default();
        if !self.enabled {
            return found;
        }
        for resource_spans in &mut request.resource_spans {
            if let Some(resource) = &mut resource_spans.resource {
                self.redact_pairs(&mut resource.attributes, &mut found);
            }
            for scope_spans in &mut resource_spans.scope_spans {
                for span in &mut scope_spans.spans {
                    self.redact_span(span, &mut found);
                }
            }
        }
        found
    }

    /// Redacts every secret in the attributes of `resource`.
    pub fn redact_resource(&self, resource: &mut crate::otlp::Resource, found: &mut Redactions) {
        if self.enabled {
            self.redact_pairs(&mut resource.attributes, found);
        }
    }

    /// Redacts every secret in one span: in its attributes, event names
    /// and the attributes of its events and links.
    pub fn redact_one_span(&self, span: &mut crate::otlp::Span, found: &mut Redactions) {
        if self.enabled {
            self.redact_span(span, found);
        }
    }

    /// Returns the search of a span's values that its encoding calls for,
    /// or `None` when no value of it can match a pattern, so that redacting
    /// the encoding leaves it unchanged.
    ///
    /// Every value is a part of the encoding. So when the encoding contains
    /// no built-in trigger, no value can match a built-in pattern, and
    /// without configured patterns no value is searched.
    pub fn value_search(&self, encoding: &[u8]) -> Option<ValueSearch<'_>> {
        if !self.enabled {
            return None;
        }
        let builtin = self.prefilter.may_match(encoding);
        (builtin || self.custom_set.is_some()).then_some(ValueSearch {
            redactor: self,
            builtin,
        })
    }

    fn pairs_match(
        &self,
        pairs: &[(crate::span::Str, Value)],
        matches: &impl Fn(&[u8]) -> bool,
    ) -> bool {
        pairs.iter().any(|(key, value)| {
            !self.skip_keys.contains(&key.as_bytes()[..]) && self.value_matches(value, matches)
        })
    }

    fn value_matches(&self, value: &Value, matches: &impl Fn(&[u8]) -> bool) -> bool {
        match value {
            Value::Str(text) => matches(text.as_bytes()),
            Value::Array(items) => items.iter().any(|item| self.value_matches(item, matches)),
            Value::Map(pairs) => self.pairs_match(pairs, matches),
            _ => false,
        }
    }

    fn redact_span(&self, span: &mut crate::otlp::Span, found: &mut Redactions) {
        self.redact_pairs(&mut span.attributes, found);
        for event in &mut span.events {
            self.redact_shared(&mut event.name, found);
            self.redact_pairs(&mut event.attributes, found);
        }
        for link in &mut span.links {
            self.redact_pairs(&mut link.attributes, found);
        }
    }

    fn redact_pairs(&self, pairs: &mut [KeyValue], found: &mut Redactions) {
        for pair in pairs {
            if self.skip_keys.contains(&pair.key[..]) {
                continue;
            }
            if let Some(value) = &mut pair.value {
                self.redact_any(value, found);
            }
        }
    }

    fn redact_any(&self, value: &mut AnyValue, found: &mut Redactions) {
        match &mut value.value {
            Some(any_value::Value::StringValue(bytes)) => self.redact_shared(bytes, found),
            Some(any_value::Value::ArrayValue(array)) => {
                for item in &mut array.values {
                    self.redact_any(item, found);
                }
            }
            Some(any_value::Value::KvlistValue(list)) => self.redact_pairs(&mut list.values, found),
            _ => {}
        }
    }

    /// Replaces the secrets in one value that shares a received buffer. The
    /// value gets a buffer of its own only when something is replaced, and
    /// the shared buffer itself is never written.
    fn redact_shared(&self, bytes: &mut bytes::Bytes, found: &mut Redactions) {
        let matched = self.matched_patterns(bytes);
        if matched.is_empty() {
            return;
        }
        let mut owned = bytes.to_vec();
        if self.apply(&matched, &mut owned, found) {
            *bytes = bytes::Bytes::from(owned);
        }
    }

    /// Replaces the secrets in one value.
    pub fn redact_bytes(&self, bytes: &mut Vec<u8>, found: &mut Redactions) {
        let matched = self.matched_patterns(bytes);
        self.apply(&matched, bytes, found);
    }

    /// Returns the indexes in `patterns` of the patterns that match `bytes`,
    /// in list order with the built-in ones first. Both sets look at the
    /// value as it arrived, before any replacement.
    fn matched_patterns(&self, bytes: &[u8]) -> Vec<usize> {
        let mut indexes = Vec::new();
        if self.prefilter.may_match(bytes) {
            indexes.extend(self.builtin_set.matches(bytes).iter());
        }
        if let Some(set) = &self.custom_set {
            indexes.extend(set.matches(bytes).iter().map(|index| BUILTIN.len() + index));
        }
        indexes
    }

    /// Runs the `matched` patterns over `bytes` in order and returns whether
    /// any of them replaced something.
    fn apply(&self, matched: &[usize], bytes: &mut Vec<u8>, found: &mut Redactions) -> bool {
        let mut replaced_any = false;
        for index in matched {
            if let Some(replaced) = replace(&self.patterns[*index], bytes, found) {
                *bytes = replaced;
                replaced_any = true;
            }
        }
        replaced_any
    }

    /// Redacts one text value, for tests and benchmarks.
    pub fn redact_text(&self, text: &str) -> (String, Redactions) {
        let mut bytes = text.as_bytes().to_vec();
        let mut found = Redactions::default();
        self.redact_bytes(&mut bytes, &mut found);
        (String::from_utf8_lossy(&bytes).into_owned(), found)
    }
}

fn pattern(kind: String, regex: Regex) -> Pattern {
    let group = regex
        .capture_names()
        .position(|name| name == Some("secret"));
    Pattern { kind, regex, group }
}

fn check_kind(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_KIND_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid pattern name {name:?}: use 1 to {MAX_KIND_LEN} lower-case letters, digits and underscores"
        ))
    }
}

/// The value with every match of `pattern` (or its `secret` group)
/// replaced, or `None` when nothing matched (the set may match a pattern
/// that an earlier replacement has since removed).
fn replace(pattern: &Pattern, bytes: &[u8], found: &mut Redactions) -> Option<Vec<u8>> {
    let marker = format!("{MARKER_PREFIX}{}]", pattern.kind);
    let mut output = Vec::with_capacity(bytes.len());
    let mut copied = 0;
    for captures in pattern.regex.captures_iter(bytes) {
        let target = match pattern.group {
            Some(group) => captures.get(group),
            None => captures.get(0),
        };
        let Some(target) = target.filter(|target| !target.is_empty()) else {
            continue;
        };
        output.extend_from_slice(&bytes[copied..target.start()]);
        output.extend_from_slice(marker.as_bytes());
        copied = target.end();
        found.add(&pattern.kind);
    }
    if copied == 0 {
        return None;
    }
    output.extend_from_slice(&bytes[copied..]);
    Some(output)
}

/// The kind of every redaction marker in the values of `span`'s row: span,
/// resource, event and link attributes and event names, in that order.
pub fn redacted_kinds(span: &Span) -> Vec<String> {
    let mut kinds = Vec::new();
    collect_attributes(&span.attributes, &mut kinds);
    collect_attributes(&span.resource.attributes, &mut kinds);
    for event in &span.events {
        collect_text(&event.name, &mut kinds);
        collect_attributes(&event.attributes, &mut kinds);
    }
    for link in &span.links {
        collect_attributes(&link.attributes, &mut kinds);
    }
    kinds
}

fn collect_attributes(attributes: &Attributes, kinds: &mut Vec<String>) {
    for (_, value) in &attributes.0 {
        collect_value(value, kinds);
    }
}

fn collect_value(value: &Value, kinds: &mut Vec<String>) {
    match value {
        Value::Str(text) => collect_text(text, kinds),
        Value::Array(items) => items.iter().for_each(|item| collect_value(item, kinds)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|(_, item)| collect_value(item, kinds)),
        _ => {}
    }
}

fn collect_text(text: &str, kinds: &mut Vec<String>) {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARKER_PREFIX));
    let mut rest = text;
    while let Some(start) = FINDER.find(rest.as_bytes()) {
        let after = &rest[start + MARKER_PREFIX.len()..];
        let kind_len = after
            .bytes()
            .take_while(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'_')
            .count();
        if kind_len > 0 && after.as_bytes().get(kind_len) == Some(&b']') {
            kinds.push(after[..kind_len].to_owned());
            rest = &after[kind_len + 1..];
        } else {
            rest = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&RedactConfig::default()).unwrap()
    }

    #[test]
    fn assignment_keeps_its_key() {
        let (text, found) = redactor().redact_text("db password=hunter22 retry=3");
        assert_eq!(text, "db password=[REDACTED:password] retry=3");
        assert_eq!(found.total(), 1);
    }

    #[test]
    fn bearer_jwt_redacted_once() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
        let (text, found) = redactor().redact_text(&format!("Authorization: Bearer {jwt}"));
        assert_eq!(text, "Authorization: Bearer [REDACTED:jwt]");
        assert_eq!(found.by_kind, vec![("jwt".to_owned(), 1)]);
    }

    #[test]
    fn custom_pattern_and_invalid_name() {
        let config = RedactConfig {
            patterns: vec![CustomPattern {
                name: "acme_key".to_owned(),
                regex: r"acme-[0-9]{8}".to_owned(),
            }],
            ..RedactConfig::default()
        };
        let (text, _) = Redactor::new(&config)
            .unwrap()
            .redact_text("key acme-12345678 end");
        assert_eq!(text, "key [REDACTED:acme_key] end");
        let bad = RedactConfig {
            patterns: vec![CustomPattern {
                name: "Acme Key".to_owned(),
                regex: "x".to_owned(),
            }],
            ..RedactConfig::default()
        };
        assert!(Redactor::new(&bad).err().unwrap().contains("\"Acme Key\""));
    }

    #[test]
    fn markers_read_back() {
        let mut kinds = Vec::new();
        collect_text(
            "a [REDACTED:jwt] b [REDACTED:] [REDACTED:api_key]",
            &mut kinds,
        );
        assert_eq!(kinds, vec!["jwt", "api_key"]);
    }
}
