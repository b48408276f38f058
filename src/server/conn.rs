//! One client connection of the built-in server: read, execute every complete command in the
//! buffer, answer them all with one write (after the injected latency, if any).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpStream;

use super::commands::{After, Store};
use super::faults::{Fault, Latency, Rng};
use super::Shared;
use crate::net::read_buf::ReadBuf;
use crate::net::{read_some, set_linger_zero, write_all, Notify};
use crate::resp::{self, Frame, Limits, Parser};

/// Largest read buffer a connection may grow to (one command must fit in it).
const MAX_READ_BUFFER: usize = 64 << 20;
const INITIAL_BUFFER: usize = 64 << 10;

/// Replies that are not RESP2, used by [`Fault::Malformed`].
const GARBAGE: [&[u8]; 5] = [
    b"?garbage\r\n",
    b"$-5\r\n",
    b"*x\r\n",
    b":12ab\r\n",
    b"$3\r\nabcdef\r\n",
];

/// Lets the accept loop close a connection (on shutdown or when refusing).
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    pub kill: Notify,
}

/// Replies waiting for their injected latency, in order.
#[derive(Debug, Default)]
struct Delayed {
    queue: RefCell<VecDeque<(Instant, Vec<u8>)>>,
    spare: RefCell<Vec<Vec<u8>>>,
    writing: Cell<bool>,
    notify: Notify,
}

/// Serves one connection until the peer closes, an error, a fault or a kill.
pub(crate) async fn serve(
    stream: TcpStream,
    store: Rc<Store>,
    shared: Arc<Shared>,
    ctl: Rc<ConnCtl>,
    seed: u64,
) {
    let _ = stream.set_nodelay(true);
    let stream = RefCell::new(stream);
    let delayed = Delayed::default();
    let reader = read_loop(&stream, &store, &shared, &delayed, seed);
    let writer = delayed_writer(&stream, &delayed);
    futures_lite::future::or(futures_lite::future::or(reader, writer), ctl.kill.wait()).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
}

const BLACK_HOLE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

async fn read_loop(
    stream: &RefCell<TcpStream>,
    store: &Store,
    shared: &Shared,
    delayed: &Delayed,
    seed: u64,
) {
    let parser = Parser::new(Limits {
        max_bulk_len: 16 << 20,
        ..Limits::default()
    });
    let mut rb = ReadBuf::new(INITIAL_BUFFER, MAX_READ_BUFFER);
    let mut out = Vec::with_capacity(INITIAL_BUFFER);
    let mut rng = Rng::new(seed);
    loop {
        if !rb.make_room() {
            return;
        }
        match read_some(stream, rb.spare()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => rb.end += n,
        }
        let mut active = shared.faults.active(shared.started.elapsed());
        // A black hole is a stalled peer: nothing is answered while it lasts, and what was
        // asked stays asked. Once it clears, every pending command is answered in order, as
        // a real server behind a healed partition would (dropping them instead would shift
        // every later reply onto the wrong request).
        while active.fault == Fault::BlackHole {
            glommio::timer::sleep(BLACK_HOLE_POLL).await;
            active = shared.faults.active(shared.started.elapsed());
        }
        if active.fault == Fault::Refuse {
            return;
        }
        let (commands, close) = execute_all(&parser, store, &mut rb, &mut out);
        shared.stats.commands.fetch_add(commands, Ordering::Relaxed);
        match active.fault {
            Fault::Reset => {
                let half = out.len() / 2;
                let _ = write_all(stream, &out[..half]).await;
                let _ = set_linger_zero(&stream.borrow());
                return;
            }
            Fault::Malformed => {
                out.clear();
                for i in 0..commands.max(1) as usize {
                    out.extend_from_slice(GARBAGE[(i + rng.next_u64() as usize) % GARBAGE.len()]);
                }
            }
            _ => {}
        }
        if !out.is_empty()
            && deliver(stream, delayed, &mut out, active.latency, &mut rng)
                .await
                .is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}

/// Executes every complete command in `rb`; returns how many and whether to close after.
fn execute_all(parser: &Parser, store: &Store, rb: &mut ReadBuf, out: &mut Vec<u8>) -> (u64, bool) {
    let mut commands = 0;
    loop {
        // Fields, not `unparsed()`: the command borrows `buf` while `start` moves.
        match parser.parse(&rb.buf[rb.start..rb.end]) {
            Ok(Some((Frame::Array(cmd), used))) if !cmd.is_empty() => {
                rb.start += used;
                commands += 1;
                if store.execute(cmd, out) == After::Close {
                    return (commands, true);
                }
            }
            Ok(Some(_)) => {
                resp::write_error(
                    out,
                    b"ERR Protocol error: expected an array of bulk strings",
                );
                return (commands, true);
            }
            Ok(None) => return (commands, false),
            Err(e) => {
                resp::write_error(out, format!("ERR Protocol error: {e}").as_bytes());
                return (commands, true);
            }
        }
    }
}

/// Writes `out` now, or queues it for the delayed writer when latency is injected.
async fn deliver(
    stream: &RefCell<TcpStream>,
    delayed: &Delayed,
    out: &mut Vec<u8>,
    latency: Latency,
    rng: &mut Rng,
) -> std::io::Result<()> {
    let idle = delayed.queue.borrow().is_empty() && !delayed.writing.get();
    if latency == Latency::None && idle {
        let result = write_all(stream, out).await;
        out.clear();
        return result;
    }
    let due = Instant::now() + latency.sample(rng);
    let next = delayed.spare.borrow_mut().pop().unwrap_or_default();
    let chunk = std::mem::replace(out, next);
    delayed.queue.borrow_mut().push_back((due, chunk));
    delayed.notify.notify();
    Ok(())
}

/// Writes queued replies, in order, once each is due.
async fn delayed_writer(stream: &RefCell<TcpStream>, delayed: &Delayed) {
    let mut batch = Vec::new();
    loop {
        let front = delayed.queue.borrow().front().map(|(due, _)| *due);
        let Some(due) = front else {
            delayed.notify.wait().await;
            continue;
        };
        let now = Instant::now();
        if due > now {
            glommio::timer::sleep(due - now).await;
            continue;
        }
        while let Some((_, chunk)) = {
            let mut q = delayed.queue.borrow_mut();
            let ready = q.front().is_some_and(|(d, _)| *d <= now);
            if ready {
                q.pop_front()
            } else {
                None
            }
        } {
            batch.extend_from_slice(&chunk);
            let mut chunk = chunk;
            chunk.clear();
            delayed.spare.borrow_mut().push(chunk);
        }
        delayed.writing.set(true);
        let result = write_all(stream, &batch).await;
        delayed.writing.set(false);
        batch.clear();
        if result.is_err() {
            return;
        }
    }
}
