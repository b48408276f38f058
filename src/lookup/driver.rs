//! The task behind a [`Connection`](super::Connection): connect (and `AUTH`, `SELECT`), run the
//! writer, the reader and the response watchdog until one fails, fail what is pending, back
//! off, reconnect; until the connection is closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::TcpStream;

use super::reader::{fail_all, Reader};
use super::shared::{ConnectionConfig, ConnectionState, Inner};
use super::{LookupError, ReplyHandler};
use crate::net::Transport;
use crate::resp::{CommandEncoder, Frame, Parser};

/// Delay before reconnection attempt number `failures` (0-based): doubling, capped.
fn backoff(config: &ConnectionConfig, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(20);
    config
        .backoff_initial
        .saturating_mul(factor)
        .min(config.backoff_max)
}

/// The connection's task: connect, serve, fail pending, back off, repeat until closed.
///
/// This is also the circuit breaker in front of a dead store. After each failed connection
/// (refused, timed out, or dropped before the server answered anything) the connection is
/// `Down`: every request fails at once with the connection's error, without touching the
/// store. It probes again (reconnects) after `backoff_initial` (5 ms by default), doubling
/// with each consecutive failure up to `backoff_max` (1 s): from the 9th consecutive failure
/// on, the store sees one connection attempt a second. The first reply resets the count.
pub(super) async fn drive<H: ReplyHandler>(inner: Rc<Inner<H>>) {
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
            let tcp = or(connect, closed).await?;
            let stream = secure(&inner, tcp).await?;
            handshake(&inner, &stream).await?;
            Ok(stream)
        };
        let error = match connected.await {
            Ok(stream) => {
                inner.bump(|s| s.connects += 1);
                inner.set_state(ConnectionState::Up);
                let reads_before = inner.reads.get();
                let error = session(&inner, stream, &mut reader).await;
                // The breaker closes only once the server answered something: a server that
                // accepts and drops every connection counts as failing, and is probed less
                // and less often, like one that refuses.
                if inner.reads.get() != reads_before {
                    failures = 0;
                }
                error
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

/// Sends `AUTH` (when credentials are configured) and `SELECT db` (when `db` is not 0) on a
/// fresh connection and waits for `+OK` to each (bounded by the response timeout), before
/// the connection carries requests. A refusal (`-WRONGPASS`, `-NOAUTH`, a bad database)
/// is the connection's error.
async fn handshake<H>(inner: &Inner<H>, stream: &Transport) -> Result<(), LookupError> {
    let mut cmd = Vec::new();
    let replies = handshake_commands(&inner.config, &mut cmd);
    if replies == 0 {
        return Ok(());
    }
    let addr = inner.addr;
    let exchange = async {
        stream
            .write_all(&cmd)
            .await
            .map_err(|e| LookupError::from_io(addr, &e))?;
        let mut buf = [0u8; 512];
        let (mut len, mut used, mut answered) = (0, 0, 0);
        while answered < replies {
            match Parser::new(inner.config.limits).parse(&buf[used..len]) {
                Ok(Some((Frame::Simple(_), n))) => {
                    used += n;
                    answered += 1;
                    continue;
                }
                Ok(Some((Frame::Error(message), _))) => {
                    return Err(LookupError::Handshake {
                        addr,
                        message: String::from_utf8_lossy(message).into_owned(),
                    })
                }
                Ok(None) if len < buf.len() => {}
                Ok(_) => {
                    return Err(LookupError::UnexpectedReply {
                        addr,
                        what: "AUTH and SELECT must answer +OK",
                    })
                }
                Err(error) => return Err(LookupError::Malformed { addr, error }),
            }
            let n = stream
                .read_some(&mut buf[len..])
                .await
                .map_err(|e| LookupError::from_io(addr, &e))?;
            if n == 0 {
                return Err(LookupError::Disconnected { addr });
            }
            len += n;
        }
        Ok(())
    };
    match inner.config.response_timeout {
        None => exchange.await,
        Some(after) => {
            or(exchange, async {
                glommio::timer::sleep(after).await;
                Err(LookupError::NoResponse { addr, after })
            })
            .await
        }
    }
}

/// The connection's byte stream: TLS over `tcp` when configured (the handshake bounded by
/// the connect timeout), else `tcp` itself.
async fn secure<H>(inner: &Inner<H>, tcp: TcpStream) -> Result<Transport, LookupError> {
    let Some(tls) = &inner.config.tls else {
        return Ok(Transport::plain(tcp));
    };
    let addr = inner.addr;
    let after = inner.config.connect_timeout.max(Duration::from_millis(1));
    let handshake = async {
        Transport::tls(tcp, tls.config(), tls.server_name())
            .await
            .map_err(|e| LookupError::from_io(addr, &e))
    };
    or(handshake, async {
        glommio::timer::sleep(after).await;
        Err(LookupError::TimedOut { addr, after })
    })
    .await
}

/// Encodes what a fresh connection sends before any request (`AUTH`, `SELECT`) into
/// `out`; returns how many replies to wait for.
pub(crate) fn handshake_commands(config: &ConnectionConfig, out: &mut Vec<u8>) -> usize {
    let mut replies = 0;
    if let Some(auth) = &config.auth {
        let args = 2 + usize::from(auth.user.is_some());
        let mut enc = CommandEncoder::begin(out, args);
        enc.arg(b"AUTH");
        if let Some(user) = &auth.user {
            enc.arg(user.as_bytes());
        }
        enc.arg(auth.password.as_bytes());
        enc.finish();
        replies += 1;
    }
    if config.db != 0 {
        let mut enc = CommandEncoder::begin(out, 2);
        enc.arg(b"SELECT").arg_int(i64::from(config.db));
        enc.finish();
        replies += 1;
    }
    replies
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

/// One connected period: the writer, the reader and the watchdog race until one fails.
async fn session<H: ReplyHandler>(
    inner: &Inner<H>,
    stream: Transport,
    reader: &mut Reader,
) -> LookupError {
    let _ = stream.tcp().set_nodelay(true);
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
async fn write_loop<H>(inner: &Inner<H>, stream: &Transport) -> LookupError {
    let mut buf = Vec::with_capacity(inner.config.read_buffer);
    loop {
        {
            let mut pipe = inner.pipe.borrow_mut();
            if pipe.has_output() {
                pipe.take_output(&mut buf);
                let end = pipe.next_seq();
                inner
                    .round_trips
                    .borrow_mut()
                    .sent(end, std::time::Instant::now());
            }
        }
        if buf.is_empty() {
            inner.writer.wait().await;
            let wait = inner.config.batch_wait;
            if !wait.is_zero() {
                // Idle until now: let the requests of the next `wait` join this write.
                glommio::timer::sleep(wait).await;
            }
            continue;
        }
        if let Err(e) = stream.write_all(&buf).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ConnectionConfig::default();
        assert_eq!(backoff(&c, 0), Duration::from_millis(5));
        assert_eq!(backoff(&c, 3), Duration::from_millis(40));
        assert_eq!(backoff(&c, 30), Duration::from_secs(1));
    }
}
