//! Where records come from and go: the source and sink kinds.
//!
//! - **Files**: [`crate::source::IterSource`], [`crate::source::GeneratorSource`] and
//!   [`crate::sink::FileSink`] for a pipeline of your own; `ringwait enrich` reads and writes
//!   JSON Lines files, standard input and output with its own reader and writer threads
//!   ([`crate::enrich`]), byte for byte.
//! - **Redis Streams** ([`redis_stream`]): [`redis_stream::RedisStreamSource`] reads a
//!   partition's entries through a consumer group, and [`redis_stream::RedisStreamSink`]
//!   commits each entry's output together with the entry's acknowledgement, exactly once.
//!   `ringwait enrich --input redis-stream://… --output redis-stream://…` uses the same
//!   address syntax, connection and commit script.
//!
//! The kinds sit below the jobs: they know records as bytes and entry ids, not the jobs'
//! record types.

pub mod kafka;
pub mod redis_stream;
