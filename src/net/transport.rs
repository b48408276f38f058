//! A client connection's byte stream: plain TCP, or TLS (rustls) over it. The lookup
//! client's reader and writer futures share one [`Transport`] (one task, one core): every
//! `RefCell` here is borrowed only between two awaits.
//!
//! With TLS, rustls is used sans-I/O: ciphertext read from the socket (with the same
//! non-blocking `recv` and readiness rescue as plain TCP, see [`super::read_some`]) is fed to
//! the session, and the records it produces are written with [`super::write_all`]. Only one
//! future writes records at a time (`flushing`), so two never interleave on the socket.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::sync::Arc;

use glommio::net::TcpStream;

use super::{read_some, write_all};

/// Ciphertext read from the socket at a time.
const TLS_READ: usize = 32 << 10;

/// The byte stream of one client connection.
pub(crate) struct Transport {
    tcp: RefCell<TcpStream>,
    tls: Option<Tls>,
}

struct Tls {
    session: RefCell<rustls::ClientConnection>,
    /// Ciphertext read and not yet taken by the session: `buf[start..end]`.
    ciphertext: RefCell<(Vec<u8>, usize, usize)>,
    /// A future is writing the session's records to the socket.
    flushing: Cell<bool>,
}

impl Transport {
    /// Plain TCP.
    pub fn plain(tcp: TcpStream) -> Transport {
        Transport {
            tcp: RefCell::new(tcp),
            tls: None,
        }
    }

    /// TLS over `tcp`: completes the handshake (certificate checked against `config`'s
    /// roots for `server_name`) before returning.
    pub async fn tls(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<Transport> {
        let mut session = rustls::ClientConnection::new(config, server_name).map_err(tls_error)?;
        // rustls refuses plaintext past 64 KiB of unsent records by default (`write` returns
        // 0): a write is one batch of requests, bounded by the pending requests, and is
        // flushed right after, so the cap only broke big bursts.
        session.set_buffer_limit(None);
        let t = Transport {
            tcp: RefCell::new(tcp),
            tls: Some(Tls {
                session: RefCell::new(session),
                ciphertext: RefCell::new((vec![0; TLS_READ], 0, 0)),
                flushing: Cell::new(false),
            }),
        };
        let tls = t.tls.as_ref().expect("just set");
        while tls.session.borrow().is_handshaking() {
            t.flush_records().await?;
            if !tls.session.borrow().is_handshaking() {
                break;
            }
            if !t.take_ciphertext().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ));
            }
        }
        t.flush_records().await?;
        Ok(t)
    }

    /// The TCP socket (for socket options).
    pub fn tcp(&self) -> std::cell::Ref<'_, TcpStream> {
        self.tcp.borrow()
    }

    /// Reads what is available (at least one byte, or 0 at the end of the stream).
    pub async fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return read_some(&self.tcp, buf).await;
        };
        loop {
            match tls.session.borrow_mut().reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the server ended the session (close_notify)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.take_ciphertext().await? {
                return Ok(0);
            }
            // The session may answer what it read (a key update, an alert).
            self.flush_records().await?;
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return write_all(&self.tcp, buf).await;
        };
        tls.session.borrow_mut().writer().write_all(buf)?;
        self.flush_records().await
    }

    /// Feeds the session ciphertext (left from the last read, or read now) and processes
    /// it. False when the socket reached its end.
    async fn take_ciphertext(&self) -> io::Result<bool> {
        let tls = self.tls.as_ref().expect("a TLS transport");
        let unread = {
            let c = tls.ciphertext.borrow();
            c.2 - c.1
        };
        if unread == 0 {
            // Out of the cell while the read waits (no borrow across an await).
            let mut buf = std::mem::take(&mut tls.ciphertext.borrow_mut().0);
            let read = read_some(&self.tcp, &mut buf).await;
            let n = read.as_ref().map_or(0, |n| *n);
            *tls.ciphertext.borrow_mut() = (buf, 0, n);
            if read? == 0 {
                return Ok(false);
            }
        }
        let mut c = tls.ciphertext.borrow_mut();
        let (buf, start, end) = &mut *c;
        let mut slice = &buf[*start..*end];
        let mut session = tls.session.borrow_mut();
        let taken = session.read_tls(&mut slice)?;
        *start += taken;
        session.process_new_packets().map_err(tls_error)?;
        Ok(true)
    }

    /// Writes the records the session has ready, unless another future is already doing
    /// so (it writes these too before it stops).
    async fn flush_records(&self) -> io::Result<()> {
        let tls = self.tls.as_ref().expect("a TLS transport");
        if tls.flushing.get() {
            return Ok(());
        }
        tls.flushing.set(true);
        let result = async {
            let mut out = Vec::new();
            loop {
                out.clear();
                {
                    let mut session = tls.session.borrow_mut();
                    while session.wants_write() {
                        session.write_tls(&mut out)?;
                    }
                }
                if out.is_empty() {
                    return Ok(());
                }
                write_all(&self.tcp, &out).await?;
            }
        }
        .await;
        tls.flushing.set(false);
        result
    }
}

/// A rustls error as an I/O error, its text kept (an unknown issuer, a name mismatch).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}
