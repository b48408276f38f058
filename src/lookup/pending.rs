//! The pure core of a connection: encoded requests waiting to be written, and the FIFO of
//! handlers waiting for replies, with optional `MGET` batching and coalescing of identical
//! `GET`s. No I/O, no clock, no handler calls: the connection drives it.
//!
//! Invariant: the order of entries in `fifo` is the order of the commands in the bytes handed
//! out by [`Pending::take_output`], so replies (which Redis sends in command order) match
//! entries by position. Every path that encodes a command pushes its entry at the same time;
//! the one deferred encoding (an open `MGET` batch) is sealed before any other command is
//! encoded and before output is taken.

use std::collections::{HashMap, VecDeque};

use crate::resp::{self, CommandEncoder};

/// End of a follower list.
pub(crate) const NIL: u32 = u32::MAX;

/// Options of the pipeline (a subset of the connection's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingOptions {
    /// Turn concurrent `GET`s into one `MGET` (up to `max_batch` keys).
    pub mget_batching: bool,
    /// Most keys in one batched `MGET`.
    pub max_batch: usize,
    /// Let a `GET` of a key already in flight share that request.
    pub coalescing: bool,
    /// Keep a copy of each command's bytes until its reply (for cluster redirects).
    pub keep_commands: bool,
}

/// What waits for one reply (or, for `Part`, for one element of a batch reply).
#[derive(Debug)]
enum Entry<H> {
    /// A request with its own reply.
    Single {
        handler: H,
        followers: u32,
        /// Length of the key in the coalescing key ring, if registered there.
        key_len: Option<u32>,
        /// Length of the command in the command ring (0 unless `keep_commands`).
        cmd_len: u32,
    },
    /// A batched `MGET` (or, with one key, a `GET`); followed by `count` `Part`s.
    BatchHead { count: u32, as_get: bool },
    /// One key of a batch.
    Part {
        handler: H,
        followers: u32,
        key_len: Option<u32>,
    },
    /// A reply nobody waits for (the `+OK` of `ASKING`).
    Discard { cmd_len: u32 },
}

/// What [`Pending::pop`] took off the front.
#[derive(Debug)]
pub(crate) enum Popped<H> {
    /// A handler (of a single request or of a batch part) and its coalesced followers.
    Handler { handler: H, followers: u32 },
    /// A batch of `count` parts follows; its reply is an array, or a string if `as_get`.
    Batch { count: u32, as_get: bool },
    /// Drop this reply.
    Discard,
}

#[derive(Debug)]
enum FollowerSlot<H> {
    Used { handler: H, next: u32 },
    Free { next: u32 },
}

/// Handlers sharing another request's reply, in singly linked lists over a slab.
#[derive(Debug)]
struct Followers<H> {
    slots: Vec<FollowerSlot<H>>,
    free: u32,
    used: usize,
}

impl<H> Followers<H> {
    fn push(&mut self, handler: H, next: u32) -> u32 {
        self.used += 1;
        let slot = FollowerSlot::Used { handler, next };
        if self.free != NIL {
            let idx = self.free;
            if let Some(FollowerSlot::Free { next }) = self.slots.get(idx as usize) {
                self.free = *next;
            }
            self.slots[idx as usize] = slot;
            idx
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        }
    }

    fn take(&mut self, idx: u32) -> Option<(H, u32)> {
        let slot = self.slots.get_mut(idx as usize)?;
        match std::mem::replace(slot, FollowerSlot::Free { next: self.free }) {
            FollowerSlot::Used { handler, next } => {
                self.free = idx;
                self.used -= 1;
                Some((handler, next))
            }
            free => {
                *slot = free;
                None
            }
        }
    }
}

/// Index of in-flight coalescable `GET`s: key hash → (sequence, key offset in the ring).
#[derive(Debug, Default)]
struct Coalescer {
    /// FNV-1a hash of the key (not hashed again) → (sequence, key offset in the ring).
    inflight: HashMap<u64, (u64, u64), crate::hash::Prehashed>,
    /// Keys of registered entries, in FIFO order (freed from the front as replies arrive).
    ring: VecDeque<u8>,
    /// Their hashes, in the same order (so a release does not hash the key again).
    hashes: VecDeque<u64>,
    /// Absolute offset of `ring[0]`.
    ring_base: u64,
}

/// FNV-1a: keys come from the caller's data; a collision only costs a missed coalescing.
fn hash_key(key: impl IntoIterator<Item = u8>) -> u64 {
    crate::hash::fnv1a64(key)
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Pending<H> {
    opts: PendingOptions,
    out: Vec<u8>,
    fifo: VecDeque<Entry<H>>,
    /// Sequence number of `fifo[0]`.
    front_seq: u64,
    /// The open batch: sequence of its header.
    open_batch: Option<u64>,
    batch_keys: Vec<u8>,
    batch_ends: Vec<usize>,
    followers: Followers<H>,
    coalescer: Coalescer,
    commands: VecDeque<u8>,
    /// `GET`s coalesced, `MGET`s sealed and the keys they carried.
    counts: PipeCounts,
}

/// What batching and coalescing did on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PipeCounts {
    pub coalesced: u64,
    pub mgets: u64,
    pub mget_keys: u64,
}

impl<H> Pending<H> {
    pub fn new(opts: PendingOptions, capacity: usize) -> Self {
        Pending {
            opts,
            out: Vec::with_capacity(capacity * 32),
            fifo: VecDeque::with_capacity(capacity),
            front_seq: 0,
            open_batch: None,
            batch_keys: Vec::new(),
            batch_ends: Vec::with_capacity(if opts.mget_batching {
                opts.max_batch
            } else {
                0
            }),
            followers: Followers {
                slots: Vec::new(),
                free: NIL,
                used: 0,
            },
            coalescer: Coalescer::default(),
            commands: VecDeque::new(),
            counts: PipeCounts::default(),
        }
    }

    /// What batching and coalescing did so far.
    pub fn counts(&self) -> PipeCounts {
        self.counts
    }

    /// Requests waiting for a reply (coalesced followers included).
    pub fn pending(&self) -> usize {
        self.fifo.len() + self.followers.used
    }

    /// Whether nothing waits for a reply.
    pub fn is_idle(&self) -> bool {
        self.fifo.is_empty()
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.open_batch.is_some()
    }

    /// The sequence number the next request will get.
    pub fn next_seq(&self) -> u64 {
        self.front_seq + self.fifo.len() as u64
    }

    /// Queues `GET key`.
    pub fn push_get(&mut self, key: &[u8], handler: H) {
        // Hashed once for both the look for an identical GET in flight and the registration.
        let hash = if self.opts.coalescing {
            hash_key(key.iter().copied())
        } else {
            0
        };
        let handler = match self.try_coalesce(key, hash, handler) {
            Ok(()) => return,
            Err(handler) => handler,
        };
        if !self.opts.mget_batching {
            let key_len = self.register_key(key, hash);
            let start = self.out.len();
            resp::encode_command(&mut self.out, &[b"GET", key]);
            let cmd_len = self.keep_command(start);
            self.fifo.push_back(Entry::Single {
                handler,
                followers: NIL,
                key_len,
                cmd_len,
            });
            return;
        }
        if self.batch_ends.len() >= self.opts.max_batch.max(1) {
            self.seal_batch();
        }
        if self.open_batch.is_none() {
            self.open_batch = Some(self.next_seq());
            self.fifo.push_back(Entry::BatchHead {
                count: 0,
                as_get: false,
            });
        }
        let key_len = self.register_key(key, hash);
        self.batch_keys.extend_from_slice(key);
        self.batch_ends.push(self.batch_keys.len());
        self.fifo.push_back(Entry::Part {
            handler,
            followers: NIL,
            key_len,
        });
    }

    /// Queues an arbitrary command with a reply of its own.
    pub fn push_command(&mut self, args: &[&[u8]], handler: H) {
        self.seal_batch();
        let start = self.out.len();
        resp::encode_command(&mut self.out, args);
        let cmd_len = self.keep_command(start);
        self.fifo.push_back(Entry::Single {
            handler,
            followers: NIL,
            key_len: None,
            cmd_len,
        });
    }

    /// Queues `MGET keys...`.
    pub fn push_mget(&mut self, keys: &[&[u8]], handler: H) {
        self.seal_batch();
        let start = self.out.len();
        let mut cmd = CommandEncoder::begin(&mut self.out, keys.len() + 1);
        cmd.arg(b"MGET");
        for key in keys {
            cmd.arg(key);
        }
        cmd.finish();
        let cmd_len = self.keep_command(start);
        self.fifo.push_back(Entry::Single {
            handler,
            followers: NIL,
            key_len: None,
            cmd_len,
        });
    }

    /// Queues an already encoded command, preceded by `ASKING` if `asking` (cluster).
    pub fn push_encoded(&mut self, command: &[u8], asking: bool, handler: H) {
        self.seal_batch();
        if asking {
            let start = self.out.len();
            resp::encode_command(&mut self.out, &[b"ASKING"]);
            let cmd_len = self.keep_command(start);
            self.fifo.push_back(Entry::Discard { cmd_len });
        }
        let start = self.out.len();
        self.out.extend_from_slice(command);
        let cmd_len = self.keep_command(start);
        self.fifo.push_back(Entry::Single {
            handler,
            followers: NIL,
            key_len: None,
            cmd_len,
        });
    }

    /// Moves the bytes to write into `into` (which must be empty), sealing an open batch.
    pub fn take_output(&mut self, into: &mut Vec<u8>) {
        debug_assert!(into.is_empty());
        self.seal_batch();
        std::mem::swap(&mut self.out, into);
    }

    /// The sequence number of the oldest pending request (the next reply's).
    pub fn front_seq(&self) -> u64 {
        self.front_seq
    }

    /// Pops the entry of the oldest reply; the command's bytes go to `command` if kept.
    pub fn pop(&mut self, command: &mut Vec<u8>) -> Option<Popped<H>> {
        let entry = self.fifo.pop_front()?;
        let seq = self.front_seq;
        self.front_seq += 1;
        command.clear();
        Some(match entry {
            Entry::Single {
                handler,
                followers,
                key_len,
                cmd_len,
            } => {
                self.release_key(seq, key_len);
                command.extend(self.commands.drain(..cmd_len as usize));
                Popped::Handler { handler, followers }
            }
            Entry::Part {
                handler,
                followers,
                key_len,
            } => {
                self.release_key(seq, key_len);
                Popped::Handler { handler, followers }
            }
            Entry::BatchHead { count, as_get } => {
                if self.open_batch == Some(seq) {
                    // Popped before being sealed: only on reset.
                    self.open_batch = None;
                }
                Popped::Batch { count, as_get }
            }
            Entry::Discard { cmd_len } => {
                self.commands.drain(..cmd_len as usize);
                Popped::Discard
            }
        })
    }

    /// Takes follower `idx`: its handler and the next follower.
    pub fn take_follower(&mut self, idx: u32) -> Option<(H, u32)> {
        self.followers.take(idx)
    }

    /// Drops everything not yet written (after a connection failure); the entries stay, to
    /// be popped and failed by the caller.
    pub fn discard_output(&mut self) {
        self.out.clear();
        self.batch_keys.clear();
        self.batch_ends.clear();
        self.open_batch = None;
    }

    fn keep_command(&mut self, start: usize) -> u32 {
        if !self.opts.keep_commands {
            return 0;
        }
        let bytes = &self.out[start..];
        self.commands.extend(bytes.iter().copied());
        bytes.len() as u32
    }

    /// Encodes the open batch (if any) and fixes its header.
    fn seal_batch(&mut self) {
        let Some(seq) = self.open_batch.take() else {
            return;
        };
        let count = self.batch_ends.len();
        let as_get = count == 1;
        if !as_get {
            self.counts.mgets += 1;
            self.counts.mget_keys += count as u64;
        }
        let mut cmd = CommandEncoder::begin(&mut self.out, count + 1);
        cmd.arg(if as_get { b"GET" } else { b"MGET" });
        let mut start = 0;
        for &end in &self.batch_ends {
            cmd.arg(&self.batch_keys[start..end]);
            start = end;
        }
        cmd.finish();
        self.batch_keys.clear();
        self.batch_ends.clear();
        let index = (seq - self.front_seq) as usize;
        if let Some(Entry::BatchHead {
            count: c,
            as_get: g,
        }) = self.fifo.get_mut(index)
        {
            *c = count as u32;
            *g = as_get;
        }
    }

    /// Attaches `handler` to an in-flight `GET` of the same key, or hands it back.
    fn try_coalesce(&mut self, key: &[u8], hash: u64, handler: H) -> Result<(), H> {
        if !self.opts.coalescing {
            return Err(handler);
        }
        let c = &self.coalescer;
        let Some(&(seq, offset)) = c.inflight.get(&hash) else {
            return Err(handler);
        };
        let Some(index) = seq.checked_sub(self.front_seq) else {
            return Err(handler);
        };
        let start = (offset - c.ring_base) as usize;
        let same_key = |len: &Option<u32>| {
            *len == Some(key.len() as u32) && c.ring.range(start..start + key.len()).eq(key.iter())
        };
        let followers = match self.fifo.get_mut(index as usize) {
            Some(Entry::Single {
                followers, key_len, ..
            })
            | Some(Entry::Part {
                followers, key_len, ..
            }) if same_key(key_len) => followers,
            _ => return Err(handler),
        };
        *followers = self.followers.push(handler, *followers);
        self.counts.coalesced += 1;
        Ok(())
    }

    /// Registers the key of the entry about to be pushed, for coalescing.
    fn register_key(&mut self, key: &[u8], hash: u64) -> Option<u32> {
        if !self.opts.coalescing {
            return None;
        }
        let seq = self.next_seq();
        let c = &mut self.coalescer;
        let offset = c.ring_base + c.ring.len() as u64;
        c.inflight.insert(hash, (seq, offset));
        c.ring.extend(key);
        c.hashes.push_back(hash);
        Some(key.len() as u32)
    }

    fn release_key(&mut self, seq: u64, key_len: Option<u32>) {
        let Some(len) = key_len else {
            return;
        };
        let c = &mut self.coalescer;
        let hash = c.hashes.pop_front().expect("a hash per registered key");
        if c.inflight.get(&hash).is_some_and(|&(s, _)| s == seq) {
            c.inflight.remove(&hash);
        }
        c.ring.drain(..len as usize);
        c.ring_base += u64::from(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: PendingOptions = PendingOptions {
        mget_batching: false,
        max_batch: 4,
        coalescing: false,
        keep_commands: false,
    };

    fn output(p: &mut Pending<u32>) -> Vec<u8> {
        let mut v = Vec::new();
        p.take_output(&mut v);
        v
    }

    fn handlers_in_order(p: &mut Pending<u32>) -> Vec<String> {
        let mut seen = Vec::new();
        let mut scratch = Vec::new();
        while let Some(popped) = p.pop(&mut scratch) {
            match popped {
                Popped::Handler {
                    handler,
                    mut followers,
                } => {
                    let mut s = handler.to_string();
                    while let Some((h, next)) = p.take_follower(followers) {
                        s.push_str(&format!("+{h}"));
                        followers = next;
                    }
                    seen.push(s);
                }
                Popped::Batch { count, as_get } => seen.push(format!("batch{count}{as_get}")),
                Popped::Discard => seen.push("discard".into()),
            }
        }
        seen
    }

    #[test]
    fn plain_requests_are_encoded_and_matched_in_order() {
        let mut p = Pending::new(PLAIN, 4);
        p.push_get(b"a", 1);
        p.push_command(&[b"HGET", b"h", b"f"], 2);
        assert_eq!(
            output(&mut p),
            b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*3\r\n$4\r\nHGET\r\n$1\r\nh\r\n$1\r\nf\r\n"
        );
        assert!(!p.has_output());
        assert_eq!(handlers_in_order(&mut p), ["1", "2"]);
    }

    #[test]
    fn gets_of_one_tick_become_one_mget_and_other_commands_seal_the_batch() {
        let mut p = Pending::new(
            PendingOptions {
                mget_batching: true,
                ..PLAIN
            },
            4,
        );
        p.push_get(b"a", 1);
        p.push_get(b"b", 2);
        p.push_command(&[b"PING"], 3);
        p.push_get(b"c", 4);
        for k in [5, 6, 7, 8, 9] {
            p.push_get(b"d", k);
        }
        let mut expected = Vec::new();
        resp::encode_command(&mut expected, &[b"MGET", b"a", b"b"]);
        resp::encode_command(&mut expected, &[b"PING"]);
        resp::encode_command(&mut expected, &[b"MGET", b"c", b"d", b"d", b"d"]);
        resp::encode_command(&mut expected, &[b"MGET", b"d", b"d"]);
        assert_eq!(output(&mut p), expected);
        p.push_get(b"e", 10);
        let mut expected = Vec::new();
        resp::encode_command(&mut expected, &[b"GET", b"e"]);
        assert_eq!(output(&mut p), expected);
        assert_eq!(
            handlers_in_order(&mut p),
            [
                "batch2false",
                "1",
                "2",
                "3",
                "batch4false",
                "4",
                "5",
                "6",
                "7",
                "batch2false",
                "8",
                "9",
                "batch1true",
                "10"
            ]
        );
    }

    #[test]
    fn identical_gets_in_flight_share_one_request() {
        for mget_batching in [false, true] {
            let mut p = Pending::new(
                PendingOptions {
                    coalescing: true,
                    mget_batching,
                    ..PLAIN
                },
                4,
            );
            p.push_get(b"a", 1);
            p.push_get(b"b", 2);
            p.push_get(b"a", 3);
            let _ = output(&mut p);
            p.push_get(b"a", 4); // still in flight: shares
            assert_eq!(p.pending(), 4 + usize::from(mget_batching));
            assert!(!p.has_output() || mget_batching && output(&mut p).is_empty());
            let got = handlers_in_order(&mut p);
            let got: Vec<&str> = got
                .iter()
                .map(|s| s.as_str())
                .filter(|s| !s.starts_with("batch"))
                .collect();
            assert_eq!(got, ["1+4+3", "2"], "batching {mget_batching}");
            // After the reply, the key is no longer in flight.
            p.push_get(b"a", 5);
            assert!(p.has_output());
            assert_eq!(p.pending(), 1 + usize::from(mget_batching));
            assert!(p.coalescer.inflight.len() == 1);
        }
    }

    #[test]
    fn discarded_output_leaves_entries_to_fail() {
        let mut p = Pending::new(
            PendingOptions {
                mget_batching: true,
                ..PLAIN
            },
            4,
        );
        p.push_get(b"a", 1);
        p.discard_output();
        assert!(!p.has_output());
        assert_eq!(handlers_in_order(&mut p), ["batch0false", "1"]);
    }

    #[test]
    fn kept_commands_come_back_with_their_entry() {
        let mut p = Pending::new(
            PendingOptions {
                keep_commands: true,
                ..PLAIN
            },
            4,
        );
        let mut get = Vec::new();
        resp::encode_command(&mut get, &[b"GET", b"x"]);
        p.push_get(b"x", 1);
        p.push_encoded(&get, true, 2);
        let _ = output(&mut p);
        let mut scratch = Vec::new();
        assert!(matches!(
            p.pop(&mut scratch),
            Some(Popped::Handler { handler: 1, .. })
        ));
        assert_eq!(scratch, get);
        assert!(matches!(p.pop(&mut scratch), Some(Popped::Discard)));
        assert!(matches!(
            p.pop(&mut scratch),
            Some(Popped::Handler { handler: 2, .. })
        ));
        assert_eq!(scratch, get);
    }
}
