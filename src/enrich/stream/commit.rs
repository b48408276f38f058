//! The committer: the writer's side of a stream output. Results gather in a batch; a full
//! batch (or the writer going idle) leaves as one `EVAL` of [`SCRIPT`], which adds each
//! entry's output and commits its progress atomically (see the [module docs](super)). Up to
//! [`WINDOW`] batches are in flight at once; their replies are read in order. A lost
//! connection is reopened and every batch whose reply did not arrive is sent again: the
//! script adds nothing for an entry already committed, so resending is safe.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::conn::{BlockingConn, StreamConnError};
use super::{CommitMode, StreamCounters, StreamPlan, PROGRESS_RETENTION};
use crate::enrich::intake::Intake;
use crate::enrich::record::Line;
use crate::enrich::EnrichError;
use crate::resp::{encode_command, write_array_header, write_bulk, Frame};

/// Batches in flight before the writer waits for the oldest one's reply.
pub(crate) const WINDOW: usize = 4;

/// The commit script.
///
/// `KEYS`: output, side stream (the output again when there is none), progress key (the
/// output again in ack mode), then the input streams (ack mode).
/// `ARGV`: group, maxlen (`0`: none), mode (`a` ack, `p` progress), now (ms), trim bound
/// (ms), the input streams' count `n`, their `n` names, the consumer, then per record a tag
/// (`d`, `e` or `s`, then the input stream's number from 1) and the entry id, followed by
/// its output (`d`), or the payload and the error text (`e`), or nothing (`s`: skip).
/// Returns `{committed, duplicates}`.
///
/// The keys' types are checked before anything is written, so a wrong type stops the batch
/// with nothing of it done. In ack mode an entry is new when its `XACK` acknowledges it
/// (returns 1; `XCLAIM … JUSTID` for the batch cost 2.5 µs of server time per entry, the
/// `XACK`s 0.6); in progress mode `ZMSCORE` names, for the whole batch, those not in the
/// progress set, and one `ZADD NX` records them. Only new entries get an output, each once.
pub const SCRIPT: &str = r#"
local out, side, progress = KEYS[1], KEYS[2], KEYS[3]
local group, maxlen, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, keep_from, n = ARGV[4], ARGV[5], tonumber(ARGV[6])
local consumer = ARGV[7 + n]
for _, key in ipairs({out, side}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE the key ' .. key .. ' holds a ' .. t .. ', not a stream')
  end
end
local last = #ARGV
-- The input stream of the record whose tag is `tag`.
local function stream_of(tag)
  if n == 1 then return 1 end
  return tonumber(string.sub(tag, 2))
end
-- Where the record after the one at `i` starts.
local function next_record(i, kind)
  if kind == 100 then return i + 3 elseif kind == 101 then return i + 4 else return i + 2 end
end
-- Progress mode: which are not in the progress set yet, for the whole batch at once.
local fresh = {}
if mode == 'p' then
  local members, ids = {}, {}
  for k = 1, n do members[k] = {}; ids[k] = {} end
  local i = 8 + n
  while i <= last do
    local k, id = stream_of(ARGV[i]), ARGV[i + 1]
    table.insert(members[k], ARGV[6 + k] .. '/' .. id)
    table.insert(ids[k], id)
    i = next_record(i, string.byte(ARGV[i], 1))
  end
  for k = 1, n do
    if #ids[k] > 0 then
      local scores = redis.call('ZMSCORE', progress, unpack(members[k]))
      local add = {}
      for j, id in ipairs(ids[k]) do
        if not scores[j] then
          fresh[k .. '/' .. id] = true
          add[#add + 1] = now
          add[#add + 1] = members[k][j]
        end
      end
      if #add > 0 then redis.call('ZADD', progress, 'NX', unpack(add)) end
    end
  end
end
local function add(key, ...)
  if maxlen > 0 then
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', ...)
  else
    redis.call('XADD', key, '*', ...)
  end
end
local committed, duplicates = 0, 0
local i = 8 + n
if mode == 'a' and n == 1 and maxlen == 0 then
  -- The common case, without the general loop's calls per record.
  local input = KEYS[4]
  while i <= last do
    local id, kind = ARGV[i + 1], string.byte(ARGV[i], 1)
    if redis.call('XACK', input, group, id) == 1 then
      if kind == 100 then
        redis.call('XADD', out, '*', 'data', ARGV[i + 2], 'src', id)
      elseif kind == 101 then
        redis.call('XADD', side, '*', 'error', ARGV[i + 3], 'src', id, 'data', ARGV[i + 2])
      end
      committed = committed + 1
    else
      duplicates = duplicates + 1
    end
    if kind == 100 then i = i + 3 elseif kind == 101 then i = i + 4 else i = i + 2 end
  end
  return {committed, duplicates}
end
while i <= last do
  local tag, id = ARGV[i], ARGV[i + 1]
  local kind, k = string.byte(tag, 1), stream_of(tag)
  local new
  if mode == 'a' then
    -- Ack mode: the entry is not committed yet exactly when this acknowledges it.
    new = redis.call('XACK', KEYS[3 + k], group, id) == 1
  else
    local at = k .. '/' .. id
    new = fresh[at]
    fresh[at] = nil -- an entry twice in one batch is committed once
  end
  if new then
    if kind == 100 then -- 'd'
      if n > 1 then add(out, 'data', ARGV[i + 2], 'src', id, 'stream', ARGV[6 + k])
      else add(out, 'data', ARGV[i + 2], 'src', id) end
    elseif kind == 101 then -- 'e'
      if n > 1 then add(side, 'error', ARGV[i + 3], 'src', id, 'stream', ARGV[6 + k], 'data', ARGV[i + 2])
      else add(side, 'error', ARGV[i + 3], 'src', id, 'data', ARGV[i + 2]) end
    end
    committed = committed + 1
  else
    duplicates = duplicates + 1
  end
  i = next_record(i, kind)
end
if mode == 'p' then
  redis.call('ZREMRANGEBYSCORE', progress, '-inf', '(' .. keep_from)
end
return {committed, duplicates}
"#;

/// What a record commits as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Its output.
    Data,
    /// An error entry on the side stream.
    Error,
    /// Nothing but its progress (`--on-error skip`).
    Skip,
}

/// A batch sent and not yet answered.
struct Sent {
    command: Vec<u8>,
    /// Two-server commits: the `XACK`s to send once the script's reply arrives.
    acks: Vec<u8>,
    ack_count: usize,
    sent_at: Instant,
}

/// The writer's committer for a stream output.
pub(crate) struct StreamCommitter {
    plan: Arc<StreamPlan>,
    intake: Arc<Intake>,
    conn: BlockingConn,
    /// Two-server commits: the input's server, for `XACK`.
    acks_conn: Option<BlockingConn>,
    /// The records of the batch being built, encoded (2 to 4 arguments each).
    body: Vec<u8>,
    records: usize,
    args: usize,
    /// Two-server commits: the batch's entry ids per input stream.
    ids: Vec<Vec<u8>>,
    id_lens: Vec<Vec<u32>>,
    in_flight: VecDeque<Sent>,
    counters: Arc<StreamCounters>,
    /// Commit round trips since the last [`publish`](Self::publish) (for the summary).
    latency: hdrhistogram::Histogram<u64>,
    /// `--metrics`: the gauges, every commit round trip of the run, and when they were last
    /// published.
    live: Option<(
        Arc<crate::metrics::live::LiveMetrics>,
        hdrhistogram::Histogram<u64>,
        Instant,
    )>,
}

impl StreamCommitter {
    /// Connects to the output's server (and the input's, for two-server commits).
    pub fn open(
        plan: Arc<StreamPlan>,
        intake: Arc<Intake>,
        counters: Arc<StreamCounters>,
        live: Option<Arc<crate::metrics::live::LiveMetrics>>,
    ) -> Result<StreamCommitter, EnrichError> {
        let conn = plan.connect_output(&intake)?;
        let acks_conn = match plan.mode {
            CommitMode::Ack => None,
            CommitMode::Progress(_) => Some(plan.connect_input(&intake)?),
        };
        let n = plan.input.streams.len();
        Ok(StreamCommitter {
            plan,
            intake,
            conn,
            acks_conn,
            body: Vec::with_capacity(64 << 10),
            records: 0,
            args: 0,
            ids: vec![Vec::new(); n],
            id_lens: vec![Vec::new(); n],
            in_flight: VecDeque::with_capacity(WINDOW + 1),
            counters,
            latency: crate::metrics::latency_histogram(),
            live: live.map(|l| (l, crate::metrics::latency_histogram(), Instant::now())),
        })
    }

    /// Adds a record's result to the batch: its output `data`, an error entry (`data` is
    /// then the payload as it came, `error` why), or only its progress. A full batch leaves.
    pub fn add(
        &mut self,
        line: &Line,
        kind: Kind,
        data: &[u8],
        error: &str,
    ) -> Result<(), EnrichError> {
        let origin = line.origin();
        let (k, id) = (usize::from(origin[0]), &origin[1..]);
        // The tag: the kind, then the input stream's number from 1 (at most 255).
        let mut tag = [0u8; 4];
        tag[0] = match kind {
            Kind::Data => b'd',
            Kind::Error => b'e',
            Kind::Skip => b's',
        };
        let digits = {
            let mut n = k + 1;
            let mut d = [0u8; 3];
            let mut len = 0;
            while n > 0 || len == 0 {
                d[2 - len] = b'0' + (n % 10) as u8;
                n /= 10;
                len += 1;
            }
            tag[1..=len].copy_from_slice(&d[3 - len..]);
            len
        };
        write_bulk(&mut self.body, &tag[..=digits]);
        write_bulk(&mut self.body, id);
        match kind {
            Kind::Data => {
                write_bulk(&mut self.body, data);
                self.args += 3;
            }
            Kind::Error => {
                write_bulk(&mut self.body, data);
                write_bulk(&mut self.body, error.as_bytes());
                self.args += 4;
            }
            Kind::Skip => self.args += 2,
        }
        if self.acks_conn.is_some() {
            self.ids[k].extend_from_slice(id);
            self.id_lens[k].push(id.len() as u32);
        }
        self.records += 1;
        if self.records >= self.plan.commit_batch {
            self.send_batch()?;
        }
        Ok(())
    }

    /// `STREAM/ID`: the entry a record came from, for messages.
    pub fn describe(&self, line: &Line) -> String {
        let origin = line.origin();
        match origin.split_first() {
            Some((k, id)) => format!(
                "{}/{}",
                self.plan.input.streams[usize::from(*k)],
                String::from_utf8_lossy(id)
            ),
            None => format!("record {}", line.number),
        }
    }

    /// Sends the batch being built and waits for every batch in flight.
    pub fn flush(&mut self) -> Result<(), EnrichError> {
        self.send_batch()?;
        while !self.in_flight.is_empty() {
            self.receive_one()?;
        }
        self.publish();
        self.publish_live();
        Ok(())
    }

    /// Sends the batch being built (if any); waits for the oldest reply past [`WINDOW`].
    fn send_batch(&mut self) -> Result<(), EnrichError> {
        if self.records == 0 {
            return Ok(());
        }
        let command = self.encode();
        let (acks, ack_count) = self.encode_acks();
        self.body.clear();
        self.records = 0;
        self.args = 0;
        let sent = Sent {
            command,
            acks,
            ack_count,
            sent_at: Instant::now(),
        };
        if let Err(e) = self.conn.send(&sent.command) {
            self.in_flight.push_back(sent);
            return self.recover(e);
        }
        self.in_flight.push_back(sent);
        while self.in_flight.len() > WINDOW {
            self.receive_one()?;
        }
        Ok(())
    }

    /// The `EVAL` of the batch being built.
    fn encode(&self) -> Vec<u8> {
        let plan = &self.plan;
        let out = plan.output.streams[0].as_bytes();
        let side = plan.side.as_deref().map_or(out, str::as_bytes);
        let inputs = &plan.input.streams;
        let (mode, progress): (&[u8], &[u8]) = match &plan.mode {
            CommitMode::Ack => (b"a", out),
            CommitMode::Progress(key) => (b"p", key.as_bytes()),
        };
        let ack_keys = if plan.mode == CommitMode::Ack {
            inputs.len()
        } else {
            0
        };
        let keys = 3 + ack_keys;
        let now = now_ms();
        let keep_from = now.saturating_sub(PROGRESS_RETENTION.as_millis() as u64);
        let args = 3 + keys + 6 + inputs.len() + 1 + self.args;
        let mut c = Vec::with_capacity(self.body.len() + SCRIPT.len() + 256);
        write_array_header(&mut c, args);
        write_bulk(&mut c, b"EVAL");
        write_bulk(&mut c, SCRIPT.as_bytes());
        write_bulk(&mut c, keys.to_string().as_bytes());
        write_bulk(&mut c, out);
        write_bulk(&mut c, side);
        write_bulk(&mut c, progress);
        for s in inputs.iter().take(ack_keys) {
            write_bulk(&mut c, s.as_bytes());
        }
        write_bulk(&mut c, plan.group.as_bytes());
        write_bulk(
            &mut c,
            plan.output.maxlen.unwrap_or(0).to_string().as_bytes(),
        );
        write_bulk(&mut c, mode);
        write_bulk(&mut c, now.to_string().as_bytes());
        write_bulk(&mut c, keep_from.to_string().as_bytes());
        write_bulk(&mut c, inputs.len().to_string().as_bytes());
        for s in inputs {
            write_bulk(&mut c, s.as_bytes());
        }
        write_bulk(&mut c, plan.consumer.as_bytes());
        c.extend_from_slice(&self.body);
        c
    }

    /// Two-server commits: one `XACK` per input stream for the batch's entries.
    fn encode_acks(&mut self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        if self.acks_conn.is_none() {
            return (out, 0);
        }
        for k in 0..self.ids.len() {
            if self.id_lens[k].is_empty() {
                continue;
            }
            let stream = self.plan.input.streams[k].as_bytes();
            let mut args: Vec<&[u8]> = vec![b"XACK", stream, self.plan.group.as_bytes()];
            let mut at = 0;
            for len in &self.id_lens[k] {
                args.push(&self.ids[k][at..at + *len as usize]);
                at += *len as usize;
            }
            encode_command(&mut out, &args);
            count += 1;
            self.ids[k].clear();
            self.id_lens[k].clear();
        }
        (out, count)
    }

    /// Reads the oldest batch's reply (and, on two servers, acknowledges its entries).
    fn receive_one(&mut self) -> Result<(), EnrichError> {
        let reply = self.conn.reply(|frame| match frame {
            Frame::Array(items) => {
                let mut it = items.iter();
                match (it.next(), it.next()) {
                    (Some(Frame::Integer(c)), Some(Frame::Integer(d))) => Ok((c as u64, d as u64)),
                    _ => Err(bad_reply()),
                }
            }
            _ => Err(bad_reply()),
        });
        let (committed, duplicates) = match reply {
            Ok(counts) => counts,
            Err(e) if e.is_connection() => return self.recover(e),
            Err(e) => return Err(self.fatal(e)),
        };
        let sent = self.in_flight.pop_front().expect("a batch in flight");
        let ns = sent.sent_at.elapsed().as_nanos() as u64;
        self.latency.saturating_record(ns.max(1));
        if let Some((_, all, _)) = self.live.as_mut() {
            all.saturating_record(ns.max(1));
        }
        if sent.ack_count > 0 {
            self.acknowledge(&sent)?;
        }
        self.counters
            .committed
            .fetch_add(committed, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        if self
            .live
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= crate::metrics::live::PUBLISH_EVERY)
        {
            self.publish_live();
        }
        Ok(())
    }

    /// `--metrics`: publishes the stream gauges.
    fn publish_live(&mut self) {
        let Some((live, all, at)) = self.live.as_mut() else {
            return;
        };
        let c = &self.counters;
        live.stream(&self.plan.consumer)
            .store(&crate::metrics::live::StreamSample {
                read: c.read.load(Ordering::Relaxed),
                acknowledged: c.committed.load(Ordering::Relaxed),
                claimed: c.claimed.load(Ordering::Relaxed),
                duplicates: c.duplicates.load(Ordering::Relaxed),
                lag: c.lag.load(Ordering::Relaxed),
                commit_latency: crate::metrics::live::LatencyBuckets::of(all),
            });
        *at = Instant::now();
    }

    /// Two-server commits: `XACK` on the input's server, retried through reconnects (the
    /// entries are committed; until acknowledged they stay pending and would be read again
    /// and found committed).
    fn acknowledge(&mut self, sent: &Sent) -> Result<(), EnrichError> {
        loop {
            let conn = self.acks_conn.as_mut().expect("two-server commits");
            let result = conn.send(&sent.acks).and_then(|()| {
                for _ in 0..sent.ack_count {
                    conn.reply(|_| Ok(()))?;
                }
                Ok(())
            });
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_connection() => {
                    eprintln!("ringwait enrich: lost the input's server while acknowledging ({e}); reconnecting");
                    self.acks_conn = Some(self.plan.connect_input(&self.intake)?);
                }
                Err(e) => return Err(EnrichError::Stream(format!("XACK on the input: {e}"))),
            }
        }
    }

    /// After a lost connection: reconnect, and send every batch in flight again.
    fn recover(&mut self, error: StreamConnError) -> Result<(), EnrichError> {
        eprintln!(
            "ringwait enrich: lost the output's server ({error}); reconnecting and committing the {} batch(es) in flight again",
            self.in_flight.len()
        );
        loop {
            self.conn = self.plan.connect_output(&self.intake)?;
            let resent = self
                .in_flight
                .iter()
                .try_for_each(|sent| self.conn.send(&sent.command));
            match resent {
                Ok(()) => return Ok(()),
                Err(e) if e.is_connection() => continue,
                Err(e) => return Err(self.fatal(e)),
            }
        }
    }

    fn fatal(&self, error: StreamConnError) -> EnrichError {
        EnrichError::Stream(format!(
            "committing to --output {}: {error}",
            self.plan.output
        ))
    }

    /// Publishes the commit latencies for the summary.
    fn publish(&mut self) {
        let mut shared = self.counters.commit_latency.lock().expect("commit latency");
        match shared.as_mut() {
            Some(h) => {
                let _ = h.add(&self.latency);
            }
            None => *shared = Some(self.latency.clone()),
        }
        self.latency.reset();
    }
}

fn bad_reply() -> StreamConnError {
    StreamConnError::Protocol {
        addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        what: "the commit script must answer {committed, duplicates}".into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
