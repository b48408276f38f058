//! The async wait operator: a pure state machine (no I/O, no clock).
//!
//! [`AsyncWaitOperator`] takes input elements, invokes the [`AsyncFunction`] once per record,
//! collects completions from the [`ResultFuture`]s it handed out, applies retries, timeouts and
//! the error policy, and releases outputs in the order the [`OrderMode`] promises. Time is an
//! argument of every call, so tests drive it deterministically; the runtime
//! ([`crate::runtime`]) owns the executor, timers and queues.
//!
//! Emission rules, one for each mode (an entry is *done* when its record has its final result;
//! a watermark is always done):
//! * ordered — the oldest entry leaves when it is done;
//! * unordered — a done record leaves at once if no watermark precedes it; a watermark leaves
//!   when everything before it has left (watermarks are order boundaries);
//! * key-ordered — as unordered, and additionally a record waits for every earlier record with
//!   the same key.

mod checkpoint;
mod emit;
mod error;
mod observe;
mod output;
mod restore;
mod slots;
mod timers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::Waker;

pub use crate::function::RecordError;
pub use checkpoint::{encode_snapshot, Restore, RestoredEntry, SNAPSHOT_FORMAT};
pub use error::OperatorError;

use crate::config::{ErrorPolicy, OperatorConfig, OrderMode};
use crate::element::{Emitted, RequestId, StreamElement};
use crate::fifo::Fifo;
use crate::function::board::{CompletionBoard, Landed, Resolution};
use crate::function::{AsyncFunction, Outputs, ResultFuture, TimeoutOutcome};
use crate::metrics::live::PartitionSample;
use crate::metrics::{LatencyRecorder, OperatorMetrics};
use crate::time::Nanos;
use emit::KeyMix;
use slots::{ListId, SlotState, SlotTable};

/// What the operator of function `F` emits.
pub type OutputOf<F> = Emitted<<F as AsyncFunction>::Out, <F as AsyncFunction>::In>;

/// A function that maps an input to its ordering key (key-ordered mode).
pub type KeyFn<In> = Box<dyn Fn(&In) -> u64>;

/// Why [`AsyncWaitOperator::process`] did not take an element.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<In> {
    /// The operator is at capacity; the element is handed back untouched.
    #[error("operator is at capacity")]
    Full(StreamElement<In>),
    /// The operator failed (a record failed under `ErrorPolicy::Fail`, or a watermark
    /// regressed).
    #[error(transparent)]
    Failed(#[from] OperatorError),
}

/// One entry of a snapshot: an input the operator has taken but not yet emitted.
#[derive(Debug, PartialEq, Eq)]
pub enum PendingEntry<'a, In> {
    /// A record and its sequence number.
    Record {
        /// Sequence number on the partition.
        sequence: u64,
        /// The input.
        input: &'a In,
        /// Its event time.
        timestamp: Option<i64>,
    },
    /// A watermark not yet emitted.
    Watermark(i64),
}

#[derive(Default)]
struct Counters {
    records_in: u64,
    watermarks_in: u64,
    outputs: u64,
    records_done: u64,
    completions: u64,
    timeouts: u64,
    retries: u64,
    errors: u64,
    skipped: u64,
    side_outputs: u64,
    panics: u64,
}

/// Outputs of a record with several outputs, handed out one per `pop_output` call.
struct Draining<Out> {
    rest: std::vec::IntoIter<Out>,
    timestamp: Option<i64>,
    sequence: u64,
}

/// The operator of one partition. See the [module docs](self) for the rules.
///
/// ```
/// use ringwait::{AsyncWaitOperator, OperatorConfig, StreamElement, Emitted};
/// use ringwait::function::from_fn;
/// use ringwait::time::Nanos;
///
/// let config = OperatorConfig::builder().capacity(2).build().unwrap();
/// let double = from_fn(|x: &u64, result| { let _ = result.complete_one(x * 2); });
/// let mut op = AsyncWaitOperator::new(config, double, 0).unwrap();
/// op.process(StreamElement::record(21), Nanos(0)).unwrap();
/// op.advance(Nanos(1)).unwrap();
/// match op.pop_output(Nanos(2)) {
///     Some(Emitted::Record { value, .. }) => assert_eq!(value, 42),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert!(op.is_empty());
/// ```
pub struct AsyncWaitOperator<F: AsyncFunction> {
    config: OperatorConfig,
    function: F,
    key_fn: Option<KeyFn<F::In>>,
    partition: u32,
    board: Rc<CompletionBoard<F::Out>>,
    slots: SlotTable<F::In>,
    /// Entries that may leave now, in the order they became ready.
    ready: Fifo<u32>,
    /// Scheduled retries: (due, slot, sequence); stale entries are skipped when popped.
    retries: BinaryHeap<Reverse<(Nanos, u32, u64)>>,
    /// Key → newest live record with that key (key-ordered mode).
    key_tails: HashMap<u64, u32, BuildHasherDefault<KeyMix>>,
    next_sequence: u64,
    /// Watermarks taken so far: the segment of the next entry.
    segments_in: u64,
    /// Watermarks emitted so far: the segment whose records may leave.
    active_segment: u64,
    last_watermark: Option<i64>,
    draining: Option<Draining<F::Out>>,
    counters: Counters,
    latency: LatencyRecorder,
    // Copies of hot configuration, read per record.
    mode: OrderMode,
    timeout_ns: Option<u64>,
    retries_enabled: bool,
    /// Records waiting for their final result (in flight or waiting for a retry).
    pending: usize,
    /// Outputs returned by the express lane whose latency is not recorded yet.
    express: ExpressRun,
}

/// Records that left through the express lane since the last [`AsyncWaitOperator::settle`]:
/// all taken at `intake`.
#[derive(Default)]
struct ExpressRun {
    intake: Nanos,
    count: u64,
}

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// An operator for `partition` with a validated configuration. Key-ordered mode needs
    /// [`with_key_fn`](Self::with_key_fn) instead.
    pub fn new(
        config: OperatorConfig,
        function: F,
        partition: u32,
    ) -> Result<Self, crate::ConfigError> {
        Self::build(config, function, None, partition)
    }

    /// An operator whose records are keyed by `key_fn` (required in key-ordered mode, ignored
    /// otherwise).
    pub fn with_key_fn(
        config: OperatorConfig,
        function: F,
        key_fn: KeyFn<F::In>,
        partition: u32,
    ) -> Result<Self, crate::ConfigError> {
        Self::build(config, function, Some(key_fn), partition)
    }

    fn build(
        config: OperatorConfig,
        function: F,
        key_fn: Option<KeyFn<F::In>>,
        partition: u32,
    ) -> Result<Self, crate::ConfigError> {
        if config.mode() == OrderMode::KeyOrdered && key_fn.is_none() {
            return Err(crate::ConfigError::MissingKeyFunction);
        }
        let capacity = config.capacity();
        let mode = config.mode();
        let timeout_ns = config
            .timeout()
            .map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        let retries_enabled = config.retry().is_enabled();
        let key_tails = if config.mode() == OrderMode::KeyOrdered {
            HashMap::with_capacity_and_hasher(capacity, Default::default())
        } else {
            HashMap::default()
        };
        Ok(AsyncWaitOperator {
            board: Rc::new(CompletionBoard::new(
                capacity,
                config.operator_id(),
                partition,
            )),
            slots: SlotTable::new(capacity),
            ready: Fifo::with_capacity(capacity),
            retries: BinaryHeap::with_capacity(if config.retry().is_enabled() {
                capacity
            } else {
                0
            }),
            key_tails,
            config,
            function,
            key_fn,
            partition,
            next_sequence: 0,
            segments_in: 0,
            active_segment: 0,
            last_watermark: None,
            draining: None,
            counters: Counters::default(),
            latency: LatencyRecorder::new(),
            mode,
            timeout_ns,
            retries_enabled,
            pending: 0,
            express: ExpressRun::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OperatorConfig {
        &self.config
    }

    /// The user's function.
    pub fn function(&self) -> &F {
        &self.function
    }

    /// Whether another element can be taken now (SPEC S3: at capacity the caller must stop
    /// reading its input).
    #[inline]
    pub fn has_capacity(&self) -> bool {
        !self.slots.is_full()
    }

    /// Whether the operator holds nothing (everything taken has been emitted).
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0 && self.draining.is_none()
    }

    /// Entries held: in flight, done but not emitted, and watermarks.
    pub fn occupancy(&self) -> usize {
        self.slots.len()
    }

    /// Records waiting for their final result.
    pub fn in_flight(&self) -> usize {
        self.pending
    }

    /// The sequence number the next record will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Registers the task to wake when a completion arrives.
    pub fn register_waker(&self, waker: &Waker) {
        self.board.register_waker(waker);
    }

    /// Whether completions have arrived that [`advance`](Self::advance) has not collected.
    pub fn has_completions(&self) -> bool {
        self.board.has_landed()
    }

    /// Whether [`pop_output`](Self::pop_output) has something to return.
    pub fn has_output(&self) -> bool {
        if self.draining.is_some() {
            return true;
        }
        if self.mode == OrderMode::Ordered {
            self.slots.head(ListId::Order).is_some_and(|h| {
                matches!(
                    self.slots.get(h).state,
                    SlotState::Done | SlotState::Watermark
                )
            })
        } else {
            !self.ready.is_empty()
        }
    }

    /// The earliest time at which [`advance`](Self::advance) has timer work (a timeout or a
    /// retry), if any.
    pub fn next_deadline(&self) -> Option<Nanos> {
        let timeout = self
            .slots
            .head(ListId::Pending)
            .map(|h| self.slots.get(h).deadline)
            .filter(|d| *d != Nanos::NEVER);
        let retry = self.retries.peek().map(|Reverse((due, _, _))| *due);
        match (timeout, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes one element (SPEC S1): a record is invoked right away; a watermark is queued.
    /// When full the element is handed back in [`ProcessError::Full`].
    pub fn process(
        &mut self,
        element: StreamElement<F::In>,
        now: Nanos,
    ) -> Result<(), ProcessError<F::In>> {
        let taken = self.take(element, now, false)?;
        debug_assert!(taken.is_none(), "only the express lane returns outputs");
        Ok(())
    }

    /// [`process`](Self::process), with an express lane for records the function completes
    /// inside its call: when such a record may leave at once (ordered and key-ordered: the
    /// operator holds nothing else; unordered: no watermark waits; no output is being handed
    /// out; retries off), its output is returned here instead of being queued, and the record
    /// never occupies the operator. Anything else is taken exactly as `process` takes it and
    /// `Ok(None)` is returned (as it is for a record with no output).
    ///
    /// The caller must hand a returned output on before any later one (it is the next output
    /// in the mode's order), and call [`settle`](Self::settle) once the outputs of a batch
    /// have left, so that their latency is recorded.
    ///
    /// ```
    /// use ringwait::{AsyncWaitOperator, OperatorConfig, StreamElement, Emitted};
    /// use ringwait::function::from_fn;
    /// use ringwait::time::Nanos;
    ///
    /// let config = OperatorConfig::builder().capacity(2).build().unwrap();
    /// let double = from_fn(|x: &u64, result| { let _ = result.complete_one(x * 2); });
    /// let mut op = AsyncWaitOperator::new(config, double, 0).unwrap();
    /// match op.process_express(StreamElement::record(21), Nanos(0)).unwrap() {
    ///     Some(Emitted::Record { value, .. }) => assert_eq!(value, 42),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// op.settle(Nanos(5));
    /// assert!(op.is_empty());
    /// assert_eq!(op.metrics(Nanos(5)).outputs, 1);
    /// ```
    #[inline]
    pub fn process_express(
        &mut self,
        element: StreamElement<F::In>,
        now: Nanos,
    ) -> Result<Option<OutputOf<F>>, ProcessError<F::In>> {
        self.take(element, now, true)
    }

    /// [`process`](Self::process) and [`process_express`](Self::process_express): the
    /// express lane is tried only with `express_lane`.
    #[inline(always)]
    fn take(
        &mut self,
        element: StreamElement<F::In>,
        now: Nanos,
        express_lane: bool,
    ) -> Result<Option<OutputOf<F>>, ProcessError<F::In>> {
        if self.slots.is_full() {
            return Err(ProcessError::Full(element));
        }
        match element {
            StreamElement::Record { value, timestamp } => {
                let sequence = self.next_sequence;
                let express = express_lane && self.express_open();
                self.admit_record(sequence, value, timestamp, now, express)
            }
            StreamElement::Watermark(wm) => {
                self.admit_watermark(wm)?;
                Ok(None)
            }
        }
    }

    /// Whether a record completed inside its call could leave at once (see
    /// [`process_express`](Self::process_express)).
    #[inline(always)]
    fn express_open(&self) -> bool {
        self.draining.is_none()
            && !self.retries_enabled
            && match self.mode {
                OrderMode::Unordered => self.segments_in == self.active_segment,
                OrderMode::Ordered | OrderMode::KeyOrdered => self.slots.len() == 0,
            }
    }

    /// Records the latency of the outputs [`process_express`](Self::process_express) returned
    /// since the last call, as having left by `now`. [`pop_output`](Self::pop_output),
    /// [`sample`](Self::sample) and the next express record taken at a later time settle
    /// too, so a caller that forgets only loses precision (a later `now`), never records.
    #[inline]
    pub fn settle(&mut self, now: Nanos) {
        if self.express.count > 0 {
            let latency = now.nanos_since(self.express.intake);
            self.latency.record_n(latency, self.express.count);
            self.express.count = 0;
        }
    }

    // Inlined into `process` (the per-record path): left to itself the compiler outlined it
    // in the runtime's partition loop once the board got cheaper, costing more than it saved.
    /// Takes a record into a free slot and invokes the function on it. With `express` (see
    /// [`process_express`](Self::process_express)), a record completed with `Ok` inside the
    /// call leaves at once: its output is returned and its slot goes straight back, never
    /// linked. Otherwise the record is linked in input order and handled as it landed.
    #[inline(always)]
    fn admit_record(
        &mut self,
        sequence: u64,
        value: F::In,
        timestamp: Option<i64>,
        now: Nanos,
        express: bool,
    ) -> Result<Option<OutputOf<F>>, ProcessError<F::In>> {
        let idx = self
            .slots
            .allocate_unlinked(SlotState::InFlight)
            .expect("capacity checked by the caller");
        self.next_sequence = sequence + 1;
        self.counters.records_in += 1;
        // The function borrows the input where it is; the slot takes it only if the record
        // stays (no user code can reach the operator in between).
        let call = call_function(&self.board, &self.function, idx, sequence, &value);
        if express && call.landed == Some(Landed::Ok) && call.panic.is_none() {
            let out = self.emit_express(idx, sequence, timestamp, now);
            drop(value);
            if call.others {
                self.collect(now)?;
            }
            return Ok(out);
        }
        self.pending += 1;
        let deadline = match self.timeout_ns {
            Some(t) => Nanos(now.0.saturating_add(t)),
            None => Nanos::NEVER,
        };
        let key = match &self.key_fn {
            Some(f) if self.mode == OrderMode::KeyOrdered => f(&value),
            _ => 0,
        };
        let slot = self.slots.get_mut(idx);
        slot.sequence = sequence;
        slot.input = Some(value);
        slot.timestamp = timestamp;
        slot.intake = now;
        slot.deadline = deadline;
        slot.attempts = 1;
        slot.segment = self.segments_in;
        slot.key = key;
        self.slots.push_back(ListId::Order, idx);
        if self.timeout_ns.is_some() {
            // Only records that can time out need the deadline-ordered list.
            self.slots.push_back(ListId::Pending, idx);
        }
        if self.mode == OrderMode::KeyOrdered {
            self.link_key(idx, key);
        }
        if self.after_call(idx, call, now)? {
            self.collect(now)?;
        }
        Ok(None)
    }

    /// The express lane's end: the record in the unlinked slot `idx` completed with `Ok` inside
    /// its call and may leave now.
    #[inline(always)]
    fn emit_express(
        &mut self,
        idx: u32,
        sequence: u64,
        timestamp: Option<i64>,
        now: Nanos,
    ) -> Option<Emitted<F::Out, F::In>> {
        self.counters.completions += 1;
        self.counters.records_done += 1;
        let resolution = self.board.take_for_emit(idx); // handles are stale from now on
        self.slots.free_unlinked(idx);
        if self.express.intake != now {
            self.settle(now); // an earlier batch's outputs left by now
            self.express.intake = now;
        }
        self.express.count += 1;
        match resolution {
            Ok(outputs) => self.first_output(outputs, timestamp, sequence),
            Err(_) => unreachable!("the express lane takes only Ok results"),
        }
    }

    fn admit_watermark(&mut self, wm: i64) -> Result<(), OperatorError> {
        if let Some(previous) = self.last_watermark {
            if wm < previous {
                return Err(OperatorError::WatermarkRegression { previous, got: wm });
            }
        }
        self.last_watermark = Some(wm);
        self.counters.watermarks_in += 1;
        let idx = self
            .slots
            .allocate(SlotState::Watermark)
            .expect("capacity checked by the caller");
        let slot = self.slots.get_mut(idx);
        slot.timestamp = Some(wm);
        slot.segment = self.segments_in;
        slot.sequence = self.next_sequence;
        self.segments_in += 1;
        if self.slots.head(ListId::Order) == Some(idx) {
            self.push_ready(idx);
        }
        Ok(())
    }

    /// Runs one attempt of the function for the record in `idx`; a panic fails the record.
    /// Returns whether completions of other records wait to be collected (they may have
    /// landed during the call).
    fn invoke(&mut self, idx: u32, now: Nanos) -> Result<bool, OperatorError> {
        let slot = self.slots.get(idx);
        let input = slot.input.as_ref().expect("a record slot holds its input");
        let call = call_function(&self.board, &self.function, idx, slot.sequence, input);
        self.after_call(idx, call, now)
    }

    /// Handles what happened during a function call on the linked record `idx`: a panic
    /// fails the record, a completion is taken as landed. Returns whether completions of
    /// other records wait to be collected.
    #[inline(always)]
    fn after_call(&mut self, idx: u32, call: Call, now: Nanos) -> Result<bool, OperatorError> {
        if let Some(payload) = call.panic {
            self.counters.panics += 1;
            if call.landed.is_none() {
                // Completions the function may still make for this attempt are late.
                self.board.time_out(idx);
                self.board
                    .set_result(idx, Err(RecordError::from_panic(payload)));
                self.resolve(idx)?;
                return Ok(call.others);
            }
        }
        if let Some(kind) = call.landed {
            self.counters.completions += 1;
            self.on_landed(idx, kind, now)?;
        }
        Ok(call.others)
    }

    /// Collects arrived completions, starts due retries and fires expired timeouts.
    pub fn advance(&mut self, now: Nanos) -> Result<(), OperatorError> {
        self.collect(now)?;
        self.fire_retries(now)?;
        self.fire_timeouts(now)?;
        self.collect(now)
    }

    #[inline]
    fn collect(&mut self, now: Nanos) -> Result<(), OperatorError> {
        while let Some((idx, landed)) = self.board.next_landed() {
            self.counters.completions += 1;
            self.on_landed(idx, landed, now)?;
        }
        Ok(())
    }

    /// A completion of record `idx` landed: retry it, or make its result final.
    #[inline(always)]
    fn on_landed(&mut self, idx: u32, landed: Landed, now: Nanos) -> Result<(), OperatorError> {
        debug_assert_eq!(self.slots.get(idx).state, SlotState::InFlight);
        match landed {
            Landed::Panicked => self.counters.panics += 1, // a bug: never retried
            _ if self.retries_enabled
                && self.retry_wanted(idx)
                && self.schedule_retry(idx, now) =>
            {
                return Ok(());
            }
            // Without retries nothing can replace an `Ok` result before it resolves: the
            // error check (a board borrow) is not needed.
            Landed::Ok if !self.retries_enabled => return self.resolve_as(idx, false),
            _ => {}
        }
        self.resolve(idx)
    }

    /// Makes the result in the board final and the record emittable when its mode allows;
    /// under `ErrorPolicy::Fail` an error stops the operator here, naming the record.
    #[inline(always)]
    fn resolve(&mut self, idx: u32) -> Result<(), OperatorError> {
        self.resolve_as(idx, true)
    }

    /// [`resolve`](Self::resolve); `maybe_err: false` promises that the result in the board
    /// is `Ok` (checked in debug builds).
    #[inline(always)]
    fn resolve_as(&mut self, idx: u32, maybe_err: bool) -> Result<(), OperatorError> {
        debug_assert!(maybe_err || !self.board.result_is_err(idx));
        if self.slots.is_linked(ListId::Pending, idx) {
            self.slots.unlink(ListId::Pending, idx);
        }
        self.pending -= 1;
        self.counters.records_done += 1;
        let slot = self.slots.get_mut(idx);
        slot.state = SlotState::Done;
        if maybe_err && self.board.result_is_err(idx) {
            self.counters.errors += 1;
            if self.config.error_policy() == ErrorPolicy::Fail {
                let sequence = self.slots.get(idx).sequence;
                let error = self.board.take_result(idx).err().expect("checked");
                self.board.set_result(idx, Ok(Outputs::Empty));
                return Err(OperatorError::RecordFailed {
                    id: self.request_id(sequence),
                    error,
                });
            }
        }
        if self.mode != OrderMode::Ordered && self.emittable(idx) {
            self.push_ready(idx);
        }
        Ok(())
    }

    fn request_id(&self, sequence: u64) -> RequestId {
        RequestId {
            operator: self.config.operator_id(),
            partition: self.partition,
            sequence,
        }
    }
}

/// What happened during one function call.
struct Call {
    /// The record's own completion, if it landed inside the call.
    landed: Option<Landed>,
    /// Whether completions of other records landed and wait to be collected.
    others: bool,
    /// The panic the call ended with, if any.
    panic: Option<Box<dyn std::any::Any + Send>>,
}

/// Runs one attempt of `function` on `input` (record `sequence` in slot `idx`), catching a
/// panic. Always inlined: it is the per-record path.
#[inline(always)]
fn call_function<F: AsyncFunction>(
    board: &Rc<CompletionBoard<F::Out>>,
    function: &F,
    idx: u32,
    sequence: u64,
    input: &F::In,
) -> Call {
    let generation = board.arm(idx, sequence);
    let handle = ResultFuture::new(board.clone(), idx, generation, sequence);
    let outcome = catch_unwind(AssertUnwindSafe(|| function.invoke(input, handle)));
    let (landed, others) = board.end_invoke(idx);
    Call {
        landed,
        others,
        panic: outcome.err(),
    }
}
