//! Property test: the operator against a small reference model, for all three modes.
//!
//! Random sequences of records (with keys), watermarks, completions of any handle (current,
//! superseded or stale; with one output, none, several, or an error), and advances of time, on
//! random capacities, with timeouts on and retries on or off. Some records are completed by the
//! function inside its own call, and records are taken by `process` or, at random, by
//! `process_express` (whose directly returned outputs are checked like the others). After
//! every step the test checks:
//! * every output the operator emitted was allowed to leave at that moment (ordering,
//!   watermark boundaries, key order), with exactly the values of its record;
//! * nothing that may leave was held back (the operator's unemitted entries equal the model's);
//! * every completion verdict (accepted / duplicate / late) is the model's;
//! * occupancy and in-flight counts match.
//!
//! At the end every record has left exactly once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use ringwait::operator::PendingEntry;
use ringwait::{
    AsyncWaitOperator, Completion, ErrorPolicy, OperatorConfig, OrderMode, ProcessError,
    RetryStrategy, StreamElement,
};
use support::{complete_as, inline_value, ms, simplify, Manual, OnTimeout, Out};

const TIMEOUT_MS: u64 = 50;
const RETRY_MS: u64 = 10;
const MAX_RETRIES: u32 = 2;

#[derive(Clone, Debug)]
enum Op {
    /// A record with this key; the function completes it inside its call (kind as in
    /// `Op::Complete`) or not; taken with `process_express` or `process`.
    Push(u8, Option<u8>, bool),
    Watermark,
    Complete(u16, u8),
    Advance(u8),
    /// From now on take at most this many outputs after a step (a sink with little room;
    /// `None`: all of them).
    PopLimit(Option<u8>),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(k, inline, express)| Op::Push(k, inline, express)),
        1 => Just(Op::Watermark),
        5 => (any::<u16>(), 0u8..4).prop_map(|(p, k)| Op::Complete(p, k)),
        2 => (0u8..30).prop_map(Op::Advance),
        1 => proptest::option::of(0u8..3).prop_map(Op::PopLimit),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    InFlight,
    RetryWait { due: u64 },
    Done { by_completion: bool },
}

#[derive(Clone, Debug)]
struct Rec {
    input: i64,
    key: u64,
    deadline: u64,
    attempt: u32,
    landed: bool,
    state: State,
    outputs: Vec<Out>,
}

#[derive(Clone, Debug)]
enum Entry {
    Rec(u64),
    Wm(i64),
}

struct Model {
    mode: OrderMode,
    capacity: usize,
    timeout_fallback: bool,
    max_retries: u32,
    now: u64,
    entries: Vec<Entry>,
    recs: HashMap<u64, Rec>,
    /// Landed but not collected: (sequence, result).
    landed: Vec<(u64, Result<Vec<i64>, ()>)>,
    next_seq: u64,
    next_wm: i64,
    invocations: usize,
    emitted_records: HashMap<u64, usize>,
}

impl Model {
    fn is_done(&self, e: &Entry) -> bool {
        match e {
            Entry::Wm(_) => true,
            Entry::Rec(s) => matches!(self.recs[s].state, State::Done { .. }),
        }
    }

    fn collect(&mut self) {
        for (seq, result) in std::mem::take(&mut self.landed) {
            let now = self.now;
            let r = self.recs.get_mut(&seq).unwrap();
            r.landed = false;
            match result {
                Ok(values) => {
                    r.outputs = values.into_iter().map(|v| Out::Rec(v, None)).collect();
                    r.state = State::Done {
                        by_completion: true,
                    };
                }
                Err(()) => {
                    let due = now + RETRY_MS;
                    if r.attempt <= self.max_retries && due < r.deadline {
                        r.state = State::RetryWait { due };
                    } else {
                        r.outputs = vec![Out::Failed(r.input, "flaky".into())];
                        r.state = State::Done {
                            by_completion: true,
                        };
                    }
                }
            }
        }
    }

    fn fire_retries_and_timeouts(&mut self) {
        let now = self.now;
        let seqs: Vec<u64> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Rec(s) => Some(*s),
                _ => None,
            })
            .collect();
        for s in &seqs {
            let r = self.recs.get_mut(s).unwrap();
            if let State::RetryWait { due } = r.state {
                if due <= now && now < r.deadline {
                    r.state = State::InFlight;
                    r.attempt += 1;
                    self.invocations += 1;
                }
            }
        }
        for s in &seqs {
            let fallback = self.timeout_fallback;
            let r = self.recs.get_mut(s).unwrap();
            let pending = matches!(r.state, State::InFlight | State::RetryWait { .. });
            if pending && r.deadline <= now {
                r.outputs = if fallback {
                    vec![Out::Rec(-r.input, None)]
                } else {
                    vec![Out::Failed(
                        r.input,
                        format!("timed out after {TIMEOUT_MS}ms"),
                    )]
                };
                r.state = State::Done {
                    by_completion: false,
                };
            }
        }
    }

    fn verdict(&self, seq: u64, attempt: u32) -> Completion {
        let Some(r) = self.recs.get(&seq) else {
            return Completion::Late;
        };
        if attempt != r.attempt {
            return Completion::Late;
        }
        match r.state {
            State::InFlight if r.landed => Completion::Duplicate,
            State::InFlight => Completion::Accepted,
            State::RetryWait { .. } => Completion::Late,
            State::Done {
                by_completion: true,
            } => Completion::Duplicate,
            State::Done {
                by_completion: false,
            } => Completion::Late,
        }
    }

    /// Index of the first watermark still held (records after it may not leave).
    fn first_wm(&self) -> usize {
        self.entries
            .iter()
            .position(|e| matches!(e, Entry::Wm(_)))
            .unwrap_or(self.entries.len())
    }

    /// Whether the entry at `pos` may leave now.
    fn may_leave(&self, pos: usize) -> bool {
        let e = &self.entries[pos];
        if !self.is_done(e) {
            return false;
        }
        match (self.mode, e) {
            (OrderMode::Ordered, _) | (_, Entry::Wm(_)) => pos == 0,
            (OrderMode::Unordered, Entry::Rec(_)) => pos < self.first_wm(),
            (OrderMode::KeyOrdered, Entry::Rec(s)) => {
                let key = self.recs[s].key;
                pos < self.first_wm()
                    && !self.entries[..pos]
                        .iter()
                        .any(|e| matches!(e, Entry::Rec(o) if self.recs[o].key == key))
            }
        }
    }

    fn remove(&mut self, pos: usize) {
        if let Entry::Rec(s) = self.entries.remove(pos) {
            *self.emitted_records.entry(s).or_default() += 1;
            self.recs.remove(&s);
        }
    }

    /// Accounts for one observed output; returns an error message if it was not allowed.
    fn observe(&mut self, out: &Out, current: &mut Option<(u64, Vec<Out>)>) -> Result<(), String> {
        if let Some((_, rest)) = current {
            if let Some(expected) = rest.first() {
                if expected != out {
                    return Err(format!("expected {expected:?}, got {out:?}"));
                }
                rest.remove(0);
                if rest.is_empty() {
                    *current = None;
                }
                return Ok(());
            }
        }
        let pos = match out {
            Out::Wm(w) => self
                .entries
                .iter()
                .position(|e| matches!(e, Entry::Wm(x) if x == w)),
            Out::Rec(v, _) | Out::Failed(v, _) => {
                // find the record whose expected outputs start with this one
                self.entries
                    .iter()
                    .position(|e| match e {
                        Entry::Rec(s) => {
                            self.recs[s].outputs.first() == Some(out) && self.is_done(e)
                        }
                        _ => false,
                    })
                    .or_else(|| {
                        let _ = v;
                        None
                    })
            }
        };
        let Some(pos) = pos else {
            return Err(format!("{out:?} matches no done entry"));
        };
        if !self.may_leave(pos) {
            return Err(format!("{out:?} left too early; held: {:?}", self.entries));
        }
        if let Entry::Rec(s) = self.entries[pos] {
            let mut rest = self.recs[&s].outputs.clone();
            rest.remove(0);
            if !rest.is_empty() {
                *current = Some((s, rest));
            }
        }
        self.remove(pos);
        Ok(())
    }

    /// Removes the records without outputs that the operator no longer holds (`held`, as
    /// [`held_by_operator`] lists them): they left unseen. Fails if one was not allowed to.
    /// Other entries the operator let go must be observed (see `observe`).
    fn account_silent(&mut self, held: &[String]) -> Result<(), String> {
        let mut i = 0;
        while i < self.entries.len() {
            let silent_gone = match &self.entries[i] {
                Entry::Rec(s) => {
                    !held.contains(&format!("r{s}")) && self.recs[s].outputs.is_empty()
                }
                Entry::Wm(_) => false,
            };
            if !silent_gone {
                i += 1;
                continue;
            }
            if !self.is_done(&self.entries[i]) || !self.may_leave(i) {
                return Err(format!(
                    "{:?} left unseen; held: {:?}",
                    self.entries[i], self.entries
                ));
            }
            self.remove(i);
            i = 0;
        }
        Ok(())
    }
}

fn held_by_operator(op: &AsyncWaitOperator<Manual>) -> Vec<String> {
    op.pending_entries()
        .map(|e| match e {
            PendingEntry::Record { sequence, .. } => format!("r{sequence}"),
            PendingEntry::Watermark(w) => format!("w{w}"),
        })
        .collect()
}

fn held_by_model(m: &Model) -> Vec<String> {
    m.entries
        .iter()
        .map(|e| match e {
            Entry::Rec(s) => format!("r{s}"),
            Entry::Wm(w) => format!("w{w}"),
        })
        .collect()
}

fn run(
    mode: OrderMode,
    capacity: usize,
    fallback: bool,
    retries: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let max_retries = if retries { MAX_RETRIES } else { 0 };
    let mut config = OperatorConfig::builder()
        .mode(mode)
        .capacity(capacity)
        .timeout(Duration::from_millis(TIMEOUT_MS))
        .on_error(ErrorPolicy::SideOutput);
    if retries {
        config = config.retry(RetryStrategy::fixed_delay(
            MAX_RETRIES,
            Duration::from_millis(RETRY_MS),
        ));
    }
    let config = config.build().unwrap();
    let mut f = Manual::new();
    f.on_timeout = if fallback {
        OnTimeout::Negate
    } else {
        OnTimeout::Fail
    };
    let requests = f.requests.clone();
    let inline = f.complete_inline.clone();
    let mut op = if mode == OrderMode::KeyOrdered {
        AsyncWaitOperator::with_key_fn(config, f, Box::new(|x: &i64| (*x % 10) as u64), 0).unwrap()
    } else {
        AsyncWaitOperator::new(config, f, 0).unwrap()
    };
    let mut m = Model {
        mode,
        capacity,
        timeout_fallback: fallback,
        max_retries,
        now: 0,
        entries: vec![],
        recs: HashMap::new(),
        landed: vec![],
        next_seq: 0,
        next_wm: 0,
        invocations: 0,
        emitted_records: HashMap::new(),
    };
    let mut current = None;
    let mut pop_limit: Option<u8> = None;
    let final_advances =
        std::iter::once(Op::PopLimit(None)).chain((0..12).map(|_| Op::Advance(29)));
    for o in ops.into_iter().chain(final_advances) {
        let now = ms(m.now);
        match o {
            Op::Push(key, complete_inline, express) => {
                let seq = m.next_seq;
                let input = seq as i64 * 10 + key as i64 + 10;
                let full = m.entries.len() == m.capacity;
                inline.set(if full { None } else { complete_inline });
                let res = if express {
                    op.process_express(StreamElement::record(input), now)
                } else {
                    op.process(StreamElement::record(input), now).map(|()| None)
                };
                if full {
                    prop_assert!(matches!(res, Err(ProcessError::Full(_))), "expected Full");
                    continue;
                }
                let direct = match res {
                    Ok(direct) => direct,
                    Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                };
                prop_assert!(express || direct.is_none());
                m.next_seq += 1;
                m.invocations += 1;
                m.entries.push(Entry::Rec(seq));
                m.recs.insert(
                    seq,
                    Rec {
                        input,
                        key: key as u64,
                        deadline: m.now + TIMEOUT_MS,
                        attempt: 1,
                        landed: false,
                        state: State::InFlight,
                        outputs: vec![],
                    },
                );
                if let Some(kind) = complete_inline {
                    m.recs.get_mut(&seq).unwrap().landed = true;
                    let v = inline_value(input);
                    let result = match kind {
                        0 => Ok(vec![v]),
                        1 => Ok(vec![]),
                        2 => Ok(vec![v, v + 1]),
                        _ => Err(()),
                    };
                    m.landed.push((seq, result));
                }
                if !m.landed.is_empty() {
                    m.collect();
                }
                m.account_silent(&held_by_operator(&op))
                    .map_err(TestCaseError::fail)?;
                if let Some(e) = direct {
                    let out = simplify(e);
                    m.observe(&out, &mut current).map_err(TestCaseError::fail)?;
                }
            }
            Op::Watermark => {
                let res = op.process(StreamElement::Watermark(m.next_wm), now);
                if m.entries.len() == m.capacity {
                    prop_assert!(matches!(res, Err(ProcessError::Full(_))));
                    continue;
                }
                prop_assert!(res.is_ok());
                m.entries.push(Entry::Wm(m.next_wm));
                m.next_wm += 1;
            }
            Op::Complete(pick, kind) => {
                let reqs = requests.borrow();
                if reqs.is_empty() {
                    continue;
                }
                let i = pick as usize % reqs.len();
                let handle = reqs[i].handle.clone();
                let seq = handle.id().sequence;
                let attempt = reqs[..=i]
                    .iter()
                    .filter(|r| r.handle.id().sequence == seq)
                    .count() as u32;
                drop(reqs);
                let input = seq as i64 * 10;
                let expected = m.verdict(seq, attempt);
                let verdict = complete_as(&handle, kind, input);
                let result = match kind {
                    0 => Ok(vec![input]),
                    1 => Ok(vec![]),
                    2 => Ok(vec![input, input + 1]),
                    _ => Err(()),
                };
                prop_assert_eq!(
                    verdict,
                    expected,
                    "verdict for seq {} attempt {}",
                    seq,
                    attempt
                );
                if verdict == Completion::Accepted {
                    m.recs.get_mut(&seq).unwrap().landed = true;
                    m.landed.push((seq, result));
                }
            }
            Op::Advance(dt) => {
                m.now += dt as u64;
                op.advance(ms(m.now))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.collect();
                m.fire_retries_and_timeouts();
            }
            Op::PopLimit(limit) => pop_limit = limit,
        }
        let now = ms(m.now);
        let mut popped = 0;
        let mut drained = false;
        while pop_limit.is_none_or(|l| popped < l) {
            let Some(e) = op.pop_output(now) else {
                drained = true;
                break;
            };
            popped += 1;
            m.account_silent(&held_by_operator(&op))
                .map_err(TestCaseError::fail)?;
            let out = simplify(e);
            m.observe(&out, &mut current).map_err(TestCaseError::fail)?;
        }
        if !drained {
            // The "sink" had no more room: the operator may still hold outputs (and be in
            // the middle of a record's outputs). Records without outputs leave unseen, so
            // the operator's held entries say which of them left; each must have been
            // allowed to.
            let held = held_by_operator(&op);
            m.account_silent(&held).map_err(TestCaseError::fail)?;
            prop_assert_eq!(held, held_by_model(&m), "held entries differ");
            continue;
        }
        prop_assert!(current.is_none(), "a record's outputs were split");
        m.account_silent(&held_by_operator(&op))
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            held_by_operator(&op),
            held_by_model(&m),
            "held entries differ"
        );
        for pos in 0..m.entries.len() {
            prop_assert!(
                !m.may_leave(pos),
                "entry {:?} may leave but was held",
                m.entries[pos]
            );
        }
        prop_assert_eq!(op.occupancy(), m.entries.len());
        prop_assert_eq!(requests.borrow().len(), m.invocations, "invocations");
        let pending = m
            .recs
            .values()
            .filter(|r| matches!(r.state, State::InFlight | State::RetryWait { .. }))
            .count();
        prop_assert_eq!(op.in_flight(), pending);
    }
    prop_assert!(op.is_empty(), "everything left after the deadlines passed");
    prop_assert_eq!(m.emitted_records.len() as u64, m.next_seq);
    prop_assert!(
        m.emitted_records.values().all(|&n| n == 1),
        "a record left twice"
    );
    Ok(())
}

fn mode_strategy() -> impl Strategy<Value = OrderMode> {
    prop_oneof![
        Just(OrderMode::Ordered),
        Just(OrderMode::Unordered),
        Just(OrderMode::KeyOrdered)
    ]
}

const CASES: u32 = if cfg!(debug_assertions) { 400 } else { 3000 };

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn operator_matches_the_reference_model(
        mode in mode_strategy(),
        capacity in 1usize..7,
        fallback in any::<bool>(),
        retries in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(), 1..120),
    ) {
        run(mode, capacity, fallback, retries, ops)?;
    }
}
