//! The Kafka reader: the job's reader thread for a `kafka://` input. It reads through the
//! consumer group, deals each Kafka partition's messages to one pipeline partition, and
//! commits what the writer published as done.
//!
//! On an assignment (in the rebalance callback, before any message of the partition is
//! read) it finds where the partition resumes, reads back the output partitions' tails to
//! find outputs that landed after the last commit (see [`crate::connect::kafka`]), and tells
//! the writer. On a revoke it stops, waits until the writer delivered what was dealt of the
//! revoked partitions, commits, and only then lets the revoke complete.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Control, KafkaPlan, Shared, BROKER_DOWN_LIMIT};
use crate::connect::kafka::{
    self, header, origin, parse_src, KafkaConnError, ProgressMark, OUTPUTS, PROGRESS_HEADER,
    SRC_HEADER,
};
use crate::element::StreamElement;
use crate::enrich::chunk::ChunkBuilder;
use crate::enrich::input::{Dealer, ReaderSettings};
use crate::enrich::record::Line;
use crate::enrich::EnrichError;
use crate::queue::BatchSender;

/// How often what the writer published is committed.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// Most partitions set up at once (each with two clients of its own).
const PARALLEL_SETUPS: usize = 4;

/// How often `--until caught-up` asks the group's committed offsets (one small request).
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Messages staged before they are dealt.
const STAGE: usize = 1024;

/// Starts the reader thread.
pub(crate) fn spawn(
    plan: Arc<KafkaPlan>,
    shared: Arc<Shared>,
    settings: Arc<ReaderSettings>,
    queues: Vec<BatchSender<StreamElement<Line>>>,
) -> std::thread::JoinHandle<Result<(), EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-kafka-reader".into())
        .spawn(move || run(plan, shared, settings, queues))
        .expect("spawning the Kafka reader thread")
}

/// A partition as the reader holds it.
#[derive(Debug, Clone)]
struct ReaderSlot {
    epoch: u32,
    /// The next offset expected: anything before it is a repeat (dropped).
    next: i64,
    /// Offsets whose output landed before (read back): not dealt again.
    landed: HashSet<i64>,
}

/// What the rebalance callbacks share with the reader loop.
struct Assignments {
    /// The partitions assigned and set up, by (topic index, partition).
    slots: HashMap<(u8, i32), ReaderSlot>,
    /// Partitions assigned (and paused) whose setup is still to do, with their committed
    /// offset (`None`: the group never committed one).
    pending: Vec<(String, i32, Option<i64>)>,
    /// Per partition, the offset after the last message dealt.
    dealt: HashMap<(u8, i32), i64>,
}

struct Ctx {
    plan: Arc<KafkaPlan>,
    shared: Arc<Shared>,
    state: Mutex<Assignments>,
    changed: AtomicBool,
    /// Whether `state.pending` holds partitions to set up (read per loop without the lock).
    has_pending: AtomicBool,
    next_epoch: AtomicU32,
    /// A failure inside a callback: the reader stops with it.
    failure: Mutex<Option<String>>,
    /// Whether `failure` holds one (read per loop without the lock).
    failed: AtomicBool,
    /// An asynchronous commit failed: what was committed is committed again.
    commit_failed: AtomicBool,
    /// The reader's last commit at the end succeeded: the revoke of the consumer's close
    /// has nothing to add.
    finally_committed: AtomicBool,
    /// Clients for the set-ups' reads, one pair per set-up running at once (kept for the
    /// next rebalance).
    probes: Mutex<Vec<Probes>>,
}

/// A set-up's own clients (outside the group): one on the input's brokers, one on the
/// output's.
struct Probes {
    input: BaseConsumer,
    output: BaseConsumer,
}

impl Probes {
    fn new(plan: &KafkaPlan) -> Result<Probes, KafkaConnError> {
        Ok(Probes {
            input: kafka::plain_consumer(&plan.input, &plan.settings)?,
            output: kafka::plain_consumer(&plan.output, &plan.settings)?,
        })
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        if err == E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // One rebalance is a revoke and an assignment: counted once.
            self.shared
                .counters
                .rebalances
                .fetch_add(1, Ordering::Relaxed);
        }
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = self.revoke(consumer);
                let _ = consumer.unassign();
                r
            }
            other => Err(format!("rebalance failed: {other:?}")),
        };
        if let Err(e) = result {
            self.failure.lock().expect("failure").get_or_insert(e);
            self.failed.store(true, Ordering::Release);
            let _ = consumer.unassign();
        }
        self.changed.store(true, Ordering::Release);
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            self.commit_failed.store(true, Ordering::Release);
            self.shared
                .counters
                .failed_commits
                .fetch_add(1, Ordering::Relaxed);
            if !matches!(
                e,
                rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset
                )
            ) {
                eprintln!("ringwait enrich: an offset commit failed ({e}); the next one covers it");
            }
        }
    }
}

impl Ctx {
    fn topic_index(&self, name: &str) -> Option<u8> {
        self.plan
            .input
            .topics
            .iter()
            .position(|t| t == name)
            .map(|i| i as u8)
    }

    /// An assignment, in the rebalance callback: only what is quick (the committed offsets,
    /// one request). The partitions are assigned paused; the reader sets each up outside the
    /// callback ([`Reader::set_up`]), so a long read-back never keeps this member from
    /// answering the group (a member slow to rejoin is dropped from it).
    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), String> {
        let committed = consumer
            .committed_offsets(tpl.clone(), kafka::REQUEST_TIMEOUT)
            .map_err(|e| format!("reading the group's committed offsets: {e}"))?;
        let mut pending = Vec::new();
        for e in committed.elements() {
            let (topic, p) = (e.topic().to_string(), e.partition());
            self.topic_index(&topic)
                .ok_or_else(|| format!("assigned {topic}/{p}, which is not an input"))?;
            // An error is not "never committed": taking it so would start the partition over
            // (or, with start=latest, skip what is there).
            e.error()
                .map_err(|err| format!("reading the committed offset of {topic}/{p}: {err}"))?;
            let committed = match e.offset() {
                Offset::Offset(c) => Some(c),
                Offset::Invalid => None,
                other => {
                    return Err(format!(
                        "the committed offset of {topic}/{p} is {other:?}, not an offset"
                    ))
                }
            };
            pending.push((topic, p, committed));
        }
        consumer
            .assign(tpl)
            .map_err(|e| format!("assigning the partitions: {e}"))?;
        // Nothing is read before the setup positions each partition.
        consumer
            .pause(tpl)
            .map_err(|e| format!("pausing the partitions: {e}"))?;
        let mut st = self.state.lock().expect("assignments");
        st.pending.extend(pending);
        self.has_pending
            .store(!st.pending.is_empty(), Ordering::Release);
        Ok(())
    }

    /// Sets up one assigned partition: where it resumes (its first offset committed if the
    /// group never had one), what of it already landed (read back), and a fetch position
    /// that skips nothing; the writer is told before any of its records is dealt.
    fn set_up(
        &self,
        consumer: &BaseConsumer<Self>,
        probes: &Probes,
        topic: &str,
        p: i32,
        committed: Option<i64>,
    ) -> Result<(), String> {
        let began = Instant::now();
        let t = self.topic_index(topic).expect("checked at assignment");
        let (resume, fresh) = match committed {
            Some(c) => (c, false),
            None => (
                self.first_start(probes, topic, p)
                    .map_err(|e| e.to_string())?,
                true,
            ),
        };
        let (out_ends, landed) = if fresh {
            // Nothing was produced for it by this group: the first commit (below) comes
            // before any output.
            (self.output_ends(probes, p)?, Vec::new())
        } else {
            self.landed(probes, topic, p, resume)?
        };
        if fresh {
            // Where a partition new to the group starts is decided once, before any output.
            let mut initial = TopicPartitionList::new();
            initial
                .add_partition_offset(topic, p, Offset::Offset(resume))
                .map_err(|e| e.to_string())?;
            consumer
                .commit(&initial, CommitMode::Sync)
                .map_err(|e| format!("committing the first offset of {topic}/{p}: {e}"))?;
        }
        let fetch_from =
            kafka::safe_start(&probes.input, topic, p, resume, None).map_err(|e| e.to_string())?;
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let control = &self.shared.control.0;
        let _ = control.send(Control::Assigned {
            topic: t,
            partition: p,
            epoch,
            start: resume,
            out_ends,
        });
        for &(offset, which, at) in &landed {
            let _ = control.send(Control::Landed {
                topic: t,
                partition: p,
                epoch,
                offset,
                which,
                at,
            });
        }
        self.shared
            .counters
            .landed_before
            .fetch_add(landed.len() as u64, Ordering::Relaxed);
        {
            let mut st = self.state.lock().expect("assignments");
            st.slots.insert(
                (t, p),
                ReaderSlot {
                    epoch,
                    next: resume,
                    landed: landed.iter().map(|l| l.0).collect(),
                },
            );
            st.dealt.insert((t, p), resume);
        }
        consumer
            .seek(topic, p, Offset::Offset(fetch_from), kafka::REQUEST_TIMEOUT)
            .map_err(|e| format!("positioning {topic}/{p} at {fetch_from}: {e}"))?;
        let mut one = TopicPartitionList::new();
        one.add_partition(topic, p);
        consumer
            .resume(&one)
            .map_err(|e| format!("resuming {topic}/{p}: {e}"))?;
        eprintln!(
            "ringwait enrich: assigned {topic}/{p}: resumes at {resume}{} (fetching from {fetch_from}), {} output(s) found landed before ({} ms)",
            if fresh { " (new to the group)" } else { "" },
            landed.len(),
            began.elapsed().as_millis()
        );
        Ok(())
    }

    /// Where a partition the group never committed starts (`start=`).
    fn first_start(&self, probes: &Probes, topic: &str, p: i32) -> Result<i64, KafkaConnError> {
        match self.plan.input.start {
            kafka::KafkaStart::Earliest => Ok(kafka::watermarks(&probes.input, topic, p)?.0),
            kafka::KafkaStart::Latest => kafka::true_end(&probes.input, topic, p),
        }
    }

    /// The ends of input partition `p`'s output partitions.
    fn output_ends(&self, probes: &Probes, p: i32) -> Result<[i64; OUTPUTS], String> {
        let (q, side_q) = self.plan.out_partitions_of(p);
        let mut ends = [0i64; OUTPUTS];
        ends[0] =
            kafka::true_end(&probes.output, &self.plan.out_topic, q).map_err(|e| e.to_string())?;
        if let Some((side, _)) = &self.plan.side {
            ends[1] = kafka::true_end(&probes.output, side, side_q).map_err(|e| e.to_string())?;
        }
        Ok(ends)
    }

    /// The outputs of `topic`/`p` from `resume` on that already landed: (offset, output,
    /// position). Looks back along each output partition for a progress mark at or below
    /// `resume`, then reads the tail from where it points.
    #[allow(clippy::type_complexity)]
    fn landed(
        &self,
        probes: &Probes,
        topic: &str,
        p: i32,
        resume: i64,
    ) -> Result<([i64; OUTPUTS], Vec<(i64, usize, i64)>), String> {
        let (q, side_q) = self.plan.out_partitions_of(p);
        let mut outputs = vec![(0usize, self.plan.out_topic.clone(), q)];
        if let Some((side, _)) = &self.plan.side {
            outputs.push((1, side.clone(), side_q));
        }
        let deadline = Instant::now() + BROKER_DOWN_LIMIT;
        let mut ends = [0i64; OUTPUTS];
        let mut bound: Option<[i64; OUTPUTS]> = None;
        let mut found: Vec<(i64, usize, i64)> = Vec::new();
        // Per output, the part already read: [scanned_from, end).
        let mut scanned = [0i64; OUTPUTS];
        for (which, name, part) in &outputs {
            let (which, part) = (*which, *part);
            let client = &probes.output;
            let (low, _) = kafka::watermarks(client, name, part).map_err(|e| e.to_string())?;
            let end = kafka::true_end(client, name, part).map_err(|e| e.to_string())?;
            ends[which] = end;
            let mut pos = end;
            // Marks at or below the committed offset sit within the last commit interval's
            // outputs (one output of the partition in 64 carries one, and the first after
            // each publication): a small first step finds them in the common case.
            let mut step = 256i64;
            while bound.is_none() && pos > low {
                let from = (pos - step).max(low);
                kafka::read_range(client, name, part, (from, pos), deadline, |at, h| {
                    let Some((t, tp, o)) = header(h, SRC_HEADER).and_then(parse_src) else {
                        return;
                    };
                    if t != topic || tp != p {
                        return;
                    }
                    if o >= resume {
                        found.push((o, which, at));
                    }
                    if let Some(m) = header(h, PROGRESS_HEADER).and_then(ProgressMark::decode) {
                        if m.committable <= resume {
                            let b = bound.get_or_insert(m.from);
                            for (x, y) in b.iter_mut().zip(m.from) {
                                *x = (*x).max(y);
                            }
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
                pos = from;
                step = step.saturating_mul(4);
            }
            scanned[which] = pos;
            if bound.is_none() {
                // No mark on this output: all of it was read.
                scanned[which] = low;
            }
        }
        // Each output must be read from the bound (or its start) to the end.
        for (which, name, part) in &outputs {
            let (which, part) = (*which, *part);
            let (low, _) =
                kafka::watermarks(&probes.output, name, part).map_err(|e| e.to_string())?;
            let want = bound.map_or(low, |b| b[which].max(low)).min(ends[which]);
            if want < scanned[which] {
                kafka::read_range(
                    &probes.output,
                    name,
                    part,
                    (want, scanned[which]),
                    deadline,
                    |at, h| {
                        if let Some((t, tp, o)) = header(h, SRC_HEADER).and_then(parse_src) {
                            if t == topic && tp == p && o >= resume {
                                found.push((o, which, at));
                            }
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            }
        }
        found.sort_unstable();
        found.dedup_by_key(|f| f.0);
        Ok((ends, found))
    }

    /// A revoke: waits until what was dealt of each partition is delivered (or the writer
    /// finished), commits it, and tells the writer to drop what is still in flight.
    fn revoke(&self, consumer: &BaseConsumer<Self>) -> Result<(), String> {
        let (slots, dealt) = {
            let st = self.state.lock().expect("assignments");
            (st.slots.clone(), st.dealt.clone())
        };
        let deadline = Instant::now() + BROKER_DOWN_LIMIT;
        let mut progress = self.shared.progress.lock().expect("progress");
        loop {
            let drained = slots.iter().all(|(key, s)| {
                let want = dealt.get(key).copied().unwrap_or(0);
                progress
                    .slots
                    .get(key)
                    .is_some_and(|p| p.epoch == s.epoch && p.committable >= want)
            });
            if drained || progress.writer_finished || Instant::now() >= deadline {
                break;
            }
            progress = self
                .shared
                .changed
                .wait_timeout(progress, Duration::from_millis(20))
                .expect("progress")
                .0;
        }
        let tpl = self.committable(&progress, &slots);
        drop(progress);
        let lost = consumer.assignment_lost();
        let done = self.finally_committed.load(Ordering::Acquire);
        if tpl.count() > 0 && !lost && !done {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                eprintln!("ringwait enrich: committing revoked partitions failed ({e}); their new owner reads back what landed");
            }
        }
        eprintln!(
            "ringwait enrich: revoked {} partition(s); {} {:?}",
            slots.len(),
            if done {
                "committed at the end"
            } else {
                "committed"
            },
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{} {:?}", e.topic(), e.partition(), e.offset()))
                .collect::<Vec<_>>()
        );
        let mut st = self.state.lock().expect("assignments");
        // Eager rebalancing revokes the whole assignment: what was not set up yet goes too.
        st.pending.clear();
        self.has_pending.store(false, Ordering::Release);
        for ((t, p), s) in &slots {
            let _ = self.shared.control.0.send(Control::Revoked {
                topic: *t,
                partition: *p,
                epoch: s.epoch,
            });
            st.slots.remove(&(*t, *p));
            st.dealt.remove(&(*t, *p));
        }
        Ok(())
    }

    /// The offsets the writer published for `slots` (current epochs only).
    fn committable(
        &self,
        progress: &super::Progress,
        slots: &HashMap<(u8, i32), ReaderSlot>,
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in slots {
            if let Some(pub_) = progress.slots.get(&(*t, *p)).filter(|x| x.epoch == s.epoch) {
                let name = &self.plan.input.topics[usize::from(*t)];
                let _ = tpl.add_partition_offset(name, *p, Offset::Offset(pub_.committable));
            }
        }
        tpl
    }
}

fn run(
    plan: Arc<KafkaPlan>,
    shared: Arc<Shared>,
    settings: Arc<ReaderSettings>,
    queues: Vec<BatchSender<StreamElement<Line>>>,
) -> Result<(), EnrichError> {
    let ctx = Ctx {
        plan: plan.clone(),
        shared: shared.clone(),
        state: Mutex::new(Assignments {
            slots: HashMap::new(),
            pending: Vec::new(),
            dealt: HashMap::new(),
        }),
        changed: AtomicBool::new(false),
        has_pending: AtomicBool::new(false),
        next_epoch: AtomicU32::new(0),
        failure: Mutex::new(None),
        failed: AtomicBool::new(false),
        commit_failed: AtomicBool::new(false),
        finally_committed: AtomicBool::new(false),
        probes: Mutex::new(vec![Probes::new(&plan).map_err(kafka_error)?]),
    };
    let consumer: BaseConsumer<Ctx> = BaseConsumer::from_config_and_context(
        &kafka::consumer_config(&plan.input, &plan.group, &plan.settings),
        ctx,
    )
    .map_err(|e| EnrichError::Kafka(format!("creating the Kafka consumer: {e}")))?;
    let topics: Vec<&str> = plan.input.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| EnrichError::Kafka(format!("subscribing to {topics:?}: {e}")))?;
    let mut r = Reader {
        plan: &plan,
        shared: &shared,
        settings: &settings,
        consumer: &consumer,
        slots: HashMap::new(),
        chunk: ChunkBuilder::default(),
        staged: 0,
        origin: Vec::with_capacity(256),
        next_index: 0,
        committed: HashMap::new(),
        last_commit: Instant::now(),
        next_check: Instant::now(),
        down_since: None,
        caught: None,
    };
    let quit = Arc::new(AtomicBool::new(false));
    let watcher = match &plan.until {
        Some(targets) => {
            let caught = Arc::new(AtomicBool::new(false));
            r.caught = Some(caught.clone());
            Some(spawn_watcher(&plan, targets.clone(), caught, quit.clone())?)
        }
        None => None,
    };
    let outcome = {
        let mut dealer = Dealer::new(&settings, &queues);
        r.read(&mut dealer)
    };
    quit.store(true, Ordering::Release);
    // The partitions' input ends here; the writer drains and delivers what they hold.
    drop(queues);
    let finished = r.finish();
    if let Some(w) = watcher {
        let _ = w.join();
    }
    drop(r);
    // Each client's end takes a while (~40 ms): the set-ups' clients end on a thread of
    // their own while the consumer leaves the group.
    let probes = std::mem::take(&mut *consumer.context().probes.lock().expect("probes"));
    let ending = std::thread::spawn(move || drop(probes));
    drop(consumer);
    let _ = ending.join();
    outcome.and(finished)
}

/// `--until caught-up`: a thread that asks the group's committed offsets every [`WATCH_EVERY`],
/// through a client of its own (not a member), until every partition's end seen at the
/// start is committed. The reader never waits on that request, so it keeps answering the
/// group meanwhile.
fn spawn_watcher(
    plan: &KafkaPlan,
    targets: Vec<(String, i32, i64)>,
    caught: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, EnrichError> {
    let mut config = kafka::consumer_config(&plan.input, &plan.group, &plan.settings);
    config.set("enable.partition.eof", "false");
    let client: BaseConsumer = config
        .create()
        .map_err(|e| EnrichError::Kafka(format!("creating a Kafka client: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p, _) in &targets {
        tpl.add_partition(t, *p);
    }
    Ok(std::thread::Builder::new()
        .name("ringwait-kafka-caught-up".into())
        .spawn(move || {
            while !quit.load(Ordering::Acquire) {
                if let Ok(committed) = client.committed_offsets(tpl.clone(), kafka::REQUEST_TIMEOUT)
                {
                    let all = targets.iter().all(|(t, p, end)| {
                        *end == 0
                            || committed.find_partition(t, *p).is_some_and(
                                |e| matches!(e.offset(), Offset::Offset(c) if c >= *end),
                            )
                    });
                    if all {
                        caught.store(true, Ordering::Release);
                        return;
                    }
                }
                std::thread::sleep(WATCH_EVERY);
            }
        })
        .expect("spawning the caught-up watcher"))
}

struct Reader<'a> {
    plan: &'a KafkaPlan,
    shared: &'a Shared,
    settings: &'a ReaderSettings,
    consumer: &'a BaseConsumer<Ctx>,
    slots: HashMap<(u8, i32), ReaderSlot>,
    chunk: ChunkBuilder,
    staged: usize,
    origin: Vec<u8>,
    next_index: u64,
    /// What was last committed per partition (topic index, partition) → (epoch, offset).
    committed: HashMap<(u8, i32), (u32, i64)>,
    last_commit: Instant,
    next_check: Instant,
    down_since: Option<Instant>,
    /// `--until caught-up`: set by the watcher thread.
    caught: Option<Arc<AtomicBool>>,
}

fn kafka_error(e: KafkaConnError) -> EnrichError {
    EnrichError::Kafka(e.to_string())
}

impl Reader<'_> {
    /// Reads until stopped, caught up, or failed.
    fn read(&mut self, dealer: &mut Dealer<'_>) -> Result<(), EnrichError> {
        loop {
            if !self.ctx().failed.load(Ordering::Acquire) {
                // (no failure: the usual case, without the lock)
            } else if let Some(e) = self.ctx().failure.lock().expect("failure").take() {
                return Err(EnrichError::Kafka(e));
            }
            if self.settings.intake.stopping() {
                return Ok(());
            }
            if self.last_commit.elapsed() >= COMMIT_EVERY {
                self.commit(CommitMode::Async);
            }
            if Instant::now() >= self.next_check {
                self.next_check = Instant::now() + Duration::from_millis(250);
                self.measure_lag();
            }
            if self.caught_up()? {
                self.settings.intake.reached_end(None, self.next_index);
                return Ok(());
            }
            let wait = if self.staged > 0 { 0 } else { 50 };
            let polled = self.consumer.poll(Duration::from_millis(wait));
            // Staged messages of revoked partitions go on with their old epoch: the writer
            // drops them.
            let changed = self.ctx().changed.swap(false, Ordering::Acquire);
            let mut set_up = Vec::new();
            if changed || self.pending_setups() {
                set_up = self.set_up_pending()?;
            }
            let polled = match polled {
                // Fetched before its partition's setup positioned it: the seek fetches it
                // again from a position that skips nothing.
                Some(Ok(m))
                    if self
                        .ctx()
                        .topic_index(m.topic())
                        .is_some_and(|t| set_up.contains(&(t, m.partition()))) =>
                {
                    None
                }
                other => other,
            };
            match polled {
                Some(Ok(m)) => {
                    self.down_since = None;
                    self.stage(&m)?;
                    if self.staged >= STAGE {
                        self.deal(dealer);
                    }
                }
                Some(Err(e)) => self.on_error(e)?,
                None => self.deal(dealer),
            }
        }
    }

    fn ctx(&self) -> &Ctx {
        self.consumer.context()
    }

    fn pending_setups(&self) -> bool {
        self.ctx().has_pending.load(Ordering::Acquire)
    }

    /// Sets up partitions assigned and not set up yet, up to [`PARALLEL_SETUPS`] at once,
    /// each on a thread of its own with its own clients (a set-up waits on the brokers
    /// several times: one at a time, four partitions took a second). The loop comes back
    /// for the rest after a poll. Returns the partitions set up.
    fn set_up_pending(&mut self) -> Result<Vec<(u8, i32)>, EnrichError> {
        let consumer = self.consumer;
        let ctx = consumer.context();
        let pending = {
            let mut st = ctx.state.lock().expect("assignments");
            if st.pending.is_empty() {
                ctx.has_pending.store(false, Ordering::Release);
                sync_slots(&mut self.slots, &st.slots);
                return Ok(Vec::new());
            }
            let n = st.pending.len().min(PARALLEL_SETUPS);
            st.pending.drain(..n).collect::<Vec<_>>()
        };
        let mut probes = {
            let mut pool = ctx.probes.lock().expect("probes");
            let keep = pool.len().saturating_sub(pending.len());
            pool.split_off(keep)
        };
        while probes.len() < pending.len() {
            probes.push(Probes::new(self.plan).map_err(kafka_error)?);
        }
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let running: Vec<_> = pending
                .iter()
                .zip(&probes)
                .map(|((topic, p, committed), probes)| {
                    scope.spawn(move || ctx.set_up(consumer, probes, topic, *p, *committed))
                })
                .collect();
            running
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a set-up panicked".into())))
                .collect()
        });
        // The clients stay for the next set-ups (at most PARALLEL_SETUPS pairs).
        ctx.probes.lock().expect("probes").extend(probes);
        // What did get set up is the reader's before any failure is reported, so that the
        // final commit covers it.
        sync_slots(
            &mut self.slots,
            &ctx.state.lock().expect("assignments").slots,
        );
        for ((topic, p, _), result) in pending.iter().zip(results) {
            result.map_err(|e| {
                EnrichError::Kafka(format!(
                    "taking over {topic}/{p} (brokers {}): {e}; what is not committed is read again by the next run",
                    self.plan.input.bootstrap()
                ))
            })?;
        }
        Ok(pending
            .iter()
            .map(|(topic, p, _)| (ctx.topic_index(topic).expect("an input"), *p))
            .collect())
    }

    /// Stages one message as a record (or drops it: a repeat, or one whose output landed).
    fn stage(&mut self, m: &BorrowedMessage<'_>) -> Result<(), EnrichError> {
        let Some(t) = self.ctx().topic_index(m.topic()) else {
            return Ok(());
        };
        let p = m.partition();
        let Some(slot) = self.slots.get_mut(&(t, p)) else {
            return Ok(()); // not (or no longer) assigned
        };
        let o = m.offset();
        if o < slot.next {
            return Ok(()); // before the resume point, or a batch the broker sent again
        }
        if o > slot.next {
            // A gap in the offsets (compaction, transaction markers): done, nothing to do.
            let _ = self.shared.control.0.send(Control::Done {
                topic: t,
                partition: p,
                epoch: slot.epoch,
                from: slot.next,
                to: o,
            });
        }
        slot.next = o + 1;
        self.shared.counters.read.fetch_add(1, Ordering::Relaxed);
        // (Empty but for a partition just taken over: no hash per message then.)
        if !slot.landed.is_empty() && slot.landed.remove(&o) {
            return Ok(());
        }
        let epoch = slot.epoch;
        self.origin.clear();
        let headers = m.headers();
        let hs = headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value));
        let count = headers.map_or(0, |h| h.count());
        let hs = ExactCount(hs, count);
        let encoded = origin::encode(
            &mut self.origin,
            t,
            p,
            epoch,
            o,
            m.timestamp().to_millis(),
            m.key(),
            hs,
        );
        let index = self.next_index;
        let payload = match (&encoded, m.payload()) {
            (Err(e), _) => Err(e.to_string()),
            (Ok(()), None) => Err("the message has no value (a tombstone)".to_string()),
            (Ok(()), Some(v)) => Ok(v),
        };
        if encoded.is_err() {
            // The origin is still needed to name and commit it: without the headers.
            self.origin.clear();
            let _ = origin::encode(
                &mut self.origin,
                t,
                p,
                epoch,
                o,
                None,
                None,
                std::iter::empty(),
            );
        }
        self.chunk.push_entry(
            payload.as_deref().map_err(String::as_str),
            &self.origin,
            index + 1,
            index,
            &self.settings.fields,
        );
        self.next_index += 1;
        self.staged += 1;
        Ok(())
    }

    /// Deals what is staged, and records how far each partition was dealt.
    fn deal(&mut self, dealer: &mut Dealer<'_>) {
        if self.staged == 0 {
            return;
        }
        let all = self.chunk.bytes().len();
        dealer.deal_chunk(&mut self.chunk, all);
        self.staged = 0;
        let mut st = self.ctx().state.lock().expect("assignments");
        for (key, s) in &self.slots {
            if st.slots.get(key).is_some_and(|x| x.epoch == s.epoch) {
                st.dealt.insert(*key, s.next);
            }
        }
    }

    /// Commits what the writer published and was not committed yet; false when the commit
    /// failed.
    fn commit(&mut self, mode: CommitMode) -> bool {
        self.last_commit = Instant::now();
        if self.ctx().commit_failed.swap(false, Ordering::AcqRel)
            || matches!(mode, CommitMode::Sync)
        {
            // A commit failed (or this is the last one): everything is committed again.
            self.committed.clear();
        }
        let tpl = {
            let progress = self.shared.progress.lock().expect("progress");
            let mut tpl = TopicPartitionList::new();
            for (key, s) in &self.slots {
                let Some(p) = progress.slots.get(key).filter(|p| p.epoch == s.epoch) else {
                    continue;
                };
                if self.committed.get(key) == Some(&(s.epoch, p.committable)) {
                    continue;
                }
                let name = &self.plan.input.topics[usize::from(key.0)];
                let _ = tpl.add_partition_offset(name, key.1, Offset::Offset(p.committable));
                self.committed.insert(*key, (s.epoch, p.committable));
            }
            tpl
        };
        if tpl.count() == 0 {
            return true;
        }
        let Err(e) = self.consumer.commit(&tpl, mode) else {
            return true;
        };
        self.shared
            .counters
            .failed_commits
            .fetch_add(1, Ordering::Relaxed);
        self.committed.clear(); // commit again next time
        if matches!(mode, CommitMode::Sync) {
            eprintln!("ringwait enrich: the last offset commit failed ({e}); the next run reads back what landed");
        }
        false
    }

    /// Lag per owned partition: its end (as the last fetch saw it) minus what is committed.
    /// With `--metrics`, publishes it with the counts.
    fn measure_lag(&self) {
        let mut lag = self.shared.counters.lag.lock().expect("lag");
        lag.clear();
        let mut gauge = Vec::new();
        for (key, s) in &self.slots {
            let name = &self.plan.input.topics[usize::from(key.0)];
            let Some((_, high)) = kafka::cached_watermarks(self.consumer, name, key.1) else {
                continue;
            };
            let done = self.committed.get(key).map_or(s.next, |c| c.1);
            let behind = (high - done).max(0);
            lag.insert(format!("{name}/{}", key.1), behind);
            gauge.push((name.clone(), key.1, behind));
        }
        drop(lag);
        if let Some(live) = &self.shared.live {
            gauge.sort();
            let g = live.kafka(&self.plan.group);
            g.store_lag(gauge);
            g.store_counts(&self.shared.counters.counts());
        }
    }

    /// `--until caught-up`: the watcher saw the group commit every partition's end.
    fn caught_up(&self) -> Result<bool, EnrichError> {
        Ok(self
            .caught
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Acquire)))
    }

    /// A consumer error: brokers away are waited for (up to [`BROKER_DOWN_LIMIT`]),
    /// anything else stops the job.
    fn on_error(&mut self, e: rdkafka::error::KafkaError) -> Result<(), EnrichError> {
        use rdkafka::types::RDKafkaErrorCode as C;
        let code = e.rdkafka_error_code();
        let transient = matches!(
            code,
            Some(C::BrokerTransportFailure | C::AllBrokersDown | C::OperationTimedOut)
                | Some(C::PartitionEOF)
        );
        if !transient {
            return Err(EnrichError::Kafka(format!(
                "reading {}: {e}",
                self.plan.input
            )));
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if since.elapsed() > BROKER_DOWN_LIMIT {
            return Err(EnrichError::Kafka(format!(
                "the Kafka broker(s) {} stayed unreachable for {} s ({e}); what is not committed is read again by the next run",
                self.plan.input.bootstrap(),
                BROKER_DOWN_LIMIT.as_secs()
            )));
        }
        Ok(())
    }

    /// The end of the run: the writer delivers what the partitions still hold; the reader
    /// keeps the group membership alive meanwhile (nothing more is read), then commits the
    /// last progress and leaves the group.
    fn finish(&mut self) -> Result<(), EnrichError> {
        if let Ok(a) = self.consumer.assignment() {
            let _ = self.consumer.pause(&a);
        }
        loop {
            let finished = self
                .shared
                .progress
                .lock()
                .expect("progress")
                .writer_finished;
            if finished {
                break;
            }
            let _ = self.consumer.poll(Duration::from_millis(20));
            let consumer = self.consumer;
            if consumer.context().changed.swap(false, Ordering::Acquire) {
                // Partitions assigned now stay paused and are not set up: nothing more is read.
                let mut st = consumer.context().state.lock().expect("assignments");
                st.pending.clear();
                consumer
                    .context()
                    .has_pending
                    .store(false, Ordering::Release);
                sync_slots(&mut self.slots, &st.slots);
            }
        }
        if self.commit(CommitMode::Sync) {
            self.ctx().finally_committed.store(true, Ordering::Release);
        }
        self.measure_lag();
        Ok(())
    }
}

/// Brings the reader's own partitions in line with the assignment: a partition still
/// assigned under the same epoch keeps the reader's state (how far it read, what landed is
/// still to skip); a new assignment is taken as set up; a revoked one goes.
fn sync_slots(local: &mut HashMap<(u8, i32), ReaderSlot>, shared: &HashMap<(u8, i32), ReaderSlot>) {
    local.retain(|key, s| shared.get(key).is_some_and(|x| x.epoch == s.epoch));
    for (key, s) in shared {
        local.entry(*key).or_insert_with(|| s.clone());
    }
}

/// An iterator with a known length (headers, counted once).
struct ExactCount<I>(I, usize);

impl<I: Iterator> Iterator for ExactCount<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let x = self.0.next();
        if x.is_some() {
            self.1 -= 1;
        }
        x
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactCount<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(epoch: u32, next: i64) -> ReaderSlot {
        ReaderSlot {
            epoch,
            next,
            landed: HashSet::new(),
        }
    }

    /// Setting up one partition must not send the others back to where they resumed: a
    /// reset `next` would make their next message look like a gap (marked done unread) or
    /// a repeat (dealt twice).
    #[test]
    fn syncing_keeps_running_partitions_and_takes_new_and_revoked_ones() {
        let mut local = HashMap::from([((0, 0), slot(1, 500)), ((0, 1), slot(2, 40))]);
        let shared = HashMap::from([
            ((0, 0), slot(1, 100)), // running since epoch 1: the reader's 500 stays
            ((0, 2), slot(3, 7)),   // newly set up
                                    // (0, 1) revoked
        ]);
        sync_slots(&mut local, &shared);
        assert_eq!(local.len(), 2);
        assert_eq!((local[&(0, 0)].epoch, local[&(0, 0)].next), (1, 500));
        assert_eq!((local[&(0, 2)].epoch, local[&(0, 2)].next), (3, 7));
        // Reassigned under a new epoch: the new set-up wins.
        let shared = HashMap::from([((0, 0), slot(4, 90))]);
        sync_slots(&mut local, &shared);
        assert_eq!((local[&(0, 0)].epoch, local[&(0, 0)].next), (4, 90));
    }
}
