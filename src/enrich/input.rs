//! The reader thread: turns the input (a file, stdin, or generated records) into lines and
//! deals them to the partitions' queues.

use std::io::{BufRead, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::chunk::ChunkBuilder;
use super::intake::{is_stopped, Intake, StopAt, StopAwareRead};
use super::record::{parse_line, utf8, Line, LineError, LineFields};
use super::EnrichError;
use crate::dataset::key_of;
use crate::element::StreamElement;
use crate::queue::BatchSender;

/// Where the records come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// `n` generated records `{"id": i, "key": "k:<key_of(i)>"}` — keys the built-in server
    /// holds.
    Generated(u64),
    /// A file of JSON Lines.
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// Redis Streams read through a consumer group (`redis-stream://…?group=G`).
    RedisStream(Box<super::StreamUrl>),
    /// Kafka topics read through a consumer group (`kafka://…?group=G`).
    Kafka(Box<crate::connect::kafka::KafkaUrl>),
}

/// How lines are dealt to partitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Routing {
    pub partitions: usize,
    pub by: RouteBy,
}

/// What picks a record's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteBy {
    /// Round robin by the record's index.
    Index,
    /// The key (key-ordered mode).
    Key,
    /// The source partition its origin names (Kafka: each Kafka partition on one core).
    Origin,
}

impl Routing {
    fn partition_of(&self, line: &Line) -> usize {
        match self.by {
            // A fixed, versioned hash: checkpoints depend on it (see `routing`).
            RouteBy::Key => super::routing::partition_of_key(line.key(), self.partitions),
            RouteBy::Index => (line.index % self.partitions as u64) as usize,
            RouteBy::Origin => {
                let (topic, p) =
                    crate::connect::kafka::origin::partition_of(line.origin()).unwrap_or((0, 0));
                let n = u64::from(topic) * 1_000_003 + u64::from(p.unsigned_abs());
                (n % self.partitions as u64) as usize
            }
        }
    }

    /// The record's event time: a Kafka message's timestamp.
    fn timestamp_of(&self, line: &Line) -> Option<i64> {
        match self.by {
            RouteBy::Origin => crate::connect::kafka::origin::timestamp_of(line.origin()),
            _ => None,
        }
    }
}

pub(crate) struct ReaderSettings {
    /// The fields each line is read for.
    pub fields: LineFields,
    pub routing: Routing,
    /// When to stop taking input.
    pub intake: Arc<Intake>,
    /// The key field's name as JSON (generated input), escaped once.
    pub generated_key_json: String,
}

/// Starts the reader; it tells [`Intake::reached_end`] when it read the whole input.
pub(crate) fn spawn_reader(
    input: Input,
    settings: Arc<ReaderSettings>,
    queues: Vec<BatchSender<StreamElement<Line>>>,
) -> JoinHandle<Result<(), EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-reader".into())
        .spawn(move || read(input, &settings, &queues))
        .expect("spawning the reader thread")
}

fn read(
    input: Input,
    s: &ReaderSettings,
    queues: &[BatchSender<StreamElement<Line>>],
) -> Result<(), EnrichError> {
    match input {
        Input::Generated(n) => read_generated(n, s, queues),
        Input::File(path) => {
            let name = path.display().to_string();
            // Non-blocking, so that opening a FIFO does not wait for its writer (which a stop
            // could not interrupt); the reads wait with poll(2) instead.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|cause| EnrichError::io("open the input", &name, cause))?;
            read_lines(file, &name, s, queues)
        }
        Input::Stdin => {
            // Our own descriptor of standard input, read without std's buffer, so that
            // waiting for data can be done with poll(2) on it.
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|cause| EnrichError::io("read the input", "standard input", cause))?;
            read_lines(std::fs::File::from(fd), "standard input", s, queues)
        }
        Input::RedisStream(_) | Input::Kafka(_) => unreachable!("a log input has its own reader"),
    }
}

/// Generated records, made and dealt a chunk at a time.
fn read_generated(
    n: u64,
    s: &ReaderSettings,
    queues: &[BatchSender<StreamElement<Line>>],
) -> Result<(), EnrichError> {
    let mut chunk = ChunkBuilder::default();
    let mut text = Vec::with_capacity(128);
    let mut dealer = Dealer::new(s, queues);
    for i in 0..n {
        generated_text(i, s, &mut text);
        chunk.push(&text, i + 1, i, &s.fields)?;
        let full = chunk.len() == GENERATED_PER_CHUNK || i + 1 == n;
        let all = chunk.bytes().len();
        if full && !dealer.deal_chunk(&mut chunk, all) {
            return Ok(());
        }
    }
    s.intake.reached_end(None, n);
    Ok(())
}

/// Records generated per chunk.
const GENERATED_PER_CHUNK: usize = 512;

/// Bytes read from the input at a time; a chunk holds the complete lines of one read.
const READ_SIZE: usize = 64 << 10;

/// Generated record `i`: `{"id":i,"<key field>":"k:<key_of(i)>"}`, written into `out`.
fn generated_text(i: u64, s: &ReaderSettings, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let name = &s.generated_key_json;
    write!(out, r#"{{"id":{i},{name}:"k:{}"}}"#, key_of(i)).expect("writing to a Vec");
}

/// Generated record `i` as a line (the checkpointed source makes them one by one).
fn generated(i: u64, s: &ReaderSettings) -> Result<Line, EnrichError> {
    let mut text = Vec::with_capacity(128);
    generated_text(i, s, &mut text);
    let text = std::str::from_utf8(&text).expect("generated records are ASCII");
    Ok(parse_line(text, i + 1, i, &s.fields)?)
}

/// Reads the next line into `buf`, without its line break; returns the bytes read from the
/// input (line break included, 0 at the end) and whether the break was `\r\n`.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let n = reader.read_until(b'\n', buf)?;
    let crlf = buf.ends_with(b"\r\n");
    buf.truncate(without_break(buf).len());
    Ok((n, crlf))
}

/// A line's text without its line break (and any carriage returns before it).
fn without_break(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

/// Reads the input 64 KiB at a time, straight into a chunk's buffer; the complete lines of
/// each read are checked where they lie and dealt as one chunk. A line longer than the
/// buffer grows it.
fn read_lines(
    file: std::fs::File,
    name: &str,
    s: &ReaderSettings,
    queues: &[BatchSender<StreamElement<Line>>],
) -> Result<(), EnrichError> {
    let mut input = StopAwareRead::new(file, s.intake.clone());
    let mut chunk = ChunkBuilder::default();
    let mut dealer = Dealer::new(s, queues);
    let mut number = 0u64;
    loop {
        let scanned = chunk.bytes().len();
        let n = match input.read(chunk.spare(READ_SIZE / 2)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Intake stopped while the reader waited: a part of a line is dropped unread.
            Err(e) if is_stopped(&e) => return Ok(()),
            Err(cause) => return Err(EnrichError::io("read the input", name, cause)),
        };
        chunk.filled(n);
        let at_end = n == 0;
        let (taken, refused) = check_lines(&mut chunk, scanned, at_end, &mut number, s);
        // The lines before a refused one are dealt (as they were before it was read).
        if !dealer.deal_chunk(&mut chunk, taken) {
            return Ok(());
        }
        if let Some(e) = refused {
            return Err(e.into());
        }
        if at_end {
            s.intake.reached_end(None, number);
            return Ok(());
        }
    }
}

/// Checks the complete lines in the chunk's bytes (the first starts at 0; no line break
/// lies before `scanned`) and stages them; at the end of the input, a last line without a
/// line break too. Returns where the unchecked bytes start, and the error of a refused line.
fn check_lines(
    chunk: &mut ChunkBuilder,
    scanned: usize,
    at_end: bool,
    number: &mut u64,
    s: &ReaderSettings,
) -> (usize, Option<LineError>) {
    let filled = chunk.bytes().len();
    let mut taken = 0;
    let mut search_from = scanned;
    while taken < filled {
        let len = match memchr::memchr(b'\n', &chunk.bytes()[search_from..]) {
            Some(at) => search_from + at + 1 - taken,
            None if at_end => filled - taken, // a last line without a line break
            None => break,
        };
        let raw = &chunk.bytes()[taken..taken + len];
        let crlf = raw.ends_with(b"\r\n");
        let end = taken + without_break(raw).len();
        let checked = utf8(&chunk.bytes()[taken..end], *number + 1)
            .map(drop)
            .and_then(|()| chunk.check((taken, end), crlf, *number + 1, *number, &s.fields));
        if let Err(e) = checked {
            return (taken, Some(e));
        }
        taken += len;
        search_from = taken;
        *number += 1;
    }
    (taken, None)
}

/// Records per batch from the reader to a partition.
pub(crate) const INPUT_BATCH: usize = 1024;

/// Deals lines to the partitions' queues a batch per partition at a time.
pub(crate) struct Dealer<'a> {
    s: &'a ReaderSettings,
    queues: &'a [BatchSender<StreamElement<Line>>],
    batches: Vec<Vec<StreamElement<Line>>>,
}

impl<'a> Dealer<'a> {
    pub fn new(s: &'a ReaderSettings, queues: &'a [BatchSender<StreamElement<Line>>]) -> Self {
        Dealer {
            s,
            queues,
            batches: queues.iter().map(BatchSender::empty_batch).collect(),
        }
    }

    /// Puts a line in its partition's batch; a full batch leaves. False when the pipeline
    /// is gone.
    fn deal(&mut self, line: Line) -> bool {
        let p = self.s.routing.partition_of(&line);
        let timestamp = self.s.routing.timestamp_of(&line);
        self.batches[p].push(StreamElement::Record {
            value: line,
            timestamp,
        });
        self.batches[p].len() < INPUT_BATCH || self.send(p)
    }

    /// Sends every partition's batch (at the end of a chunk). False as [`deal`](Self::deal).
    fn send_all(&mut self) -> bool {
        (0..self.batches.len()).all(|p| self.send(p))
    }

    /// Deals the chunk's lines, all of them, unless intake is stopping (then none). False
    /// when intake stopped or the pipeline is gone.
    /// The chunk's bytes from `keep_from` on are not lines yet and stay in the builder.
    pub fn deal_chunk(&mut self, chunk: &mut ChunkBuilder, keep_from: usize) -> bool {
        if self.s.intake.stopping() {
            return false;
        }
        chunk.finish(keep_from, |line| self.deal(line)) && self.send_all()
    }

    /// Sends partition `p`'s batch. Stops are not looked at here but between chunks (see
    /// [`Dealer::deal_chunk`]): a chunk is dealt whole or not at all, so what the partitions
    /// got is always a prefix of the input, with no gap an ordered output could show.
    fn send(&mut self, p: usize) -> bool {
        if self.batches[p].is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batches[p], self.queues[p].empty_batch());
        self.queues[p].send_blocking(batch).is_ok()
    }
}

/// A replayable source of one partition's lines (checkpointed runs): it reads the whole input
/// itself and keeps the lines routed to its partition. Its position is the byte offset of the
/// next line (the next index for generated input), and its replay index the next line's index.
pub(crate) struct LineSource {
    kind: Kind,
    partition: usize,
    /// The end of the input was reached (and told to the intake).
    ended: bool,
    settings: std::sync::Arc<ReaderSettings>,
}

enum Kind {
    File {
        reader: std::io::BufReader<std::fs::File>,
        path: String,
        offset: u64,
        index: u64,
        bytes: Vec<u8>,
    },
    Generated {
        next: u64,
        total: u64,
    },
}

impl LineSource {
    /// The source of `partition`; `input` must be a file or generated.
    pub fn open(
        input: &Input,
        partition: usize,
        settings: std::sync::Arc<ReaderSettings>,
    ) -> Result<Self, EnrichError> {
        let kind = match input {
            Input::Generated(total) => Kind::Generated {
                next: 0,
                total: *total,
            },
            Input::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|cause| EnrichError::io("open the input", path.display(), cause))?;
                Kind::File {
                    reader: std::io::BufReader::with_capacity(1 << 16, file),
                    path: path.display().to_string(),
                    offset: 0,
                    index: 0,
                    bytes: Vec::new(),
                }
            }
            Input::Stdin | Input::RedisStream(_) | Input::Kafka(_) => {
                return Err(EnrichError::flag(
                    "--checkpoint-dir",
                    "only a file or generated input is replayed from a checkpoint",
                ))
            }
        };
        Ok(LineSource {
            kind,
            partition,
            ended: false,
            settings,
        })
    }

    /// The end of the input, at line `lines`: told to the intake once.
    fn at_end(&mut self, lines: u64) -> crate::source::SourceEvent<Line> {
        if !self.ended {
            self.ended = true;
            self.settings
                .intake
                .reached_end(Some(self.partition), lines);
        }
        crate::source::SourceEvent::End
    }

    /// Whether line `index` may belong here before parsing it (round robin).
    fn maybe_mine(&self, index: u64) -> bool {
        let r = &self.settings.routing;
        r.by == RouteBy::Key || (index % r.partitions as u64) as usize == self.partition
    }
}

impl crate::source::Source for LineSource {
    type Item = Line;

    fn next(&mut self) -> Result<crate::source::SourceEvent<Line>, crate::source::BoxError> {
        use crate::source::SourceEvent;
        let mut limit = u64::MAX;
        // Reading on while the stop line is not known yet: at the limit, wait, not end.
        let mut waiting = false;
        if self.settings.intake.stopping() {
            match self
                .settings
                .intake
                .stop_at(self.partition, self.replay_index())
            {
                StopAt::Now => return Ok(SourceEvent::End),
                StopAt::Wait(ahead) if self.replay_index() < ahead => {
                    limit = ahead;
                    waiting = true;
                }
                StopAt::Wait(_) => return Ok(SourceEvent::Idle),
                StopAt::Before(end) => limit = end,
            }
        }
        loop {
            if self.replay_index() >= limit {
                return Ok(if waiting {
                    SourceEvent::Idle
                } else {
                    SourceEvent::End
                });
            }
            let line = match &mut self.kind {
                Kind::Generated { next, total } => {
                    if *next >= *total {
                        let end = *total;
                        return Ok(self.at_end(end));
                    }
                    let i = *next;
                    *next += 1;
                    if !self.maybe_mine(i) {
                        continue;
                    }
                    generated(i, &self.settings)?
                }
                Kind::File {
                    reader,
                    path,
                    offset,
                    index,
                    bytes,
                } => {
                    let (n, crlf) = next_line(reader, bytes)
                        .map_err(|cause| EnrichError::io("read the input", path, cause))?;
                    if n == 0 {
                        let end = *index;
                        return Ok(self.at_end(end));
                    }
                    *offset += n as u64;
                    let i = *index;
                    *index += 1;
                    let routing = &self.settings.routing;
                    if routing.by != RouteBy::Key
                        && (i % routing.partitions as u64) as usize != self.partition
                    {
                        continue;
                    }
                    let text = utf8(bytes, i + 1)?;
                    let mut line = parse_line(text, i + 1, i, &self.settings.fields)?;
                    line.crlf = crlf;
                    line
                }
            };
            if self.settings.routing.partition_of(&line) != self.partition {
                continue;
            }
            self.settings
                .intake
                .read_up_to(self.partition, self.replay_index());
            return Ok(SourceEvent::Element(StreamElement::record(line)));
        }
    }

    fn position(&self) -> u64 {
        match &self.kind {
            Kind::Generated { next, .. } => *next,
            Kind::File { offset, .. } => *offset,
        }
    }

    fn replay_index(&self) -> u64 {
        match &self.kind {
            Kind::Generated { next, .. } => *next,
            Kind::File { index, .. } => *index,
        }
    }

    fn seek(&mut self, position: u64, next_index: u64) -> Result<(), crate::source::BoxError> {
        match &mut self.kind {
            Kind::Generated { next, .. } => *next = position,
            Kind::File {
                reader,
                path,
                offset,
                index,
                ..
            } => {
                use std::io::Seek;
                reader
                    .seek(std::io::SeekFrom::Start(position))
                    .map_err(|cause| EnrichError::io("seek in the input", path, cause))?;
                *offset = position;
                *index = next_index;
            }
        }
        Ok(())
    }
}
