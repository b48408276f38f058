//! The user's side of the operator: [`AsyncFunction`] and the [`ResultFuture`] it completes.

pub(crate) mod board;
mod handle;
mod outputs;

use std::marker::PhantomData;

use crate::metrics::live::PartitionSample;

pub use crate::error::{AsyncError, PanicError, RecordError};
pub use handle::ResultFuture;
pub use outputs::{Completion, Outputs};

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

    /// Adds the function's own measures to the partition's published sample (every
    /// [`crate::runtime::PUBLISH_EVERY`], on the partition's core, when live metrics are on):
    /// for example a lookup client's round-trip times. Default: nothing.
    fn publish(&self, sample: &mut PartitionSample) {
        let _ = sample;
    }

    /// Whether [`invoke`](Self::invoke) always completes its record before returning and
    /// the function runs no task of its own (no connection, no timer). Then a partition
    /// with nothing in flight and nothing to do blocks its thread on its queues
    /// ([`crate::source::Source::wait_for_input`], [`crate::sink::Sink::wait_for_room`]),
    /// woken by the other end's next batch, instead of parking its executor on a timer
    /// (glommio pays a `membarrier` IPI on every park). Default: false.
    fn completes_inline(&self) -> bool {
        false
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
