//! ringwait: thread-per-core, io_uring async I/O operators with Flink Async I/O semantics.
//!
//! * [`operator`] — the async wait operator, a pure state machine (no I/O, no clock);
//! * [`function`] — what users implement: [`AsyncFunction`] and its [`ResultFuture`];
//! * [`config`] — operator configuration, validated when the pipeline is built;
//! * [`metrics`] — counters, gauges and latency histograms.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod config;
pub mod connect;
pub mod dataset;
pub mod element;
pub mod enrich;
mod error;
mod fifo;
pub mod function;
mod hash;
pub mod lookup;
pub mod metrics;
pub mod metrics_http;
mod net;
pub mod operator;
pub mod queue;
pub mod report;
pub mod resp;
pub mod runtime;
pub mod server;
pub mod sink;
pub mod snapshot;
pub mod source;
mod sync;
pub mod time;

pub use config::{ConfigError, ErrorPolicy, OperatorConfig, OrderMode, RetryStrategy};
pub use element::{Emitted, RequestId, StreamElement};
pub use function::{
    AsyncError, AsyncFunction, Completion, Outputs, PanicError, ResultFuture, TimeoutOutcome,
};
pub use operator::{AsyncWaitOperator, OperatorError, ProcessError, RecordError};
pub use runtime::{Pipeline, PipelineError, RunReport};
