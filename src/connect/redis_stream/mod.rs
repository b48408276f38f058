//! Redis Streams as a source and a sink.
//!
//! * [`StreamUrl`], the address: `redis-stream://[USER:PW@]HOST:PORT[/DB]/STREAM[,STREAM...][?group=G&…]`;
//! * [`RedisStreamSource`], one partition's consumer in a group: its own pending entries
//!   first, then new ones, and entries idle in dead consumers' pending lists (claimed);
//! * [`RedisStreamSink`], which commits each entry's output and its acknowledgement in one
//!   atomic step per batch (the [`SCRIPT`], or a watched transaction for a batch read fresh:
//!   [`CommitPipeline`]), so an entry gets exactly one output however often it is read or
//!   committed (a restart, a claim, a resent batch).
//!
//! Both do their I/O without blocking the partition's executor (but for the sink's
//! acknowledgements when input and output are on two servers, and for its rare waits on
//! the batches in flight: after a refused watched batch, and before a script batch goes
//! behind watched ones, see [`CommitPipeline`]): requests are written at
//! once, replies are read when they are there, and an idle partition waits on the socket
//! ([`Source::wait_for_input`](crate::source::Source::wait_for_input),
//! [`Sink::wait_for_room`](crate::sink::Sink::wait_for_room)).

mod commit;
mod conn;
mod group;
mod pipeline;
mod sink;
mod source;
mod url;

pub use commit::{
    commit_counts, CommitBatch, CommitCounts, CommitMode, CommitRecord, CommitTarget, EncodedBatch,
    Kind, Watched, GUARD_SCRIPT, MAX_BATCH, PROGRESS_RETENTION, SCRIPT,
};
pub(crate) use conn::text;
pub use conn::{BlockingConn, StreamConnError};
pub use group::{
    claim_reply, fence_key, fence_reply, guard_key, GroupConsumer, ReadFrom, READ_BLOCK,
};
pub use pipeline::{CommitPipeline, Committed};
pub use sink::{RedisStreamSink, SinkStats, StreamOutput};
pub use source::{RedisStreamSource, SourceOptions, StreamEntry};
pub use url::{GroupStart, StreamUrl, StreamUrlError};

/// A stream entry's id, `MS-SEQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// Parses `MS-SEQ` (or `MS`).
    ///
    /// ```
    /// use ringwait::connect::redis_stream::EntryId;
    /// assert_eq!(EntryId::parse(b"17-3"), Some(EntryId { ms: 17, seq: 3 }));
    /// assert!(EntryId::parse(b"17-3") < EntryId::parse(b"18-0"));
    /// ```
    pub fn parse(b: &[u8]) -> Option<EntryId> {
        let s = std::str::from_utf8(b).ok()?;
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Whether two connections reach one server and database: the same `run_id` (`INFO
/// server`), whatever the addresses used (`127.0.0.1`, `::1`, a host name), and the same
/// database.
pub fn same_server(
    a: &mut BlockingConn,
    a_url: &StreamUrl,
    b: &mut BlockingConn,
    b_url: &StreamUrl,
) -> Result<bool, StreamConnError> {
    if a_url.server.db != b_url.server.db {
        return Ok(false);
    }
    Ok(run_id(a)? == run_id(b)?)
}

/// The server's `run_id`.
fn run_id(conn: &mut BlockingConn) -> Result<String, StreamConnError> {
    let reply = conn.call(&[b"INFO", b"server"])?;
    let info = text(&reply).unwrap_or_default();
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// `XGROUP CREATE … MKSTREAM`; a group that exists is left as it is.
pub fn create_group(
    conn: &mut BlockingConn,
    stream: &str,
    group: &str,
    start: GroupStart,
) -> Result<(), StreamConnError> {
    let start: &[u8] = match start {
        GroupStart::Beginning => b"0",
        GroupStart::New => b"$",
    };
    match conn.call(&[
        b"XGROUP",
        b"CREATE",
        stream.as_bytes(),
        group.as_bytes(),
        start,
        b"MKSTREAM",
    ]) {
        Ok(_) => Ok(()),
        Err(StreamConnError::Server { message, .. }) if message.starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// What an entry of a read or claim reply holds in the field a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'f> {
    /// The field's value.
    Found(&'f [u8]),
    /// The entry has no such field.
    Missing,
    /// The entry was deleted from the stream while it was pending (its fields are nil).
    Deleted,
}

/// Walks the entries `[id, [field, value, ...] | nil]` of one stream in a reply, handing each
/// entry's id (checked to be `MS-SEQ`) and what it holds in `field` to `each`.
pub fn for_each_entry<'f>(
    entries: crate::resp::ArrayView<'f>,
    field: &[u8],
    addr: std::net::SocketAddr,
    mut each: impl FnMut(&'f [u8], EntryId, Payload<'f>) -> Result<(), StreamConnError>,
) -> Result<(), StreamConnError> {
    use crate::resp::Frame;
    let protocol = |what: &str| StreamConnError::protocol(addr, what);
    for entry in entries.iter() {
        let Frame::Array(parts) = entry else {
            return Err(protocol("a stream entry"));
        };
        let mut parts = parts.iter();
        let raw = parts.next().and_then(|f| f.as_bytes());
        let (raw, id) = raw
            .and_then(|r| EntryId::parse(r).map(|id| (r, id)))
            .ok_or_else(|| protocol("a stream entry's id"))?;
        let payload = match parts.next() {
            Some(Frame::Array(fields)) => {
                let mut it = fields.iter();
                let mut found = Payload::Missing;
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    if f.as_bytes() == Some(field) {
                        found = v.as_bytes().map_or(Payload::Missing, Payload::Found);
                        break;
                    }
                }
                found
            }
            _ => Payload::Deleted,
        };
        each(raw, id, payload)?;
    }
    Ok(())
}
