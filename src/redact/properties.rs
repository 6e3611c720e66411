//! Property tests of the prefilter: every text that a built-in pattern
//! matches contains one of that pattern's triggers, and redaction with the
//! prefilter returns the same text and counts as running every pattern's
//! regex on every value.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regex_syntax::hir::{Capture, Class, Hir, HirKind, Repetition};

use super::patterns::Triggers;
use super::prefilter::{FOLDED_TO_ASCII, LONG_WINDOW_LEN, MAX_TRIGGER_LEN, Prefilter};
use super::*;

/// Rebuilds `hir` with every look-around assertion (`\b`, `$`, `\z`)
/// replaced by the empty expression. Every match of the original is a
/// string of the result, so a trigger that all generated strings of the
/// result contain is in every match of the original too.
fn without_assertions(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => hir.clone(),
        HirKind::Repetition(repetition) => Hir::repetition(Repetition {
            sub: Box::new(without_assertions(&repetition.sub)),
            ..repetition.clone()
        }),
        HirKind::Capture(capture) => Hir::capture(Capture {
            sub: Box::new(without_assertions(&capture.sub)),
            ..capture.clone()
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_assertions).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(without_assertions).collect())
        }
    }
}

/// Generates strings that `regex` matches once its assertions are
/// dropped. Under `(?i)` they include the letters that case folding
/// allows, `ſ` and the Kelvin sign among them.
fn matching_text(regex: &str) -> BoxedStrategy<String> {
    let hir = regex_syntax::parse(regex).expect("built-in patterns parse");
    proptest::string::string_regex_parsed(&without_assertions(&hir))
        .expect("proptest generates strings for every built-in pattern")
        .boxed()
}

/// A redactor and one set of all its patterns, built-in and configured,
/// compiled once because compiling them per case would dominate the run.
struct Subject {
    redactor: Redactor,
    every_pattern: RegexSet,
}

impl Subject {
    fn new(config: &RedactConfig) -> Self {
        let redactor = Redactor::new(config).unwrap();
        let regexes = redactor
            .patterns
            .iter()
            .map(|pattern| pattern.regex.as_str());
        let every_pattern = RegexSet::new(regexes).unwrap();
        Subject {
            redactor,
            every_pattern,
        }
    }

    /// Redacts `text` the way the redactor did before the prefilter: the
    /// set of every pattern runs on the value, then the matched patterns
    /// replace in list order.
    fn redact_without_prefilter(&self, text: &str) -> (String, Redactions) {
        let mut bytes = text.as_bytes().to_vec();
        let mut found = Redactions::default();
        let matched = self.every_pattern.matches(&bytes);
        for index in matched.iter() {
            let pattern = &self.redactor.patterns[index];
            if let Some(replaced) = replace(pattern, &bytes, &mut found) {
                bytes = replaced;
            }
        }
        (String::from_utf8_lossy(&bytes).into_owned(), found)
    }
}

static DEFAULT_SUBJECT: LazyLock<Subject> =
    LazyLock::new(|| Subject::new(&RedactConfig::default()));
static CUSTOM_SUBJECT: LazyLock<Subject> = LazyLock::new(|| Subject::new(&custom_config()));

#[test]
fn builtin_matches_contain_trigger() {
    for pattern in BUILTIN {
        let prefilter = Prefilter::new(std::slice::from_ref(pattern));
        let mut runner = TestRunner::new(Config::with_cases(1024));
        let result = runner.run(&matching_text(pattern.regex), |text| {
            prop_assert!(
                prefilter.may_match(text.as_bytes()),
                "no trigger in {text:?}"
            );
            Ok(())
        });
        if let Err(error) = result {
            panic!("pattern {} ({}): {error}", pattern.kind, pattern.regex);
        }
    }
}

#[test]
fn sample_secrets_pass_prefilter() {
    let samples = [
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
        "using access key AKIAQ2WX7ZK4L5M6N7P2 in us-east-1",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYab",
        "https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/acme/app",
        "GH token github_pat_11ABCDEFG0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ rotated",
        "PRIVATE-TOKEN glpat-abcdefghij0123456789",
        "slack client configured with xoxb-123456789012-abcdefghijkl",
        "posting alert to https://hooks.slack.com/services/T0000AAAA/B0000BBBB/abcdefghijklmnop",
        "stripe.api_base key sk_live_abcdefghij0123456789abcd",
        "whsec_abcdefghij0123456789abcdefgh",
        "key=AIzaSyA0123456789abcdefghijklmnopqrstuv",
        "oauth client GOCSPX-abcdefghij0123456789abcd",
        "gcloud token ya29.abcdefghij0123456789abcd",
        "x-api-key sk-ant-api03-abcdefghij0123456789abcdefghij01",
        "OPENAI key sk-proj-abcdefghij0123456789abcdefghij0123 loaded",
        "legacy key sk-abcdefghij0123456789T3BlbkFJabcdefghij0123456789",
        "Authorization: Bearer abcdefghij0123456789",
        "Authorization: Basic YWRtaW46c3VwZXJzZWNyZXQxMjM=",
        "postgres://app:hunter22@db.internal:5432/app",
        "connecting with DB_PASSWORD=s3cr3t-P@ssw0rd! to primary",
        "GET /v2/items?api_key=0123456789abcdef&page=2",
        r#"{"refresh_token": "1//0gabcdefghij"}"#,
        "client_ſecret=abcdefghij0123456789",
        "X-Api-\u{212A}ey: abcdefghij0123456789",
    ];
    let redactor = Redactor::new(&RedactConfig::default()).unwrap();
    for sample in samples {
        assert!(
            redactor.prefilter.may_match(sample.as_bytes()),
            "{sample:?} is ruled out"
        );
        let (redacted, found) = redactor.redact_text(sample);
        assert!(found.total() >= 1, "nothing redacted in {sample:?}");
        assert!(redacted.contains(MARKER_PREFIX), "{redacted:?}");
    }
}

#[test]
fn plain_values_ruled_out() {
    let values = [
        "The customer asks where order 1042 is. It shipped on Monday and should arrive on Thursday.",
        "a typical attribute value",
        "trace 0af7651916cd43dd8448eb211c80319c span b7ad6b7169203331",
        "The API key rotation is scheduled for next week.",
        "Tokens used: 512 input, 128 output.",
        "Shipping to Asia takes two weeks.",
        "session_ttl: 3600",
        "cred-support-bot-2026-12",
        "Grüße aus Köln, ½ Preis",
        &"The customer asks where order 1042 is. It shipped on Monday. ".repeat(40),
        &"x".repeat(3 * LONG_WINDOW_LEN + 7),
    ];
    let redactor = Redactor::new(&RedactConfig::default()).unwrap();
    for value in values {
        assert!(
            !redactor.prefilter.may_match(value.as_bytes()),
            "{value:?} passes the prefilter"
        );
    }
}

/// Lists every trigger, the case-insensitive ones in alternating case, and
/// the characters in [`FOLDED_TO_ASCII`].
fn every_trigger() -> Vec<String> {
    let mut triggers = Vec::new();
    for pattern in BUILTIN {
        match pattern.triggers {
            Triggers::Exact(literals) => {
                triggers.extend(literals.iter().map(|literal| literal.to_string()))
            }
            Triggers::IgnoreCase(literals) => {
                for literal in literals {
                    let alternating = literal
                        .chars()
                        .enumerate()
                        .map(|(index, letter)| match index % 2 {
                            0 => letter.to_ascii_uppercase(),
                            _ => letter,
                        })
                        .collect();
                    triggers.push(alternating);
                }
            }
        }
    }
    triggers.extend(FOLDED_TO_ASCII.iter().map(|text| text.to_string()));
    triggers
}

#[test]
fn triggers_found_across_windows() {
    let prefilter = Prefilter::new(BUILTIN);
    let mut starts: Vec<usize> = (0..70).collect();
    for window in 1..=2 {
        let boundary = window * LONG_WINDOW_LEN;
        starts.extend(boundary - MAX_TRIGGER_LEN..boundary + MAX_TRIGGER_LEN);
    }
    for trigger in every_trigger() {
        for &start in &starts {
            for tail in [0, 1, 40, 3 * LONG_WINDOW_LEN] {
                let value = format!("{}{trigger}{}", "x".repeat(start), "x".repeat(tail));
                assert!(
                    prefilter.may_match(value.as_bytes()),
                    "{trigger:?} at byte {start} of {} not found",
                    value.len()
                );
            }
        }
    }
}

#[test]
fn case_folds_to_ascii_listed() {
    let hir = regex_syntax::parse("(?i)[a-z]").unwrap();
    let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
        panic!("(?i)[a-z] is not a Unicode class: {hir:?}");
    };
    let mut folded: Vec<String> = class
        .iter()
        .flat_map(|range| range.start()..=range.end())
        .filter(|letter| !letter.is_ascii())
        .map(String::from)
        .collect();
    folded.sort();
    let mut listed: Vec<String> = FOLDED_TO_ASCII
        .iter()
        .map(|text| text.to_string())
        .collect();
    listed.sort();
    assert_eq!(folded, listed);
}

#[test]
fn case_insensitive_patterns_marked() {
    for pattern in BUILTIN {
        let ignores_case = matches!(pattern.triggers, Triggers::IgnoreCase(_));
        assert_eq!(
            pattern.regex.starts_with("(?i)"),
            ignores_case,
            "pattern {} ({})",
            pattern.kind,
            pattern.regex
        );
    }
}

/// Generates pieces of attribute values: matches of the built-in patterns,
/// their triggers, and filler text to go around them.
fn fragment() -> impl Strategy<Value = String> {
    let matches: Vec<BoxedStrategy<String>> = BUILTIN
        .iter()
        .map(|pattern| matching_text(pattern.regex))
        .collect();
    let keywords: Vec<&str> = BUILTIN
        .iter()
        .flat_map(|pattern| match pattern.triggers {
            Triggers::Exact(literals) | Triggers::IgnoreCase(literals) => literals.iter(),
        })
        .copied()
        .collect();
    prop_oneof![
        3 => proptest::strategy::Union::new(matches),
        2 => proptest::sample::select(keywords).prop_map(str::to_owned),
        2 => "[ =:\"'@/&;,\\[\\]<>\n\t-]{1,3}",
        3 => "[A-Za-z0-9_.+/=-]{0,24}",
        1 => "\\PC{0,8}",
        1 => Just("acme-12345678 pin=4321".to_owned()),
    ]
}

fn custom_config() -> RedactConfig {
    RedactConfig {
        patterns: vec![
            CustomPattern {
                name: "acme_key".to_owned(),
                regex: r"acme-[0-9]{8}".to_owned(),
            },
            CustomPattern {
                name: "pin".to_owned(),
                regex: r"(?i)\bpin=(?P<secret>[0-9]{4,})".to_owned(),
            },
        ],
        ..RedactConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn prefilter_keeps_redaction_same(
        fragments in prop::collection::vec(fragment(), 1..8),
        custom in any::<bool>(),
    ) {
        let subject = if custom { &*CUSTOM_SUBJECT } else { &*DEFAULT_SUBJECT };
        let text = fragments.concat();

        let (redacted, found) = subject.redactor.redact_text(&text);
        let (expected, expected_found) = subject.redact_without_prefilter(&text);

        prop_assert_eq!(redacted, expected, "text {:?}", text);
        prop_assert_eq!(found, expected_found, "text {:?}", text);
    }
}
