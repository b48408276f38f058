//! The completion board: where result handles drop their results.
//!
//! The board is shared (through `Rc`, one core only) between the operator and every
//! [`ResultFuture`](crate::ResultFuture) it handed out. Each slot of the operator has one cell
//! here, stamped with a generation that changes whenever the slot starts a new attempt or is
//! reused. A completion lands only if its generation matches and the cell is armed; anything
//! else is counted as a duplicate or a late completion and dropped (SPEC S2).
//!
//! The operator never holds a borrow of the board while user code runs, so a function may
//! complete synchronously from inside `invoke`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::Waker;

use crate::function::{AsyncError, Completion, Outputs};

/// The result a handle delivers.
pub(crate) type Delivered<Out> = Result<Outputs<Out>, AsyncError>;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum CellState {
    /// No attempt running (free slot, watermark, or between attempts).
    Idle,
    /// An attempt is running; the first completion with the right generation lands.
    Armed,
    /// Completed; waiting for the operator to collect it.
    Landed,
    /// The operator collected the completion.
    Collected,
    /// The record timed out; completions are late.
    TimedOut,
}

struct Cell<Out> {
    /// Sequence of the record in the slot: with the generation it makes a stale handle
    /// impossible to confuse with a current one, even after the generation wraps.
    sequence: u64,
    generation: u32,
    state: CellState,
    delivered: Option<Delivered<Out>>,
}

struct BoardInner<Out> {
    cells: Box<[Cell<Out>]>,
    /// Slots whose completion landed since the operator last collected; at most one entry per
    /// armed cell, so it never grows past the capacity it was created with.
    landed: VecDeque<u32>,
    waker: Option<Waker>,
    duplicates: u64,
    late: u64,
}

/// Counts of ignored completions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IgnoredCounts {
    pub duplicates: u64,
    pub late: u64,
}

pub(crate) struct CompletionBoard<Out> {
    inner: RefCell<BoardInner<Out>>,
    operator_id: u64,
    partition: u32,
}

impl<Out> CompletionBoard<Out> {
    pub(crate) fn new(capacity: usize, operator_id: u64, partition: u32) -> Self {
        let cells = (0..capacity)
            .map(|_| Cell {
                sequence: u64::MAX,
                generation: 0,
                state: CellState::Idle,
                delivered: None,
            })
            .collect();
        CompletionBoard {
            inner: RefCell::new(BoardInner {
                cells,
                landed: VecDeque::with_capacity(capacity),
                waker: None,
                duplicates: 0,
                late: 0,
            }),
            operator_id,
            partition,
        }
    }

    pub(crate) fn operator_id(&self) -> u64 {
        self.operator_id
    }

    pub(crate) fn partition(&self) -> u32 {
        self.partition
    }

    /// Starts a new attempt on `slot` for the record `sequence`; returns the generation its
    /// handle must carry.
    pub(crate) fn arm(&self, slot: u32, sequence: u64) -> u32 {
        let mut inner = self.inner.borrow_mut();
        let cell = &mut inner.cells[slot as usize];
        debug_assert!(cell.delivered.is_none(), "arming a cell holding a result");
        cell.sequence = sequence;
        cell.generation = cell.generation.wrapping_add(1);
        cell.state = CellState::Armed;
        cell.generation
    }

    /// Delivers a handle's completion.
    pub(crate) fn complete(
        &self,
        slot: u32,
        generation: u32,
        sequence: u64,
        result: Delivered<Out>,
    ) -> Completion {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            let cell = &mut inner.cells[slot as usize];
            let verdict = if cell.generation != generation || cell.sequence != sequence {
                Completion::Late
            } else {
                match cell.state {
                    CellState::Armed => Completion::Accepted,
                    CellState::Landed | CellState::Collected => Completion::Duplicate,
                    CellState::Idle | CellState::TimedOut => Completion::Late,
                }
            };
            match verdict {
                Completion::Accepted => {
                    cell.state = CellState::Landed;
                    cell.delivered = Some(result);
                    debug_assert!(inner.landed.len() < inner.landed.capacity());
                    inner.landed.push_back(slot);
                    inner.waker.take()
                }
                Completion::Duplicate => {
                    inner.duplicates += 1;
                    return verdict;
                }
                Completion::Late => {
                    inner.late += 1;
                    return verdict;
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Completion::Accepted
    }

    /// Takes the next landed completion, if any.
    pub(crate) fn next_landed(&self) -> Option<(u32, Delivered<Out>)> {
        let mut inner = self.inner.borrow_mut();
        let slot = inner.landed.pop_front()?;
        let cell = &mut inner.cells[slot as usize];
        debug_assert_eq!(cell.state, CellState::Landed);
        cell.state = CellState::Collected;
        let delivered = cell.delivered.take().expect("landed cell holds a result");
        Some((slot, delivered))
    }

    /// Whether any completion waits to be collected.
    pub(crate) fn has_landed(&self) -> bool {
        !self.inner.borrow().landed.is_empty()
    }

    /// Whether `slot` holds a completion not yet collected.
    pub(crate) fn is_landed(&self, slot: u32) -> bool {
        self.inner.borrow().cells[slot as usize].state == CellState::Landed
    }

    /// Marks `slot` timed out: later completions of its current attempt are late.
    pub(crate) fn time_out(&self, slot: u32) {
        let mut inner = self.inner.borrow_mut();
        let cell = &mut inner.cells[slot as usize];
        debug_assert_ne!(cell.state, CellState::Landed);
        cell.state = CellState::TimedOut;
    }

    /// Ends the current attempt without a result (a retry is pending or the slot is freed):
    /// later completions of it are late.
    pub(crate) fn retire(&self, slot: u32) {
        let mut inner = self.inner.borrow_mut();
        let cell = &mut inner.cells[slot as usize];
        debug_assert_ne!(cell.state, CellState::Landed);
        cell.generation = cell.generation.wrapping_add(1);
        cell.state = CellState::Idle;
    }

    /// Registers the task to wake when a completion lands.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
    }

    pub(crate) fn ignored(&self) -> IgnoredCounts {
        let inner = self.inner.borrow();
        IgnoredCounts {
            duplicates: inner.duplicates,
            late: inner.late,
        }
    }
}
