//! Per-record cost of the operator alone (no executor, no I/O): what the SPEC's "≤ 50 ns of
//! operator overhead per record" is checked against.
//!
//! `cargo bench --bench operator`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringwait::function::from_fn;
use ringwait::time::Nanos;
use ringwait::{
    AsyncFunction, AsyncWaitOperator, OperatorConfig, OrderMode, ResultFuture, StreamElement,
};

const BATCH: u64 = 128;

type Held = std::rc::Rc<std::cell::RefCell<Vec<(u64, ResultFuture<u64>)>>>;

/// Completes every record inside its call.
struct Immediate;

impl AsyncFunction for Immediate {
    type In = u64;
    type Out = u64;

    #[inline]
    fn invoke(&self, x: &u64, r: ResultFuture<u64>) {
        let _ = r.complete_one(*x);
    }
}

fn immediate_operator(mode: OrderMode) -> AsyncWaitOperator<Immediate> {
    let config = OperatorConfig::builder()
        .mode(mode)
        .capacity(1000)
        .build()
        .unwrap();
    match mode {
        OrderMode::KeyOrdered => {
            AsyncWaitOperator::with_key_fn(config, Immediate, Box::new(|x: &u64| x % 64), 0)
                .unwrap()
        }
        _ => AsyncWaitOperator::new(config, Immediate, 0).unwrap(),
    }
}

/// Benchmark group `name`: for each mode, `batch` takes records `i..i + BATCH` into an
/// operator with an immediate function and hands out their outputs.
fn immediate_group(
    c: &mut Criterion,
    name: &str,
    batch: impl Fn(&mut AsyncWaitOperator<Immediate>, &mut u64),
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH));
    for mode in [
        OrderMode::Ordered,
        OrderMode::Unordered,
        OrderMode::KeyOrdered,
    ] {
        let mut op = immediate_operator(mode);
        let mut i = 0u64;
        g.bench_function(BenchmarkId::from_parameter(mode), |b| {
            b.iter(|| batch(&mut op, &mut i))
        });
    }
    g.finish();
}

/// Process a batch, then emit it: the driver's steady state with an immediate function.
fn per_record(c: &mut Criterion) {
    immediate_group(c, "per_record_immediate", |op, i| {
        let now = Nanos(*i);
        for _ in 0..BATCH {
            op.process(StreamElement::record(*i), now).unwrap();
            *i += 1;
        }
        while let Some(out) = op.pop_output(Nanos(*i)) {
            black_box(out);
        }
    });
}

/// The same batches through `process_express`: each record leaves from the call itself
/// (key-ordered too, since the operator is empty between records).
fn per_record_express(c: &mut Criterion) {
    immediate_group(c, "per_record_express", |op, i| {
        let now = Nanos(*i);
        for _ in 0..BATCH {
            black_box(op.process_express(StreamElement::record(*i), now).unwrap());
            *i += 1;
        }
        op.settle(Nanos(*i));
    });
}

/// Keep 1000 records in flight and complete them in reverse batches: the out-of-order path.
fn per_record_deferred(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_record_deferred");
    g.throughput(Throughput::Elements(BATCH));
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let config = OperatorConfig::builder()
            .mode(mode)
            .capacity(1000)
            .build()
            .unwrap();
        let held: Held = std::rc::Rc::default();
        let h = held.clone();
        let f = from_fn(move |x: &u64, r: ResultFuture<u64>| h.borrow_mut().push((*x, r)));
        let mut op = AsyncWaitOperator::new(config, f, 0).unwrap();
        let mut i = 0u64;
        held.borrow_mut().reserve(1000);
        g.bench_function(BenchmarkId::from_parameter(mode), |b| {
            b.iter(|| {
                let now = Nanos(i);
                while op.has_capacity() {
                    op.process(StreamElement::record(i), now).unwrap();
                    i += 1;
                }
                // complete the oldest BATCH in reverse order
                let batch: Vec<_> = held.borrow_mut().drain(..BATCH as usize).collect();
                for (x, r) in batch.into_iter().rev() {
                    let _ = r.complete_one(x);
                }
                op.advance(now).unwrap();
                while let Some(out) = op.pop_output(now) {
                    black_box(out);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, per_record, per_record_express, per_record_deferred);
criterion_main!(benches);
