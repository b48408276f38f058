//! Replies as handlers see them, and the handler trait.

use std::net::SocketAddr;

use super::LookupError;
use crate::resp::{ArrayView, Frame};

/// A successful reply, borrowed from the connection's read buffer (valid only during the
/// [`ReplyHandler::on_reply`] call; copy what you keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyView<'a> {
    /// A nil bulk string or nil array: the key does not exist.
    Nil,
    /// A bulk string: the value.
    Bulk(&'a [u8]),
    /// A simple string such as `OK`.
    Simple(&'a [u8]),
    /// An integer.
    Integer(i64),
    /// An array (`MGET`, `HGETALL`); elements are RESP frames and may include nils.
    Array(ArrayView<'a>),
}

impl<'a> ReplyView<'a> {
    /// The value of a `GET`/`HGET` reply: `Some(bytes)` for a string, `None` for nil and for
    /// other kinds.
    pub fn value(&self) -> Option<&'a [u8]> {
        match *self {
            ReplyView::Bulk(b) | ReplyView::Simple(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the reply is nil (a missing key).
    pub fn is_nil(&self) -> bool {
        matches!(self, ReplyView::Nil)
    }

    /// Converts one RESP frame; an error frame becomes [`LookupError::ServerError`].
    pub fn from_frame(frame: Frame<'a>, addr: SocketAddr) -> Result<Self, LookupError> {
        Ok(match frame {
            Frame::Nil | Frame::NilArray => ReplyView::Nil,
            Frame::Bulk(b) => ReplyView::Bulk(b),
            Frame::Simple(s) => ReplyView::Simple(s),
            Frame::Integer(n) => ReplyView::Integer(n),
            Frame::Array(a) => ReplyView::Array(a),
            Frame::Error(message) => {
                return Err(LookupError::ServerError {
                    addr,
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
        })
    }
}

/// Receives the outcome of one request, exactly once.
///
/// Called on the connection's core, from the connection's reader task (or from the call
/// that submitted the request, for cache hits with [`get_cached`](super::get_cached)). The
/// handler may submit new requests from inside `on_reply`.
///
/// Closures `FnOnce(Result<ReplyView<'_>, LookupError>) + 'static` are handlers.
///
/// ```
/// use ringwait::lookup::{LookupError, ReplyHandler, ReplyView};
/// use std::{cell::RefCell, rc::Rc};
///
/// /// Completes "result slot" `slot` of a shared table with the value length.
/// struct Complete { slot: usize, results: Rc<RefCell<Vec<Option<usize>>>> }
///
/// impl ReplyHandler for Complete {
///     fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
///         let len = reply.ok().and_then(|r| r.value()).map(|v| v.len());
///         self.results.borrow_mut()[self.slot] = len;
///     }
/// }
/// ```
pub trait ReplyHandler: 'static {
    /// Delivers the reply (or the reason there is none).
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>);
}

impl<F> ReplyHandler for F
where
    F: for<'a> FnOnce(Result<ReplyView<'a>, LookupError>) + 'static,
{
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        self(reply)
    }
}

/// A request the connection did not take, with its handler handed back (not called).
pub struct Rejected<H> {
    /// Why the request was not taken.
    pub error: LookupError,
    /// The handler, untouched.
    pub handler: H,
}

impl<H: ReplyHandler> Rejected<H> {
    /// Completes the handler with the error (for callers with one error path).
    pub fn fail(self) {
        self.handler.on_reply(Err(self.error))
    }
}

impl<H> std::fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<H> std::fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request not sent: {}", self.error)
    }
}

impl<H> std::error::Error for Rejected<H> {}
