//! The data of SPEC section 4's `redis` workload: which key record `i` asks for, and the value
//! stored under each key. Shared by the `load` subcommand and the `redis` workload, and by
//! ringwait's built-in server, which must produce the same bytes.

/// Number of keys in the `redis` workload's keyspace: `k:0 .. k:999999`.
pub const KEYSPACE: u64 = 1_000_000;

/// Length of every stored value, in bytes.
pub const VALUE_LEN: usize = 64;

/// The i-th output (i from 0) of SplitMix64 seeded with 42, with wrapping arithmetic.
pub fn splitmix64(i: u64) -> u64 {
    let mut z = 42u64.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key index record `i` looks up: `splitmix64(i) % 1,000,000`.
pub fn key_of(i: u64) -> u64 {
    splitmix64(i) % KEYSPACE
}

/// The Redis key name for key index `k`: `k:<k>`.
pub fn key_name(k: u64) -> String {
    format!("k:{k}")
}

/// The 64-byte value stored under `k:<k>`: ASCII `v:`, the decimal index zero-padded to 20
/// digits, then `.` up to exactly 64 bytes.
pub fn value_of(k: u64) -> [u8; VALUE_LEN] {
    let mut v = [b'.'; VALUE_LEN];
    let head = format!("v:{k:020}");
    v[..head.len()].copy_from_slice(head.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_seeded_42_first_outputs_are_pinned() {
        // Computed independently (Python, explicit 64-bit masking).
        assert_eq!(splitmix64(0), 13_679_457_532_755_275_413);
        assert_eq!(splitmix64(1), 2_949_826_092_126_892_291);
        assert_eq!(splitmix64(2), 5_139_283_748_462_763_858);
        assert_eq!(splitmix64(3), 6_349_198_060_258_255_764);
        assert_eq!(splitmix64(4), 701_532_786_141_963_250);
    }

    #[test]
    fn key_of_first_records_are_pinned() {
        let keys: Vec<u64> = (0..5).map(key_of).collect();
        assert_eq!(keys, [275_413, 892_291, 763_858, 255_764, 963_250]);
        assert!((0..100_000).map(key_of).all(|k| k < KEYSPACE));
    }

    #[test]
    fn value_is_v_colon_twenty_digits_then_dots_to_64_bytes() {
        let v = value_of(42);
        assert_eq!(v.len(), 64);
        assert_eq!(&v[..22], b"v:00000000000000000042");
        assert!(v[22..].iter().all(|&b| b == b'.'));
        assert_eq!(&value_of(999_999)[..22], b"v:00000000000000999999");
        assert_eq!(key_name(7), "k:7");
    }
}
