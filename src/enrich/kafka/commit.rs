//! The writer's side of a Kafka output: each result is produced (key, timestamp and headers
//! passed through, [`SRC_HEADER`] added) to the input partition's output partition; each
//! delivery marks its input message done in the partition's [`OffsetTracker`]; what may be
//! committed is published to the reader, which commits it.
//!
//! A record read under an assignment that has since been revoked is dropped unproduced: its
//! partition's new owner reads it again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{Control, KafkaPlan, Published, Shared};
use crate::connect::kafka::origin::{self, Origin};
use crate::connect::kafka::{
    src_value, OffsetTracker, ProgressMark, ERROR_HEADER, OUTPUTS, PROGRESS_HEADER, SRC_HEADER,
};
use crate::enrich::record::Line;
use crate::enrich::stream::Kind;
use crate::enrich::EnrichError;

/// How often the writer publishes what may be committed.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// One output in this many of an assignment carries a progress mark (so does its first one,
/// and the first after each publication, every [`PUBLISH_EVERY`]): a read-back then finds
/// one within this many outputs of the partition or 50 ms of its outputs, and the others
/// save librdkafka and the broker a header.
const MARK_EVERY: u32 = 64;

/// One in this many messages has its produce latency measured.
const LATENCY_SAMPLE: u64 = 64;

/// Bits of a delivery's opaque value that hold the input offset; above them, the output
/// (1 bit) and the assignment's slot (17 bits: slots are not reused, so a run supports
/// [`MAX_SLOTS`] partition assignments, and stops with an error at the next).
const OFFSET_BITS: u32 = 46;

/// Partition assignments one run can take (see [`OFFSET_BITS`]).
const MAX_SLOTS: usize = 1 << (usize::BITS - OFFSET_BITS - 1);

/// One delivery report: the message's opaque value, and its output partition and offset
/// (or why it was not delivered).
type Delivery = (usize, Result<(i32, i64), String>);

/// Deliveries as librdkafka reports them (from the writer's own `poll`).
#[derive(Default)]
struct Deliveries {
    done: Mutex<Vec<Delivery>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(match e.rdkafka_error_code() {
                // The usual cause: the brokers stayed away past `message.timeout.ms`.
                Some(rdkafka::types::RDKafkaErrorCode::MessageTimedOut) => {
                    format!("no broker acknowledged it within the message timeout ({e})")
                }
                _ => e.to_string(),
            }),
        };
        self.done.lock().expect("deliveries").push((opaque, r));
    }
}

/// One assignment of an input partition, as the writer tracks it.
struct Slot {
    topic: u8,
    partition: i32,
    epoch: u32,
    revoked: bool,
    tracker: OffsetTracker,
    /// The output and side-output partitions its results go to.
    out: [i32; OUTPUTS],
    /// Results produced and not yet delivered.
    in_flight: u64,
    /// Outputs produced since the last one that carried a progress mark.
    since_mark: u32,
}

/// The writer's committer for a Kafka output.
pub(crate) struct KafkaCommitter {
    plan: Arc<KafkaPlan>,
    shared: Arc<Shared>,
    producer: BaseProducer<Deliveries>,
    /// Assignments by their slot number (the opaque of their deliveries).
    slots: Vec<Slot>,
    /// The current slot of each input partition.
    current: HashMap<(u8, i32), usize>,
    scratch: Vec<Delivery>,
    src: Vec<u8>,
    mark: Vec<u8>,
    sent: u64,
    sampled: HashMap<usize, Instant>,
    latency: hdrhistogram::Histogram<u64>,
    published_at: Instant,
    /// When the produce latency was last published to `--metrics`.
    live_at: Instant,
    failed: Option<String>,
}

/// However the writer ends (a panic included), the reader must not wait for it for ever:
/// it then commits what was published, which only ever covers delivered outputs.
impl Drop for KafkaCommitter {
    fn drop(&mut self) {
        self.mark_finished();
    }
}

impl KafkaCommitter {
    /// Creates the producer (it connects in the background; the plan's checks reached the
    /// brokers already).
    pub fn open(plan: Arc<KafkaPlan>, shared: Arc<Shared>) -> Result<KafkaCommitter, EnrichError> {
        let producer = BaseProducer::from_config_and_context(
            &crate::connect::kafka::producer_config(&plan.output, &plan.settings),
            Deliveries::default(),
        )
        .map_err(|e| EnrichError::flag("--output", format!("creating a Kafka producer: {e}")))?;
        Ok(KafkaCommitter {
            plan,
            shared,
            producer,
            slots: Vec::new(),
            current: HashMap::new(),
            scratch: Vec::new(),
            src: Vec::new(),
            mark: Vec::new(),
            sent: 0,
            sampled: HashMap::new(),
            latency: crate::metrics::latency_histogram(),
            published_at: Instant::now(),
            live_at: Instant::now(),
            failed: None,
        })
    }

    /// Produces a record's result: its output `data`, a side-output message (`data` is then
    /// the payload as it came, `error` why), or nothing (skipped: done at once).
    pub fn add(
        &mut self,
        line: &Line,
        kind: Kind,
        data: &[u8],
        error: &str,
    ) -> Result<(), EnrichError> {
        self.check_failed()?;
        // A revoke the reader announced applies before any later record is produced.
        self.apply_control();
        let o = origin::decode(line.origin()).ok_or_else(|| {
            EnrichError::Kafka(format!("record {}: no Kafka origin", line.number))
        })?;
        let Some(slot) = self.slot_of(&o)? else {
            // Read under an assignment since revoked: the partition's new owner has it.
            return Ok(());
        };
        let which = match kind {
            Kind::Skip => {
                self.slots[slot].tracker.done(o.offset, None);
                return Ok(());
            }
            Kind::Data => 0,
            Kind::Error => 1,
        };
        self.produce(slot, which, &o, data, error)?;
        if self.sent % 256 == 0 {
            self.producer.poll(Duration::ZERO);
            self.take_deliveries()?;
            // Under sustained load the writer never idles: progress is published here too.
            if self.published_at.elapsed() >= PUBLISH_EVERY {
                self.publish();
            }
        }
        Ok(())
    }

    /// `TOPIC/PARTITION/OFFSET` of a record, for messages.
    pub fn describe(&self, line: &Line) -> String {
        match origin::decode(line.origin()) {
            Some(o) => self.plan.describe(o.topic, o.partition, o.offset),
            None => format!("record {}", line.number),
        }
    }

    /// While the writer is idle: takes deliveries and publishes progress.
    pub fn idle(&mut self) -> Result<(), EnrichError> {
        self.producer.poll(Duration::ZERO);
        self.apply_control();
        self.take_deliveries()?;
        if self.published_at.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
        Ok(())
    }

    /// The writer went quiet: what is delivered is published at once.
    pub fn flush(&mut self) -> Result<(), EnrichError> {
        self.producer.poll(Duration::ZERO);
        self.apply_control();
        self.take_deliveries()?;
        self.publish();
        self.check_failed()
    }

    /// The end of the run: waits for every delivery (up to
    /// [`BROKER_DOWN_LIMIT`](super::BROKER_DOWN_LIMIT)) and publishes the last progress.
    pub fn finish(&mut self) -> Result<(), EnrichError> {
        let flushed = self.producer.flush(super::BROKER_DOWN_LIMIT);
        self.apply_control();
        let taken = self.take_deliveries();
        self.publish();
        self.publish_latency();
        self.mark_finished();
        let mut shared = self
            .shared
            .counters
            .produce_latency
            .lock()
            .expect("latency");
        match shared.as_mut() {
            Some(h) => {
                let _ = h.add(&self.latency);
            }
            None => *shared = Some(self.latency.clone()),
        }
        drop(shared);
        taken?;
        flushed.map_err(|e| {
            EnrichError::Kafka(format!(
                "producing to {}: not every output was delivered within {} s ({e}); their inputs are not committed",
                self.plan.out_topic,
                super::BROKER_DOWN_LIMIT.as_secs()
            ))
        })?;
        self.check_failed()
    }

    /// The writer stops on an error: what was delivered is still published (and committed
    /// by the reader), the rest is read again by the next owner.
    pub fn abandon(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
        let _ = self.take_deliveries();
        self.publish();
        self.mark_finished();
    }

    /// Tells the reader that nothing more will be published (a poisoned lock too: this also
    /// runs while a panic unwinds).
    fn mark_finished(&self) {
        let mut p = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.writer_finished = true;
        drop(p);
        self.shared.changed.notify_all();
    }

    fn check_failed(&self) -> Result<(), EnrichError> {
        match &self.failed {
            Some(e) => Err(EnrichError::Kafka(e.clone())),
            None => Ok(()),
        }
    }

    /// The slot a record belongs to; `None` if its assignment was revoked.
    fn slot_of(&mut self, o: &Origin<'_>) -> Result<Option<usize>, EnrichError> {
        let key = (o.topic, o.partition);
        let fresh = |s: &Self| {
            s.current
                .get(&key)
                .map(|&i| (i, s.slots[i].epoch, s.slots[i].revoked))
        };
        let mut found = fresh(self);
        if found.is_none_or(|(_, epoch, _)| epoch < o.epoch) {
            // The reader announced the assignment before it dealt the record.
            self.apply_control();
            found = fresh(self);
        }
        match found {
            Some((i, epoch, false)) if epoch == o.epoch => Ok(Some(i)),
            Some((_, epoch, _)) if epoch >= o.epoch => Ok(None),
            // An assignment refused (too many in one run) is the error; otherwise the reader
            // broke its word.
            _ => Err(EnrichError::Kafka(self.failed.clone().unwrap_or_else(
                || {
                    format!(
                        "record of {} under assignment {} which the reader never announced",
                        self.plan.describe(o.topic, o.partition, o.offset),
                        o.epoch
                    )
                },
            ))),
        }
    }

    fn apply_control(&mut self) {
        while let Ok(c) = self.shared.control.1.try_recv() {
            match c {
                Control::Assigned {
                    topic,
                    partition,
                    epoch,
                    start,
                    out_ends,
                } => {
                    let (out, side) = self.plan.out_partitions_of(partition);
                    let i = self.slots.len();
                    if i >= MAX_SLOTS {
                        // Its first record stops the writer with this error (`slot_of`); the
                        // group resumes from its commits.
                        self.failed.get_or_insert_with(|| {
                            format!(
                                "this run took {MAX_SLOTS} partition assignments, as many as one run can track; start it again (the group resumes from its commits)"
                            )
                        });
                        continue;
                    }
                    if let Some(&old) = self.current.get(&(topic, partition)) {
                        self.slots[old].revoked = true;
                    }
                    self.slots.push(Slot {
                        topic,
                        partition,
                        epoch,
                        revoked: false,
                        tracker: OffsetTracker::new(start, out_ends),
                        out: [out, side],
                        in_flight: 0,
                        since_mark: 0,
                    });
                    self.current.insert((topic, partition), i);
                }
                Control::Landed {
                    topic,
                    partition,
                    epoch,
                    offset,
                    which,
                    at,
                } => {
                    if let Some(s) = self.slot_under(topic, partition, epoch) {
                        s.tracker.done(offset, Some((which, at)));
                    }
                }
                Control::Done {
                    topic,
                    partition,
                    epoch,
                    from,
                    to,
                } => {
                    if let Some(s) = self.slot_under(topic, partition, epoch) {
                        s.tracker.done_range(from, to);
                    }
                }
                Control::Revoked {
                    topic,
                    partition,
                    epoch,
                } => {
                    if let Some(s) = self.slot_under(topic, partition, epoch) {
                        s.revoked = true;
                    }
                }
            }
        }
    }

    /// The current slot of an input partition, if it is still the assignment `epoch` (a
    /// notice about an earlier assignment changes nothing).
    fn slot_under(&mut self, topic: u8, partition: i32, epoch: u32) -> Option<&mut Slot> {
        let &i = self.current.get(&(topic, partition))?;
        let s = &mut self.slots[i];
        (s.epoch == epoch).then_some(s)
    }

    fn produce(
        &mut self,
        slot: usize,
        which: usize,
        o: &Origin<'_>,
        data: &[u8],
        error: &str,
    ) -> Result<(), EnrichError> {
        let topic_name = &self.plan.input.topics[usize::from(o.topic)];
        src_value(&mut self.src, topic_name, o.partition, o.offset);
        let s = &mut self.slots[slot];
        let marked = s.since_mark == 0;
        s.since_mark = (s.since_mark + 1) % MARK_EVERY;
        if marked {
            ProgressMark {
                committable: s.tracker.committable(),
                from: s.tracker.readback_from(),
            }
            .encode(&mut self.mark);
        }
        let mut headers = OwnedHeaders::new_with_capacity(o.header_count() + 3);
        for (key, value) in o.headers() {
            headers = headers.insert(Header { key, value });
        }
        headers = headers.insert(Header {
            key: SRC_HEADER,
            value: Some(&self.src[..]),
        });
        if marked {
            headers = headers.insert(Header {
                key: PROGRESS_HEADER,
                value: Some(&self.mark[..]),
            });
        }
        if which == 1 {
            headers = headers.insert(Header {
                key: ERROR_HEADER,
                value: Some(error.as_bytes()),
            });
        }
        let topic = match which {
            0 => self.plan.out_topic.as_str(),
            _ => self
                .plan
                .side
                .as_ref()
                .map(|(t, _)| t.as_str())
                .ok_or_else(|| {
                    EnrichError::Kafka("a side output without --on-error side-output:TOPIC".into())
                })?,
        };
        let opaque = (slot << (OFFSET_BITS + 1)) | (which << OFFSET_BITS) | (o.offset as usize);
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, opaque)
                .partition(self.slots[slot].out[which])
                .payload(data)
                .headers(headers);
        if let Some(k) = o.key {
            record = record.key(k);
        }
        if let Some(ts) = o.timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    // Deliveries gather until the queue has room; they are taken below.
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(EnrichError::Kafka(format!("producing to {topic}: {e}")))
                }
            }
        }
        self.slots[slot].in_flight += 1;
        self.sent += 1;
        if self.sent % LATENCY_SAMPLE == 0 {
            self.sampled.insert(opaque, Instant::now());
        }
        Ok(())
    }

    /// Applies the deliveries librdkafka reported: each marks its input message done.
    fn take_deliveries(&mut self) -> Result<(), EnrichError> {
        std::mem::swap(
            &mut self.scratch,
            &mut self.producer.context().done.lock().expect("deliveries"),
        );
        let mut delivered = 0;
        for (opaque, result) in self.scratch.drain(..) {
            let slot = opaque >> (OFFSET_BITS + 1);
            let which = (opaque >> OFFSET_BITS) & 1;
            let offset = (opaque & ((1usize << OFFSET_BITS) - 1)) as i64;
            if let Some(at) = self.sampled.remove(&opaque) {
                let ns = at.elapsed().as_nanos() as u64;
                self.latency.saturating_record(ns.max(1));
            }
            let s = &mut self.slots[slot];
            s.in_flight = s.in_flight.saturating_sub(1);
            match result {
                Ok((_, at)) => {
                    delivered += 1;
                    s.tracker.done(offset, Some((which, at)));
                }
                Err(e) if self.failed.is_none() => {
                    let topic = if which == 0 {
                        self.plan.out_topic.clone()
                    } else {
                        self.plan
                            .side
                            .as_ref()
                            .map_or(String::new(), |(t, _)| t.clone())
                    };
                    self.failed = Some(format!(
                        "producing to {topic} on the Kafka broker(s) {}: the output of {} was not delivered: {e}; it and what follows stay uncommitted",
                        self.plan.output.bootstrap(),
                        self.plan.describe(s.topic, s.partition, offset)
                    ));
                }
                Err(_) => {}
            }
        }
        self.shared
            .counters
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
        self.check_failed()
    }

    /// Publishes, for each current assignment, what may be committed. After a failed
    /// delivery nothing past the failed message becomes committable (the tracker's hole).
    fn publish(&mut self) {
        let mut p = self.shared.progress.lock().expect("progress");
        for (&key, &i) in &self.current {
            let s = &mut self.slots[i];
            // The next output after each publication carries a mark too: a quiet partition
            // sharing its output partition with busy ones still has a recent mark there.
            s.since_mark = 0;
            p.slots.insert(
                key,
                Published {
                    epoch: s.epoch,
                    committable: s.tracker.committable(),
                },
            );
        }
        drop(p);
        self.shared.changed.notify_all();
        if self.live_at.elapsed() >= crate::metrics::live::PUBLISH_EVERY {
            self.publish_latency();
        }
        self.published_at = Instant::now();
    }

    /// `--metrics`: publishes the produce latency.
    fn publish_latency(&mut self) {
        if let Some(live) = &self.shared.live {
            self.live_at = Instant::now();
            live.kafka(&self.plan.group)
                .store_produce_latency(&crate::metrics::live::LatencyBuckets::of(&self.latency));
        }
    }
}
