//! The whole `enrich` job allocates nothing per record in steady state (issue 14): the
//! reader, the partitions and the writer together, on generated input and on a file.
//!
//! A counting global allocator counts every allocation of the process while a job runs.
//! Each job runs with N and with 2N records; start-up and teardown are the same in both, so
//! the difference is what N more records cost. A per-record allocation anywhere on the
//! record path (a line's text or key, a value, a queue item) makes it grow by at least N;
//! what is allowed is what is shared by many records (a 64 KiB chunk of lines, a batch of
//! 256 or 1024 records).

mod counting_alloc;

use std::sync::atomic::Ordering;

use counting_alloc::{Counting, ALLOCATIONS};

use ringwait::enrich::{self, EnrichConfig, Input, Output};
use ringwait::OrderMode;

/// Every thread counts: the reader, the partitions and the writer.
#[global_allocator]
static GLOBAL: Counting = Counting::new(|| true);

const N: u64 = 100_000;

/// Allocations per record beyond start-up. One allocation per record anywhere makes it
/// at least 1.0. What stays below: chunks of lines (one per 64 KiB read), batches not yet
/// recycled, and glommio's own per-sleep allocations (a timer and a reactor source each time
/// a starved partition's executor parks: that follows idle episodes, not records, and was
/// 0.02-0.07 per record here).
const PER_RECORD_LIMIT: f64 = 0.5;

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rw-enrich-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A file of `n` trading-like records, ~100 bytes each, keys the built-in store holds.
fn input_file(n: u64) -> std::path::PathBuf {
    let path = dir().join(format!("in-{n}.jsonl"));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"id\":{i},\"ts\":{},\"sym\":\"SYM{:04}\",\"px\":{}.{:02},\"qty\":{},\"side\":\"{}\",\"key\":\"k:{}\"}}\n",
            1_765_090_000_000_000u64 + i,
            i % 10_000,
            100 + i % 900,
            i % 100,
            1 + i % 500,
            if i % 2 == 0 { "B" } else { "S" },
            (i * 7919) % 1_000_000
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// One test at a time: the count is the whole process's. Each test holds it throughout.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations made while one job runs.
fn allocations(input: Input, mode: OrderMode, partitions: usize) -> u64 {
    let out = dir().join(format!("out-{}.jsonl", ALLOCATIONS.load(Ordering::Relaxed)));
    let config = EnrichConfig {
        input,
        output: Output::File(out.clone()),
        mode,
        partitions: Some(partitions),
        progress: false,
        pin: false,
        ..EnrichConfig::default()
    };
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let summary = enrich::run(config).expect("the job runs");
    let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(summary.written.misses, 0);
    std::fs::remove_file(out).unwrap();
    made
}

fn per_record(small: Input, large: Input, mode: OrderMode, partitions: usize) -> f64 {
    // A first run warms up what is made once per process.
    allocations(small.clone(), mode, partitions);
    let a = allocations(small, mode, partitions);
    let b = allocations(large, mode, partitions);
    let per = (b as f64 - a as f64) / N as f64;
    eprintln!("{mode:?} x{partitions}: {a} allocations for N, {b} for 2N: {per:.4} per record");
    per
}

#[test]
fn generated_records_cost_no_allocation_each() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let per = per_record(
        Input::Generated(N),
        Input::Generated(2 * N),
        OrderMode::Ordered,
        1,
    );
    assert!(per < PER_RECORD_LIMIT, "{per:.4} allocations per record");
}

#[test]
fn file_records_cost_no_allocation_each_in_every_mode() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (small, large) = (input_file(N), input_file(2 * N));
    for (mode, partitions) in [
        (OrderMode::Ordered, 1),
        (OrderMode::Unordered, 2),
        (OrderMode::KeyOrdered, 2),
    ] {
        let per = per_record(
            Input::File(small.clone()),
            Input::File(large.clone()),
            mode,
            partitions,
        );
        assert!(
            per < PER_RECORD_LIMIT,
            "{mode:?} x{partitions}: {per:.4} allocations per record"
        );
    }
}
