//! Handing outputs out: records in order (or as they are ready), watermarks, failures.

use super::*;

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// Takes the next output that may leave now, if any. Call until `None` after
    /// [`process`](Self::process) and [`advance`](Self::advance).
    #[inline]
    pub fn pop_output(&mut self, now: Nanos) -> Option<Emitted<F::Out, F::In>> {
        self.settle(now);
        if let Some(out) = self.next_drained() {
            return Some(out);
        }
        while let Some(idx) = self.next_ready() {
            if let Some(out) = self.emit(idx, now) {
                return Some(out);
            }
        }
        None
    }

    /// The next entry that may leave. Ordered mode needs no queue: only the head can leave,
    /// and it can when it is done.
    #[inline(always)]
    pub(super) fn next_ready(&mut self) -> Option<u32> {
        if self.mode == OrderMode::Ordered {
            let head = self.slots.head(ListId::Order)?;
            match self.slots.get(head).state {
                SlotState::Done | SlotState::Watermark => Some(head),
                _ => None,
            }
        } else {
            self.ready.pop()
        }
    }

    pub(super) fn next_drained(&mut self) -> Option<Emitted<F::Out, F::In>> {
        let d = self.draining.as_mut()?;
        match d.rest.next() {
            Some(value) => {
                let out = Emitted::Record {
                    value,
                    timestamp: d.timestamp,
                    sequence: d.sequence,
                };
                if d.rest.len() == 0 {
                    self.draining = None;
                }
                self.counters.outputs += 1;
                Some(out)
            }
            None => {
                self.draining = None;
                None
            }
        }
    }

    /// Releases entry `idx` and returns what it emits (nothing for a skipped record or a record
    /// with no outputs).
    pub(super) fn emit(&mut self, idx: u32, now: Nanos) -> Option<Emitted<F::Out, F::In>> {
        let slot = self.slots.get_mut(idx);
        slot.queued = false;
        if slot.state == SlotState::Watermark {
            let wm = slot.timestamp.expect("watermark value");
            self.slots.release(idx);
            self.on_watermark_left();
            return Some(Emitted::Watermark(wm));
        }
        debug_assert_eq!(slot.state, SlotState::Done);
        let sequence = slot.sequence;
        let timestamp = slot.timestamp;
        self.latency.record(now.nanos_since(slot.intake));
        let next_of_key = (self.mode == OrderMode::KeyOrdered).then(|| self.unlink_key(idx));
        let resolution = self.board.take_for_emit(idx); // handles are stale from now on
        let input = self.slots.release(idx);
        self.after_record_left(next_of_key.flatten());
        match resolution {
            Ok(outputs) => self.first_output(outputs, timestamp, sequence),
            Err(error) => match self.config.error_policy() {
                ErrorPolicy::SideOutput => {
                    self.counters.side_outputs += 1;
                    Some(Emitted::Failed {
                        input: input.expect("record input"),
                        sequence,
                        error,
                    })
                }
                _ => {
                    self.counters.skipped += 1;
                    None
                }
            },
        }
    }

    /// A record with these outputs left: returns the first, keeping any others for the next
    /// [`pop_output`](Self::pop_output) calls.
    #[inline(always)]
    pub(super) fn first_output(
        &mut self,
        outputs: Outputs<F::Out>,
        timestamp: Option<i64>,
        sequence: u64,
    ) -> Option<Emitted<F::Out, F::In>> {
        match outputs {
            Outputs::One(value) => {
                self.counters.outputs += 1;
                Some(Emitted::Record {
                    value,
                    timestamp,
                    sequence,
                })
            }
            Outputs::Empty => None,
            Outputs::Many(values) => {
                self.draining = Some(Draining {
                    rest: values.into_iter(),
                    timestamp,
                    sequence,
                });
                self.next_drained()
            }
        }
    }

    /// Queues `idx` to leave (unordered modes; ordered mode reads its head instead).
    #[inline]
    pub(super) fn push_ready(&mut self, idx: u32) {
        if self.mode == OrderMode::Ordered {
            return;
        }
        let slot = self.slots.get_mut(idx);
        if !slot.queued {
            slot.queued = true;
            self.ready.push(idx);
        }
    }
}
