//! [`RedisStreamSource`]: one partition's consumer in a group, read without blocking the
//! partition's executor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{BlockingConn, StreamConnError};
use super::{claim_reply, create_group, GroupConsumer, ReadFrom, StreamUrl};
use crate::element::StreamElement;
use crate::resp::ArrayView;
use crate::source::{BoxError, Source, SourceEvent};

/// One entry read from an input stream. The entries of one read share one buffer, so an
/// entry costs no allocation of its own.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    chunk: Arc<Vec<u8>>,
    id: (u32, u32),
    /// `None`: the entry has no such field, or it was deleted while pending.
    payload: Option<(u32, u32)>,
    stream: u8,
    fence: Option<u64>,
}

impl StreamEntry {
    /// The entry's id as the server wrote it (`MS-SEQ`).
    pub fn id(&self) -> &[u8] {
        &self.chunk[self.id.0 as usize..self.id.1 as usize]
    }

    /// The value of the source's field; `None` when the entry has none (or was deleted from
    /// the stream while it was pending).
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload
            .map(|(s, e)| &self.chunk[s as usize..e as usize])
    }

    /// Which of the source's input streams it came from (its position in the URL).
    pub fn stream(&self) -> usize {
        usize::from(self.stream)
    }

    /// The claim fence read just before the entry was read as new; `None` when it was read
    /// any other way (see [`CommitRecord::fence`](super::CommitRecord::fence)).
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }
}

/// How a [`RedisStreamSource`] reads.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The field holding the record.
    pub field: String,
    /// Entries per read.
    pub count: usize,
    /// Claim entries idle this long in other consumers' pending lists.
    pub claim_idle: Duration,
    /// End (instead of waiting for more) once a read finds nothing new for this consumer.
    pub end_when_empty: bool,
    /// End once this is set: give it the flag of the partition's
    /// [`RedisStreamSink::stop_on_failure`](super::RedisStreamSink::stop_on_failure), so
    /// that a sink that can no longer commit stops the partition's intake (its
    /// [`finish`](crate::sink::Sink::finish) then reports why).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            field: "data".into(),
            count: 256,
            claim_idle: Duration::from_secs(30),
            end_when_empty: false,
            stop: None,
        }
    }
}

/// What the request in flight asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// This consumer's own pending entries (from an earlier run).
    Own,
    /// New entries (`>`), blocking up to [`READ_BLOCK`](super::READ_BLOCK).
    New,
    /// `XAUTOCLAIM` on input stream `k`.
    Claim(usize),
}

/// One partition's input from Redis Streams: a consumer in a group, which reads its own
/// pending entries first (left by an earlier run under the same name), then new ones, and
/// claims entries idle in other consumers' pending lists. An entry stays pending until a
/// [`RedisStreamSink`](super::RedisStreamSink) commits its output, so whatever a partition
/// read when its process died is read again.
///
/// Give each partition its own consumer name (e.g. `format!("{host}-p{index}")`), the same
/// across restarts. A lost connection fails the partition (its entries stay pending).
pub struct RedisStreamSource {
    conn: BlockingConn,
    url: StreamUrl,
    group: String,
    consumer: String,
    options: SourceOptions,
    asked: Option<Asked>,
    /// A read of new entries is in flight and its claim fence's reply has not arrived yet.
    awaiting_fence: bool,
    /// The claim fence read before the read in flight.
    read_fence: Option<u64>,
    own_done: bool,
    own_cursor: Vec<String>,
    claim_cursor: Vec<String>,
    /// The input stream the claim round is on (a round goes through them in turn).
    claim_stream: usize,
    next_claim: Instant,
    ready: VecDeque<StreamEntry>,
    taken: u64,
    ended: bool,
}

impl RedisStreamSource {
    /// Connects to `url`'s server, creates its group where missing (`XGROUP CREATE …
    /// MKSTREAM`, from `start=`), and reads as `consumer`.
    pub fn open(
        url: &StreamUrl,
        consumer: &str,
        options: SourceOptions,
    ) -> Result<RedisStreamSource, BoxError> {
        url.check_input()?;
        let group = url.group.clone().expect("checked");
        let mut conn = BlockingConn::open(&url.server, Duration::from_secs(2))?;
        for s in &url.streams {
            create_group(&mut conn, s, &group, url.start)?;
        }
        let n = url.streams.len();
        Ok(RedisStreamSource {
            conn,
            url: url.clone(),
            group,
            consumer: consumer.to_string(),
            next_claim: Instant::now() + options.claim_idle,
            options,
            asked: None,
            awaiting_fence: false,
            read_fence: None,
            own_done: false,
            own_cursor: vec!["0".into(); n],
            claim_cursor: vec!["0-0".into(); n],
            claim_stream: 0,
            ready: VecDeque::new(),
            taken: 0,
            ended: false,
        })
    }

    /// Sends the next request: a claim round when one is due, else a read.
    fn ask(&mut self) -> Result<(), StreamConnError> {
        let asked = if self.own_done && Instant::now() >= self.next_claim {
            Asked::Claim(self.claim_stream)
        } else if self.own_done {
            Asked::New
        } else {
            Asked::Own
        };
        self.send(asked)
    }

    fn send(&mut self, asked: Asked) -> Result<(), StreamConnError> {
        let consumer = GroupConsumer {
            streams: &self.url.streams,
            group: &self.group,
            name: &self.consumer,
            count: self.options.count,
        };
        match asked {
            Asked::Claim(k) => consumer.send_claim(
                &mut self.conn,
                k,
                self.options.claim_idle,
                &self.claim_cursor[k],
            )?,
            Asked::Own => consumer.send_read(&mut self.conn, ReadFrom::Own(&self.own_cursor))?,
            Asked::New => consumer.send_read(&mut self.conn, ReadFrom::New)?,
        }
        self.asked = Some(asked);
        self.awaiting_fence = matches!(asked, Asked::New | Asked::Own);
        self.read_fence = None;
        Ok(())
    }

    /// Takes the reply of the request in flight if it arrived; true when it did.
    fn receive(&mut self) -> Result<bool, StreamConnError> {
        let Some(asked) = self.asked else {
            return Ok(false);
        };
        let addr = self.conn.addr();
        if self.awaiting_fence {
            match self
                .conn
                .try_reply(|frame| super::fence_reply(frame, addr))?
            {
                Some(fence) => {
                    self.read_fence = Some(fence);
                    self.awaiting_fence = false;
                }
                None => return Ok(false),
            }
        }
        let field = self.options.field.as_bytes().to_vec();
        let streams = &self.url.streams;
        let mut cursors: Vec<Option<String>> = vec![None; streams.len()];
        let mut got = Vec::new();
        let consumer = GroupConsumer {
            streams,
            group: &self.group,
            name: &self.consumer,
            count: self.options.count,
        };
        let reply = self.conn.try_reply(|frame| {
            let mut chunk = Vec::new();
            if let Asked::Claim(k) = asked {
                let (next, entries) = claim_reply(frame, addr)?;
                cursors[k] = Some(next);
                collect(entries, k, &field, &mut chunk, &mut got, addr)?;
                return Ok(chunk);
            }
            consumer.for_each_stream(frame, addr, |k, entries| {
                let before = got.len();
                collect(entries, k, &field, &mut chunk, &mut got, addr)?;
                if got.len() > before {
                    cursors[k] = Some(String::from_utf8_lossy(last_id(&chunk, &got)).into_owned());
                }
                Ok(())
            })?;
            Ok(chunk)
        })?;
        let Some(chunk) = reply else {
            return Ok(false);
        };
        self.asked = None;
        let chunk = Arc::new(chunk);
        let n = got.len();
        let fence = self.read_fence.filter(|_| asked == Asked::New);
        for f in got {
            self.ready.push_back(StreamEntry {
                chunk: chunk.clone(),
                id: f.id,
                payload: f.payload,
                stream: f.stream,
                fence,
            });
        }
        match asked {
            Asked::Own => {
                if n == 0 {
                    self.own_done = true;
                }
                for (c, new) in self.own_cursor.iter_mut().zip(cursors) {
                    if let Some(new) = new {
                        *c = new;
                    }
                }
            }
            Asked::Claim(k) => {
                let next = cursors[k].take().unwrap_or_else(|| "0-0".into());
                let wrapped = next == "0-0";
                self.claim_cursor[k] = next;
                if wrapped {
                    if k + 1 < self.url.streams.len() {
                        self.claim_stream = k + 1;
                        self.send(Asked::Claim(k + 1))?;
                    } else {
                        self.claim_stream = 0;
                        self.next_claim = Instant::now() + self.options.claim_idle / 2;
                    }
                }
            }
            Asked::New => {
                if n == 0 && self.options.end_when_empty {
                    self.ended = true;
                }
            }
        }
        Ok(true)
    }
}

/// Where an entry of a reply was copied: its input stream, id and payload in the chunk.
#[derive(Debug, Clone, Copy)]
struct Found {
    stream: u8,
    id: (u32, u32),
    payload: Option<(u32, u32)>,
}

/// The entries `[id, [field, value, ...] | nil]` of stream `k`, copied into `chunk`.
fn collect(
    entries: ArrayView<'_>,
    k: usize,
    field: &[u8],
    chunk: &mut Vec<u8>,
    got: &mut Vec<Found>,
    addr: std::net::SocketAddr,
) -> Result<(), StreamConnError> {
    super::for_each_entry(entries, field, addr, |raw, _, payload| {
        let at = chunk.len() as u32;
        chunk.extend_from_slice(raw);
        let id = (at, chunk.len() as u32);
        let payload = match payload {
            super::Payload::Found(v) => {
                let at = chunk.len() as u32;
                chunk.extend_from_slice(v);
                Some((at, chunk.len() as u32))
            }
            super::Payload::Missing | super::Payload::Deleted => None,
        };
        got.push(Found {
            stream: k as u8,
            id,
            payload,
        });
        Ok(())
    })
}

fn last_id<'c>(chunk: &'c [u8], got: &[Found]) -> &'c [u8] {
    let (s, e) = got[got.len() - 1].id;
    &chunk[s as usize..e as usize]
}

impl Source for RedisStreamSource {
    type Item = StreamEntry;

    fn next(&mut self) -> Result<SourceEvent<StreamEntry>, BoxError> {
        loop {
            // Stopped: what was read and not taken stays pending in the group.
            let stopped = self
                .options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
            if stopped {
                return Ok(SourceEvent::End);
            }
            if let Some(entry) = self.ready.pop_front() {
                self.taken += 1;
                return Ok(SourceEvent::Element(StreamElement::record(entry)));
            }
            if self.ended {
                return Ok(SourceEvent::End);
            }
            if self.asked.is_none() {
                self.ask()?;
            }
            if !self.receive()? {
                return Ok(SourceEvent::Idle);
            }
        }
    }

    fn position(&self) -> u64 {
        self.taken
    }

    fn wait_for_input(&mut self, timeout: Duration) -> bool {
        if self.asked.is_some() {
            self.conn.readable(timeout);
        }
        true
    }
}
