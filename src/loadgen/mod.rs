//! Load generator: sends agent-shaped OTLP traffic to a receiver and
//! measures how fast it is acknowledged.
//!
//! [`shape`] builds the spans of one workflow the way an instrumented agent
//! exports them. [`template`] encodes whole export requests once and
//! patches only their ids per request, so producing a request costs a copy
//! instead of a protobuf encode and the generator leaves the CPU to the
//! receiver. [`run`] sends the requests over several gRPC connections,
//! retries as OTLP exporters do, and returns a [`Report`] of acknowledged
//! spans and acknowledgement latencies. The `loadgen` example is its
//! command line, and the benchmarks share the span factory.
//!
//! Compiled only with the `loadgen` feature; the receiver never uses it.

pub mod send;
pub mod shape;
pub mod template;

pub use send::{Limit, Options, Report, RunError, run};
pub use shape::Shape;
pub use template::Templates;
