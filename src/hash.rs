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
