//! A blocking reachability check of a store, for jobs to run before they open any output:
//! a store that is down, or that answers with an error (`NOAUTH`, a bad database), is named
//! before a single byte of the user's files is touched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::RedisUrl;
use crate::resp::{CommandEncoder, Frame, Limits, Parser};

/// Why the store did not pass the probe.
#[derive(Debug, thiserror::Error)]
#[error("the store at {addr} {reason}")]
pub struct ProbeError {
    /// The store's address.
    pub addr: SocketAddr,
    /// What went wrong, as a phrase ("refused the connection (…)", "answered -NOAUTH …").
    pub reason: String,
    /// The store answered with an error that waiting will not change (a wrong password, a
    /// bad database): the probe gave up at once instead of trying again.
    pub permanent: bool,
}

impl ProbeError {
    /// A failure that may pass if the probe tries again.
    fn retryable(addr: SocketAddr, reason: String) -> ProbeError {
        ProbeError {
            addr,
            reason,
            permanent: false,
        }
    }
}

/// Error replies that mean "not yet" (a store loading its data set, busy with a script,
/// or a cluster moving a slot): worth trying again.
fn transient(message: &str) -> bool {
    ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"]
        .iter()
        .any(|p| message.starts_with(p))
        || message.starts_with("ERR max number of clients reached")
}

/// Connects to `url` (over TLS when `tls` is given, the certificate checked), sends `AUTH`
/// (when it has credentials), `SELECT db` (when `db` is not 0) and `PING`, and checks that
/// every reply is a status reply (`+OK`, `+PONG`). A failed attempt is tried again every
/// 50 ms until `timeout` has passed (a store restarting, or flapping, passes once it
/// answers); the error is the last attempt's. An error reply that waiting cannot change (a
/// wrong password) and a certificate that does not check out end it at once.
///
/// ```
/// use std::time::Duration;
/// use ringwait::lookup::{probe, RedisUrl};
/// // Port 1 on loopback: nothing listens there.
/// let url: RedisUrl = "redis://127.0.0.1:1".parse().unwrap();
/// let err = probe(&url, None, Duration::from_millis(200)).unwrap_err();
/// assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
/// ```
pub fn probe(
    url: &RedisUrl,
    tls: Option<&super::TlsSettings>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match probe_once(url, tls, left.max(Duration::from_millis(1))) {
            Ok(()) => return Ok(()),
            Err(e) if e.permanent || left <= Duration::from_millis(50) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One attempt of [`probe`], each step bounded by `timeout`.
fn probe_once(
    url: &RedisUrl,
    tls: Option<&super::TlsSettings>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let addr = url.addr;
    let fail = |reason: String| ProbeError::retryable(addr, reason);
    let io = |what: &str, e: std::io::Error| fail(format!("{what} ({e})"));
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| io("could not be reached", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io("could not be configured", e))?;
    let Some(tls) = tls else {
        return exchange(url, stream);
    };
    let session = rustls::ClientConnection::new(tls.config(), tls.server_name())
        .map_err(|e| fail(format!("could not start TLS ({e})")))?;
    let mut stream = rustls::StreamOwned::new(session, stream);
    // Complete the handshake here, so that a certificate that does not check out is named
    // as such (and not retried: waiting will not change it).
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            let tls_refused = e.kind() == std::io::ErrorKind::InvalidData;
            return Err(ProbeError {
                permanent: tls_refused,
                ..io("refused the TLS handshake", e)
            });
        }
    }
    exchange(url, stream)
}

/// The `AUTH`/`SELECT`/`PING` exchange of [`probe_once`] on a connected stream.
fn exchange(url: &RedisUrl, mut stream: impl Read + Write) -> Result<(), ProbeError> {
    let addr = url.addr;
    let fail = |reason: String| ProbeError::retryable(addr, reason);
    let io = |what: &str, e: std::io::Error| fail(format!("{what} ({e})"));
    let mut request = Vec::with_capacity(64);
    let config = url.connection_config(super::ConnectionConfig::default(), None);
    let mut replies = super::driver::handshake_commands(&config, &mut request);
    let mut enc = CommandEncoder::begin(&mut request, 1);
    enc.arg(b"PING");
    enc.finish();
    replies += 1;
    stream
        .write_all(&request)
        .and_then(|()| stream.flush())
        .map_err(|e| io("did not take a request", e))?;
    let parser = Parser::new(Limits::default());
    let mut got = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    let mut used = 0;
    while replies > 0 {
        match parser.parse(&got[used..]) {
            Ok(Some((Frame::Simple(_), n))) => {
                used += n;
                replies -= 1;
                continue;
            }
            Ok(Some((Frame::Error(message), _))) => {
                let message = String::from_utf8_lossy(message);
                return Err(ProbeError {
                    permanent: !transient(&message),
                    ..fail(format!("answered -{message}"))
                });
            }
            Ok(Some((other, _))) => return Err(fail(format!("answered {other:?}"))),
            Err(e) => return Err(fail(format!("answered something that is not RESP ({e})"))),
            Ok(None) if got.len() > 4096 => {
                return Err(fail("answered PING with more than 4 KiB".into()))
            }
            Ok(None) => {}
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| io("did not answer PING", e))?;
        if n == 0 {
            return Err(fail("closed the connection without answering PING".into()));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
