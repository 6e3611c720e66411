//! agent-ledger: an OTLP receiver that turns AI-agent spans into a validated,
//! causally linked audit trail in ClickHouse.
//!
//! The pipeline, one module per stage: [`receiver`] (OTLP, per-span checks,
//! [`redact`]ion of secrets) → [`spool`] (durable log) → [`assembler`]
//! (workflows) → [`validate`] (policy, credential checks) → [`link`] (step
//! order and causes) → [`seal`] (hash chains, ledger, checkpoints) →
//! [`clickhouse`] (batched, deduplicated inserts). [`serve`] wires them
//! together. [`evidence`] runs the auditors' queries over the stored trail.

pub mod admin;
pub mod assembler;
pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod evidence;
pub mod link;
#[cfg(feature = "loadgen")]
pub mod loadgen;
pub mod metrics;
pub mod otlp;
pub mod preset;
pub mod quarantine;
pub mod receiver;
pub mod redact;
pub mod seal;
pub mod serve;
pub mod span;
pub mod spool;
#[cfg(test)]
pub(crate) mod testing;
pub mod validate;
pub mod workflow;

/// The current time in Unix nanoseconds.
pub fn now_unix_nano() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0)
}
