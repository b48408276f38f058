//! A blocking RESP connection for the stream reader and the committer, which run on the job's
//! reader and writer threads (not on a partition's executor). Requests are pipelined: send
//! several, then read their replies in order, each parsed where it lies in the read buffer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::lookup::RedisUrl;
use crate::resp::{encode_command, Frame, OwnedFrame, Parser};

/// Why talking to the stream's server failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamConnError {
    /// The connection failed or was lost (the request may or may not have been carried out).
    #[error("{addr}: {cause}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// What happened.
        cause: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{addr}: {message}")]
    Server {
        /// The server.
        addr: SocketAddr,
        /// Its error reply.
        message: String,
    },
    /// The reply is not RESP, or not of the expected shape.
    #[error("{addr}: unexpected reply: {what}")]
    Protocol {
        /// The server.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
}

impl StreamConnError {
    /// A reply of the wrong shape from `addr`.
    pub fn protocol(addr: SocketAddr, what: &str) -> StreamConnError {
        StreamConnError::Protocol {
            addr,
            what: what.to_string(),
        }
    }

    /// Lost or refused: trying again on a new connection may succeed.
    pub fn is_connection(&self) -> bool {
        matches!(self, StreamConnError::Io { .. })
            || matches!(self, StreamConnError::Server { message, .. } if message.starts_with("LOADING ") || message.starts_with("BUSY ") || message.starts_with("TRYAGAIN "))
    }
}

/// One blocking RESP connection, authenticated and on its database, with requests
/// pipelined (send several, then read their replies in order, each parsed where it lies in
/// the read buffer). [`try_reply`](Self::try_reply) and [`readable`](Self::readable) let a
/// partition's executor use it without blocking.
pub struct BlockingConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` in use; `start..len` are unparsed.
    len: usize,
    start: usize,
    parser: Parser,
    out: Vec<u8>,
}

/// How long a reply may take (beyond a blocking read's own wait).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl BlockingConn {
    /// Connects within `timeout`, then `AUTH` and `SELECT` as the address says.
    pub fn open(url: &RedisUrl, timeout: Duration) -> Result<BlockingConn, StreamConnError> {
        let addr = url.addr;
        let io = |cause| StreamConnError::Io { addr, cause };
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        let mut conn = BlockingConn {
            addr,
            stream,
            buf: vec![0; 64 << 10],
            len: 0,
            start: 0,
            parser: Parser::default(),
            out: Vec::with_capacity(64 << 10),
        };
        if let Some(auth) = &url.auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &auth.user {
                args.push(user.as_bytes());
            }
            args.push(auth.password.as_bytes());
            conn.call(&args)?;
        }
        if url.db != 0 {
            conn.call(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        // A server that wants a password we did not give (or is not Redis) says so now.
        conn.call(&[b"PING"])?;
        Ok(conn)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a command now and returns its reply (an error reply is `Err(Server)`).
    pub fn call(&mut self, args: &[&[u8]]) -> Result<OwnedFrame, StreamConnError> {
        self.send_command(args)?;
        self.reply(|frame| Ok(OwnedFrame::from(frame)))
    }

    /// Encodes one command into the connection's own buffer and writes it; its reply is read
    /// with [`reply`](Self::reply) or [`try_reply`](Self::try_reply).
    pub fn send_command(&mut self, args: &[&[u8]]) -> Result<(), StreamConnError> {
        self.out.clear();
        encode_command(&mut self.out, args);
        let addr = self.addr;
        self.stream
            .write_all(&self.out)
            .map_err(|cause| StreamConnError::Io { addr, cause })
    }

    /// Writes encoded commands; their replies are read with [`reply`](Self::reply), in order.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), StreamConnError> {
        let addr = self.addr;
        self.stream
            .write_all(bytes)
            .map_err(|cause| StreamConnError::Io { addr, cause })
    }

    /// Reads the next reply and hands it, borrowed from the read buffer, to `f`. An error
    /// reply is `Err(Server)` without calling `f`.
    pub fn reply<T>(
        &mut self,
        f: impl FnOnce(Frame<'_>) -> Result<T, StreamConnError>,
    ) -> Result<T, StreamConnError> {
        let mut f = Some(f);
        loop {
            if let Some(result) = self.take_frame(&mut f)? {
                return result;
            }
            self.fill()?;
        }
    }

    /// The next reply if it is complete, reading only what the socket already holds;
    /// `Ok(None)` when it has not arrived yet.
    pub fn try_reply<T>(
        &mut self,
        f: impl FnOnce(Frame<'_>) -> Result<T, StreamConnError>,
    ) -> Result<Option<T>, StreamConnError> {
        let mut f = Some(f);
        loop {
            if let Some(result) = self.take_frame(&mut f)? {
                return result.map(Some);
            }
            if !self.socket_readable(Duration::ZERO) {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Parses the buffer once: a whole frame is consumed and handed to `f` (taken from its
    /// option), an error reply becomes `Err(Server)`; `None` when the frame is not complete.
    fn take_frame<T, F>(
        &mut self,
        f: &mut Option<F>,
    ) -> Result<Option<Result<T, StreamConnError>>, StreamConnError>
    where
        F: FnOnce(Frame<'_>) -> Result<T, StreamConnError>,
    {
        let addr = self.addr;
        let parsed = self
            .parser
            .parse(&self.buf[self.start..self.len])
            .map_err(|e| StreamConnError::Protocol {
                addr,
                what: e.to_string(),
            })?;
        let Some((frame, used)) = parsed else {
            return Ok(None);
        };
        self.start += used;
        let result = match frame {
            Frame::Error(message) => Err(StreamConnError::Server {
                addr,
                message: String::from_utf8_lossy(message).into_owned(),
            }),
            frame => (f.take().expect("one frame per call"))(frame),
        };
        if self.start == self.len {
            (self.start, self.len) = (0, 0);
        }
        Ok(Some(result))
    }

    /// Waits at most `timeout` until a reply can be read without blocking (one is complete
    /// in the buffer, or the socket has bytes or was closed); whether one can.
    pub fn readable(&self, timeout: Duration) -> bool {
        let complete = matches!(
            self.parser.parse(&self.buf[self.start..self.len]),
            Ok(Some(_))
        );
        complete || self.socket_readable(timeout)
    }

    /// Waits at most `timeout` for the socket to have bytes to read (or to be closed).
    fn socket_readable(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, and its count; poll(2) only writes `revents`.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        n > 0
    }

    /// Reads more bytes, making room first.
    fn fill(&mut self) -> Result<(), StreamConnError> {
        let addr = self.addr;
        if self.start > 0 {
            self.buf.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.start = 0;
        }
        if self.len == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        match self.stream.read(&mut self.buf[self.len..]) {
            Ok(0) => Err(StreamConnError::Io {
                addr,
                cause: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            }),
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(cause) => Err(StreamConnError::Io { addr, cause }),
        }
    }
}

/// The text of a simple or bulk string reply.
pub(crate) fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::Bulk(b) | OwnedFrame::Simple(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}
