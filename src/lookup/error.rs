//! Typed errors of the lookup client.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::resp::ProtocolError;

/// Why a lookup failed. Every variant names the server address involved.
///
/// Connection-level errors (`Refused`, `Reset`, `Disconnected`, `NoResponse`, `Malformed`,
/// `Io`) fail every request pending on that connection; `ServerError` fails only the request
/// it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The server refused the TCP connection (nothing listens on the port).
    #[error("connection to {addr} refused")]
    Refused {
        /// Server address.
        addr: SocketAddr,
    },
    /// The connection was reset by the server (RST, broken pipe).
    #[error("connection to {addr} reset by the server")]
    Reset {
        /// Server address.
        addr: SocketAddr,
    },
    /// The server closed the connection (end of stream) while requests were pending.
    #[error("server {addr} closed the connection")]
    Disconnected {
        /// Server address.
        addr: SocketAddr,
    },
    /// Connecting did not complete within the connect timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    TimedOut {
        /// Server address.
        addr: SocketAddr,
        /// The connect timeout.
        after: Duration,
    },
    /// Requests were pending but the server sent nothing for the configured response timeout;
    /// the connection was dropped (black-holed or hung server).
    #[error("server {addr} sent no reply for {after:?} while requests were pending")]
    NoResponse {
        /// Server address.
        addr: SocketAddr,
        /// The response timeout.
        after: Duration,
    },
    /// The server sent bytes that are not RESP2; the connection was dropped.
    #[error("malformed reply from {addr}: {error}")]
    Malformed {
        /// Server address.
        addr: SocketAddr,
        /// What was wrong.
        error: ProtocolError,
    },
    /// The server sent a reply no request was waiting for; the connection was dropped.
    #[error("server {addr} sent a reply that no request was waiting for")]
    Unsolicited {
        /// Server address.
        addr: SocketAddr,
    },
    /// The reply has a shape the command cannot have (e.g. `MGET` answered by a string).
    #[error("unexpected reply from {addr}: {what}")]
    UnexpectedReply {
        /// Server address.
        addr: SocketAddr,
        /// What was expected and seen.
        what: &'static str,
    },
    /// The server answered this request with an error reply (`-ERR ...`); other requests
    /// are not affected.
    #[error("server {addr} answered an error: {message}")]
    ServerError {
        /// Server address.
        addr: SocketAddr,
        /// The error text, e.g. `WRONGTYPE Operation against a key holding the wrong kind of value`.
        message: String,
    },
    /// The server refused the connection's setup (`AUTH` or `SELECT` answered an error, e.g.
    /// `WRONGPASS`): a connection error, so every request pending on it gets it.
    #[error("server {addr} refused the connection's setup: {message}")]
    Handshake {
        /// Server address.
        addr: SocketAddr,
        /// The error reply's text.
        message: String,
    },
    /// The TLS session failed (a certificate that does not check out, an alert from the
    /// server); the connection was dropped.
    #[error("TLS with {addr} failed: {message}")]
    Tls {
        /// Server address.
        addr: SocketAddr,
        /// What rustls said.
        message: String,
    },
    /// Another I/O error.
    #[error("I/O error on the connection to {addr}: {kind}")]
    Io {
        /// Server address.
        addr: SocketAddr,
        /// The kind of I/O error.
        kind: io::ErrorKind,
        /// The OS error number, if any.
        os_code: Option<i32>,
    },
    /// The connection was closed by this client ([`Connection::close`](super::Connection::close)).
    #[error("connection to {addr} was closed by the client")]
    Closed {
        /// Server address.
        addr: SocketAddr,
    },
    /// Too many requests are pending on the connection.
    #[error("{limit} requests already pending on the connection to {addr}")]
    Overloaded {
        /// Server address.
        addr: SocketAddr,
        /// The configured limit ([`ConnectionConfig::max_pending`](super::ConnectionConfig::max_pending)).
        limit: usize,
    },
    /// Redis Cluster: the request was redirected more often than allowed.
    #[error(
        "request redirected {count} times (last to {addr}); the cluster topology keeps changing"
    )]
    TooManyRedirects {
        /// The last node redirected to.
        addr: SocketAddr,
        /// How many redirects.
        count: u8,
    },
    /// Redis Cluster: no known node serves the slot of the key.
    #[error("no cluster node known for hash slot {slot}")]
    NoNodeForSlot {
        /// The hash slot.
        slot: u16,
    },
    /// Redis Cluster: the keys of one multi-key request hash to different slots.
    #[error("keys of one request map to different cluster slots ({first} and {other})")]
    CrossSlot {
        /// Slot of the first key.
        first: u16,
        /// A different slot.
        other: u16,
    },
}

impl LookupError {
    /// Classifies an I/O error of the connection to `addr`.
    pub fn from_io(addr: SocketAddr, e: &io::Error) -> Self {
        if let Some(message) = e
            .get_ref()
            .map(ToString::to_string)
            .and_then(|m| m.strip_prefix("TLS: ").map(str::to_string))
        {
            return LookupError::Tls { addr, message };
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => LookupError::Refused { addr },
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => LookupError::Reset { addr },
            io::ErrorKind::UnexpectedEof => LookupError::Disconnected { addr },
            kind => LookupError::Io {
                addr,
                kind,
                os_code: e.raw_os_error(),
            },
        }
    }

    /// Whether the error concerns the connection (every pending request got it) rather than
    /// one request.
    pub fn is_connection_error(&self) -> bool {
        !matches!(
            self,
            LookupError::ServerError { .. }
                | LookupError::UnexpectedReply { .. }
                | LookupError::Overloaded { .. }
                | LookupError::TooManyRedirects { .. }
                | LookupError::NoNodeForSlot { .. }
                | LookupError::CrossSlot { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_keep_what_rustls_said() {
        let addr: SocketAddr = "127.0.0.1:6380".parse().unwrap();
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS: invalid peer certificate: UnknownIssuer",
        );
        let err = LookupError::from_io(addr, &e);
        assert_eq!(
            err.to_string(),
            "TLS with 127.0.0.1:6380 failed: invalid peer certificate: UnknownIssuer"
        );
        assert!(err.is_connection_error());
        let plain = io::Error::new(io::ErrorKind::InvalidData, "something else");
        assert!(matches!(
            LookupError::from_io(addr, &plain),
            LookupError::Io { .. }
        ));
    }
}
