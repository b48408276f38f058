//! The key hash of key-ordered `enrich`: which partition a key goes to, and which keys the
//! operator orders among each other.
//!
//! It is a fixed function, written out here, because checkpoints depend on it: a key-ordered
//! checkpoint holds each partition's input position, so a binary that routed keys differently
//! would resume records on the wrong partition. `std`'s `DefaultHasher` may change between
//! Rust releases; this may not. [`ROUTING_VERSION`] is stored with every checkpoint, and a
//! checkpoint taken with another version is refused.

/// The name and version of [`key_hash`], as stored in checkpoints.
pub const ROUTING_VERSION: &str = "fnv1a64-fmix64-v1";

/// FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the lookup
/// key's bytes (with `--key-prefix`), then MurmurHash3's `fmix64` finaliser so that the low
/// bits, which pick the partition, depend on every byte.
///
/// ```
/// use ringwait::enrich::key_hash;
/// assert_eq!(key_hash(b"k:0"), 0x4a27_cbfc_6143_cf27);
/// assert_ne!(key_hash(b"k:1"), key_hash(b"k:2"));
/// ```
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    fmix64(crate::hash::fnv1a64(key.iter().copied()))
}

/// MurmurHash3's 64-bit finaliser.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The partition of `key` among `partitions`.
#[inline]
pub fn partition_of_key(key: &[u8], partitions: usize) -> usize {
    (key_hash(key) % partitions.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed values: if this test fails, the routing changed, and every key-ordered
    /// checkpoint taken before would resume wrongly. Do not update the numbers: add a new
    /// function and a new ROUTING_VERSION instead.
    #[test]
    fn the_hash_never_changes() {
        let got: Vec<u64> = [&b""[..], b"k:0", b"k:1", b"user:42"]
            .iter()
            .map(|k| key_hash(k))
            .collect();
        assert_eq!(got, FROZEN);
    }

    /// Computed independently of this code (a Python transcription of the definition above).
    const FROZEN: [u64; 4] = [
        0xefd0_1f60_ba99_2926,
        0x4a27_cbfc_6143_cf27,
        0xb211_aa67_6dab_7327,
        0x9988_17be_e671_8248,
    ];

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[partition_of_key(format!("k:{i}").as_bytes(), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
