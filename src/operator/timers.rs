//! Retries and timeouts: which records to try again, and when their deadlines fire.

use super::*;

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// Asks the function's predicates whether the result in `idx` should be retried. A panic
    /// in a predicate becomes the record's result.
    pub(super) fn retry_wanted(&mut self, idx: u32) -> bool {
        let result = self.board.take_result(idx);
        let function = &self.function;
        let asked = catch_unwind(AssertUnwindSafe(|| match &result {
            Ok(outputs) => function.retry_on_result(outputs),
            Err(RecordError::Function(error)) => function.retry_on_error(error),
            Err(_) => false,
        }));
        match asked {
            Ok(wanted) => {
                self.board.set_result(idx, result);
                wanted
            }
            Err(payload) => {
                self.counters.panics += 1;
                self.board
                    .set_result(idx, Err(RecordError::from_panic(payload)));
                false
            }
        }
    }

    /// Schedules the next attempt if the strategy allows one that starts before the deadline.
    pub(super) fn schedule_retry(&mut self, idx: u32, now: Nanos) -> bool {
        let slot = self.slots.get_mut(idx);
        let Some(delay) = self.config.retry().delay_before_retry(slot.attempts) else {
            return false;
        };
        let due = now + delay;
        if due >= slot.deadline {
            return false; // no retry starts past the timeout (SPEC S8)
        }
        slot.state = SlotState::RetryWait;
        self.retries.push(Reverse((due, idx, slot.sequence)));
        self.board.retire(idx);
        self.counters.retries += 1;
        true
    }

    pub(super) fn fire_retries(&mut self, now: Nanos) -> Result<(), OperatorError> {
        while let Some(&Reverse((due, idx, sequence))) = self.retries.peek() {
            if due > now {
                break;
            }
            self.retries.pop();
            let slot = self.slots.get_mut(idx);
            if slot.state != SlotState::RetryWait || slot.sequence != sequence {
                continue; // resolved meanwhile (timed out)
            }
            if now >= slot.deadline {
                continue; // no retry starts past the timeout; the timeout resolves it
            }
            slot.state = SlotState::InFlight;
            slot.attempts += 1;
            // Completions that landed meanwhile are collected by `advance` afterwards.
            self.invoke(idx, now)?;
        }
        Ok(())
    }

    pub(super) fn fire_timeouts(&mut self, now: Nanos) -> Result<(), OperatorError> {
        while let Some(idx) = self.slots.head(ListId::Pending) {
            if self.slots.get(idx).deadline > now {
                break;
            }
            if self.board.is_landed(idx) {
                // The completion arrived before the timeout was noticed: it wins.
                self.collect(now)?;
                continue;
            }
            self.counters.timeouts += 1;
            if self.slots.get(idx).state == SlotState::InFlight {
                self.board.time_out(idx);
            }
            let input = self.slots.get(idx).input.as_ref().expect("record input");
            let function = &self.function;
            let resolution: Resolution<F::Out> =
                match catch_unwind(AssertUnwindSafe(|| function.timeout(input))) {
                    Ok(TimeoutOutcome::Fail) => Err(RecordError::TimedOut {
                        after: self.config.timeout().unwrap_or_default(),
                    }),
                    Ok(TimeoutOutcome::Complete(outputs)) => Ok(outputs),
                    Ok(TimeoutOutcome::Error(e)) => Err(RecordError::Function(e)),
                    Err(payload) => {
                        self.counters.panics += 1;
                        Err(RecordError::from_panic(payload))
                    }
                };
            self.board.set_result(idx, resolution);
            self.resolve(idx)?;
        }
        Ok(())
    }
}
