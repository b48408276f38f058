//! `ringwait enrich` from a Redis stream to a Redis stream, against real redis-servers: every
//! input entry has exactly one output (or error) entry, through SIGKILLs of the job, the
//! death of one of two instances, and a restart of the server; bad entries go through the
//! error policy by id; wrong addresses and keys are refused with one line.
//!
//! Every check reads the output stream independently (XRANGE) and matches it against the
//! input entries: lost 0, duplicated 0, wrong 0, and per-key order in key-ordered mode.
//!
//! CI tier: 30 kills per mode over 200k entries; `RINGWAIT_LONG_TESTS=1` runs 300 over 1M.

mod common;
mod job_support;
mod tier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::redis::{call, pipeline, RedisServer};
use job_support::{crash_seed, kill_and_restart, log_of, ringwait, stderr, Rng};
use ringwait::connect::redis_stream::{
    BlockingConn, CommitBatch, CommitMode, CommitRecord, CommitTarget, EntryId, Kind,
    StreamConnError,
};
use ringwait::resp::OwnedFrame;

const KEYS: u64 = 500;

/// The input record `i`: its key repeats every [`KEYS`] records.
fn record(i: u64) -> String {
    format!(
        "{{\"id\":{i},\"key\":\"k:{}\",\"pad\":\"{}\"}}",
        (i * 7919) % KEYS,
        "x".repeat((i % 7) as usize)
    )
}

fn value(key: u64) -> String {
    String::from_utf8(ringwait::dataset::value_of(key).to_vec()).unwrap()
}

/// `XADD stream * data payload` for each payload; the ids, in order.
fn xadd(addr: SocketAddr, stream: &str, payloads: &[Vec<u8>]) -> Vec<String> {
    let commands: Vec<Vec<Vec<u8>>> = payloads
        .iter()
        .map(|p| {
            vec![
                b"XADD".to_vec(),
                stream.as_bytes().to_vec(),
                b"*".to_vec(),
                b"data".to_vec(),
                p.clone(),
            ]
        })
        .collect();
    pipeline(addr, &commands)
        .into_iter()
        .map(|r| match r {
            OwnedFrame::Bulk(id) => String::from_utf8(id).unwrap(),
            other => panic!("XADD answered {other:?}"),
        })
        .collect()
}

fn xadd_records(addr: SocketAddr, stream: &str, n: u64) -> Vec<String> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| record(i).into_bytes()).collect();
    xadd(addr, stream, &payloads)
}

/// A stream's entries as (id, fields), read with XRANGE 10,000 at a time.
fn entries(addr: SocketAddr, stream: &str) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let mut out = Vec::new();
    let mut from = "-".to_string();
    loop {
        let reply = call(
            addr,
            &[
                b"XRANGE",
                stream.as_bytes(),
                from.as_bytes(),
                b"+",
                b"COUNT",
                b"10000",
            ],
        )
        .unwrap();
        let OwnedFrame::Array(items) = reply else {
            panic!("XRANGE answered {reply:?}")
        };
        if items.is_empty() {
            return out;
        }
        for item in items {
            let OwnedFrame::Array(parts) = item else {
                panic!("an entry")
            };
            let (OwnedFrame::Bulk(id), OwnedFrame::Array(fields)) = (&parts[0], &parts[1]) else {
                panic!("an entry's parts")
            };
            let mut map = HashMap::new();
            for pair in fields.chunks(2) {
                let (OwnedFrame::Bulk(k), OwnedFrame::Bulk(v)) = (&pair[0], &pair[1]) else {
                    panic!("fields")
                };
                map.insert(String::from_utf8(k.clone()).unwrap(), v.clone());
            }
            let id = String::from_utf8(id.clone()).unwrap();
            from = format!("({id}");
            out.push((id, map));
        }
    }
}

/// Entries pending in the group (XPENDING's summary count).
fn pending(addr: SocketAddr, stream: &str, group: &str) -> i64 {
    match call(addr, &[b"XPENDING", stream.as_bytes(), group.as_bytes()]).unwrap() {
        OwnedFrame::Array(parts) => match parts[0] {
            OwnedFrame::Integer(n) => n,
            _ => panic!("XPENDING's count"),
        },
        other => panic!("XPENDING answered {other:?}"),
    }
}

fn xlen(addr: SocketAddr, stream: &str) -> i64 {
    match call(addr, &[b"XLEN", stream.as_bytes()]).unwrap() {
        OwnedFrame::Integer(n) => n,
        other => panic!("XLEN answered {other:?}"),
    }
}

/// Entries pending in `consumer` of the group.
fn pending_of(addr: SocketAddr, stream: &str, group: &str, consumer: &str) -> i64 {
    let OwnedFrame::Array(parts) =
        call(addr, &[b"XPENDING", stream.as_bytes(), group.as_bytes()]).unwrap()
    else {
        panic!("XPENDING")
    };
    let OwnedFrame::Array(consumers) = &parts[3] else {
        return 0; // nil: nothing pending
    };
    consumers
        .iter()
        .find_map(|c| match c {
            OwnedFrame::Array(pair) if pair[0] == OwnedFrame::Bulk(consumer.into()) => {
                match &pair[1] {
                    OwnedFrame::Bulk(n) => std::str::from_utf8(n).ok()?.parse().ok(),
                    _ => None,
                }
            }
            _ => None,
        })
        .unwrap_or(0)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("redis-stream://{addr}/{path}")
}

fn enrich_args<'a>(input: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "enrich", "--input", input, "--output", output, "--quiet", "--no-pin",
    ];
    args.extend_from_slice(extra);
    args
}

/// The order an output must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The input's (ordered mode, one instance).
    Input,
    /// Each key's (key-ordered mode).
    PerKey,
    /// None (unordered mode).
    None,
}

/// The independent checker: each input id has exactly one output entry whose `src` is it and
/// whose `data` is the input record with the right value added; per-key order when asked.
fn check_outputs(addr: SocketAddr, out: &str, ids: &[String], order: Order, context: &str) {
    let index: HashMap<&str, u64> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u64))
        .collect();
    let mut seen = vec![0u32; ids.len()];
    let (mut wrong, mut out_of_order, mut out_of_key_order) = (0u64, 0u64, 0u64);
    let mut last_of_key = vec![None::<u64>; KEYS as usize];
    let mut last = None::<u64>;
    for (_, fields) in entries(addr, out) {
        let src = std::str::from_utf8(&fields["src"]).unwrap();
        let i = *index
            .get(src)
            .unwrap_or_else(|| panic!("{context}: unknown src {src}"));
        seen[i as usize] += 1;
        let key = (i * 7919) % KEYS;
        let want = format!(
            "{},\"value\":\"{}\"}}",
            &record(i)[..record(i).len() - 1],
            value(key)
        );
        if fields["data"] != want.as_bytes() {
            wrong += 1;
        }
        if last_of_key[key as usize].is_some_and(|l| i <= l) {
            out_of_key_order += 1;
        }
        last_of_key[key as usize] = Some(i);
        if last.is_some_and(|l| i <= l) {
            out_of_order += 1;
        }
        last = Some(i);
    }
    let lost = seen.iter().filter(|c| **c == 0).count();
    let duplicated: u32 = seen.iter().map(|c| c.saturating_sub(1)).sum();
    let out_of_order = match order {
        Order::Input => out_of_order,
        Order::PerKey => out_of_key_order,
        Order::None => 0,
    };
    assert!(
        lost == 0 && duplicated == 0 && wrong == 0 && out_of_order == 0,
        "{context}: lost {lost}, duplicated {duplicated}, wrong {wrong}, out of {order:?} order {out_of_order}"
    );
}

#[test]
fn a_stream_is_enriched_into_a_stream_exactly_once_with_bad_entries_named() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let mut payloads: Vec<Vec<u8>> = (0..3000).map(|i| record(i).into_bytes()).collect();
    payloads[10] = b"{\"id\":10,\"nokey\":1}".to_vec();
    payloads[20] = b"not json".to_vec();
    payloads[30] = b"{\"key\":\"k:1\",\"bad\":\"\xff\"}".to_vec();
    let ids = xadd(addr, "in", &payloads);
    // An entry without the field.
    let odd = match call(addr, &[b"XADD", b"in", b"*", b"other", b"{}"]).unwrap() {
        OwnedFrame::Bulk(id) => String::from_utf8(id).unwrap(),
        r => panic!("{r:?}"),
    };
    let (input, output) = (url(addr, "in?group=g"), url(addr, "out"));
    let o = ringwait(&enrich_args(
        &input,
        &output,
        &[
            "--until",
            "caught-up",
            "--partitions",
            "2",
            "--on-error",
            "side-output:errors",
            "--mode",
            "ordered",
        ],
    ));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("stream: consumer ")
            && err.contains("read 3001")
            && err.contains("committed 3001"),
        "{err}"
    );
    assert_eq!(pending(addr, "in", "g"), 0, "everything is acknowledged");
    let out = entries(addr, "out");
    assert_eq!(out.len(), 2997);
    // Ordered mode, one instance: the output is in the input's order, byte for byte.
    let good: Vec<usize> = (0..3000).filter(|i| ![10, 20, 30].contains(i)).collect();
    for ((_, fields), i) in out.iter().zip(&good) {
        assert_eq!(fields["src"], ids[*i].as_bytes());
        let rec = record(*i as u64);
        let want = format!(
            "{},\"value\":\"{}\"}}",
            &rec[..rec.len() - 1],
            value((*i as u64 * 7919) % KEYS)
        );
        assert_eq!(std::str::from_utf8(&fields["data"]).unwrap(), want);
        assert!(!fields.contains_key("stream"), "one input stream");
    }
    let errors = entries(addr, "errors");
    let by_src: HashMap<Vec<u8>, &HashMap<String, Vec<u8>>> =
        errors.iter().map(|(_, f)| (f["src"].clone(), f)).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (i, says) in [
        (10, "the key field \"key\" is missing"),
        (20, "not valid JSON"),
        (30, "not valid UTF-8"),
    ] {
        let e = by_src[ids[i].as_bytes()];
        let text = String::from_utf8_lossy(&e["error"]);
        assert!(text.contains(says), "entry {i}: {text}");
        assert_eq!(e["data"], payloads[i], "the payload as it came");
    }
    let e = by_src[odd.as_bytes()];
    assert!(String::from_utf8_lossy(&e["error"]).contains("no field \"data\""));

    // Running again finds nothing new and adds nothing.
    let o = ringwait(&enrich_args(&input, &output, &["--until", "caught-up"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entries(addr, "out").len(), 2997);
}

#[test]
fn under_on_error_fail_a_bad_entry_is_named_and_stays_pending() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd(addr, "in", &[record(0).into_bytes(), b"[1,2]".to_vec()]);
    let (input, output) = (url(addr, "in?group=g"), url(addr, "out"));
    let o = ringwait(&enrich_args(&input, &output, &["--until", "caught-up"]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("entry in/{}", ids[1])) && err.contains("expected a JSON object"),
        "{err}"
    );
    assert_eq!(
        pending(addr, "in", "g"),
        1,
        "the bad entry is not acknowledged"
    );
    assert_eq!(entries(addr, "out").len(), 1, "the good one is committed");
    // skip acknowledges it without output.
    let o = ringwait(&enrich_args(
        &input,
        &output,
        &["--until", "caught-up", "--on-error", "skip"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pending(addr, "in", "g"), 0);
    assert_eq!(entries(addr, "out").len(), 1);
}

#[test]
fn wrong_keys_addresses_and_combinations_are_refused_with_one_line() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    call(addr, &[b"SET", b"astring", b"x"]).unwrap();
    let dead = format!("127.0.0.1:{}", job_support::free_port());
    let input = url(addr, "in?group=g");
    let output = url(addr, "out");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![url(addr, "astring?group=g"), output.clone()],
            "holds a string, not a stream",
        ),
        (
            vec![input.clone(), url(addr, "astring")],
            "holds a string, not a stream",
        ),
        (
            vec![format!("redis-stream://{dead}/in?group=g"), output.clone()],
            "cannot reach",
        ),
        (vec![url(addr, "in"), output.clone()], "?group=NAME"),
        (vec![input.clone(), "-".into()], "needs a stream output"),
        (vec![input.clone(), url(addr, "in")], "also an input stream"),
    ];
    for (args, says) in cases {
        let started = Instant::now();
        let o = ringwait(&enrich_args(&args[0], &args[1], &["--until", "caught-up"]));
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let o = ringwait(&["enrich", "--records", "10", "--until", "caught-up"]);
    assert!(stderr(&o).contains("caught-up is for a stream input"));
    for flag in ["--stream-batch", "--claim-idle-ms", "--stream-field"] {
        let o = ringwait(&["enrich", "--records", "10", flag, "99999"]);
        let err = stderr(&o);
        assert!(
            !o.status.success() && err.contains(flag) && err.contains("is for a stream input"),
            "{err}"
        );
    }
    assert_eq!(
        call(addr, &[b"EXISTS", b"out"]).unwrap(),
        OwnedFrame::Integer(0),
        "nothing was written"
    );
    // A server that wants a password the URL does not give: the flag, and the way out.
    call(addr, &[b"CONFIG", b"SET", b"requirepass", b"s3cret"]).unwrap();
    let o = ringwait(&enrich_args(&input, &output, &["--until", "caught-up"]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--output: cannot reach") || err.contains("--input: cannot reach"),
        "{err}"
    );
    assert!(
        err.contains("NOAUTH") && err.contains("REDIS_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn input_and_output_on_two_servers_commit_exactly_once() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let ids = xadd_records(a.addr(), "in", 5000);
    let (input, output) = (url(a.addr(), "in?group=g"), url(b.addr(), "out"));
    let o = ringwait(&enrich_args(
        &input,
        &output,
        &["--until", "caught-up", "--mode", "unordered"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    check_outputs(b.addr(), "out", &ids, Order::None, "two servers");
    assert_eq!(pending(a.addr(), "in", "g"), 0);
    let OwnedFrame::Array(keys) = call(b.addr(), &[b"KEYS", b"*ringwait-progress*"]).unwrap()
    else {
        panic!("KEYS")
    };
    assert_eq!(keys.len(), 1, "the progress set lives beside the output");
}

/// Runs the job until it exits or `limit`; SIGKILLs it after `kill_after` if given.
fn job(args: &[String], log: &std::path::Path) -> Child {
    job_support::job_logged(args, log)
}

fn stream_job_args(input: &str, output: &str, mode: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = enrich_args(
        input,
        output,
        &["--until", "caught-up", "--mode", mode, "--partitions", "2"],
    )
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// SIGKILLs the job at random moments (often within milliseconds of its start, i.e. while it
/// reads its own pending entries again) and restarts it with the same command, until it
/// exits on its own; then checks the output.
fn kill_loop(mode: &str) {
    let kills_wanted = tier::size("stream kills per mode", 30u64, 300);
    // Enough entries that the job cannot finish before the kills are done (a life commits
    // a few thousand entries at most).
    let entries_n = tier::size("stream entries per kill loop", 200_000u64, 1_000_000);
    let seed = crash_seed();
    let mut rng = Rng(seed);
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd_records(addr, "in", entries_n);
    let (input, output) = (url(addr, "in?group=g"), url(addr, "out"));
    // A small batch: more commits, more moments to die between them.
    let args = stream_job_args(&input, &output, mode, &["--stream-batch", "64"]);
    let log =
        std::env::temp_dir().join(format!("rw-stream-kill-{}-{mode}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let context = format!("{mode}, seed {seed} (RINGWAIT_CRASH_SEED={seed} replays)");
    let kills = kill_and_restart(
        &args,
        &log,
        &context,
        Duration::from_secs(600),
        |kills| {
            (kills < kills_wanted).then(|| {
                Duration::from_millis(match rng.below(4) {
                    0 => rng.below(10),
                    _ => 10 + rng.below(50),
                })
            })
        },
        || {},
    );
    assert!(
        kills >= kills_wanted,
        "{context}: the job finished after {kills} kills; fewer than {kills_wanted}"
    );
    assert_eq!(pending(addr, "in", "g"), 0, "{context}");
    let order = match mode {
        "ordered" => Order::Input,
        "key-ordered" => Order::PerKey,
        _ => Order::None,
    };
    check_outputs(addr, "out", &ids, order, &context);
    eprintln!("{context}: {kills} kills, {entries_n} entries: lost 0, duplicated 0, wrong 0");
}

#[test]
fn sigkill_loop_unordered_loses_and_duplicates_nothing() {
    kill_loop("unordered");
}

#[test]
fn sigkill_loop_ordered_keeps_the_inputs_order() {
    kill_loop("ordered");
}

#[test]
fn sigkill_loop_key_ordered_keeps_each_keys_order() {
    kill_loop("key-ordered");
}

#[test]
fn when_one_of_two_instances_dies_the_other_claims_its_entries() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd_records(addr, "in", 50_000);
    let output = url(addr, "out");
    let dir = std::env::temp_dir();
    let log_a = dir.join(format!("rw-stream-a-{}.log", std::process::id()));
    let log_b = dir.join(format!("rw-stream-b-{}.log", std::process::id()));
    let args = |consumer: &str| {
        stream_job_args(
            &url(addr, &format!("in?group=g&consumer={consumer}")),
            &output,
            "unordered",
            &["--claim-idle-ms", "1500", "--timeout-ms", "200"],
        )
    };
    let mut a = job(&args("a"), &log_a);
    let mut b = job(&args("b"), &log_b);
    // Once they have committed some entries, kill a for good (it holds the entries it read
    // and has not committed yet).
    let started = Instant::now();
    while xlen(addr, "out") < 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            log_of(&log_a)
        );
        assert!(a.try_wait().unwrap().is_none(), "{}", log_of(&log_a));
        std::thread::sleep(Duration::from_millis(2));
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let left_by_a = pending_of(addr, "in", "g", "a");
    let status = job_support::wait_at_most(&mut b, Duration::from_secs(120));
    let log = log_of(&log_b);
    assert!(status.success(), "{log}");
    check_outputs(addr, "out", &ids, Order::None, "survivor");
    assert_eq!(pending(addr, "in", "g"), 0);
    assert!(log.contains("stream: consumer b"), "{log}");
    if left_by_a > 0 {
        assert!(
            !log.contains("(claimed 0)"),
            "the survivor claimed the {left_by_a} entries the dead one held: {log}"
        );
    }
    eprintln!("a held {left_by_a} entries when it died; b claimed them: {log}");
}

#[test]
fn a_server_restarted_mid_run_loses_nothing() {
    let mut redis = RedisServer::start_persistent();
    let addr = redis.addr();
    let ids = xadd_records(addr, "in", 60_000);
    let (input, output) = (url(addr, "in?group=g"), url(addr, "out"));
    let log = std::env::temp_dir().join(format!("rw-stream-restart-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut child = job(
        &stream_job_args(&input, &output, "unordered", &["--stream-batch", "64"]),
        &log,
    );
    let started = Instant::now();
    while xlen(addr, "out") < 5000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            log_of(&log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    redis.kill(); // SIGKILL: the append-only file, fsynced on every write, keeps the data
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    let status = job_support::wait_at_most(&mut child, Duration::from_secs(120));
    let text = log_of(&log);
    assert!(status.success(), "{text}");
    assert!(text.contains("reconnecting"), "{text}");
    check_outputs(addr, "out", &ids, Order::None, "server restart");
    assert_eq!(pending(addr, "in", "g"), 0);
}

#[test]
fn a_stopped_stream_job_commits_what_it_took_and_the_next_run_goes_on() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd_records(addr, "in", 20_000);
    let (input, output) = (url(addr, "in?group=g&consumer=c1"), url(addr, "out"));
    // No --until: it runs until stopped.
    let mut args: Vec<String> = enrich_args(&input, &output, &["--partitions", "1"])
        .into_iter()
        .map(String::from)
        .collect();
    let metrics: SocketAddr = format!("127.0.0.1:{}", job_support::free_port())
        .parse()
        .unwrap();
    args.extend(["--capacity".into(), "50".into()]);
    args.extend(["--metrics".into(), metrics.to_string()]);
    let mut child = job_support::bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while xlen(addr, "out") < 100 {
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(child.try_wait().unwrap().is_none(), "the job exited");
        std::thread::sleep(Duration::from_millis(2));
    }
    // --metrics shows the instance's stream figures while it runs.
    let mut body = String::new();
    while !body.contains("ringwait_stream_acknowledged_total{consumer=\"c1\"}") {
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        body = ringwait::metrics_http::fetch(metrics).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(20));
    }
    for family in [
        "ringwait_stream_read_total{consumer=\"c1\"}",
        "ringwait_stream_claimed_total{consumer=\"c1\"}",
        "ringwait_stream_duplicates_total{consumer=\"c1\"}",
        "ringwait_stream_unverified_total{consumer=\"c1\"} 0",
        "ringwait_stream_group_lag{consumer=\"c1\"}",
        "ringwait_stream_commit_seconds_count{consumer=\"c1\"}",
    ] {
        assert!(body.contains(family), "missing {family} in:\n{body}");
    }
    job_support::signal(&child, libc::SIGTERM);
    let status = job_support::wait_at_most(&mut child, Duration::from_secs(30));
    let err = job_support::stderr_of(&mut child);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("stream: consumer"), "{err}");
    // The rest, by the same consumer: its pending entries first.
    let o = ringwait(&enrich_args(&input, &output, &["--until", "caught-up"]));
    assert!(o.status.success(), "{}", stderr(&o));
    check_outputs(addr, "out", &ids, Order::None, "stop and go on");
}

#[test]
fn the_stream_benchmark_reports_the_job_against_the_servers_ceiling() {
    let redis = RedisServer::start();
    let addr = redis.addr().to_string();
    let o = ringwait(&[
        "bench",
        "--workload",
        "stream",
        "--redis",
        &addr,
        "--records",
        "3000",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for part in [
        "workload=stream part=ceiling records=3000 records_per_s=",
        "workload=stream part=job records=3000 records_per_s=",
        "of_ceiling=",
        "workload=stream part=latency rate=",
    ] {
        assert!(out.contains(part), "missing {part} in:\n{out}");
    }
    assert_eq!(
        call(redis.addr(), &[b"EXISTS", b"ringwait-bench:in"]).unwrap(),
        OwnedFrame::Integer(0),
        "the benchmark removes its keys"
    );
    let o = ringwait(&["bench", "--workload", "stream", "--records", "10"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give --redis"), "{}", stderr(&o));
}

/// `EVAL` of the commit script with one output key, one input stream and these records
/// (tag, id, payload...).
/// One record for [`commit`]: (kind, entry id, data, error).
type Rec<'a> = (Kind, &'a [u8], &'a [u8], &'a str);

/// Runs the commit script for `records` of input `in`, group `g`, to `out`: in ack mode
/// (`progress` `None`) or progress mode; the entries read fresh at claim fence `fence`
/// (`None`: not fresh). Its raw reply.
fn commit(
    addr: SocketAddr,
    progress: Option<&str>,
    records: &[Rec<'_>],
    fence: Option<u64>,
) -> OwnedFrame {
    let target = CommitTarget {
        output: "out".into(),
        side: None,
        maxlen: None,
        inputs: vec!["in".into()],
        group: "g".into(),
        consumer: "c".into(),
        mode: match progress {
            None => CommitMode::Ack,
            Some(key) => CommitMode::Progress(key.into()),
        },
    };
    let mut batch = CommitBatch::default();
    for &(kind, id, data, error) in records {
        let record = CommitRecord {
            stream: 0,
            id,
            kind,
            data,
            error,
            fence,
        };
        batch.add(&target, record);
    }
    let url: ringwait::lookup::RedisUrl = format!("redis://{addr}").parse().unwrap();
    let mut conn = BlockingConn::open(&url, Duration::from_secs(2)).unwrap();
    conn.send(&batch.take(&target).eval).unwrap();
    match conn.reply(|f| Ok(OwnedFrame::from(f))) {
        Ok(frame) => frame,
        Err(StreamConnError::Server { message, .. }) => OwnedFrame::Error(message.into_bytes()),
        Err(e) => panic!("{e}"),
    }
}

fn counts(c: i64, d: i64, u: i64) -> OwnedFrame {
    OwnedFrame::Array(vec![
        OwnedFrame::Integer(c),
        OwnedFrame::Integer(d),
        OwnedFrame::Integer(u),
    ])
}

#[test]
fn the_commit_script_adds_an_entrys_output_once_however_often_it_is_committed() {
    for progress in [None, Some("prog")] {
        let redis = RedisServer::start();
        let addr = redis.addr();
        let ids = xadd(addr, "in", &[b"{}".to_vec(), b"{}".to_vec()]);
        call(addr, &[b"XGROUP", b"CREATE", b"in", b"g", b"0"]).unwrap();
        call(
            addr,
            &[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"in", b">"],
        )
        .unwrap();
        let (a, b) = (ids[0].as_bytes(), ids[1].as_bytes());
        // The same entry twice in one batch, then the whole batch again (a resend after a
        // lost reply), then a batch with the other entry: one output each.
        let batch = [(Kind::Data, a, &b"x"[..], ""), (Kind::Data, a, b"x", "")];
        assert_eq!(
            commit(addr, progress, &batch, None),
            counts(1, 1, 0),
            "{progress:?}"
        );
        assert_eq!(
            commit(addr, progress, &batch, None),
            counts(0, 2, 0),
            "{progress:?}"
        );
        let failed = [(Kind::Error, b, &b"raw"[..], "why")];
        assert_eq!(commit(addr, progress, &failed, None), counts(1, 0, 0));
        let out = entries(addr, "out");
        assert_eq!(out.len(), 2, "{progress:?}: {out:?}");
        assert_eq!(
            (&out[0].1["data"][..], &out[0].1["src"][..]),
            (&b"x"[..], a)
        );
        assert_eq!(&out[1].1["error"][..], b"why");
        assert_eq!(&out[1].1["data"][..], b"raw");
        if progress.is_none() {
            assert_eq!(pending(addr, "in", "g"), 0, "ack mode acknowledges");
        } else {
            assert_eq!(
                pending(addr, "in", "g"),
                2,
                "progress mode leaves the XACK to the job"
            );
            assert_eq!(
                call(addr, &[b"ZCARD", b"prog"]).unwrap(),
                OwnedFrame::Integer(2)
            );
        }
        // A key of the wrong type stops the batch before anything is written.
        call(addr, &[b"SET", b"out", b"x"]).unwrap();
        let e = commit(addr, progress, &[(Kind::Data, a, b"x", "")], None);
        assert!(
            matches!(&e, OwnedFrame::Error(m) if m.starts_with(b"WRONGTYPE")),
            "{e:?}"
        );
    }
}

/// The one-`XACK` path: taken only while the claim fence holds the value the batch's
/// entries were read at. A batch sent twice adds nothing the second time; a batch read
/// before a claim is checked entry by entry.
#[test]
fn a_fresh_batch_is_acknowledged_at_once_only_while_no_claim_ran() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let ids = xadd(addr, "in", &vec![b"{}".to_vec(); 5]);
    call(addr, &[b"XGROUP", b"CREATE", b"in", b"g", b"0"]).unwrap();
    call(
        addr,
        &[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"in", b">"],
    )
    .unwrap();
    let rec = |i: usize| (Kind::Data, ids[i].as_bytes(), &b"x"[..], "");
    call(addr, &[b"CONFIG", b"RESETSTAT"]).unwrap();
    assert_eq!(
        commit(addr, None, &[rec(0), rec(1)], Some(0)),
        counts(2, 0, 0)
    );
    assert_eq!(
        commit(addr, None, &[rec(0), rec(1)], Some(0)),
        counts(0, 2, 0)
    );
    let stats = call(addr, &[b"INFO", b"commandstats"]).unwrap();
    let OwnedFrame::Bulk(stats) = stats else {
        panic!()
    };
    let stats = String::from_utf8(stats).unwrap();
    assert!(
        stats.contains("cmdstat_xack:calls=2,"),
        "one XACK per batch: {stats}"
    );
    // A claim moved the fence (the claimer committed entry 2): entries 2 and 3 are checked
    // one by one.
    call(addr, &[b"INCR", b"{in}:ringwait-claims:g"]).unwrap();
    call(addr, &[b"XACK", b"in", b"g", ids[2].as_bytes()]).unwrap();
    assert_eq!(
        commit(addr, None, &[rec(2), rec(3)], Some(0)),
        counts(1, 1, 0)
    );
    assert_eq!(entries(addr, "out").len(), 3);
    // The same entry twice in a row, at the fence's value: one XACK would count it once, so
    // the batch is checked entry by entry.
    assert_eq!(
        commit(addr, None, &[rec(4), rec(4)], Some(1)),
        counts(1, 1, 0)
    );
    assert_eq!(entries(addr, "out").len(), 4);
}

#[test]
fn in_a_redis_cluster_the_keys_of_a_commit_must_share_a_slot() {
    let cluster = common::redis::RedisCluster::start();
    let slot = ringwait::lookup::key_slot(b"{orders}");
    let owner = cluster.owner(slot);
    let other = *cluster.addrs().iter().find(|a| **a != owner).unwrap();
    let ids = xadd_records(owner, "{orders}:in", 2000);
    let input = url(owner, "{orders}:in?group=g");
    let o = ringwait(&enrich_args(
        &input,
        &url(owner, "{orders}:out"),
        &["--until", "caught-up", "--mode", "unordered"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    check_outputs(owner, "{orders}:out", &ids, Order::None, "cluster");
    // An output in another slot is refused, naming the keys and the way out.
    let o = ringwait(&enrich_args(
        &input,
        &url(owner, "elsewhere"),
        &["--until", "caught-up"],
    ));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("must share a hash slot") && err.contains("{tag}"),
        "{err}"
    );
    // A node that does not hold the stream says where it is.
    let o = ringwait(&enrich_args(
        &url(other, "{orders}:in?group=g"),
        &url(other, "{orders}:out"),
        &["--until", "caught-up"],
    ));
    assert!(
        stderr(&o).contains("lives on another node"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_commit_that_fails_for_good_acknowledges_nothing_without_its_output() {
    // Two servers, so each batch's XACKs follow its script's reply: once a script fails (a
    // side stream turned into a string mid-run), no later reply may acknowledge its batch.
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let mut payloads: Vec<Vec<u8>> = (0..30_000).map(|i| record(i).into_bytes()).collect();
    for i in (20_000..30_000).step_by(500) {
        payloads[i] = b"not json".to_vec();
    }
    let ids = xadd(a.addr(), "in", &payloads);
    let (input, output) = (url(a.addr(), "in?group=g"), url(b.addr(), "out"));
    let log = std::env::temp_dir().join(format!("rw-stream-fatal-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut child = job(
        &stream_job_args(
            &input,
            &output,
            "unordered",
            &["--stream-batch", "64", "--on-error", "side-output:errs"],
        ),
        &log,
    );
    let started = Instant::now();
    while xlen(b.addr(), "out") < 2000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            log_of(&log)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    call(b.addr(), &[b"SET", b"errs", b"not a stream"]).unwrap();
    let status = job_support::wait_at_most(&mut child, Duration::from_secs(60));
    let text = log_of(&log);
    assert!(!status.success(), "{text}");
    assert!(text.contains("WRONGTYPE"), "{text}");
    // Every acknowledged entry has its output.
    let outputs: std::collections::HashSet<Vec<u8>> = entries(b.addr(), "out")
        .into_iter()
        .map(|(_, f)| f["src"].clone())
        .collect();
    let OwnedFrame::Array(pending_entries) =
        call(a.addr(), &[b"XPENDING", b"in", b"g", b"-", b"+", b"100000"]).unwrap()
    else {
        panic!("XPENDING")
    };
    let pending_ids: std::collections::HashSet<Vec<u8>> = pending_entries
        .into_iter()
        .map(|e| match e {
            OwnedFrame::Array(p) => match &p[0] {
                OwnedFrame::Bulk(id) => id.clone(),
                _ => panic!(),
            },
            _ => panic!(),
        })
        .collect();
    // The entries delivered to the group: up to its last-delivered-id.
    let OwnedFrame::Array(groups) = call(a.addr(), &[b"XINFO", b"GROUPS", b"in"]).unwrap() else {
        panic!("XINFO")
    };
    let OwnedFrame::Array(fields) = &groups[0] else {
        panic!("a group")
    };
    let at = fields
        .iter()
        .position(|f| *f == OwnedFrame::Bulk(b"last-delivered-id".to_vec()))
        .unwrap();
    let OwnedFrame::Bulk(last) = &fields[at + 1] else {
        panic!("last-delivered-id")
    };
    let last = EntryId::parse(last).unwrap();
    let mut lost = 0;
    let mut delivered = 0;
    for (i, id) in ids.iter().enumerate() {
        if EntryId::parse(id.as_bytes()).unwrap() > last {
            break;
        }
        delivered += 1;
        let acked = !pending_ids.contains(id.as_bytes());
        if acked && payloads[i] != b"not json" && !outputs.contains(id.as_bytes()) {
            lost += 1;
        }
    }
    assert!(delivered > 2000, "{delivered}");
    assert_eq!(
        lost, 0,
        "of {delivered} delivered, acknowledged without output"
    );
}
