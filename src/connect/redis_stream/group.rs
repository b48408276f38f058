//! A consumer in a group: the reads and claims it sends, and the replies they get, shared by
//! the job's reader thread and [`RedisStreamSource`](super::RedisStreamSource).

use std::time::Duration;

use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{ArrayView, Frame};

/// How long a read of new entries waits on the server.
pub const READ_BLOCK: Duration = Duration::from_millis(100);

/// The claim fence of `group` on `inputs`: a counter that every claim
/// ([`GroupConsumer::send_claim`]) increments in the same script as its `XAUTOCLAIM` when it
/// takes anything, and every read of a consumer's own pending entries increments before
/// it. A batch whose entries were all read as new while the fence held one value, and which
/// finds it still there, holds entries that no other ringwait consumer can have taken: the
/// commit script acknowledges it with one `XACK` (see [`SCRIPT`](super::SCRIPT)). The key
/// sits in the first input's hash slot: `{tag}:ringwait-claims:G` beside an input named
/// with a `{tag}`, else `{INPUT}:ringwait-claims:G`.
pub fn fence_key(inputs: &[String], group: &str) -> String {
    format!("{}:ringwait-claims:{group}", slot_base(inputs))
}

/// The commit guard of `consumer` in `group` on `inputs`, beside the claim fence (in its
/// hash slot): `{tag}:ringwait-guard:G:CONSUMER`. A watched commit
/// ([`CommitPipeline`](super::CommitPipeline)) sets it when it finds the fence moved, which
/// aborts that commit and every watched commit behind it on the connection until the
/// pipeline deletes it again.
pub fn guard_key(inputs: &[String], group: &str, consumer: &str) -> String {
    format!("{}:ringwait-guard:{group}:{consumer}", slot_base(inputs))
}

/// The first input's name with its `{tag}`, or the whole name as the tag.
fn slot_base(inputs: &[String]) -> String {
    let first = inputs.first().map_or("", String::as_str);
    if super::commit::has_hash_tag(first) {
        first.to_string()
    } else {
        format!("{{{first}}}")
    }
}

/// `XAUTOCLAIM`, and an increment of the claim fence (`KEYS[2]`) when it took or dropped
/// anything, in one script.
const CLAIM_SCRIPT: &str = r#"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
if #r[2] > 0 or (r[3] and #r[3] > 0) then redis.call('INCR', KEYS[2]) end
return r
"#;

/// Where a read starts. Either read is preceded by a command on the claim fence
/// ([`fence_key`]), so it has two replies, the fence's first (read it with
/// [`fence_reply`]).
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom<'a> {
    /// New entries (`>`), waiting up to [`READ_BLOCK`] for them, after a `GET` of the fence:
    /// the value the entries are read at.
    New,
    /// This consumer's own pending entries after these ids, one per stream, after an `INCR`
    /// of the fence: another process under the same consumer name (one frozen, or one
    /// killed with a commit still on its way) may hold these entries in a batch read fresh,
    /// which must then be checked entry by entry.
    Own(&'a [String]),
}

/// A consumer of `streams` in `group`, reading `count` entries at a time.
#[derive(Debug, Clone, Copy)]
pub struct GroupConsumer<'a> {
    /// The input streams.
    pub streams: &'a [String],
    /// The group.
    pub group: &'a str,
    /// This consumer's name.
    pub name: &'a str,
    /// Entries per read or claim.
    pub count: usize,
}

impl GroupConsumer<'_> {
    /// Sends `XREADGROUP … COUNT n [BLOCK ms] STREAMS s… ids…`, after a `GET` (new entries)
    /// or an `INCR` (own pending entries) of the claim fence: see [`ReadFrom`].
    pub fn send_read(
        &self,
        conn: &mut BlockingConn,
        from: ReadFrom<'_>,
    ) -> Result<(), StreamConnError> {
        let count = self.count.max(1).to_string();
        let block = READ_BLOCK.as_millis().to_string();
        let mut args: Vec<&[u8]> = Vec::with_capacity(9 + 2 * self.streams.len());
        args.extend([
            &b"XREADGROUP"[..],
            b"GROUP",
            self.group.as_bytes(),
            self.name.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ]);
        let fence = fence_key(self.streams, self.group);
        match from {
            ReadFrom::New => {
                conn.send_command(&[b"GET", fence.as_bytes()])?;
                args.extend([&b"BLOCK"[..], block.as_bytes()]);
            }
            ReadFrom::Own(_) => conn.send_command(&[b"INCR", fence.as_bytes()])?,
        }
        args.push(b"STREAMS");
        args.extend(self.streams.iter().map(|s| s.as_bytes()));
        match from {
            ReadFrom::New => args.extend(self.streams.iter().map(|_| &b">"[..])),
            ReadFrom::Own(after) => args.extend(after.iter().map(|c| c.as_bytes())),
        }
        conn.send_command(&args)
    }

    /// Sends `XAUTOCLAIM` on stream `k`: entries idle `min_idle` in any consumer's pending
    /// list, from `cursor` on; the claim fence ([`fence_key`]) moves in the same script when
    /// anything is claimed. The reply is `XAUTOCLAIM`'s ([`claim_reply`]).
    pub fn send_claim(
        &self,
        conn: &mut BlockingConn,
        k: usize,
        min_idle: Duration,
        cursor: &str,
    ) -> Result<(), StreamConnError> {
        let count = self.count.max(1).to_string();
        let idle = min_idle.as_millis().to_string();
        let fence = fence_key(self.streams, self.group);
        conn.send_command(&[
            b"EVAL",
            CLAIM_SCRIPT.as_bytes(),
            b"2",
            self.streams[k].as_bytes(),
            fence.as_bytes(),
            self.group.as_bytes(),
            self.name.as_bytes(),
            idle.as_bytes(),
            cursor.as_bytes(),
            count.as_bytes(),
        ])
    }

    /// Walks an `XREADGROUP` reply (`[[name, entries], …]`, or nil when nothing came within
    /// the block), handing each stream's position among `streams` and its entries to `each`.
    pub fn for_each_stream<'f>(
        &self,
        frame: Frame<'f>,
        addr: std::net::SocketAddr,
        mut each: impl FnMut(usize, ArrayView<'f>) -> Result<(), StreamConnError>,
    ) -> Result<(), StreamConnError> {
        let Frame::Array(per_stream) = frame else {
            return Ok(()); // nil: nothing within the block
        };
        for s in per_stream.iter() {
            let Frame::Array(pair) = s else {
                return Err(StreamConnError::protocol(addr, "XREADGROUP's reply"));
            };
            let mut pair = pair.iter();
            let name = pair.next().and_then(|f| f.as_bytes());
            let k = self
                .streams
                .iter()
                .position(|s| Some(s.as_bytes()) == name)
                .ok_or_else(|| {
                    StreamConnError::protocol(addr, "a reply for a stream not asked for")
                })?;
            match pair.next() {
                Some(Frame::Array(entries)) => each(k, entries)?,
                _ => return Err(StreamConnError::protocol(addr, "XREADGROUP's entries")),
            }
        }
        Ok(())
    }
}

/// The claim fence's value from the `GET` (or `INCR`) before a read (0 while the key is
/// absent).
pub fn fence_reply(frame: Frame<'_>, addr: std::net::SocketAddr) -> Result<u64, StreamConnError> {
    match frame {
        Frame::Nil => Ok(0),
        Frame::Integer(n) => Ok(n as u64),
        f => f
            .as_bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| StreamConnError::protocol(addr, "the claim fence must hold a counter")),
    }
}

/// An `XAUTOCLAIM` reply: the cursor to go on from (`0-0` once the pending list was walked
/// through) and the entries claimed.
pub fn claim_reply<'f>(
    frame: Frame<'f>,
    addr: std::net::SocketAddr,
) -> Result<(String, ArrayView<'f>), StreamConnError> {
    let Frame::Array(parts) = frame else {
        return Err(StreamConnError::protocol(
            addr,
            "XAUTOCLAIM must answer an array",
        ));
    };
    let mut parts = parts.iter();
    let next = parts
        .next()
        .and_then(|f| f.as_bytes())
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| StreamConnError::protocol(addr, "XAUTOCLAIM's cursor"))?
        .to_string();
    match parts.next() {
        Some(Frame::Array(entries)) => Ok((next, entries)),
        _ => Err(StreamConnError::protocol(addr, "XAUTOCLAIM's entries")),
    }
}
