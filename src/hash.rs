//! FNV-1a, 64-bit: the small, fixed hash the lookup cache, request coalescing and the
//! enrich job's key routing build on (the routing's values are stored in checkpoints, so
//! this must never change).

/// FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over `bytes`.
#[inline]
pub(crate) fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A `HashMap` hasher for keys that are already FNV-1a hashes: the `u64` is its own hash
/// (hashing it again with std's SipHash only costs time).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Prehashed;

impl std::hash::BuildHasher for Prehashed {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// The hasher of [`Prehashed`]: a `u64` passes through.
#[derive(Debug, Default)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only for keys that are not a u64 (none here): fold them in.
        self.0 = fnv1a64(
            self.0
                .to_le_bytes()
                .into_iter()
                .chain(bytes.iter().copied()),
        );
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
