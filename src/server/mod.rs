//! The built-in lookup server: a subset of Redis (RESP2 over TCP) serving generated data,
//! with injectable latency and faults, on a glommio executor on its own thread.
//!
//! It is the embedded default store of the main job and the benchmarks, and the fault
//! injector of the reliability tests.
//!
//! * Data: see [`value_of`](crate::dataset::value_of) for the exact formula: `k:0 .. k:{N-1}`
//!   hold 64-byte values computed from the index, `h:i` are hashes with fields `id` and `v`.
//!   Nothing is preloaded; `SET` stores overrides.
//! * Commands: `PING`, `GET`, `MGET`, `HGET`, `HGETALL`, `EXISTS`, `DBSIZE`, `SET`,
//!   `SELECT 0`, `QUIT`; `CLUSTER ...` answers an error (no cluster support), as Redis does
//!   when cluster mode is off; `CONFIG`/`CLIENT` answer harmlessly for `redis-benchmark`.
//! * Pipelining: every complete command in the read buffer is executed and all the replies
//!   leave in one write.
//! * Faults: a [`FaultPlan`] (refuse, reset, black-hole, malformed, latency, flapping),
//!   changeable at run time from any thread with [`ServerHandle::set_faults`] (lock-free).
//!
//! ```
//! use ringwait::dataset::{value_of};
//! use ringwait::server::{BuiltinServer, ServerConfig};
//! use std::io::{Read, Write};
//!
//! let server = BuiltinServer::start(ServerConfig { keys: 100, ..ServerConfig::default() })?;
//! let mut s = std::net::TcpStream::connect(server.addr())?;
//! s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nk:5\r\n")?;
//! let mut reply = [0u8; 71];
//! s.read_exact(&mut reply)?;
//! assert_eq!(&reply[..5], b"$64\r\n");
//! assert_eq!(&reply[5..69], &value_of(5)[..]);
//! assert_eq!(server.stats().commands, 1);
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "cli")]
mod cli;
mod commands;
mod conn;
mod faults;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpStream;
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ReactorErrorKind};

#[cfg(feature = "cli")]
pub use cli::{parse_fault, parse_flap_ms, parse_latency_us, ServeArgs};
pub use commands::{GeneratedData, WrongType};
pub use faults::{Fault, FaultPlan, Flap, Latency};

use commands::Store;
use conn::ConnCtl;
use faults::FaultCell;

/// Locked memory given to each glommio executor started by this crate's server and tests.
/// glommio's default (10 MiB) exceeds common `ulimit -l` values (8 MiB).
pub const DEFAULT_IO_MEMORY: usize = 512 << 10;

/// How often the accept loop polls for connections, the shutdown flag and the fault plan.
const ACCEPT_POLL: Duration = Duration::from_millis(1);

/// Configuration of the built-in server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`ServerHandle::addr`]).
    /// Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Number of generated keys `k:0 .. k:{keys-1}` (and hashes `h:*`). Default 1,000,000.
    pub keys: u64,
    /// Whether the hashes `h:0 .. h:{keys-1}` exist. Default true.
    pub hashes: bool,
    /// The fault plan in force from the start. Default healthy.
    pub faults: FaultPlan,
    /// Locked memory for the executor's io_uring buffers. Default [`DEFAULT_IO_MEMORY`].
    pub io_memory: usize,
    /// Pin the server's thread to this CPU; `None` (default) leaves it unbound.
    pub cpu: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: 1_000_000,
            hashes: true,
            faults: FaultPlan::healthy(),
            io_memory: DEFAULT_IO_MEMORY,
            cpu: None,
        }
    }
}

/// Why the server could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The locked-memory limit (`ulimit -l`) is below what glommio needs.
    #[error(
        "the locked-memory limit (ulimit -l) is {limit} bytes but the io_uring executor needs \
         at least {needed}: raise it (ulimit -l, LimitMEMLOCK= in systemd, --ulimit memlock= \
         in docker)"
    )]
    MemLock {
        /// The current limit in bytes.
        limit: u64,
        /// The minimum glommio needs.
        needed: u64,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The executor thread could not be created or ended abnormally.
    #[error("the server's executor failed: {0}")]
    Executor(String),
}

impl From<GlommioError<()>> for ServerError {
    fn from(e: GlommioError<()>) -> Self {
        match e {
            GlommioError::ReactorError(ReactorErrorKind::MemLockLimit(limit, needed)) => {
                ServerError::MemLock { limit, needed }
            }
            // The executor thread reports it wrapped in an I/O error: "MemLockLimit(a/b)".
            other => {
                let text = other.to_string();
                parse_memlock(&text).unwrap_or(ServerError::Executor(text))
            }
        }
    }
}

/// Recognizes glommio's `MemLockLimit(limit/needed)` inside an error message.
fn parse_memlock(text: &str) -> Option<ServerError> {
    let rest = &text[text.find("MemLockLimit(")? + "MemLockLimit(".len()..];
    let (limit, rest) = rest.split_once('/')?;
    let needed = rest.split(')').next()?;
    Some(ServerError::MemLock {
        limit: limit.trim().parse().ok()?,
        needed: needed.trim().parse().ok()?,
    })
}

/// glommio's minimum locked memory per executor.
pub const MIN_MEMLOCK: u64 = 512 << 10;

/// Fails with [`ServerError::MemLock`] if `RLIMIT_MEMLOCK` is below what glommio needs, so
/// callers get the actionable message before any thread starts.
pub fn check_memlock() -> Result<(), ServerError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // Unknown: let glommio decide.
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < MIN_MEMLOCK {
        return Err(ServerError::MemLock {
            limit: limit.rlim_cur,
            needed: MIN_MEMLOCK,
        });
    }
    Ok(())
}

/// Counters of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Connections accepted since start.
    pub connections: u64,
    /// Connections currently open.
    pub open_connections: u64,
    /// Commands executed since start (also those whose reply a fault then spoiled).
    pub commands: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    commands: AtomicU64,
}

/// State shared between the server thread and its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    faults: FaultCell,
    started: Instant,
    shutdown: AtomicBool,
    stats: Counters,
}

/// The built-in server (see the [module docs](self)).
#[derive(Debug)]
pub struct BuiltinServer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glommio_memlock_messages_become_typed_errors() {
        let e = parse_memlock("IO error occurred: MemLockLimit(65536/524288)");
        assert!(matches!(
            e,
            Some(ServerError::MemLock {
                limit: 65536,
                needed: 524288
            })
        ));
        assert!(parse_memlock("IO error occurred: something else").is_none());
    }
}

impl BuiltinServer {
    /// Starts the server on a new thread and returns once it listens.
    ///
    /// Errors: [`ServerError::Bind`] if the address is taken, [`ServerError::MemLock`] if
    /// the locked-memory limit is too low for glommio.
    pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        check_memlock()?;
        crate::runtime::register_membarrier();
        if config.keys > i64::MAX as u64 {
            return Err(ServerError::Config(format!(
                "keys = {} is too large (at most {})",
                config.keys,
                i64::MAX
            )));
        }
        let shared = Arc::new(Shared {
            faults: FaultCell::default(),
            started: Instant::now(),
            shutdown: AtomicBool::new(false),
            stats: Counters::default(),
        });
        shared.faults.set(config.faults, Duration::ZERO);
        let placement = config.cpu.map_or(Placement::Unbound, Placement::Fixed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let listen = config.listen;
        let store = (config.keys, config.hashes);
        let thread = LocalExecutorBuilder::new(placement)
            .name("ringwait-server")
            .io_memory(config.io_memory)
            .spawn(move || async move {
                crate::runtime::keep_awake();
                let listener = match self::listen(listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = listener.local_addr().unwrap_or(listen);
                let _ = tx.send(Ok(local));
                let store = Rc::new(Store::new(store.0, store.1));
                accept_loop(listener, local, store, thread_shared).await;
            })
            .map_err(ServerError::from)?;
        match rx.recv() {
            Ok(Ok(addr)) => Ok(ServerHandle {
                addr,
                shared,
                thread: Some(thread),
            }),
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(ServerError::Bind {
                    addr: listen,
                    source: std::io::Error::other(message),
                })
            }
            // The executor could not even start: its error comes out of `join`.
            Err(_) => Err(match thread.join() {
                Err(e) => ServerError::from(e),
                Ok(()) => ServerError::Executor("the server thread ended before listening".into()),
            }),
        }
    }
}

/// Runs the server in the foreground until the process ends (for `ringwait serve`).
///
/// Prints `listening on ADDR` to stderr once ready.
pub fn run_standalone(config: ServerConfig) -> Result<(), ServerError> {
    let handle = BuiltinServer::start(config)?;
    eprintln!("listening on {}", handle.addr());
    handle.wait()
}

/// A running server; dropping it shuts the server down and joins its thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault plan; takes effect for the next batch of commands and the next
    /// accept. A flapping cycle starts (healthy) now.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.faults.set(plan, self.shared.started.elapsed());
    }

    /// The fault plan in force.
    pub fn faults(&self) -> FaultPlan {
        self.shared.faults.plan()
    }

    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.stats;
        ServerStats {
            connections: c.accepted.load(Ordering::Relaxed),
            open_connections: c.open.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes every connection and joins the server thread.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop()
    }

    /// Blocks until the server thread ends (it ends only after a shutdown or a failure).
    pub fn wait(mut self) -> Result<(), ServerError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(ServerError::from),
            None => Ok(()),
        }
    }

    fn stop(&mut self) -> Result<(), ServerError> {
        self.shared.shutdown.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t.join().map_err(ServerError::from),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Binds a non-blocking std listener (accepts are polled, see [`accept_loop`]).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Hands an accepted socket to glommio.
fn to_glommio(stream: std::net::TcpStream) -> std::io::Result<TcpStream> {
    stream.set_nonblocking(true)?;
    let fd = stream.into_raw_fd();
    // SAFETY: `fd` is an open TCP socket just accepted and released by `into_raw_fd`, so
    // the new `TcpStream` is its only owner.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Accepts connections until shutdown; stops listening while the plan refuses.
///
/// Accepts are polled (non-blocking `accept`, then a short timer) rather than submitted to
/// io_uring: an io_uring accept raced against a timer can complete in the kernel while
/// being cancelled, which would leak an established connection nobody serves.
async fn accept_loop(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    store: Rc<Store>,
    shared: Arc<Shared>,
) {
    let mut listener = Some(listener);
    let conns: RefCell<Vec<Weak<ConnCtl>>> = RefCell::new(Vec::new());
    let kill_all = || {
        for c in conns.borrow_mut().drain(..) {
            if let Some(c) = c.upgrade() {
                c.kill.notify();
            }
        }
    };
    let mut seed = 0u64;
    while !shared.shutdown.load(Ordering::Acquire) {
        let refusing = shared.faults.active(shared.started.elapsed()).fault == Fault::Refuse;
        if refusing {
            if listener.take().is_some() {
                kill_all();
            }
            glommio::timer::sleep(ACCEPT_POLL).await;
            continue;
        }
        let Some(l) = listener.as_ref() else {
            listener = listen(addr).ok();
            if listener.is_none() {
                glommio::timer::sleep(ACCEPT_POLL).await;
            }
            continue;
        };
        let stream = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                glommio::timer::sleep(ACCEPT_POLL).await;
                continue;
            }
            Err(_) => {
                glommio::timer::sleep(ACCEPT_POLL).await;
                continue;
            }
        };
        let Ok(stream) = to_glommio(stream) else {
            continue;
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        shared.stats.open.fetch_add(1, Ordering::Relaxed);
        let ctl = Rc::new(ConnCtl::default());
        {
            let mut list = conns.borrow_mut();
            list.retain(|c| c.strong_count() > 0);
            list.push(Rc::downgrade(&ctl));
        }
        seed += 1;
        glommio::spawn_local(conn::serve(
            stream,
            store.clone(),
            shared.clone(),
            ctl,
            seed,
        ))
        .detach();
    }
    kill_all();
    // Let the killed connections run their exit path (closing sockets, counters).
    glommio::executor().yield_now().await;
}
