//! The request path does not allocate per request: submitting GETs and dispatching their
//! replies to handlers allocates only per I/O batch (glommio's sources), not per request.
//! Counted on the client's thread with a counting global allocator (its own test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

use ringwait::lookup::{Connection, ConnectionConfig, LookupError, ReplyHandler, ReplyView};
use ringwait::server::{BuiltinServer, ServerConfig, DEFAULT_IO_MEMORY};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

struct Count(Rc<Cell<u64>>);

impl ReplyHandler for Count {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        assert!(matches!(reply, Ok(ReplyView::Bulk(v)) if v.len() == 64));
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn gets_and_their_replies_do_not_allocate_per_request() {
    const WINDOW: u64 = 2000;
    const ROUNDS: u64 = 20;
    let server = BuiltinServer::start(ServerConfig {
        keys: 10_000,
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.addr();
    for (mget_batching, coalescing) in [(false, false), (true, false), (false, true)] {
        let per_request = glommio::LocalExecutorBuilder::default()
            .io_memory(DEFAULT_IO_MEMORY)
            .spawn(move || async move {
                let config = ConnectionConfig {
                    initial_capacity: WINDOW as usize,
                    mget_batching,
                    coalescing,
                    ..ConnectionConfig::default()
                };
                let conn = Connection::connect(addr, config).await.unwrap();
                let done = Rc::new(Cell::new(0u64));
                let mut key = Vec::with_capacity(32);
                let mut measured = (0, 0);
                // Round 0 warms buffers up; the others are measured.
                for round in 0..=ROUNDS {
                    if round == 1 {
                        measured.0 = allocations();
                    }
                    for i in 0..WINDOW {
                        key.clear();
                        std::io::Write::write_fmt(
                            &mut key,
                            format_args!("k:{}", (round * WINDOW + i) % 10_000),
                        )
                        .unwrap();
                        conn.get(&key, Count(done.clone()))
                            .map_err(|r| r.error)
                            .unwrap();
                    }
                    let target = (round + 1) * WINDOW;
                    while done.get() < target {
                        glommio::executor().yield_task_queue_now().await;
                    }
                }
                measured.1 = allocations();
                (measured.1 - measured.0) as f64 / (ROUNDS * WINDOW) as f64
            })
            .unwrap()
            .join()
            .unwrap();
        println!("batching {mget_batching}, coalescing {coalescing}: allocations per request: {per_request:.4}");
        assert!(per_request < 0.05, "{per_request} allocations per request");
    }
}
