//! The io_uring Redis client (lookups on glommio's `TcpStream`).
//!
//! # Design
//!
//! A [`Connection`] lives on one core (one glommio executor) and is driven by one task.
//! Everything it touches is core-local: no locks, no atomics, no cross-thread wake-ups.
//!
//! * **Pipelining and batching.** Submitting a request (`get`, `mget`, `hget`, `hgetall`,
//!   `command`) encodes it at once into the connection's output buffer and pushes its handler
//!   onto a FIFO, then wakes the connection's writer. The writer runs when the submitting
//!   task yields; by then every request made in the same executor tick sits in the buffer,
//!   and all of them leave in one `write`. While a write is in progress, new requests
//!   accumulate for the next one (double buffering: the writer swaps buffers, so submitting
//!   never waits for the socket).
//! * **FIFO matching.** Redis answers the commands of a connection in order, so the reader
//!   parses each reply (zero-copy, [`crate::resp`]) and hands it to the handler at the front
//!   of the FIFO. The order of the FIFO is the order of the bytes written: every path that
//!   encodes a command pushes its entry at the same moment.
//! * **Callback handlers, no allocation per request.** A request's continuation is a value
//!   of the connection's handler type `H:` [`ReplyHandler`], stored inline in the FIFO (a
//!   preallocated ring), not a boxed future or a channel. The handler receives a
//!   [`ReplyView`] borrowed from the read buffer, so a reply is not copied unless the handler
//!   copies it. In steady state a request costs a memcpy into the output buffer and a FIFO
//!   slot — no allocation. The operator's adapter implements `ReplyHandler` by completing
//!   its result handle; closures are handlers too.
//! * **MGET batching** (optional, [`ConnectionConfig::mget_batching`]): `GET`s submitted in
//!   the same tick become one `MGET`; each handler gets its element.
//! * **Coalescing** (optional, [`ConnectionConfig::coalescing`]): a `GET` of a key whose `GET`
//!   is still in flight does not go out again: its handler joins a follower list of the
//!   first, and the same borrowed view is delivered to each.
//! * **Failures.** A broken connection (refused, reset, closed, malformed reply, no response)
//!   fails every pending handler with a typed [`LookupError`] naming the address, then the
//!   connection reconnects with exponential backoff; meanwhile submissions are rejected with
//!   the last error ([`Rejected`] hands the handler back). An error reply (`-ERR`) fails only
//!   its request. Per-request deadlines belong to the caller (the operator's timeout).
//! * **Lookup cache** ([`LookupCache`]): per core, bounded (CLOCK eviction), TTL, optional
//!   caching of misses, time passed in by the caller; [`get_cached`] ties it to a connection.
//! * **Redis Cluster** ([`ClusterClient`]): slot map from `CLUSTER SLOTS`, CRC16 slots with
//!   `{hash tags}`, a connection per node, `MOVED` (update and retry) and `ASK` (`ASKING`
//!   then retry) followed transparently.
//! * **Async API** ([`Client`]): `async fn get(&self, key) -> Result<Option<Vec<u8>>, _>` and
//!   friends, for tests and casual use (allocates per request).
//!
//! # Using it from an operator
//!
//! Implement [`ReplyHandler`] for a small `Copy`-sized value that names the record's result
//! slot; submit one request per record; treat a [`Rejected`] (connection down, too many
//! pending) like an error reply, e.g. with [`Rejected::fail`]. Deadlines and retries stay
//! with the caller: a late reply still reaches its handler exactly once.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use ringwait::lookup::{Connection, ConnectionConfig, LookupError, ReplyHandler, ReplyView};
//! use ringwait::dataset::{value_of};
//! use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};
//!
//! /// Completes slot `seq` of a (here: toy) completion table.
//! struct Complete { seq: usize, table: Rc<RefCell<Vec<Option<Result<Option<Vec<u8>>, LookupError>>>>> }
//!
//! impl ReplyHandler for Complete {
//!     fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
//!         let outcome = reply.map(|v| v.value().map(<[u8]>::to_vec)); // copy out what is kept
//!         self.table.borrow_mut()[self.seq] = Some(outcome);
//!     }
//! }
//!
//! let server = BuiltinServer::start(ServerConfig { keys: 100, ..ServerConfig::default() })?;
//! let addr = server.addr();
//! let ex = glommio::LocalExecutorBuilder::default().io_memory(DEFAULT_IO_MEMORY).make()?;
//! let table = ex.run(async move {
//!     let conn = Connection::connect(addr, ConnectionConfig::default()).await.unwrap();
//!     let table = Rc::new(RefCell::new(vec![None; 3]));
//!     for (seq, key) in [&b"k:1"[..], b"k:2", b"missing"].into_iter().enumerate() {
//!         let handler = Complete { seq, table: table.clone() };
//!         if let Err(rejected) = conn.get(key, handler) {
//!             rejected.fail(); // one error path for the operator
//!         }
//!     }
//!     while conn.pending() > 0 {
//!         glommio::executor().yield_task_queue_now().await;
//!     }
//!     let t = table.borrow().clone();
//!     t
//! });
//! assert_eq!(table[0], Some(Ok(Some(value_of(1).to_vec()))));
//! assert_eq!(table[2], Some(Ok(None)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod client;
mod cluster;
mod connection;
mod driver;
mod error;
mod pending;
mod probe;
mod reader;
mod reply;
mod round_trip;
mod shared;
mod tls;
mod url;

pub use cache::{
    get_cached, CacheConfig, CacheFill, CacheLookup, CacheStats, CacheTicket, CachedValue,
    LookupCache,
};
pub use client::{Client, Oneshot};
pub use cluster::{key_slot, ClusterClient, ClusterConfig, ClusterHandler, ClusterStats, SLOTS};
pub(crate) use connection::{group_round_trip_histogram, group_round_trips, group_stats};
pub use connection::{round_robin, Connection};
pub use error::LookupError;
pub use probe::{probe, ProbeError};
pub use reply::{Rejected, ReplyHandler, ReplyView};
pub use shared::{ConnectionConfig, ConnectionState, ConnectionStats};
pub use tls::{TlsSettings, TlsSetupError};
pub(crate) use url::{percent_decode, query_param};
pub use url::{Auth, RedisUrl, Scheme, UrlError};
