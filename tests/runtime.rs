//! The glommio runtime end to end: draining, shutdown, backpressure, failure propagation.

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringwait::function::from_fn;
use ringwait::queue;
use ringwait::runtime::{async_fn, DelayLine, Pipeline, PipelineError};
use ringwait::sink::{CollectSink, CountingSink, QueueSink, Sink};
use ringwait::source::{BoxError, GeneratorSource, IterSource, QueueSource, Source, SourceEvent};
use ringwait::{
    AsyncError, AsyncFunction, Emitted, ErrorPolicy, OperatorConfig, OrderMode, RecordError,
    ResultFuture, StreamElement,
};
use support::{long_timeout_config as cfg, Delayed};

fn pipeline(partitions: usize, config: OperatorConfig) -> Pipeline {
    Pipeline::builder()
        .partitions(partitions)
        .operator(config)
        .build()
        .unwrap()
}

#[test]
fn end_of_input_drains_every_record_in_flight_in_order() {
    for partitions in [1, 2] {
        let report = pipeline(partitions, cfg(OrderMode::Ordered, 64))
            .run(
                |p| Ok(GeneratorSource::new(p.index, p.partitions, 5_000, |i| i)),
                |_p| async {
                    Ok(Delayed(DelayLine::start(
                        Duration::from_micros(300),
                        Duration::ZERO,
                        64,
                    )))
                },
                |_p| Ok(CollectSink::default()),
            )
            .unwrap();
        for (p, part) in report.partitions.iter().enumerate() {
            let values: Vec<u64> = part
                .output
                .iter()
                .map(|e| match e {
                    Emitted::Record { value, .. } => *value,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            let expected: Vec<u64> = (p as u64..5_000).step_by(partitions).collect();
            assert_eq!(values, expected, "partition {p} lost or reordered records");
        }
        assert_eq!(report.merged.records_in, 5_000);
        assert_eq!(report.merged.outputs, 5_000);
    }
}

#[test]
fn a_full_queue_at_end_of_input_is_drained_before_finishing() {
    // capacity 1 and a slow function: at end of input the operator is full.
    let report = pipeline(1, cfg(OrderMode::Unordered, 1))
        .run(
            |_p| Ok(IterSource::new((0..20u64).map(StreamElement::record))),
            |_p| async {
                Ok(Delayed(DelayLine::start(
                    Duration::from_millis(1),
                    Duration::ZERO,
                    1,
                )))
            },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap();
    assert_eq!(report.partitions[0].output.records, 20);
    assert_eq!(report.merged.occupancy, 0);
}

#[test]
fn a_function_that_never_completes_times_out_and_run_returns() {
    let config = OperatorConfig::builder()
        .capacity(4)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = pipeline(1, config)
        .run(
            |_p| Ok(IterSource::new((0..10u64).map(StreamElement::record))),
            |_p| async { Ok(from_fn(|_: &u64, _r: ResultFuture<u64>| {})) },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap_err();
    match err {
        PipelineError::Operator { error, .. } => {
            assert!(
                error.to_string().contains("timed out after 50ms"),
                "{error}"
            );
            assert_eq!(error.record().unwrap().sequence, 0);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
}

#[test]
fn never_completing_records_with_a_fallback_finish_the_run() {
    struct Never;
    impl AsyncFunction for Never {
        type In = u64;
        type Out = u64;
        fn invoke(&self, _x: &u64, _r: ResultFuture<u64>) {}
        fn timeout(&self, x: &u64) -> ringwait::TimeoutOutcome<u64> {
            ringwait::TimeoutOutcome::Complete(ringwait::Outputs::One(x + 1000))
        }
    }
    let config = OperatorConfig::builder()
        .capacity(8)
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let report = pipeline(1, config)
        .run(
            |_p| Ok(IterSource::new((0..16u64).map(StreamElement::record))),
            |_p| async { Ok(Never) },
            |_p| Ok(CollectSink::default()),
        )
        .unwrap();
    let values: Vec<u64> = report.partitions[0]
        .output
        .iter()
        .filter_map(|e| match e {
            Emitted::Record { value, .. } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(values, (1000..1016).collect::<Vec<_>>());
    assert_eq!(report.merged.timeouts, 16);
}

/// A source that never ends: only an abort can stop its partition.
struct Endless;
impl Source for Endless {
    type Item = u64;
    fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
        Ok(SourceEvent::Idle)
    }
    fn position(&self) -> u64 {
        0
    }
}

enum Either<A, B> {
    A(A),
    B(B),
}
impl<A: Source<Item = u64>, B: Source<Item = u64>> Source for Either<A, B> {
    type Item = u64;
    fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
        match self {
            Either::A(a) => a.next(),
            Either::B(b) => b.next(),
        }
    }
    fn position(&self) -> u64 {
        0
    }
}

#[test]
fn a_failing_partition_stops_the_others_and_its_error_is_reported() {
    let started = Instant::now();
    let err = pipeline(2, cfg(OrderMode::Ordered, 4))
        .run(
            |p| {
                Ok(if p.index == 0 {
                    Either::A(Endless)
                } else {
                    Either::B(IterSource::new((0..3u64).map(StreamElement::record)))
                })
            },
            |_p| async {
                Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                    let _ = if *x == 2 {
                        r.fail(AsyncError::msg("store refused record 2"))
                    } else {
                        r.complete_one(*x)
                    };
                }))
            },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap_err();
    match &err {
        PipelineError::Operator { partition, error } => {
            assert_eq!(*partition, 1);
            assert!(error.to_string().contains("store refused record 2"));
        }
        other => panic!("expected the operator error of partition 1, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_panicking_source_is_reported_not_hung() {
    struct Boom;
    impl Source for Boom {
        type Item = u64;
        fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
            panic!("source exploded")
        }
        fn position(&self) -> u64 {
            0
        }
    }
    let err = pipeline(1, cfg(OrderMode::Ordered, 4))
        .run(
            |_p| Ok(Boom),
            |_p| async {
                Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                    let _ = r.complete_one(*x);
                }))
            },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap_err();
    assert!(
        matches!(&err, PipelineError::Panicked { message, .. } if message.contains("source exploded")),
        "{err}"
    );
}

#[test]
fn a_panic_inside_an_async_fn_fails_only_its_record() {
    let config = OperatorConfig::builder()
        .capacity(8)
        .on_error(ErrorPolicy::SideOutput)
        .build()
        .unwrap();
    let report = pipeline(1, config)
        .run(
            |_p| Ok(IterSource::new((0..5u64).map(StreamElement::record))),
            |_p| async {
                Ok(async_fn(|x: u64| async move {
                    if x == 3 {
                        panic!("bad record {x}");
                    }
                    Ok::<_, AsyncError>(x)
                }))
            },
            |_p| Ok(CollectSink::default()),
        )
        .unwrap();
    let out = &report.partitions[0].output;
    assert_eq!(out.len(), 5);
    match &out[3] {
        Emitted::Failed {
            input: 3,
            error: RecordError::Panicked { message },
            ..
        } => assert_eq!(message, "bad record 3"),
        other => panic!("expected record 3 to fail with a panic, got {other:?}"),
    }
    assert_eq!(report.merged.panics, 1);
}

/// Counters shared by the source and the sink of one partition (both live on its core).
#[derive(Default)]
struct Flow {
    pulled: Cell<u64>,
    accepted: Cell<u64>,
    max_lead: Cell<u64>,
    checks: Cell<u64>,
}

thread_local! {
    static FLOW: Rc<Flow> = Rc::new(Flow::default());
}

/// A sink slower than the operator: each time it says "no room" it grants room for one more
/// item later (`checks` counts the grants).
struct Throttled(Rc<Flow>);
impl Sink<u64, u64> for Throttled {
    type Output = (u64, u64);
    fn accept(&mut self, _item: Emitted<u64, u64>) {
        self.0.accepted.set(self.0.accepted.get() + 1);
    }
    fn has_room(&self) -> bool {
        let f = &self.0;
        if f.accepted.get() < f.checks.get() {
            return true;
        }
        f.checks.set(f.checks.get() + 1);
        false
    }
    fn finish(&mut self) -> Result<(u64, u64), BoxError> {
        Ok((self.0.accepted.get(), self.0.max_lead.get()))
    }
}

/// A source that records how far ahead of the sink it has been pulled.
struct Counted(Rc<Flow>);
impl Source for Counted {
    type Item = u64;
    fn next(&mut self) -> Result<SourceEvent<u64>, BoxError> {
        let f = &self.0;
        if f.pulled.get() == 5_000 {
            return Ok(SourceEvent::End);
        }
        f.pulled.set(f.pulled.get() + 1);
        f.max_lead
            .set(f.max_lead.get().max(f.pulled.get() - f.accepted.get()));
        Ok(SourceEvent::Element(StreamElement::record(f.pulled.get())))
    }
    fn position(&self) -> u64 {
        self.0.pulled.get()
    }
}

#[test]
fn backpressure_the_source_is_never_pulled_more_than_capacity_ahead_of_the_sink() {
    let capacity = 32;
    let report = pipeline(1, cfg(OrderMode::Unordered, capacity))
        .run(
            |_p| Ok(Counted(FLOW.with(|f| f.clone()))),
            |_p| async {
                Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                    let _ = r.complete_one(*x);
                }))
            },
            |_p| Ok(Throttled(FLOW.with(|f| f.clone()))),
        )
        .unwrap();
    let (accepted, max_lead) = report.partitions[0].output;
    assert_eq!(accepted, 5_000);
    assert_eq!(
        max_lead, capacity as u64,
        "the source ran exactly capacity records ahead of a slow sink, never more"
    );
}

#[test]
fn records_cross_cores_through_queues_without_loss() {
    const N: u64 = 50_000;
    let (in_tx, in_rx) = queue::bounded(256);
    let (out_tx, out_rx) = queue::bounded(256);
    let in_rx = std::sync::Mutex::new(Some(in_rx));
    let out_tx = std::sync::Mutex::new(Some(out_tx));
    let feeder = std::thread::spawn(move || {
        for i in 0..N {
            in_tx.push_blocking(StreamElement::record(i)).unwrap();
        }
    });
    let collector = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(item) = out_rx.pop_blocking() {
            if let Emitted::Record { value, .. } = item {
                got.push(value);
            }
        }
        got
    });
    pipeline(1, cfg(OrderMode::Ordered, 100))
        .run(
            move |_p| Ok(QueueSource::new(in_rx.lock().unwrap().take().unwrap())),
            |_p| async {
                Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                    let _ = r.complete_one(x * 3);
                }))
            },
            move |_p| Ok(QueueSink::new(out_tx.lock().unwrap().take().unwrap())),
        )
        .unwrap();
    feeder.join().unwrap();
    let got = collector.join().unwrap();
    assert_eq!(got, (0..N).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn key_ordered_pipeline_keeps_per_key_order() {
    // Values with larger delay for even keys: keys interleave but each key stays ordered.
    let report = pipeline(1, cfg(OrderMode::KeyOrdered, 64))
        .run_keyed(
            |_p| Ok(IterSource::new((0..2_000u64).map(StreamElement::record))),
            |_p| async {
                Ok(async_fn(|x: u64| async move {
                    let d = if x % 2 == 0 { 300 } else { 20 } + (x * 7919 % 200);
                    glommio::timer::sleep(Duration::from_micros(d)).await;
                    Ok::<_, AsyncError>(x)
                }))
            },
            |_p| Ok(CollectSink::default()),
            Arc::new(|x: &u64| x % 4),
        )
        .unwrap();
    let mut last = [None::<u64>; 4];
    let mut reordered_across_keys = false;
    let mut prev = None;
    for e in &report.partitions[0].output {
        if let Emitted::Record { value, .. } = e {
            let k = (*value % 4) as usize;
            if let Some(l) = last[k] {
                assert!(*value > l, "key {k}: {value} after {l}");
            }
            last[k] = Some(*value);
            if prev.is_some_and(|p| p > *value) {
                reordered_across_keys = true;
            }
            prev = Some(*value);
        }
    }
    assert_eq!(report.merged.outputs, 2_000);
    assert!(
        reordered_across_keys,
        "different keys did not wait for each other"
    );
}

#[test]
fn invalid_pipeline_settings_are_refused_when_built() {
    assert!(Pipeline::builder().partitions(0).build().is_err());
    assert!(Pipeline::builder().partitions(100_000).build().is_err());
    assert!(Pipeline::builder().io_memory(1024).build().is_err());
    let keyed = pipeline(1, cfg(OrderMode::KeyOrdered, 4));
    let err = keyed
        .run(
            |_p| Ok(IterSource::new((0..1u64).map(StreamElement::record))),
            |_p| async {
                Ok(from_fn(|x: &u64, r: ResultFuture<u64>| {
                    let _ = r.complete_one(*x);
                }))
            },
            |_p| Ok(CountingSink::default()),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("key-ordered mode needs a key"),
        "{err}"
    );
}

/// Completes every third record inside its call (the express lane) and the others later from
/// a delay line, so express outputs and queued ones interleave.
struct Mixed(DelayLine<u64>);
impl AsyncFunction for Mixed {
    type In = u64;
    type Out = u64;
    fn invoke(&self, x: &u64, r: ResultFuture<u64>) {
        if x % 3 == 0 {
            let _ = r.complete_one(*x);
        } else {
            self.0.push(r, *x);
        }
    }
}

/// A sink that says "no room" before every item it takes (each refusal grants room for one
/// more item), collecting what it gets.
#[derive(Default)]
struct Stingy {
    granted: Cell<usize>,
    items: Vec<Emitted<u64, u64>>,
}
impl Sink<u64, u64> for Stingy {
    type Output = Vec<Emitted<u64, u64>>;
    fn accept(&mut self, item: Emitted<u64, u64>) {
        assert!(self.items.len() < self.granted.get(), "accept without room");
        self.items.push(item);
    }
    fn has_room(&self) -> bool {
        if self.items.len() < self.granted.get() {
            return true;
        }
        self.granted.set(self.granted.get() + 1);
        false
    }
    fn finish(&mut self) -> Result<Self::Output, BoxError> {
        Ok(std::mem::take(&mut self.items))
    }
}

#[test]
fn records_completed_inside_their_call_keep_the_order_rules_through_a_slow_sink() {
    const N: u64 = 3_000;
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        // A watermark after every 100th record (value = that record's index).
        let elements = (0..N).flat_map(|i| {
            let wm = (i % 100 == 99).then_some(StreamElement::Watermark(i as i64));
            std::iter::once(StreamElement::record(i)).chain(wm)
        });
        let report = pipeline(1, cfg(mode, 16))
            .run(
                move |_p| Ok(IterSource::new(elements.clone())),
                |_p| async {
                    Ok(Mixed(DelayLine::start(
                        Duration::from_micros(200),
                        Duration::ZERO,
                        16,
                    )))
                },
                |_p| Ok(Stingy::default()),
            )
            .unwrap();
        let out = &report.partitions[0].output;
        let mut seen = Vec::new();
        let mut last_wm = -1i64;
        for e in out {
            match e {
                Emitted::Record { value, .. } => {
                    assert!(
                        *value as i64 > last_wm,
                        "{mode}: record {value} after watermark {last_wm}"
                    );
                    seen.push(*value);
                }
                Emitted::Watermark(w) => {
                    assert_eq!(
                        seen.len() as i64,
                        w + 1,
                        "{mode}: watermark {w} passed before every earlier record"
                    );
                    last_wm = *w;
                }
                Emitted::Failed { .. } => panic!("{mode}: unexpected failure {e:?}"),
            }
        }
        if mode == OrderMode::Ordered {
            assert_eq!(seen, (0..N).collect::<Vec<_>>(), "ordered output");
        } else {
            seen.sort_unstable();
            assert_eq!(seen, (0..N).collect::<Vec<_>>(), "each record exactly once");
        }
        assert_eq!(report.merged.outputs, N);
    }
}
