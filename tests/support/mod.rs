//! Test support: a function whose requests the test completes by hand, and helpers to drain an
//! operator.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use ringwait::runtime::DelayLine;
use ringwait::time::Nanos;
use ringwait::{
    AsyncError, AsyncFunction, AsyncWaitOperator, Emitted, OperatorConfig, OrderMode, Outputs,
    ResultFuture, StreamElement, TimeoutOutcome,
};

/// A configuration in `mode` with `capacity`, whose 10 s timeout never fires in a test.
pub fn long_timeout_config(mode: OrderMode, capacity: usize) -> OperatorConfig {
    OperatorConfig::builder()
        .mode(mode)
        .capacity(capacity)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Completes each record with its input from a delay line (on a glommio executor).
pub struct Delayed(pub DelayLine<u64>);

impl AsyncFunction for Delayed {
    type In = u64;
    type Out = u64;
    fn invoke(&self, x: &u64, r: ResultFuture<u64>) {
        self.0.push(r, *x);
    }
}

/// One request the function started and the test may complete.
pub struct Request {
    pub input: i64,
    pub handle: ResultFuture<i64>,
}

/// What the function does on timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    Fail,
    Fallback(i64),
    /// Complete with the negated input (a fallback that identifies its record).
    Negate,
    Nothing,
    Error,
    Panic,
}

/// A function that records every invocation; the test completes the handles.
pub struct Manual {
    pub requests: Rc<RefCell<Vec<Request>>>,
    pub invocations: Rc<RefCell<Vec<i64>>>,
    pub on_timeout: OnTimeout,
    pub retry_empty: bool,
    pub retry_errors: bool,
    pub panic_on: Option<i64>,
    /// Set before a `process` call to make the function complete that record inside its
    /// call, with the value [`inline_value`]`(input)`: 0 one output, 1 none, 2 two outputs
    /// (value, value + 1), 3 an error ("flaky"). Taken by the next invocation.
    pub complete_inline: Rc<std::cell::Cell<Option<u8>>>,
}

impl Manual {
    pub fn new() -> Self {
        Manual {
            requests: Rc::default(),
            invocations: Rc::default(),
            on_timeout: OnTimeout::Fail,
            retry_empty: false,
            retry_errors: true,
            panic_on: None,
            complete_inline: Rc::default(),
        }
    }
}

impl AsyncFunction for Manual {
    type In = i64;
    type Out = i64;

    fn invoke(&self, input: &i64, result: ResultFuture<i64>) {
        self.invocations.borrow_mut().push(*input);
        if self.panic_on == Some(*input) {
            panic!("boom on {input}");
        }
        let inline = self.complete_inline.take();
        self.requests.borrow_mut().push(Request {
            input: *input,
            handle: result.clone(),
        });
        if let Some(kind) = inline {
            let _ = complete_as(&result, kind, inline_value(*input));
        }
    }

    fn timeout(&self, input: &i64) -> TimeoutOutcome<i64> {
        match self.on_timeout {
            OnTimeout::Fail => TimeoutOutcome::Fail,
            OnTimeout::Fallback(v) => TimeoutOutcome::Complete(Outputs::One(v)),
            OnTimeout::Negate => TimeoutOutcome::Complete(Outputs::One(-*input)),
            OnTimeout::Nothing => TimeoutOutcome::Complete(Outputs::Empty),
            OnTimeout::Error => {
                TimeoutOutcome::Error(AsyncError::msg(format!("gave up on {input}")))
            }
            OnTimeout::Panic => panic!("timeout hook panicked"),
        }
    }

    fn retry_on_result(&self, outputs: &Outputs<i64>) -> bool {
        self.retry_empty && outputs.is_empty()
    }

    fn retry_on_error(&self, _error: &AsyncError) -> bool {
        self.retry_errors
    }
}

/// The value a record completed inside its call gets: distinct from every input and from the
/// values tests complete handles with by hand.
pub fn inline_value(input: i64) -> i64 {
    1_000_000 + input
}

/// Completes `handle` the way `kind` says (see [`Manual::complete_inline`]) with `value`.
pub fn complete_as(handle: &ResultFuture<i64>, kind: u8, value: i64) -> ringwait::Completion {
    match kind {
        0 => handle.complete_one(value),
        1 => handle.complete_empty(),
        2 => handle.complete(Outputs::Many(vec![value, value + 1])),
        _ => handle.fail(AsyncError::msg("flaky")),
    }
}

/// An element of the output, simplified for comparisons.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Out {
    Rec(i64, Option<i64>),
    Wm(i64),
    Failed(i64, String),
}

pub fn drain(op: &mut AsyncWaitOperator<Manual>, now: Nanos) -> Vec<Out> {
    let mut out = Vec::new();
    while let Some(e) = op.pop_output(now) {
        out.push(simplify(e));
    }
    out
}

pub fn simplify(e: Emitted<i64, i64>) -> Out {
    match e {
        Emitted::Record {
            value, timestamp, ..
        } => Out::Rec(value, timestamp),
        Emitted::Watermark(w) => Out::Wm(w),
        Emitted::Failed { input, error, .. } => Out::Failed(input, error.to_string()),
    }
}

pub fn operator(config: OperatorConfig) -> (AsyncWaitOperator<Manual>, Rc<RefCell<Vec<Request>>>) {
    operator_with(config, Manual::new())
}

pub fn operator_with(
    config: OperatorConfig,
    f: Manual,
) -> (AsyncWaitOperator<Manual>, Rc<RefCell<Vec<Request>>>) {
    let requests = f.requests.clone();
    (AsyncWaitOperator::new(config, f, 0).unwrap(), requests)
}

/// Completes the request for `input` with `input * 2`.
pub fn double(requests: &Rc<RefCell<Vec<Request>>>, input: i64) {
    let r = requests.borrow();
    let req = r
        .iter()
        .rev()
        .find(|r| r.input == input)
        .expect("request exists");
    assert_eq!(
        req.handle.complete_one(input * 2),
        ringwait::Completion::Accepted
    );
}

pub fn rec(v: i64) -> StreamElement<i64> {
    StreamElement::record(v)
}

pub fn at(v: i64, ts: i64) -> StreamElement<i64> {
    StreamElement::timed(v, ts)
}

pub fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}
