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

/// The job's defaults for settings a user may give (`--kafka-config`): each unless given.
fn set_unless_given(c: &mut ClientConfig, defaults: &[(&str, &str)]) {
    for (k, v) in defaults {
        if c.get(k).is_none() {
            c.set(*k, *v);
        }
    }
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
        // Whole batches in a fetch: a fetch that resumes inside a batch is what tansu 0.6
        // gets wrong (see `safe_start`).
        .set("max.partition.fetch.bytes", "67108864")
        .set("fetch.max.bytes", "134217728");
    set_unless_given(
        &mut c,
        &[
            // A short session, so a dead instance's partitions move soon.
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            // How long the broker may hold a fetch with nothing new. tansu 0.6 holds every
            // fetch about this long even when messages arrive (one hop's p50: 84 ms at 50,
            // 11 ms at 5), so it bounds the latency there; a Kafka broker answers at once.
            ("fetch.wait.max.ms", "10"),
            // Once the prefetched messages pass `queued.min.messages`, librdkafka stops
            // fetching a partition for this long (1 s by default): a reader that keeps up
            // with the fetches, but not with a whole second of them, then idles half the
            // time (1M messages from tansu: 9.2 s with the default, 4.7-5.0 s with 10 ms).
            ("fetch.queue.backoff.ms", "10"),
        ],
    );
    c
}

/// The producer settings of an output: idempotent (no duplicate and no reordering from
/// librdkafka's own retries), acknowledged by every in-sync replica, a message given up
/// after `SERVER_DOWN_LIMIT`-like 60 s.
pub fn producer_config(url: &KafkaUrl, extra: &[(String, String)]) -> ClientConfig {
    let mut c = with(url, extra);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "60000");
    set_unless_given(
        &mut c,
        // librdkafka's batches (up to 10,000 messages): 1,000 made a read-back that starts
        // inside one (tansu 0.6, see `safe_start`) step back less far, but cost a fifth
        // more CPU per message (1M messages: 3.2 CPU s instead of 4.0, medians of three).
        &[("linger.ms", "2")],
    );
    c
}

/// An admin client (topics), with the common settings.
pub fn admin_client(
    url: &KafkaUrl,
) -> Result<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>, KafkaConnError> {
    with(url, &[])
        .create()
        .map_err(|e| KafkaConnError::client("creating a Kafka admin client", e))
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
    Ok(true_ends(client, &[(topic, partition)])?[0])
}

/// The true ends of several partitions (see [`true_end`]), fetched together: one fetch
/// answers them all.
pub fn true_ends(client: &BaseConsumer, parts: &[(&str, i32)]) -> Result<Vec<i64>, KafkaConnError> {
    let mut lows = Vec::with_capacity(parts.len());
    let mut tpl = TopicPartitionList::new();
    for &(topic, partition) in parts {
        let (low, _) = watermarks(client, topic, partition)?;
        lows.push(low);
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(|e| KafkaConnError::client("naming a partition", e))?;
    }
    client
        .assign(&tpl)
        .map_err(|e| KafkaConnError::client("reading the partitions' ends", e))?;
    // A partition is answered once a message or its end came after a fetch (its cached
    // watermarks are then set), or, with watermarks, after QUIET with nothing.
    let mut answered = vec![false; parts.len()];
    let started = Instant::now();
    while answered.iter().any(|a| !a) {
        let polled = client.poll(Duration::from_millis(20));
        let from = match &polled {
            Some(Ok(m)) => Some((m.topic().to_string(), m.partition())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                // librdkafka names only the partition number: it names one partition only
                // when a single topic has it (else the others wait out QUIET).
                let mut with_p = parts.iter().filter(|(_, q)| *q == *p);
                match (with_p.next(), with_p.next()) {
                    (Some((t, q)), None) => Some((t.to_string(), *q)),
                    _ => None,
                }
            }
            Some(Err(e)) => {
                return Err(KafkaConnError::client(
                    "reading the partitions' ends",
                    e.clone(),
                ))
            }
            None => None,
        };
        for (i, &(topic, partition)) in parts.iter().enumerate() {
            let cached = cached_watermarks(client, topic, partition).is_some();
            let named = from
                .as_ref()
                .is_some_and(|(t, q)| t == topic && *q == partition);
            if cached && (named || started.elapsed() >= QUIET) {
                answered[i] = true;
            }
        }
        if started.elapsed() >= REQUEST_TIMEOUT && answered.iter().any(|a| !a) {
            let missing: Vec<String> = parts
                .iter()
                .zip(&answered)
                .filter(|(_, a)| !**a)
                .map(|((t, p), _)| format!("{t}/{p}"))
                .collect();
            return Err(KafkaConnError::Broker(format!(
                "no fetch answer for {} within {} s",
                missing.join(", "),
                REQUEST_TIMEOUT.as_secs()
            )));
        }
    }
    let ends = parts
        .iter()
        .zip(lows)
        .map(|(&(topic, partition), low)| {
            let (_, high) = cached_watermarks(client, topic, partition).expect("answered");
            high.max(low)
        })
        .collect();
    unassign(client)?;
    Ok(ends)
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
    // At (or before) the partition's start a fetch starts at its first batch: nothing to
    // probe. Before it (retention removed the messages), the start itself: an offset that
    // no longer exists would make librdkafka reset the position by `auto.offset.reset`,
    // to the end with `start=latest`, skipping what the partition still holds.
    let low = watermarks(client, topic, partition)?.0;
    if target <= low {
        return Ok(low);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> KafkaUrl {
        "kafka://127.0.0.1:9092/in?group=g".parse().unwrap()
    }

    #[test]
    fn a_users_setting_wins_over_the_jobs_default_but_not_over_what_the_guarantee_needs() {
        let given = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = consumer_config(&url(), "g", &given("fetch.wait.max.ms", "500"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("500"));
        let c = consumer_config(&url(), "g", &[]);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        let p = producer_config(&url(), &given("linger.ms", "20"));
        assert_eq!(p.get("linger.ms"), Some("20"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        // The job's own settings are set last (and --kafka-config refuses them anyway).
        let c = consumer_config(&url(), "g", &given("enable.auto.commit", "true"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
