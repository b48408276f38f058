//! The completion board: where result handles drop their results.
//!
//! The board is shared (through `Rc`, one core only) between the operator and every
//! [`ResultFuture`](crate::ResultFuture) it handed out. Each slot of the operator has one cell
//! here, stamped with the record's sequence and a generation that changes whenever the slot
//! starts a new attempt or is freed. A completion lands only if both match and the cell is
//! armed; anything else is counted as a duplicate or a late completion and dropped (SPEC S2).
//!
//! A landed result stays in its cell until the record is emitted, so the common path moves it
//! exactly twice (into the cell, out to the sink). The operator never holds a borrow of the
//! board while user code runs, so a function may complete synchronously inside `invoke`.

use std::cell::UnsafeCell;
use std::task::Waker;

use super::outputs::{Completion, Outputs};
use crate::error::{AsyncError, RecordError};
use crate::fifo::Fifo;

/// The final result of a record.
pub(crate) type Resolution<Out> = Result<Outputs<Out>, RecordError>;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum CellState {
    /// No attempt running (free slot, watermark, or between attempts).
    Idle,
    /// An attempt is running; the first completion with the right stamp lands.
    Armed,
    /// Completed; waiting for the operator to collect it.
    Landed,
    /// The operator collected the completion.
    Collected,
    /// The record timed out (or its function panicked); completions are late.
    TimedOut,
}

/// What kind of completion landed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Landed {
    Ok,
    Failed,
    Panicked,
}

struct Cell<Out> {
    /// Sequence of the record in the slot: with the generation it makes a stale handle
    /// impossible to confuse with a current one, even after the generation wraps.
    sequence: u64,
    generation: u32,
    state: CellState,
    result: Option<Resolution<Out>>,
}

struct BoardInner<Out> {
    cells: Box<[Cell<Out>]>,
    /// Slots whose completion landed since the operator last collected; at most one entry per
    /// armed cell.
    landed: Fifo<u32>,
    waker: Option<Waker>,
    duplicates: u64,
    late: u64,
    /// The slot whose function call is running now (`u32::MAX`: none). A completion of it
    /// during the call is handed back by `end_invoke` instead of going through `landed`.
    invoking: u32,
    /// Whether the slot being invoked completed during the call.
    sync_landed: bool,
}

impl<Out> BoardInner<Out> {
    /// The cell of `slot`. Slots come from the operator's slot table, whose capacity the board
    /// was created with, so `slot < cells.len()`; the check is kept in debug builds.
    #[inline(always)]
    fn cell(&mut self, slot: u32) -> &mut Cell<Out> {
        debug_assert!(
            (slot as usize) < self.cells.len(),
            "slot {slot} out of range"
        );
        // SAFETY: slot < cells.len(): slot indices are minted only by the operator's slot
        // table, which has exactly as many slots as the board has cells.
        unsafe { self.cells.get_unchecked_mut(slot as usize) }
    }

    #[inline(always)]
    fn cell_ref(&self, slot: u32) -> &Cell<Out> {
        debug_assert!(
            (slot as usize) < self.cells.len(),
            "slot {slot} out of range"
        );
        // SAFETY: as in `cell`.
        unsafe { self.cells.get_unchecked(slot as usize) }
    }
}

/// Counts of ignored completions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IgnoredCounts {
    pub duplicates: u64,
    pub late: u64,
}

pub(crate) struct CompletionBoard<Out> {
    /// Accessed only through [`with`](Self::with) (an `UnsafeCell` rather than a `RefCell`:
    /// the borrow-flag checks cost about 20 instructions per record on the hot path).
    inner: UnsafeCell<BoardInner<Out>>,
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
                result: None,
            })
            .collect();
        CompletionBoard {
            inner: UnsafeCell::new(BoardInner {
                cells,
                landed: Fifo::with_capacity(capacity),
                waker: None,
                duplicates: 0,
                late: 0,
                invoking: u32::MAX,
                sync_landed: false,
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

    /// Runs `f` with exclusive access to the board's state.
    ///
    /// Every `f` passed here must be plain bookkeeping that cannot reach this board again:
    /// it must not run user code — call no user callback, waker or hook, and drop no value
    /// whose type the user chose (`Out`, errors, wakers). Such values are moved out of the
    /// closure and dropped (or called) after it returns. Debug assertions and `expect`s may
    /// panic inside `f`; unwinding just ends the borrow.
    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut BoardInner<Out>) -> R) -> R {
        // SAFETY: the board is neither `Sync` (UnsafeCell) nor shared across threads (it
        // lives in an `Rc`), so only this thread can reach `inner`. `with` is never entered
        // while another `with` call is running, because closures passed to it run no user
        // code (see above) and `with` is private, so this is the only reference to `inner`
        // for the closure's duration.
        f(unsafe { &mut *self.inner.get() })
    }

    /// Starts a new attempt on `slot` for the record `sequence`, whose function call follows
    /// (end it with [`end_invoke`](Self::end_invoke)); returns the generation its handle must
    /// carry.
    #[inline]
    pub(crate) fn arm(&self, slot: u32, sequence: u64) -> u32 {
        self.with(|inner| {
            inner.invoking = slot;
            inner.sync_landed = false;
            let cell = inner.cell(slot);
            debug_assert!(cell.result.is_none(), "arming a cell holding a result");
            cell.sequence = sequence;
            cell.generation = cell.generation.wrapping_add(1);
            cell.state = CellState::Armed;
            cell.generation
        })
    }

    /// Delivers a handle's completion. Always inlined: it is the per-record path of every
    /// function, and outlined its prologue and the result copy cost ~20 instructions.
    #[inline(always)]
    pub(crate) fn complete(
        &self,
        slot: u32,
        generation: u32,
        sequence: u64,
        result: Result<Outputs<Out>, AsyncError>,
    ) -> Completion {
        // Outside `with`: converting an error may drop the user's error value.
        let result = result.map_err(RecordError::from_function);
        // Returns the verdict, the waker to wake and a value to drop: both are handled after
        // the state is updated, never inside `with`.
        let (verdict, waker, unused) = {
            // SAFETY: as in `with` (open-coded here so that this per-record path is inlined
            // whole): this block runs no user code and drops no user value; the only
            // reference to the state lives for the block.
            let inner = unsafe { &mut *self.inner.get() };
            let cell = inner.cell(slot);
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
                    debug_assert!(cell.result.is_none(), "an armed cell holds no result");
                    let old = cell.result.replace(result); // None: an armed cell is empty
                    if inner.invoking == slot {
                        // Completed inside its own call: the operator picks it up right
                        // after the call returns, no queue and no wake-up needed.
                        inner.sync_landed = true;
                        (verdict, None, old)
                    } else {
                        inner.landed.push(slot);
                        (verdict, inner.waker.take(), old)
                    }
                }
                Completion::Duplicate => {
                    inner.duplicates += 1;
                    (verdict, None, Some(result))
                }
                Completion::Late => {
                    inner.late += 1;
                    (verdict, None, Some(result))
                }
            }
        };
        drop(unused);
        if let Some(w) = waker {
            w.wake();
        }
        verdict
    }

    /// Collects the next landed completion: its slot and what kind it is. The result stays in
    /// the cell.
    #[inline]
    pub(crate) fn next_landed(&self) -> Option<(u32, Landed)> {
        self.with(|inner| {
            let slot = inner.landed.pop()?;
            let cell = inner.cell(slot);
            let kind = collect(cell);
            Some((slot, kind))
        })
    }

    /// Ends the function call started by [`arm`](Self::arm): if the record completed during
    /// it, collects that completion and says what kind it is. Also says whether completions
    /// of other records wait to be collected (as [`has_landed`](Self::has_landed)).
    #[inline]
    pub(crate) fn end_invoke(&self, slot: u32) -> (Option<Landed>, bool) {
        self.with(|inner| {
            debug_assert_eq!(inner.invoking, slot);
            inner.invoking = u32::MAX;
            let others = !inner.landed.is_empty();
            if !std::mem::take(&mut inner.sync_landed) {
                return (None, others);
            }
            let cell = inner.cell(slot);
            let kind = collect(cell);
            (Some(kind), others)
        })
    }

    /// Whether any completion waits to be collected.
    #[inline]
    pub(crate) fn has_landed(&self) -> bool {
        self.with(|inner| !inner.landed.is_empty())
    }

    /// Whether `slot` holds a completion not yet collected.
    pub(crate) fn is_landed(&self, slot: u32) -> bool {
        self.with(|inner| inner.cell_ref(slot).state == CellState::Landed)
    }

    /// Takes the result out of `slot` (to show it to a retry predicate, or to build an error).
    pub(crate) fn take_result(&self, slot: u32) -> Resolution<Out> {
        self.with(|inner| inner.cell(slot).result.take())
            .expect("the cell holds a result")
    }

    /// Puts a (final) result into `slot`.
    pub(crate) fn set_result(&self, slot: u32, result: Resolution<Out>) {
        let old = self.with(|inner| inner.cell(slot).result.replace(result));
        drop(old); // outside `with`: it may hold user values
    }

    /// Whether the result in `slot` is an error.
    pub(crate) fn result_is_err(&self, slot: u32) -> bool {
        self.with(|inner| matches!(inner.cell_ref(slot).result, Some(Err(_))))
    }

    /// Takes the final result for emission; every handle of the record is stale afterwards.
    #[inline]
    pub(crate) fn take_for_emit(&self, slot: u32) -> Resolution<Out> {
        self.with(|inner| {
            let cell = inner.cell(slot);
            debug_assert_ne!(cell.state, CellState::Landed);
            cell.generation = cell.generation.wrapping_add(1);
            cell.state = CellState::Idle;
            cell.result.take()
        })
        .expect("a done record has a result")
    }

    /// Marks `slot` timed out: later completions of its current attempt are late.
    pub(crate) fn time_out(&self, slot: u32) {
        self.with(|inner| {
            let cell = inner.cell(slot);
            debug_assert_ne!(cell.state, CellState::Landed);
            cell.state = CellState::TimedOut;
        })
    }

    /// Ends the current attempt without a result (a retry is pending): later completions of
    /// it are late.
    pub(crate) fn retire(&self, slot: u32) {
        let old = self.with(|inner| {
            let cell = inner.cell(slot);
            debug_assert_ne!(cell.state, CellState::Landed);
            cell.generation = cell.generation.wrapping_add(1);
            cell.state = CellState::Idle;
            cell.result.take()
        });
        drop(old); // outside `with`: it may hold user values
    }

    /// Registers the task to wake when a completion lands.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        // `will_wake` only compares pointers; cloning and dropping wakers runs executor code,
        // so both happen outside `with`.
        let same = self.with(|inner| inner.waker.as_ref().is_some_and(|w| w.will_wake(waker)));
        if !same {
            let new = waker.clone();
            let old = self.with(|inner| inner.waker.replace(new));
            drop(old);
        }
    }

    pub(crate) fn ignored(&self) -> IgnoredCounts {
        self.with(|inner| IgnoredCounts {
            duplicates: inner.duplicates,
            late: inner.late,
        })
    }
}

/// Marks a landed cell collected and says what kind of result it holds (which stays in it).
#[inline(always)]
fn collect<Out>(cell: &mut Cell<Out>) -> Landed {
    debug_assert_eq!(cell.state, CellState::Landed);
    cell.state = CellState::Collected;
    match &cell.result {
        Some(Ok(_)) => Landed::Ok,
        Some(Err(RecordError::Panicked { .. })) => Landed::Panicked,
        Some(Err(_)) => Landed::Failed,
        None => unreachable!("a landed cell holds a result"),
    }
}
