//! One pipelined connection to a Redis-compatible server, driven by one task on the current
//! glommio executor: connect, write batched requests, read and dispatch replies, fail
//! everything pending on a connection error, reconnect with exponential backoff.

use std::net::SocketAddr;
use std::rc::Rc;

use super::pending::{Pending, PendingOptions};
use super::shared::{ConnectionConfig, ConnectionState, ConnectionStats, Inner, RedirectHook};
use super::{LookupError, Rejected, ReplyHandler};

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
        let opts = PendingOptions {
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
        opts: PendingOptions,
    ) -> Self {
        let inner = Rc::new(Inner::new(addr, config, opts));
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
        let counts = self.inner().pipe.borrow().counts();
        ConnectionStats {
            coalesced: counts.coalesced,
            mgets: counts.mgets,
            mget_keys: counts.mget_keys,
            ..self.inner().stats.get()
        }
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

    fn submit(&self, handler: H, push: impl FnOnce(&mut Pending<H>, H)) -> Result<(), Rejected<H>> {
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

    /// Round-trip times of this connection's requests so far (from the write of a request's
    /// batch to the read that brought its reply), as published buckets.
    pub fn round_trips(&self) -> crate::metrics::live::LatencyBuckets {
        self.inner().round_trips.borrow_mut().buckets()
    }

    /// A copy of the round-trip histogram (ns) behind [`round_trips`](Self::round_trips),
    /// for a summary at the end of a run.
    pub fn round_trip_histogram(&self) -> hdrhistogram::Histogram<u64> {
        self.inner().round_trips.borrow().histogram()
    }

    /// Closes the connection: pending handlers get [`LookupError::Closed`] (soon, from the
    /// connection's task) and new requests are rejected.
    pub fn close(&self) {
        self.inner().request_close();
    }
}

/// The next of `conns` in a round robin kept in `next`.
#[inline]
pub fn round_robin<'a, T>(conns: &'a [T], next: &std::cell::Cell<usize>) -> &'a T {
    if conns.len() == 1 {
        return &conns[0];
    }
    let n = next.get();
    next.set(if n + 1 == conns.len() { 0 } else { n + 1 });
    &conns[n]
}

/// The counters of a group of connections (a partition's, a cluster's nodes), added up.
pub(crate) fn group_stats<'a, H: ReplyHandler>(
    conns: impl IntoIterator<Item = &'a Connection<H>>,
) -> ConnectionStats {
    let mut total = ConnectionStats::default();
    for c in conns {
        total += c.stats();
    }
    total
}

/// A group's round trips, as one published histogram.
pub(crate) fn group_round_trips<'a, H: ReplyHandler>(
    conns: impl IntoIterator<Item = &'a Connection<H>>,
) -> crate::metrics::live::LatencyBuckets {
    let mut all = crate::metrics::live::LatencyBuckets::default();
    for c in conns {
        all.merge(&c.round_trips());
    }
    all
}

/// A group's round-trip histograms (ns), merged.
pub(crate) fn group_round_trip_histogram<'a, H: ReplyHandler>(
    conns: impl IntoIterator<Item = &'a Connection<H>>,
) -> hdrhistogram::Histogram<u64> {
    let mut all = crate::metrics::latency_histogram();
    for c in conns {
        let _ = all.add(c.round_trip_histogram());
    }
    all
}
