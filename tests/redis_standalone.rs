//! The lookup client against a real `redis-server` (run `scripts/ensure-redis` first; these
//! tests fail, never skip, without it).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{run, until, RedisServer};
use ringwait::dataset::value_of;
use ringwait::lookup::{
    get_cached, CacheConfig, CacheFill, Client, Connection, ConnectionConfig, LookupCache,
    LookupError, ReplyHandler, ReplyView,
};

type Outcome = Option<Result<Option<Vec<u8>>, LookupError>>;

/// Records the outcome of request `id`; a second call is recorded as a failure of the test.
struct Record {
    id: usize,
    out: Rc<RefCell<Vec<(u32, Outcome)>>>,
}

impl ReplyHandler for Record {
    fn on_reply(self, reply: Result<ReplyView<'_>, LookupError>) {
        let mut out = self.out.borrow_mut();
        let slot = &mut out[self.id];
        slot.0 += 1;
        slot.1 = Some(reply.map(|v| v.value().map(<[u8]>::to_vec)));
    }
}

fn records(n: usize) -> Rc<RefCell<Vec<(u32, Outcome)>>> {
    Rc::new(RefCell::new(vec![(0, None); n]))
}

fn resolved(out: &RefCell<Vec<(u32, Outcome)>>) -> usize {
    out.borrow().iter().filter(|(calls, _)| *calls > 0).count()
}

fn expected(i: u64, keys: u64) -> Option<Vec<u8>> {
    (i < keys).then(|| value_of(i).to_vec())
}

#[test]
fn get_mget_hget_hgetall_return_stored_values_and_nil_for_misses() {
    let redis = RedisServer::start();
    redis.populate(100);
    let addr = redis.addr();
    run(move || async move {
        let c = Client::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        assert_eq!(c.get(b"k:5").await.unwrap(), expected(5, 100));
        assert_eq!(c.get(b"k:500").await.unwrap(), None);
        assert_eq!(
            c.mget(&[b"k:0", b"k:500", b"k:99"]).await.unwrap(),
            vec![expected(0, 100), None, expected(99, 100)]
        );
        assert_eq!(c.hget(b"h:3", b"id").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(c.hget(b"h:3", b"nope").await.unwrap(), None);
        assert_eq!(c.hget(b"h:300", b"id").await.unwrap(), None);
        let mut all = c.hgetall(b"h:3").await.unwrap();
        all.sort();
        assert_eq!(
            all,
            vec![
                (b"id".to_vec(), b"3".to_vec()),
                (b"v".to_vec(), value_of(3).to_vec())
            ]
        );
        assert!(c.hgetall(b"h:300").await.unwrap().is_empty());
        let wrong = c.get(b"h:3").await.expect_err("GET of a hash");
        assert!(
            matches!(&wrong, LookupError::ServerError { message, .. } if message.starts_with("WRONGTYPE"))
        );
        assert_eq!(
            c.get(b"k:6").await.unwrap(),
            expected(6, 100),
            "one error reply fails one request"
        );
    });
}

/// Submits `n` GETs in one tick, waits for all, and checks each outcome.
async fn all_in_one_tick(
    conn: &Connection<Record>,
    n: usize,
    keys: u64,
    key_of: impl Fn(usize) -> u64,
) {
    let out = records(n);
    for id in 0..n {
        let key = format!("k:{}", key_of(id));
        let h = Record {
            id,
            out: out.clone(),
        };
        conn.get(key.as_bytes(), h).map_err(|r| r.error).unwrap();
    }
    until("all replies", || resolved(&out) == n).await;
    for (id, (calls, outcome)) in out.borrow().iter().enumerate() {
        assert_eq!(*calls, 1, "request {id} answered {calls} times");
        let got = outcome
            .clone()
            .unwrap()
            .unwrap_or_else(|e| panic!("request {id}: {e}"));
        assert_eq!(got, expected(key_of(id), keys), "request {id}");
    }
}

#[test]
fn hundred_thousand_pipelined_gets_reach_the_right_handlers() {
    let redis = RedisServer::start();
    redis.populate(20_000);
    let addr = redis.addr();
    run(move || async move {
        let conn = Connection::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        all_in_one_tick(&conn, 100_000, 20_000, |i| (i as u64 * 7919) % 25_000).await;
        assert_eq!(conn.pending(), 0);
    });
}

#[test]
fn mget_batching_and_coalescing_match_plain_gets() {
    let redis = RedisServer::start();
    redis.populate(1000);
    let addr = redis.addr();
    run(move || async move {
        for (mget_batching, coalescing) in [(true, false), (false, true), (true, true)] {
            let config = ConnectionConfig {
                mget_batching,
                coalescing,
                ..ConnectionConfig::default()
            };
            let conn = Connection::connect(addr, config).await.unwrap();
            all_in_one_tick(&conn, 20_000, 1000, |i| (i as u64 * 13) % 1200).await;
            assert!(
                conn.stats().replies < 20_000,
                "nothing was batched or coalesced"
            );
        }
    });
}

type Boxed = Box<dyn FnOnce(Result<ReplyView<'_>, LookupError>)>;

#[test]
fn cache_hits_misses_and_ttl_against_redis() {
    let redis = RedisServer::start();
    redis.populate(10);
    let addr = redis.addr();
    run(move || async move {
        let conn: Connection<CacheFill<Boxed>> =
            Connection::connect(addr, ConnectionConfig::default())
                .await
                .unwrap();
        let admin = Client::connect(addr, ConnectionConfig::default())
            .await
            .unwrap();
        let cache = Rc::new(RefCell::new(LookupCache::new(CacheConfig {
            capacity: 4,
            ttl: Duration::from_secs(2),
            miss_ttl: None,
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
        lookup(b"k:77", t0);
        until("replies", || seen.borrow().len() == 2).await;
        admin.command(&[b"SET", b"k:1", b"new"]).await.unwrap();
        admin
            .command(&[b"SET", b"k:77", b"now here"])
            .await
            .unwrap();
        lookup(b"k:1", t0 + Duration::from_secs(1)); // hit: old value
        lookup(b"k:77", t0 + Duration::from_secs(1)); // misses are not cached: asks redis
        lookup(b"k:1", t0 + Duration::from_secs(2)); // expired: asks redis
        until("replies", || seen.borrow().len() == 5).await;
        let seen = seen.borrow();
        assert_eq!(seen[0], expected(1, 10));
        assert_eq!(seen[1], None);
        assert_eq!(seen[2], expected(1, 10));
        assert_eq!(seen[3], Some(b"now here".to_vec()));
        assert_eq!(seen[4], Some(b"new".to_vec()));
        let s = cache.borrow().stats();
        assert_eq!((s.hits, s.misses, s.expirations), (1, 4, 1));
    });
}

#[test]
fn killing_redis_mid_stream_fails_every_pending_handler_then_reconnects() {
    const WAVES: usize = 20;
    const PER_WAVE: usize = 5000;
    let redis = RedisServer::start();
    redis.populate(1000);
    let addr = redis.addr();
    let redis = Arc::new(Mutex::new(redis));
    let r2 = redis.clone();
    run(move || async move {
        let config = ConnectionConfig {
            backoff_max: Duration::from_millis(20),
            ..ConnectionConfig::default()
        };
        let conn = Connection::connect(addr, config).await.unwrap();
        let n = WAVES * PER_WAVE;
        let out = records(n);
        for wave in 0..WAVES {
            if wave == WAVES / 2 {
                // Some answers first (so both outcomes occur), then kill with more in flight.
                until("first answers", || resolved(&out) >= PER_WAVE).await;
                r2.lock().unwrap().kill();
            }
            for j in 0..PER_WAVE {
                let id = wave * PER_WAVE + j;
                let key = format!("k:{}", id % 1000);
                if let Err(rejected) = conn.get(
                    key.as_bytes(),
                    Record {
                        id,
                        out: out.clone(),
                    },
                ) {
                    rejected.fail();
                }
            }
            glommio::executor().yield_task_queue_now().await;
        }
        until("every handler called", || resolved(&out) == n).await;
        let (mut ok, mut failed) = (0, 0);
        for (id, (calls, outcome)) in out.borrow().iter().enumerate() {
            assert_eq!(*calls, 1, "request {id} answered {calls} times");
            match outcome.clone().unwrap() {
                Ok(v) => {
                    assert_eq!(v, expected((id % 1000) as u64, 1000));
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.is_connection_error(), "{e}");
                    assert!(e.to_string().contains(&addr.to_string()), "{e}");
                    failed += 1;
                }
            }
        }
        assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
        // Restart on the same port: the connection comes back by itself.
        r2.lock().unwrap().restart();
        r2.lock().unwrap().populate(10);
        let deadline = Instant::now() + common::redis::HANG;
        loop {
            conn.wait_up().await.unwrap();
            let out = records(1);
            if let Err(r) = conn.get(
                b"k:3",
                Record {
                    id: 0,
                    out: out.clone(),
                },
            ) {
                r.fail();
            }
            until("probe", || resolved(&out) == 1).await;
            if let Some(Ok(v)) = out.borrow()[0].1.clone() {
                assert_eq!(v, expected(3, 10));
                break;
            }
            assert!(Instant::now() < deadline, "no reconnection after restart");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(conn.stats().connects >= 2);
    });
    drop(redis);
}

#[test]
fn the_configured_database_is_selected_on_every_connect() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    common::redis::call(addr, &[b"SELECT", b"0"]).unwrap();
    common::redis::pipeline(
        addr,
        &[
            vec![b"SELECT".to_vec(), b"3".to_vec()],
            vec![b"SET".to_vec(), b"where".to_vec(), b"db3".to_vec()],
        ],
    );
    let url: ringwait::lookup::RedisUrl = format!("redis://{addr}/3").parse().unwrap();
    let redis = Arc::new(Mutex::new(redis));
    let r2 = redis.clone();
    run(move || async move {
        let config = ConnectionConfig {
            db: url.db,
            backoff_max: Duration::from_millis(20),
            ..ConnectionConfig::default()
        };
        let c = Client::connect(url.addr, config.clone()).await.unwrap();
        assert_eq!(c.get(b"where").await.unwrap(), Some(b"db3".to_vec()));
        let bad = ConnectionConfig { db: 99, ..config };
        let err = Client::connect(url.addr, bad)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, LookupError::Handshake { .. }), "{err}");
        // After a restart the new connection selects db 3 again (the key is gone with the
        // data, so write it through db 3 and read it back).
        r2.lock().unwrap().restart();
        common::redis::pipeline(
            addr,
            &[
                vec![b"SELECT".to_vec(), b"3".to_vec()],
                vec![b"SET".to_vec(), b"where".to_vec(), b"db3 again".to_vec()],
            ],
        );
        let deadline = Instant::now() + common::redis::HANG;
        loop {
            c.connection().wait_up().await.unwrap();
            match c.get(b"where").await {
                Ok(v) => {
                    assert_eq!(v, Some(b"db3 again".to_vec()));
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(redis);
}
