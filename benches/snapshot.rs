//! Snapshot store costs (SPEC section 4 "checkpoint": snapshot and restore against the number of
//! in-flight records; section 1: a 1k-record snapshot <= 50 us before its flush).
//!
//! Records are `(u64, (i64, u64))`: 24 bytes each, like a sequence number, a timestamp and a key.
//! `cargo bench --bench snapshot`; files live under cargo's target tmp dir (the real disk).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringwait::snapshot::{decode_records, encode_records, SnapshotMeta, SnapshotStore};

type Record = (u64, (i64, u64));

const SIZES: [(usize, &str); 2] = [(1000, "1k"), (65_536, "64k")];

fn records(n: usize) -> Vec<Record> {
    (0..n as u64)
        .map(|i| (i, (i as i64 * 1000, i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
        .collect()
}

fn encoded(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_records(&records(n), &mut out);
    out
}

fn meta(epoch: u64, n: usize) -> SnapshotMeta {
    SnapshotMeta {
        epoch,
        capacity: 1000,
        record_count: n as u64,
        source_position: epoch * 1000,
        sink_position: epoch * 900,
        watermark: Some(epoch as i64),
    }
}

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-snapshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stage(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot/stage");
    for (n, label) in SIZES {
        let payload = encoded(n);
        g.throughput(Throughput::Elements(n as u64));
        let dir = bench_dir(&format!("stage-{label}"));
        let mut store = SnapshotStore::open(&dir, 1, 0, payload.len() as u64).unwrap();
        // Copy + CRC into pages that are already dirty (repeated stage without commit).
        g.bench_function(BenchmarkId::new("copy_hot", label), |b| {
            b.iter(|| {
                store.stage(meta(1, n), &payload).unwrap();
                store.abandon();
            })
        });
        // Encode the records into a reused buffer, then stage: the whole hot-path cost.
        let recs = records(n);
        let mut buf = Vec::with_capacity(payload.len());
        g.bench_function(BenchmarkId::new("encode_and_copy_hot", label), |b| {
            b.iter(|| {
                buf.clear();
                encode_records(&recs, &mut buf);
                store.stage(meta(1, n), &buf).unwrap();
                store.abandon();
            })
        });
        // Stage right after a commit: msync left the pages clean and write-protected, so the
        // copy takes a page fault per 4 KiB page. Only the stage is timed.
        let mut epoch = 0;
        g.bench_function(BenchmarkId::new("copy_after_commit", label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    epoch += 1;
                    let t = Instant::now();
                    store.stage(meta(epoch, n), &payload).unwrap();
                    total += t.elapsed();
                    store.commit().unwrap();
                }
                total
            })
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot/commit");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (n, label) in SIZES {
        let payload = encoded(n);
        let dir = bench_dir(&format!("commit-{label}"));
        let mut store = SnapshotStore::open(&dir, 1, 0, payload.len() as u64).unwrap();
        let mut epoch = 0;
        // msync of the payload, then of the header page. Only the commit is timed.
        g.bench_function(BenchmarkId::new("flush", label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    epoch += 1;
                    store.stage(meta(epoch, n), &payload).unwrap();
                    let t = Instant::now();
                    store.commit().unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot/recover");
    for (n, label) in SIZES {
        let payload = encoded(n);
        let dir = bench_dir(&format!("recover-{label}"));
        let mut store = SnapshotStore::open(&dir, 1, 0, payload.len() as u64).unwrap();
        store.write(meta(1, n), &payload).unwrap();
        store.write(meta(2, n), &payload).unwrap();
        drop(store);
        g.throughput(Throughput::Elements(n as u64));
        // pread + validate both headers and both payload CRCs; returns the payload bytes.
        g.bench_function(BenchmarkId::new("read_validate", label), |b| {
            b.iter(|| SnapshotStore::recover(&dir, 1, 0).unwrap().unwrap())
        });
        // ... and decode the records back.
        g.bench_function(BenchmarkId::new("read_validate_decode", label), |b| {
            b.iter(|| {
                let rec = SnapshotStore::recover(&dir, 1, 0).unwrap().unwrap();
                decode_records::<Record>(&rec.payload).unwrap()
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, stage, commit, recover);
criterion_main!(benches);
