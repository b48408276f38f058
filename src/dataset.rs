//! The generated data set: what the built-in server holds, what the benchmark loader writes
//! into a real Redis, and the key sequence the benchmarks and `enrich`'s generated input use.
//!
//! * Strings: keys `k:0 .. k:{N-1}`; the value of `k:i` is [`value_of`]`(i)`, 64 bytes:
//!   `"v:"`, `i` in decimal zero-padded to 20 digits, then `.` up to 64 bytes — the same
//!   formula the benchmark loader (`perf/baseline load`, `ringwait bench --workload redis`)
//!   writes into a real Redis, so one check verifies both.
//!   Example: `k:7` → `v:00000000000000000007` followed by 42 dots.
//! * Hashes: keys `h:0 .. h:{N-1}`; `h:i` has two fields: `id` = `i` in decimal (no padding)
//!   and `v` = [`value_of`]`(i)`. `HGETALL` answers them in that order.
//!
//! Nothing is stored: values are computed from the index when asked for. `SET` stores
//! overrides in a small map that `GET`/`MGET`/`EXISTS`/`DBSIZE` consult first.

/// Length of every generated value.
pub const VALUE_LEN: usize = 64;

/// The generated value of key `k:i`: 64 bytes, `"v:"`, `i` in decimal zero-padded to 20
/// digits, then `.` padding. The field `v` of hash `h:i` holds the same value.
///
/// ```
/// let v = ringwait::dataset::value_of(7);
/// assert_eq!(&v[..22], &b"v:00000000000000000007"[..]);
/// assert!(v[22..].iter().all(|&b| b == b'.'));
/// assert_eq!(v.len(), 64);
/// ```
pub fn value_of(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    v[0] = b'v';
    v[1] = b':';
    let mut n = i;
    for slot in v[2..22].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    for slot in v[22..].iter_mut() {
        *slot = b'.';
    }
    v
}

/// The index `i` of a key `<prefix>i` (e.g. `k:12` with prefix `k:`), if the suffix is a
/// canonical decimal number (no sign, no leading zero) below `count`.
pub fn key_index(key: &[u8], prefix: &[u8], count: u64) -> Option<u64> {
    let digits = key.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 20 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n < count).then_some(n)
}

/// The `i`-th key index of the benchmarks' key sequence (the redis workload, `enrich`'s
/// generated records): the i-th SplitMix64 output seeded with 42, mod 1,000,000.
///
/// ```
/// assert_eq!(ringwait::dataset::key_of(0), 275_413);
/// assert_eq!(ringwait::dataset::key_of(1), 892_291);
/// ```
pub fn key_of(i: u64) -> u64 {
    let mut z = 42u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % 1_000_000
}

/// A key index drawn Zipf(`s`) over `0..1_000_000` for record `i` (skewed traffic: rank 1,
/// key 0, is the hottest), from the same seeded SplitMix64 hash of `i` as [`key_of`] and the
/// continuous inverse of the Zipf CDF, O(1) per record: `k = ⌊(u·(N^(1-s) − 1) + 1)^(1/(1-s))⌋`.
/// `s` must be in `(0, 1)` (for `s` = 1 use 0.999).
///
/// ```
/// use ringwait::dataset::zipf_key_of;
/// let hits: usize = (0..100_000u64).filter(|&i| zipf_key_of(i, 0.99) < 10).count();
/// assert!(hits > 10_000, "the 10 hottest keys take a large share: {hits}");
/// assert!((0..1000u64).all(|i| zipf_key_of(i, 0.99) < 1_000_000));
/// ```
pub fn zipf_key_of(i: u64, s: f64) -> u64 {
    const N: f64 = 1_000_000.0;
    let mut z = 7u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    let e = 1.0 - s;
    let rank = (u * (N.powf(e) - 1.0) + 1.0).powf(1.0 / e);
    (rank as u64).clamp(1, N as u64) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_formula_matches_its_documentation() {
        for i in [0u64, 7, 25, 26, 999_999, u64::MAX] {
            let expected = format!("{:.<64}", format!("v:{i:020}")).into_bytes();
            assert_eq!(&value_of(i)[..], &expected[..]);
        }
    }

    #[test]
    fn only_canonical_keys_in_range_have_an_index() {
        assert_eq!(key_index(b"k:0", b"k:", 10), Some(0));
        assert_eq!(key_index(b"k:9", b"k:", 10), Some(9));
        assert_eq!(key_index(b"k:10", b"k:", 10), None);
        assert_eq!(key_index(b"k:01", b"k:", 10), None);
        assert_eq!(key_index(b"k:", b"k:", 10), None);
        assert_eq!(key_index(b"k:-1", b"k:", 10), None);
        assert_eq!(key_index(b"h:1", b"k:", 10), None);
        assert_eq!(
            key_index(b"k:99999999999999999999999", b"k:", u64::MAX),
            None
        );
    }
}
