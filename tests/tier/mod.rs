//! The long test tiers. `RINGWAIT_LONG_TESTS=1`, exactly that, turns them on (any other
//! value, or none, is the short tier CI runs), and every test with a long tier reads it here,
//! and says on stderr which tier ran, so that a short run never passes for a long one.

/// Whether the long tier runs.
fn long() -> bool {
    std::env::var("RINGWAIT_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// `short` in the short tier, `long` in the long one; says which on stderr.
pub fn size<T: std::fmt::Display>(what: &str, short: T, long: T) -> T {
    if self::long() {
        eprintln!("long tier: {what} = {long}");
        long
    } else {
        eprintln!("short tier: {what} = {short} (RINGWAIT_LONG_TESTS=1 for {long})");
        short
    }
}
