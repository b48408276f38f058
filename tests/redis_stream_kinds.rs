//! The Redis Streams kinds from the library: a pipeline of your own with
//! `RedisStreamSource`, your `AsyncFunction` and `RedisStreamSink`, against a real
//! redis-server. Every entry gets exactly one output, also after a partition read entries and
//! died without committing them.

mod common;

use std::time::Duration;

use common::redis::{call, pipeline, RedisServer};
use ringwait::connect::redis_stream::{
    RedisStreamSink, RedisStreamSource, SinkStats, SourceOptions, StreamEntry, StreamUrl,
};
use ringwait::function::from_fn;
use ringwait::resp::OwnedFrame;
use ringwait::source::{Source, SourceEvent};
use ringwait::{OperatorConfig, OrderMode, Pipeline, ResultFuture};

fn xadd(addr: std::net::SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let commands: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|i| {
            let data = if i == 7 {
                vec![b"other".to_vec(), b"x".to_vec()] // no "data" field: the function fails it
            } else {
                vec![b"data".to_vec(), format!("record {i}").into_bytes()]
            };
            [vec![b"XADD".to_vec(), b"in".to_vec(), b"*".to_vec()], data].concat()
        })
        .collect();
    pipeline(addr, &commands)
        .into_iter()
        .map(|r| match r {
            OwnedFrame::Bulk(id) => id,
            r => panic!("{r:?}"),
        })
        .collect()
}

fn run(input: &StreamUrl, output: &StreamUrl) -> Vec<SinkStats> {
    let operator = OperatorConfig::builder()
        .mode(OrderMode::Unordered)
        .capacity(100)
        .on_error(ringwait::ErrorPolicy::SideOutput)
        .build()
        .unwrap();
    let pipeline = Pipeline::builder()
        .partitions(2)
        .pin(false)
        .operator(operator)
        .build()
        .unwrap();
    let (i, o, input2) = (input.clone(), output.clone(), input.clone());
    let report = pipeline
        .run(
            move |p| {
                let options = SourceOptions {
                    end_when_empty: true,
                    ..SourceOptions::default()
                };
                RedisStreamSource::open(&i, &format!("lib-p{}", p.index), options)
            },
            |_p| async {
                Ok(from_fn(
                    |e: &StreamEntry, r: ResultFuture<(StreamEntry, Vec<u8>)>| match e.payload() {
                        Some(p) => {
                            let _ = r.complete_one((e.clone(), p.to_ascii_uppercase()));
                        }
                        None => {
                            let _ = r.fail(ringwait::AsyncError::msg("no data field"));
                        }
                    },
                ))
            },
            move |p| {
                let consumer = format!("lib-p{}", p.index);
                RedisStreamSink::open(&o, &input2, &consumer, Some("errors"))
            },
        )
        .unwrap();
    report.outputs().copied().collect()
}

#[test]
fn a_pipeline_of_your_own_reads_and_commits_a_stream_exactly_once() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd(addr, 5000);
    let input: StreamUrl = format!("redis-stream://{addr}/in?group=g").parse().unwrap();
    let output: StreamUrl = format!("redis-stream://{addr}/out").parse().unwrap();

    // A partition that read 300 entries and died before committing any.
    let mut dead = RedisStreamSource::open(&input, "lib-p0", SourceOptions::default()).unwrap();
    let mut taken = 0;
    while taken < 300 {
        match dead.next().unwrap() {
            SourceEvent::Element(_) => taken += 1,
            SourceEvent::Idle => {
                dead.wait_for_input(Duration::from_millis(10));
            }
            SourceEvent::End => unreachable!("it waits for more"),
        }
    }
    drop(dead);

    let stats = run(&input, &output);
    let committed: u64 = stats.iter().map(|s| s.committed).sum();
    assert_eq!(committed, 5000, "{stats:?}");
    let OwnedFrame::Array(out) = call(addr, &[b"XRANGE", b"out", b"-", b"+"]).unwrap() else {
        panic!("XRANGE")
    };
    assert_eq!(out.len(), 4999);
    let mut seen = std::collections::HashSet::new();
    for e in &out {
        let OwnedFrame::Array(parts) = e else {
            panic!()
        };
        let OwnedFrame::Array(f) = &parts[1] else {
            panic!()
        };
        let (OwnedFrame::Bulk(data), OwnedFrame::Bulk(src)) = (&f[1], &f[3]) else {
            panic!("{f:?}")
        };
        let i = ids.iter().position(|id| id == src).expect("a known src");
        assert_eq!(data, format!("RECORD {i}").as_bytes());
        assert!(seen.insert(i), "entry {i} twice");
    }
    let OwnedFrame::Array(errors) = call(addr, &[b"XRANGE", b"errors", b"-", b"+"]).unwrap() else {
        panic!("XRANGE")
    };
    assert_eq!(
        errors.len(),
        1,
        "the entry without data goes to the side stream"
    );
    assert_eq!(
        call(addr, &[b"XPENDING", b"in", b"g"]).unwrap(),
        OwnedFrame::Array(vec![
            OwnedFrame::Integer(0),
            OwnedFrame::Nil,
            OwnedFrame::Nil,
            OwnedFrame::NilArray
        ]),
        "everything acknowledged"
    );
}

#[test]
fn a_sink_that_cannot_commit_stops_its_source_and_says_why() {
    use ringwait::sink::Sink;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut redis = RedisServer::start();
    let addr = redis.addr();
    xadd(addr, 3);
    let input: StreamUrl = format!("redis-stream://{addr}/in?group=g").parse().unwrap();
    let output: StreamUrl = format!("redis-stream://{addr}/out").parse().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let options = SourceOptions {
        stop: Some(flag.clone()),
        ..SourceOptions::default()
    };
    let mut source = RedisStreamSource::open(&input, "c", options).unwrap();
    let mut sink: RedisStreamSink<(StreamEntry, Vec<u8>)> =
        RedisStreamSink::open(&output, &input, "c", None)
            .unwrap()
            .stop_on_failure(flag.clone());
    let entry = loop {
        match source.next().unwrap() {
            SourceEvent::Element(ringwait::StreamElement::Record { value, .. }) => break value,
            _ => {
                source.wait_for_input(Duration::from_millis(10));
            }
        }
    };
    redis.kill();
    sink.accept(ringwait::Emitted::Record {
        value: (entry, b"x".to_vec()),
        timestamp: None,
        sequence: 0,
    });
    sink.flush(); // the batch cannot be sent
    sink.flush();
    assert!(flag.load(Ordering::Relaxed), "the failure is flagged");
    assert!(
        matches!(source.next().unwrap(), SourceEvent::End),
        "the source ends"
    );
    let e = sink.finish().unwrap_err().to_string();
    assert!(e.contains("stays pending"), "{e}");
}

#[test]
fn a_source_claims_what_a_dead_consumer_held() {
    let (_redis, input, _) = server_with_entries(1000);
    let mut dead = RedisStreamSource::open(&input, "dead", SourceOptions::default()).unwrap();
    let held = take(&mut dead, 100);
    drop(dead);
    let got = claim_all(&input, "live");
    let distinct: std::collections::HashSet<_> = got.iter().map(StreamEntry::id).collect();
    assert_eq!(distinct.len(), 1000, "every entry, the dead one's included");
    assert!(held.iter().all(|e| distinct.contains(e.id())));
}

/// A redis-server with `n` entries in stream `in`, the input URL (group `g`) and the output's
/// (`out`).
fn server_with_entries(n: usize) -> (RedisServer, StreamUrl, StreamUrl) {
    let redis = RedisServer::start();
    let addr = redis.addr();
    xadd(addr, n);
    let input = format!("redis-stream://{addr}/in?group=g").parse().unwrap();
    let output = format!("redis-stream://{addr}/out").parse().unwrap();
    (redis, input, output)
}

/// Entries in the output stream `out`.
fn output_len(addr: std::net::SocketAddr) -> usize {
    let OwnedFrame::Array(out) = call(addr, &[b"XRANGE", b"out", b"-", b"+"]).unwrap() else {
        panic!("XRANGE")
    };
    out.len()
}

/// Reads `n` records from `source` (fewer if it ends).
fn take(source: &mut RedisStreamSource, n: usize) -> Vec<StreamEntry> {
    let mut got = Vec::new();
    while got.len() < n {
        match source.next().unwrap() {
            SourceEvent::Element(ringwait::StreamElement::Record { value, .. }) => got.push(value),
            SourceEvent::End => break,
            _ => {
                source.wait_for_input(Duration::from_millis(10));
            }
        }
    }
    got
}

/// What a consumer `name` that claims entries idle for 200 ms reads, after waiting 300 ms,
/// until nothing is left.
fn claim_all(input: &StreamUrl, name: &str) -> Vec<StreamEntry> {
    let options = SourceOptions {
        claim_idle: Duration::from_millis(200),
        end_when_empty: true,
        ..SourceOptions::default()
    };
    let mut live = RedisStreamSource::open(input, name, options).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    take(&mut live, usize::MAX)
}

/// Commits `entries` through a sink of its own as `consumer`, in one batch; its stats.
fn commit_all(
    input: &StreamUrl,
    output: &StreamUrl,
    consumer: &str,
    entries: &[StreamEntry],
) -> SinkStats {
    use ringwait::sink::Sink;
    let mut sink: RedisStreamSink<(StreamEntry, Vec<u8>)> =
        RedisStreamSink::open(output, input, consumer, None).unwrap();
    for (i, e) in entries.iter().enumerate() {
        sink.accept(ringwait::Emitted::Record {
            value: (e.clone(), e.payload().unwrap_or_default().to_vec()),
            timestamp: None,
            sequence: i as u64,
        });
    }
    sink.finish().unwrap()
}

/// The claim fence at work. A consumer reads 100 entries and stalls (a zombie); another
/// claims them and commits half; then the zombie commits all 100. Its batch was read before
/// the claim, so it is checked entry by entry: the 50 committed already are duplicates, the
/// others get their output. Without the fence (a claim that did not move it) the zombie's
/// batch would take the one-`XACK` path and add all 100: 50 duplicated outputs.
#[test]
fn a_zombie_committing_after_its_entries_were_claimed_duplicates_nothing() {
    let (redis, input, output) = server_with_entries(100);
    let addr = redis.addr();
    let mut zombie = RedisStreamSource::open(&input, "zombie", SourceOptions::default()).unwrap();
    let held = take(&mut zombie, 100);
    assert_eq!(held.len(), 100);
    assert!(held.iter().all(|e| e.fence().is_some()), "read fresh");
    let claimed = claim_all(&input, "live");
    assert_eq!(
        claimed.len(),
        100,
        "the live consumer claims the zombie's entries"
    );
    assert!(
        claimed.iter().all(|e| e.fence().is_none()),
        "claimed, not fresh"
    );
    let live_stats = commit_all(&input, &output, "live", &claimed[..50]);
    assert_eq!((live_stats.committed, live_stats.duplicates), (50, 0));

    let zombie_stats = commit_all(&input, &output, "zombie", &held);
    assert_eq!(
        (
            zombie_stats.committed,
            zombie_stats.duplicates,
            zombie_stats.unverified
        ),
        (50, 50, 0),
        "checked entry by entry"
    );
    assert_eq!(output_len(addr), 100, "one output per entry, none twice");
    let OwnedFrame::Array(pending) = call(addr, &[b"XPENDING", b"in", b"g"]).unwrap() else {
        panic!("XPENDING")
    };
    assert_eq!(pending[0], OwnedFrame::Integer(0), "nothing left pending");
}

/// Entries read fresh and committed while no claim ran go with one `XACK`; sent again (a
/// reply lost), the batch adds nothing; an entry acknowledged by a client outside ringwait
/// meanwhile is committed anyway and counted as unverified.
#[test]
fn fresh_batches_commit_once_and_outside_acknowledgements_are_counted() {
    let (redis, input, output) = server_with_entries(0);
    let addr = redis.addr();
    let ids = xadd(addr, 20);
    let mut source = RedisStreamSource::open(&input, "c", SourceOptions::default()).unwrap();
    let got = take(&mut source, 20);
    let first = commit_all(&input, &output, "c", &got[..10]);
    assert_eq!(
        (first.committed, first.duplicates, first.unverified),
        (10, 0, 0)
    );
    let again = commit_all(&input, &output, "c", &got[..10]);
    assert_eq!(
        (again.committed, again.duplicates, again.unverified),
        (0, 10, 0)
    );
    call(addr, &[b"XACK", b"in", b"g", &ids[15]]).unwrap();
    let rest = commit_all(&input, &output, "c", &got[10..]);
    assert_eq!(
        (rest.committed, rest.duplicates, rest.unverified),
        (10, 0, 1)
    );
    assert_eq!(output_len(addr), 20);
}

/// A process frozen (or killed with its commit still on the way) and its replacement under
/// the same consumer name: the replacement reads the entries back from its own pending list
/// and commits one; then the old batch arrives. The own read moved the fence, so the old
/// batch is checked entry by entry: one output each.
#[test]
fn a_replacement_under_the_same_consumer_name_fences_off_the_old_process() {
    let (redis, input, output) = server_with_entries(2);
    let addr = redis.addr();
    let mut old = RedisStreamSource::open(&input, "c", SourceOptions::default()).unwrap();
    let held = take(&mut old, 2);
    assert!(held.iter().all(|e| e.fence().is_some()), "read fresh");
    let mut replacement = RedisStreamSource::open(&input, "c", SourceOptions::default()).unwrap();
    let again = take(&mut replacement, 2);
    assert_eq!(again.len(), 2, "its own pending entries");
    assert!(again.iter().all(|e| e.fence().is_none()), "not fresh");
    let first = commit_all(&input, &output, "c", &again[..1]);
    assert_eq!((first.committed, first.duplicates), (1, 0));
    let late = commit_all(&input, &output, "c", &held);
    assert_eq!(
        (late.committed, late.duplicates, late.unverified),
        (1, 1, 0),
        "checked entry by entry"
    );
    assert_eq!(output_len(addr), 2, "one output per entry");
}

/// A record with two outputs: the first commits its entry, the second is a duplicate (also
/// when it would go in a batch read at the same fence).
#[test]
fn a_second_output_of_one_record_adds_nothing() {
    use ringwait::sink::Sink;
    let (redis, input, output) = server_with_entries(2);
    let addr = redis.addr();
    let mut source = RedisStreamSource::open(&input, "c", SourceOptions::default()).unwrap();
    let got = take(&mut source, 2);
    let mut sink: RedisStreamSink<(StreamEntry, Vec<u8>)> =
        RedisStreamSink::open(&output, &input, "c", None).unwrap();
    for (sequence, value) in [(0u64, b"a"), (0, b"b"), (1, b"c")] {
        sink.accept(ringwait::Emitted::Record {
            value: (got[sequence as usize].clone(), value.to_vec()),
            timestamp: None,
            sequence,
        });
        if value == b"a" {
            // The second output then shares a batch with the next entry's, read at the same
            // fence: only the sink can tell that it is a duplicate.
            sink.flush();
        }
    }
    let stats = sink.finish().unwrap();
    assert_eq!(
        (stats.committed, stats.duplicates, stats.unverified),
        (2, 1, 0)
    );
    assert_eq!(output_len(addr), 2);
}
