//! The lookup function of `enrich`: one Redis `GET` per record over the core's connection.

use std::sync::Arc;

use super::record::Line;
use crate::function::{AsyncError, AsyncFunction, ResultFuture};
use crate::lookup::{Connection, LookupError, ReplyHandler, ReplyView};

/// What a lookup yields: the line and the value found (`None` on a miss).
pub type Enriched = (Arc<Line>, Option<Vec<u8>>);

/// Completes a record's result handle with the reply of its `GET`.
pub struct CompleteRecord {
    result: ResultFuture<Enriched>,
    line: Arc<Line>,
}

impl ReplyHandler for CompleteRecord {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let _ = match reply {
            Ok(view) => self
                .result
                .complete_one((self.line, view.value().map(<[u8]>::to_vec))),
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
    type In = Arc<Line>;
    type Out = Enriched;

    fn invoke(&self, line: &Arc<Line>, result: ResultFuture<Enriched>) {
        let handler = CompleteRecord {
            result,
            line: line.clone(),
        };
        if let Err(rejected) = self.conn.get(&line.key, handler) {
            rejected.fail();
        }
    }

    fn publish(&self, sample: &mut crate::metrics::live::PartitionSample) {
        sample.lookup_round_trip = self.conn.round_trips();
    }
}
