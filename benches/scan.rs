//! The reader's per-line cost: the validating scan of one trading record (~100 bytes) that
//! finds its key field and its closing brace (`ringwait::enrich::scan`), beside serde_json
//! parsing the same line into a `Value` (what the job did before).
//!
//! `cargo bench --bench scan`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringwait::enrich::scan::scan_object;

/// Lines shaped like `perf/gen-enrich-input.py`'s.
fn lines() -> Vec<String> {
    (0..1000u64)
        .map(|i| {
            format!(
                r#"{{"id":{i},"ts":{},"sym":"SYM{:04}","px":{}.{:02},"qty":{},"side":"{}","key":"k:{}"}}"#,
                1_765_090_000_000_000u64 + i * 137,
                i % 5000,
                100 + i % 900,
                i % 100,
                1 + i % 1000,
                if i % 2 == 0 { "B" } else { "S" },
                i.wrapping_mul(2_654_435_761) % 1_000_000
            )
        })
        .collect()
}

/// Ad-tech lines: a few long strings (a URL and a user agent), ~330 bytes.
fn long_string_lines() -> Vec<String> {
    (0..1000u64)
        .map(|i| {
            format!(
                r#"{{"req":{i},"url":"https://www.example.com/articles/2026/12/07/some-long-article-slug-{i}?utm_source=feed&utm_medium=rss","ua":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","key":"u:{}"}}"#,
                i * 7919 % 100_000
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let long = long_string_lines();
    let mut g = c.benchmark_group("scan_long_strings");
    g.throughput(Throughput::Bytes(long.iter().map(|l| l.len() as u64).sum()));
    g.bench_function("ringwait_scan", |b| {
        b.iter(|| {
            for l in &long {
                black_box(scan_object(black_box(l.as_bytes()), b"key", b"value").unwrap());
            }
        })
    });
    g.finish();
    let lines = lines();
    let mut g = c.benchmark_group("scan_line");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("ringwait_scan", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(scan_object(black_box(l.as_bytes()), b"key", b"value").unwrap());
            }
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(black_box(l)).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
