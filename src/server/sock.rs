//! Small socket helpers shared by the built-in server and the lookup client: reading and
//! writing a glommio `TcpStream` shared (through a `RefCell`, borrowed only inside one poll)
//! by a reader and a writer future of the same task, and a single-waiter wake-up flag.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Reads what is available (at least one byte, or 0 at end of stream) into `buf`.
pub(crate) async fn read_some(stream: &RefCell<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, buf)).await
}

/// Writes all of `buf`.
pub(crate) async fn write_all(stream: &RefCell<TcpStream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::future::poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, buf))
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
