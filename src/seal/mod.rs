//! Sealer: makes the stored trail tamper-evident.
//!
//! Takes each linked and checked workflow segment (the assembler's
//! [`Sealed`]) before it goes to the sink, builds its `agent_spans` rows and
//! chains them: in step order, each row stores `PrevHash` and
//! `RowHash = SHA-256(PrevHash ‖ encoding)` over the canonical encoding of
//! [`encoding`]. The first row's `PrevHash` is the workflow's `HeaderHash`,
//! the hash of its ids, origin, agent and credential; a late segment
//! continues from the previous segment's head, so earlier segments stay
//! intact. Each verdict row stores `HeaderHash`, `ChainHead` and `RowCount`.
//!
//! The sink then appends one [`ledger`] entry per sealed segment and per
//! written batch of the other tables, chained per instance, and [`ledger`]
//! writes Ed25519-signed checkpoints over the entries ([`checkpoint`]).
//! [`verify`] recomputes all of it from ClickHouse. Rows of workflows that
//! are quarantined are not chained; their batches are covered by ledger
//! entries.

pub mod checkpoint;
pub mod encoding;
pub mod keys;
pub mod ledger;
pub mod verify;

use std::borrow::Cow;

use crate::assembler::{Sealed, Storage};
use crate::clickhouse::columns::SpanColumns;
use crate::clickhouse::rows;

/// The state of a workflow's hash chain after a segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// SHA-256 of the workflow header, lower-case hex.
    pub header_hash: String,
    /// `RowHash` of the last row so far; the header hash before any row.
    pub head: String,
    /// Rows chained so far, over every segment.
    pub row_count: u32,
    /// Violations on those rows.
    pub violation_count: u32,
}

/// Builds the span rows of `sealed`, chains them onto `prior` (the chain
/// after the workflow's previous segment, for a late segment) and encodes
/// them for the sink. Quarantined workflows get a header hash and an empty
/// chain.
pub fn seal(sealed: &mut Sealed, prior: Option<&Chain>) {
    let header_hash = rows::header_hash(sealed);
    if sealed.storage != Storage::Spans {
        sealed.chain = Some(Chain {
            header_hash,
            ..Chain::default()
        });
        return;
    }
    let start = prior.cloned().unwrap_or_else(|| Chain {
        head: header_hash.clone(),
        header_hash: header_hash.clone(),
        ..Chain::default()
    });
    let segment = rows::SegmentColumns::of(sealed);
    let span_rows = segment.rows(sealed);
    let violations: usize = span_rows.iter().map(|row| row.violations.len()).sum();
    let row_count = start.row_count + span_rows.len() as u32;
    let (encoded, head) =
        crate::clickhouse::encode::encode_chained_span_rows(&span_rows, &start.head);
    drop(span_rows);
    sealed.chain = Some(Chain {
        header_hash,
        head,
        row_count,
        violation_count: start.violation_count + violations as u32,
    });
    sealed.span_rows = encoded;
}

/// Sets `PrevHash` and `RowHash` of `rows` in order, starting from
/// `prev_hash`; returns the last row's hash (`prev_hash` when there are no
/// rows).
pub fn chain_rows(rows: &mut [rows::SpanRow], prev_hash: &str) -> String {
    let mut columns: Vec<_> = rows.iter().map(rows::SpanRow::columns).collect();
    let head = chain(&mut columns, prev_hash);
    let hashes: Vec<(String, String)> = columns
        .into_iter()
        .map(|row| (row.prev_hash.into_owned(), row.row_hash.into_owned()))
        .collect();
    for (row, (prev, hash)) in rows.iter_mut().zip(hashes) {
        row.prev_hash = prev;
        row.row_hash = hash;
    }
    head
}

/// Sets `PrevHash` and `RowHash` of the rows' columns like [`chain_rows`].
fn chain(rows: &mut [SpanColumns<'_>], prev_hash: &str) -> String {
    let mut chain = encoding::RowChain::after(prev_hash);
    let mut buffer = Vec::with_capacity(4096);
    for row in rows {
        buffer = encoding::encode_span_row_into(row, buffer);
        row.prev_hash = Cow::Owned(chain.prev_text().to_owned());
        chain.push(&buffer);
        row.row_hash = Cow::Owned(chain.prev_text().to_owned());
    }
    chain.prev_text().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clickhouse::encode::tests::row;

    /// Each chained row must hash to what the verifier computes from the
    /// row's stored `PrevHash` text, and name the previous row's hash.
    fn assert_chained(rows: &[rows::SpanRow], first_prev: &str, head: &str) {
        let mut prev = first_prev.to_owned();
        for row in rows {
            assert_eq!(row.prev_hash, prev);
            let encoding = encoding::encode_span_row(&row.columns());
            assert_eq!(row.row_hash, encoding::row_hash(&row.prev_hash, &encoding));
            prev = row.row_hash.clone();
        }
        assert_eq!(head, prev);
    }

    #[test]
    fn one_walk_matches_chaining_then_encoding() {
        use crate::clickhouse::encode::tests::full_row;
        use crate::clickhouse::encode::{encode_chained_span_rows, encode_stored_rows};
        let rows: Vec<rows::SpanRow> = (0..3)
            .map(|index| rows::SpanRow {
                step_index: index,
                prev_hash: "stale".into(),
                row_hash: "stale".into(),
                ..full_row()
            })
            .collect();
        for first_prev in ["ab".repeat(32), "not a hash".to_owned()] {
            let columns: Vec<_> = rows.iter().map(rows::SpanRow::columns).collect();
            let (encoded, head) = encode_chained_span_rows(&columns, &first_prev);
            let mut chained = rows.clone();
            let expected_head = chain_rows(&mut chained, &first_prev);
            let expected = encode_stored_rows(&chained);
            assert_eq!(head, expected_head);
            let bytes = |rows: &[crate::clickhouse::encode::EncodedSpan]| -> Vec<Vec<u8>> {
                rows.iter().map(|row| row.0.to_vec()).collect()
            };
            assert_eq!(bytes(&encoded), bytes(&expected));
        }
        let (encoded, head) = encode_chained_span_rows(&[], "head");
        assert!(encoded.is_empty());
        assert_eq!(head, "head");
    }

    #[test]
    fn chain_matches_row_hash_of_stored_text() {
        let mut rows: Vec<rows::SpanRow> = (0..3)
            .map(|index| rows::SpanRow {
                step_index: index,
                ..row()
            })
            .collect();
        for first_prev in ["ab".repeat(32), "not a hash".to_owned()] {
            let head = chain_rows(&mut rows, &first_prev);
            assert_chained(&rows, &first_prev, &head);
        }
    }
}
