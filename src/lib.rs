//! ringwait: thread-per-core, io_uring async I/O operators with Flink Async I/O semantics.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod lookup;
pub mod resp;
pub mod server;
