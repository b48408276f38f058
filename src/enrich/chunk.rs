//! Chunks: the buffers input lines live in. The reader reads straight into a chunk's buffer,
//! the lines of one read are checked where they lie, and the chunk is then shared (one
//! reference count per line) by everything downstream. Buffers come back to the reader once
//! the last line of a chunk is written, so a steady run reads into the same few buffers and
//! copies each input byte once, from the kernel.

use std::collections::VecDeque;
use std::sync::Arc;

use super::record::{scan_line, utf8, KeyAt, Line, LineError, LineFields, Shape};

/// Bytes a fresh chunk buffer holds; a line longer than this grows its buffer.
pub(crate) const CHUNK_SIZE: usize = 64 << 10;

/// Buffers kept for reuse. Chunks are released roughly in the order they were made (the
/// writer is last to hold them), so the oldest is the one to try.
const POOL: usize = 64;

/// A line checked and waiting for its chunk to be frozen.
#[derive(Debug, Clone, Copy)]
struct Staged {
    /// Byte range of the text in the buffer.
    text: (u32, u32),
    key: KeyAt,
    shape: Shape,
    number: u64,
    index: u64,
    /// Byte range of the record's origin in the buffer (empty for a line of a file).
    origin: (u32, u32),
}

/// Builds chunks. Bytes go into the buffer being filled (read into it with
/// [`spare`](Self::spare) and [`filled`](Self::filled), or copied with
/// [`push`](Self::push)); complete lines are checked in place with [`check`](Self::check);
/// [`finish`](Self::finish) hands the checked lines out and carries what follows them (a
/// line not yet complete) over to the next buffer.
pub(crate) struct ChunkBuilder {
    /// The buffer being filled, owned by the builder alone until it is frozen. Its whole
    /// length is initialised; `len` bytes of it are in use.
    buf: Arc<Vec<u8>>,
    len: usize,
    /// Keys that are not a slice of their line (escaped, prefixed or numbers), copied after
    /// the lines when the chunk is frozen.
    keys: Vec<u8>,
    lines: Vec<Staged>,
    /// Frozen chunks still referenced downstream, oldest first, to be reused.
    pool: VecDeque<Arc<Vec<u8>>>,
    /// Size of a new buffer.
    capacity: usize,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        ChunkBuilder::with_capacity(CHUNK_SIZE)
    }
}

impl ChunkBuilder {
    /// A builder whose first buffer holds `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        ChunkBuilder {
            buf: Arc::new(vec![0; bytes]),
            len: 0,
            keys: Vec::new(),
            lines: Vec::new(),
            pool: VecDeque::new(),
            capacity: bytes,
        }
    }

    /// The bytes put in and not yet handed out: checked lines, then unchecked bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Room for at least `at_least` more bytes after those in use, to read into; then call
    /// [`filled`](Self::filled) with the count written.
    pub fn spare(&mut self, at_least: usize) -> &mut [u8] {
        let len = self.len;
        let buf = self.own();
        if buf.len() - len < at_least {
            let grown = (len + at_least).max(buf.len() * 2);
            buf.resize(grown, 0);
        }
        &mut buf[len..]
    }

    /// `n` bytes were written at the start of [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        assert!(self.len + n <= self.buf.len(), "filled past the spare room");
        self.len += n;
    }

    /// Copies `text` in and checks it as line `number`, record `index`.
    pub fn push(
        &mut self,
        text: &[u8],
        number: u64,
        index: u64,
        fields: &LineFields,
    ) -> Result<(), LineError> {
        let range = self.append(text);
        self.check(range, false, number, index, fields)
    }

    /// Copies `bytes` in after those in use; returns where they lie.
    fn append(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.len;
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
        (start, self.len)
    }

    /// Checks the bytes `start..end` (already put in, UTF-8, without the line break) as
    /// line `number`, record `index`, and stages it for the chunk; `crlf`: its line break
    /// was `\r\n`.
    pub fn check(
        &mut self,
        (start, end): (usize, usize),
        crlf: bool,
        number: u64,
        index: u64,
        fields: &LineFields,
    ) -> Result<(), LineError> {
        let text = &self.buf[start..end];
        let (key, mut shape) = scan_line(text, number, fields, &mut self.keys)?;
        shape.crlf = crlf;
        self.stage((start as u32, end as u32), key, shape, number, index);
        Ok(())
    }

    /// Stages a line whose key and shape are known (a line restored from a snapshot).
    pub fn stage_checked(
        &mut self,
        text: &[u8],
        key: &[u8],
        shape: Shape,
        number: u64,
        index: u64,
    ) {
        let (start, end) = self.append(text);
        let key_start = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        let key = KeyAt::Keys(key_start, key_start + key.len() as u32);
        self.stage((start as u32, end as u32), key, shape, number, index);
    }

    fn stage(&mut self, text: (u32, u32), key: KeyAt, shape: Shape, number: u64, index: u64) {
        self.lines.push(Staged {
            text,
            key,
            shape,
            number,
            index,
            origin: (0, 0),
        });
    }

    /// Copies a stream entry in: its payload, checked as record `index`, and its origin (the
    /// bytes the sink commits it under). A payload that is not a record (not UTF-8, not a
    /// JSON object, no key, blank) is staged as [invalid](Line::invalid), with the reason
    /// where its key would be, for the error policy: it is never dropped here.
    /// `payload` is `Err(reason)` for an entry without one (its field is missing).
    pub fn push_entry(
        &mut self,
        payload: Result<&[u8], &str>,
        origin: &[u8],
        number: u64,
        index: u64,
        fields: &LineFields,
    ) {
        let (start, end) = self.append(payload.unwrap_or_default());
        let (o_start, o_end) = self.append(origin);
        let text = &self.buf[start..end];
        // The reason without the "line N: " a line's error starts with.
        let reason_of = |e: LineError| {
            let text = e.to_string();
            text.split_once(": ")
                .map_or(text.clone(), |(_, r)| r.to_string())
        };
        let checked = match payload {
            Err(reason) => Err(reason.to_string()),
            Ok(_) => match utf8(text, number) {
                Err(e) => Err(reason_of(e)),
                Ok(t) if t.trim_matches([' ', '\t']).is_empty() => {
                    Err("the payload is blank".to_string())
                }
                Ok(t) => scan_line(t.as_bytes(), number, fields, &mut self.keys).map_err(reason_of),
            },
        };
        let (key, shape) = match checked {
            Ok(found) => found,
            Err(reason) => {
                let at = self.keys.len() as u32;
                self.keys.extend_from_slice(reason.as_bytes());
                (KeyAt::Keys(at, self.keys.len() as u32), Shape::INVALID)
            }
        };
        self.lines.push(Staged {
            text: (start as u32, end as u32),
            key,
            shape,
            number,
            index,
            origin: (o_start as u32, o_end as u32),
        });
    }

    /// Lines staged since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Freezes the staged lines into one chunk and hands each to `each`, in order; the bytes
    /// from `keep_from` on (not yet a complete line) move to the next buffer. `each` returns
    /// false to stop early. Returns whether every line was taken.
    pub fn finish(&mut self, keep_from: usize, mut each: impl FnMut(Line) -> bool) -> bool {
        assert!(
            keep_from <= self.len,
            "keeping bytes that were never put in"
        );
        if self.lines.is_empty() && keep_from == 0 {
            return true;
        }
        let tail = self.len - keep_from;
        let mut next = self.next_buffer(tail);
        Arc::get_mut(&mut next).expect("a buffer nothing references")[..tail]
            .copy_from_slice(&self.buf[keep_from..self.len]);
        // The keys go where the carried bytes were.
        self.len = keep_from;
        let keys_at = self.len as u32;
        let keys = std::mem::take(&mut self.keys);
        self.append(&keys);
        self.keys = keys;
        self.keys.clear();
        let chunk = std::mem::replace(&mut self.buf, next);
        self.len = tail;
        let mut going = true;
        for staged in self.lines.drain(..) {
            if !going {
                continue;
            }
            let key = match staged.key {
                KeyAt::Text(s, e) => (staged.text.0 + s, staged.text.0 + e),
                KeyAt::Keys(s, e) => (keys_at + s, keys_at + e),
            };
            going = each(Line::in_chunk(
                chunk.clone(),
                (staged.text, key, staged.origin),
                staged.number,
                staged.index,
                staged.shape,
            ));
        }
        self.pool.push_back(chunk);
        going
    }

    /// The one line staged, in a chunk of its own.
    pub fn only_line(mut self) -> Line {
        let mut line = None;
        let end = self.len;
        self.finish(end, |l| {
            line = Some(l);
            true
        });
        line.expect("one line was staged")
    }

    /// The buffer being filled, which nothing downstream can see yet.
    fn own(&mut self) -> &mut Vec<u8> {
        Arc::get_mut(&mut self.buf).expect("the buffer being filled is not shared")
    }

    /// A buffer of at least `at_least` bytes for the next chunk: the oldest pooled one when
    /// nothing references it any more, a new one otherwise.
    fn next_buffer(&mut self, at_least: usize) -> Arc<Vec<u8>> {
        let size = at_least.max(self.capacity);
        if let Some(oldest) = self.pool.front_mut() {
            if let Some(buf) = Arc::get_mut(oldest) {
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                return self.pool.pop_front().expect("the oldest was just seen");
            }
        }
        if self.pool.len() >= POOL {
            self.pool.pop_front(); // still in use downstream: it is freed there
        }
        Arc::new(vec![0; size])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(prefix: &str) -> LineFields {
        LineFields {
            key: "key".into(),
            key_prefix: prefix.into(),
            into: "value".into(),
        }
    }

    fn all_lines(b: &mut ChunkBuilder) -> Vec<Line> {
        let end = b.bytes().len();
        lines(b, end)
    }

    fn lines(b: &mut ChunkBuilder, keep_from: usize) -> Vec<Line> {
        let mut out = Vec::new();
        b.finish(keep_from, |l| {
            out.push(l);
            true
        });
        out
    }

    #[test]
    fn lines_are_checked_in_place_and_the_tail_carried_over() {
        let mut b = ChunkBuilder::with_capacity(16);
        let input = b"{\"key\":\"a\"}\n{\"key\":7}\n{\"ke";
        b.spare(input.len())[..input.len()].copy_from_slice(input);
        b.filled(input.len());
        b.check((0, 11), false, 1, 0, &fields("")).unwrap();
        b.check((12, 21), false, 2, 1, &fields("")).unwrap();
        let got = lines(&mut b, 22);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text(), b"{\"key\":\"a\"}");
        assert_eq!(got[0].key(), b"a");
        assert_eq!(got[1].text(), b"{\"key\":7}");
        assert_eq!(got[1].key(), b"7");
        assert_eq!(
            b.bytes(),
            b"{\"ke",
            "the incomplete line starts the next buffer"
        );
    }

    #[test]
    fn prefixed_and_escaped_keys_live_after_the_lines() {
        let mut b = ChunkBuilder::default();
        b.push(br#"{"key":"x"}"#, 1, 0, &fields("p:")).unwrap();
        b.push(br#"{"key":"\u0041"}"#, 2, 1, &fields("p:")).unwrap();
        let got = all_lines(&mut b);
        assert_eq!(got[0].key(), b"p:x");
        assert_eq!(got[1].key(), b"p:A");
        assert_eq!(got[1].text(), br#"{"key":"\u0041"}"#);
    }

    #[test]
    fn released_buffers_are_reused_and_held_ones_are_not_touched() {
        let mut b = ChunkBuilder::with_capacity(64);
        b.push(br#"{"key":"held"}"#, 1, 0, &fields("")).unwrap();
        let held = all_lines(&mut b);
        for i in 0..3 * POOL as u64 {
            b.push(br#"{"key":"gone"}"#, i + 2, i + 1, &fields(""))
                .unwrap();
            drop(all_lines(&mut b));
        }
        assert_eq!(held[0].key(), b"held");
        assert_eq!(held[0].text(), br#"{"key":"held"}"#);
        assert!(b.pool.len() <= POOL);
    }

    #[test]
    fn a_refused_line_leaves_the_staged_ones_intact() {
        let mut b = ChunkBuilder::default();
        b.push(br#"{"key":"a"}"#, 1, 0, &fields("")).unwrap();
        assert!(b.push(b"{nope", 2, 1, &fields("")).is_err());
        assert_eq!(b.len(), 1);
    }
}
