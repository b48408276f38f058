//! One pipelined connection to a Redis-compatible server, driven by one task on the current
//! glommio executor: connect, write batched requests, read and dispatch replies, fail
//! everything pending on a connection error, reconnect with exponential backoff.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use super::pipeline::{Pipeline, PipelineOptions};
use super::{LookupError, Rejected, ReplyHandler};
use crate::resp::Limits;
use crate::server::sock::Notify;

/// Configuration of a [`Connection`].
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
    /// Limits on replies. Default [`Limits::default`].
    pub limits: Limits,
    /// Database selected with `SELECT` after each connect (before any request); 0 (the
    /// default) sends nothing.
    pub db: u32,
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
            limits: Limits::default(),
            db: 0,
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

/// Counters of a [`Connection`].
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
    pub(super) pipe: RefCell<Pipeline<H>>,
    pub(super) state: Cell<ConnectionState>,
    pub(super) last_error: RefCell<Option<LookupError>>,
    pub(super) writer: Notify,
    pub(super) close: Notify,
    pub(super) state_waiters: RefCell<Vec<Waker>>,
    pub(super) stats: Cell<ConnectionStats>,
    /// Read batches received (progress, for the response watchdog).
    pub(super) reads: Cell<u64>,
    pub(super) redirect: RefCell<Option<RedirectHook<H>>>,
}

/// A pipelined connection (see the [module docs](super)). Cheap to clone: clones share the
/// connection. The connection is closed when the last clone is dropped or on [`close`].
///
/// Must be created on a glommio executor thread; all use stays on that thread.
///
/// [`close`]: Connection::close
pub struct Connection<H: ReplyHandler> {
    handle: Rc<Handle<H>>,
}

struct Handle<H: ReplyHandler> {
    inner: Rc<Inner<H>>,
}

impl<H: ReplyHandler> Drop for Handle<H> {
    fn drop(&mut self) {
        self.inner.request_close();
    }
}

impl<H: ReplyHandler> Clone for Connection<H> {
    fn clone(&self) -> Self {
        Connection {
            handle: self.handle.clone(),
        }
    }
}

impl<H: ReplyHandler> std::fmt::Debug for Connection<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner().addr)
            .field("state", &self.inner().state.get())
            .field("pending", &self.pending())
            .finish()
    }
}

impl<H: ReplyHandler> Connection<H> {
    /// Starts a connection to `addr` and returns at once; requests submitted before it is
    /// up are queued (and failed if connecting fails).
    ///
    /// # Panics
    /// Outside a glommio executor (like `glommio::spawn_local`).
    pub fn new(addr: SocketAddr, config: ConnectionConfig) -> Self {
        let opts = PipelineOptions {
            mget_batching: config.mget_batching,
            max_batch: config.max_batch,
            coalescing: config.coalescing,
            keep_commands: false,
        };
        Self::with_options(addr, config, opts)
    }

    pub(crate) fn with_options(
        addr: SocketAddr,
        config: ConnectionConfig,
        opts: PipelineOptions,
    ) -> Self {
        let inner = Rc::new(Inner {
            addr,
            pipe: RefCell::new(Pipeline::new(opts, config.initial_capacity)),
            config,
            state: Cell::new(ConnectionState::Connecting),
            last_error: RefCell::new(None),
            writer: Notify::default(),
            close: Notify::default(),
            state_waiters: RefCell::new(Vec::new()),
            stats: Cell::new(ConnectionStats::default()),
            reads: Cell::new(0),
            redirect: RefCell::new(None),
        });
        glommio::spawn_local(super::driver::drive(inner.clone())).detach();
        Connection {
            handle: Rc::new(Handle { inner }),
        }
    }

    /// Connects to `addr` and waits until the first attempt succeeds or fails.
    ///
    /// ```
    /// use ringwait::lookup::{Connection, ConnectionConfig, LookupError, ReplyView};
    /// use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};
    ///
    /// let server = BuiltinServer::start(ServerConfig { keys: 10, ..ServerConfig::default() })?;
    /// let addr = server.addr();
    /// let ex = glommio::LocalExecutorBuilder::default().io_memory(DEFAULT_IO_MEMORY).make()?;
    /// let len = ex.run(async move {
    ///     let conn = Connection::connect(addr, ConnectionConfig::default()).await?;
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     conn.get(b"k:3", move |r: Result<ReplyView<'_>, LookupError>| {
    ///         let _ = tx.send(r.map(|v| v.value().map(|v| v.len())));
    ///     }).map_err(|rejected| rejected.error)?;
    ///     while conn.pending() > 0 {
    ///         glommio::executor().yield_task_queue_now().await;
    ///     }
    ///     Ok::<_, LookupError>(rx.recv().unwrap()?)
    /// })?;
    /// assert_eq!(len, Some(64));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn connect(addr: SocketAddr, config: ConnectionConfig) -> Result<Self, LookupError> {
        let conn = Self::new(addr, config);
        conn.wait_settled().await?;
        Ok(conn)
    }

    fn inner(&self) -> &Inner<H> {
        &self.handle.inner
    }

    /// Waits while connecting; the error if the attempt failed.
    async fn wait_settled(&self) -> Result<(), LookupError> {
        let inner = self.inner();
        std::future::poll_fn(|cx| match inner.state.get() {
            ConnectionState::Connecting => {
                inner.state_waiters.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
            ConnectionState::Up => std::task::Poll::Ready(Ok(())),
            ConnectionState::Down | ConnectionState::Closed => {
                std::task::Poll::Ready(Err(inner.rejection()))
            }
        })
        .await
    }

    /// Waits until the connection is up (reconnecting as needed), or `Err` once closed.
    pub async fn wait_up(&self) -> Result<(), LookupError> {
        let inner = self.inner();
        std::future::poll_fn(|cx| match inner.state.get() {
            ConnectionState::Up => std::task::Poll::Ready(Ok(())),
            ConnectionState::Closed => {
                std::task::Poll::Ready(Err(LookupError::Closed { addr: inner.addr }))
            }
            _ => {
                inner.state_waiters.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.inner().addr
    }

    /// The connection's state.
    pub fn state(&self) -> ConnectionState {
        self.inner().state.get()
    }

    /// Requests waiting for a reply (queued or in flight).
    pub fn pending(&self) -> usize {
        self.inner().pipe.borrow().pending()
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        self.inner().stats.get()
    }

    /// `GET key`: the handler receives [`ReplyView::Bulk`](super::ReplyView::Bulk) or [`ReplyView::Nil`](super::ReplyView::Nil).
    ///
    /// With [`ConnectionConfig::mget_batching`], GETs of one tick travel as one `MGET`
    /// (a key holding a non-string then reads as nil instead of a `WRONGTYPE` error); with
    /// [`ConnectionConfig::coalescing`], a GET of a key in flight shares its reply.
    pub fn get(&self, key: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_get(key, h))
    }

    /// `MGET key...`: the handler receives [`ReplyView::Array`](super::ReplyView::Array) of bulk strings and nils.
    pub fn mget(&self, keys: &[&[u8]], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_mget(keys, h))
    }

    /// `HGET key field`: [`ReplyView::Bulk`](super::ReplyView::Bulk) or [`ReplyView::Nil`](super::ReplyView::Nil).
    pub fn hget(&self, key: &[u8], field: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_command(&[b"HGET", key, field], h))
    }

    /// `HGETALL key`: [`ReplyView::Array`](super::ReplyView::Array) of alternating fields and values (empty if the
    /// key does not exist).
    pub fn hgetall(&self, key: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_command(&[b"HGETALL", key], h))
    }

    /// Any command, given as its arguments.
    pub fn command(&self, args: &[&[u8]], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_command(args, h))
    }

    /// An already encoded command (cluster redirects), preceded by `ASKING` if `asking`.
    pub(crate) fn encoded(
        &self,
        command: &[u8],
        asking: bool,
        handler: H,
    ) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_encoded(command, asking, h))
    }

    pub(crate) fn set_redirect_hook(&self, hook: RedirectHook<H>) {
        *self.inner().redirect.borrow_mut() = Some(hook);
    }

    fn submit(
        &self,
        handler: H,
        push: impl FnOnce(&mut Pipeline<H>, H),
    ) -> Result<(), Rejected<H>> {
        let inner = self.inner();
        let refused = match inner.state.get() {
            ConnectionState::Connecting | ConnectionState::Up => None,
            ConnectionState::Down | ConnectionState::Closed => Some(inner.rejection()),
        };
        let mut pipe = inner.pipe.borrow_mut();
        let error = refused.or_else(|| {
            (pipe.pending() >= inner.config.max_pending).then_some(LookupError::Overloaded {
                addr: inner.addr,
                limit: inner.config.max_pending,
            })
        });
        if let Some(error) = error {
            return Err(Rejected { error, handler });
        }
        push(&mut pipe, handler);
        drop(pipe);
        inner.bump(|s| s.requests += 1);
        inner.writer.notify();
        Ok(())
    }

    /// Closes the connection: pending handlers get [`LookupError::Closed`] (soon, from the
    /// connection's task) and new requests are rejected.
    pub fn close(&self) {
        self.inner().request_close();
    }
}

impl<H> Inner<H> {
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
