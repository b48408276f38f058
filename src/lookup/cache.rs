//! A per-core lookup cache: bounded (CLOCK eviction), with TTL and optional caching of misses.
//!
//! Core-local by construction (`!Send`, no locks). Time is always passed in (`now`), so tests
//! drive it with made-up instants. Value buffers are reused when a slot is refilled, so a
//! warm cache does not allocate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Connection, LookupError, Rejected, ReplyHandler, ReplyView};

/// Configuration of a [`LookupCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries held; 0 disables the cache. Default 65,536.
    pub capacity: usize,
    /// How long a value stays valid. Default 60 s.
    pub ttl: Duration,
    /// How long a miss (nil) is remembered; `None` does not cache misses. Default `None`.
    pub miss_ttl: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 65_536,
            ttl: Duration::from_secs(60),
            miss_ttl: None,
        }
    }
}

/// A cached value, copied out of the cache: inline up to 64 bytes (no allocation), on the
/// heap beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedValue(InlineValue);

/// Value bytes, inline up to 64 (the slot holds them itself: a hit reads one slot, not a
/// slot, an `Rc` and a `Vec`, each a cache miss of its own).
type InlineValue = smallvec::SmallVec<[u8; 64]>;

impl Deref for CachedValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// The outcome of [`LookupCache::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// The value is cached.
    Hit(CachedValue),
    /// The key is cached as missing.
    HitMiss,
    /// Not cached (or expired): ask the store.
    Miss,
}

/// Counters of a [`LookupCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered by a value.
    pub hits: u64,
    /// Lookups answered by a cached miss.
    pub miss_hits: u64,
    /// Lookups not answered.
    pub misses: u64,
    /// Entries found expired.
    pub expirations: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// A reserved slot awaiting its value ([`LookupCache::reserve`] → [`LookupCache::fill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTicket {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Pending,
    Value,
    Missing,
}

#[derive(Debug)]
struct Slot {
    /// Inline up to 32 bytes: a lookup compares it without another cache miss.
    key: smallvec::SmallVec<[u8; 32]>,
    hash: u64,
    value: InlineValue,
    state: State,
    expires: Option<Instant>,
    generation: u32,
    referenced: bool,
}

/// A per-core lookup cache: bounded (CLOCK eviction), with TTL and optional caching of
/// misses. Core-local (`!Send`, no locks); time is passed in (`now`); value buffers are
/// reused when a slot is refilled, so a warm cache does not allocate.
///
/// ```
/// use ringwait::lookup::{CacheConfig, CacheLookup, LookupCache};
/// use std::time::{Duration, Instant};
///
/// let mut cache = LookupCache::new(CacheConfig {
///     capacity: 2,
///     ttl: Duration::from_secs(1),
///     miss_ttl: Some(Duration::from_millis(100)),
/// });
/// let t0 = Instant::now();
/// cache.insert(b"a", Some(b"1"), t0);
/// cache.insert(b"gone", None, t0);
/// assert!(matches!(cache.get(b"a", t0), CacheLookup::Hit(v) if &*v == b"1"));
/// assert_eq!(cache.get(b"gone", t0), CacheLookup::HitMiss);
/// assert_eq!(cache.get(b"gone", t0 + Duration::from_millis(100)), CacheLookup::Miss);
/// assert_eq!(cache.get(b"a", t0 + Duration::from_secs(1)), CacheLookup::Miss);
/// ```
#[derive(Debug)]
pub struct LookupCache {
    config: CacheConfig,
    slots: Vec<Slot>,
    /// FNV-1a hash of the key → slot (the hash is not hashed again).
    index: HashMap<u64, u32, crate::hash::Prehashed>,
    hand: usize,
    stats: CacheStats,
}

fn hash_key(key: &[u8]) -> u64 {
    crate::hash::fnv1a64(key.iter().copied())
}

impl LookupCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        let capacity = config.capacity.min(u32::MAX as usize - 1);
        LookupCache {
            config,
            slots: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, crate::hash::Prehashed),
            hand: 0,
            stats: CacheStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Entries currently held (values, misses and reservations).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let i = *self.index.get(&hash_key(key))? as usize;
        (self.slots[i].key[..] == *key).then_some(i)
    }

    /// Looks `key` up at time `now`.
    pub fn get(&mut self, key: &[u8], now: Instant) -> CacheLookup {
        let Some(i) = self.find(key) else {
            self.stats.misses += 1;
            return CacheLookup::Miss;
        };
        let slot = &mut self.slots[i];
        if matches!(slot.state, State::Value | State::Missing)
            && slot.expires.is_some_and(|e| e <= now)
        {
            self.stats.expirations += 1;
            self.stats.misses += 1;
            self.remove(i);
            return CacheLookup::Miss;
        }
        match slot.state {
            State::Value => {
                slot.referenced = true;
                self.stats.hits += 1;
                CacheLookup::Hit(CachedValue(slot.value.clone()))
            }
            State::Missing => {
                slot.referenced = true;
                self.stats.miss_hits += 1;
                CacheLookup::HitMiss
            }
            State::Pending | State::Empty => {
                self.stats.misses += 1;
                CacheLookup::Miss
            }
        }
    }

    /// Stores `value` (`None`: the key is missing) for `key` at time `now`.
    pub fn insert(&mut self, key: &[u8], value: Option<&[u8]>, now: Instant) {
        if let Some(ticket) = self.reserve(key, now) {
            self.fill(ticket, value, now);
        }
    }

    /// Reserves a slot for `key` whose value is being fetched; `None` if the cache is off.
    pub fn reserve(&mut self, key: &[u8], now: Instant) -> Option<CacheTicket> {
        if self.config.capacity == 0 {
            return None;
        }
        let i = match self.find(key) {
            Some(i) => i,
            None => {
                let i = self.victim(now);
                let hash = hash_key(key);
                let slot = &mut self.slots[i];
                slot.key.clear();
                slot.key.extend_from_slice(key);
                slot.hash = hash;
                self.index.insert(hash, i as u32);
                i
            }
        };
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        if slot.state == State::Empty {
            slot.state = State::Pending;
        }
        slot.referenced = true;
        Some(CacheTicket {
            slot: i as u32,
            generation: slot.generation,
        })
    }

    /// Completes a reservation; ignored if the slot was reused since.
    pub fn fill(&mut self, ticket: CacheTicket, value: Option<&[u8]>, now: Instant) {
        let i = ticket.slot as usize;
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.generation != ticket.generation || slot.state == State::Empty {
            return;
        }
        match (value, self.config.miss_ttl) {
            (Some(v), _) => {
                slot.value.clear();
                slot.value.extend_from_slice(v);
                slot.state = State::Value;
                slot.expires = now.checked_add(self.config.ttl);
            }
            (None, Some(ttl)) => {
                slot.state = State::Missing;
                slot.expires = now.checked_add(ttl);
            }
            (None, None) => self.remove(i),
        }
    }

    /// Abandons a reservation (the fetch failed); an older value stays.
    pub fn cancel(&mut self, ticket: CacheTicket) {
        let i = ticket.slot as usize;
        if self
            .slots
            .get(i)
            .is_some_and(|s| s.generation == ticket.generation && s.state == State::Pending)
        {
            self.remove(i);
        }
    }

    fn remove(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if self.index.get(&slot.hash) == Some(&(i as u32)) {
            self.index.remove(&slot.hash);
        }
        slot.state = State::Empty;
        slot.referenced = false;
    }

    /// Picks the slot for a new key: a fresh one while below capacity, else CLOCK.
    fn victim(&mut self, now: Instant) -> usize {
        if self.slots.len() < self.config.capacity {
            self.slots.push(Slot {
                key: smallvec::SmallVec::new(),
                hash: 0,
                value: InlineValue::new(),
                state: State::Empty,
                expires: None,
                generation: 0,
                referenced: false,
            });
            return self.slots.len() - 1;
        }
        let n = self.slots.len();
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let slot = &mut self.slots[i];
            let expired = slot.expires.is_some_and(|e| e <= now) && slot.state != State::Pending;
            if slot.state == State::Empty || expired {
                self.remove(i);
                return i;
            }
            if slot.referenced {
                slot.referenced = false;
            } else {
                self.stats.evictions += 1;
                self.remove(i);
                return i;
            }
        }
        let i = self.hand;
        self.stats.evictions += 1;
        self.remove(i);
        i
    }
}

/// The handler used with a cache: fills the cache from the reply, then calls `inner`.
pub struct CacheFill<H> {
    cache: Rc<RefCell<LookupCache>>,
    ticket: Option<CacheTicket>,
    now: Instant,
    inner: H,
}

impl<H> std::fmt::Debug for CacheFill<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFill")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl<H: ReplyHandler> ReplyHandler for CacheFill<H> {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        if let Some(ticket) = self.ticket {
            let mut cache = self.cache.borrow_mut();
            match &reply {
                Ok(ReplyView::Bulk(v)) => cache.fill(ticket, Some(v), self.now),
                Ok(ReplyView::Nil) => cache.fill(ticket, None, self.now),
                _ => cache.cancel(ticket),
            }
        }
        self.inner.on_reply(reply)
    }
}

/// `GET key` through `cache`: a hit calls `handler` right away (inside this call), a miss
/// sends `GET` on `conn` and caches the reply (the TTL counts from `now`).
///
/// The cache is not borrowed while `handler` runs, so handlers may look up again.
///
/// ```
/// use ringwait::lookup::{get_cached, CacheConfig, LookupCache, ReplyView, LookupError, Connection, ConnectionConfig, CacheFill};
/// use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};
/// use std::{cell::RefCell, rc::Rc, time::Instant};
///
/// type H = Box<dyn FnOnce(Result<ReplyView<'_>, LookupError>)>;
/// let server = BuiltinServer::start(ServerConfig { keys: 10, ..ServerConfig::default() })?;
/// let addr = server.addr();
/// let ex = glommio::LocalExecutorBuilder::default().io_memory(DEFAULT_IO_MEMORY).make()?;
/// let stats = ex.run(async move {
///     let conn: Connection<CacheFill<H>> = Connection::connect(addr, ConnectionConfig::default()).await.unwrap();
///     let cache = Rc::new(RefCell::new(LookupCache::new(CacheConfig::default())));
///     for _ in 0..2 {
///         get_cached(&conn, &cache, b"k:1", Instant::now(), Box::new(|r: Result<ReplyView<'_>, LookupError>| {
///             assert_eq!(r.unwrap().value().map(|v| v.len()), Some(64));
///         }) as H).unwrap();
///         while conn.pending() > 0 {
///             glommio::executor().yield_task_queue_now().await;
///         }
///     }
///     let stats = cache.borrow().stats();
///     stats
/// });
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn get_cached<H: ReplyHandler>(
    conn: &Connection<CacheFill<H>>,
    cache: &Rc<RefCell<LookupCache>>,
    key: &[u8],
    now: Instant,
    handler: H,
) -> Result<(), Rejected<H>> {
    let lookup = cache.borrow_mut().get(key, now);
    match lookup {
        CacheLookup::Hit(value) => {
            handler.on_reply(Ok(ReplyView::Bulk(&value)));
            Ok(())
        }
        CacheLookup::HitMiss => {
            handler.on_reply(Ok(ReplyView::Nil));
            Ok(())
        }
        CacheLookup::Miss => {
            let ticket = cache.borrow_mut().reserve(key, now);
            let fill = CacheFill {
                cache: cache.clone(),
                ticket,
                now,
                inner: handler,
            };
            conn.get(key, fill).map_err(|r| {
                if let Some(t) = ticket {
                    cache.borrow_mut().cancel(t);
                }
                Rejected {
                    error: r.error,
                    handler: r.handler.inner,
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, miss_ttl: Option<Duration>) -> LookupCache {
        LookupCache::new(CacheConfig {
            capacity,
            ttl: Duration::from_secs(10),
            miss_ttl,
        })
    }

    fn value(c: &mut LookupCache, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        match c.get(key, now) {
            CacheLookup::Hit(v) => Some(v.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn values_expire_after_their_ttl() {
        let t = Instant::now();
        let mut c = cache(4, None);
        c.insert(b"a", Some(b"1"), t);
        assert_eq!(
            value(&mut c, b"a", t + Duration::from_secs(9)),
            Some(b"1".to_vec())
        );
        assert_eq!(c.get(b"a", t + Duration::from_secs(10)), CacheLookup::Miss);
        assert_eq!(c.stats().expirations, 1);
        assert!(c.is_empty());
    }

    #[test]
    fn misses_are_cached_only_when_configured() {
        let t = Instant::now();
        let mut c = cache(4, None);
        c.insert(b"a", None, t);
        assert_eq!(c.get(b"a", t), CacheLookup::Miss);
        let mut c = cache(4, Some(Duration::from_secs(1)));
        c.insert(b"a", None, t);
        assert_eq!(c.get(b"a", t), CacheLookup::HitMiss);
    }

    #[test]
    fn capacity_is_bounded_and_recently_used_entries_survive() {
        let t = Instant::now();
        let mut c = cache(3, None);
        for k in [b"a", b"b", b"c"] {
            c.insert(k, Some(k), t);
        }
        assert!(value(&mut c, b"a", t).is_some());
        // Inserting over capacity evicts, and never more than the capacity is held.
        c.insert(b"d", Some(b"d"), t);
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evictions, 1);
        assert!(value(&mut c, b"d", t).is_some());
        for k in 0..100u32 {
            c.insert(&k.to_be_bytes(), Some(b"x"), t);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn a_fill_for_a_reused_slot_is_ignored() {
        let t = Instant::now();
        let mut c = cache(1, None);
        let old = c.reserve(b"a", t).unwrap();
        c.insert(b"b", Some(b"2"), t); // evicts the reservation of a
        c.fill(old, Some(b"1"), t);
        assert_eq!(c.get(b"a", t), CacheLookup::Miss);
        assert_eq!(value(&mut c, b"b", t), Some(b"2".to_vec()));
    }

    #[test]
    fn a_cancelled_reservation_keeps_nothing_and_disabled_cache_reserves_nothing() {
        let t = Instant::now();
        let mut c = cache(2, None);
        let ticket = c.reserve(b"a", t).unwrap();
        c.cancel(ticket);
        assert!(c.is_empty());
        assert_eq!(cache(0, None).reserve(b"a", t), None);
    }

    #[test]
    fn refilling_reuses_the_value_buffer() {
        let t = Instant::now();
        let mut c = cache(1, None);
        c.insert(b"a", Some(&[1; 64]), t);
        let ptr = c.slots[0].value.as_ptr();
        c.insert(b"a", Some(&[2; 64]), t);
        assert_eq!(ptr, c.slots[0].value.as_ptr());
    }
}
