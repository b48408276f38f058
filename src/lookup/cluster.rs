//! Redis Cluster: key → slot hashing, a slot map from `CLUSTER SLOTS`, a connection per
//! master, and transparent `MOVED`/`ASK` redirects.
//!
//! Node connections keep a copy of each in-flight command, so a redirected request is
//! re-sent as is (`ASKING` first for `ASK`) without the caller noticing; `MOVED` also updates
//! the slot and schedules a full topology refresh. MGET batching and coalescing are off on
//! cluster connections (keys of one tick may live in different slots).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use super::pending::PendingOptions;
use super::shared::Redirect;
use super::{
    Client, Connection, ConnectionConfig, ConnectionState, LookupError, Rejected, ReplyHandler,
    ReplyView,
};
use crate::resp::OwnedFrame;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;
const NO_NODE: u16 = u16::MAX;

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC16: [u16; 256] = crc16_table();

/// CRC16/XMODEM, the checksum Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The hash slot of `key`: CRC16 of the key, or of the part between the first `{` and the
/// next `}` when that part is not empty (a hash tag), modulo 16384.
///
/// ```
/// use ringwait::lookup::key_slot;
/// assert_eq!(key_slot(b"123456789"), 0x31C3 % 16384);
/// assert_eq!(key_slot(b"{user1}.following"), key_slot(b"{user1}.followers"));
/// assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}")); // empty tag: whole key
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// Configuration of a [`ClusterClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Configuration of each node connection (`mget_batching` and `coalescing` are ignored).
    pub connection: ConnectionConfig,
    /// Most redirects followed for one request. Default 5.
    pub max_redirects: u8,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            connection: ConnectionConfig::default(),
            max_redirects: 5,
        }
    }
}

/// The handler type of cluster node connections: the caller's handler plus a redirect count.
pub struct ClusterHandler<H> {
    inner: H,
    redirects: u8,
}

impl<H: ReplyHandler> ReplyHandler for ClusterHandler<H> {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        self.inner.on_reply(reply)
    }
}

impl<H> std::fmt::Debug for ClusterHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandler")
            .field("redirects", &self.redirects)
            .finish_non_exhaustive()
    }
}

struct Shared<H: ReplyHandler> {
    config: ClusterConfig,
    seeds: Vec<SocketAddr>,
    /// Slot → index in `nodes`, or `NO_NODE`.
    slots: RefCell<Vec<u16>>,
    nodes: RefCell<Vec<Connection<ClusterHandler<H>>>>,
    by_addr: RefCell<HashMap<SocketAddr, u16>>,
    refreshing: Cell<bool>,
    refreshes: Cell<u64>,
    redirects: Cell<u64>,
}

/// A Redis Cluster client on one core: slot map from `CLUSTER SLOTS`, a connection per
/// master, `MOVED` (update the slot, refresh the map, retry) and `ASK` (`ASKING`, retry once
/// at the target) followed transparently by re-sending the kept command bytes. MGET batching
/// and coalescing are off on cluster connections.
///
/// Handlers are the same as for a [`Connection`]; every request goes to the master of its
/// key's slot.
///
/// ```no_run
/// use ringwait::lookup::{ClusterClient, ClusterConfig, LookupError, ReplyView};
///
/// type H = Box<dyn FnOnce(Result<ReplyView<'_>, LookupError>)>;
/// # async fn demo() -> Result<(), LookupError> {
/// let seeds = ["127.0.0.1:7000".parse().unwrap()];
/// let cluster: ClusterClient<H> = ClusterClient::connect(&seeds, ClusterConfig::default()).await?;
/// cluster
///     .get(b"k:1", Box::new(|r: Result<ReplyView<'_>, LookupError>| println!("{:?}", r.map(|v| v.value().map(<[u8]>::len)))))
///     .map_err(|rejected| rejected.error)?;
/// # Ok(()) }
/// ```
pub struct ClusterClient<H: ReplyHandler> {
    shared: Rc<Shared<H>>,
}

impl<H: ReplyHandler> std::fmt::Debug for ClusterClient<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl<H: ReplyHandler> Clone for ClusterClient<H> {
    fn clone(&self) -> Self {
        ClusterClient {
            shared: self.shared.clone(),
        }
    }
}

/// Counters of a [`ClusterClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Topology refreshes completed.
    pub refreshes: u64,
    /// `MOVED`/`ASK` redirects followed.
    pub redirects: u64,
}

impl<H: ReplyHandler> ClusterClient<H> {
    /// Reads the slot map from the first seed that answers `CLUSTER SLOTS` and connects to
    /// every master.
    pub async fn connect(seeds: &[SocketAddr], config: ClusterConfig) -> Result<Self, LookupError> {
        let shared = Rc::new(Shared {
            config,
            seeds: seeds.to_vec(),
            slots: RefCell::new(vec![NO_NODE; SLOTS]),
            nodes: RefCell::new(Vec::new()),
            by_addr: RefCell::new(HashMap::new()),
            refreshing: Cell::new(false),
            refreshes: Cell::new(0),
            redirects: Cell::new(0),
        });
        let client = ClusterClient { shared };
        client.refresh().await?;
        Ok(client)
    }

    /// The node connections' counters, added up.
    pub fn connection_stats(&self) -> super::ConnectionStats {
        super::group_stats(self.shared.nodes.borrow().iter())
    }

    /// The node connections' round-trip histograms (ns), merged.
    pub fn round_trip_histogram(&self) -> hdrhistogram::Histogram<u64> {
        super::group_round_trip_histogram(self.shared.nodes.borrow().iter())
    }

    /// The node connections' round trips, as published buckets.
    pub fn round_trips(&self) -> crate::metrics::live::LatencyBuckets {
        super::group_round_trips(self.shared.nodes.borrow().iter())
    }

    /// Re-reads the slot map (`CLUSTER SLOTS`) from a known node or a seed.
    pub async fn refresh(&self) -> Result<(), LookupError> {
        refresh(&self.shared).await
    }

    /// The masters known, in the order they were discovered.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.shared
            .nodes
            .borrow()
            .iter()
            .map(|c| c.addr())
            .collect()
    }

    /// The master currently believed to serve `slot`.
    pub fn node_for_slot(&self, slot: u16) -> Option<SocketAddr> {
        let index = *self.shared.slots.borrow().get(usize::from(slot))?;
        self.shared
            .nodes
            .borrow()
            .get(usize::from(index))
            .map(|c| c.addr())
    }

    /// Counters.
    pub fn stats(&self) -> ClusterStats {
        ClusterStats {
            refreshes: self.shared.refreshes.get(),
            redirects: self.shared.redirects.get(),
        }
    }

    /// Requests waiting for a reply on all nodes.
    pub fn pending(&self) -> usize {
        self.shared.nodes.borrow().iter().map(|c| c.pending()).sum()
    }

    fn route(
        &self,
        slot: u16,
        handler: H,
        submit: impl FnOnce(
            &Connection<ClusterHandler<H>>,
            ClusterHandler<H>,
        ) -> Result<(), Rejected<ClusterHandler<H>>>,
    ) -> Result<(), Rejected<H>> {
        let conn = {
            let index = self.shared.slots.borrow()[usize::from(slot)];
            let nodes = self.shared.nodes.borrow();
            // An unknown slot goes to any node, which redirects.
            nodes.get(usize::from(index)).or(nodes.first()).cloned()
        };
        let Some(conn) = conn else {
            return Err(Rejected {
                error: LookupError::NoNodeForSlot { slot },
                handler,
            });
        };
        if conn.state() == ConnectionState::Down {
            // The node may have failed over: look for the new master of its slots.
            schedule_refresh(&self.shared);
        }
        let handler = ClusterHandler {
            inner: handler,
            redirects: 0,
        };
        submit(&conn, handler).map_err(|r| Rejected {
            error: r.error,
            handler: r.handler.inner,
        })
    }

    /// `GET key` on the key's master.
    pub fn get(&self, key: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.route(key_slot(key), handler, |c, h| c.get(key, h))
    }

    /// `HGET key field` on the key's master.
    pub fn hget(&self, key: &[u8], field: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.route(key_slot(key), handler, |c, h| c.hget(key, field, h))
    }

    /// `HGETALL key` on the key's master.
    pub fn hgetall(&self, key: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.route(key_slot(key), handler, |c, h| c.hgetall(key, h))
    }

    /// `MGET keys...`; all keys must hash to one slot (use hash tags), else
    /// [`LookupError::CrossSlot`].
    pub fn mget(&self, keys: &[&[u8]], handler: H) -> Result<(), Rejected<H>> {
        let first = keys.first().map_or(0, |k| key_slot(k));
        if let Some(other) = keys.iter().map(|k| key_slot(k)).find(|&s| s != first) {
            return Err(Rejected {
                error: LookupError::CrossSlot { first, other },
                handler,
            });
        }
        self.route(first, handler, |c, h| c.mget(keys, h))
    }
}

/// The node connection for `addr`, created (with the redirect hook) if new.
fn node<H: ReplyHandler>(
    shared: &Rc<Shared<H>>,
    addr: SocketAddr,
) -> (u16, Connection<ClusterHandler<H>>) {
    if let Some(&i) = shared.by_addr.borrow().get(&addr) {
        let conn = shared.nodes.borrow()[usize::from(i)].clone();
        return (i, conn);
    }
    let opts = PendingOptions {
        mget_batching: false,
        max_batch: 1,
        coalescing: false,
        keep_commands: true,
    };
    let conn = Connection::with_options(addr, shared.config.connection.clone(), opts);
    let weak = Rc::downgrade(shared);
    conn.set_redirect_hook(Rc::new(move |r: Redirect<'_>, h: ClusterHandler<H>| {
        on_redirect(&weak, r, h)
    }));
    let mut nodes = shared.nodes.borrow_mut();
    let i = nodes.len() as u16;
    nodes.push(conn.clone());
    shared.by_addr.borrow_mut().insert(addr, i);
    (i, conn)
}

/// Follows one redirect (called by a node connection's reader, no borrow held).
fn on_redirect<H: ReplyHandler>(
    shared: &Weak<Shared<H>>,
    r: Redirect<'_>,
    mut h: ClusterHandler<H>,
) {
    let Some(shared) = shared.upgrade() else {
        return h.on_reply(Err(LookupError::Closed { addr: r.addr }));
    };
    h.redirects += 1;
    if h.redirects > shared.config.max_redirects {
        let count = h.redirects - 1;
        return h.on_reply(Err(LookupError::TooManyRedirects {
            addr: r.addr,
            count,
        }));
    }
    shared.redirects.set(shared.redirects.get() + 1);
    let (index, conn) = node(&shared, r.addr);
    if !r.ask {
        shared.slots.borrow_mut()[usize::from(r.slot)] = index;
        schedule_refresh(&shared);
    }
    if let Err(rejected) = conn.encoded(r.command, r.ask, h) {
        rejected.fail();
    }
}

fn schedule_refresh<H: ReplyHandler>(shared: &Rc<Shared<H>>) {
    if shared.refreshing.replace(true) {
        return;
    }
    let shared = shared.clone();
    glommio::spawn_local(async move {
        let _ = refresh(&shared).await;
    })
    .detach();
}

/// Reads `CLUSTER SLOTS` from the first node or seed that answers and installs it.
async fn refresh<H: ReplyHandler>(shared: &Rc<Shared<H>>) -> Result<(), LookupError> {
    shared.refreshing.set(true);
    let mut candidates: Vec<SocketAddr> = shared.nodes.borrow().iter().map(|c| c.addr()).collect();
    candidates.extend(shared.seeds.iter().copied());
    let mut last = LookupError::NoNodeForSlot { slot: 0 };
    let mut result = Err(last.clone());
    for addr in candidates {
        match slots_of(addr, &shared.config.connection).await {
            Ok(ranges) => {
                let mut map = vec![NO_NODE; SLOTS];
                for (lo, hi, master) in ranges {
                    let (index, _) = node(shared, master);
                    for slot in lo..=hi.min(SLOTS as u16 - 1) {
                        map[usize::from(slot)] = index;
                    }
                }
                *shared.slots.borrow_mut() = map;
                shared.refreshes.set(shared.refreshes.get() + 1);
                result = Ok(());
                break;
            }
            Err(e) => last = e,
        }
    }
    shared.refreshing.set(false);
    result.map_err(|_: LookupError| last)
}

/// `CLUSTER SLOTS` of one node as `(first slot, last slot, master address)`.
async fn slots_of(
    addr: SocketAddr,
    config: &ConnectionConfig,
) -> Result<Vec<(u16, u16, SocketAddr)>, LookupError> {
    let client = Client::connect(addr, config.clone()).await?;
    let reply = client.command(&[b"CLUSTER", b"SLOTS"]).await;
    client.connection().close();
    let OwnedFrame::Array(ranges) = reply? else {
        return Err(LookupError::UnexpectedReply {
            addr,
            what: "CLUSTER SLOTS must answer an array",
        });
    };
    let bad = LookupError::UnexpectedReply {
        addr,
        what: "a CLUSTER SLOTS entry must be [first, last, [ip, port, ...], ...]",
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let OwnedFrame::Array(parts) = range else {
            return Err(bad);
        };
        let (
            Some(OwnedFrame::Integer(lo)),
            Some(OwnedFrame::Integer(hi)),
            Some(OwnedFrame::Array(master)),
        ) = (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(bad);
        };
        let (Some(OwnedFrame::Bulk(ip)), Some(OwnedFrame::Integer(port))) =
            (master.first(), master.get(1))
        else {
            return Err(bad);
        };
        let ip = match std::str::from_utf8(ip).ok().and_then(|s| s.parse().ok()) {
            Some(ip) => ip,
            // An empty or unknown host means "the node you asked".
            None => addr.ip(),
        };
        let (Ok(lo), Ok(hi), Ok(port)) =
            (u16::try_from(*lo), u16::try_from(*hi), u16::try_from(*port))
        else {
            return Err(bad);
        };
        out.push((lo, hi, SocketAddr::new(ip, port)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"{"), crc16(b"{") % 16384);
    }
}
