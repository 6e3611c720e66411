//! A literal search that rules out values before any built-in regex runs.
//!
//! Every match of a built-in pattern contains one of that pattern's
//! triggers (see [`BuiltinPattern::triggers`]), so a value that contains no
//! trigger of any built-in pattern cannot match one. The searches here are
//! SIMD literal searches (Teddy from `aho-corasick` and `memchr::memmem`),
//! which cost a fraction of a pass of the regex set per byte.

use aho_corasick::AhoCorasick;
use aho_corasick::packed;
use memchr::memmem;

use super::patterns::{BuiltinPattern, Triggers};

/// The UTF-8 text of the non-ASCII characters that `(?i)` treats as equal
/// to an ASCII letter: `ſ` (U+017F) to `s` and the Kelvin sign (U+212A) to
/// `k`. A test in `properties.rs` checks this list against the case folding
/// of the `regex-syntax` version in use.
pub(super) const FOLDED_TO_ASCII: [&str; 2] = ["\u{17F}", "\u{212A}"];

/// Maximum length of a trigger in bytes. Consecutive windows of a value
/// overlap by one byte less, so a trigger never falls between two.
pub(super) const MAX_TRIGGER_LEN: usize = 32;

/// Window length for values up to this long, which are lower-cased in one
/// go into a small buffer, so they do not pay for zeroing the large one.
const SHORT_WINDOW_LEN: usize = 64;

/// Window length for longer values, searched one window at a time.
pub(super) const LONG_WINDOW_LEN: usize = 1024;

/// The triggers of a set of built-in patterns, ready to search for.
pub(super) struct Prefilter {
    /// The triggers compared byte for byte, searched in the value itself.
    exact: Literals,
    /// The case-insensitive triggers in ASCII lower case, searched in a
    /// lower-cased copy of the value, or `None` without such triggers.
    ignore_case: Option<Literals>,
    /// The characters in [`FOLDED_TO_ASCII`], or none without
    /// case-insensitive triggers. They are searched for on their own
    /// because the 2-byte `ſ` among the other literals would shorten
    /// Teddy's fingerprints to 2 bytes and slow the whole search down.
    folded_to_ascii: Vec<memmem::Finder<'static>>,
}

impl Prefilter {
    /// Builds the searches for the triggers of `patterns`.
    ///
    /// Panics if a trigger is empty or longer than [`MAX_TRIGGER_LEN`].
    pub(super) fn new(patterns: &[BuiltinPattern]) -> Self {
        let mut exact: Vec<Vec<u8>> = Vec::new();
        let mut ignore_case: Vec<Vec<u8>> = Vec::new();
        for pattern in patterns {
            let literals = match pattern.triggers {
                Triggers::Exact(literals) | Triggers::IgnoreCase(literals) => literals,
            };
            for literal in literals {
                assert!(
                    !literal.is_empty() && literal.len() <= MAX_TRIGGER_LEN,
                    "trigger {literal:?} of pattern {} is empty or longer than {MAX_TRIGGER_LEN} bytes",
                    pattern.kind
                );
                match pattern.triggers {
                    Triggers::Exact(_) => exact.push(literal.as_bytes().to_vec()),
                    Triggers::IgnoreCase(_) => {
                        ignore_case.push(literal.as_bytes().to_ascii_lowercase())
                    }
                }
            }
        }
        let folded_to_ascii = if ignore_case.is_empty() {
            Vec::new()
        } else {
            FOLDED_TO_ASCII
                .iter()
                .map(|text| memmem::Finder::new(text.as_bytes()).into_owned())
                .collect()
        };
        let ignore_case = (!ignore_case.is_empty()).then(|| Literals::new(&ignore_case));
        Prefilter {
            exact: Literals::new(&exact),
            ignore_case,
            folded_to_ascii,
        }
    }

    /// Returns whether `haystack` contains a trigger. False means that none
    /// of the patterns can match it.
    pub(super) fn may_match(&self, haystack: &[u8]) -> bool {
        if self.exact.is_match(haystack) {
            return true;
        }
        let Some(ignore_case) = &self.ignore_case else {
            return false;
        };
        // Both characters are non-ASCII, so a value of ASCII text skips
        // their searches.
        if !haystack.is_ascii()
            && self
                .folded_to_ascii
                .iter()
                .any(|finder| finder.find(haystack).is_some())
        {
            return true;
        }
        if haystack.len() <= SHORT_WINDOW_LEN {
            contains_ignoring_case::<SHORT_WINDOW_LEN>(ignore_case, haystack)
        } else {
            contains_ignoring_case::<{ LONG_WINDOW_LEN + MAX_TRIGGER_LEN - 1 }>(
                ignore_case,
                haystack,
            )
        }
    }
}

/// Searches for the lower-case `literals` in `haystack` lower-cased, one
/// window of `WINDOW` bytes at a time in a buffer on the stack. Windows
/// start `WINDOW - (MAX_TRIGGER_LEN - 1)` bytes apart, so every literal
/// that starts in the first part of a window ends inside it.
fn contains_ignoring_case<const WINDOW: usize>(literals: &Literals, haystack: &[u8]) -> bool {
    let step = WINDOW - (MAX_TRIGGER_LEN - 1);
    let mut lowered = [0u8; WINDOW];
    let mut start = 0;
    loop {
        let end = haystack.len().min(start + WINDOW);
        let window = &mut lowered[..end - start];
        for (lower, byte) in window.iter_mut().zip(&haystack[start..end]) {
            *lower = byte.to_ascii_lowercase();
        }
        if literals.is_match(window) {
            return true;
        }
        if end == haystack.len() {
            return false;
        }
        start += step;
    }
}

/// A search for any of a set of literals: Teddy where `aho-corasick` can
/// build it for this CPU and literal set (it needs SSSE3 or NEON, and 1 to
/// 64 literals), otherwise an Aho-Corasick automaton.
enum Literals {
    Teddy(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Literals {
    fn new(literals: &[Vec<u8>]) -> Self {
        match packed::Searcher::new(literals) {
            Some(searcher) => Literals::Teddy(searcher),
            None => Literals::Automaton(
                AhoCorasick::new(literals).expect("the triggers build an Aho-Corasick automaton"),
            ),
        }
    }

    fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Literals::Teddy(searcher) => searcher.find(haystack).is_some(),
            Literals::Automaton(automaton) => automaton.is_match(haystack),
        }
    }
}
