//! Kafka as the job's input and output: consumer groups, order per partition, nothing lost
//! and nothing produced twice through a crash, without broker transactions.
//!
//! ```text
//! librdkafka consumer ─► reader thread ─► partitions (operator + lookup) ─► writer thread
//!      ▲ commits (offset + read-back metadata)          librdkafka producer ◄─┘ deliveries
//!      └──────────────── what is done (writer → reader) ◄──────────────────────┘
//! ```
//!
//! # What the guarantee rests on
//! - **Order.** Each Kafka partition is read by one reader and dealt to one pipeline
//!   partition (core): ordered mode keeps each Kafka partition's order, key-ordered each key's
//!   (within its Kafka partition). The output goes to the input's partition number modulo the
//!   output's partition count, through an idempotent producer, so librdkafka's retries
//!   neither duplicate nor reorder it.
//! - **Commits.** An input offset is committed only when every message before it is done:
//!   its output (or side output) delivered and acknowledged by the in-sync replicas, or
//!   skipped. A message still in flight (a slow lookup in unordered mode) holds the
//!   committed offset at itself.
//! - **No duplicates after a crash.** Each output carries `ringwait-src: TOPIC/P/OFFSET`.
//!   Outputs also carry, now and then, progress marks naming where on the output
//!   partitions the outputs of later messages may already be. A new owner of a partition reads those tails back before it
//!   reads the partition and skips every message whose output landed. This covers SIGKILL
//!   of any instance at any moment and clean rebalances (a revoked partition stops, its
//!   records in flight are delivered and committed before the revoke completes). It cannot
//!   cover a *zombie*: an instance cut off by a network partition that keeps producing after
//!   its partitions moved; only broker transactions fence that.

mod commit;
mod reader;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub(crate) use commit::KafkaCommitter;
pub(crate) use reader::spawn as spawn_reader;

use crate::connect::kafka::{self, KafkaUrl};

use super::{EnrichConfig, EnrichError, Input, OnError, Output};

/// How long the job waits for brokers that went away, or for a revoked partition's records
/// in flight, before it gives up.
pub const BROKER_DOWN_LIMIT: Duration = Duration::from_secs(60);

/// Everything a Kafka run checked before it started.
#[derive(Debug)]
pub(crate) struct KafkaPlan {
    pub input: KafkaUrl,
    pub output: KafkaUrl,
    pub group: String,
    pub out_topic: String,
    pub out_partitions: i32,
    /// `--on-error side-output:TOPIC`: the topic on the output's cluster and its partitions.
    pub side: Option<(String, i32)>,
    /// `--until caught-up`: every input partition and its end at the start.
    pub until: Option<Vec<(String, i32, i64)>>,
    /// `--kafka-config`: librdkafka settings for every client.
    pub settings: Vec<(String, String)>,
}

impl KafkaPlan {
    /// The output partition of input partition `p` (and of the side output).
    pub fn out_partitions_of(&self, p: i32) -> (i32, i32) {
        let side = self.side.as_ref().map_or(0, |(_, n)| p.rem_euclid(*n));
        (p.rem_euclid(self.out_partitions), side)
    }

    /// `TOPIC/PARTITION/OFFSET` of a record, for messages.
    pub fn describe(&self, topic: u8, partition: i32, offset: i64) -> String {
        let name = self
            .input
            .topics
            .get(usize::from(topic))
            .map_or("?", String::as_str);
        format!("{name}/{partition}/{offset}")
    }
}

fn flag(flag: &'static str, reason: impl Into<String>) -> EnrichError {
    EnrichError::flag(flag, reason)
}

/// Checks a Kafka job before anything is read or produced: the addresses, the brokers
/// (reachable within [`kafka::REQUEST_TIMEOUT`]), the topics (they exist; none is created).
pub(crate) fn prepare(config: &EnrichConfig) -> Result<KafkaPlan, EnrichError> {
    let (input, output) = match (&config.input, &config.output) {
        (Input::Kafka(i), Output::Kafka(o)) => ((**i).clone(), (**o).clone()),
        (Input::Kafka(_), _) => {
            return Err(flag(
                "--output",
                "a Kafka input needs a Kafka output (kafka://…/TOPIC): its offsets are committed as its outputs are delivered",
            ))
        }
        _ => {
            return Err(flag(
                "--input",
                "a Kafka output needs a Kafka input (kafka://…/TOPIC?group=G)",
            ))
        }
    };
    input.check_input().map_err(|e| flag("--input", e))?;
    output.check_output().map_err(|e| flag("--output", e))?;
    if config.checkpoint_dir.is_some() {
        return Err(flag(
            "--checkpoint-dir",
            "a Kafka job keeps its progress in the consumer group's committed offsets; drop --checkpoint-dir",
        ));
    }
    let d = super::StreamOptions::default();
    for (changed, name) in [
        (config.stream.field != d.field, "--stream-field"),
        (config.stream.claim_idle != d.claim_idle, "--claim-idle-ms"),
        (config.stream.batch != d.batch, "--stream-batch"),
    ] {
        if changed {
            return Err(flag(
                name,
                "is for a Redis stream input; a Kafka message's value is the record",
            ));
        }
    }
    let settings = config.stream.kafka_config.clone();
    if let Some(k) = kafka::reserved_setting(&settings) {
        return Err(flag(
            "--kafka-config",
            format!("{k} is the job's own setting: what it guarantees rests on it"),
        ));
    }
    let mut names = input.topics.clone();
    names.sort();
    names.dedup();
    if names.len() != input.topics.len() {
        return Err(flag("--input", "an input topic is named twice"));
    }
    let out_topic = output.topics[0].clone();
    let same_cluster = same_brokers(&input, &output);
    if same_cluster && input.topics.contains(&out_topic) {
        return Err(flag(
            "--output",
            format!("the output topic {out_topic:?} is also an input topic"),
        ));
    }
    check_settings(&input, &output, &settings)?;
    let in_client = kafka::plain_consumer(&input, &settings)
        .map_err(|e| flag("--kafka-config", e.to_string()))?;
    let out_client = kafka::plain_consumer(&output, &settings)
        .map_err(|e| flag("--kafka-config", e.to_string()))?;
    let mut in_partitions = Vec::new();
    for t in &input.topics {
        let n = kafka::partition_count(&in_client, t)
            .map_err(|e| flag("--input", unreachable(&input, e)))?;
        in_partitions.push((t.clone(), n));
    }
    let out_partitions = kafka::partition_count(&out_client, &out_topic)
        .map_err(|e| flag("--output", unreachable(&output, e)))?;
    let side = match &config.on_error {
        OnError::SideOutput(name) => {
            let name = name.to_string_lossy().into_owned();
            if same_cluster && input.topics.contains(&name) {
                return Err(flag(
                    "--on-error",
                    format!("the side topic {name:?} is an input topic"),
                ));
            }
            let n = kafka::partition_count(&out_client, &name)
                .map_err(|e| flag("--on-error", unreachable(&output, e)))?;
            Some((name, n))
        }
        _ => None,
    };
    let until = if config.stream.until_caught_up {
        let parts: Vec<(&str, i32)> = in_partitions
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.as_str(), p)))
            .collect();
        // A fetch's answer, not ListOffsets (which tansu 0.6 gets wrong).
        let ends =
            kafka::true_ends(&in_client, &parts).map_err(|e| flag("--input", e.to_string()))?;
        Some(
            parts
                .iter()
                .zip(ends)
                .map(|(&(t, p), end)| (t.to_string(), p, end))
                .collect(),
        )
    } else {
        None
    };
    Ok(KafkaPlan {
        group: input.group.clone().expect("checked"),
        input,
        output,
        out_topic,
        out_partitions,
        side,
        until,
        settings,
    })
}

/// `--kafka-config`: librdkafka takes every setting for the consumer and the producer (an
/// unknown or malformed one is named).
fn check_settings(
    input: &KafkaUrl,
    output: &KafkaUrl,
    settings: &[(String, String)],
) -> Result<(), EnrichError> {
    let refused = |what: &str, e: rdkafka::error::KafkaError| {
        flag(
            "--kafka-config",
            format!("the {what} refused a setting: {e}"),
        )
    };
    kafka::consumer_config(input, "ringwait-check", settings)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(|e| refused("consumer", e))?;
    kafka::producer_config(output, settings)
        .create::<rdkafka::producer::BaseProducer>()
        .map_err(|e| refused("producer", e))?;
    Ok(())
}

fn same_brokers(a: &KafkaUrl, b: &KafkaUrl) -> bool {
    a.brokers.iter().any(|x| b.brokers.contains(x))
}

fn unreachable(url: &KafkaUrl, e: kafka::KafkaConnError) -> String {
    match e {
        kafka::KafkaConnError::Client { cause, .. }
            if cause.rdkafka_error_code().is_some_and(|c| {
                c == rdkafka::types::RDKafkaErrorCode::OperationTimedOut
                    || c == rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                    || c == rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
            }) =>
        {
            format!(
                "cannot reach the Kafka broker(s) {} within {} s ({cause})",
                url.bootstrap(),
                kafka::REQUEST_TIMEOUT.as_secs()
            )
        }
        e => format!("{}: {e}", url.bootstrap()),
    }
}

/// A reader-to-writer notice about an input partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// The partition is this reader's from `start` (epoch `epoch`); its outputs end at
    /// `out_ends` (output, side output) as far as the reader knows.
    Assigned {
        topic: u8,
        partition: i32,
        epoch: u32,
        start: i64,
        out_ends: [i64; kafka::OUTPUTS],
    },
    /// The message at `offset` is done: its output landed before (read back) on output
    /// `which` at `at`.
    Landed {
        topic: u8,
        partition: i32,
        epoch: u32,
        offset: i64,
        which: usize,
        at: i64,
    },
    /// Messages `[from, to)` are done without an output: a gap in the offsets.
    Done {
        topic: u8,
        partition: i32,
        epoch: u32,
        from: i64,
        to: i64,
    },
    /// The partition is no longer this reader's: its records still in flight are dropped.
    Revoked {
        topic: u8,
        partition: i32,
        epoch: u32,
    },
}

/// What the writer made committable for one input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    pub epoch: u32,
    pub committable: i64,
}

/// The writer's progress, read by the reader to commit.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub slots: BTreeMap<(u8, i32), Published>,
    /// The writer delivered everything it will (or failed): nothing more will change.
    pub writer_finished: bool,
}

/// State shared by the reader and the writer.
pub(crate) struct Shared {
    pub control: (
        crossbeam::channel::Sender<Control>,
        crossbeam::channel::Receiver<Control>,
    ),
    pub progress: Mutex<Progress>,
    pub changed: Condvar,
    pub counters: KafkaCounters,
    /// `--metrics`: the job's gauges.
    pub live: Option<Arc<crate::metrics::live::LiveMetrics>>,
}

impl Shared {
    pub fn new(live: Option<Arc<crate::metrics::live::LiveMetrics>>) -> Shared {
        Shared {
            control: crossbeam::channel::unbounded(),
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
            counters: KafkaCounters::default(),
            live,
        }
    }
}

/// Counters of a Kafka run, shared by the reader, the writer and the summary.
#[derive(Debug, Default)]
pub struct KafkaCounters {
    /// Messages read.
    pub read: AtomicU64,
    /// Outputs (and side outputs) delivered.
    pub delivered: AtomicU64,
    /// Messages whose output was found already delivered (read back) and not produced again.
    pub landed_before: AtomicU64,
    /// Rebalances this instance went through.
    pub rebalances: AtomicU64,
    /// Offset commits that failed (a later one covers them).
    pub failed_commits: AtomicU64,
    /// Lag per input partition (`TOPIC/P`), as last measured.
    pub lag: Mutex<BTreeMap<String, i64>>,
    /// Produce latency (send to delivery), nanoseconds, sampled.
    pub produce_latency: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// What a Kafka run did, for the summary.
#[derive(Debug, Clone)]
pub struct KafkaStats {
    /// See [`KafkaCounters::read`].
    pub read: u64,
    /// See [`KafkaCounters::delivered`].
    pub delivered: u64,
    /// See [`KafkaCounters::landed_before`].
    pub landed_before: u64,
    /// See [`KafkaCounters::rebalances`].
    pub rebalances: u64,
    /// Lag per input partition this instance owned, as last measured.
    pub lag: BTreeMap<String, i64>,
    /// Produce latency (send to delivery), nanoseconds, sampled.
    pub produce_latency: hdrhistogram::Histogram<u64>,
}

impl KafkaCounters {
    /// The counts, for `--metrics`.
    pub fn counts(&self) -> crate::metrics::live::KafkaCounts {
        crate::metrics::live::KafkaCounts {
            read: self.read.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            landed_before: self.landed_before.load(Ordering::Relaxed),
            rebalances: self.rebalances.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// A snapshot for the summary.
    pub fn stats(&self) -> KafkaStats {
        let c = self.counts();
        KafkaStats {
            read: c.read,
            delivered: c.delivered,
            landed_before: c.landed_before,
            rebalances: c.rebalances,
            lag: self.lag.lock().expect("lag").clone(),
            produce_latency: self
                .produce_latency
                .lock()
                .expect("latency")
                .clone()
                .unwrap_or_else(crate::metrics::latency_histogram),
        }
    }
}
