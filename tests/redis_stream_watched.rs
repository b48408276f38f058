//! The watched commit against a real redis-server: a batch read fresh goes as `WATCH`, the
//! guard script, `MULTI`, `XACK`, `XADD`s, `EXEC`; a batch the guard refuses (a claim ran
//! since the read), every batch behind it, and every batch sent again after a lost
//! connection go as the commit script. Either way each entry gets one output, in order.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{call, pipeline, RedisServer};
use ringwait::connect::redis_stream::{
    guard_key, BlockingConn, CommitBatch, CommitCounts, CommitMode, CommitPipeline, CommitRecord,
    CommitTarget, EncodedBatch, Kind, StreamConnError,
};
use ringwait::resp::OwnedFrame;

const FENCE: &[u8] = b"{in}:ringwait-claims:g";

/// A redis-server with `n` entries in `in`, all read (pending) by consumer `c` of group `g`;
/// their ids.
fn server_with_pending(n: usize) -> (RedisServer, Vec<Vec<u8>>) {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let commands: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|i| {
            let data = format!("record {i}").into_bytes();
            vec![
                b"XADD".to_vec(),
                b"in".to_vec(),
                b"*".to_vec(),
                b"data".to_vec(),
                data,
            ]
        })
        .collect();
    let ids = pipeline(addr, &commands)
        .into_iter()
        .map(|r| match r {
            OwnedFrame::Bulk(id) => id,
            r => panic!("{r:?}"),
        })
        .collect();
    call(addr, &[b"XGROUP", b"CREATE", b"in", b"g", b"0"]).unwrap();
    let count = n.to_string();
    let read: &[&[u8]] = &[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c",
        b"COUNT",
        count.as_bytes(),
        b"STREAMS",
        b"in",
        b">",
    ];
    call(addr, read).unwrap();
    (redis, ids)
}

fn target(side: Option<&str>, maxlen: Option<u64>) -> CommitTarget {
    CommitTarget {
        output: "out".into(),
        side: side.map(str::to_string),
        maxlen,
        inputs: vec!["in".into()],
        group: "g".into(),
        consumer: "c".into(),
        mode: CommitMode::Ack,
    }
}

/// A batch of outputs `out <id>` for `ids`, read fresh at `fence` (`None`: not fresh).
fn batch(t: &CommitTarget, ids: &[Vec<u8>], fence: Option<u64>) -> EncodedBatch {
    let mut b = CommitBatch::default();
    for id in ids {
        let data = [b"out ", &id[..]].concat();
        let record = CommitRecord {
            stream: 0,
            id,
            kind: Kind::Data,
            data: &data,
            error: "",
            fence,
        };
        b.add(t, record);
    }
    b.take(t)
}

fn connect(addr: SocketAddr) -> BlockingConn {
    let url = format!("redis://{addr}").parse().unwrap();
    BlockingConn::open(&url, Duration::from_secs(2)).unwrap()
}

fn pipeline_of(t: &CommitTarget, conn: &mut BlockingConn) -> CommitPipeline {
    let guard = guard_key(&t.inputs, &t.group, &t.consumer);
    let p = CommitPipeline::open(conn, Some(guard)).unwrap();
    assert!(p.watching());
    p
}

/// A server with entries pending, the plain target (one input, no side stream, no `MAXLEN`),
/// a connection to the server and a pipeline on it.
struct Fixture {
    redis: RedisServer,
    ids: Vec<Vec<u8>>,
    t: CommitTarget,
    conn: BlockingConn,
    p: CommitPipeline,
}

/// A [`Fixture`] with `n` entries pending for consumer `c`.
fn pipelined(n: usize) -> Fixture {
    let (redis, ids) = server_with_pending(n);
    let t = target(None, None);
    let mut conn = connect(redis.addr());
    let p = pipeline_of(&t, &mut conn);
    Fixture {
        redis,
        ids,
        t,
        conn,
        p,
    }
}

fn counts(c: u64, d: u64, u: u64) -> CommitCounts {
    CommitCounts {
        committed: c,
        duplicates: d,
        unverified: u,
    }
}

/// The output's entries: each one's field names and values, in order.
fn outputs(addr: SocketAddr, key: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let OwnedFrame::Array(entries) = call(addr, &[b"XRANGE", key, b"-", b"+"]).unwrap() else {
        panic!("XRANGE")
    };
    entries
        .into_iter()
        .map(|e| {
            let OwnedFrame::Array(mut parts) = e else {
                panic!("entry")
            };
            let OwnedFrame::Array(fields) = parts.remove(1) else {
                panic!("fields")
            };
            fields
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::Bulk(b) => b,
                    f => panic!("{f:?}"),
                })
                .collect()
        })
        .collect()
}

/// The `src` of each output entry, in order.
fn sources(addr: SocketAddr) -> Vec<Vec<u8>> {
    outputs(addr, b"out")
        .into_iter()
        .map(|fields| {
            let at = fields.iter().position(|f| f == b"src").expect("src");
            fields[at + 1].clone()
        })
        .collect()
}

/// `calls=` of `command` in `INFO commandstats` (0 when it never ran).
fn calls(addr: SocketAddr, command: &str) -> u64 {
    let OwnedFrame::Bulk(stats) = call(addr, &[b"INFO", b"commandstats"]).unwrap() else {
        panic!("INFO")
    };
    let stats = String::from_utf8(stats).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn pending(addr: SocketAddr) -> i64 {
    let OwnedFrame::Array(summary) = call(addr, &[b"XPENDING", b"in", b"g"]).unwrap() else {
        panic!("XPENDING")
    };
    match summary[0] {
        OwnedFrame::Integer(n) => n,
        _ => panic!("count"),
    }
}

/// Both forms write the same entries: output `{data, src}`, error entry `{error, src,
/// data}` on the side stream, nothing for a skipped record; and both acknowledge.
#[test]
fn a_batch_read_fresh_commits_as_one_transaction_with_the_scripts_entries() {
    let (redis, ids) = server_with_pending(6);
    let addr = redis.addr();
    let t = target(Some("errors"), Some(1000));
    let encode = |ids: &[Vec<u8>], fence: Option<u64>| {
        let mut b = CommitBatch::default();
        for (kind, id) in [Kind::Data, Kind::Error, Kind::Skip].into_iter().zip(ids) {
            let record = CommitRecord {
                stream: 0,
                id,
                kind,
                data: b"payload",
                error: "why",
                fence,
            };
            b.add(&t, record);
        }
        b.take(&t)
    };
    let watched = encode(&ids[..3], Some(0));
    let scripted = encode(&ids[3..], None);
    assert!(watched.watched.is_some() && scripted.watched.is_none());
    let mut conn = connect(addr);
    let mut p = pipeline_of(&t, &mut conn);
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    p.send(&mut conn, watched).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(3, 0, 0));
    assert_eq!(calls(addr, "exec"), 1, "one transaction");
    assert_eq!(calls(addr, "eval"), 1, "the guard's script only");
    p.send(&mut conn, scripted).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(3, 0, 0));
    assert_eq!(calls(addr, "exec"), 1, "the script, not a transaction");
    assert_eq!(pending(addr), 0, "all acknowledged");
    let out = outputs(addr, b"out");
    let errors = outputs(addr, b"errors");
    assert_eq!(out.len(), 2, "one output per batch, nothing for the skip");
    assert_eq!(
        out[0],
        vec![
            b"data".to_vec(),
            b"payload".to_vec(),
            b"src".to_vec(),
            ids[0].clone()
        ]
    );
    assert_eq!(
        out[1],
        vec![
            b"data".to_vec(),
            b"payload".to_vec(),
            b"src".to_vec(),
            ids[3].clone()
        ]
    );
    assert_eq!(errors.len(), 2);
    for (entry, id) in errors.iter().zip([&ids[1], &ids[4]]) {
        let expected: Vec<Vec<u8>> = vec![
            b"error".to_vec(),
            b"why".to_vec(),
            b"src".to_vec(),
            id.clone(),
            b"data".to_vec(),
            b"payload".to_vec(),
        ];
        assert_eq!(entry, &expected);
    }
}

/// A claim between the read and the commit: the guard refuses the batch, and, since it is
/// then set, every watched batch behind it (also one read after the claim). All go again as
/// the script, in their order: the entry the claimer committed is not written twice, and the
/// outputs keep the order of the batches.
#[test]
fn a_claim_after_the_read_sends_that_batch_and_those_behind_it_through_the_script_in_order() {
    let Fixture {
        redis,
        ids,
        t,
        mut conn,
        mut p,
    } = pipelined(30);
    let addr = redis.addr();
    let b1 = batch(&t, &ids[..10], Some(0));
    let b2 = batch(&t, &ids[10..20], Some(0));
    // The claimer: the fence moves, and it commits entry 5.
    call(addr, &[b"INCR", FENCE]).unwrap();
    call(
        addr,
        &[b"XADD", b"out", b"*", b"data", b"claimed", b"src", &ids[5]],
    )
    .unwrap();
    call(addr, &[b"XACK", b"in", b"g", &ids[5]]).unwrap();
    let b3 = batch(&t, &ids[20..], Some(1));
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    for b in [b1, b2, b3] {
        p.send(&mut conn, b).unwrap();
    }
    let got: Vec<CommitCounts> = (0..3)
        .map(|_| p.receive(&mut conn).unwrap().counts)
        .collect();
    assert_eq!(
        got,
        vec![counts(9, 1, 0), counts(10, 0, 0), counts(10, 0, 0)]
    );
    assert_eq!(
        calls(addr, "eval"),
        6,
        "three guards refused, three scripts"
    );
    let expected: Vec<Vec<u8>> = std::iter::once(ids[5].clone())
        .chain(
            ids.iter()
                .enumerate()
                .filter(|(i, _)| *i != 5)
                .map(|(_, id)| id.clone()),
        )
        .collect();
    assert_eq!(
        sources(addr),
        expected,
        "one output each, in the batches' order"
    );
    // The next batch read fresh goes watched again.
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    let add: Vec<Vec<u8>> = [&b"XADD"[..], b"in", b"*", b"data", b"x"]
        .map(<[u8]>::to_vec)
        .to_vec();
    let more = match &pipeline(addr, &[add])[0] {
        OwnedFrame::Bulk(id) => vec![id.clone()],
        r => panic!("{r:?}"),
    };
    call(
        addr,
        &[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"in", b">"],
    )
    .unwrap();
    p.send(&mut conn, batch(&t, &more, Some(1))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(1, 0, 0));
    assert_eq!(calls(addr, "eval"), 1, "the guard only: committed watched");
}

/// A process killed after its guard was set leaves it behind; the next pipeline under the
/// same consumer name sets it to its own token before its first watched batch, which then
/// commits as one.
#[test]
fn a_guard_left_by_a_dead_process_is_cleared_before_the_first_watched_batch() {
    let (redis, ids) = server_with_pending(10);
    let addr = redis.addr();
    let t = target(None, None);
    let guard = guard_key(&t.inputs, &t.group, &t.consumer);
    call(addr, &[b"SET", guard.as_bytes(), b"1"]).unwrap();
    let mut conn = connect(addr);
    let mut p = pipeline_of(&t, &mut conn);
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    p.send(&mut conn, batch(&t, &ids, Some(0))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    assert_eq!(calls(addr, "eval"), 1, "committed watched, not refused");
    assert_eq!(sources(addr), ids);
}

/// A watched batch whose reply was lost is sent again as the script on a new connection,
/// while the old connection still carries it out late: its guard ran before the resend and
/// its `EXEC` comes after. The resend's new token aborts that `EXEC`: one output each.
#[test]
fn a_watched_batch_the_old_connection_carries_out_late_adds_nothing_after_a_resend() {
    let Fixture {
        redis,
        ids,
        t,
        mut conn,
        mut p,
    } = pipelined(10);
    let addr = redis.addr();
    // The pipeline's first send goes to another server (as good as lost), so that the test
    // can play the old connection's part by hand against the real one.
    let elsewhere = RedisServer::start();
    let guard = guard_key(&t.inputs, &t.group, &t.consumer);
    let token = match call(addr, &[b"GET", guard.as_bytes()]).unwrap() {
        OwnedFrame::Bulk(t) => t,
        r => panic!("{r:?}"),
    };
    let b = batch(&t, &ids, Some(0));
    let late = b.watched.clone().expect("watched");
    let mut lost = connect(elsewhere.addr());
    p.send(&mut lost, b).unwrap();

    // The old connection: WATCH and the guard (which passes), then nothing yet.
    let mut old = connect(addr);
    old.send_command(&[b"WATCH", late.fence.as_bytes(), guard.as_bytes()])
        .unwrap();
    let mut eval = Vec::new();
    ringwait::resp::write_array_header(&mut eval, 1 + late.check_args + 1);
    ringwait::resp::write_bulk(&mut eval, b"EVAL");
    eval.extend_from_slice(&late.check);
    ringwait::resp::write_bulk(&mut eval, &token);
    old.send(&eval).unwrap();
    old.reply(|_| Ok(())).unwrap();
    assert_eq!(
        old.reply(|f| Ok(OwnedFrame::from(f))).unwrap(),
        OwnedFrame::Integer(1)
    );

    p.resend(&mut conn).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));

    // The old connection's transaction arrives: aborted by the new token.
    old.send_command(&[b"MULTI"]).unwrap();
    old.send(&late.body).unwrap();
    old.send_command(&[b"SET", guard.as_bytes(), b"late"])
        .unwrap();
    old.send_command(&[b"EXEC"]).unwrap();
    for _ in 0..late.acks + late.adds + 2 {
        old.reply(|_| Ok(())).unwrap();
    }
    assert_eq!(
        old.reply(|f| Ok(OwnedFrame::from(f))).unwrap(),
        OwnedFrame::NilArray,
        "the late EXEC is aborted"
    );
    assert_eq!(sources(addr), ids, "one output each");
}

/// A batch that must go as the script (here, entries not read fresh) sent behind watched
/// batches in flight, the first of which is refused: it waits for them, so the outputs keep
/// the order the batches were sent in.
#[test]
fn a_script_batch_behind_watched_ones_commits_in_its_turn() {
    let Fixture {
        redis,
        ids,
        t,
        mut conn,
        mut p,
    } = pipelined(30);
    let addr = redis.addr();
    let b1 = batch(&t, &ids[..10], Some(0));
    call(addr, &[b"INCR", FENCE]).unwrap();
    let b2 = batch(&t, &ids[10..20], None);
    let b3 = batch(&t, &ids[20..], Some(1));
    for b in [b1, b2, b3] {
        p.send(&mut conn, b).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    }
    assert_eq!(sources(addr), ids, "in the order sent");
}

/// The chain: a watched batch expects the token its predecessor's transaction left in the
/// guard. When it is not there (the predecessor's `EXEC` was aborted, or another process
/// under the same consumer name reset the guard), the batch is refused and goes again as
/// the script: one output each, and the pipeline goes on watched after.
#[test]
fn a_watched_batch_whose_predecessor_left_no_token_is_refused() {
    let Fixture {
        redis,
        ids,
        t,
        mut conn,
        mut p,
    } = pipelined(30);
    let addr = redis.addr();
    p.send(&mut conn, batch(&t, &ids[..10], Some(0))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    let guard = guard_key(&t.inputs, &t.group, &t.consumer);
    call(addr, &[b"SET", guard.as_bytes(), b"someone else's"]).unwrap();
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    p.send(&mut conn, batch(&t, &ids[10..20], Some(0))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    assert_eq!(calls(addr, "eval"), 2, "refused, then the script");
    p.send(&mut conn, batch(&t, &ids[20..], Some(0))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    assert_eq!(calls(addr, "eval"), 3, "watched again");
    assert_eq!(sources(addr), ids);
}

/// A key of the wrong type, or a missing group: the guard stops the batch with the server's
/// error, before anything of it is done.
#[test]
fn a_wrong_key_or_a_missing_group_stops_a_watched_batch_with_nothing_done() {
    let (redis, ids) = server_with_pending(10);
    let addr = redis.addr();
    let t = target(None, None);
    call(addr, &[b"SET", b"out", b"not a stream"]).unwrap();
    let message = server_error(&t, addr, batch(&t, &ids, Some(0)));
    assert!(message.starts_with("WRONGTYPE"), "{message}");
    assert_eq!(pending(addr), 10, "nothing acknowledged");

    call(addr, &[b"DEL", b"out"]).unwrap();
    call(addr, &[b"XGROUP", b"DESTROY", b"in", b"g"]).unwrap();
    let message = server_error(&t, addr, batch(&t, &ids, Some(0)));
    assert!(message.contains("NOGROUP"), "{message}");
    assert_eq!(
        call(addr, &[b"EXISTS", b"out"]).unwrap(),
        OwnedFrame::Integer(0),
        "no output added"
    );
}

/// Commits `b` through a new pipeline; the server's error it must end with.
fn server_error(t: &CommitTarget, addr: SocketAddr, b: EncodedBatch) -> String {
    let mut conn = connect(addr);
    let mut p = pipeline_of(t, &mut conn);
    p.send(&mut conn, b).unwrap();
    match p.receive(&mut conn) {
        Err(StreamConnError::Server { message, .. }) => message,
        other => panic!("{other:?}"),
    }
}

/// A server whose ACL refuses the transaction's commands: the pipeline finds out when it
/// opens and commits every batch with the script instead, exactly once all the same.
#[test]
fn without_the_transaction_commands_every_batch_goes_as_the_script() {
    let (redis, ids) = server_with_pending(10);
    let addr = redis.addr();
    call(
        addr,
        &[
            b"ACL", b"SETUSER", b"limited", b"on", b">pw", b"~*", b"&*", b"+@all", b"-watch",
            b"-multi",
        ],
    )
    .unwrap();
    let url = format!("redis://limited:pw@{addr}").parse().unwrap();
    let mut conn = BlockingConn::open(&url, Duration::from_secs(2)).unwrap();
    let t = target(None, None);
    let guard = guard_key(&t.inputs, &t.group, &t.consumer);
    let mut p = CommitPipeline::open(&mut conn, Some(guard)).unwrap();
    assert!(!p.watching());
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    p.send(&mut conn, batch(&t, &ids, Some(0))).unwrap();
    assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    assert_eq!(calls(addr, "exec"), 0, "no transaction");
    assert_eq!(sources(addr), ids);
}

/// The connection dies while a script batch waits for the watched batches ahead of it: the
/// script batch stays in flight (unsent) and goes with the others when they are sent again
/// on a new connection.
#[test]
fn a_script_batch_waiting_when_the_connection_dies_is_sent_again_with_the_rest() {
    let Fixture {
        redis,
        ids,
        t,
        mut conn,
        mut p,
    } = pipelined(20);
    let addr = redis.addr();
    let mut elsewhere = RedisServer::start();
    let mut dying = connect(elsewhere.addr());
    elsewhere.kill();
    // Written into a dead socket, or refused at once: in flight either way.
    let _ = p.send(&mut dying, batch(&t, &ids[..10], Some(0)));
    let waited = p.send(&mut dying, batch(&t, &ids[10..], None));
    assert!(waited.is_err_and(|e| e.is_connection()), "the wait fails");
    assert_eq!(p.len(), 2, "both batches still to commit");
    p.resend(&mut conn).unwrap();
    for _ in 0..2 {
        assert_eq!(p.receive(&mut conn).unwrap().counts, counts(10, 0, 0));
    }
    assert_eq!(sources(addr), ids, "both, in order");
}
