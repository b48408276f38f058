//! The read side of a connection: parse replies and hand each to the handler at the front
//! of the FIFO (splitting batched `MGET`s, serving coalesced followers, following cluster
//! redirects), and fail everything pending when the connection breaks.

use std::net::SocketAddr;

use super::pending::{Popped, NIL};
use super::shared::{ConnectionConfig, Inner, Redirect};
use super::{LookupError, ReplyHandler, ReplyView};
use crate::net::read_buf::ReadBuf;
use crate::net::Transport;
use crate::resp::{Frame, Parser};

/// Fails every pending request with `error`.
pub(super) fn fail_all<H: ReplyHandler>(
    inner: &Inner<H>,
    error: &LookupError,
    scratch: &mut Vec<u8>,
) {
    inner.pipe.borrow_mut().discard_output();
    inner.round_trips.borrow_mut().reset();
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

/// The read side: a buffer kept across reconnections.
pub(super) struct Reader {
    parser: Parser,
    rb: ReadBuf,
    /// Scratch for the bytes of a popped command (cluster redirects, failing).
    pub(super) command: Vec<u8>,
}

impl Reader {
    pub(super) fn new(config: &ConnectionConfig) -> Self {
        Reader {
            parser: Parser::new(config.limits),
            rb: ReadBuf::new(
                config.read_buffer.max(4096),
                config.limits.max_bulk_len.saturating_add(64 << 10),
            ),
            command: Vec::new(),
        }
    }

    pub(super) async fn run<H: ReplyHandler>(
        &mut self,
        inner: &Inner<H>,
        stream: &Transport,
    ) -> LookupError {
        self.rb.clear();
        loop {
            if !self.rb.make_room() {
                return LookupError::UnexpectedReply {
                    addr: inner.addr,
                    what: "a reply larger than the read buffer limit",
                };
            }
            match stream.read_some(self.rb.spare()).await {
                Ok(0) => return LookupError::Disconnected { addr: inner.addr },
                Ok(n) => self.rb.end += n,
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
        let arrived = std::time::Instant::now();
        let result = loop {
            // Fields, not `unparsed()`: the frame borrows `buf` while `start` moves.
            match self.parser.parse(&self.rb.buf[self.rb.start..self.rb.end]) {
                Ok(Some((frame, used))) => {
                    self.rb.start += used;
                    replies += 1;
                    if let Err(e) = dispatch(inner, frame, arrived, &mut self.command) {
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

/// Matches one reply (`arrived` then) to the oldest pending request, and times its round
/// trip.
fn dispatch<H: ReplyHandler>(
    inner: &Inner<H>,
    frame: Frame<'_>,
    arrived: std::time::Instant,
    command: &mut Vec<u8>,
) -> Result<(), LookupError> {
    let addr = inner.addr;
    let (seq, popped) = {
        let mut pipe = inner.pipe.borrow_mut();
        (pipe.front_seq(), pipe.pop(command))
    };
    inner.round_trips.borrow_mut().answered(seq, arrived);
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
}
