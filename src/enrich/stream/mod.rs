//! Redis Streams as the job's input and output, exactly once.
//!
//! ```text
//! XREADGROUP / XAUTOCLAIM ─► reader thread ─► partitions (operator + lookup) ─► writer thread
//!                                      commit: MULTI…EXEC or the EVAL script (batch) ◄─┘
//! ```
//!
//! # What exactly-once rests on
//! Every input entry is read through a consumer group, so it sits in the group's pending
//! list until it is acknowledged. The writer commits a batch of results in one step, atomic on
//! the server (the commit script, `EVAL`; or a watched transaction), that, for each entry:
//!
//! - **input and output on one server** (same address and database): `XACK`s the entry and,
//!   only if that acknowledged it (`XACK` returned 1), `XADD`s its output. An entry's output
//!   and its acknowledgement are one atomic step, and a second commit of the same entry (a
//!   retry after a lost reply, a claim by another instance, a replay after a restart) finds
//!   it acknowledged and adds nothing. A batch whose entries were all read as new while no
//!   claim and no read of a consumer's own pending entries ran (the claim fence,
//!   [`fence_key`](crate::connect::redis_stream::fence_key), unchanged since the reads) is
//!   acknowledged with one `XACK` for all its entries instead: no other ringwait consumer
//!   can have taken them. Such a batch goes as a transaction of plain commands guarded by
//!   a `WATCH` of the fence, and through the script only when the guard refuses it (see
//!   [`CommitPipeline`](crate::connect::redis_stream::CommitPipeline));
//! - **two servers**: on the output's server the script records the entry in a progress
//!   sorted set (`ZADD NX`, scored by the commit's time) and `XADD`s its output only if it
//!   was not there; then the writer `XACK`s the batch on the input's server. A crash between
//!   the two leaves the entries pending; whoever reads them again commits them as duplicates
//!   (nothing added) and acknowledges them. Progress members older than
//!   [`PROGRESS_RETENTION`] are trimmed by the script, so an instance that stalls (alive but
//!   frozen) for longer than that, after its entries were claimed and committed by another,
//!   could add them again: that case (a zombie) is fenced only on one server.
//!
//! An entry that is not a record (no `--stream-field`, not JSON, not UTF-8) goes through
//! `--on-error` like a failed lookup, named by its id: `skip` acknowledges it without output,
//! `side-output:NAME` commits an error entry to the stream NAME on the output's server,
//! `fail` stops the job and leaves it pending.
//!
//! In Redis Cluster every key of the script must share a hash slot: the output (and side)
//! stream and, on one server, the input streams and the claim fence (and the commit guard
//! beside it, [`guard_key`](crate::connect::redis_stream::guard_key)), or the progress key on
//! two (where the input streams and the fence share one on the input's server). The job
//! checks and refuses otherwise, naming the keys.

mod commit;
mod origin;
mod reader;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) use commit::StreamCommitter;
pub(crate) use reader::spawn as spawn_reader;

pub(crate) use crate::connect::redis_stream::Kind;
use crate::connect::redis_stream::{create_group, same_server, text, CommitMode, CommitTarget};
pub use crate::connect::redis_stream::{
    BlockingConn, EntryId, GroupStart, StreamConnError, StreamUrl, StreamUrlError,
    PROGRESS_RETENTION, SCRIPT as COMMIT_SCRIPT,
};

use super::intake::Intake;
use super::{EnrichConfig, EnrichError, Input, OnError, Output};
use crate::resp::OwnedFrame;

/// How long the job waits for a stream's server that went away before it gives up (the
/// entries it holds stay pending and are read again by the next run).
pub const SERVER_DOWN_LIMIT: Duration = Duration::from_secs(60);

/// How long the start-up checks wait for a stream's server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The stream flags: `--stream-field`, `--until`, `--claim-idle-ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// The entry field that holds the record (input) and the enriched record (output).
    pub field: String,
    /// `--until caught-up`: stop once every entry in the input streams at the start is
    /// committed (by this instance or another of the group).
    pub until_caught_up: bool,
    /// `--claim-idle-ms`: claim another consumer's pending entries idle this long.
    pub claim_idle: Duration,
    /// Entries per read, and records per commit.
    pub batch: usize,
    /// `--kafka-config KEY=VALUE`: librdkafka settings for every Kafka client of the job.
    pub kafka_config: Vec<(String, String)>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            field: "data".into(),
            until_caught_up: false,
            claim_idle: Duration::from_millis(30_000),
            batch: 1024,
            kafka_config: Vec::new(),
        }
    }
}

/// Counters of a stream run, shared by the reader, the writer and `--metrics`.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Entries read (claimed ones included).
    pub read: AtomicU64,
    /// Entries claimed from other consumers' pending lists (or this one's, after a lost
    /// reply).
    pub claimed: AtomicU64,
    /// Entries committed: output (or error entry) added and acknowledged.
    pub committed: AtomicU64,
    /// Entries whose commit found them already committed (nothing added).
    pub duplicates: AtomicU64,
    /// Entries committed although a client outside ringwait had acknowledged or claimed
    /// them (see [`CommitCounts::unverified`](crate::connect::redis_stream::CommitCounts)).
    pub unverified: AtomicU64,
    /// The group's lag: entries in the input streams not yet delivered to any consumer.
    pub lag: AtomicU64,
    /// Commit round trips (`EVAL` sent to reply), nanoseconds.
    pub commit_latency: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// What a stream run did, for the summary.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// See [`StreamCounters::read`].
    pub read: u64,
    /// See [`StreamCounters::claimed`].
    pub claimed: u64,
    /// See [`StreamCounters::committed`].
    pub committed: u64,
    /// See [`StreamCounters::duplicates`].
    pub duplicates: u64,
    /// See [`StreamCounters::unverified`].
    pub unverified: u64,
    /// The group's lag when the run ended.
    pub lag: u64,
    /// Commit round trips, nanoseconds.
    pub commit_latency: hdrhistogram::Histogram<u64>,
    /// The consumer name this instance read as.
    pub consumer: String,
}

impl StreamCounters {
    /// A snapshot for the summary.
    pub fn stats(&self, consumer: &str) -> StreamStats {
        let latency = self
            .commit_latency
            .lock()
            .expect("commit latency")
            .clone()
            .unwrap_or_else(crate::metrics::latency_histogram);
        StreamStats {
            read: self.read.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unverified: self.unverified.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            commit_latency: latency,
            consumer: consumer.to_string(),
        }
    }
}

/// Everything a stream run checked before it started, and what it reads and writes.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub input: StreamUrl,
    pub output: StreamUrl,
    pub group: String,
    pub consumer: String,
    pub field: String,
    pub read_count: usize,
    pub commit_batch: usize,
    pub claim_idle: Duration,
    /// `--until caught-up`: per input stream, its last entry at the start (`None`: empty).
    pub until: Option<Vec<Option<EntryId>>>,
    /// What the commit script is given: output, side stream, inputs, group, consumer, and
    /// whether one server holds them all.
    pub target: CommitTarget,
}

/// Whether the job reads or writes a stream.
pub(crate) fn is_stream_job(config: &EnrichConfig) -> bool {
    matches!(config.input, Input::RedisStream(_)) || matches!(config.output, Output::RedisStream(_))
}

fn flag(flag: &'static str, reason: impl Into<String>) -> EnrichError {
    EnrichError::flag(flag, reason)
}

/// Checks a stream job before anything is written: the addresses, the servers (reachable,
/// the keys streams or absent), Cluster slots; then creates the group if it is missing.
pub(crate) fn prepare(config: &EnrichConfig) -> Result<StreamPlan, EnrichError> {
    let (input, output) = match (&config.input, &config.output) {
        (Input::RedisStream(i), Output::RedisStream(o)) => ((**i).clone(), (**o).clone()),
        (Input::RedisStream(_), _) => {
            return Err(flag(
                "--output",
                "a stream input needs a stream output (redis-stream://…): the output and the input's progress are committed together",
            ))
        }
        _ => {
            return Err(flag(
                "--input",
                "a stream output needs a stream input (redis-stream://…?group=G)",
            ))
        }
    };
    input.check_input().map_err(|e| flag("--input", e))?;
    output.check_output().map_err(|e| flag("--output", e))?;
    if config.checkpoint_dir.is_some() {
        return Err(flag(
            "--checkpoint-dir",
            "a stream job keeps its progress in the streams' consumer group; drop --checkpoint-dir",
        ));
    }
    let options = &config.stream;
    if !options.kafka_config.is_empty() {
        return Err(flag("--kafka-config", "is for a Kafka input and output"));
    }
    if options.field.is_empty() {
        return Err(flag("--stream-field", "must not be empty"));
    }
    let batch_max = crate::connect::redis_stream::MAX_BATCH;
    if options.batch == 0 || options.batch > batch_max {
        return Err(flag(
            "--stream-batch",
            format!("must be from 1 to {batch_max}"),
        ));
    }
    // An entry held longer than this by this instance would be claimed by itself (or
    // another) while still in flight: the claim idle time must exceed a record's longest
    // stay (its timeouts and retries) with room to spare.
    let longest = config.timeout * (config.retries + 1) + Duration::from_secs(1);
    if options.claim_idle <= longest.max(Duration::from_millis(100)) {
        return Err(flag(
            "--claim-idle-ms",
            format!(
                "{} ms must be more than a record's longest stay ({} ms: --timeout-ms x (--retries + 1) + 1 s), or entries still in flight would be claimed",
                options.claim_idle.as_millis(),
                longest.as_millis()
            ),
        ));
    }
    let side = match &config.on_error {
        OnError::SideOutput(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    };
    let out_stream = output.streams[0].clone();
    let mut names = input.streams.clone();
    names.sort();
    names.dedup();
    if names.len() != input.streams.len() {
        return Err(flag("--input", "an input stream is named twice"));
    }
    let group = input.group.clone().expect("checked");
    let mut out_conn = BlockingConn::open(&output.server, CONNECT_TIMEOUT)
        .map_err(|e| flag("--output", unreachable(&output, e)))?;
    let mut in_conn = BlockingConn::open(&input.server, CONNECT_TIMEOUT)
        .map_err(|e| flag("--input", unreachable(&input, e)))?;
    // One server however it is addressed (127.0.0.1, ::1, a name): by its run_id.
    let same = same_server(&mut in_conn, &input, &mut out_conn, &output)
        .map_err(|e| flag("--output", e.to_string()))?;
    if same && input.streams.contains(&out_stream) {
        return Err(flag(
            "--output",
            format!("the output stream {out_stream:?} is also an input stream"),
        ));
    }
    if let Some(s) = side.as_ref().filter(|s| same && input.streams.contains(s)) {
        return Err(flag(
            "--on-error",
            format!("the side stream {s:?} is an input stream"),
        ));
    }
    let mode = if same {
        CommitMode::Ack
    } else {
        CommitMode::Progress(CommitTarget::progress_key(
            &out_stream,
            &input.streams,
            &group,
        ))
    };
    let fence = crate::connect::redis_stream::fence_key(&input.streams, &group);
    check_slots(
        &mut out_conn,
        &input,
        &fence,
        &out_stream,
        side.as_deref(),
        &mode,
    )?;
    if !same {
        check_input_slots(&mut in_conn, &input, &fence)?;
    }
    for name in &input.streams {
        must_be_stream(&mut in_conn, name, "--input")?;
    }
    must_be_stream(&mut out_conn, &out_stream, "--output")?;
    if let Some(s) = &side {
        must_be_stream(&mut out_conn, s, "--on-error")?;
    }
    if let CommitMode::Progress(key) = &mode {
        let reply = out_conn
            .call(&[b"TYPE", key.as_bytes()])
            .map_err(|e| flag("--output", e.to_string()))?;
        if !matches!(text(&reply), Some("zset") | Some("none")) {
            return Err(flag(
                "--output",
                format!("the progress key {key:?} holds something other than a sorted set"),
            ));
        }
    }
    warn_if_evicting(&mut in_conn, "input");
    if !same {
        warn_if_evicting(&mut out_conn, "output");
    }
    let until = match options.until_caught_up {
        true => Some(
            input
                .streams
                .iter()
                .map(|s| last_entry(&mut in_conn, s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| flag("--input", e.to_string()))?,
        ),
        false => None,
    };
    for name in &input.streams {
        create_group(&mut in_conn, name, &group, input.start).map_err(|e| {
            flag(
                "--input",
                format!("cannot create the group {group:?} on {name:?}: {e}"),
            )
        })?;
    }
    let consumer = input
        .consumer
        .clone()
        .unwrap_or_else(|| default_consumer(config, &input, &output));
    let target = CommitTarget {
        output: out_stream,
        side,
        maxlen: output.maxlen,
        inputs: input.streams.clone(),
        group: group.clone(),
        consumer: consumer.clone(),
        mode,
    };
    Ok(StreamPlan {
        input,
        output,
        group,
        consumer,
        field: options.field.clone(),
        read_count: options.batch.max(1),
        commit_batch: options.batch.max(1),
        claim_idle: options.claim_idle,
        until,
        target,
    })
}

/// Why a stream's server cannot be used, with the way out for a missing password.
fn unreachable(url: &StreamUrl, e: StreamConnError) -> String {
    let hint = match &e {
        StreamConnError::Server { message, .. } if message.starts_with("NOAUTH") => {
            " (give the password in the URL, redis-stream://:PASSWORD@HOST:PORT/…, or in REDIS_PASSWORD)"
        }
        _ => "",
    };
    format!("cannot reach {}: {e}{hint}", url.server)
}

/// The default consumer name: the host's name and a hash of what the command reads and
/// writes, so the same command on the same host reads as the same consumer (and picks up
/// its own pending entries first). Two instances of one command on one host must each name
/// their consumer (`consumer=`).
fn default_consumer(config: &EnrichConfig, input: &StreamUrl, output: &StreamUrl) -> String {
    let host = hostname();
    let what = format!(
        "{input}|{output}|{}|{}|{}",
        config.key_field, config.into_field, config.stream.field
    );
    let hash = crate::hash::fnv1a64(what.bytes());
    format!("{host}-{:08x}", hash as u32)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "ringwait".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Exactly-once rests on the server keeping what it acknowledged: a server that may evict
/// keys (`maxmemory-policy` other than `noeviction`) could drop a stream, its group or the
/// progress set. Said once on stderr; the job runs.
fn warn_if_evicting(conn: &mut BlockingConn, which: &str) {
    let Ok(OwnedFrame::Array(pair)) = conn.call(&[b"CONFIG", b"GET", b"maxmemory-policy"]) else {
        return; // CONFIG may be refused to this user: nothing to say
    };
    if let Some(policy) = pair.get(1).and_then(text) {
        if policy != "noeviction" {
            eprintln!(
                "ringwait enrich: warning: the {which}'s server has maxmemory-policy {policy}: under memory pressure it may evict the streams, the group or the progress, and exactly-once with them; use noeviction"
            );
        }
    }
}

/// Refuses a key that holds something other than a stream.
fn must_be_stream(
    conn: &mut BlockingConn,
    key: &str,
    flag_name: &'static str,
) -> Result<(), EnrichError> {
    let reply = conn.call(&[b"TYPE", key.as_bytes()]).map_err(|e| match &e {
        StreamConnError::Server { message, .. } if message.starts_with("MOVED") => flag(
            flag_name,
            format!(
                "the key {key:?} lives on another node of the Redis Cluster ({message}): give that node's address"
            ),
        ),
        _ => flag(flag_name, e.to_string()),
    })?;
    match text(&reply) {
        Some("stream") | Some("none") => Ok(()),
        Some(other) => Err(flag(
            flag_name,
            format!(
                "the key {key:?} on {} holds a {other}, not a stream",
                conn.addr()
            ),
        )),
        None => Err(flag(flag_name, "TYPE gave an unexpected reply")),
    }
}

/// In Redis Cluster, the keys one commit script touches must share a slot (`fence`: the
/// inputs' claim fence).
fn check_slots(
    conn: &mut BlockingConn,
    input: &StreamUrl,
    fence: &str,
    output: &str,
    side: Option<&str>,
    mode: &CommitMode,
) -> Result<(), EnrichError> {
    let mut keys: Vec<&str> = vec![output];
    keys.extend(side);
    match mode {
        CommitMode::Ack => {
            keys.extend(input.streams.iter().map(String::as_str));
            keys.push(fence);
        }
        CommitMode::Progress(key) => keys.push(key),
    }
    if share_a_slot(conn, &keys)? {
        return Ok(());
    }
    Err(flag(
        "--output",
        format!(
            "in Redis Cluster the keys {keys:?} must share a hash slot, since one script commits to them all: give them one {{tag}}, e.g. {{orders}}:in and {{orders}}:out"
        ),
    ))
}

/// On two servers, the input streams (read in one `XREADGROUP`) and the claim fence share a
/// slot too.
fn check_input_slots(
    conn: &mut BlockingConn,
    input: &StreamUrl,
    fence: &str,
) -> Result<(), EnrichError> {
    let mut keys: Vec<&str> = input.streams.iter().map(String::as_str).collect();
    keys.push(fence);
    if share_a_slot(conn, &keys)? {
        return Ok(());
    }
    Err(flag(
        "--input",
        format!("in Redis Cluster the keys {keys:?} (the input streams and their claim fence) must share a hash slot: give the streams one {{tag}}"),
    ))
}

/// Whether `keys` can be used together on `conn`'s server: it is not a cluster node, or they
/// hash to one slot.
fn share_a_slot(conn: &mut BlockingConn, keys: &[&str]) -> Result<bool, EnrichError> {
    if !cluster_enabled(conn)? {
        return Ok(true);
    }
    let slot = crate::lookup::key_slot(keys[0].as_bytes());
    Ok(keys
        .iter()
        .all(|k| crate::lookup::key_slot(k.as_bytes()) == slot))
}

fn cluster_enabled(conn: &mut BlockingConn) -> Result<bool, EnrichError> {
    let reply = conn
        .call(&[b"INFO", b"cluster"])
        .map_err(|e| EnrichError::Stream(e.to_string()))?;
    Ok(text(&reply).is_some_and(|t| t.contains("cluster_enabled:1")))
}

/// The id of a stream's last entry, `None` when it is empty or absent.
fn last_entry(conn: &mut BlockingConn, stream: &str) -> Result<Option<EntryId>, StreamConnError> {
    let reply = conn.call(&[b"XREVRANGE", stream.as_bytes(), b"+", b"-", b"COUNT", b"1"])?;
    Ok(match reply {
        OwnedFrame::Array(entries) => entries.first().and_then(|e| match e {
            OwnedFrame::Array(parts) => parts
                .first()
                .and_then(text)
                .and_then(|id| EntryId::parse(id.as_bytes())),
            _ => None,
        }),
        _ => None,
    })
}

impl StreamPlan {
    /// This instance as a consumer of the input streams.
    pub fn group_consumer(&self) -> crate::connect::redis_stream::GroupConsumer<'_> {
        crate::connect::redis_stream::GroupConsumer {
            streams: &self.input.streams,
            group: &self.group,
            name: &self.consumer,
            count: self.read_count,
        }
    }

    /// A connection to the input's server, waiting for it up to [`SERVER_DOWN_LIMIT`].
    pub fn connect_input(&self, intake: &Intake) -> Result<BlockingConn, EnrichError> {
        connect_patiently(&self.input.server, intake, "--input")
    }

    /// A new connection after `error`, waiting for the server to come back.
    pub fn reconnect_input(
        &self,
        error: &StreamConnError,
        intake: &Intake,
    ) -> Result<BlockingConn, EnrichError> {
        eprintln!(
            "ringwait enrich: lost the input's server ({error}); reconnecting for up to {} s",
            SERVER_DOWN_LIMIT.as_secs()
        );
        self.connect_input(intake)
    }

    /// An error of the input's server that waiting cannot mend.
    pub fn input_error(&self, error: StreamConnError) -> EnrichError {
        EnrichError::Stream(format!("--input {}: {error}", self.input))
    }

    /// The group's lag summed over the input streams (`XINFO GROUPS`; 0 where the server
    /// does not know it).
    pub fn group_lag(&self, conn: &mut BlockingConn) -> Result<u64, StreamConnError> {
        let mut lag = 0;
        for s in &self.input.streams {
            if let Some(info) = self.group_info(conn, s)? {
                lag += info.lag;
            }
        }
        Ok(lag)
    }

    /// `--until caught-up`: whether the group was delivered every entry present at the start.
    pub fn all_delivered(&self, conn: &mut BlockingConn) -> Result<bool, StreamConnError> {
        let Some(targets) = &self.until else {
            return Ok(false);
        };
        for (s, target) in self.input.streams.iter().zip(targets) {
            let Some(target) = target else { continue };
            let delivered = self.group_info(conn, s)?.and_then(|i| i.last_delivered);
            if delivered.is_none_or(|d| d < *target) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `--until caught-up`: whether no entry up to the start's last one is pending in the
    /// group (every one of them is committed, by this instance or another).
    pub fn none_pending_up_to_targets(
        &self,
        conn: &mut BlockingConn,
    ) -> Result<bool, StreamConnError> {
        let Some(targets) = &self.until else {
            return Ok(true);
        };
        for (s, target) in self.input.streams.iter().zip(targets) {
            let Some(target) = target else { continue };
            let end = target.to_string();
            let reply = conn.call(&[
                b"XPENDING",
                s.as_bytes(),
                self.group.as_bytes(),
                b"-",
                end.as_bytes(),
                b"1",
            ])?;
            if matches!(reply, OwnedFrame::Array(ref a) if !a.is_empty()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn group_info(
        &self,
        conn: &mut BlockingConn,
        stream: &str,
    ) -> Result<Option<GroupInfo>, StreamConnError> {
        let reply = conn.call(&[b"XINFO", b"GROUPS", stream.as_bytes()])?;
        let OwnedFrame::Array(groups) = reply else {
            return Ok(None);
        };
        for g in groups {
            let OwnedFrame::Array(fields) = g else {
                continue;
            };
            let mut info = GroupInfo::default();
            let mut name = None;
            for pair in fields.chunks(2) {
                let [k, v] = pair else { continue };
                match text(k) {
                    Some("name") => name = text(v).map(str::to_string),
                    Some("lag") => info.lag = integer(v).unwrap_or(0),
                    Some("last-delivered-id") => {
                        info.last_delivered = text(v).and_then(|t| EntryId::parse(t.as_bytes()))
                    }
                    _ => {}
                }
            }
            if name.as_deref() == Some(self.group.as_str()) {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// A connection to the output's server, waiting for it up to [`SERVER_DOWN_LIMIT`].
    pub fn connect_output(&self, intake: &Intake) -> Result<BlockingConn, EnrichError> {
        connect_patiently(&self.output.server, intake, "--output")
    }
}

#[derive(Debug, Default)]
struct GroupInfo {
    lag: u64,
    last_delivered: Option<EntryId>,
}

fn integer(f: &OwnedFrame) -> Option<u64> {
    match f {
        OwnedFrame::Integer(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Connects, retrying for [`SERVER_DOWN_LIMIT`] (and not past a halt of the job).
pub(crate) fn connect_patiently(
    server: &crate::lookup::RedisUrl,
    intake: &Intake,
    what: &'static str,
) -> Result<BlockingConn, EnrichError> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        match BlockingConn::open(server, CONNECT_TIMEOUT) {
            Ok(conn) => return Ok(conn),
            Err(e) if e.is_connection() && started.elapsed() < SERVER_DOWN_LIMIT => {
                if intake.stopping() {
                    return Err(EnrichError::Stream(format!(
                        "{what} {server}: {e} (stopped while waiting for it)"
                    )));
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(EnrichError::Stream(format!(
                    "{what} {server}: {e} (gave up after {} s)",
                    started.elapsed().as_secs()
                )))
            }
        }
    }
}
