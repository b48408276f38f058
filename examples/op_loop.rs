//! Drives the bare operator with an immediately completing function (for profiling:
//! `valgrind --tool=callgrind target/release/examples/op_loop`).
use ringwait::function::from_fn;
use ringwait::time::Nanos;
use ringwait::{AsyncWaitOperator, OperatorConfig, ResultFuture, StreamElement};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let config = OperatorConfig::builder().capacity(1000).build().unwrap();
    let f = from_fn(|x: &u64, r: ResultFuture<u64>| {
        let _ = r.complete_one(*x);
    });
    let mut op = AsyncWaitOperator::new(config, f, 0).unwrap();
    let mut sum = 0u64;
    let mut i = 0;
    while i < n {
        let now = Nanos(i);
        for _ in 0..128 {
            op.process(StreamElement::record(i), now).unwrap();
            i += 1;
        }
        while let Some(ringwait::Emitted::Record { value, .. }) = op.pop_output(Nanos(i)) {
            sum = sum.wrapping_add(value);
        }
    }
    println!("{sum}");
}
