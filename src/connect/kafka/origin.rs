//! A Kafka message's origin as a record carries it through the pipeline: where it came from
//! (topic, partition, offset) and what passes through to its output (key, timestamp,
//! headers), in one compact byte string (the record's `origin`).
//!
//! Layout, integers little-endian: topic index `u8`, partition `i32`, assignment epoch
//! `u32`, offset `i64`, flags
//! `u8` (bit 0: a timestamp follows, bit 1: a key follows), timestamp `i64`, key length
//! `u32` and key, header count `u16`, then per header its name length `u16`, name, value
//! length `u32` (`u32::MAX`: no value) and value.

/// Where a message came from, and what of it passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The input topic's position in the address (from 0).
    pub topic: u8,
    /// The partition.
    pub partition: i32,
    /// Which assignment of the partition to this reader it was read under (a record read
    /// before the partition was revoked is not produced after).
    pub epoch: u32,
    /// The message's offset.
    pub offset: i64,
    /// Its timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its headers, encoded (walk them with [`Origin::headers`]).
    headers: &'a [u8],
}

/// Why an origin could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// A header name longer than 65,535 bytes, more than 65,535 headers, or a key or value of
    /// 4 GiB or more.
    #[error("a message's key or headers are too large to pass through")]
    TooLarge,
}

const HAS_TIMESTAMP: u8 = 1;
const HAS_KEY: u8 = 2;
const NO_VALUE: u32 = u32::MAX;

/// Appends a message's origin to `out`.
#[allow(clippy::too_many_arguments)]
pub fn encode<'h>(
    out: &mut Vec<u8>,
    topic: u8,
    partition: i32,
    epoch: u32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&[u8]>,
    headers: impl ExactSizeIterator<Item = (&'h str, Option<&'h [u8]>)>,
) -> Result<(), OriginError> {
    out.push(topic);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    let flags = timestamp.map_or(0, |_| HAS_TIMESTAMP) | key.map_or(0, |_| HAS_KEY);
    out.push(flags);
    if let Some(ts) = timestamp {
        out.extend_from_slice(&ts.to_le_bytes());
    }
    if let Some(k) = key {
        out.extend_from_slice(&len32(k.len())?.to_le_bytes());
        out.extend_from_slice(k);
    }
    let count = u16::try_from(headers.len()).map_err(|_| OriginError::TooLarge)?;
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in headers {
        let n = u16::try_from(name.len()).map_err(|_| OriginError::TooLarge)?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            Some(v) => {
                out.extend_from_slice(&len32(v.len())?.to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&NO_VALUE.to_le_bytes()),
        }
    }
    Ok(())
}

fn len32(n: usize) -> Result<u32, OriginError> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n != NO_VALUE)
        .ok_or(OriginError::TooLarge)
}

/// The input partition an origin names (without decoding the rest): what the reader routes
/// by. `None` if `origin` is not one.
#[inline]
pub fn partition_of(origin: &[u8]) -> Option<(u8, i32)> {
    let p = origin.get(1..5)?;
    Some((origin[0], i32::from_le_bytes(p.try_into().ok()?)))
}

/// The timestamp an origin carries, read at its fixed place (no walk of the headers): what
/// the reader deals each record with as its event time.
#[inline]
pub fn timestamp_of(origin: &[u8]) -> Option<i64> {
    // topic u8, partition i32, epoch u32, offset i64, then the flags.
    const FLAGS: usize = 1 + 4 + 4 + 8;
    let flags = *origin.get(FLAGS)?;
    if flags & HAS_TIMESTAMP == 0 {
        return None;
    }
    let ts = origin.get(FLAGS + 1..FLAGS + 9)?;
    Some(i64::from_le_bytes(ts.try_into().ok()?))
}

/// Reads the bytes an [`encode`] wrote. `None` if they are not an origin.
pub fn decode(b: &[u8]) -> Option<Origin<'_>> {
    let mut r = Reader(b);
    let topic = r.u8()?;
    let partition = i32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let epoch = r.u32()?;
    let offset = r.i64()?;
    let flags = r.u8()?;
    let timestamp = if flags & HAS_TIMESTAMP != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    let key = if flags & HAS_KEY != 0 {
        let n = r.u32()? as usize;
        Some(r.take(n)?)
    } else {
        None
    };
    let headers = r.0;
    // Checked once here, so that walking them cannot fail.
    let origin = Origin {
        topic,
        partition,
        epoch,
        offset,
        timestamp,
        key,
        headers,
    };
    let mut count = 0usize;
    let mut w = HeaderWalk::new(headers)?;
    for h in w.by_ref() {
        h?;
        count += 1;
    }
    (count == w.count && w.rest.is_empty()).then_some(origin)
}

impl<'a> Origin<'a> {
    /// The message's headers, in their order: name and value (`None`: a header without one).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        HeaderWalk::new(self.headers)
            .into_iter()
            .flatten()
            .map_while(|h| h)
    }

    /// How many headers the message has.
    pub fn header_count(&self) -> usize {
        HeaderWalk::new(self.headers).map_or(0, |w| w.count)
    }
}

struct HeaderWalk<'a> {
    rest: &'a [u8],
    count: usize,
    seen: usize,
}

impl<'a> HeaderWalk<'a> {
    fn new(b: &'a [u8]) -> Option<HeaderWalk<'a>> {
        let mut r = Reader(b);
        let count = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        Some(HeaderWalk {
            rest: r.0,
            count,
            seen: 0,
        })
    }
}

impl<'a> Iterator for HeaderWalk<'a> {
    type Item = Option<(&'a str, Option<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.seen == self.count {
            return None;
        }
        self.seen += 1;
        let mut r = Reader(self.rest);
        let item = (|| {
            let n = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
            let name = std::str::from_utf8(r.take(n)?).ok()?;
            let len = r.u32()?;
            let value = if len == NO_VALUE {
                None
            } else {
                Some(r.take(len as usize)?)
            };
            Some((name, value))
        })();
        self.rest = r.0;
        if item.is_none() {
            self.seen = self.count;
        }
        Some(item)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Headers = Vec<(String, Option<Vec<u8>>)>;

    fn roundtrip(
        partition: i32,
        offset: i64,
        ts: Option<i64>,
        key: Option<Vec<u8>>,
        headers: Headers,
    ) {
        let mut b = vec![];
        let hs = headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
        encode(&mut b, 7, partition, 9, offset, ts, key.as_deref(), hs).unwrap();
        let o = decode(&b).expect("decodes");
        assert_eq!(partition_of(&b), Some((7, partition)));
        assert_eq!(timestamp_of(&b), ts);
        assert_eq!(
            (o.topic, o.partition, o.epoch, o.offset, o.timestamp, o.key),
            (7, partition, 9, offset, ts, key.as_deref())
        );
        let got: Headers = o
            .headers()
            .map(|(n, v)| (n.to_string(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, headers);
        assert_eq!(o.header_count(), headers.len());
        // Any cut of it is refused, never misread.
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_message_without_key_time_or_headers() {
        roundtrip(0, 0, None, None, vec![]);
        roundtrip(3, 1 << 40, Some(-1), Some(vec![]), vec![("".into(), None)]);
    }

    proptest! {
        #[test]
        fn every_origin_reads_back(
            partition in any::<i32>(),
            offset in any::<i64>(),
            ts in any::<Option<i64>>(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            headers in proptest::collection::vec(
                ("[a-z-]{0,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))),
                0..6,
            ),
        ) {
            roundtrip(partition, offset, ts, key, headers);
        }
    }
}
