//! The lookup client against the built-in server: values, deep pipelining, batching,
//! coalescing, cache, and the fault matrix (every request resolved exactly once).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::redis::{run, until};
use ringwait::dataset::value_of;
use ringwait::lookup::{
    get_cached, CacheConfig, CacheFill, Client, Connection, ConnectionConfig, LookupCache,
    LookupError, ReplyHandler, ReplyView,
};
use ringwait::server::{
    BuiltinServer, Fault, FaultPlan, Flap, Latency, ServerConfig, ServerHandle,
};

fn server(keys: u64) -> ServerHandle {
    BuiltinServer::start(ServerConfig {
        keys,
        ..ServerConfig::default()
    })
    .expect("built-in server starts")
}

/// Outcomes of a set of requests, indexed by request number.
#[derive(Default)]
struct Ledger {
    calls: RefCell<Vec<u32>>,
    wrong: Cell<u64>,
    ok: Cell<u64>,
    errors: RefCell<Vec<LookupError>>,
}

impl Ledger {
    fn with(n: usize) -> Rc<Self> {
        let l = Ledger::default();
        l.calls.borrow_mut().resize(n, 0);
        Rc::new(l)
    }

    fn resolved(&self) -> usize {
        self.calls.borrow().iter().filter(|&&c| c > 0).count()
    }

    fn assert_each_resolved_once(&self) {
        let calls = self.calls.borrow();
        assert!(
            calls.iter().all(|&c| c == 1),
            "some handler ran {} times",
            calls.iter().max().unwrap()
        );
        assert_eq!(self.wrong.get(), 0, "wrong values delivered");
    }
}

/// Expects the generated value of key `k:i` (or nil when `i >= keys`).
struct Check {
    id: usize,
    key_index: u64,
    keys: u64,
    ledger: Rc<Ledger>,
}

impl ReplyHandler for Check {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        self.ledger.calls.borrow_mut()[self.id] += 1;
        match reply {
            Ok(v) => {
                let expected = (self.key_index < self.keys).then(|| value_of(self.key_index));
                if v.value() != expected.as_ref().map(|e| &e[..]) {
                    self.ledger.wrong.set(self.ledger.wrong.get() + 1);
                }
                self.ledger.ok.set(self.ledger.ok.get() + 1);
            }
            Err(e) => self.ledger.errors.borrow_mut().push(e),
        }
    }
}

#[test]
fn client_answers_get_mget_hget_hgetall_with_the_generated_values() {
    let server = server(100);
    let addr = server.addr();
    run(move || async move {
        let c = Client::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        assert_eq!(c.get(b"k:42").await.unwrap(), Some(value_of(42).to_vec()));
        assert_eq!(c.get(b"k:100").await.unwrap(), None);
        assert_eq!(
            c.mget(&[b"k:1", b"nope", b"k:99"]).await.unwrap(),
            vec![
                Some(value_of(1).to_vec()),
                None,
                Some(value_of(99).to_vec())
            ]
        );
        assert_eq!(
            c.hget(b"h:7", b"v").await.unwrap(),
            Some(value_of(7).to_vec())
        );
        assert_eq!(c.hget(b"h:7", b"missing").await.unwrap(), None);
        assert_eq!(
            c.hgetall(b"h:7").await.unwrap(),
            vec![
                (b"id".to_vec(), b"7".to_vec()),
                (b"v".to_vec(), value_of(7).to_vec())
            ]
        );
        assert!(c.hgetall(b"h:1000").await.unwrap().is_empty());
        // An error reply fails only its own request.
        assert!(matches!(
            c.get(b"h:1").await,
            Err(LookupError::ServerError { .. })
        ));
        assert_eq!(c.get(b"k:0").await.unwrap(), Some(value_of(0).to_vec()));
    });
}

/// Submits `n` GETs of keys `key_of(i)` in one tick and checks every reply.
async fn gets_in_one_tick(
    conn: &Connection<Check>,
    n: usize,
    keys: u64,
    key_of: impl Fn(usize) -> u64,
) -> Rc<Ledger> {
    let ledger = Ledger::with(n);
    for id in 0..n {
        let key_index = key_of(id);
        let key = format!("k:{key_index}");
        let h = Check {
            id,
            key_index,
            keys,
            ledger: ledger.clone(),
        };
        conn.get(key.as_bytes(), h)
            .map_err(|r| r.error)
            .expect("accepted");
    }
    until("all replies", || ledger.resolved() == n).await;
    ledger
}

#[test]
fn hundred_thousand_gets_in_flight_on_one_connection_each_reach_their_handler() {
    const N: usize = 100_000;
    let server = server(50_000);
    let addr = server.addr();
    let (ok, writes) = run(move || async move {
        let conn = Connection::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        let ledger = gets_in_one_tick(&conn, N, 50_000, |i| (i as u64 * 7919) % 60_000).await;
        ledger.assert_each_resolved_once();
        assert!(
            ledger.errors.borrow().is_empty(),
            "{:?}",
            ledger.errors.borrow().first()
        );
        (ledger.ok.get(), conn.stats().writes)
    });
    assert_eq!(ok, N as u64);
    assert!(
        writes < 10,
        "requests of one tick should leave in few writes, took {writes}"
    );
    assert_eq!(server.stats().commands, N as u64);
}

#[test]
fn mget_batching_and_coalescing_answer_like_plain_gets() {
    let server = server(1000);
    let addr = server.addr();
    let counts = run(move || async move {
        let mut counts = Vec::new();
        for (mget_batching, coalescing) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let config = ConnectionConfig {
                mget_batching,
                coalescing,
                ..ConnectionConfig::default()
            };
            let conn = Connection::connect(addr, config).await.unwrap();
            // Keys repeat (coalescing) and some are missing (nil elements).
            let ledger = gets_in_one_tick(&conn, 20_000, 1000, |i| (i as u64 * 31) % 1100).await;
            ledger.assert_each_resolved_once();
            assert!(ledger.errors.borrow().is_empty());
            counts.push(conn.stats().replies);
        }
        counts
    });
    let [plain, batched, coalesced, both] = counts[..] else {
        unreachable!()
    };
    assert_eq!(plain, 20_000);
    assert!(
        batched < plain / 10,
        "MGET batching sent {batched} commands"
    );
    assert!(coalesced < plain, "coalescing sent {coalesced} commands");
    assert!(both <= batched);
}

type Boxed = Box<dyn FnOnce(Result<ReplyView<'_>, LookupError>)>;

#[test]
fn cache_serves_hits_and_expires_after_its_ttl() {
    let server = server(100);
    let addr = server.addr();
    run(move || async move {
        let conn: Connection<CacheFill<Boxed>> =
            Connection::connect(addr, ConnectionConfig::default())
                .await
                .unwrap();
        let setter = Client::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        let cache = Rc::new(RefCell::new(LookupCache::new(CacheConfig {
            capacity: 16,
            ttl: Duration::from_secs(5),
            miss_ttl: Some(Duration::from_secs(1)),
        })));
        let seen: Rc<RefCell<Vec<Option<Vec<u8>>>>> = Rc::default();
        let lookup = |key: &'static [u8], now: Instant| {
            let seen = seen.clone();
            let h: Boxed = Box::new(move |r: Result<ReplyView<'_>, LookupError>| {
                seen.borrow_mut()
                    .push(r.unwrap().value().map(<[u8]>::to_vec));
            });
            get_cached(&conn, &cache, key, now, h).unwrap();
        };
        let t0 = Instant::now();
        lookup(b"k:1", t0);
        lookup(b"k:404", t0);
        until("two replies", || seen.borrow().len() == 2).await;
        setter.command(&[b"SET", b"k:1", b"changed"]).await.unwrap();
        setter
            .command(&[b"SET", b"k:404", b"exists now"])
            .await
            .unwrap();
        // Within the TTLs, both come from the cache (synchronously).
        lookup(b"k:1", t0 + Duration::from_millis(900));
        lookup(b"k:404", t0 + Duration::from_millis(900));
        assert_eq!(seen.borrow().len(), 4);
        assert_eq!(seen.borrow()[2], Some(value_of(1).to_vec()));
        assert_eq!(seen.borrow()[3], None);
        // After the miss TTL, the miss is asked again; after the value TTL, the value too.
        lookup(b"k:404", t0 + Duration::from_secs(1));
        lookup(b"k:1", t0 + Duration::from_secs(5));
        until("two more replies", || seen.borrow().len() == 6).await;
        assert_eq!(seen.borrow()[4], Some(b"exists now".to_vec()));
        assert_eq!(seen.borrow()[5], Some(b"changed".to_vec()));
        let s = cache.borrow().stats();
        assert_eq!((s.hits, s.miss_hits, s.expirations), (1, 1, 2));
    });
}

/// What each fault may produce as errors.
fn allowed(fault: Fault, e: &LookupError) -> bool {
    use LookupError::*;
    match fault {
        Fault::Refuse => matches!(e, Refused { .. } | Reset { .. } | Disconnected { .. }),
        Fault::Reset => matches!(e, Reset { .. } | Disconnected { .. } | Refused { .. }),
        Fault::BlackHole => matches!(e, NoResponse { .. }),
        Fault::Malformed => matches!(e, Malformed { .. } | Reset { .. } | Disconnected { .. }),
        Fault::None => false,
    }
}

/// Drives waves of requests through a fault, then heals the server and checks recovery.
fn fault_scenario(plan: FaultPlan, expect_errors: bool) {
    const KEYS: u64 = 1000;
    const WAVES: usize = 30;
    const PER_WAVE: usize = 50;
    let server = server(KEYS);
    let addr = server.addr();
    let control = std::sync::Arc::new(std::sync::Mutex::new(Some(server)));
    let c2 = control.clone();
    let set_faults = move |p: FaultPlan| c2.lock().unwrap().as_ref().unwrap().set_faults(p);
    let set = set_faults.clone();
    let (ok, errors) = run(move || async move {
        let config = ConnectionConfig {
            // Short only where the test needs it (escaping the black hole); elsewhere a
            // scheduling stall of a loaded machine must not look like a hung server.
            response_timeout: Some(if plan.fault == Fault::BlackHole {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            }),
            connect_timeout: Duration::from_millis(500),
            backoff_max: Duration::from_millis(50),
            ..ConnectionConfig::default()
        };
        let conn: Connection<Check> = Connection::connect(addr, config).await.unwrap();
        let n = WAVES * PER_WAVE;
        let ledger = Ledger::with(n);
        set(plan);
        for wave in 0..WAVES {
            for j in 0..PER_WAVE {
                let id = wave * PER_WAVE + j;
                let key_index = id as u64 % (KEYS + 10);
                let h = Check {
                    id,
                    key_index,
                    keys: KEYS,
                    ledger: ledger.clone(),
                };
                // A rejected request (connection down) is resolved with its error.
                if let Err(rejected) = conn.get(format!("k:{key_index}").as_bytes(), h) {
                    rejected.fail();
                }
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        until("every request resolved", || ledger.resolved() == n).await;
        ledger.assert_each_resolved_once();
        for e in ledger.errors.borrow().iter() {
            let flapping_ok = plan.flap.is_some() && allowed(Fault::Reset, e);
            assert!(
                allowed(plan.fault, e) || flapping_ok,
                "{:?}: unexpected error {e}",
                plan.fault
            );
        }
        // Heal and recover.
        set(FaultPlan::healthy());
        let deadline = Instant::now() + common::redis::HANG;
        loop {
            let _ = conn.wait_up().await;
            let probe = Ledger::with(1);
            let h = Check {
                id: 0,
                key_index: 5,
                keys: KEYS,
                ledger: probe.clone(),
            };
            if let Err(r) = conn.get(b"k:5", h) {
                r.fail();
            }
            until("probe", || probe.resolved() == 1).await;
            if probe.ok.get() == 1 && probe.wrong.get() == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery after {:?}", plan);
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let error_count = ledger.errors.borrow().len();
        (ledger.ok.get(), error_count)
    });
    assert_eq!(
        ok as usize + errors,
        WAVES * PER_WAVE,
        "handlers invoked == requests made"
    );
    if expect_errors {
        assert!(errors > 0, "{plan:?} produced no error");
    } else {
        assert_eq!(errors, 0, "{plan:?} produced errors");
    }
    drop(set_faults);
    drop(control);
}

#[test]
fn refused_connections_fail_requests_then_recover() {
    fault_scenario(FaultPlan::only(Fault::Refuse), true);
}

#[test]
fn reset_mid_reply_fails_pending_requests_then_recovers() {
    fault_scenario(FaultPlan::only(Fault::Reset), true);
}

#[test]
fn black_hole_is_escaped_by_the_response_timeout() {
    fault_scenario(FaultPlan::only(Fault::BlackHole), true);
}

#[test]
fn malformed_replies_poison_the_connection_then_recover() {
    fault_scenario(FaultPlan::only(Fault::Malformed), true);
}

#[test]
fn slow_replies_all_arrive_correct() {
    fault_scenario(
        FaultPlan {
            fault: Fault::None,
            latency: Latency::Uniform {
                min: Duration::from_micros(100),
                max: Duration::from_millis(20),
            },
            flap: None,
        },
        false,
    );
}

#[test]
fn flapping_resets_lose_nothing() {
    fault_scenario(
        FaultPlan {
            fault: Fault::Reset,
            latency: Latency::None,
            flap: Some(Flap {
                healthy: Duration::from_millis(30),
                faulty: Duration::from_millis(15),
            }),
        },
        true,
    );
}

#[test]
fn dropping_the_last_handle_fails_pending_requests_with_closed() {
    let server = server(10);
    server.set_faults(FaultPlan::only(Fault::BlackHole));
    let addr = server.addr();
    let errors = run(move || async move {
        let conn: Connection<Check> = Connection::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        let ledger = Ledger::with(100);
        for id in 0..100 {
            let h = Check {
                id,
                key_index: 1,
                keys: 10,
                ledger: ledger.clone(),
            };
            conn.get(b"k:1", h).map_err(|r| r.error).unwrap();
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(ledger.resolved(), 0, "a black hole answered");
        drop(conn);
        until("closed handlers", || ledger.resolved() == 100).await;
        ledger.assert_each_resolved_once();
        let errors = ledger.errors.borrow().clone();
        errors
    });
    assert_eq!(errors.len(), 100);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, LookupError::Closed { .. })),
        "{:?}",
        errors[0]
    );
}
