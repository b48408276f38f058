//! Soak: steady redis lookups against the built-in server while RSS and open descriptors
//! are sampled; both must stay flat. A few seconds here; a long run with
//! `RINGWAIT_LONG_TESTS=1` (`RINGWAIT_SOAK_S` seconds, default 600).

use std::time::Duration;

use ringwait::bench::redis::RedisOptions;
use ringwait::bench::soak::{run_soak, SoakOptions};
use ringwait::bench::{BenchConfig, Workload};
use ringwait::OrderMode;

fn soak(duration: Duration, interval: Duration, mode: OrderMode, redis: bool) {
    let mut cfg = BenchConfig::new(Workload::Soak);
    cfg.mode = mode;
    let mut opts = SoakOptions::new(duration);
    opts.interval = interval;
    opts.redis = redis;
    let report = run_soak(&cfg, &RedisOptions::default(), &opts).unwrap();
    for s in &report.samples {
        println!("t={} ms rss={} KiB fds={}", s.t_ms, s.rss_kib, s.fds);
    }
    println!("{report}");
    assert!(report.records > 0, "{report}");
    assert!(report.samples.len() >= 4, "{report}");
    assert!(report.flat, "not flat: {report}");
}

#[test]
fn a_short_redis_soak_keeps_memory_and_descriptors_flat() {
    soak(
        Duration::from_secs(4),
        Duration::from_millis(250),
        OrderMode::Unordered,
        true,
    );
}

/// The long tier: `RINGWAIT_LONG_TESTS=1 .ci/run` runs it (`--ignored`); ignored, and so
/// counted as such in the summary, otherwise.
#[test]
#[ignore = "long tier: RINGWAIT_LONG_TESTS=1 .ci/run runs it"]
fn a_long_soak_keeps_memory_and_descriptors_flat() {
    let secs = std::env::var("RINGWAIT_SOAK_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    for redis in [true, false] {
        soak(
            Duration::from_secs(secs / 2),
            Duration::from_secs(1),
            OrderMode::Ordered,
            redis,
        );
    }
}
