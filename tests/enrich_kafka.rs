//! `ringwait enrich` from Kafka to Kafka against a real Kafka-protocol broker (`tansu`, from
//! `scripts/ensure-kafka`): records pass through byte for byte with the looked-up field
//! added, keys, timestamps and headers pass through, each output names its source, and each
//! Kafka partition keeps its order.
//!
//! Every check reads the output topic independently and matches it against the input.

mod common;
mod job_support;
mod tier;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::kafka::Read;
use common::kafka::{Broker, Message};
use job_support::{crash_seed, kill_and_restart, refused, ringwait, stderr, Rng};
use rdkafka::consumer::Consumer;

const KEYS: u64 = 500;

fn record(i: u64) -> Vec<u8> {
    format!(
        "{{\"id\":{i},\"key\":\"k:{}\",\"px\":1.50e2,\"pad\":\"{}\"}}",
        (i * 7919) % KEYS,
        "x".repeat((i % 7) as usize)
    )
    .into_bytes()
}

fn value(key: u64) -> String {
    String::from_utf8(ringwait::dataset::value_of(key).to_vec()).unwrap()
}

/// The record with its value added, as the job writes it.
fn enriched(i: u64) -> Vec<u8> {
    let r = String::from_utf8(record(i)).unwrap();
    let key = (i * 7919) % KEYS;
    format!("{},\"value\":\"{}\"}}", &r[..r.len() - 1], value(key)).into_bytes()
}

fn messages(n: u64, partitions: i32) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
            let headers = if i % 2 == 0 {
                vec![("trace".to_string(), format!("t{i}").into_bytes())]
            } else {
                vec![]
            };
            ((i % partitions as u64) as i32, key, record(i), headers)
        })
        .collect()
}

#[test]
fn records_keys_headers_and_order_pass_through() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n = 4_000u64;
    broker.produce("in", &messages(n, 4));
    let input = format!("kafka://{}/in?group=g", broker.addr());
    let output = format!("kafka://{}/out", broker.addr());
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        &output,
        "--until",
        "caught-up",
        "--mode",
        "ordered",
        "--partitions",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = broker.read_all("out", 4);
    assert_eq!(out.len() as u64, n, "{}", stderr(&o));
    let mut last = [-1i64; 4];
    for m in &out {
        let src = std::str::from_utf8(m.header("ringwait-src").expect("src header")).unwrap();
        let (t, rest) = src.split_once('/').unwrap();
        let (p, off) = rest.split_once('/').unwrap();
        let (p, off): (i32, i64) = (p.parse().unwrap(), off.parse().unwrap());
        assert_eq!(
            (t, p),
            ("in", m.partition),
            "output on the input's partition"
        );
        assert!(
            off > last[p as usize],
            "partition {p}: {off} after {}",
            last[p as usize]
        );
        last[p as usize] = off;
        // Offsets of partition p hold records p, p+4, p+8, … in order.
        let i = off as u64 * 4 + p as u64;
        assert_eq!(m.value, enriched(i), "record {i}");
        let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
        assert_eq!(m.key, key, "record {i}'s key");
        assert_eq!(
            m.header("trace").map(<[u8]>::to_vec),
            (i % 2 == 0).then(|| format!("t{i}").into_bytes()),
            "record {i}'s headers"
        );
        assert_eq!(m.timestamp, Some(1_700_000_000_000 + i64::from(p)));
    }
    let e = stderr(&o);
    assert!(
        e.contains(&format!("kafka: read {n}, delivered {n}, landed before 0")),
        "{e}"
    );
}

/// Which order the outputs must keep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    None,
    /// Each input partition's.
    Partition,
    /// Each key's, within its input partition.
    PerKey,
}

/// Checks every output against the input: each input message `(p, offset)` of the `n`
/// produced has exactly one output, byte for byte right; the order kept as asked.
fn check_outputs(out: &[Read], n: u64, partitions: u64, order: Order, context: &str) {
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    let mut last: HashMap<(i32, u64), i64> = HashMap::new();
    let mut wrong = 0;
    for m in out {
        let src = std::str::from_utf8(m.header("ringwait-src").expect("src")).unwrap();
        let mut it = src.split('/');
        let (_t, p, off): (&str, i32, i64) = (
            it.next().unwrap(),
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        );
        *seen.entry((p, off)).or_default() += 1;
        let i = off as u64 * partitions + p as u64;
        if m.value != enriched(i) || m.partition != p {
            wrong += 1;
        }
        let lane = match order {
            Order::None => continue,
            Order::Partition => 0,
            Order::PerKey => (i * 7919) % KEYS,
        };
        if let Some(prev) = last.insert((p, lane), off) {
            assert!(
                prev < off,
                "{context}: {p}/{off} came after {p}/{prev} (order)"
            );
        }
    }
    let duplicated = seen.values().filter(|c| **c > 1).count();
    let lost = (0..n)
        .filter(|i| !seen.contains_key(&((i % partitions) as i32, (i / partitions) as i64)))
        .count();
    assert_eq!(
        (lost, duplicated, wrong),
        (0, 0, 0),
        "{context}: lost, duplicated, wrong"
    );
}

/// SIGKILLs the job at random moments and restarts it with the same command until it
/// finishes (`--until caught-up`); then an independent reader checks the output.
fn kill_loop(mode: &str) {
    let kills_wanted = tier::size("kafka kills per mode", 30u64, 300);
    let n = tier::size("kafka records per kill loop", 200_000u64, 1_000_000);
    let seed = crash_seed();
    let mut rng = Rng(seed);
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    broker.produce("in", &messages(n, 4));
    let args: Vec<String> = [
        "enrich",
        "--input",
        &format!("kafka://{}/in?group=g", broker.addr()),
        "--output",
        &format!("kafka://{}/out", broker.addr()),
        "--until",
        "caught-up",
        "--mode",
        mode,
        "--partitions",
        "2",
        // A dead instance's partitions move after its session times out: 2 s keeps the
        // loop short (the default is 10 s).
        "--kafka-config",
        "session.timeout.ms=2000",
        "--kafka-config",
        "heartbeat.interval.ms=300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = std::env::temp_dir().join(format!("rw-kafka-kill-{}-{mode}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let context = format!("{mode}, seed {seed} (RINGWAIT_CRASH_SEED={seed} replays)");
    let started = Instant::now();
    let kills = kill_and_restart(
        &args,
        &log,
        &context,
        Duration::from_secs(900),
        // A run takes about 0.5 s to join the group and set up its partitions, then moves
        // a few hundred thousand messages a second: lives of 0.2-1.4 s kill it in every
        // phase (before, during and after the set-up, mid-stream) and leave most of the
        // 200k messages for later lives, so the loop reaches its kills before the end.
        |kills| (kills < kills_wanted).then(|| Duration::from_millis(200 + rng.below(1_200))),
        // tansu 0.6 does not hand a dead member's partitions to a member that joined while
        // it was still in the group (the survivor keeps its old assignment; reproduced with
        // two instances), so the next run joins once the dead one's 2 s session is over.
        // Remove when a fixed broker is available.
        || std::thread::sleep(Duration::from_millis(2_300)),
    );
    assert!(
        kills >= kills_wanted,
        "{context}: the job finished after {kills} kills; fewer than {kills_wanted}"
    );
    let order = match mode {
        "ordered" => Order::Partition,
        "key-ordered" => Order::PerKey,
        _ => Order::None,
    };
    let out = broker.read_all("out", 4);
    check_outputs(&out, n, 4, order, &context);
    eprintln!(
        "{context}: {kills} kills, {n} records in {:?}: lost 0, duplicated 0, wrong 0",
        started.elapsed()
    );
}

#[test]
fn sigkill_loop_unordered_loses_and_duplicates_nothing() {
    kill_loop("unordered");
}

#[test]
fn sigkill_loop_ordered_keeps_each_partitions_order() {
    kill_loop("ordered");
}

#[test]
fn sigkill_loop_key_ordered_keeps_each_keys_order() {
    kill_loop("key-ordered");
}

/// The job's arguments for `input` → `output` on `broker` (the default 10 s session).
fn job_args(broker: &Broker, input: &str, output: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "enrich",
        "--input",
        &format!("kafka://{}/{input}", broker.addr()),
        "--output",
        &format!("kafka://{}/{output}", broker.addr()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn bad_messages_go_through_the_error_policy_named_by_partition_and_offset() {
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.create_topic("errors", 1);
    let bad: Vec<Message> = vec![
        (0, None, record(0), vec![]),
        (0, None, b"not json".to_vec(), vec![]),
        (0, None, vec![0xff, 0xfe], vec![]),
        (0, None, b"{\"id\":3}".to_vec(), vec![]),
        (0, None, record(4), vec![]),
    ];
    broker.produce("in", &bad);
    // fail: names the message; nothing after it is committed.
    let args = job_args(&broker, "in?group=f", "out", &["--until", "caught-up"]);
    let o = ringwait(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("message in/0/1:"), "{e}");
    // side-output: each bad message goes to the side topic as it came, with why.
    let side = "side-output:errors".to_string();
    let args = job_args(
        &broker,
        "in?group=s",
        "out",
        &["--until", "caught-up", "--on-error", &side],
    );
    let o = ringwait(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let errors = broker.read_all("errors", 1);
    let srcs: Vec<&[u8]> = errors
        .iter()
        .map(|m| m.header("ringwait-src").unwrap())
        .collect();
    assert_eq!(srcs, [&b"in/0/1"[..], b"in/0/2", b"in/0/3"]);
    assert_eq!(errors[1].value, vec![0xff, 0xfe], "the payload as it came");
    assert!(errors.iter().all(|m| m.header("ringwait-error").is_some()));
    let out = broker.read_all("out", 1);
    assert_eq!(
        out.len(),
        3,
        "records 0 and 4, and 0 again from the run that failed? {out:?}"
    );
}

#[test]
fn unknown_topics_and_unreachable_brokers_are_refused_with_one_line() {
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    let a = broker.addr();
    let started = Instant::now();
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{a}/nope?group=g"),
            "--output",
            &format!("kafka://{a}/out"),
        ],
        "the topic \"nope\" does not exist",
    );
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{a}/in?group=g"),
            "--output",
            &format!("kafka://{a}/nope"),
        ],
        "the topic \"nope\" does not exist",
    );
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{a}/in"),
            "--output",
            &format!("kafka://{a}/out"),
        ],
        "?group=NAME",
    );
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{a}/in?group=g"),
            "--output",
            &format!("kafka://{a}/in"),
        ],
        "is also an input topic",
    );
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{a}/in?group=g"),
            "--output",
            "out.jsonl",
        ],
        "a Kafka input needs a Kafka output",
    );
    let dead = format!("127.0.0.1:{}", common::redis::free_port());
    refused(
        &[
            "enrich",
            "--input",
            &format!("kafka://{dead}/in?group=g"),
            "--output",
            &format!("kafka://{dead}/out"),
        ],
        "cannot reach the Kafka broker(s)",
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// Waits until the output topic holds at least `n` messages (read from the broker's
/// partition ends), with the job still running.
fn wait_for_outputs(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    n: i64,
    job: &mut std::process::Child,
) {
    let c = broker.plain_consumer();
    let started = Instant::now();
    loop {
        // All the partitions' ends in one fetch: a check that waits for each in turn can
        // see the first output only after a loaded machine's job has finished.
        let parts: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
        let total: i64 =
            ringwait::connect::kafka::true_ends(&c, &parts).map_or(0, |ends| ends.iter().sum());
        if total >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{total} outputs after 120 s"
        );
        assert!(job.try_wait().unwrap().is_none(), "the job exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stopped_job_shows_its_metrics_commits_and_the_next_run_goes_on() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n = 40_000u64;
    broker.produce("in", &messages(n, 4));
    let metrics = format!("127.0.0.1:{}", job_support::free_port());
    // No --until: it runs until stopped; a small capacity keeps it from finishing at once.
    let args = job_args(
        &broker,
        "in?group=g",
        "out",
        &["--capacity", "64", "--metrics", &metrics],
    );
    let mut job = job_support::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_outputs(&broker, "out", 4, 500, &mut job);
    let addr: std::net::SocketAddr = metrics.parse().unwrap();
    let started = Instant::now();
    let mut body = String::new();
    while !body.contains("ringwait_kafka_lag{group=\"g\",topic=\"in\",partition=\"3\"}") {
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        body = ringwait::metrics_http::fetch(addr).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(50));
    }
    for family in [
        "ringwait_kafka_read_total{group=\"g\"}",
        "ringwait_kafka_delivered_total{group=\"g\"}",
        "ringwait_kafka_landed_before_total{group=\"g\"} 0",
        "ringwait_kafka_rebalances_total{group=\"g\"}",
        "ringwait_kafka_produce_seconds_count{group=\"g\"}",
        "ringwait_kafka_lag{group=\"g\",topic=\"in\",partition=\"0\"}",
    ] {
        assert!(body.contains(family), "missing {family} in:\n{body}");
    }
    job_support::signal(&job, libc::SIGTERM);
    let status = job_support::wait_at_most(&mut job, Duration::from_secs(60));
    let err = job_support::stderr_of(&mut job);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("kafka: read "), "{err}");
    // The rest, by the next run of the same group: it starts at the committed offsets.
    let args = job_args(&broker, "in?group=g", "out", &["--until", "caught-up"]);
    let o = ringwait(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    check_outputs(
        &broker.read_all("out", 4),
        n,
        4,
        Order::None,
        "stop and go on",
    );
}

// tansu 0.6 memory storage loses every topic when it restarts, so a broker "restart" that
// keeps the data is a stall here: the process stopped (SIGSTOP) and resumed.
#[test]
fn a_broker_that_stalls_mid_run_is_waited_for_and_nothing_is_lost() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    // Enough that the job is still at it when the broker stops (it moves a few hundred
    // thousand a second), which the test checks.
    let n = 300_000u64;
    broker.produce("in", &messages(n, 4));
    let args = job_args(
        &broker,
        "in?group=g",
        "out",
        &[
            "--until",
            "caught-up",
            "--mode",
            "ordered",
            "--capacity",
            "64",
        ],
    );
    let mut job = job_support::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_outputs(&broker, "out", 4, 1, &mut job);
    broker.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(6));
    broker.signal(libc::SIGCONT);
    if let Some(status) = job.try_wait().unwrap() {
        let err = job_support::stderr_of(&mut job);
        panic!("the job ended ({status}) while the broker stalled:\n{err}");
    }
    let status = job_support::wait_at_most(&mut job, Duration::from_secs(180));
    let err = job_support::stderr_of(&mut job);
    assert!(status.success(), "{err}");
    check_outputs(
        &broker.read_all("out", 4),
        n,
        4,
        Order::Partition,
        "a stalled broker",
    );
}

#[test]
fn a_broker_gone_for_good_stops_the_job_with_one_clear_line_in_bounded_time() {
    let mut broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    broker.produce("in", &messages(40_000, 4));
    let args = job_args(&broker, "in?group=g", "out", &["--capacity", "64"]);
    let mut job = job_support::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_outputs(&broker, "out", 4, 500, &mut job);
    broker.kill();
    let killed = Instant::now();
    let status = job_support::wait_at_most(&mut job, Duration::from_secs(180));
    let err = job_support::stderr_of(&mut job);
    assert_eq!(status.code(), Some(1), "{err}");
    // The reader (nothing fetched for 60 s) or the writer (an output not acknowledged
    // within librdkafka's 60 s message timeout) sees it first; either names the brokers.
    let last = err.lines().last().unwrap_or_default();
    let brokers = format!("Kafka broker(s) {}", broker.addr());
    assert!(
        last.contains(&format!("the {brokers} stayed unreachable"))
            || (last.contains(&brokers) && last.contains("no broker acknowledged it")),
        "{err}"
    );
    eprintln!(
        "the job stopped {:?} after the broker died: {last}",
        killed.elapsed()
    );
}

#[test]
fn the_kafka_benchmark_reports_the_job_against_a_plain_loop_on_the_same_broker() {
    let broker = Broker::start();
    let o = ringwait(&[
        "bench",
        "--workload",
        "kafka",
        "--kafka",
        &broker.addr(),
        "--records",
        "3000",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for part in [
        "workload=kafka part=ceiling records=3000 records_per_s=",
        "workload=kafka part=job records=3000 records_per_s=",
        "of_ceiling=",
        "workload=kafka part=latency rate=",
        "workload=kafka part=broker_hop rate=",
    ] {
        assert!(out.contains(part), "missing {part} in:\n{out}");
    }
    // The workload's topics are gone after it.
    let c = broker.plain_consumer();
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let left: Vec<&str> = md
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with("ringwait-bench-"))
        .collect();
    assert!(left.is_empty(), "topics left behind: {left:?}");
}
