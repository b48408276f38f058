//! One pipelined connection to a Redis-compatible server, driven by one task on the current
//! glommio executor: connect, write batched requests, read and dispatch replies, fail
//! everything pending on a connection error, reconnect with exponential backoff.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::TcpStream;

use super::pipeline::{Pipeline, PipelineOptions, Popped, NIL};
use super::{LookupError, Rejected, ReplyHandler, ReplyView};
use crate::resp::{CommandEncoder, Frame, Limits, Parser};
use crate::server::sock::{read_some, write_all, Notify};

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

struct Inner<H> {
    addr: SocketAddr,
    config: ConnectionConfig,
    pipe: RefCell<Pipeline<H>>,
    state: Cell<ConnectionState>,
    last_error: RefCell<Option<LookupError>>,
    writer: Notify,
    close: Notify,
    state_waiters: RefCell<Vec<Waker>>,
    stats: Cell<ConnectionStats>,
    /// Read batches received (progress, for the response watchdog).
    reads: Cell<u64>,
    redirect: RefCell<Option<RedirectHook<H>>>,
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
        glommio::spawn_local(drive(inner.clone())).detach();
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

    /// `GET key`: the handler receives [`ReplyView::Bulk`] or [`ReplyView::Nil`].
    ///
    /// With [`ConnectionConfig::mget_batching`], GETs of one tick travel as one `MGET`
    /// (a key holding a non-string then reads as nil instead of a `WRONGTYPE` error); with
    /// [`ConnectionConfig::coalescing`], a GET of a key in flight shares its reply.
    pub fn get(&self, key: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_get(key, h))
    }

    /// `MGET key...`: the handler receives [`ReplyView::Array`] of bulk strings and nils.
    pub fn mget(&self, keys: &[&[u8]], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_mget(keys, h))
    }

    /// `HGET key field`: [`ReplyView::Bulk`] or [`ReplyView::Nil`].
    pub fn hget(&self, key: &[u8], field: &[u8], handler: H) -> Result<(), Rejected<H>> {
        self.submit(handler, |p, h| p.push_command(&[b"HGET", key, field], h))
    }

    /// `HGETALL key`: [`ReplyView::Array`] of alternating fields and values (empty if the
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
    fn request_close(&self) {
        if self.state.get() != ConnectionState::Closed {
            self.state.set(ConnectionState::Closed);
            self.close.notify();
            self.writer.notify();
            self.wake_state_waiters();
        }
    }

    fn rejection(&self) -> LookupError {
        match self.state.get() {
            ConnectionState::Closed => LookupError::Closed { addr: self.addr },
            _ => self
                .last_error
                .borrow()
                .clone()
                .unwrap_or(LookupError::Closed { addr: self.addr }),
        }
    }

    fn set_state(&self, state: ConnectionState) {
        if self.state.get() != ConnectionState::Closed {
            self.state.set(state);
        }
        self.wake_state_waiters();
    }

    fn wake_state_waiters(&self) {
        let waiters = std::mem::take(&mut *self.state_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn closed(&self) -> bool {
        self.state.get() == ConnectionState::Closed
    }

    fn bump(&self, f: impl FnOnce(&mut ConnectionStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

/// Delay before reconnection attempt number `failures` (0-based): doubling, capped.
fn backoff(config: &ConnectionConfig, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(20);
    config
        .backoff_initial
        .saturating_mul(factor)
        .min(config.backoff_max)
}

/// The connection's task: connect, serve, fail pending, back off, repeat until closed.
async fn drive<H: ReplyHandler>(inner: Rc<Inner<H>>) {
    let mut failures = 0u32;
    let mut reader = Reader::new(&inner.config);
    while !inner.closed() {
        inner.set_state(ConnectionState::Connecting);
        let connect = async {
            let timeout = inner.config.connect_timeout.max(Duration::from_millis(1));
            TcpStream::connect_timeout(inner.addr, timeout)
                .await
                .map_err(|e| connect_error(inner.addr, timeout, std::io::Error::from(e)))
        };
        let closed = async {
            inner.close.wait().await;
            Err(LookupError::Closed { addr: inner.addr })
        };
        let connected = async {
            let mut stream = or(connect, closed).await?;
            select_db(&inner, &mut stream).await?;
            Ok(stream)
        };
        let error = match connected.await {
            Ok(stream) => {
                failures = 0;
                inner.bump(|s| s.connects += 1);
                inner.set_state(ConnectionState::Up);
                session(&inner, stream, &mut reader).await
            }
            Err(e) => e,
        };
        let error = if inner.closed() {
            LookupError::Closed { addr: inner.addr }
        } else {
            inner.bump(|s| s.failures += 1);
            error
        };
        *inner.last_error.borrow_mut() = Some(error.clone());
        inner.set_state(ConnectionState::Down);
        fail_all(&inner, &error, &mut reader.command);
        if inner.closed() {
            break;
        }
        let delay = backoff(&inner.config, failures);
        failures = failures.saturating_add(1);
        or(glommio::timer::sleep(delay), inner.close.wait()).await;
    }
    fail_all(
        &inner,
        &LookupError::Closed { addr: inner.addr },
        &mut reader.command,
    );
}

/// Sends `SELECT db` on a fresh connection and waits for `+OK` (bounded by the response
/// timeout), before the connection carries requests.
async fn select_db<H>(inner: &Inner<H>, stream: &mut TcpStream) -> Result<(), LookupError> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let db = inner.config.db;
    if db == 0 {
        return Ok(());
    }
    let addr = inner.addr;
    let handshake = async {
        let mut cmd = Vec::with_capacity(32);
        let mut enc = CommandEncoder::begin(&mut cmd, 2);
        enc.arg(b"SELECT").arg_int(i64::from(db));
        enc.finish();
        stream
            .write_all(&cmd)
            .await
            .map_err(|e| LookupError::from_io(addr, &e))?;
        let mut buf = [0u8; 512];
        let mut len = 0;
        loop {
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|e| LookupError::from_io(addr, &e))?;
            if n == 0 {
                return Err(LookupError::Disconnected { addr });
            }
            len += n;
            match Parser::new(inner.config.limits).parse(&buf[..len]) {
                Ok(Some((Frame::Simple(_), _))) => return Ok(()),
                Ok(Some((frame @ Frame::Error(_), _))) => {
                    return ReplyView::from_frame(frame, addr).map(|_| ())
                }
                Ok(None) if len < buf.len() => continue,
                Ok(_) => {
                    return Err(LookupError::UnexpectedReply {
                        addr,
                        what: "SELECT must answer +OK",
                    })
                }
                Err(error) => return Err(LookupError::Malformed { addr, error }),
            }
        }
    };
    match inner.config.response_timeout {
        None => handshake.await,
        Some(after) => {
            or(handshake, async {
                glommio::timer::sleep(after).await;
                Err(LookupError::NoResponse { addr, after })
            })
            .await
        }
    }
}

fn connect_error(addr: SocketAddr, timeout: Duration, e: std::io::Error) -> LookupError {
    match e.kind() {
        std::io::ErrorKind::TimedOut => LookupError::TimedOut {
            addr,
            after: timeout,
        },
        // io_uring reports a cancelled (timed out) connect as ECANCELED.
        _ if e.raw_os_error() == Some(libc::ECANCELED) => LookupError::TimedOut {
            addr,
            after: timeout,
        },
        _ => LookupError::from_io(addr, &e),
    }
}

/// Fails every pending request with `error`.
fn fail_all<H: ReplyHandler>(inner: &Inner<H>, error: &LookupError, scratch: &mut Vec<u8>) {
    inner.pipe.borrow_mut().discard_output();
    loop {
        let popped = inner.pipe.borrow_mut().pop(scratch);
        match popped {
            None => break,
            Some(Popped::Handler { handler, followers }) => {
                deliver(inner, handler, followers, Err(error.clone()))
            }
            Some(Popped::Batch { .. } | Popped::Discard) => {}
        }
    }
}

/// Calls the handler and its coalesced followers, holding no borrow.
fn deliver<H: ReplyHandler>(
    inner: &Inner<H>,
    handler: H,
    mut followers: u32,
    reply: Result<ReplyView<'_>, LookupError>,
) {
    while followers != NIL {
        let next = inner.pipe.borrow_mut().take_follower(followers);
        let Some((follower, next)) = next else { break };
        follower.on_reply(reply.clone());
        followers = next;
    }
    handler.on_reply(reply);
}

/// One connected period: the writer, the reader and the watchdog race until one fails.
async fn session<H: ReplyHandler>(
    inner: &Inner<H>,
    stream: TcpStream,
    reader: &mut Reader,
) -> LookupError {
    let _ = stream.set_nodelay(true);
    let stream = RefCell::new(stream);
    let write = write_loop(inner, &stream);
    let read = reader.run(inner, &stream);
    let watch = watchdog(inner);
    let closed = async {
        inner.close.wait().await;
        LookupError::Closed { addr: inner.addr }
    };
    or(or(read, write), or(watch, closed)).await
}

/// Writes whatever requests accumulated, one `write` per batch.
async fn write_loop<H>(inner: &Inner<H>, stream: &RefCell<TcpStream>) -> LookupError {
    let mut buf = Vec::with_capacity(inner.config.read_buffer);
    loop {
        {
            let mut pipe = inner.pipe.borrow_mut();
            if pipe.has_output() {
                pipe.take_output(&mut buf);
            }
        }
        if buf.is_empty() {
            inner.writer.wait().await;
            continue;
        }
        if let Err(e) = write_all(stream, &buf).await {
            return LookupError::from_io(inner.addr, &e);
        }
        inner.bump(|s| s.writes += 1);
        buf.clear();
    }
}

/// Drops the connection when requests wait and nothing arrives for the response timeout.
async fn watchdog<H>(inner: &Inner<H>) -> LookupError {
    let Some(timeout) = inner.config.response_timeout else {
        return std::future::pending().await;
    };
    const TICKS: u32 = 4;
    let tick = (timeout / TICKS).max(Duration::from_millis(1));
    let mut strikes = 0;
    let mut seen = inner.reads.get();
    loop {
        glommio::timer::sleep(tick).await;
        let reads = inner.reads.get();
        if reads == seen && !inner.pipe.borrow().is_idle() {
            strikes += 1;
            // The first strike may come right after a submission: TICKS more make sure a
            // full timeout passed without progress.
            if strikes > TICKS {
                return LookupError::NoResponse {
                    addr: inner.addr,
                    after: timeout,
                };
            }
        } else {
            strikes = 0;
        }
        seen = reads;
    }
}

/// The read side: a buffer kept across reconnections.
struct Reader {
    parser: Parser,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_len: usize,
    command: Vec<u8>,
}

impl Reader {
    fn new(config: &ConnectionConfig) -> Self {
        Reader {
            parser: Parser::new(config.limits),
            buf: vec![0; config.read_buffer.max(4096)],
            start: 0,
            end: 0,
            max_len: config.limits.max_bulk_len.saturating_add(64 << 10),
            command: Vec::new(),
        }
    }

    /// Makes room to read; `false` if one reply would not fit in the largest buffer.
    fn make_room(&mut self) -> bool {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.buf.len() {
            return true;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.buf.len() >= self.max_len {
            return false;
        }
        let len = (self.buf.len() * 2).min(self.max_len);
        self.buf.resize(len, 0);
        true
    }

    async fn run<H: ReplyHandler>(
        &mut self,
        inner: &Inner<H>,
        stream: &RefCell<TcpStream>,
    ) -> LookupError {
        self.start = 0;
        self.end = 0;
        loop {
            if !self.make_room() {
                return LookupError::UnexpectedReply {
                    addr: inner.addr,
                    what: "a reply larger than the read buffer limit",
                };
            }
            match read_some(stream, &mut self.buf[self.end..]).await {
                Ok(0) => return LookupError::Disconnected { addr: inner.addr },
                Ok(n) => self.end += n,
                Err(e) => return LookupError::from_io(inner.addr, &e),
            }
            inner.reads.set(inner.reads.get() + 1);
            if let Err(e) = self.dispatch_all(inner) {
                return e;
            }
        }
    }

    /// Hands every complete reply in the buffer to its handler.
    fn dispatch_all<H: ReplyHandler>(&mut self, inner: &Inner<H>) -> Result<(), LookupError> {
        let mut replies = 0;
        let result = loop {
            match self.parser.parse(&self.buf[self.start..self.end]) {
                Ok(Some((frame, used))) => {
                    self.start += used;
                    replies += 1;
                    if let Err(e) = dispatch(inner, frame, &mut self.command) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => {
                    break Err(LookupError::Malformed {
                        addr: inner.addr,
                        error,
                    })
                }
            }
        };
        inner.bump(|s| s.replies += replies);
        result
    }
}

/// Matches one reply to the oldest pending request.
fn dispatch<H: ReplyHandler>(
    inner: &Inner<H>,
    frame: Frame<'_>,
    command: &mut Vec<u8>,
) -> Result<(), LookupError> {
    let addr = inner.addr;
    let popped = inner.pipe.borrow_mut().pop(command);
    match popped {
        None => Err(LookupError::Unsolicited { addr }),
        Some(Popped::Discard) => Ok(()),
        Some(Popped::Handler { handler, followers }) => {
            if let Frame::Error(message) = frame {
                if let Some(redirect) = parse_redirect(message, addr, command) {
                    let hook = inner.redirect.borrow().clone();
                    if let Some(hook) = hook.filter(|_| followers == NIL) {
                        hook(redirect, handler);
                        return Ok(());
                    }
                }
            }
            deliver(
                inner,
                handler,
                followers,
                ReplyView::from_frame(frame, addr),
            );
            Ok(())
        }
        Some(Popped::Batch { count, as_get }) => {
            dispatch_batch(inner, frame, count, as_get, command)
        }
    }
}

/// Splits a batched `MGET` reply among its parts.
fn dispatch_batch<H: ReplyHandler>(
    inner: &Inner<H>,
    frame: Frame<'_>,
    count: u32,
    as_get: bool,
    command: &mut Vec<u8>,
) -> Result<(), LookupError> {
    let addr = inner.addr;
    let mut next_part = || match inner.pipe.borrow_mut().pop(command) {
        Some(Popped::Handler { handler, followers }) => Some((handler, followers)),
        _ => None,
    };
    let broken = LookupError::Unsolicited { addr };
    match frame {
        _ if as_get => {
            let (h, f) = next_part().ok_or(broken)?;
            deliver(inner, h, f, ReplyView::from_frame(frame, addr));
        }
        Frame::Array(items) if items.len() == count as usize => {
            for item in items.iter() {
                let (h, f) = next_part().ok_or_else(|| broken.clone())?;
                deliver(inner, h, f, ReplyView::from_frame(item, addr));
            }
        }
        other => {
            let error = match other {
                Frame::Error(_) => ReplyView::from_frame(other, addr).err(),
                _ => None,
            }
            .unwrap_or(LookupError::UnexpectedReply {
                addr,
                what: "an MGET answered by something else than an array of its length",
            });
            for _ in 0..count {
                let (h, f) = next_part().ok_or_else(|| broken.clone())?;
                deliver(inner, h, f, Err(error.clone()));
            }
        }
    }
    Ok(())
}

/// Parses `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>`; an empty host means
/// the host of the connection that answered.
fn parse_redirect<'a>(message: &[u8], from: SocketAddr, command: &'a [u8]) -> Option<Redirect<'a>> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.split(' ');
    let ask = match parts.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = parts.next()?.parse().ok()?;
    let target = parts.next()?;
    let addr = match target.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let port = target.strip_prefix(':')?.parse().ok()?;
            SocketAddr::new(from.ip(), port)
        }
    };
    (!command.is_empty() && slot < 16384).then_some(Redirect {
        ask,
        slot,
        addr,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_parse() {
        let from: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let r = parse_redirect(b"MOVED 3999 127.0.0.1:6381", from, b"x").unwrap();
        assert!(!r.ask && r.slot == 3999 && r.addr == "127.0.0.1:6381".parse().unwrap());
        let r = parse_redirect(b"ASK 1 :7001", from, b"x").unwrap();
        assert!(r.ask && r.addr == "10.0.0.1:7001".parse().unwrap());
        assert!(parse_redirect(b"MOVED 99999 1.2.3.4:5", from, b"x").is_none());
        assert!(parse_redirect(b"ERR MOVED", from, b"x").is_none());
        assert!(parse_redirect(b"MOVED 1 1.2.3.4:5", from, b"").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ConnectionConfig::default();
        assert_eq!(backoff(&c, 0), Duration::from_millis(5));
        assert_eq!(backoff(&c, 3), Duration::from_millis(40));
        assert_eq!(backoff(&c, 30), Duration::from_secs(1));
    }
}
