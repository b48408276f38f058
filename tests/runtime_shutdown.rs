//! Clean shutdown, alone in its own test binary so that no other test's threads disturb the
//! thread count.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringwait::function::from_fn;
use ringwait::runtime::{DelayLine, Pipeline};
use ringwait::sink::CountingSink;
use ringwait::source::GeneratorSource;
use ringwait::{OperatorConfig, OrderMode};
use support::long_timeout_config as cfg;

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn pipeline(partitions: usize, config: OperatorConfig) -> Pipeline {
    Pipeline::builder()
        .partitions(partitions)
        .operator(config)
        .build()
        .unwrap()
}

/// Counts live instances, to prove the function is dropped at shutdown.
struct Tracked(Arc<AtomicUsize>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_leaves_no_threads_tasks_or_functions_behind() {
    let live = Arc::new(AtomicUsize::new(0));
    let before = threads_now();
    let live2 = live.clone();
    let report = pipeline(2, cfg(OrderMode::Ordered, 16))
        .run(
            |p| Ok(GeneratorSource::new(p.index, p.partitions, 1_000, |i| i)),
            move |_p| {
                let live = live2.clone();
                async move {
                    live.fetch_add(1, Ordering::SeqCst);
                    let tracked = Tracked(live);
                    let line = DelayLine::start(Duration::from_micros(100), Duration::ZERO, 16);
                    Ok(from_fn(move |x: &u64, r| {
                        let _ = &tracked;
                        line.push(r, *x)
                    }))
                }
            },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap();
    assert_eq!(report.merged.outputs, 1_000);
    assert_eq!(live.load(Ordering::SeqCst), 0, "every function was dropped");
    // The executor threads are joined by `run`; glommio's helper thread of each executor
    // (its blocking-syscall pool) exits right after the executor is dropped, without a join.
    // Give it a moment, but not forever: a thread that stays is a leak.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while threads_now() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        threads_now(),
        before,
        "every thread the run started has exited"
    );
}
