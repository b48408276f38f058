//! What a [`Connection`](super::Connection) handle and its task share: the configuration,
//! the state, the pending requests, and the counters. The handle (`connection.rs`) and the
//! task (`driver.rs`, `reader.rs`) both build on this module, never on each other.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use super::error::LookupError;
use super::pending::{Pending, PendingOptions};
use super::round_trip::RoundTrips;
use crate::net::Notify;
use crate::resp::Limits;

/// Configuration of a [`Connection`](super::Connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// How long a connection attempt may take. Default 1 s.
    pub connect_timeout: Duration,
    /// Drop the connection (failing what is pending with [`LookupError::NoResponse`]) when
    /// requests are pending and nothing was received for this long; `None` waits forever.
    /// This is how a black-holed server is escaped; per-request deadlines are the caller's.
    /// Default 10 s.
    pub response_timeout: Option<Duration>,
    /// First delay before reconnecting after a failure. Default 5 ms.
    pub backoff_initial: Duration,
    /// Longest delay between reconnection attempts (the delay doubles up to it). Default 1 s.
    pub backoff_max: Duration,
    /// Most requests pending at once; more are rejected with [`LookupError::Overloaded`].
    /// Default 1,048,576.
    pub max_pending: usize,
    /// Pending requests preallocated for (the FIFO grows beyond it if needed). Default 4096.
    pub initial_capacity: usize,
    /// Initial size of the read buffer. Default 256 KiB.
    pub read_buffer: usize,
    /// Send `GET`s submitted in the same executor tick as one `MGET`. Default false.
    pub mget_batching: bool,
    /// Most keys in one batched `MGET`. Default 128.
    pub max_batch: usize,
    /// A `GET` of a key whose `GET` is in flight shares its reply. Default false.
    pub coalescing: bool,
    /// How long an idle connection holds its first new request before writing, so that
    /// more requests (a bigger `MGET`) go in the same write. Zero (the default) writes at
    /// the end of the executor tick that made the request.
    pub batch_wait: Duration,
    /// Limits on replies. Default [`Limits::default`].
    pub limits: Limits,
    /// Database selected with `SELECT` after each connect (before any request); 0 (the
    /// default) sends nothing.
    pub db: u32,
    /// Credentials sent with `AUTH` after each connect, before `SELECT` and any request.
    /// Default none.
    pub auth: Option<super::Auth>,
    /// TLS over the TCP connection (`rediss://`), the handshake bounded by the connect
    /// timeout. Default none: plain TCP.
    pub tls: Option<super::TlsSettings>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Some(Duration::from_secs(10)),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_secs(1),
            max_pending: 1 << 20,
            initial_capacity: 4096,
            read_buffer: 256 << 10,
            mget_batching: false,
            max_batch: 128,
            coalescing: false,
            batch_wait: Duration::ZERO,
            limits: Limits::default(),
            db: 0,
            auth: None,
            tls: None,
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting; requests are queued and sent once connected.
    Connecting,
    /// Connected.
    Up,
    /// Waiting before reconnecting; requests are rejected with the last error.
    Down,
    /// Closed by the client; requests are rejected with [`LookupError::Closed`].
    Closed,
}

/// Counters of a [`Connection`](super::Connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Requests accepted.
    pub requests: u64,
    /// Replies received (a batched `MGET` counts once).
    pub replies: u64,
    /// `write` calls.
    pub writes: u64,
    /// Successful connects.
    pub connects: u64,
    /// Connection failures (refused, reset, malformed, ...).
    pub failures: u64,
    /// `GET`s that joined an identical `GET` in flight instead of being sent
    /// ([`ConnectionConfig::coalescing`]).
    pub coalesced: u64,
    /// `MGET`s sent by batching ([`ConnectionConfig::mget_batching`]; a batch of one goes
    /// as a plain `GET` and is not counted).
    pub mgets: u64,
    /// Keys those `MGET`s carried (÷ [`mgets`](Self::mgets): the mean batch size).
    pub mget_keys: u64,
}

impl std::ops::AddAssign for ConnectionStats {
    /// Adds another connection's counters (a group's total).
    fn add_assign(&mut self, o: ConnectionStats) {
        self.requests += o.requests;
        self.replies += o.replies;
        self.writes += o.writes;
        self.connects += o.connects;
        self.failures += o.failures;
        self.coalesced += o.coalesced;
        self.mgets += o.mgets;
        self.mget_keys += o.mget_keys;
    }
}

/// A cluster redirect read from a `MOVED`/`ASK` error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Redirect<'a> {
    pub ask: bool,
    pub slot: u16,
    pub addr: SocketAddr,
    pub command: &'a [u8],
}

pub(crate) type RedirectHook<H> = Rc<dyn Fn(Redirect<'_>, H)>;

pub(super) struct Inner<H> {
    pub(super) addr: SocketAddr,
    pub(super) config: ConnectionConfig,
    pub(super) pipe: RefCell<Pending<H>>,
    pub(super) state: Cell<ConnectionState>,
    pub(super) last_error: RefCell<Option<LookupError>>,
    pub(super) writer: Notify,
    pub(super) close: Notify,
    pub(super) state_waiters: RefCell<Vec<Waker>>,
    pub(super) stats: Cell<ConnectionStats>,
    /// Read batches received (progress, for the response watchdog).
    pub(super) reads: Cell<u64>,
    pub(super) redirect: RefCell<Option<RedirectHook<H>>>,
    /// Round-trip times of the requests.
    pub(super) round_trips: RefCell<RoundTrips>,
}

impl<H> Inner<H> {
    /// A connection's shared state, connecting.
    pub(super) fn new(addr: SocketAddr, config: ConnectionConfig, opts: PendingOptions) -> Self {
        Inner {
            addr,
            pipe: RefCell::new(Pending::new(opts, config.initial_capacity)),
            config,
            state: Cell::new(ConnectionState::Connecting),
            last_error: RefCell::new(None),
            writer: Notify::default(),
            close: Notify::default(),
            state_waiters: RefCell::new(Vec::new()),
            stats: Cell::new(ConnectionStats::default()),
            reads: Cell::new(0),
            redirect: RefCell::new(None),
            round_trips: RefCell::new(RoundTrips::new()),
        }
    }

    pub(super) fn request_close(&self) {
        if self.state.get() != ConnectionState::Closed {
            self.state.set(ConnectionState::Closed);
            self.close.notify();
            self.writer.notify();
            self.wake_state_waiters();
        }
    }

    pub(super) fn rejection(&self) -> LookupError {
        match self.state.get() {
            ConnectionState::Closed => LookupError::Closed { addr: self.addr },
            _ => self
                .last_error
                .borrow()
                .clone()
                .unwrap_or(LookupError::Closed { addr: self.addr }),
        }
    }

    pub(super) fn set_state(&self, state: ConnectionState) {
        if self.state.get() != ConnectionState::Closed {
            self.state.set(state);
        }
        self.wake_state_waiters();
    }

    pub(super) fn wake_state_waiters(&self) {
        let waiters = std::mem::take(&mut *self.state_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    pub(super) fn closed(&self) -> bool {
        self.state.get() == ConnectionState::Closed
    }

    pub(super) fn bump(&self, f: impl FnOnce(&mut ConnectionStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}
