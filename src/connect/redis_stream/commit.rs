//! The commit: one script per batch adds the batch's outputs and commits the input's
//! progress atomically on the output's server (see [`SCRIPT`]); a batch read fresh, with
//! input and output on one server, may instead go as a watched transaction of plain
//! commands (see [`GUARD_SCRIPT`]). [`CommitBatch`] builds both; a
//! [`CommitPipeline`](super::CommitPipeline) sends them for the job's committer and for
//! [`RedisStreamSink`](super::RedisStreamSink).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conn::{BlockingConn, StreamConnError};
use crate::resp::{encode_command, write_array_header, write_bulk, Frame};

/// Buffers a [`CommitBatch`] keeps for reuse: enough for the batches in flight.
const SPARE_BUFFERS: usize = 16;

/// The largest buffer a [`CommitBatch`] keeps for reuse (a batch of 2,000 records of 4 KiB).
const SPARE_BUFFER_MAX: usize = 8 << 20;

/// Most records in one commit batch.
pub const MAX_BATCH: usize = 2000;

/// How long a progress member (two-server commits) is kept.
pub const PROGRESS_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The commit script.
///
/// `KEYS`: output, side stream (the output again when there is none), progress key (the
/// output again in ack mode), the claim fence (ack mode; the output again otherwise), then
/// the input streams (ack mode).
/// `ARGV`: group, maxlen (`0`: none), mode (`a` ack, `p` progress), now (ms), trim bound
/// (ms), the input streams' count `n`, their `n` names, the consumer, the fence the batch's
/// entries were read at (empty: not all were read fresh), the records' kinds (one byte each:
/// `d` output, `e` error entry, `s` skip), their input streams' numbers from 1 (one byte
/// each; empty with one input), then every record's entry id, then the records' data in
/// order: the output (`d`), or the payload and the error text (`e`), or nothing (`s`).
/// Returns `{committed, duplicates, unverified}`.
///
/// The keys' types are checked before anything is written, so a wrong type stops the batch
/// with nothing of it done (as is a missing group). An entry gets an output only if it is
/// new, each once:
///
/// - **ack mode, fast path**: when no claim ran since the batch's entries were read (the
///   fence, a counter every claim increments in the same script as its `XAUTOCLAIM`, still
///   holds the value read just before the entries; a read of a consumer's own pending
///   entries moves it too), no other ringwait consumer can have taken these entries, so one
///   `XACK` for the whole batch commits it. The `XACK` answers how many were pending: all
///   (the batch is new), none (a resent batch: all committed before), or some — which this
///   protocol rules out; it takes something outside it: a client that acknowledged or
///   claimed entries of the group (another tool, a ringwait older than the fence), the group
///   reset, or the fence key evicted. Then every output is added (a possible duplicate
///   rather than a loss) and counted as `unverified`. One bulk `XACK` instead of one per
///   entry takes about a quarter of the server's CPU per entry off the commit (see
///   `perf/README.md`);
/// - **ack mode, checked**: otherwise an entry is new exactly when its own `XACK`
///   acknowledges it (returns 1; `XCLAIM … JUSTID` for the batch cost 2.5 µs of server time
///   per entry, the `XACK`s 0.6);
/// - **progress mode**: `ZMSCORE` names, for the whole batch, those not in the progress set,
///   and one `ZADD NX` after the outputs records them.
///
/// A batch read fresh usually goes as a watched transaction instead (see [`GUARD_SCRIPT`]);
/// this script takes it when the guard refuses it and whenever it is sent again.
///
/// A batch holds at most [`MAX_BATCH`] records (Lua's `unpack` takes about 8,000 values).
pub const SCRIPT: &str = r#"
local out, side, progress, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, maxlen, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, keep_from, n = ARGV[4], ARGV[5], tonumber(ARGV[6])
local expected, kinds, streams = ARGV[8 + n], ARGV[9 + n], ARGV[10 + n]
local count = #kinds
local first_id = 11 + n
local first_data = first_id + count
for _, key in ipairs({out, side}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE the key ' .. key .. ' holds a ' .. t .. ', not a stream')
  end
end
-- The input stream (from 1) of record r.
local function stream_of(r)
  if n == 1 then return 1 end
  return string.byte(streams, r)
end
-- Ack mode: the group must exist (XACK on a missing group answers 0, which would read as
-- "committed before").
if mode == 'a' then
  for k = 1, n do redis.call('XPENDING', KEYS[4 + k], group) end
end
-- Fast path: no claim since the entries were read; one XACK per input stream.
local fast, unverified = false, 0
if mode == 'a' and expected ~= '' and (redis.call('GET', fence) or '0') == expected then
  fast = true
  local acked = 0
  if n == 1 then
    acked = redis.call('XACK', KEYS[5], group, unpack(ARGV, first_id, first_data - 1))
  else
    local ids = {}
    for k = 1, n do ids[k] = {} end
    for r = 1, count do table.insert(ids[stream_of(r)], ARGV[first_id + r - 1]) end
    for k = 1, n do
      if #ids[k] > 0 then acked = acked + redis.call('XACK', KEYS[4 + k], group, unpack(ids[k])) end
    end
  end
  if acked == 0 then return {0, count, 0} end
  unverified = count - acked
end
-- Progress mode: which are not in the progress set yet, for the whole batch at once (reads
-- only); they are recorded after their outputs are added, so a script cut short repeats an
-- output rather than losing one.
local fresh, record = {}, {}
if mode == 'p' then
  local members, ids = {}, {}
  for k = 1, n do members[k] = {}; ids[k] = {}; record[k] = {} end
  for r = 1, count do
    local k, id = stream_of(r), ARGV[first_id + r - 1]
    table.insert(members[k], ARGV[6 + k] .. '/' .. id)
    table.insert(ids[k], id)
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
local committed, duplicates = 0, 0
local d = first_data
if fast and n == 1 and maxlen == 0 then
  -- The common case, without the general loop's checks per record.
  for r = 1, count do
    local kind = string.byte(kinds, r)
    if kind == 100 then
      redis.call('XADD', out, '*', 'data', ARGV[d], 'src', ARGV[first_id + r - 1])
      d = d + 1
    elseif kind == 101 then
      redis.call('XADD', side, '*', 'error', ARGV[d + 1], 'src', ARGV[first_id + r - 1], 'data', ARGV[d])
      d = d + 2
    end
  end
  return {count, 0, unverified}
end
local function add(key, ...)
  if maxlen > 0 then
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', ...)
  else
    redis.call('XADD', key, '*', ...)
  end
end
for r = 1, count do
  local kind, k, id = string.byte(kinds, r), stream_of(r), ARGV[first_id + r - 1]
  local new
  if fast then
    new = true
  elseif mode == 'a' then
    -- The entry is not committed yet exactly when this acknowledges it.
    new = redis.call('XACK', KEYS[4 + k], group, id) == 1
  else
    local at = k .. '/' .. id
    new = fresh[at]
    fresh[at] = nil -- an entry twice in one batch is committed once
  end
  if new then
    if kind == 100 then -- 'd'
      if n > 1 then add(out, 'data', ARGV[d], 'src', id, 'stream', ARGV[6 + k])
      else add(out, 'data', ARGV[d], 'src', id) end
    elseif kind == 101 then -- 'e'
      if n > 1 then add(side, 'error', ARGV[d + 1], 'src', id, 'stream', ARGV[6 + k], 'data', ARGV[d])
      else add(side, 'error', ARGV[d + 1], 'src', id, 'data', ARGV[d]) end
    end
    committed = committed + 1
  else
    duplicates = duplicates + 1
  end
  if kind == 100 then d = d + 1 elseif kind == 101 then d = d + 2 end
end
if mode == 'p' then
  for k = 1, n do
    if #record[k] > 0 then redis.call('ZADD', progress, 'NX', unpack(record[k])) end
  end
  redis.call('ZREMRANGEBYSCORE', progress, '-inf', '(' .. keep_from)
end
return {committed, duplicates, unverified}
"#;

/// The check before a watched commit: the batch as plain commands, `XACK`s and `XADD`s in
/// one `MULTI`/`EXEC`, without a script's cost per record (about a seventh of the server's
/// CPU per entry, see `perf/README.md`). A transaction cannot be conditional, so the
/// condition is a `WATCH`: the [`CommitPipeline`](super::CommitPipeline) sends
///
/// `WATCH fence guard`, `EVAL GUARD_SCRIPT …`, `MULTI`, `XACK`…, `XADD`…,
/// `SET guard TOKEN`, `EXEC`
///
/// and the script, run between the `WATCH` and the `MULTI`, writes the guard key when the
/// batch may not go this way, which makes the `EXEC` abort: nothing of the batch is done,
/// and the pipeline sends it again as the [`SCRIPT`], which checks entry by entry. The
/// guard key chains the batches of one pipeline: each transaction leaves its own token
/// there, and the next batch expects it. The script refuses when the guard does not hold
/// the token of the batch before (that batch was refused or aborted: refusing this one
/// keeps the batches' order; or another process under the same consumer name reset it),
/// when the claim fence moved since the entries were read (a claim ran: they may be
/// another consumer's by now), when the batch's first or last entry is no longer pending
/// (the batch, or part of it, was committed before), and, with an error, when a key has
/// the wrong type or the group is missing. Once it has passed, the `WATCH` aborts the
/// `EXEC` if a claim runs, or the pipeline resets the guard, before it.
///
/// `KEYS`: the claim fence, the guard, the output, the side stream (the output again), the
/// input streams. `ARGV`: the fence the entries were read at, the group, the first record's
/// input stream (from 1) and entry id, the last record's, then the token the guard must
/// hold. Returns 1 (go on), 0 (refused) or an error; on anything but 1 the guard is set to
/// `refused`, which no token equals.
pub const GUARD_SCRIPT: &str = r#"
local fence, guard = KEYS[1], KEYS[2]
local function check()
  if redis.call('GET', guard) ~= ARGV[7] then return 0 end
  if (redis.call('GET', fence) or '0') ~= ARGV[1] then return 0 end
  for _, key in ipairs({KEYS[3], KEYS[4]}) do
    local t = redis.call('TYPE', key)['ok']
    if t ~= 'stream' and t ~= 'none' then
      return redis.error_reply('WRONGTYPE the key ' .. key .. ' holds a ' .. t .. ', not a stream')
    end
  end
  -- The group must exist (XACK on a missing group answers 0).
  for k = 5, #KEYS do redis.call('XPENDING', KEYS[k], ARGV[2]) end
  for _, at in ipairs({3, 5}) do
    local id = ARGV[at + 1]
    if #redis.call('XPENDING', KEYS[4 + tonumber(ARGV[at])], ARGV[2], id, id, 1) == 0 then
      return 0
    end
  end
  return 1
end
local ok, result = pcall(check)
if ok and result == 1 then return 1 end
redis.call('SET', guard, 'refused')
if ok or type(result) == 'table' then return result end
return redis.error_reply(tostring(result))
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

pub(super) fn has_hash_tag(key: &str) -> bool {
    match key.find('{') {
        Some(open) => key[open + 1..].find('}').is_some_and(|close| close > 0),
        None => false,
    }
}

/// A batch being built: its records encoded as the script's arguments, and (two-server
/// commits) their ids per input stream for the `XACK`s that follow.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// One byte per record: `d`, `e` or `s`.
    kinds: Vec<u8>,
    /// One byte per record: its input stream's number from 1.
    streams: Vec<u8>,
    /// The records' entry ids, encoded as arguments.
    id_args: Vec<u8>,
    /// The records' data, encoded as arguments, and how many.
    data_args: Vec<u8>,
    data_count: usize,
    /// The lowest claim fence the batch's entries were read at (`None` before the first).
    fence: Option<u64>,
    /// An entry was not read fresh, or came twice in a row: the batch is checked entry by
    /// entry.
    unfenced: bool,
    /// The first and the last record's entry id and input stream.
    first_id: Vec<u8>,
    first_stream: usize,
    last_id: Vec<u8>,
    last_stream: usize,
    /// Per input stream, the records' entry ids and their lengths (two-server commits, and
    /// the watched form's `XACK`s with several inputs).
    ids: Vec<Vec<u8>>,
    id_lens: Vec<Vec<u32>>,
    /// Ack mode: the records' `XADD`s, for the watched form, and how many.
    adds: Vec<u8>,
    add_count: usize,
    /// Buffers of batches committed, given back with [`recycle`](Self::recycle): a batch's
    /// commands are past glibc's mmap threshold (128 KiB), so a fresh buffer per batch cost
    /// page faults and unmaps on every commit.
    spare: Vec<Vec<u8>>,
}

/// One record of a [`CommitBatch`].
#[derive(Debug, Clone, Copy)]
pub struct CommitRecord<'a> {
    /// Its input stream (0-based, at most 254).
    pub stream: usize,
    /// Its entry id.
    pub id: &'a [u8],
    /// What it commits as.
    pub kind: Kind,
    /// Its output ([`Kind::Data`]) or the payload as it came ([`Kind::Error`]).
    pub data: &'a [u8],
    /// Why it failed ([`Kind::Error`]).
    pub error: &'a str,
    /// The claim fence read just before the entry was read as new (`XREADGROUP … >`; see
    /// [`fence_key`](super::fence_key)); `None` for an entry read any other way (this
    /// consumer's own pending entries, a claim). A batch whose entries were all read fresh
    /// at the fence's current value is committed with one `XACK`, as a watched transaction
    /// (see [`GUARD_SCRIPT`] and [`SCRIPT`]): give an
    /// entry read fresh to at most one record, once (the same entry twice in a row makes
    /// the batch checked entry by entry).
    pub fence: Option<u64>,
}

/// A batch encoded: the `EVAL`, the watched form when the batch may go that way, and the
/// `XACK`s to send once it is answered (two-server commits; empty otherwise).
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The `EVAL` of the [`SCRIPT`]: right however often the batch is sent.
    pub eval: Vec<u8>,
    /// The watched transaction (see [`GUARD_SCRIPT`]): ack mode, every entry read fresh.
    pub watched: Option<Watched>,
    /// The `XACK` commands, one per input stream with entries in the batch.
    pub acks: Vec<u8>,
    /// How many `XACK` commands `acks` holds.
    pub ack_count: usize,
}

/// A batch as a watched transaction (see [`GUARD_SCRIPT`]), in the parts the
/// [`CommitPipeline`](super::CommitPipeline) puts together with the guard's tokens.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The claim fence's key.
    pub fence: String,
    /// The guard script's arguments after `EVAL`, encoded: the script, the keys, and every
    /// `ARGV` but the last (the token the guard must hold).
    pub check: Vec<u8>,
    /// How many arguments `check` holds.
    pub check_args: usize,
    /// The transaction's `XACK`s (one per input stream with entries) then its `XADD`s.
    pub body: Vec<u8>,
    /// Records in the batch.
    pub records: usize,
    /// `XACK` commands in `body`.
    pub acks: usize,
    /// `XADD` commands in `body`.
    pub adds: usize,
}

impl Watched {
    /// Replies the transaction gets: `WATCH`, `EVAL` and `MULTI`, one `QUEUED` per command
    /// in it (the body, and the guard's `SET`), and `EXEC`.
    pub fn replies(&self) -> usize {
        3 + self.acks + self.adds + 1 + 1
    }
}

impl CommitBatch {
    /// Adds a record: its output, an error entry, or only its progress.
    pub fn add(&mut self, target: &CommitTarget, r: CommitRecord<'_>) {
        assert!(r.stream < 255, "at most 255 input streams");
        if !self.is_empty() && self.last_stream == r.stream && self.last_id == r.id {
            self.unfenced = true; // one XACK would count the entry once
        }
        if self.is_empty() {
            self.first_id.clear();
            self.first_id.extend_from_slice(r.id);
            self.first_stream = r.stream;
        }
        self.last_id.clear();
        self.last_id.extend_from_slice(r.id);
        self.last_stream = r.stream;
        self.kinds.push(match r.kind {
            Kind::Data => b'd',
            Kind::Error => b'e',
            Kind::Skip => b's',
        });
        self.streams.push(r.stream as u8 + 1);
        write_bulk(&mut self.id_args, r.id);
        match r.kind {
            Kind::Data => {
                write_bulk(&mut self.data_args, r.data);
                self.data_count += 1;
            }
            Kind::Error => {
                write_bulk(&mut self.data_args, r.data);
                write_bulk(&mut self.data_args, r.error.as_bytes());
                self.data_count += 2;
            }
            Kind::Skip => {}
        }
        match r.fence {
            Some(f) => self.fence = Some(self.fence.map_or(f, |low| low.min(f))),
            None => self.unfenced = true,
        }
        let ack_mode = target.mode == CommitMode::Ack;
        if ack_mode {
            self.encode_add(target, &r);
        }
        if !ack_mode || target.inputs.len() > 1 {
            if self.ids.len() < target.inputs.len() {
                self.ids.resize(target.inputs.len(), Vec::new());
                self.id_lens.resize(target.inputs.len(), Vec::new());
            }
            self.ids[r.stream].extend_from_slice(r.id);
            self.id_lens[r.stream].push(r.id.len() as u32);
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Encodes the batch and empties it.
    pub fn take(&mut self, target: &CommitTarget) -> EncodedBatch {
        let eval = self.encode(target);
        let watched = self.encode_watched(target);
        let (acks, ack_count) = match target.mode {
            CommitMode::Progress(_) => self.encode_acks(target),
            CommitMode::Ack => {
                self.ids.iter_mut().for_each(Vec::clear);
                self.id_lens.iter_mut().for_each(Vec::clear);
                (Vec::new(), 0)
            }
        };
        self.kinds.clear();
        self.streams.clear();
        self.id_args.clear();
        self.data_args.clear();
        self.data_count = 0;
        self.fence = None;
        self.unfenced = false;
        self.last_id.clear();
        self.adds.clear();
        self.add_count = 0;
        EncodedBatch {
            eval,
            watched,
            acks,
            ack_count,
        }
    }

    /// Gives a committed batch's buffers back, for the batches to come.
    pub fn recycle(&mut self, batch: EncodedBatch) {
        let watched = batch.watched.into_iter().flat_map(|w| [w.check, w.body]);
        for buffer in [batch.eval, batch.acks].into_iter().chain(watched) {
            let size = buffer.capacity();
            if size == 0 || size > SPARE_BUFFER_MAX {
                continue; // one outsized batch does not pin its memory for good
            }
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(buffer);
            } else if let Some(i) = (0..self.spare.len()).min_by_key(|&i| self.spare[i].capacity())
            {
                // A full pool keeps the largest buffers: they fit every batch to come.
                if self.spare[i].capacity() < size {
                    self.spare[i] = buffer;
                }
            }
        }
    }

    /// An empty buffer of at least `capacity` bytes: the smallest spare one that holds it,
    /// else a new one with room to spare.
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let fits = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= capacity)
            .min_by_key(|&i| self.spare[i].capacity());
        match fits {
            Some(i) => {
                let mut b = self.spare.swap_remove(i);
                b.clear();
                b
            }
            // A quarter more, so that it fits the next batches, a little larger or not.
            None => Vec::with_capacity(capacity + capacity / 4),
        }
    }

    /// The fence every entry was read at, when all were read fresh (and none came twice in a
    /// row): the batch may then be acknowledged at once.
    fn expected_fence(&self, t: &CommitTarget) -> Option<u64> {
        match (self.fence, self.unfenced, &t.mode) {
            (Some(f), false, CommitMode::Ack) => Some(f),
            _ => None,
        }
    }

    /// Ack mode: appends the record's `XADD` (none for a skipped record), its fields in the
    /// [`SCRIPT`]'s order.
    fn encode_add(&mut self, t: &CommitTarget, r: &CommitRecord<'_>) {
        let mut maxlen = [0u8; 20];
        let maxlen = t.maxlen.filter(|m| *m > 0).map(|m| {
            use std::io::Write;
            let mut at = &mut maxlen[..];
            write!(at, "{m}").expect("20 digits hold a u64");
            let len = 20 - at.len();
            &maxlen[..len]
        });
        let key = match r.kind {
            Kind::Data => t.output.as_bytes(),
            Kind::Error => t.side.as_deref().unwrap_or(&t.output).as_bytes(),
            Kind::Skip => return,
        };
        let stream = (t.inputs.len() > 1).then(|| t.inputs[r.stream].as_bytes());
        let (first_field, first_value): (&[u8], &[u8]) = match r.kind {
            Kind::Error => (b"error", r.error.as_bytes()),
            _ => (b"data", r.data),
        };
        let mut args: [&[u8]; 14] = [b""; 14];
        let mut n = 0;
        let head: [&[u8]; 2] = [b"XADD", key];
        let maxlen_args: [&[u8]; 3] = [b"MAXLEN", b"~", maxlen.unwrap_or_default()];
        let fields: [&[u8]; 4] = [first_field, first_value, b"src", r.id];
        let stream_args: [&[u8]; 2] = [b"stream", stream.unwrap_or_default()];
        let tail: [&[u8]; 2] = [b"data", r.data];
        let parts: [(&[&[u8]], bool); 6] = [
            (&head, true),
            (&maxlen_args, maxlen.is_some()),
            (&[b"*"], true),
            (&fields, true),
            (&stream_args, stream.is_some()),
            (&tail, r.kind == Kind::Error),
        ];
        for (part, used) in parts {
            if used {
                args[n..n + part.len()].copy_from_slice(part);
                n += part.len();
            }
        }
        let args = &args[..n];
        encode_command(&mut self.adds, args);
        self.add_count += 1;
    }

    /// The watched form (see [`GUARD_SCRIPT`]): ack mode, every entry read fresh.
    fn encode_watched(&mut self, t: &CommitTarget) -> Option<Watched> {
        let expected = self.expected_fence(t)?.to_string();
        let fence = super::fence_key(&t.inputs, &t.group);
        let guard = super::guard_key(&t.inputs, &t.group, &t.consumer);
        let out = t.output.as_bytes();
        let side = t.side.as_deref().map_or(out, str::as_bytes);
        let mut check = self.buffer(GUARD_SCRIPT.len() + 512);
        let keys = 4 + t.inputs.len();
        write_bulk(&mut check, GUARD_SCRIPT.as_bytes());
        write_bulk(&mut check, keys.to_string().as_bytes());
        for key in [fence.as_bytes(), guard.as_bytes(), out, side] {
            write_bulk(&mut check, key);
        }
        for s in &t.inputs {
            write_bulk(&mut check, s.as_bytes());
        }
        write_bulk(&mut check, expected.as_bytes());
        write_bulk(&mut check, t.group.as_bytes());
        write_bulk(&mut check, (self.first_stream + 1).to_string().as_bytes());
        write_bulk(&mut check, &self.first_id);
        write_bulk(&mut check, (self.last_stream + 1).to_string().as_bytes());
        write_bulk(&mut check, &self.last_id);
        let mut body = self.buffer(self.adds.len() + self.id_args.len() + 256);
        let mut acks = 0;
        if t.inputs.len() == 1 {
            write_array_header(&mut body, 3 + self.kinds.len());
            write_bulk(&mut body, b"XACK");
            write_bulk(&mut body, t.inputs[0].as_bytes());
            write_bulk(&mut body, t.group.as_bytes());
            body.extend_from_slice(&self.id_args);
            acks = 1;
        } else {
            for (k, lens) in self.id_lens.iter().enumerate() {
                if lens.is_empty() {
                    continue;
                }
                write_array_header(&mut body, 3 + lens.len());
                write_bulk(&mut body, b"XACK");
                write_bulk(&mut body, t.inputs[k].as_bytes());
                write_bulk(&mut body, t.group.as_bytes());
                let mut at = 0;
                for len in lens {
                    write_bulk(&mut body, &self.ids[k][at..at + *len as usize]);
                    at += *len as usize;
                }
                acks += 1;
            }
        }
        body.extend_from_slice(&self.adds);
        Some(Watched {
            fence,
            check,
            check_args: 2 + keys + 6,
            body,
            records: self.kinds.len(),
            acks,
            adds: self.add_count,
        })
    }

    fn encode(&mut self, t: &CommitTarget) -> Vec<u8> {
        let mut c = self.buffer(
            self.id_args.len() + self.data_args.len() + 2 * self.kinds.len() + SCRIPT.len() + 256,
        );
        let out = t.output.as_bytes();
        let side = t.side.as_deref().map_or(out, str::as_bytes);
        let fence_key = super::fence_key(&t.inputs, &t.group);
        let (mode, progress, fence): (&[u8], &[u8], &[u8]) = match &t.mode {
            CommitMode::Ack => (b"a", out, fence_key.as_bytes()),
            CommitMode::Progress(key) => (b"p", key.as_bytes(), out),
        };
        let ack_keys = if t.mode == CommitMode::Ack {
            t.inputs.len()
        } else {
            0
        };
        let expected = self
            .expected_fence(t)
            .map_or_else(String::new, |f| f.to_string());
        let streams: &[u8] = if t.inputs.len() > 1 {
            &self.streams
        } else {
            b""
        };
        let keys = 4 + ack_keys;
        let now = now_ms();
        let keep_from = now.saturating_sub(PROGRESS_RETENTION.as_millis() as u64);
        let args = 3 + keys + 6 + t.inputs.len() + 4 + self.kinds.len() + self.data_count;
        write_array_header(&mut c, args);
        write_bulk(&mut c, b"EVAL");
        write_bulk(&mut c, SCRIPT.as_bytes());
        write_bulk(&mut c, keys.to_string().as_bytes());
        write_bulk(&mut c, out);
        write_bulk(&mut c, side);
        write_bulk(&mut c, progress);
        write_bulk(&mut c, fence);
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
        write_bulk(&mut c, expected.as_bytes());
        write_bulk(&mut c, &self.kinds);
        write_bulk(&mut c, streams);
        c.extend_from_slice(&self.id_args);
        c.extend_from_slice(&self.data_args);
        c
    }

    /// Two-server commits: one `XACK` per input stream for the batch's entries.
    fn encode_acks(&mut self, t: &CommitTarget) -> (Vec<u8>, usize) {
        let mut out = self.buffer(self.id_args.len() + 64);
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

/// What one commit did, from the script's reply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitCounts {
    /// Entries committed (output or error entry added, or skipped, and their progress).
    pub committed: u64,
    /// Entries found committed before (nothing added).
    pub duplicates: u64,
    /// Entries committed although the batch's one `XACK` found them no longer pending: a
    /// client outside this protocol acknowledged or claimed them (see [`SCRIPT`]). Their
    /// outputs were added; each may be a duplicate.
    pub unverified: u64,
}

/// The script's reply from `addr`.
pub fn commit_counts(
    frame: Frame<'_>,
    addr: std::net::SocketAddr,
) -> Result<CommitCounts, StreamConnError> {
    let shape = || {
        StreamConnError::protocol(
            addr,
            "the commit script must answer {committed, duplicates, unverified}",
        )
    };
    let Frame::Array(items) = frame else {
        return Err(shape());
    };
    let mut it = items.iter();
    match (it.next(), it.next(), it.next()) {
        (Some(Frame::Integer(c)), Some(Frame::Integer(d)), Some(Frame::Integer(u))) => {
            Ok(CommitCounts {
                committed: c as u64,
                duplicates: d as u64,
                unverified: u as u64,
            })
        }
        _ => Err(shape()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CommitTarget {
        CommitTarget {
            output: "out".into(),
            side: None,
            maxlen: None,
            inputs: vec!["in".into()],
            group: "g".into(),
            consumer: "c".into(),
            mode: CommitMode::Ack,
        }
    }

    fn fill(batch: &mut CommitBatch, t: &CommitTarget, n: usize) {
        let data = vec![b'x'; 100];
        for i in 0..n {
            let id = format!("1-{i}");
            let record = CommitRecord {
                stream: 0,
                id: id.as_bytes(),
                kind: Kind::Data,
                data: &data,
                error: "",
                fence: Some(0),
            };
            batch.add(t, record);
        }
    }

    /// A committed batch's buffers come back for the next one: no fresh allocation (an
    /// mmap past 128 KiB) per batch.
    #[test]
    fn a_recycled_batchs_buffers_carry_the_next_one() {
        let t = target();
        let mut batch = CommitBatch::default();
        fill(&mut batch, &t, 1024);
        let first = batch.take(&t);
        let body = first.watched.as_ref().expect("read fresh").body.as_ptr();
        let eval = first.eval.as_ptr();
        batch.recycle(first);
        fill(&mut batch, &t, 1024);
        let second = batch.take(&t);
        let reused = [
            second.eval.as_ptr(),
            second.watched.as_ref().unwrap().body.as_ptr(),
        ];
        assert!(
            reused.contains(&body) && reused.contains(&eval),
            "{reused:?}"
        );
    }

    /// The watched form holds one `XACK` of every id and one `XADD` per output, with the
    /// script's fields.
    #[test]
    fn the_watched_form_acknowledges_at_once_and_adds_each_output() {
        let t = target();
        let mut batch = CommitBatch::default();
        fill(&mut batch, &t, 3);
        let w = batch.take(&t).watched.expect("read fresh");
        assert_eq!((w.records, w.acks, w.adds, w.replies()), (3, 1, 3, 9));
        let body = String::from_utf8(w.body).unwrap();
        assert!(body.starts_with("*6\r\n$4\r\nXACK\r\n$2\r\nin\r\n$1\r\ng\r\n$3\r\n1-0\r\n"));
        assert_eq!(
            body.matches("$4\r\nXADD\r\n$3\r\nout\r\n$1\r\n*\r\n$4\r\ndata\r\n")
                .count(),
            3
        );
        assert!(body.ends_with("$3\r\nsrc\r\n$3\r\n1-2\r\n"));
    }
}
