//! A consumer in a group: the reads and claims it sends, and the replies they get, shared by
//! the job's reader thread and [`RedisStreamSource`](super::RedisStreamSource).

use std::time::Duration;

use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{ArrayView, Frame};

/// How long a read of new entries waits on the server.
pub const READ_BLOCK: Duration = Duration::from_millis(100);

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom<'a> {
    /// New entries (`>`), waiting up to [`READ_BLOCK`] for them.
    New,
    /// This consumer's own pending entries after these ids, one per stream.
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
    /// Sends `XREADGROUP … COUNT n [BLOCK ms] STREAMS s… ids…`.
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
        if let ReadFrom::New = from {
            args.extend([&b"BLOCK"[..], block.as_bytes()]);
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
    /// list, from `cursor` on.
    pub fn send_claim(
        &self,
        conn: &mut BlockingConn,
        k: usize,
        min_idle: Duration,
        cursor: &str,
    ) -> Result<(), StreamConnError> {
        let count = self.count.max(1).to_string();
        let idle = min_idle.as_millis().to_string();
        conn.send_command(&[
            b"XAUTOCLAIM",
            self.streams[k].as_bytes(),
            self.group.as_bytes(),
            self.name.as_bytes(),
            idle.as_bytes(),
            cursor.as_bytes(),
            b"COUNT",
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
