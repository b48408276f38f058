//! The user's side of the operator: [`AsyncFunction`] and the [`ResultFuture`] it completes.

use std::marker::PhantomData;
use std::rc::Rc;

use crate::element::RequestId;
use crate::operator::board::CompletionBoard;

/// The outputs of one record: zero, one or several values. `One` never allocates.
///
/// ```
/// use ringwait::Outputs;
/// assert_eq!(Outputs::from(vec![1, 2]).len(), 2);
/// assert!(Outputs::<u8>::Empty.is_empty());
/// assert_eq!(Outputs::from(Some(3)), Outputs::One(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Outputs<T> {
    /// No output (a filter, or a miss that should emit nothing).
    #[default]
    Empty,
    /// Exactly one output.
    One(T),
    /// Several outputs, in order.
    Many(Vec<T>),
}

impl<T> Outputs<T> {
    /// Number of outputs.
    pub fn len(&self) -> usize {
        match self {
            Outputs::Empty => 0,
            Outputs::One(_) => 1,
            Outputs::Many(v) => v.len(),
        }
    }

    /// Whether there is no output.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outputs as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Outputs::Empty => &[],
            Outputs::One(v) => std::slice::from_ref(v),
            Outputs::Many(v) => v,
        }
    }
}

impl<T> From<Vec<T>> for Outputs<T> {
    fn from(v: Vec<T>) -> Self {
        Outputs::Many(v)
    }
}

impl<T> From<Option<T>> for Outputs<T> {
    fn from(v: Option<T>) -> Self {
        match v {
            Some(v) => Outputs::One(v),
            None => Outputs::Empty,
        }
    }
}

/// An error a function reports for one record.
///
/// ```
/// use ringwait::AsyncError;
/// let e = AsyncError::msg("connection reset");
/// assert_eq!(e.to_string(), "connection reset");
/// let io = AsyncError::new(std::io::Error::other("boom"));
/// assert!(io.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug)]
pub struct AsyncError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl AsyncError {
    /// Wraps a typed error.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        AsyncError(Box::new(error))
    }

    /// An error with just a message.
    pub fn msg(message: impl Into<String>) -> Self {
        AsyncError(message.into().into())
    }

    /// The wrapped error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Display for AsyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AsyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A panic caught in a function's asynchronous work (for example a task spawned by
/// [`crate::runtime::async_fn`]); the operator turns it into [`crate::RecordError::Panicked`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {message}")]
pub struct PanicError {
    /// The panic message.
    pub message: String,
}

impl PanicError {
    /// From a payload caught by `catch_unwind`.
    pub fn from_payload(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        PanicError { message }
    }
}

/// What the operator does with a record whose timeout expired; returned by
/// [`AsyncFunction::timeout`].
#[derive(Debug)]
pub enum TimeoutOutcome<Out> {
    /// Fail the record with [`crate::RecordError::TimedOut`]; the error policy decides the rest
    /// (by default the pipeline fails). This is the default.
    Fail,
    /// Complete the record with these outputs (a fallback value, or `Outputs::Empty`).
    Complete(Outputs<Out>),
    /// Fail the record with this error.
    Error(AsyncError),
}

/// What happened to one completion call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[must_use = "a completion may be ignored; check it if it matters"]
pub enum Completion {
    /// The first completion of the current attempt: it counts.
    Accepted,
    /// The attempt was already completed; ignored and counted.
    Duplicate,
    /// The record timed out, was retried, or its slot was reused; ignored and counted.
    Late,
}

/// The handle a function completes once per record (SPEC S2).
///
/// Cheap to clone (a reference count and three integers); the first completion wins, later
/// ones are ignored and counted, and a handle whose record has moved on (timed out, retried,
/// or its slot reused) can never complete another record.
///
/// ```
/// use ringwait::{AsyncFunction, ResultFuture};
/// struct Double;
/// impl AsyncFunction for Double {
///     type In = u64;
///     type Out = u64;
///     fn invoke(&self, input: &u64, result: ResultFuture<u64>) {
///         let _ = result.complete_one(input * 2);
///     }
/// }
/// ```
pub struct ResultFuture<Out> {
    board: Rc<CompletionBoard<Out>>,
    slot: u32,
    generation: u32,
    sequence: u64,
}

impl<Out> Clone for ResultFuture<Out> {
    fn clone(&self) -> Self {
        ResultFuture {
            board: self.board.clone(),
            slot: self.slot,
            generation: self.generation,
            sequence: self.sequence,
        }
    }
}

impl<Out> std::fmt::Debug for ResultFuture<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultFuture")
            .field("id", &self.id())
            .field("generation", &self.generation)
            .finish()
    }
}

impl<Out> ResultFuture<Out> {
    pub(crate) fn new(
        board: Rc<CompletionBoard<Out>>,
        slot: u32,
        generation: u32,
        sequence: u64,
    ) -> Self {
        ResultFuture {
            board,
            slot,
            generation,
            sequence,
        }
    }

    /// Completes the record with its outputs.
    pub fn complete(&self, outputs: Outputs<Out>) -> Completion {
        self.board
            .complete(self.slot, self.generation, self.sequence, Ok(outputs))
    }

    /// Completes the record with exactly one output (never allocates).
    pub fn complete_one(&self, value: Out) -> Completion {
        self.complete(Outputs::One(value))
    }

    /// Completes the record with no output.
    pub fn complete_empty(&self) -> Completion {
        self.complete(Outputs::Empty)
    }

    /// Completes the record with an error; retries and the error policy decide what follows.
    pub fn fail(&self, error: AsyncError) -> Completion {
        self.board
            .complete(self.slot, self.generation, self.sequence, Err(error))
    }

    /// Completes with a `Result`: `Ok` as [`complete`](Self::complete), `Err` as
    /// [`fail`](Self::fail).
    pub fn complete_with(&self, result: Result<Outputs<Out>, AsyncError>) -> Completion {
        self.board
            .complete(self.slot, self.generation, self.sequence, result)
    }

    /// The stable id of this request, the same across retries and restores (SPEC S12).
    pub fn id(&self) -> RequestId {
        RequestId {
            operator: self.board.operator_id(),
            partition: self.board.partition(),
            sequence: self.sequence,
        }
    }
}

/// A function that starts one asynchronous request per input record (Flink's `AsyncFunction`).
///
/// `invoke` runs on the core that owns the record's partition, one record at a time, and must
/// not block: it starts the request and returns; the request later completes `result` (from a
/// task, a callback of a client, or right away). Only `invoke` is required.
///
/// ```
/// use ringwait::{AsyncFunction, ResultFuture, Outputs, TimeoutOutcome, AsyncError};
/// struct Lookup;
/// impl AsyncFunction for Lookup {
///     type In = String;
///     type Out = String;
///     fn invoke(&self, key: &String, result: ResultFuture<String>) {
///         let _ = result.complete_one(format!("value of {key}"));
///     }
///     // On timeout emit a fallback instead of failing the pipeline.
///     fn timeout(&self, key: &String) -> TimeoutOutcome<String> {
///         TimeoutOutcome::Complete(Outputs::One(format!("{key}: unknown")))
///     }
///     // Retry empty results (when a retry strategy is configured).
///     fn retry_on_result(&self, outputs: &Outputs<String>) -> bool {
///         outputs.is_empty()
///     }
///     // Retry every error except this one.
///     fn retry_on_error(&self, error: &AsyncError) -> bool {
///         !error.to_string().contains("no such table")
///     }
/// }
/// ```
pub trait AsyncFunction: 'static {
    /// Input record type.
    type In: 'static;
    /// Output record type.
    type Out: 'static;

    /// Starts the request for `input`; completes `result` now or later.
    fn invoke(&self, input: &Self::In, result: ResultFuture<Self::Out>);

    /// Called when the record's timeout expires (SPEC S4). The default fails the record with a
    /// typed timeout error.
    fn timeout(&self, input: &Self::In) -> TimeoutOutcome<Self::Out> {
        let _ = input;
        TimeoutOutcome::Fail
    }

    /// Result predicate (FLIP-232): retry when this returns true (and a retry strategy allows
    /// it). Default: never.
    fn retry_on_result(&self, outputs: &Outputs<Self::Out>) -> bool {
        let _ = outputs;
        false
    }

    /// Error predicate (FLIP-232): retry when this returns true (and a retry strategy allows
    /// it). Default: every error.
    fn retry_on_error(&self, error: &AsyncError) -> bool {
        let _ = error;
        true
    }
}

/// An [`AsyncFunction`] from a closure `Fn(&In, ResultFuture<Out>)`.
///
/// ```
/// use ringwait::function::from_fn;
/// let f = from_fn(|x: &u64, result| { let _ = result.complete_one(x + 1); });
/// # let _ = f;
/// ```
pub fn from_fn<In, Out, F>(f: F) -> FnFunction<In, Out, F>
where
    F: Fn(&In, ResultFuture<Out>) + 'static,
{
    FnFunction {
        f,
        _types: PhantomData,
    }
}

/// The [`AsyncFunction`] made by [`from_fn`].
pub struct FnFunction<In, Out, F> {
    f: F,
    _types: PhantomData<fn(&In) -> Out>,
}

impl<In: 'static, Out: 'static, F> AsyncFunction for FnFunction<In, Out, F>
where
    F: Fn(&In, ResultFuture<Out>) + 'static,
{
    type In = In;
    type Out = Out;

    #[inline]
    fn invoke(&self, input: &In, result: ResultFuture<Out>) {
        (self.f)(input, result)
    }
}
