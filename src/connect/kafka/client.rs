//! The librdkafka clients: their settings, metadata and offsets, and the reads that resume
//! exactly at an offset (on tansu 0.6 too).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaStart, KafkaUrl};

/// How long a blocking metadata, watermark or offset request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka client's failure.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConnError {
    /// librdkafka reported an error.
    #[error("{what}: {cause}")]
    Client {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        cause: rdkafka::error::KafkaError,
    },
    /// The broker answered something the protocol or the job does not allow.
    #[error("{0}")]
    Broker(String),
}

impl KafkaConnError {
    /// Wraps a librdkafka error with what was being done.
    pub fn client(what: impl Into<String>, cause: rdkafka::error::KafkaError) -> Self {
        KafkaConnError::Client {
            what: what.into(),
            cause,
        }
    }
}

/// Settings the job owns, because what it guarantees rests on them: `--kafka-config`
/// refuses them.
pub const RESERVED_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "allow.auto.create.topics",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "message.timeout.ms",
    // The reader's rebalance handling is eager (revoke all, assign all).
    "partition.assignment.strategy",
    "group.protocol",
];

/// Which of `extra` the job refuses (see [`RESERVED_SETTINGS`]).
pub fn reserved_setting(extra: &[(String, String)]) -> Option<&str> {
    extra
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| RESERVED_SETTINGS.contains(k))
}

/// A configuration holding the user's `--kafka-config` settings and what every client of
/// the job sets: the brokers, its name, librdkafka's errors only. Each client's own go on
/// top.
fn with(url: &KafkaUrl, extra: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in extra {
        c.set(k, v);
    }
    c.set("bootstrap.servers", url.bootstrap())
        .set("client.id", "ringwait")
        .set("log_level", "3");
    c
}

/// The consumer settings of an input read through `group`: offsets committed by the job
/// only, never created topics, a short session so a dead instance's partitions move soon.
pub fn consumer_config(url: &KafkaUrl, group: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut c = with(url, extra);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set(
            "auto.offset.reset",
            match url.start {
                KafkaStart::Earliest => "earliest",
                KafkaStart::Latest => "latest",
            },
        )
        .set("fetch.wait.max.ms", "50")
        // Whole batches in a fetch: a fetch that resumes inside a batch is what tansu 0.6
        // gets wrong (see `safe_start`).
        .set("max.partition.fetch.bytes", "67108864")
        .set("fetch.max.bytes", "134217728");
    // A short session, so a dead instance's partitions move soon, unless set.
    for (k, v) in [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        if c.get(k).is_none() {
            c.set(k, v);
        }
    }
    c
}

/// The producer settings of an output: idempotent (no duplicate and no reordering from
/// librdkafka's own retries), acknowledged by every in-sync replica, a message given up
/// after `SERVER_DOWN_LIMIT`-like 60 s.
pub fn producer_config(url: &KafkaUrl, extra: &[(String, String)]) -> ClientConfig {
    let mut c = with(url, extra);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // Batches of at most 1,000: a later read-back that starts inside one (tansu 0.6,
        // see `safe_start`) steps back at most a few times.
        .set("batch.num.messages", "1000")
        .set("message.timeout.ms", "60000");
    c
}

/// A consumer outside any group, for metadata, watermarks and read-backs.
pub fn plain_consumer(
    url: &KafkaUrl,
    extra: &[(String, String)],
) -> Result<BaseConsumer, KafkaConnError> {
    let mut c = with(url, extra);
    c.set("group.id", "ringwait-readback")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "50");
    c.create()
        .map_err(|e| KafkaConnError::client("creating a Kafka client", e))
}

/// How many partitions `topic` has; an error that names it if it does not exist.
pub fn partition_count(client: &BaseConsumer, topic: &str) -> Result<i32, KafkaConnError> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| KafkaConnError::client(format!("reading the metadata of {topic:?}"), e))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaConnError::Broker(format!("the broker did not describe {topic:?}")))?;
    if let Some(e) = t.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(e);
        return Err(KafkaConnError::Broker(match code {
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition => {
                format!("the topic {topic:?} does not exist")
            }
            other => format!("the topic {topic:?}: {other}"),
        }));
    }
    if t.partitions().is_empty() {
        return Err(KafkaConnError::Broker(format!(
            "the topic {topic:?} does not exist (no partitions)"
        )));
    }
    Ok(t.partitions().len() as i32)
}

/// A partition's low and high watermarks.
pub fn watermarks(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), KafkaConnError> {
    client
        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
        .map_err(|e| {
            KafkaConnError::client(format!("reading the offsets of {topic}/{partition}"), e)
        })
}

/// Longest wait for the first message of a fetch: then the fetch is taken as empty.
const QUIET: Duration = Duration::from_millis(150);

/// A partition's watermarks as librdkafka last saw them in a fetch response.
///
/// tansu 0.6 answers ListOffsets(latest) with the last batch's first offset + 1, not the
/// partition's end, so [`watermarks`]' high mark is wrong there; a fetch response's is
/// right. `None` before any fetch of the partition.
pub fn cached_watermarks<C: rdkafka::consumer::ConsumerContext>(
    client: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client's handle is valid for as long as `client` lives, `topic` is a
    // NUL-terminated string that outlives the call, and `low`/`high` are valid for writes;
    // librdkafka only reads its own cache under its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

/// A partition's true end: one fetch from its start, then the end the response gave.
pub fn true_end(client: &BaseConsumer, topic: &str, partition: i32) -> Result<i64, KafkaConnError> {
    let (low, _) = watermarks(client, topic, partition)?;
    assign_at(client, topic, partition, low)?;
    let started = Instant::now();
    let end = loop {
        let polled = client.poll(Duration::from_millis(50));
        if let Some(Err(e)) = &polled {
            if !matches!(e, rdkafka::error::KafkaError::PartitionEOF(_)) {
                return Err(KafkaConnError::client(
                    format!("reading {topic}/{partition}"),
                    e.clone(),
                ));
            }
        }
        let cached = cached_watermarks(client, topic, partition);
        match (polled, cached) {
            (Some(_), Some((_, high))) => break high,
            (None, Some((_, high))) if started.elapsed() >= QUIET => break high,
            _ if started.elapsed() >= REQUEST_TIMEOUT => {
                return Err(KafkaConnError::Broker(format!(
                    "no fetch answer for {topic}/{partition} within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
            _ => {}
        }
    };
    unassign(client)?;
    Ok(end.max(low))
}

/// Where to start fetching so that the message at `target` is not skipped: `target` itself
/// on a broker that fetches from any offset. `end` is the partition's end, if known.
///
/// tansu 0.6 answers a fetch that starts inside a record batch with the batches after it
/// only (the rest of the batch is lost to the reader; if it is the last batch, nothing
/// comes), and may repeat batches. So this fetches from `target`, and while the first
/// message comes from after it (or nothing comes although the partition holds more), starts
/// further back (64, 256, 1024… offsets, at most to the partition's start). The caller
/// drops what comes before `target` and any offset it saw already.
pub fn safe_start(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    target: i64,
    end: Option<i64>,
) -> Result<i64, KafkaConnError> {
    let end = match end {
        Some(e) => e,
        None => true_end(client, topic, partition)?,
    };
    // At (or past) the end there is nothing to skip: no fetch to wait for.
    if target >= end {
        return Ok(target);
    }
    let (start, _) = probe_back(client, topic, partition, target)?;
    unassign(client)?;
    Ok(start)
}

/// Assigns `client` to the partition at the first position at or before `target` from
/// which the broker answers with a message at or before `target` (see [`safe_start`]);
/// returns the position and that first message's offset (`None`: nothing came, the
/// partition ends at `target`). The client stays assigned, reading on from there.
fn probe_back(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    target: i64,
) -> Result<(i64, Option<i64>), KafkaConnError> {
    let (low, _) = watermarks(client, topic, partition)?;
    let mut back = 0i64;
    loop {
        let start = target.saturating_sub(back).max(low);
        assign_at(client, topic, partition, start)?;
        let started = Instant::now();
        let first = loop {
            match client.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => break Some(m.offset()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break None,
                Some(Err(e)) => {
                    return Err(KafkaConnError::client(
                        format!("reading {topic}/{partition}"),
                        e,
                    ))
                }
                None if started.elapsed() >= QUIET => {
                    let more = cached_watermarks(client, topic, partition)
                        .is_some_and(|(_, high)| high > target);
                    break more.then_some(i64::MAX);
                }
                None => {}
            }
        };
        match first {
            Some(f) if f > target && start > low => {
                back = if back == 0 {
                    64
                } else {
                    back.saturating_mul(4)
                };
            }
            first => return Ok((start, first.filter(|f| *f != i64::MAX))),
        }
    }
}

/// Reads `topic`/`partition` over `[from, to)`, each offset once, in order:
/// `each(offset, headers)`. Starts where [`safe_start`] would, without a second fetch.
pub fn read_range(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    (from, to): (i64, i64),
    deadline: Instant,
    mut each: impl FnMut(i64, Option<&rdkafka::message::BorrowedHeaders>),
) -> Result<(), KafkaConnError> {
    if from >= to {
        return Ok(());
    }
    // The probe's first message is read again: the client is re-assigned at its position.
    let (start, _) = probe_back(client, topic, partition, from)?;
    assign_at(client, topic, partition, start)?;
    let mut next = from;
    while next < to {
        if Instant::now() > deadline {
            return Err(KafkaConnError::Broker(format!(
                "reading back {topic}/{partition} from {from} to {to} took too long (at {next})"
            )));
        }
        match client.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let o = m.offset();
                if o < next {
                    continue;
                }
                next = o + 1;
                if o < to {
                    each(o, m.headers());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_)))
                if cached_watermarks(client, topic, partition).is_some_and(|(_, h)| h <= next) =>
            {
                break;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                return Err(KafkaConnError::client(
                    format!("reading back {topic}/{partition}"),
                    e,
                ))
            }
            None => {}
        }
    }
    unassign(client)
}

/// The value of header `name`, if the message has it.
pub fn header<'a>(
    h: Option<&'a rdkafka::message::BorrowedHeaders>,
    name: &str,
) -> Option<&'a [u8]> {
    h?.iter().find(|x| x.key == name)?.value
}

fn unassign(client: &BaseConsumer) -> Result<(), KafkaConnError> {
    client
        .unassign()
        .map_err(|e| KafkaConnError::client("ending a read", e))
}

fn assign_at(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    at: i64,
) -> Result<(), KafkaConnError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(at))
        .map_err(|e| KafkaConnError::client("naming a partition", e))?;
    client
        .assign(&tpl)
        .map_err(|e| KafkaConnError::client(format!("reading {topic}/{partition}"), e))
}
