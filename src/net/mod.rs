//! Small socket helpers shared by the built-in server and the lookup client: reading and
//! writing a glommio `TcpStream` shared (through a `RefCell`, borrowed only inside one poll)
//! by a reader and a writer future of the same task, and a single-waiter wake-up flag.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

pub(crate) mod read_buf;
mod transport;

pub(crate) use transport::Transport;

/// Reads what is available (at least one byte, or 0 at end of stream) into `buf`.
///
/// Tries a non-blocking `recv` first every time it is polled and only then falls back to
/// glommio's readiness wait, re-checking on a short timer too ([`with_rescue`]). glommio
/// 0.9's own `poll_read`, after a partial read, arms an early readiness poll and refuses to
/// read again until that one event completes; reading first means a lost or late readiness
/// event costs at most one rescue period instead of stalling the connection.
pub(crate) async fn read_some(stream: &RefCell<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    with_rescue(|cx| {
        let fd = stream.borrow().as_raw_fd();
        if let Some(result) = recv_now(fd, buf) {
            return Poll::Ready(result);
        }
        Pin::new(&mut *stream.borrow_mut()).poll_read(cx, buf)
    })
    .await
}

/// First re-check of a socket whose readiness event has not come.
const RESCUE_FIRST: Duration = Duration::from_millis(1);
/// Longest interval between re-checks of an idle socket.
const RESCUE_MAX: Duration = Duration::from_millis(64);

/// Runs `attempt` until it is ready, re-trying it on a backing-off timer as well as on the
/// wake-ups it registers itself. `attempt` always tries the socket directly first, so if a
/// readiness event is lost (or the executor parked past it, see
/// [`crate::runtime::keep_awake`]) a timer wake-up recovers within a millisecond. An idle
/// socket costs one timer wake-up per `RESCUE_MAX`.
async fn with_rescue<T>(
    mut attempt: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> io::Result<T> {
    let mut period = RESCUE_FIRST;
    let mut timer: Option<glommio::timer::Timer> = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(r) = attempt(cx) {
            return Poll::Ready(r);
        }
        let t = timer.get_or_insert_with(|| glommio::timer::Timer::new(period));
        if Pin::new(t).poll(cx).is_ready() {
            timer = None;
            period = (period * 2).min(RESCUE_MAX);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// A non-blocking `send`: `None` when the socket cannot take more now.
fn send_now(fd: std::os::fd::RawFd, buf: &[u8]) -> Option<io::Result<usize>> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call, and `fd` is an
    // open socket owned by the stream borrowed by the caller.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
        _ => Some(Err(err)),
    }
}

/// A non-blocking `recv`: `None` when the socket has nothing to read now.
fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call, and
    // `fd` is an open socket owned by the stream borrowed by the caller.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock => None,
        io::ErrorKind::Interrupted => None,
        _ => Some(Err(err)),
    }
}

/// Writes all of `buf`.
///
/// Tries a non-blocking `send` first and only asks glommio to wait for writability when the
/// socket is full (with the same timer re-check as reads). glommio 0.9's `poll_write` drops,
/// and so cancels through the ring, any still-pending writability poll whenever a later send
/// succeeds; sending first keeps that churn of cancellations off the ring.
pub(crate) async fn write_all(stream: &RefCell<TcpStream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = with_rescue(|cx| {
            let fd = stream.borrow().as_raw_fd();
            if let Some(result) = send_now(fd, buf) {
                return Poll::Ready(result);
            }
            Pin::new(&mut *stream.borrow_mut()).poll_write(cx, buf)
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Makes the next `close` of this socket send a TCP RST instead of a FIN.
pub(crate) fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open (owned by `stream`, alive for this call), and `linger` is a
    // valid `struct linger` whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A wake-up flag for one waiting future on the same thread (no allocation, no atomics).
#[derive(Default)]
pub(crate) struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("set", &self.set.get())
            .finish()
    }
}

impl Notify {
    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until the flag is set, then clears it.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                let w = self.waker.take();
                match w {
                    Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
                    _ => self.waker.set(Some(cx.waker().clone())),
                }
                Poll::Pending
            }
        })
    }
}
