//! The operator contract (SPEC S1–S9, S13, S14), one scenario per test, driven with explicit
//! time. Several are ports of Flink's `AsyncWaitOperatorTest` scenarios.

mod support;

use std::time::Duration;

use ringwait::function::from_fn;
use ringwait::time::Nanos;
use ringwait::{
    AsyncError, AsyncWaitOperator, Completion, ConfigError, ErrorPolicy, OperatorConfig,
    OperatorError, OrderMode, Outputs, ProcessError, RecordError, RetryStrategy, StreamElement,
};
use support::*;

fn config(mode: OrderMode, capacity: usize) -> OperatorConfig {
    OperatorConfig::builder()
        .mode(mode)
        .capacity(capacity)
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
}

fn keyed(
    config: OperatorConfig,
    f: Manual,
) -> (
    AsyncWaitOperator<Manual>,
    std::rc::Rc<std::cell::RefCell<Vec<Request>>>,
) {
    let requests = f.requests.clone();
    let op =
        AsyncWaitOperator::with_key_fn(config, f, Box::new(|x: &i64| (*x % 10) as u64), 0).unwrap();
    (op, requests)
}

// ---------------------------------------------------------------- event time (Flink port)

/// Flink `testEventTimeOrdered`: records 1@1, 2@2, watermark 2, 3@3, completed in reverse.
#[test]
fn event_time_ordered_emits_records_and_watermarks_in_input_order() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 4));
    op.process(at(1, 1), ms(0)).unwrap();
    op.process(at(2, 2), ms(0)).unwrap();
    op.process(StreamElement::Watermark(2), ms(0)).unwrap();
    op.process(at(3, 3), ms(0)).unwrap();
    for i in [3, 2, 1] {
        double(&reqs, i);
        op.advance(ms(1)).unwrap();
        if i != 1 {
            assert_eq!(drain(&mut op, ms(1)), vec![], "nothing passes record 1");
        }
    }
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![
            Out::Rec(2, Some(1)),
            Out::Rec(4, Some(2)),
            Out::Wm(2),
            Out::Rec(6, Some(3)),
        ]
    );
    assert!(op.is_empty());
}

/// Flink `testWaterMarkUnordered`: the watermark stays at index 2, record 3 after it.
#[test]
fn event_time_unordered_keeps_watermark_as_a_boundary() {
    let (mut op, reqs) = operator(config(OrderMode::Unordered, 4));
    op.process(at(1, 1), ms(0)).unwrap();
    op.process(at(2, 2), ms(0)).unwrap();
    op.process(StreamElement::Watermark(2), ms(0)).unwrap();
    op.process(at(3, 3), ms(0)).unwrap();
    double(&reqs, 3);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![],
        "record 3 must not overtake the watermark"
    );
    double(&reqs, 2);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![Out::Rec(4, Some(2))]);
    double(&reqs, 1);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![Out::Rec(2, Some(1)), Out::Wm(2), Out::Rec(6, Some(3))]
    );
}

#[test]
fn unordered_watermark_waits_for_every_earlier_record_and_records_after_it_wait_for_it() {
    let (mut op, reqs) = operator(config(OrderMode::Unordered, 8));
    for e in [
        at(1, 1),
        StreamElement::Watermark(1),
        at(2, 2),
        at(3, 3),
        StreamElement::Watermark(3),
        at(4, 4),
    ] {
        op.process(e, ms(0)).unwrap();
    }
    for i in [4, 3, 2] {
        double(&reqs, i);
    }
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![]);
    double(&reqs, 1);
    op.advance(ms(1)).unwrap();
    let out = drain(&mut op, ms(1));
    assert_eq!(out[0], Out::Rec(2, Some(1)));
    assert_eq!(out[1], Out::Wm(1));
    let mut middle = out[2..4].to_vec();
    middle.sort();
    assert_eq!(middle, vec![Out::Rec(4, Some(2)), Out::Rec(6, Some(3))]);
    assert_eq!(out[4..], [Out::Wm(3), Out::Rec(8, Some(4))]);
}

#[test]
fn consecutive_watermarks_pass_through_in_order_in_every_mode() {
    for mode in [OrderMode::Ordered, OrderMode::Unordered] {
        let (mut op, _reqs) = operator(config(mode, 4));
        for w in [1, 2, 3] {
            op.process(StreamElement::Watermark(w), ms(0)).unwrap();
        }
        assert_eq!(
            drain(&mut op, ms(0)),
            vec![Out::Wm(1), Out::Wm(2), Out::Wm(3)]
        );
    }
}

#[test]
fn watermarks_take_capacity() {
    let (mut op, _reqs) = operator(config(OrderMode::Ordered, 2));
    op.process(rec(1), ms(0)).unwrap();
    op.process(StreamElement::Watermark(5), ms(0)).unwrap();
    assert!(!op.has_capacity());
    assert!(matches!(
        op.process(StreamElement::Watermark(6), ms(0)),
        Err(ProcessError::Full(StreamElement::Watermark(6)))
    ));
}

#[test]
fn watermark_regression_is_refused() {
    let (mut op, _reqs) = operator(config(OrderMode::Ordered, 4));
    op.process(StreamElement::Watermark(5), ms(0)).unwrap();
    match op.process(StreamElement::Watermark(4), ms(0)) {
        Err(ProcessError::Failed(OperatorError::WatermarkRegression {
            previous: 5,
            got: 4,
        })) => {}
        other => panic!("expected a regression error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- processing time (Flink port)

/// Flink `testProcessingTimeOrdered`: 8 records, capacity 6, out-of-order completions.
#[test]
fn processing_time_ordered_restores_input_order_from_shuffled_completions() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 6));
    let mut out = Vec::new();
    let mut next = 1;
    let order = [6, 2, 5, 1, 4, 3, 8, 7];
    let mut completed = 0;
    while out.len() < 8 {
        while next <= 8 && op.has_capacity() {
            op.process(at(next, next), ms(0)).unwrap();
            next += 1;
        }
        // complete the next request in the shuffled order that has been invoked
        let target = order[completed];
        if reqs.borrow().iter().any(|r| r.input == target) {
            double(&reqs, target);
            completed += 1;
        }
        op.advance(ms(1)).unwrap();
        out.extend(drain(&mut op, ms(1)));
    }
    let expected: Vec<Out> = (1..=8).map(|i| Out::Rec(i * 2, Some(i))).collect();
    assert_eq!(out, expected);
}

#[test]
fn processing_time_unordered_emits_in_completion_order() {
    let (mut op, reqs) = operator(config(OrderMode::Unordered, 8));
    for i in 1..=5 {
        op.process(rec(i), ms(0)).unwrap();
    }
    let mut out = Vec::new();
    for i in [4, 1, 5, 3, 2] {
        double(&reqs, i);
        op.advance(ms(1)).unwrap();
        out.extend(drain(&mut op, ms(1)));
    }
    assert_eq!(out, [4, 1, 5, 3, 2].map(|i| Out::Rec(i * 2, None)).to_vec());
}

#[test]
fn synchronous_completion_inside_invoke_is_emitted_at_once() {
    let cfg = config(OrderMode::Ordered, 1);
    let f = from_fn(|x: &u32, r| {
        let _ = r.complete_one(x + 1);
    });
    let mut op = AsyncWaitOperator::new(cfg, f, 0).unwrap();
    for i in 0..10u32 {
        op.process(StreamElement::record(i), Nanos(i as u64))
            .unwrap();
        match op.pop_output(Nanos(i as u64)) {
            Some(ringwait::Emitted::Record {
                value, sequence, ..
            }) => {
                assert_eq!(value, i + 1);
                assert_eq!(sequence, i as u64);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(op.metrics(Nanos(10)).records_done, 10);
}

#[test]
fn several_outputs_of_one_record_leave_together_in_order() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 4));
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(0)).unwrap();
    let _ = reqs.borrow()[1].handle.complete(Outputs::One(20));
    let _ = reqs.borrow()[0]
        .handle
        .complete(Outputs::Many(vec![10, 11, 12]));
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![
            Out::Rec(10, None),
            Out::Rec(11, None),
            Out::Rec(12, None),
            Out::Rec(20, None)
        ]
    );
}

#[test]
fn an_empty_completion_emits_nothing_but_frees_the_slot() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 1));
    op.process(rec(1), ms(0)).unwrap();
    let _ = reqs.borrow()[0].handle.complete_empty();
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![]);
    assert!(op.is_empty() && op.has_capacity());
}

// ---------------------------------------------------------------- complete-once (S2)

#[test]
fn repeated_completion_is_ignored_and_counted() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 2));
    op.process(rec(1), ms(0)).unwrap();
    let h = reqs.borrow()[0].handle.clone();
    assert_eq!(h.complete_one(1), Completion::Accepted);
    assert_eq!(h.complete_one(2), Completion::Duplicate);
    assert_eq!(h.fail(AsyncError::msg("x")), Completion::Duplicate);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![Out::Rec(1, None)]);
    assert_eq!(
        h.complete_one(3),
        Completion::Late,
        "after emission the handle is stale"
    );
    let m = op.metrics(ms(1));
    assert_eq!((m.duplicates, m.late, m.outputs), (2, 1, 1));
}

#[test]
fn a_stale_handle_never_lands_in_the_record_that_reuses_its_slot() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 1));
    op.process(rec(1), ms(0)).unwrap();
    let stale = reqs.borrow()[0].handle.clone();
    let _ = stale.complete_one(100);
    op.advance(ms(0)).unwrap();
    assert_eq!(drain(&mut op, ms(0)), vec![Out::Rec(100, None)]);
    op.process(rec(2), ms(0)).unwrap(); // reuses the only slot
    assert_eq!(stale.complete_one(999), Completion::Late);
    op.advance(ms(0)).unwrap();
    assert_eq!(drain(&mut op, ms(0)), vec![]);
    double(&reqs, 2);
    op.advance(ms(0)).unwrap();
    assert_eq!(drain(&mut op, ms(0)), vec![Out::Rec(4, None)]);
}

#[test]
fn request_ids_are_operator_partition_sequence() {
    let cfg = OperatorConfig::builder()
        .operator_id(7)
        .capacity(4)
        .build()
        .unwrap();
    let f = Manual::new();
    let reqs = f.requests.clone();
    let mut op = AsyncWaitOperator::new(cfg, f, 3).unwrap();
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(0)).unwrap();
    let ids: Vec<String> = reqs
        .borrow()
        .iter()
        .map(|r| r.handle.id().to_string())
        .collect();
    assert_eq!(ids, vec!["7/3/0", "7/3/1"]);
}

// ---------------------------------------------------------------- capacity (S3)

#[test]
fn capacity_one_holds_exactly_one_record_and_hands_the_next_back() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 1));
    op.process(rec(1), ms(0)).unwrap();
    assert!(!op.has_capacity());
    match op.process(rec(2), ms(0)) {
        Err(ProcessError::Full(StreamElement::Record { value: 2, .. })) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(reqs.borrow().len(), 1, "the refused record was not invoked");
    double(&reqs, 1);
    op.advance(ms(1)).unwrap();
    assert!(
        !op.has_capacity(),
        "a done record holds its slot until it leaves"
    );
    assert_eq!(drain(&mut op, ms(1)), vec![Out::Rec(2, None)]);
    assert!(op.has_capacity());
}

#[test]
fn done_records_waiting_behind_the_head_hold_capacity() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 3));
    for i in 1..=3 {
        op.process(rec(i), ms(0)).unwrap();
    }
    double(&reqs, 2);
    double(&reqs, 3);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![]);
    assert!(!op.has_capacity());
    assert_eq!((op.in_flight(), op.occupancy()), (1, 3));
}

// ---------------------------------------------------------------- timeouts (S4)

#[test]
fn timeout_fails_the_pipeline_with_a_typed_error_naming_the_record() {
    let (mut op, _reqs) = operator(config(OrderMode::Ordered, 2));
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(10)).unwrap();
    assert_eq!(op.next_deadline(), Some(ms(100)));
    op.advance(ms(99)).unwrap();
    match op.advance(ms(100)) {
        Err(OperatorError::RecordFailed {
            id,
            error: RecordError::TimedOut { after },
        }) => {
            assert_eq!(id.sequence, 0);
            assert_eq!(after, Duration::from_millis(100));
        }
        other => panic!("expected a timeout failure, got {other:?}"),
    }
}

#[test]
fn timeout_handler_with_fallback_completes_the_record() {
    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Fallback(-1);
    let (mut op, reqs) = operator_with(config(OrderMode::Ordered, 2), f);
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(50)).unwrap();
    double(&reqs, 2);
    op.advance(ms(100)).unwrap();
    assert_eq!(
        drain(&mut op, ms(100)),
        vec![Out::Rec(-1, None), Out::Rec(4, None)]
    );
    assert_eq!(op.metrics(ms(100)).timeouts, 1);
}

#[test]
fn timeout_handler_may_emit_nothing_or_an_error() {
    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Nothing;
    let (mut op, _reqs) = operator_with(config(OrderMode::Ordered, 2), f);
    op.process(rec(1), ms(0)).unwrap();
    op.advance(ms(100)).unwrap();
    assert_eq!(drain(&mut op, ms(100)), vec![]);
    assert!(op.is_empty());

    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Error;
    let cfg = OperatorConfig::builder()
        .capacity(2)
        .timeout(Duration::from_millis(100))
        .on_error(ErrorPolicy::SideOutput)
        .build()
        .unwrap();
    let (mut op, _reqs) = operator_with(cfg, f);
    op.process(rec(1), ms(0)).unwrap();
    op.advance(ms(100)).unwrap();
    assert_eq!(
        drain(&mut op, ms(100)),
        vec![Out::Failed(1, "gave up on 1".into())]
    );
}

#[test]
fn completion_arriving_before_the_timeout_is_noticed_wins_the_race() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 2));
    op.process(rec(1), ms(0)).unwrap();
    // The completion lands at 150 ms, after the deadline, but before the operator looked.
    double(&reqs, 1);
    op.advance(ms(150)).unwrap();
    assert_eq!(drain(&mut op, ms(150)), vec![Out::Rec(2, None)]);
    assert_eq!(op.metrics(ms(150)).timeouts, 0);
}

#[test]
fn completion_after_the_timeout_fired_is_late_and_ignored() {
    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Fallback(-1);
    let (mut op, reqs) = operator_with(config(OrderMode::Ordered, 2), f);
    op.process(rec(1), ms(0)).unwrap();
    op.advance(ms(100)).unwrap();
    assert_eq!(reqs.borrow()[0].handle.complete_one(2), Completion::Late);
    op.advance(ms(101)).unwrap();
    assert_eq!(drain(&mut op, ms(101)), vec![Out::Rec(-1, None)]);
    assert_eq!(op.metrics(ms(101)).late, 1);
}

#[test]
fn no_timer_is_left_after_every_record_completed() {
    let (mut op, reqs) = operator(config(OrderMode::Unordered, 4));
    for i in 1..=4 {
        op.process(rec(i), ms(0)).unwrap();
    }
    assert!(op.next_deadline().is_some());
    for i in 1..=4 {
        double(&reqs, i);
    }
    op.advance(ms(1)).unwrap();
    assert_eq!(
        op.next_deadline(),
        None,
        "completed records keep no timeout"
    );
    drain(&mut op, ms(1));
    assert!(op.is_empty());
}

#[test]
fn a_function_that_never_completes_is_timed_out() {
    let f = from_fn(|_: &u8, _r: ringwait::ResultFuture<u8>| {}); // drops the handle
    let mut op = AsyncWaitOperator::new(config(OrderMode::Ordered, 2), f, 0).unwrap();
    op.process(StreamElement::record(1), ms(0)).unwrap();
    assert!(op.advance(ms(99)).is_ok());
    assert!(matches!(
        op.advance(ms(100)),
        Err(OperatorError::RecordFailed {
            error: RecordError::TimedOut { .. },
            ..
        })
    ));
}

#[test]
fn without_a_timeout_nothing_ever_expires() {
    let cfg = OperatorConfig::builder().capacity(2).build().unwrap();
    let (mut op, _reqs) = operator(cfg);
    op.process(rec(1), ms(0)).unwrap();
    assert_eq!(op.next_deadline(), None);
    op.advance(Nanos(u64::MAX - 1)).unwrap();
    assert_eq!(op.in_flight(), 1);
}

// ---------------------------------------------------------------- errors (S9) and panics (S13)

#[test]
fn error_on_a_non_head_record_fails_promptly_in_ordered_mode() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 4));
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(0)).unwrap();
    let _ = reqs.borrow()[1]
        .handle
        .fail(AsyncError::msg("store said no"));
    match op.advance(ms(1)) {
        Err(OperatorError::RecordFailed { id, error }) => {
            assert_eq!(id.sequence, 1, "the failing record is named, not the head");
            assert_eq!(error.to_string(), "store said no");
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

#[test]
fn skip_policy_drops_failed_records_and_keeps_order() {
    let cfg = OperatorConfig::builder()
        .capacity(4)
        .on_error(ErrorPolicy::Skip)
        .build()
        .unwrap();
    let (mut op, reqs) = operator(cfg);
    for i in 1..=3 {
        op.process(rec(i), ms(0)).unwrap();
    }
    double(&reqs, 3);
    let _ = reqs.borrow()[1].handle.fail(AsyncError::msg("bad"));
    double(&reqs, 1);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![Out::Rec(2, None), Out::Rec(6, None)]
    );
    let m = op.metrics(ms(1));
    assert_eq!((m.errors, m.skipped), (1, 1));
}

#[test]
fn side_output_policy_emits_the_failed_input_in_its_place() {
    let cfg = OperatorConfig::builder()
        .capacity(4)
        .on_error(ErrorPolicy::SideOutput)
        .build()
        .unwrap();
    let (mut op, reqs) = operator(cfg);
    for i in 1..=3 {
        op.process(rec(i), ms(0)).unwrap();
    }
    let _ = reqs.borrow()[1].handle.fail(AsyncError::msg("bad"));
    double(&reqs, 1);
    double(&reqs, 3);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![
            Out::Rec(2, None),
            Out::Failed(2, "bad".into()),
            Out::Rec(6, None)
        ]
    );
}

#[test]
fn a_panicking_function_fails_only_its_record() {
    let mut f = Manual::new();
    f.panic_on = Some(2);
    let cfg = OperatorConfig::builder()
        .capacity(4)
        .on_error(ErrorPolicy::SideOutput)
        .build()
        .unwrap();
    let (mut op, reqs) = operator_with(cfg, f);
    for i in 1..=3 {
        op.process(rec(i), ms(0)).unwrap();
    }
    double(&reqs, 1);
    double(&reqs, 3);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![
            Out::Rec(2, None),
            Out::Failed(2, "the function panicked: boom on 2".into()),
            Out::Rec(6, None)
        ]
    );
    assert_eq!(op.metrics(ms(1)).panics, 1);
}

#[test]
fn a_panicking_function_fails_the_pipeline_under_the_default_policy() {
    let mut f = Manual::new();
    f.panic_on = Some(1);
    let (mut op, _reqs) = operator_with(config(OrderMode::Ordered, 2), f);
    match op.process(rec(1), ms(0)) {
        Err(ProcessError::Failed(OperatorError::RecordFailed {
            error: RecordError::Panicked { message },
            ..
        })) => assert_eq!(message, "boom on 1"),
        other => panic!("expected a panic failure, got {other:?}"),
    }
}

#[test]
fn a_panicking_timeout_hook_is_caught() {
    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Panic;
    let cfg = OperatorConfig::builder()
        .capacity(2)
        .timeout(Duration::from_millis(10))
        .on_error(ErrorPolicy::Skip)
        .build()
        .unwrap();
    let (mut op, _reqs) = operator_with(cfg, f);
    op.process(rec(1), ms(0)).unwrap();
    op.advance(ms(10)).unwrap();
    assert_eq!(drain(&mut op, ms(10)), vec![]);
    let m = op.metrics(ms(10));
    assert_eq!((m.panics, m.skipped, m.timeouts), (1, 1, 1));
}

// ---------------------------------------------------------------- retries (S8)

fn retrying(strategy: RetryStrategy, timeout_ms: u64) -> OperatorConfig {
    OperatorConfig::builder()
        .capacity(4)
        .timeout(Duration::from_millis(timeout_ms))
        .retry(strategy)
        .on_error(ErrorPolicy::SideOutput)
        .build()
        .unwrap()
}

fn fail_latest(reqs: &std::rc::Rc<std::cell::RefCell<Vec<Request>>>) {
    let r = reqs.borrow();
    assert_eq!(
        r.last().unwrap().handle.fail(AsyncError::msg("flaky")),
        Completion::Accepted
    );
}

#[test]
fn fixed_delay_retry_reinvokes_after_the_delay_then_succeeds() {
    let cfg = retrying(
        RetryStrategy::fixed_delay(3, Duration::from_millis(10)),
        1000,
    );
    let (mut op, reqs) = operator(cfg);
    op.process(rec(7), ms(0)).unwrap();
    fail_latest(&reqs);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        op.next_deadline(),
        Some(ms(11)),
        "retry due 10 ms after the failure"
    );
    op.advance(ms(10)).unwrap();
    assert_eq!(reqs.borrow().len(), 1, "not before the delay");
    op.advance(ms(11)).unwrap();
    assert_eq!(reqs.borrow().len(), 2, "second attempt started");
    assert_eq!(
        reqs.borrow()[1].handle.id(),
        reqs.borrow()[0].handle.id(),
        "same request id"
    );
    double(&reqs, 7);
    op.advance(ms(12)).unwrap();
    assert_eq!(drain(&mut op, ms(12)), vec![Out::Rec(14, None)]);
    assert_eq!(op.metrics(ms(12)).retries, 1);
}

#[test]
fn a_completion_of_a_superseded_attempt_is_late() {
    let cfg = retrying(
        RetryStrategy::fixed_delay(3, Duration::from_millis(10)),
        1000,
    );
    let (mut op, reqs) = operator(cfg);
    op.process(rec(7), ms(0)).unwrap();
    let first = reqs.borrow()[0].handle.clone();
    fail_latest(&reqs);
    op.advance(ms(1)).unwrap();
    op.advance(ms(11)).unwrap();
    assert_eq!(first.complete_one(1), Completion::Late);
    op.advance(ms(12)).unwrap();
    assert_eq!(drain(&mut op, ms(12)), vec![]);
}

#[test]
fn retries_stop_after_max_attempts_and_the_error_policy_applies() {
    let cfg = retrying(
        RetryStrategy::fixed_delay(2, Duration::from_millis(10)),
        1000,
    );
    let (mut op, reqs) = operator(cfg);
    op.process(rec(7), ms(0)).unwrap();
    let mut now = 0;
    for _ in 0..3 {
        fail_latest(&reqs);
        op.advance(ms(now)).unwrap(); // collect the failure, schedule a retry
        now += 10;
        op.advance(ms(now)).unwrap(); // the retry starts
    }
    assert_eq!(reqs.borrow().len(), 3, "1 attempt + 2 retries");
    assert_eq!(
        drain(&mut op, ms(now)),
        vec![Out::Failed(7, "flaky".into())]
    );
}

#[test]
fn exponential_backoff_delays_grow() {
    let cfg = retrying(
        RetryStrategy::exponential(4, Duration::from_millis(1), 2.0, Duration::from_millis(5)),
        1000,
    );
    let (mut op, reqs) = operator(cfg);
    op.process(rec(7), ms(0)).unwrap();
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..4 {
        fail_latest(&reqs);
        op.advance(ms(now)).unwrap();
        let due = op.next_deadline().unwrap();
        delays.push((due.0 - ms(now).0) / 1_000_000);
        now = due.0 / 1_000_000;
        op.advance(ms(now)).unwrap();
    }
    assert_eq!(delays, vec![1, 2, 4, 5]);
}

#[test]
fn no_retry_starts_past_the_timeout() {
    let cfg = retrying(
        RetryStrategy::fixed_delay(5, Duration::from_millis(40)),
        100,
    );
    let (mut op, reqs) = operator(cfg);
    op.process(rec(7), ms(0)).unwrap();
    fail_latest(&reqs); // at 0: retry due at 40 < 100
    op.advance(ms(0)).unwrap();
    op.advance(ms(40)).unwrap();
    fail_latest(&reqs); // at 70: retry would be due at 110 >= 100, so no retry
    op.advance(ms(70)).unwrap();
    assert_eq!(reqs.borrow().len(), 2);
    assert_eq!(drain(&mut op, ms(70)), vec![Out::Failed(7, "flaky".into())]);
}

#[test]
fn result_predicate_retries_empty_results() {
    let mut f = Manual::new();
    f.retry_empty = true;
    let cfg = retrying(
        RetryStrategy::fixed_delay(3, Duration::from_millis(10)),
        1000,
    );
    let (mut op, reqs) = operator_with(cfg, f);
    op.process(rec(7), ms(0)).unwrap();
    let _ = reqs.borrow()[0].handle.complete_empty();
    op.advance(ms(0)).unwrap();
    op.advance(ms(10)).unwrap();
    assert_eq!(reqs.borrow().len(), 2);
    double(&reqs, 7);
    op.advance(ms(11)).unwrap();
    assert_eq!(drain(&mut op, ms(11)), vec![Out::Rec(14, None)]);
}

#[test]
fn error_predicate_can_refuse_a_retry() {
    let mut f = Manual::new();
    f.retry_errors = false;
    let cfg = retrying(
        RetryStrategy::fixed_delay(3, Duration::from_millis(10)),
        1000,
    );
    let (mut op, reqs) = operator_with(cfg, f);
    op.process(rec(7), ms(0)).unwrap();
    fail_latest(&reqs);
    op.advance(ms(0)).unwrap();
    assert_eq!(drain(&mut op, ms(0)), vec![Out::Failed(7, "flaky".into())]);
    assert_eq!(reqs.borrow().len(), 1);
}

#[test]
fn a_record_waiting_for_its_retry_still_times_out() {
    let mut f = Manual::new();
    f.on_timeout = OnTimeout::Fallback(-7);
    let cfg = retrying(RetryStrategy::fixed_delay(3, Duration::from_millis(30)), 50);
    let (mut op, reqs) = operator_with(cfg, f);
    op.process(rec(7), ms(0)).unwrap();
    fail_latest(&reqs); // retry due at 30
    op.advance(ms(0)).unwrap();
    op.advance(ms(30)).unwrap(); // attempt 2 starts
    op.advance(ms(50)).unwrap(); // times out
    assert_eq!(drain(&mut op, ms(50)), vec![Out::Rec(-7, None)]);
    assert_eq!(op.next_deadline(), None);
}

// ---------------------------------------------------------------- key-ordered mode

#[test]
fn key_ordered_keeps_each_key_in_order_without_blocking_other_keys() {
    let (mut op, reqs) = keyed(config(OrderMode::KeyOrdered, 8), Manual::new());
    // keys: x % 10 → 11 and 21 share key 1; 12 has key 2
    for i in [11, 12, 21] {
        op.process(rec(i), ms(0)).unwrap();
    }
    double(&reqs, 21);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![], "21 waits for 11 (same key)");
    double(&reqs, 12);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![Out::Rec(24, None)],
        "12 does not wait for 11"
    );
    double(&reqs, 11);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![Out::Rec(22, None), Out::Rec(42, None)]
    );
}

#[test]
fn key_ordered_respects_watermark_boundaries() {
    let (mut op, reqs) = keyed(config(OrderMode::KeyOrdered, 8), Manual::new());
    op.process(rec(11), ms(0)).unwrap();
    op.process(StreamElement::Watermark(1), ms(0)).unwrap();
    op.process(rec(12), ms(0)).unwrap();
    double(&reqs, 12);
    op.advance(ms(1)).unwrap();
    assert_eq!(drain(&mut op, ms(1)), vec![]);
    double(&reqs, 11);
    op.advance(ms(1)).unwrap();
    assert_eq!(
        drain(&mut op, ms(1)),
        vec![Out::Rec(22, None), Out::Wm(1), Out::Rec(24, None)]
    );
}

#[test]
fn key_ordered_mode_without_a_key_function_is_refused() {
    let cfg = config(OrderMode::KeyOrdered, 4);
    assert!(matches!(
        AsyncWaitOperator::new(cfg, Manual::new(), 0),
        Err(ConfigError::MissingKeyFunction)
    ));
}

// ---------------------------------------------------------------- snapshots see everything (S10)

#[test]
fn pending_entries_list_every_unemitted_input_in_order() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 8));
    op.process(at(1, 10), ms(0)).unwrap();
    op.process(at(2, 11), ms(0)).unwrap();
    op.process(StreamElement::Watermark(11), ms(0)).unwrap();
    op.process(at(3, 12), ms(0)).unwrap();
    double(&reqs, 2); // done but waiting behind 1
    op.advance(ms(1)).unwrap();
    let seen: Vec<String> = op.pending_entries().map(|e| format!("{e:?}")).collect();
    assert_eq!(seen.len(), 4);
    assert!(seen[0].contains("sequence: 0, input: 1"));
    assert!(seen[1].contains("sequence: 1, input: 2"));
    assert_eq!(seen[2], "Watermark(11)");
    assert!(seen[3].contains("sequence: 2, input: 3"));
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_report_gauges_and_latency() {
    let (mut op, reqs) = operator(config(OrderMode::Ordered, 4));
    op.process(rec(1), ms(0)).unwrap();
    op.process(rec(2), ms(1)).unwrap();
    let m = op.metrics(ms(5));
    assert_eq!((m.in_flight, m.occupancy, m.capacity), (2, 2, 4));
    assert_eq!(m.oldest_age_ns, 5_000_000);
    double(&reqs, 1);
    op.advance(ms(3)).unwrap();
    drain(&mut op, ms(3));
    let m = op.metrics(ms(3));
    assert_eq!(m.latency.len(), 1);
    let p50 = m.latency.value_at_quantile(0.5);
    assert!(
        (2_990_000..=3_010_000).contains(&p50),
        "latency 3 ms, got {p50}"
    );
}
