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

use crate::assembler::{Sealed, Storage};
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
    let mut span_rows = rows::span_rows(sealed);
    let head = chain_rows(&mut span_rows, &start.head);
    let violations: usize = span_rows.iter().map(|row| row.violations.len()).sum();
    sealed.chain = Some(Chain {
        header_hash,
        head,
        row_count: start.row_count + span_rows.len() as u32,
        violation_count: start.violation_count + violations as u32,
    });
    sealed.span_rows = crate::clickhouse::encode::encode_span_rows(&span_rows);
}

/// Sets `PrevHash` and `RowHash` of `rows` in order, starting from
/// `prev_hash`; returns the last row's hash (`prev_hash` when there are no
/// rows).
pub fn chain_rows(rows: &mut [rows::SpanRow], prev_hash: &str) -> String {
    let mut prev = prev_hash.to_owned();
    let mut buffer = Vec::with_capacity(4096);
    for row in rows {
        buffer = encoding::encode_span_row_into(row, buffer);
        let hash = encoding::row_hash(&prev, &buffer);
        row.prev_hash = std::mem::replace(&mut prev, hash.clone());
        row.row_hash = hash;
    }
    prev
}
