//! The lookup function of `enrich`: one `GET` per record, either over the core's Redis
//! connection or, for the built-in store, answered in the partition's own executor.

use super::record::Line;
use crate::function::{AsyncError, AsyncFunction, ResultFuture};
use crate::lookup::{Connection, LookupError, ReplyHandler, ReplyView};
use crate::server::GeneratedData;

/// A looked-up value: held inline up to 64 bytes (the built-in store's values), so that a
/// lookup allocates nothing per record in the usual case.
pub type Value = smallvec::SmallVec<[u8; 64]>;

/// What a lookup yields: the line and the value found (`None` on a miss).
pub type Enriched = (Line, Option<Value>);

/// Completes a record's result handle with the reply of its `GET`.
pub struct CompleteRecord {
    result: ResultFuture<Enriched>,
    line: Line,
}

impl ReplyHandler for CompleteRecord {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let _ = match reply {
            Ok(view) => self
                .result
                .complete_one((self.line, view.value().map(Value::from_slice))),
            Err(e) => self.result.fail(AsyncError::new(e)),
        };
    }
}

/// `GET <key>` for every record, pipelined on one connection per core.
pub struct RedisLookup {
    conn: Connection<CompleteRecord>,
}

impl RedisLookup {
    /// Looks records up on `conn`.
    pub fn new(conn: Connection<CompleteRecord>) -> Self {
        RedisLookup { conn }
    }
}

impl AsyncFunction for RedisLookup {
    type In = Line;
    type Out = Enriched;

    fn invoke(&self, line: &Line, result: ResultFuture<Enriched>) {
        let handler = CompleteRecord {
            result,
            line: line.clone(),
        };
        if let Err(rejected) = self.conn.get(line.key(), handler) {
            rejected.fail();
        }
    }

    fn publish(&self, sample: &mut crate::metrics::live::PartitionSample) {
        sample.lookup_round_trip = self.conn.round_trips();
    }
}

/// The built-in store in-process: each partition answers `GET` from the generated data set
/// in its own executor, the same answers `ringwait serve` gives, with no socket, no thread
/// and no core of its own. A record completes within its `invoke`.
pub struct EmbeddedLookup {
    data: GeneratedData,
}

impl EmbeddedLookup {
    /// Answers from `data`.
    pub fn new(data: GeneratedData) -> Self {
        EmbeddedLookup { data }
    }
}

impl AsyncFunction for EmbeddedLookup {
    type In = Line;
    type Out = Enriched;

    #[inline]
    fn invoke(&self, line: &Line, result: ResultFuture<Enriched>) {
        let _ = match self.data.get(line.key()) {
            Ok(found) => result.complete_one((line.clone(), found.map(Value::from_buf))),
            Err(wrong_type) => result.fail(AsyncError::new(wrong_type)),
        };
    }

    fn completes_inline(&self) -> bool {
        true
    }
}

/// The function a partition of `enrich` runs: over the network, or in-process.
pub enum JobLookup {
    /// A Redis server (or `ringwait serve`).
    Redis(RedisLookup),
    /// The built-in store, in the partition's executor.
    Embedded(EmbeddedLookup),
}

impl AsyncFunction for JobLookup {
    type In = Line;
    type Out = Enriched;

    #[inline]
    fn invoke(&self, line: &Line, result: ResultFuture<Enriched>) {
        if line.blank {
            let _ = result.complete_one((line.clone(), None)); // nothing to look up
            return;
        }
        match self {
            JobLookup::Redis(f) => f.invoke(line, result),
            JobLookup::Embedded(f) => f.invoke(line, result),
        }
    }

    fn publish(&self, sample: &mut crate::metrics::live::PartitionSample) {
        if let JobLookup::Redis(f) = self {
            f.publish(sample);
        }
    }

    fn completes_inline(&self) -> bool {
        match self {
            JobLookup::Redis(f) => f.completes_inline(),
            JobLookup::Embedded(f) => f.completes_inline(),
        }
    }
}
