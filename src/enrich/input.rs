//! The reader thread: turns the input (a file, stdin, or generated records) into lines and
//! deals them to the partitions' queues.

use std::io::BufRead;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::intake::{is_stopped, Intake, StopAt, StopAwareRead};
use super::record::{parse_line, utf8, Line, LineFields};
use super::EnrichError;
use crate::dataset::key_of;
use crate::element::StreamElement;
use crate::queue::{Producer, PushError};

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
}

/// How lines are dealt to partitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Routing {
    pub partitions: usize,
    /// Route by key (key-ordered mode) instead of round robin.
    pub by_key: bool,
}

impl Routing {
    fn partition_of(&self, line: &Line) -> usize {
        if self.by_key {
            // A fixed, versioned hash: checkpoints depend on it (see `routing`).
            super::routing::partition_of_key(&line.key, self.partitions)
        } else {
            (line.index % self.partitions as u64) as usize
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

/// Starts the reader; it returns the number of records it dealt, and tells
/// [`Intake::reached_end`] when it read the whole input.
pub(crate) fn spawn_reader(
    input: Input,
    settings: Arc<ReaderSettings>,
    queues: Vec<Producer<StreamElement<Arc<Line>>>>,
) -> JoinHandle<Result<u64, EnrichError>> {
    std::thread::Builder::new()
        .name("ringwait-reader".into())
        .spawn(move || read(input, &settings, &queues))
        .expect("spawning the reader thread")
}

fn read(
    input: Input,
    s: &ReaderSettings,
    queues: &[Producer<StreamElement<Arc<Line>>>],
) -> Result<u64, EnrichError> {
    match input {
        Input::Generated(n) => {
            for i in 0..n {
                if !deal(generated(i, s)?, s, queues) {
                    return Ok(i);
                }
            }
            s.intake.reached_end(None, n);
            Ok(n)
        }
        Input::File(path) => {
            let name = path.display().to_string();
            // Non-blocking, so that opening a FIFO does not wait for its writer (which a stop
            // could not interrupt); the reads wait with poll(2) instead.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|cause| EnrichError::Io {
                    what: "open the input",
                    path: name.clone(),
                    cause,
                })?;
            read_lines(file, &name, s, queues)
        }
        Input::Stdin => {
            // Our own descriptor of standard input, read without std's buffer, so that
            // waiting for data can be done with poll(2) on it.
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|cause| EnrichError::Io {
                    what: "read the input",
                    path: "standard input".into(),
                    cause,
                })?;
            read_lines(std::fs::File::from(fd), "standard input", s, queues)
        }
    }
}

/// Generated record `i`: `{"id":i,"<key field>":"k:<key_of(i)>"}`.
fn generated(i: u64, s: &ReaderSettings) -> Result<Line, EnrichError> {
    let name = &s.generated_key_json;
    let text = format!(r#"{{"id":{i},{name}:"k:{}"}}"#, key_of(i));
    Ok(parse_line(&text, i + 1, i, &s.fields)?)
}

/// Reads the next line into `buf`, without its line break; returns the bytes read from the
/// input (line break included), 0 at the end.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    let n = reader.read_until(b'\n', buf)?;
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(n)
}

fn read_lines(
    file: std::fs::File,
    name: &str,
    s: &ReaderSettings,
    queues: &[Producer<StreamElement<Arc<Line>>>],
) -> Result<u64, EnrichError> {
    let mut reader =
        std::io::BufReader::with_capacity(1 << 16, StopAwareRead::new(file, s.intake.clone()));
    let mut bytes = Vec::new();
    let mut number = 0u64;
    loop {
        let more = match next_line(&mut reader, &mut bytes) {
            Ok(n) => n > 0,
            // Intake stopped while the reader waited: a part of a line is dropped unread.
            Err(e) if is_stopped(&e) => return Ok(number),
            Err(cause) => {
                return Err(EnrichError::Io {
                    what: "read the input",
                    path: name.to_string(),
                    cause,
                })
            }
        };
        if !more {
            s.intake.reached_end(None, number);
            return Ok(number);
        }
        let text = utf8(&bytes, number + 1)?;
        let line = parse_line(text, number + 1, number, &s.fields)?;
        number += 1;
        if !deal(line, s, queues) {
            return Ok(number);
        }
    }
}

/// Hands a line to its partition; false when the pipeline is gone or stopping.
fn deal(line: Line, s: &ReaderSettings, queues: &[Producer<StreamElement<Arc<Line>>>]) -> bool {
    if s.intake.stopping() {
        return false;
    }
    let p = s.routing.partition_of(&line);
    match queues[p].push_blocking(StreamElement::record(Arc::new(line))) {
        Ok(()) => true,
        Err(PushError::Disconnected(_)) | Err(PushError::Full(_)) => false,
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
                let file = std::fs::File::open(path).map_err(|cause| EnrichError::Io {
                    what: "open the input",
                    path: path.display().to_string(),
                    cause,
                })?;
                Kind::File {
                    reader: std::io::BufReader::with_capacity(1 << 16, file),
                    path: path.display().to_string(),
                    offset: 0,
                    index: 0,
                    bytes: Vec::new(),
                }
            }
            Input::Stdin => {
                return Err(EnrichError::Flag {
                    flag: "--checkpoint-dir",
                    reason: "standard input cannot be replayed: use --input PATH".into(),
                })
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
    fn at_end(&mut self, lines: u64) -> crate::source::SourceEvent<Arc<Line>> {
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
        r.by_key || (index % r.partitions as u64) as usize == self.partition
    }
}

impl crate::source::Source for LineSource {
    type Item = Arc<Line>;

    fn next(&mut self) -> Result<crate::source::SourceEvent<Arc<Line>>, crate::source::BoxError> {
        use crate::source::SourceEvent;
        let mut limit = u64::MAX;
        if self.settings.intake.stopping() {
            match self
                .settings
                .intake
                .stop_at(self.partition, self.replay_index())
            {
                StopAt::Now => return Ok(SourceEvent::End),
                StopAt::Wait => return Ok(SourceEvent::Idle),
                StopAt::Before(end) => limit = end,
            }
        }
        loop {
            if self.replay_index() >= limit {
                return Ok(SourceEvent::End);
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
                    let n = next_line(reader, bytes).map_err(|cause| EnrichError::Io {
                        what: "read the input",
                        path: path.clone(),
                        cause,
                    })?;
                    if n == 0 {
                        let end = *index;
                        return Ok(self.at_end(end));
                    }
                    *offset += n as u64;
                    let i = *index;
                    *index += 1;
                    let routing = &self.settings.routing;
                    if !routing.by_key && (i % routing.partitions as u64) as usize != self.partition
                    {
                        continue;
                    }
                    let text = utf8(bytes, i + 1)?;
                    parse_line(text, i + 1, i, &self.settings.fields)?
                }
            };
            if self.settings.routing.partition_of(&line) != self.partition {
                continue;
            }
            return Ok(SourceEvent::Element(StreamElement::record(Arc::new(line))));
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
                    .map_err(|cause| EnrichError::Io {
                        what: "seek in the input",
                        path: path.clone(),
                        cause,
                    })?;
                *offset = position;
                *index = next_index;
            }
        }
        Ok(())
    }
}
