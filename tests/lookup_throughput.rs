//! Quick throughput check (not a benchmark, no timed assertion): one connection on one core,
//! deep pipelining, GETs of the SPEC's redis workload keys. Ignored by default; run with
//!
//! ```text
//! cargo test --release --test lookup_throughput -- --ignored --nocapture
//! RINGWAIT_REDIS=127.0.0.1:6379 cargo test --release --test lookup_throughput -- --ignored --nocapture
//! ```
//! Knobs: RINGWAIT_N (lookups, default 5,000,000), RINGWAIT_WINDOW (in flight, default 4096),
//! RINGWAIT_MGET=1 (MGET batching).

use std::cell::Cell;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use ringwait::lookup::{Connection, ConnectionConfig, LookupError, ReplyHandler, ReplyView};
use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};

/// The SPEC's key_of(i): SplitMix64 seeded with 42, mod 1,000,000.
fn key_of(i: u64) -> u64 {
    let mut z = 42u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1_000_000
}

#[derive(Default)]
struct Progress {
    done: Cell<u64>,
    bad: Cell<u64>,
    wake_at: Cell<u64>,
    waker: Cell<Option<Waker>>,
}

struct Count(Rc<Progress>);

impl ReplyHandler for Count {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let p = &self.0;
        if !matches!(reply, Ok(ReplyView::Bulk(v)) if v.len() == 64) {
            p.bad.set(p.bad.get() + 1);
        }
        let done = p.done.get() + 1;
        p.done.set(done);
        if done >= p.wake_at.get() {
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "throughput check: run in release with --ignored --nocapture"]
fn one_connection_sustains_deep_pipelining() {
    let n = env("RINGWAIT_N", 5_000_000);
    let window = env("RINGWAIT_WINDOW", 4096);
    let mget = env("RINGWAIT_MGET", 0) == 1;
    let (server, addr) = match std::env::var("RINGWAIT_REDIS") {
        Ok(a) => (None, a.parse().expect("RINGWAIT_REDIS=host:port")),
        Err(_) => {
            let s = BuiltinServer::start(ServerConfig {
                cpu: Some(1),
                ..ServerConfig::default()
            })
            .unwrap();
            let a = s.addr();
            (Some(s), a)
        }
    };
    let (elapsed, bad, writes) = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .io_memory(DEFAULT_IO_MEMORY)
        .spawn(move || async move {
            if std::env::var("RINGWAIT_NO_KEEP_AWAKE").is_err() {
                ringwait::runtime::keep_awake();
            }
            let config = ConnectionConfig {
                mget_batching: mget,
                max_batch: 256,
                ..ConnectionConfig::default()
            };
            let conn = Connection::connect(addr, config).await.unwrap();
            let p = Rc::new(Progress::default());
            let mut key = Vec::with_capacity(16);
            let start = Instant::now();
            let mut sent = 0u64;
            while p.done.get() < n {
                while sent < n && sent - p.done.get() < window {
                    key.clear();
                    std::io::Write::write_fmt(&mut key, format_args!("k:{}", key_of(sent)))
                        .unwrap();
                    conn.get(&key, Count(p.clone()))
                        .map_err(|r| r.error)
                        .unwrap();
                    sent += 1;
                }
                // Sleep until half the window came back (or all of it at the end).
                p.wake_at
                    .set((sent - window / 2).min(n).max(p.done.get() + 1));
                std::future::poll_fn(|cx| {
                    if p.done.get() >= p.wake_at.get() {
                        std::task::Poll::Ready(())
                    } else {
                        p.waker.set(Some(cx.waker().clone()));
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
            (start.elapsed(), p.bad.get(), conn.stats().writes)
        })
        .unwrap()
        .join()
        .unwrap();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "lookups={n} window={window} mget_batching={mget} store={} elapsed={:?} writes={writes} GET/s={:.0}",
        if server.is_some() { "builtin" } else { "redis" },
        elapsed,
        rate
    );
    assert_eq!(bad, 0, "wrong or failed replies");
}
