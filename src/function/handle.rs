//! The handle a function completes once per record.

use std::rc::Rc;

use super::board::CompletionBoard;
use super::outputs::{Completion, Outputs};
use crate::element::RequestId;
use crate::error::AsyncError;

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
