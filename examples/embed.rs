//! Embedding the operator: an `AsyncFunction` over a partitioned source in about 20 lines.
//!
//! `cargo run --release --example embed`
use ringwait::runtime::Pipeline;
use ringwait::sink::CountingSink;
use ringwait::source::GeneratorSource;
use ringwait::{AsyncFunction, OperatorConfig, OrderMode, ResultFuture};
use std::time::Duration;

struct Square;
impl AsyncFunction for Square {
    type In = u64;
    type Out = u64;
    fn invoke(&self, x: &u64, result: ResultFuture<u64>) {
        let _ = result.complete_one(x * x); // or complete later, from a callback or a task
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = OperatorConfig::builder()
        .mode(OrderMode::Ordered)
        .capacity(1000)
        .timeout(Duration::from_millis(100))
        .build()?;
    let report = Pipeline::builder()
        .partitions(2)
        .operator(config)
        .build()?
        .run(
            |p| {
                Ok(GeneratorSource::new(
                    p.index,
                    p.partitions,
                    1_000_000,
                    |i| i,
                ))
            },
            |_p| async { Ok(Square) },
            |_p| Ok(CountingSink::default()),
        )?;
    println!(
        "{} records, {:.0} records/s, p99 {:.1} µs",
        report.merged.records_in,
        report.records_per_sec(),
        report.merged.latency_us(99.0)
    );
    Ok(())
}
