//! The convenient async API: owned results, one allocation or more per request. For tests,
//! tools and casual use; hot paths use [`Connection`] with their own handler.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{Connection, ConnectionConfig, LookupError, Rejected, ReplyHandler, ReplyView};
use crate::resp::OwnedFrame;

#[derive(Default)]
struct Slot {
    result: RefCell<Option<Result<OwnedFrame, LookupError>>>,
    waker: Cell<Option<Waker>>,
}

/// A handler that stores an owned copy of the reply for an awaiting task.
pub struct Oneshot {
    slot: Rc<Slot>,
}

impl Oneshot {
    fn pair() -> (Oneshot, Rc<Slot>) {
        let slot = Rc::new(Slot::default());
        (Oneshot { slot: slot.clone() }, slot)
    }
}

impl std::fmt::Debug for Oneshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oneshot")
    }
}

/// Copies a reply view into an owned frame.
pub(crate) fn to_owned(view: ReplyView<'_>) -> OwnedFrame {
    match view {
        ReplyView::Nil => OwnedFrame::Nil,
        ReplyView::Bulk(b) => OwnedFrame::Bulk(b.to_vec()),
        ReplyView::Simple(s) => OwnedFrame::Simple(s.to_vec()),
        ReplyView::Integer(n) => OwnedFrame::Integer(n),
        ReplyView::Array(items) => OwnedFrame::Array(items.iter().map(OwnedFrame::from).collect()),
    }
}

impl ReplyHandler for Oneshot {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        *self.slot.result.borrow_mut() = Some(reply.map(to_owned));
        if let Some(w) = self.slot.waker.take() {
            w.wake();
        }
    }
}

async fn wait(slot: Rc<Slot>) -> Result<OwnedFrame, LookupError> {
    std::future::poll_fn(|cx| match slot.result.borrow_mut().take() {
        Some(r) => Poll::Ready(r),
        None => {
            slot.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await
}

/// An async client over one [`Connection`].
///
/// ```
/// use ringwait::lookup::{Client, ConnectionConfig};
/// use ringwait::dataset::{value_of};
/// use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};
///
/// let server = BuiltinServer::start(ServerConfig { keys: 10, ..ServerConfig::default() })?;
/// let addr = server.addr();
/// let ex = glommio::LocalExecutorBuilder::default().io_memory(DEFAULT_IO_MEMORY).make()?;
/// ex.run(async move {
///     let client = Client::connect(addr, ConnectionConfig::default()).await?;
///     assert_eq!(client.get(b"k:1").await?, Some(value_of(1).to_vec()));
///     assert_eq!(client.get(b"k:99").await?, None);
///     assert_eq!(client.hget(b"h:2", b"id").await?, Some(b"2".to_vec()));
///     Ok::<_, ringwait::lookup::LookupError>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection<Oneshot>,
}

fn unexpected(addr: SocketAddr, what: &'static str) -> LookupError {
    LookupError::UnexpectedReply { addr, what }
}

fn optional_bytes(addr: SocketAddr, frame: OwnedFrame) -> Result<Option<Vec<u8>>, LookupError> {
    match frame {
        OwnedFrame::Bulk(b) | OwnedFrame::Simple(b) => Ok(Some(b)),
        OwnedFrame::Nil | OwnedFrame::NilArray => Ok(None),
        OwnedFrame::Error(e) => Err(LookupError::ServerError {
            addr,
            message: String::from_utf8_lossy(&e).into_owned(),
        }),
        _ => Err(unexpected(addr, "a string or nil was expected")),
    }
}

impl Client {
    /// Starts a connection without waiting (see [`Connection::new`]).
    pub fn new(addr: SocketAddr, config: ConnectionConfig) -> Self {
        Client {
            conn: Connection::new(addr, config),
        }
    }

    /// Connects and waits for the first attempt's outcome.
    pub async fn connect(addr: SocketAddr, config: ConnectionConfig) -> Result<Self, LookupError> {
        Ok(Client {
            conn: Connection::connect(addr, config).await?,
        })
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection<Oneshot> {
        &self.conn
    }

    async fn run(
        &self,
        submit: impl FnOnce(&Connection<Oneshot>, Oneshot) -> Result<(), Rejected<Oneshot>>,
    ) -> Result<OwnedFrame, LookupError> {
        let (handler, slot) = Oneshot::pair();
        submit(&self.conn, handler).map_err(|r| r.error)?;
        wait(slot).await
    }

    /// `GET key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LookupError> {
        let frame = self.run(|c, h| c.get(key, h)).await?;
        optional_bytes(self.conn.addr(), frame)
    }

    /// `MGET keys...`.
    pub async fn mget(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, LookupError> {
        match self.run(|c, h| c.mget(keys, h)).await? {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| optional_bytes(self.conn.addr(), f))
                .collect(),
            _ => Err(unexpected(self.conn.addr(), "MGET must answer an array")),
        }
    }

    /// `HGET key field`.
    pub async fn hget(&self, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, LookupError> {
        let frame = self.run(|c, h| c.hget(key, field, h)).await?;
        optional_bytes(self.conn.addr(), frame)
    }

    /// `HGETALL key`: field/value pairs (empty if the key does not exist).
    pub async fn hgetall(&self, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, LookupError> {
        let addr = self.conn.addr();
        let OwnedFrame::Array(items) = self.run(|c, h| c.hgetall(key, h)).await? else {
            return Err(unexpected(addr, "HGETALL must answer an array"));
        };
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(f), Some(v)) = (it.next(), it.next()) {
            match (optional_bytes(addr, f)?, optional_bytes(addr, v)?) {
                (Some(f), Some(v)) => pairs.push((f, v)),
                _ => {
                    return Err(unexpected(
                        addr,
                        "HGETALL fields and values must be strings",
                    ))
                }
            }
        }
        Ok(pairs)
    }

    /// Any command; the reply as an owned frame (an error reply is `Err(ServerError)`).
    pub async fn command(&self, args: &[&[u8]]) -> Result<OwnedFrame, LookupError> {
        self.run(|c, h| c.command(args, h)).await
    }
}
