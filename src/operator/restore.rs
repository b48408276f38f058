//! Restoring an operator from a snapshot (SPEC S10–S12): re-admitting the snapshotted
//! inputs in order, and listing what a snapshot must hold.

use super::*;

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// Re-takes a record from a snapshot with its original sequence number (SPEC S11), so its
    /// request id stays the same. Sequence numbers must increase.
    pub fn restore_record(
        &mut self,
        sequence: u64,
        value: F::In,
        timestamp: Option<i64>,
        now: Nanos,
    ) -> Result<(), ProcessError<F::In>> {
        if self.slots.is_full() {
            return Err(ProcessError::Full(StreamElement::Record {
                value,
                timestamp,
            }));
        }
        debug_assert!(
            sequence >= self.next_sequence,
            "restored sequences must increase"
        );
        self.admit_record(
            sequence.max(self.next_sequence),
            value,
            timestamp,
            now,
            false,
        )?;
        Ok(())
    }

    /// Re-takes a watermark from a snapshot (SPEC S11), in its place among the restored
    /// records. A watermark below the last one is refused like in [`process`](Self::process).
    pub fn restore_watermark(&mut self, watermark: i64) -> Result<(), ProcessError<F::In>> {
        if self.slots.is_full() {
            return Err(ProcessError::Full(StreamElement::Watermark(watermark)));
        }
        self.admit_watermark(watermark)?;
        Ok(())
    }

    /// Re-takes one snapshot entry: [`restore_record`](Self::restore_record) or
    /// [`restore_watermark`](Self::restore_watermark).
    pub fn restore_entry(
        &mut self,
        entry: RestoredEntry<F::In>,
        now: Nanos,
    ) -> Result<(), ProcessError<F::In>> {
        match entry {
            RestoredEntry::Record {
                sequence,
                value,
                timestamp,
            } => self.restore_record(sequence, value, timestamp, now),
            RestoredEntry::Watermark(wm) => self.restore_watermark(wm),
        }
    }

    /// After a restore: new records continue at sequence `next` (never goes back).
    pub fn resume_sequence(&mut self, next: u64) {
        self.next_sequence = self.next_sequence.max(next);
    }

    /// The last watermark taken, if any.
    pub fn last_watermark(&self) -> Option<i64> {
        self.last_watermark
    }

    /// After a restore: the last watermark the snapshot had seen, so that a regression below it
    /// is still refused. Only raises it.
    pub fn restore_last_watermark(&mut self, watermark: Option<i64>) {
        if let Some(wm) = watermark {
            self.last_watermark = Some(self.last_watermark.map_or(wm, |l| l.max(wm)));
        }
    }

    /// Every input taken and not yet emitted, in input order (SPEC S10): records in flight,
    /// records done but waiting, and watermarks. Reading it does not wait for anything.
    pub fn pending_entries(&self) -> impl Iterator<Item = PendingEntry<'_, F::In>> + '_ {
        self.slots.iter(ListId::Order).map(|idx| {
            let slot = self.slots.get(idx);
            match slot.state {
                SlotState::Watermark => {
                    PendingEntry::Watermark(slot.timestamp.expect("watermark value"))
                }
                _ => PendingEntry::Record {
                    sequence: slot.sequence,
                    input: slot.input.as_ref().expect("record input"),
                    timestamp: slot.timestamp,
                },
            }
        })
    }
}
