//! The lookup function of `enrich`: one request per record (`GET`, `HGET` or `HGETALL`),
//! either over the core's Redis connections (with the client's pipelining, `MGET` batching,
//! coalescing and a per-core cache, as `--batch`, `--coalesce` and `--cache-size` choose) or,
//! for the built-in store, answered in the partition's own executor.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::record::Line;
use super::value::{Command, NotJson, ValueSpec};
use crate::function::{AsyncError, AsyncFunction, ResultFuture};
use crate::lookup::{
    CacheConfig, CacheLookup, CacheTicket, ClusterClient, Connection, ConnectionConfig,
    ConnectionStats, LookupCache, LookupError, ReplyHandler, ReplyView,
};
use crate::server::GeneratedData;

/// A looked-up value: held inline up to 64 bytes (the built-in store's values), so that a
/// lookup allocates nothing per record in the usual case.
pub type Value = smallvec::SmallVec<[u8; 64]>;

/// What a lookup yields: the line and the value found (`None` on a miss).
pub type Enriched = (Line, Option<Value>);

/// `--batch`: how `GET`s are grouped into `MGET`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// One `GET` per record (still pipelined: the requests of one executor tick leave in
    /// one write).
    Off,
    /// The `GET`s of one executor tick become one `MGET` of up to 128 keys: batches grow
    /// with the load and cost nothing when it is light.
    Auto,
    /// The same, with up to this many keys per `MGET`.
    Max(usize),
}

impl std::str::FromStr for Batch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Batch::Off),
            "auto" => Ok(Batch::Auto),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("{s:?}: expected off, auto or a batch size ≥ 1")),
                Ok(1) => Ok(Batch::Off),
                Ok(n) => Ok(Batch::Max(n)),
            },
        }
    }
}

/// Keys per `MGET` with `--batch auto`.
const AUTO_BATCH: usize = 128;

/// How each partition uses the lookup client (the `--connections`, `--batch`,
/// `--batch-wait-us`, `--coalesce` and `--cache-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Connections per partition; records go round-robin over them.
    pub connections: usize,
    /// `GET` batching.
    pub batch: Batch,
    /// How long an idle connection holds its first request so that more join its write.
    pub batch_wait: Duration,
    /// A `GET` of a key already in flight on the connection shares its reply.
    pub coalesce: bool,
    /// The per-partition cache (`capacity` 0: no cache).
    pub cache: CacheConfig,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connections: 1,
            batch: Batch::Auto,
            batch_wait: Duration::ZERO,
            coalesce: true,
            cache: CacheConfig {
                capacity: 0,
                ..CacheConfig::default()
            },
        }
    }
}

impl ClientOptions {
    /// `base` with these options' batching and coalescing.
    pub fn connection_config(&self, base: ConnectionConfig) -> ConnectionConfig {
        let (mget_batching, max_batch) = match self.batch {
            Batch::Off => (false, base.max_batch),
            Batch::Auto => (true, AUTO_BATCH),
            Batch::Max(n) => (true, n),
        };
        ConnectionConfig {
            mget_batching,
            max_batch,
            batch_wait: self.batch_wait,
            coalescing: self.coalesce,
            ..base
        }
    }
}

/// What the partitions' lookup clients did, added up as each partition ends.
#[derive(Debug)]
pub struct LookupTotals {
    requests: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    coalesced: AtomicU64,
    mgets: AtomicU64,
    mget_keys: AtomicU64,
    round_trips: Mutex<Histogram<u64>>,
}

impl Default for LookupTotals {
    fn default() -> Self {
        LookupTotals {
            requests: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            mgets: AtomicU64::new(0),
            mget_keys: AtomicU64::new(0),
            round_trips: Mutex::new(crate::metrics::latency_histogram()),
        }
    }
}

/// A plain copy of [`LookupTotals`], for the summary.
#[derive(Debug, Clone, Default)]
pub struct LookupStats {
    /// Requests sent to the store (a batched `MGET` counts each key; coalesced `GET`s are
    /// not counted here).
    pub requests: u64,
    /// Lookups answered by the cache (values and remembered misses).
    pub cache_hits: u64,
    /// Lookups the cache could not answer.
    pub cache_misses: u64,
    /// `GET`s that shared the reply of an identical `GET` in flight.
    pub coalesced: u64,
    /// `MGET`s sent.
    pub mgets: u64,
    /// Keys those `MGET`s carried.
    pub mget_keys: u64,
    /// Round trips (ns), from the write of a request's batch to the read of its reply.
    pub round_trips: Option<Histogram<u64>>,
}

impl LookupTotals {
    /// What was added so far.
    pub fn stats(&self) -> LookupStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LookupStats {
            requests: get(&self.requests),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            coalesced: get(&self.coalesced),
            mgets: get(&self.mgets),
            mget_keys: get(&self.mget_keys),
            round_trips: Some(
                self.round_trips
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }
}

/// A record's pending lookup: completes its result handle with the reply, shaped by the
/// job's [`ValueSpec`], and fills the cache slot reserved for the key.
pub struct CompleteRecord {
    result: ResultFuture<Enriched>,
    line: Line,
    spec: Rc<ValueSpec>,
    fill: Option<Fill>,
}

/// A cache slot waiting for a reply.
struct Fill {
    cache: Rc<RefCell<LookupCache>>,
    ticket: CacheTicket,
    at: Instant,
}

impl ReplyHandler for CompleteRecord {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let value = reply
            .map_err(AsyncError::new)
            .and_then(|view| shape(&self.spec, self.line.key(), view));
        if let Some(f) = self.fill {
            let mut cache = f.cache.borrow_mut();
            match &value {
                Ok(v) => cache.fill(f.ticket, v.as_deref(), f.at),
                Err(_) => cache.cancel(f.ticket),
            }
        }
        let _ = match value {
            Ok(v) => self.result.complete_one((self.line, v)),
            Err(e) => self.result.fail(e),
        };
    }
}

/// A reply the command cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} of {key} answered {what}")]
pub struct UnexpectedAnswer {
    command: String,
    key: String,
    what: &'static str,
}

/// The field's value from a reply: `None` for a missing key.
fn shape(spec: &ValueSpec, key: &[u8], view: ReplyView<'_>) -> Result<Option<Value>, AsyncError> {
    let unexpected = |what| {
        AsyncError::new(UnexpectedAnswer {
            command: spec.command.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            what,
        })
    };
    let json = |e: NotJson| AsyncError::new(e);
    match (&spec.command, view) {
        (_, ReplyView::Nil) => Ok(None),
        (Command::Get | Command::Hget(_), ReplyView::Bulk(v) | ReplyView::Simple(v)) => {
            spec.single(key, v).map(Some).map_err(json)
        }
        (Command::Hgetall, ReplyView::Array(a)) if a.is_empty() => Ok(None),
        (Command::Hgetall, ReplyView::Array(a)) => {
            let items: Vec<&[u8]> = a.iter().filter_map(|f| f.as_bytes()).collect();
            if items.len() != a.len() || items.len() % 2 != 0 {
                return Err(unexpected("an array that is not field/value pairs"));
            }
            let pairs = items.chunks_exact(2).map(|p| (p[0], p[1]));
            spec.fields(key, pairs).map(Some).map_err(json)
        }
        (_, ReplyView::Integer(_)) => Err(unexpected("an integer")),
        (_, ReplyView::Array(_)) => Err(unexpected("an array")),
        (Command::Hgetall, _) => Err(unexpected("a string")),
    }
}

/// A stream entry whose payload is not a record (see [`Line::invalid`]): it goes to the
/// error policy as it came, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRecord(pub String);

/// Whether retrying cannot change the outcome: the store refused this request itself, in
/// its own reply (`WRONGTYPE`, `NOAUTH`, `WRONGPASS`, `NOPERM`, an unknown command or bad
/// arguments), the value is not the JSON `--value-format json` wants, or the reply has the
/// wrong shape for the command. Such a record goes straight to the error policy, with the
/// reply's text. Errors of the connection (lost, refused at setup, a reply too large for
/// the read buffer) reach every pending request and stay retryable.
pub fn is_permanent(error: &AsyncError) -> bool {
    if error.downcast_ref::<NotJson>().is_some()
        || error.downcast_ref::<InvalidRecord>().is_some()
        || error.downcast_ref::<UnexpectedAnswer>().is_some()
        || error.downcast_ref::<crate::server::WrongType>().is_some()
    {
        return true;
    }
    match error.downcast_ref::<LookupError>() {
        Some(LookupError::ServerError { message, .. }) => [
            "WRONGTYPE",
            "NOAUTH",
            "WRONGPASS",
            "NOPERM",
            "ERR unknown command",
            "ERR wrong number of arguments",
        ]
        .iter()
        .any(|p| message.starts_with(p)),
        _ => false,
    }
}

/// Where a partition's requests go.
enum Backend {
    /// One server, over one or more connections (round robin).
    Server {
        conns: Vec<Connection<CompleteRecord>>,
        next: Cell<usize>,
    },
    /// A Redis Cluster: each request to its key's master (no MGET batching nor
    /// coalescing: keys of one tick live in different slots).
    Cluster(ClusterClient<CompleteRecord>),
}

impl Backend {
    /// Sends the request; a rejected one (connection down, too many pending) fails its
    /// record at once.
    fn send(&self, command: &Command, key: &[u8], handler: CompleteRecord) {
        let sent = match self {
            Backend::Server { conns, next } => {
                let conn = crate::lookup::round_robin(conns, next);
                match command {
                    Command::Get => conn.get(key, handler),
                    Command::Hget(field) => conn.hget(key, field.as_bytes(), handler),
                    Command::Hgetall => conn.hgetall(key, handler),
                }
            }
            Backend::Cluster(c) => match command {
                Command::Get => c.get(key, handler),
                Command::Hget(field) => c.hget(key, field.as_bytes(), handler),
                Command::Hgetall => c.hgetall(key, handler),
            },
        };
        if let Err(rejected) = sent {
            rejected.fail();
        }
    }

    /// Counters, added over the connections.
    fn stats(&self) -> ConnectionStats {
        match self {
            Backend::Server { conns, .. } => crate::lookup::group_stats(conns),
            Backend::Cluster(c) => c.connection_stats(),
        }
    }

    fn round_trips(&self) -> crate::metrics::live::LatencyBuckets {
        match self {
            Backend::Server { conns, .. } => crate::lookup::group_round_trips(conns),
            Backend::Cluster(c) => c.round_trips(),
        }
    }

    fn round_trip_histogram(&self) -> Histogram<u64> {
        match self {
            Backend::Server { conns, .. } => crate::lookup::group_round_trip_histogram(conns),
            Backend::Cluster(c) => c.round_trip_histogram(),
        }
    }
}

/// Lookups over one partition's Redis connections (or a cluster client), pipelined, with
/// the client features [`ClientOptions`] turns on.
pub struct RedisLookup {
    backend: Backend,
    cache: Option<Rc<RefCell<LookupCache>>>,
    spec: Rc<ValueSpec>,
    totals: Option<Arc<LookupTotals>>,
}

impl RedisLookup {
    /// Looks records up on `conns` (round robin), through a cache of `cache` (capacity 0:
    /// none), shaping values as `spec` says; adds its figures to `totals` when dropped.
    pub fn new(
        conns: Vec<Connection<CompleteRecord>>,
        cache: CacheConfig,
        spec: ValueSpec,
        totals: Option<Arc<LookupTotals>>,
    ) -> Self {
        assert!(!conns.is_empty(), "at least one connection");
        Self::with_backend(
            Backend::Server {
                conns,
                next: Cell::new(0),
            },
            cache,
            spec,
            totals,
        )
    }

    /// The same over a Redis Cluster.
    pub fn cluster(
        client: ClusterClient<CompleteRecord>,
        cache: CacheConfig,
        spec: ValueSpec,
        totals: Option<Arc<LookupTotals>>,
    ) -> Self {
        Self::with_backend(Backend::Cluster(client), cache, spec, totals)
    }

    fn with_backend(
        backend: Backend,
        cache: CacheConfig,
        spec: ValueSpec,
        totals: Option<Arc<LookupTotals>>,
    ) -> Self {
        RedisLookup {
            backend,
            cache: (cache.capacity > 0).then(|| Rc::new(RefCell::new(LookupCache::new(cache)))),
            spec: Rc::new(spec),
            totals,
        }
    }

    /// Answers from the cache when it can; otherwise reserves the key's slot.
    fn answer_from_cache(
        &self,
        line: &Line,
        result: &ResultFuture<Enriched>,
    ) -> Result<(), Option<Fill>> {
        let Some(cache) = &self.cache else {
            return Err(None);
        };
        let at = Instant::now();
        let found = cache.borrow_mut().get(line.key(), at);
        match found {
            CacheLookup::Hit(v) => {
                let _ = result.complete_one((line.clone(), Some(Value::from_slice(&v))));
                Ok(())
            }
            CacheLookup::HitMiss => {
                let _ = result.complete_one((line.clone(), None));
                Ok(())
            }
            CacheLookup::Miss => {
                let ticket = cache.borrow_mut().reserve(line.key(), at);
                Err(ticket.map(|ticket| Fill {
                    cache: cache.clone(),
                    ticket,
                    at,
                }))
            }
        }
    }
}

impl AsyncFunction for RedisLookup {
    type In = Line;
    type Out = Enriched;

    fn invoke(&self, line: &Line, result: ResultFuture<Enriched>) {
        let fill = match self.answer_from_cache(line, &result) {
            Ok(()) => return,
            Err(fill) => fill,
        };
        let handler = CompleteRecord {
            result,
            line: line.clone(),
            spec: self.spec.clone(),
            fill,
        };
        self.backend.send(&self.spec.command, line.key(), handler);
    }

    fn retry_on_error(&self, error: &AsyncError) -> bool {
        !is_permanent(error)
    }

    fn publish(&self, sample: &mut crate::metrics::live::PartitionSample) {
        sample.lookup_round_trip = self.backend.round_trips();
        let s = self.backend.stats();
        sample.lookup_coalesced = s.coalesced;
        sample.lookup_mgets = s.mgets;
        sample.lookup_mget_keys = s.mget_keys;
        if let Some(cache) = &self.cache {
            let s = cache.borrow().stats();
            sample.cache_hits = s.hits + s.miss_hits;
            sample.cache_misses = s.misses;
        }
    }
}

impl Drop for RedisLookup {
    fn drop(&mut self) {
        let Some(totals) = &self.totals else {
            return;
        };
        let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
        let s = self.backend.stats();
        add(&totals.requests, s.requests - s.coalesced);
        add(&totals.coalesced, s.coalesced);
        add(&totals.mgets, s.mgets);
        add(&totals.mget_keys, s.mget_keys);
        if let Some(cache) = &self.cache {
            let s = cache.borrow().stats();
            add(&totals.cache_hits, s.hits + s.miss_hits);
            add(&totals.cache_misses, s.misses);
        }
        let round_trips = self.backend.round_trip_histogram();
        let _ = totals
            .round_trips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(round_trips);
    }
}

/// The built-in store in-process: each partition answers from the generated data set in
/// its own executor, the same answers `ringwait serve` gives (`GET k:i`, `HGET`/`HGETALL
/// h:i` with the fields `id` and `v`, `WRONGTYPE` across the two), with no socket, no
/// thread and no core of its own. A record completes within its `invoke`.
pub struct EmbeddedLookup {
    data: GeneratedData,
    spec: ValueSpec,
}

impl EmbeddedLookup {
    /// Answers from `data`, shaping values as `spec` says.
    pub fn new(data: GeneratedData, spec: ValueSpec) -> Self {
        EmbeddedLookup { data, spec }
    }

    fn answer(&self, key: &[u8]) -> Result<Option<Value>, AsyncError> {
        let wrong = |e: crate::server::WrongType| AsyncError::new(e);
        let json = |e: NotJson| AsyncError::new(e);
        match &self.spec.command {
            Command::Get => match self.data.get(key).map_err(wrong)? {
                None => Ok(None),
                Some(v) if self.spec.is_json() => self.spec.single(key, &v).map(Some).map_err(json),
                Some(v) => Ok(Some(Value::from_buf(v))),
            },
            Command::Hget(field) => {
                let Some(i) = self.data.hash(key).map_err(wrong)? else {
                    return Ok(None);
                };
                match field.as_str() {
                    "id" => self.spec.single(key, i.to_string().as_bytes()),
                    "v" => self.spec.single(key, &crate::dataset::value_of(i)),
                    _ => return Ok(None),
                }
                .map(Some)
                .map_err(json)
            }
            Command::Hgetall => {
                let Some(i) = self.data.hash(key).map_err(wrong)? else {
                    return Ok(None);
                };
                let id = i.to_string();
                let v = crate::dataset::value_of(i);
                self.spec
                    .fields(key, [(&b"id"[..], id.as_bytes()), (b"v", &v[..])])
                    .map(Some)
                    .map_err(json)
            }
        }
    }
}

impl AsyncFunction for EmbeddedLookup {
    type In = Line;
    type Out = Enriched;

    #[inline]
    fn invoke(&self, line: &Line, result: ResultFuture<Enriched>) {
        let _ = match self.answer(line.key()) {
            Ok(found) => result.complete_one((line.clone(), found)),
            Err(e) => result.fail(e),
        };
    }

    fn retry_on_error(&self, error: &AsyncError) -> bool {
        !is_permanent(error)
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
        if let Some(reason) = line.invalid_reason() {
            let _ = result.fail(AsyncError::new(InvalidRecord(reason.to_string())));
            return;
        }
        match self {
            JobLookup::Redis(f) => f.invoke(line, result),
            JobLookup::Embedded(f) => f.invoke(line, result),
        }
    }

    fn retry_on_error(&self, error: &AsyncError) -> bool {
        !is_permanent(error)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_requests_own_refusal_is_permanent() {
        let addr: std::net::SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let reply = |m: &str| {
            AsyncError::new(LookupError::ServerError {
                addr,
                message: m.into(),
            })
        };
        assert!(is_permanent(&reply(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )));
        assert!(is_permanent(&reply(
            "NOPERM this user has no permissions to run the 'mget' command"
        )));
        assert!(is_permanent(&reply("ERR unknown command 'FOO'")));
        assert!(!is_permanent(&reply(
            "LOADING Redis is loading the dataset in memory"
        )));
        // The connection's errors reach every pending request: retried.
        let setup = AsyncError::new(LookupError::Handshake {
            addr,
            message: "WRONGPASS invalid username-password pair".into(),
        });
        assert!(!is_permanent(&setup));
        let too_big = AsyncError::new(LookupError::UnexpectedReply {
            addr,
            what: "a reply larger than the read buffer limit",
        });
        assert!(!is_permanent(&too_big));
        assert!(!is_permanent(&AsyncError::new(LookupError::Disconnected {
            addr
        })));
        let not_json = NotJson {
            key: "k".into(),
            what: "expected a value",
            at: 0,
        };
        assert!(is_permanent(&AsyncError::new(not_json)));
    }
}
