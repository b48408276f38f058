//! Emission rules of the three order modes, and key bookkeeping for key-ordered mode.
//!
//! Ordered mode needs no queue: `pop_output` takes the head while it is done. In the other
//! modes an entry becomes *ready* (queued for [`AsyncWaitOperator::pop_output`]) exactly once,
//! at the first moment its mode allows it to leave. Each transition that can make entries ready checks
//! only the entries it can affect, so the cost per record is constant:
//! * a record resolves → it alone may become ready;
//! * a record leaves → the next record of its key, and (unordered modes) a watermark now at the
//!   head;
//! * a watermark leaves → (unordered modes) the records of the next segment that are done,
//!   visited once each because each segment opens once.

use std::hash::Hasher;

use super::slots::{ListId, SlotState, NIL};
use super::AsyncWaitOperator;
use crate::config::OrderMode;
use crate::function::AsyncFunction;

impl<F: AsyncFunction> AsyncWaitOperator<F> {
    /// Whether the done entry `idx` may leave now.
    pub(super) fn emittable(&self, idx: u32) -> bool {
        let slot = self.slots.get(idx);
        match self.mode {
            OrderMode::Ordered => self.slots.head(ListId::Order) == Some(idx),
            OrderMode::Unordered => slot.segment == self.active_segment,
            OrderMode::KeyOrdered => slot.segment == self.active_segment && slot.key_head,
        }
    }

    /// A record left; `next_of_key` is the next record of its key (key-ordered mode).
    pub(super) fn after_record_left(&mut self, next_of_key: Option<u32>) {
        if self.mode == OrderMode::Ordered {
            return; // the head is read directly
        }
        if let Some(next) = next_of_key {
            if self.slots.get(next).state == SlotState::Done && self.emittable(next) {
                self.push_ready(next);
            }
        }
        self.queue_head_if_watermark();
    }

    /// A watermark left: in the unordered modes the next segment opens.
    pub(super) fn on_watermark_left(&mut self) {
        if self.mode == OrderMode::Ordered {
            return; // the head is read directly
        }
        self.active_segment += 1;
        let mut cursor = self.slots.head(ListId::Order);
        while let Some(idx) = cursor {
            let slot = self.slots.get(idx);
            match slot.state {
                SlotState::Watermark => {
                    if self.slots.head(ListId::Order) == Some(idx) {
                        self.push_ready(idx);
                    }
                    break;
                }
                SlotState::Done if self.emittable(idx) => self.push_ready(idx),
                _ => {}
            }
            cursor = self.slots.next(ListId::Order, idx);
        }
    }

    fn queue_head_if_watermark(&mut self) {
        if let Some(head) = self.slots.head(ListId::Order) {
            if self.slots.get(head).state == SlotState::Watermark {
                self.push_ready(head);
            }
        }
    }

    /// Appends record `idx` to the chain of its key.
    pub(super) fn link_key(&mut self, idx: u32, key: u64) {
        match self.key_tails.insert(key, idx) {
            Some(tail) => {
                self.slots.get_mut(tail).key_next = idx;
                self.slots.get_mut(idx).key_head = false;
            }
            None => self.slots.get_mut(idx).key_head = true,
        }
    }

    /// Removes the head record `idx` from its key chain; returns the new head of the key.
    pub(super) fn unlink_key(&mut self, idx: u32) -> Option<u32> {
        let slot = self.slots.get(idx);
        debug_assert!(slot.key_head, "only the oldest record of a key leaves");
        let next = slot.key_next;
        if next == NIL {
            let removed = self.key_tails.remove(&slot.key);
            debug_assert_eq!(removed, Some(idx));
            None
        } else {
            self.slots.get_mut(next).key_head = true;
            Some(next)
        }
    }
}

/// Hasher for keys that are already 64-bit hashes: one SplitMix64 finalizer round, so every
/// bit of the key affects the bucket and the control bits.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyMix(u64);

impl Hasher for KeyMix {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        let mut z = v.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
