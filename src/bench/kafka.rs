//! The kafka workload: Kafka → `enrich` (built-in lookup) → Kafka, against the broker's
//! ceiling for the same traffic, in the same run:
//!
//! - **ceiling**: a plain rdkafka consume→produce loop with no lookup: one consumer in a
//!   group of its own reads the input topic, one producer (the job's settings: idempotent,
//!   `acks=all`) writes each message to the same partition of another topic, and the
//!   consumed offsets are committed every 100 ms; timed from the subscribe to the last
//!   delivery;
//! - **job**: `ringwait enrich --input kafka://… --output kafka://… --until caught-up` over
//!   the same messages (its own group), timed from the start to the end of the run;
//! - **latency**: the job running while a producer sends messages at 10% of the job's
//!   measured rate, each stamped with the time it is sent; a reader of the output topic
//!   takes the time each arrives there. The figures are that difference (end to end).
//!
//! Each input message is a ~100-byte record whose key the built-in store holds. The topics
//! (4 partitions each) are created for the run under a name of their own and deleted after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::connect::kafka::{self, KafkaStart, KafkaUrl};
use crate::enrich::{EnrichConfig, Input, Output, StreamOptions};
use crate::source::BoxError;

use super::{BenchConfig, BenchResult, JobRun};

/// Messages sent before the latency run's stamped ones (and not measured).
const WARM_UP: u64 = 1_000;

/// Partitions of every topic the workload creates.
const PARTITIONS: i32 = 4;

/// The run's topics: created at the start, deleted at the end (also when it fails).
struct Topics {
    admin: AdminClient<DefaultClientContext>,
    tag: String,
    made: Vec<String>,
}

impl Topics {
    fn new(brokers: &KafkaUrl) -> Result<Topics, BoxError> {
        let admin = kafka::admin_client(brokers).map_err(|e| e.to_string())?;
        let tag = format!(
            "ringwait-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        Ok(Topics {
            admin,
            tag,
            made: Vec::new(),
        })
    }

    /// Creates `{tag}-{name}` and returns its name.
    fn create(&mut self, name: &str) -> Result<String, BoxError> {
        let topic = format!("{}-{name}", self.tag);
        let new = NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(kafka::REQUEST_TIMEOUT));
        let results = futures_lite::future::block_on(self.admin.create_topics([&new], &opts))
            .map_err(|e| format!("creating the topic {topic}: {e}"))?;
        for r in results {
            r.map_err(|(t, code)| format!("creating the topic {t}: {code}"))?;
        }
        self.made.push(topic.clone());
        Ok(topic)
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        if self.made.is_empty() {
            return;
        }
        let names: Vec<&str> = self.made.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(kafka::REQUEST_TIMEOUT));
        let deleted = futures_lite::future::block_on(self.admin.delete_topics(&names, &opts));
        let failed: Vec<String> = match deleted {
            Ok(results) => results
                .into_iter()
                .filter_map(|r| r.err().map(|(t, code)| format!("{t} ({code})")))
                .collect(),
            Err(e) => vec![format!("{names:?} ({e})")],
        };
        if !failed.is_empty() {
            eprintln!("bench kafka: could not delete the topic(s) {failed:?}; delete them by hand");
        }
    }
}

/// Runs the three parts against the brokers `bootstrap` with `cfg.records` messages.
pub fn run_kafka(cfg: &BenchConfig, bootstrap: &str) -> Result<JobRun, BoxError> {
    let records = cfg.records.max(1);
    let brokers = KafkaUrl {
        brokers: bootstrap.split(',').map(str::to_string).collect(),
        topics: Vec::new(),
        group: None,
        start: KafkaStart::Earliest,
    };
    let mut topics = Topics::new(&brokers)?;
    let input = topics.create("in")?;
    let ceiling_out = topics.create("ceiling-out")?;
    let job_out = topics.create("job-out")?;
    load(&brokers, &input, records)?;
    let tag = topics.tag.clone();
    let group = |name: &str| format!("{tag}-{name}");
    let ceiling = ceiling(&brokers, &input, &ceiling_out, &group("ceiling"), records)?;
    let config = job_config(cfg, &brokers, &input, &job_out, &group("job"), true);
    let started = Instant::now();
    let summary = crate::enrich::run(config)?;
    let job_s = started.elapsed().as_secs_f64();
    let job_rate = summary.records as f64 / job_s;
    if summary.records != records {
        return Err(format!(
            "the job delivered {} of {records} messages",
            summary.records
        )
        .into());
    }
    let rate = (job_rate / 10.0).max(100.0);
    let lat_in = topics.create("latency-in")?;
    let lat_out = topics.create("latency-out")?;
    let n = records.min((rate * 3.0) as u64).max(100);
    let latency = latency_run(
        cfg,
        &brokers,
        (&lat_in, &lat_out),
        &group("latency"),
        rate,
        n,
    )?;
    let hop = raw_hop(&brokers, &topics.create("hop")?, rate, n)?;
    let result = BenchResult::from_histogram("kafka", cfg, records, job_rate, &latency);
    let lines = vec![
        format!(
            "workload=kafka part=ceiling records={records} records_per_s={ceiling:.1} \
             what=rdkafka consume->produce loop, no lookup, offsets committed every 100 ms"
        ),
        format!(
            "workload=kafka part=job records={records} records_per_s={job_rate:.1} \
             of_ceiling={:.2} (target >= 0.80)",
            job_rate / ceiling
        ),
        format!(
            "workload=kafka part=latency rate={rate:.0} messages={} p50_us={:.1} p99_us={:.1} \
             p999_us={:.1} max_us={:.1} (send of the input to its output read)",
            latency.len(),
            result.p50_us,
            result.p99_us,
            result.p999_us,
            result.max_us
        ),
        format!(
            "workload=kafka part=broker_hop rate={rate:.0} messages={} p50_us={:.1} p99_us={:.1} \
             (one send to read through the broker, no job: the job's path has two)",
            hop.len(),
            hop.value_at_quantile(0.5) as f64 / 1e3,
            hop.value_at_quantile(0.99) as f64 / 1e3,
        ),
    ];
    Ok(JobRun {
        result,
        latency,
        lines,
    })
}

fn url(brokers: &KafkaUrl, topic: &str, group: Option<&str>) -> KafkaUrl {
    KafkaUrl {
        topics: vec![topic.to_string()],
        group: group.map(str::to_string),
        ..brokers.clone()
    }
}

fn job_config(
    cfg: &BenchConfig,
    brokers: &KafkaUrl,
    input: &str,
    output: &str,
    group: &str,
    until: bool,
) -> EnrichConfig {
    super::enrich_job(
        cfg,
        Input::Kafka(Box::new(url(brokers, input, Some(group)))),
        Output::Kafka(Box::new(url(brokers, output, None))),
        StreamOptions {
            until_caught_up: until,
            ..StreamOptions::default()
        },
    )
}

/// Counts the deliveries that failed (librdkafka's `flush` returns Ok all the same).
#[derive(Default)]
struct FailedDeliveries(AtomicU64);

impl rdkafka::ClientContext for FailedDeliveries {}

impl rdkafka::producer::ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The workload's producers: the job's settings, failed deliveries counted.
type CountingProducer = BaseProducer<FailedDeliveries>;

/// A producer with the job's settings.
fn producer(brokers: &KafkaUrl) -> Result<CountingProducer, BoxError> {
    Ok(kafka::producer_config(brokers, &[]).create_with_context(FailedDeliveries::default())?)
}

/// Waits for every message `p` sent; an error if any was not delivered.
fn flushed(p: &CountingProducer, topic: &str) -> Result<(), BoxError> {
    p.flush(Duration::from_secs(60))
        .map_err(|e| format!("producing to {topic}: {e}"))?;
    match p.context().0.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(format!("{n} message(s) to {topic} were not delivered").into()),
    }
}

/// Sends `n` records stamped `t(i)` to `topic`, spread over its partitions; `rate` per
/// second, or as fast as the producer goes (`None`).
fn send(
    p: &CountingProducer,
    topic: &str,
    n: u64,
    rate: Option<f64>,
    t: impl Fn() -> u64,
) -> Result<(), BoxError> {
    let mut payload = Vec::with_capacity(128);
    let started = Instant::now();
    let mut i = 0u64;
    while i < n {
        let due = rate.map_or(n, |r| {
            ((started.elapsed().as_secs_f64() * r) as u64 + 1).min(n)
        });
        while i < due {
            super::stream::record(i, t(), &mut payload);
            let partition = (i % PARTITIONS as u64) as i32;
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload[..]);
            match p.send(record) {
                Ok(()) => i += 1,
                Err((e, _))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("producing to {topic}: {e}").into()),
            }
        }
        p.poll(Duration::ZERO);
        if rate.is_some() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    flushed(p, topic)
}

/// The input: `n` records, produced before anything is timed.
fn load(brokers: &KafkaUrl, topic: &str, n: u64) -> Result<(), BoxError> {
    send(&producer(brokers)?, topic, n, None, || 0)
}

/// The broker's ceiling for the traffic: messages per second moved from `input` to `output`
/// by a plain consume→produce loop.
fn ceiling(
    brokers: &KafkaUrl,
    input: &str,
    output: &str,
    group: &str,
    records: u64,
) -> Result<f64, BoxError> {
    // Timed as the job is: from the clients' creation to their end.
    let started = Instant::now();
    let consumer: BaseConsumer =
        kafka::consumer_config(&url(brokers, input, Some(group)), group, &[]).create()?;
    let p = producer(brokers)?;
    consumer.subscribe(&[input])?;
    let mut next = [0i64; PARTITIONS as usize];
    let (mut moved, mut last_commit) = (0u64, Instant::now());
    let commit = |next: &[i64], mode| {
        let mut tpl = TopicPartitionList::new();
        for (partition, &o) in next.iter().enumerate() {
            if o > 0 {
                let _ = tpl.add_partition_offset(input, partition as i32, Offset::Offset(o));
            }
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode)
        } else {
            Ok(())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while moved < records {
        if Instant::now() > deadline {
            return Err(format!("the ceiling loop moved {moved} of {records} in 600 s").into());
        }
        if last_commit.elapsed() >= Duration::from_millis(100) {
            let _ = commit(&next, CommitMode::Async);
            last_commit = Instant::now();
        }
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = m.map_err(|e| format!("the ceiling loop reading {input}: {e}"))?;
        let slot = &mut next[m.partition() as usize];
        if m.offset() < *slot {
            continue; // a batch the broker sent again
        }
        *slot = m.offset() + 1;
        let mut record = BaseRecord::<[u8], [u8]>::to(output)
            .partition(m.partition())
            .payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        let mut pending = Some(record);
        while let Some(r) = pending.take() {
            if let Err((e, r)) = p.send(r) {
                if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    return Err(format!("the ceiling loop producing: {e}").into());
                }
                p.poll(Duration::from_millis(1));
                pending = Some(r);
            }
        }
        moved += 1;
        if moved % 256 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    flushed(&p, output)?;
    commit(&next, CommitMode::Sync)?;
    drop(p);
    drop(consumer);
    Ok(moved as f64 / started.elapsed().as_secs_f64())
}

/// The job running while `n` messages arrive at `rate` per second: each message's time
/// from its send to its output's read.
fn latency_run(
    cfg: &BenchConfig,
    brokers: &KafkaUrl,
    (input, output): (&str, &str),
    group: &str,
    rate: f64,
    n: u64,
) -> Result<Histogram<u64>, BoxError> {
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = job_config(cfg, brokers, input, output, group, false);
    config.stop = Some(stop.clone());
    let job = std::thread::spawn(move || crate::enrich::run(config));
    let (watch, seen, quit) = spawn_watch(brokers, output, n, clock);
    let ready = wait_for_assignment(brokers, input, group, &job);
    let produced = ready.and_then(|()| send_stamped(brokers, input, n, rate, clock, &seen));
    if produced.is_err() {
        quit.store(true, Ordering::Relaxed);
    }
    let seen = watch.join().expect("the output reader");
    stop.store(true, Ordering::Relaxed);
    let ran = job.join().expect("the job thread");
    // The job's own failure first: it explains a failure to produce or to see outputs.
    ran?;
    produced?;
    seen
}

/// The timed part of a latency run: a producer of its own sends the warm-up to `topic`, then
/// `n` messages at `rate`, each stamped with its send time on `clock`.
fn send_stamped(
    brokers: &KafkaUrl,
    topic: &str,
    n: u64,
    rate: f64,
    clock: Instant,
    seen: &AtomicU64,
) -> Result<(), BoxError> {
    let p = producer(brokers)?;
    warm_up(&p, topic, seen)?;
    send(&p, topic, n, Some(rate), || {
        clock.elapsed().as_nanos() as u64
    })
}

/// Sends the unstamped warm-up messages and waits until they are all read at the end of
/// the path: the producer's start (its idempotent id, connections) and a job's first
/// fetches are not what is measured.
fn warm_up(p: &CountingProducer, topic: &str, seen: &AtomicU64) -> Result<(), BoxError> {
    send(p, topic, WARM_UP, None, || 0)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < WARM_UP {
        if Instant::now() > deadline {
            return Err("the warm-up messages did not come through within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The broker's own hop at `rate`: `n` stamped messages sent to `topic` (after the
/// warm-up) and read from it with the job's consumer settings, no job between.
fn raw_hop(brokers: &KafkaUrl, topic: &str, rate: f64, n: u64) -> Result<Histogram<u64>, BoxError> {
    let clock = Instant::now();
    let (watch, seen, quit) = spawn_watch(brokers, topic, n, clock);
    let sent = send_stamped(brokers, topic, n, rate, clock, &seen);
    if sent.is_err() {
        quit.store(true, Ordering::Relaxed);
    }
    let read = watch.join().expect("the hop's reader");
    sent?;
    read
}

/// Waits until the job set up every partition of `input` (a partition new to the group is
/// committed at its start before anything is read), so the latencies measure the running
/// job, not its start.
fn wait_for_assignment(
    brokers: &KafkaUrl,
    input: &str,
    group: &str,
    job: &std::thread::JoinHandle<Result<crate::enrich::EnrichSummary, crate::enrich::EnrichError>>,
) -> Result<(), BoxError> {
    let client: BaseConsumer =
        kafka::consumer_config(&url(brokers, input, Some(group)), group, &[]).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(input, p);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if job.is_finished() {
            return Err("the latency run's job ended before it was assigned".into());
        }
        if let Ok(c) = client.committed_offsets(tpl.clone(), kafka::REQUEST_TIMEOUT) {
            if c.elements()
                .iter()
                .all(|e| matches!(e.offset(), Offset::Offset(_)))
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("the latency run's job was not assigned within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reader of the output (see [`watch_output`]) on a thread of its own, with how many
/// messages it saw and the flag that stops it.
#[allow(clippy::type_complexity)]
fn spawn_watch(
    brokers: &KafkaUrl,
    output: &str,
    n: u64,
    clock: Instant,
) -> (
    std::thread::JoinHandle<Result<Histogram<u64>, BoxError>>,
    Arc<AtomicU64>,
    Arc<AtomicBool>,
) {
    let (seen, quit) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (brokers, output) = (brokers.clone(), output.to_string());
    let (s, q) = (seen.clone(), quit.clone());
    let watch = std::thread::spawn(move || watch_output(&brokers, &output, n, clock, &s, &q));
    (watch, seen, quit)
}

/// Reads `output` as messages arrive until `n` did; each message's latency is now minus its
/// record's `ts`.
fn watch_output(
    brokers: &KafkaUrl,
    output: &str,
    n: u64,
    clock: Instant,
    seen: &AtomicU64,
    quit: &AtomicBool,
) -> Result<Histogram<u64>, BoxError> {
    // The job's consumer settings (its fetch wait): what a reader of the output sees.
    let consumer: BaseConsumer =
        kafka::consumer_config(brokers, "ringwait-bench-watch", &[]).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next = [0i64; PARTITIONS as usize];
    let mut h = crate::metrics::latency_histogram();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::Relaxed) < n + WARM_UP {
        if quit.load(Ordering::Relaxed) {
            return Err("stopped: nothing more is sent".into());
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} messages reached the output", h.len()).into());
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let now = clock.elapsed().as_nanos() as u64;
        let slot = &mut next[m.partition() as usize];
        if m.offset() < *slot {
            continue;
        }
        *slot = m.offset() + 1;
        seen.fetch_add(1, Ordering::Relaxed);
        match m.payload().and_then(super::stream::stamp) {
            Some(0) => {} // warm-up
            Some(t) => {
                h.saturating_record(now.saturating_sub(t).max(1));
            }
            None => {
                return Err(format!(
                    "an output without its stamp at {output}/{}/{}",
                    m.partition(),
                    m.offset()
                )
                .into())
            }
        }
    }
    Ok(h)
}
