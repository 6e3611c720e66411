//! The secret scanner on arbitrary text. Besides not panicking, redacting
//! the output again finds nothing new: every match was replaced by a marker
//! that no pattern matches.

#![no_main]

use std::sync::LazyLock;

use agent_ledger::redact::Redactor;
use libfuzzer_sys::fuzz_target;

/// Compiled once: building the regex set per input would dominate the run.
static REDACTOR: LazyLock<Redactor> =
    LazyLock::new(|| Redactor::new(&Default::default()).expect("the built-in patterns compile"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (once, _) = REDACTOR.redact_text(text);
    let (twice, _) = REDACTOR.redact_text(&once);
    assert_eq!(once, twice, "a redacted value is stable under a second pass");
});
