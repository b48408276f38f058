//! The commit: one script per batch adds the batch's outputs and commits the input's
//! progress atomically on the output's server (see [`SCRIPT`]). [`CommitBatch`] builds the
//! `EVAL`; the job's committer and [`RedisStreamSink`](super::RedisStreamSink) send it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{encode_command, write_array_header, write_bulk, Frame};

/// Most records in one commit batch.
pub const MAX_BATCH: usize = 2000;

/// How long a progress member (two-server commits) is kept.
pub const PROGRESS_RETENTION: Duration = Duration::from_secs(24 * 3600);

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
/// with nothing of it done (as is a missing group). In ack mode an entry is new when its
/// `XACK` acknowledges it
/// (returns 1; `XCLAIM … JUSTID` for the batch cost 2.5 µs of server time per entry, the
/// `XACK`s 0.6); in progress mode `ZMSCORE` names, for the whole batch, those not in the
/// progress set, and one `ZADD NX` after the outputs records them. Only new entries get an
/// output, each once. A batch holds at most [`MAX_BATCH`] records (Lua's `unpack` takes
/// about 8,000 values).
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
-- Ack mode: the group must exist (XACK on a missing group answers 0, which would read as
-- "committed before").
if mode == 'a' then
  for k = 1, n do redis.call('XPENDING', KEYS[3 + k], group) end
end
-- Progress mode: which are not in the progress set yet, for the whole batch at once (reads
-- only); they are recorded after their outputs are added, so a script cut short repeats an
-- output rather than losing one.
local fresh, record = {}, {}
if mode == 'p' then
  local members, ids = {}, {}
  for k = 1, n do members[k] = {}; ids[k] = {}; record[k] = {} end
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
      for j, id in ipairs(ids[k]) do
        if not scores[j] and not fresh[k .. '/' .. id] then
          fresh[k .. '/' .. id] = true
          table.insert(record[k], now)
          table.insert(record[k], members[k][j])
        end
      end
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
  for k = 1, n do
    if #record[k] > 0 then redis.call('ZADD', progress, 'NX', unpack(record[k])) end
  end
  redis.call('ZREMRANGEBYSCORE', progress, '-inf', '(' .. keep_from)
end
return {committed, duplicates}
"#;

/// What a record commits as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Its output.
    Data,
    /// An error entry on the side stream.
    Error,
    /// Nothing but its progress (skipped).
    Skip,
}

/// How a batch's outputs and the input's progress are committed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitMode {
    /// Input and output on one server: the script acknowledges and adds.
    Ack,
    /// Two servers: the script records progress in this sorted set on the output's server
    /// and adds; the committer acknowledges on the input's server after.
    Progress(String),
}

/// Where a batch is committed: the keys and names the script is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTarget {
    /// The output stream.
    pub output: String,
    /// The stream error entries go to (`None`: the output).
    pub side: Option<String>,
    /// `XADD MAXLEN ~` of the output (and side) stream.
    pub maxlen: Option<u64>,
    /// The input streams (a record names its own by position).
    pub inputs: Vec<String>,
    /// The consumer group the inputs are read through.
    pub group: String,
    /// This reader's consumer name.
    pub consumer: String,
    /// One server or two.
    pub mode: CommitMode,
}

impl CommitTarget {
    /// The progress key of two-server commits: beside the output stream, in its hash slot
    /// (the output's `{tag}`, or the output's whole name as the tag).
    pub fn progress_key(output: &str, inputs: &[String], group: &str) -> String {
        let base = if has_hash_tag(output) {
            output.to_string()
        } else {
            format!("{{{output}}}")
        };
        format!("{base}:ringwait-progress:{}:{group}", inputs.join(","))
    }
}

fn has_hash_tag(key: &str) -> bool {
    match key.find('{') {
        Some(open) => key[open + 1..].find('}').is_some_and(|close| close > 0),
        None => false,
    }
}

/// A batch being built: its records encoded as the script's arguments, and (two-server
/// commits) their ids per input stream for the `XACK`s that follow.
#[derive(Debug, Default)]
pub struct CommitBatch {
    body: Vec<u8>,
    records: usize,
    args: usize,
    ids: Vec<Vec<u8>>,
    id_lens: Vec<Vec<u32>>,
}

/// A batch encoded: the `EVAL`, and the `XACK`s to send once it is answered (two-server
/// commits; empty otherwise).
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The `EVAL` command.
    pub eval: Vec<u8>,
    /// The `XACK` commands, one per input stream with entries in the batch.
    pub acks: Vec<u8>,
    /// How many `XACK` commands `acks` holds.
    pub ack_count: usize,
}

impl CommitBatch {
    /// Adds a record of input stream `k` (0-based), entry `id`: its output `data`, an error
    /// entry (`data` is then the payload as it came, `error` why), or only its progress.
    pub fn add(
        &mut self,
        target: &CommitTarget,
        k: usize,
        id: &[u8],
        kind: Kind,
        data: &[u8],
        error: &str,
    ) {
        // The tag: the kind, then the input stream's number from 1 (at most 255).
        let mut tag = [0u8; 4];
        tag[0] = match kind {
            Kind::Data => b'd',
            Kind::Error => b'e',
            Kind::Skip => b's',
        };
        let mut n = k + 1;
        let mut digits = [0u8; 3];
        let mut len = 0;
        while n > 0 || len == 0 {
            digits[2 - len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
        }
        tag[1..=len].copy_from_slice(&digits[3 - len..]);
        write_bulk(&mut self.body, &tag[..=len]);
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
        if matches!(target.mode, CommitMode::Progress(_)) {
            if self.ids.len() < target.inputs.len() {
                self.ids.resize(target.inputs.len(), Vec::new());
                self.id_lens.resize(target.inputs.len(), Vec::new());
            }
            self.ids[k].extend_from_slice(id);
            self.id_lens[k].push(id.len() as u32);
        }
        self.records += 1;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Encodes the batch and empties it.
    pub fn take(&mut self, target: &CommitTarget) -> EncodedBatch {
        let eval = self.encode(target);
        let (acks, ack_count) = self.encode_acks(target);
        self.body.clear();
        self.records = 0;
        self.args = 0;
        EncodedBatch {
            eval,
            acks,
            ack_count,
        }
    }

    fn encode(&self, t: &CommitTarget) -> Vec<u8> {
        let out = t.output.as_bytes();
        let side = t.side.as_deref().map_or(out, str::as_bytes);
        let (mode, progress): (&[u8], &[u8]) = match &t.mode {
            CommitMode::Ack => (b"a", out),
            CommitMode::Progress(key) => (b"p", key.as_bytes()),
        };
        let ack_keys = if t.mode == CommitMode::Ack {
            t.inputs.len()
        } else {
            0
        };
        let keys = 3 + ack_keys;
        let now = now_ms();
        let keep_from = now.saturating_sub(PROGRESS_RETENTION.as_millis() as u64);
        let args = 3 + keys + 6 + t.inputs.len() + 1 + self.args;
        let mut c = Vec::with_capacity(self.body.len() + SCRIPT.len() + 256);
        write_array_header(&mut c, args);
        write_bulk(&mut c, b"EVAL");
        write_bulk(&mut c, SCRIPT.as_bytes());
        write_bulk(&mut c, keys.to_string().as_bytes());
        write_bulk(&mut c, out);
        write_bulk(&mut c, side);
        write_bulk(&mut c, progress);
        for s in t.inputs.iter().take(ack_keys) {
            write_bulk(&mut c, s.as_bytes());
        }
        write_bulk(&mut c, t.group.as_bytes());
        write_bulk(&mut c, t.maxlen.unwrap_or(0).to_string().as_bytes());
        write_bulk(&mut c, mode);
        write_bulk(&mut c, now.to_string().as_bytes());
        write_bulk(&mut c, keep_from.to_string().as_bytes());
        write_bulk(&mut c, t.inputs.len().to_string().as_bytes());
        for s in &t.inputs {
            write_bulk(&mut c, s.as_bytes());
        }
        write_bulk(&mut c, t.consumer.as_bytes());
        c.extend_from_slice(&self.body);
        c
    }

    /// Two-server commits: one `XACK` per input stream for the batch's entries.
    fn encode_acks(&mut self, t: &CommitTarget) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        for k in 0..self.ids.len() {
            if self.id_lens[k].is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![b"XACK", t.inputs[k].as_bytes(), t.group.as_bytes()];
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
}

impl EncodedBatch {
    /// Two-server commits: sends the batch's `XACK`s on the input's server and reads their
    /// replies (nothing to do when there are none).
    pub fn acknowledge(&self, input: &mut BlockingConn) -> Result<(), StreamConnError> {
        if self.ack_count == 0 {
            return Ok(());
        }
        input.send(&self.acks)?;
        for _ in 0..self.ack_count {
            input.reply(|_| Ok(()))?;
        }
        Ok(())
    }
}

/// The script's reply from `addr`: `(committed, duplicates)`.
pub fn commit_counts(
    frame: Frame<'_>,
    addr: std::net::SocketAddr,
) -> Result<(u64, u64), StreamConnError> {
    let shape = || {
        StreamConnError::protocol(
            addr,
            "the commit script must answer {committed, duplicates}",
        )
    };
    let Frame::Array(items) = frame else {
        return Err(shape());
    };
    let mut it = items.iter();
    match (it.next(), it.next()) {
        (Some(Frame::Integer(c)), Some(Frame::Integer(d))) => Ok((c as u64, d as u64)),
        _ => Err(shape()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
