//! The slot table: the operator's fixed set of `capacity` entries.
//!
//! Every element the operator holds (a record in flight, a finished record waiting to be
//! emitted, a watermark) occupies one slot. Slots are allocated from a free list and threaded
//! onto two intrusive doubly-linked lists:
//!
//! * **order** — every live entry in input order (what ordered emission and snapshots walk);
//! * **pending** — records still waiting for their final result, in input order, which is also
//!   deadline order because every record gets the same timeout from its first invocation.
//!
//! Nothing here allocates after construction; indices are `u32` with [`NIL`] for "none".

use crate::time::Nanos;

/// "No slot".
pub(crate) const NIL: u32 = u32::MAX;

/// Life cycle of a slot: `Free → InFlight ⇄ RetryWait → Done → Free`, or `Free → Watermark →
/// Free`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    InFlight,
    RetryWait,
    Done,
    Watermark,
}

/// The two intrusive lists a slot can be on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListId {
    Order = 0,
    Pending = 1,
}

impl ListId {
    /// The list's index into per-slot and per-table arrays of two.
    #[inline(always)]
    fn index(self) -> usize {
        match self {
            ListId::Order => 0,
            ListId::Pending => 1,
        }
    }
}

#[derive(Copy, Clone, Debug)]
struct Links {
    prev: u32,
    next: u32,
    linked: bool,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
    linked: false,
};

#[derive(Copy, Clone, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

pub(crate) struct Slot<In> {
    pub state: SlotState,
    pub sequence: u64,
    pub input: Option<In>,
    /// Event time of a record, or the value of a watermark.
    pub timestamp: Option<i64>,
    pub intake: Nanos,
    pub deadline: Nanos,
    pub attempts: u32,
    /// Watermarks admitted before this entry (its order segment).
    pub segment: u64,
    pub key: u64,
    /// Next record with the same key, in input order (key-ordered mode).
    pub key_next: u32,
    /// Whether this record is the oldest live record of its key.
    pub key_head: bool,
    /// Whether the slot sits in the ready queue.
    pub queued: bool,
    links: [Links; 2],
}

impl<In> Slot<In> {
    fn vacant() -> Self {
        Slot {
            state: SlotState::Free,
            sequence: 0,
            input: None,
            timestamp: None,
            intake: Nanos::ZERO,
            deadline: Nanos::NEVER,
            attempts: 0,
            segment: 0,
            key: 0,
            key_next: NIL,
            key_head: false,
            queued: false,
            links: [UNLINKED; 2],
        }
    }
}

pub(crate) struct SlotTable<In> {
    slots: Box<[Slot<In>]>,
    free: Vec<u32>,
    lists: [List; 2],
}

impl<In> SlotTable<In> {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity >= 1 && capacity < NIL as usize);
        SlotTable {
            slots: (0..capacity).map(|_| Slot::vacant()).collect(),
            // Popped from the end: slot 0 first, and recently freed slots are reused first
            // (they are warm in the cache).
            free: (0..capacity as u32).rev().collect(),
            lists: [EMPTY; 2],
        }
    }

    /// The slot at `idx`.
    ///
    /// Every index this table hands out or stores (free list, list links, heads and tails)
    /// comes from `0..capacity`, and callers only pass indices obtained from it, so `idx` is
    /// in bounds; the check is kept in debug builds.
    #[inline(always)]
    fn at(&self, idx: u32) -> &Slot<In> {
        debug_assert!(
            (idx as usize) < self.slots.len(),
            "slot index {idx} out of range"
        );
        // SAFETY: idx < self.slots.len() by the table's invariant (see above).
        unsafe { self.slots.get_unchecked(idx as usize) }
    }

    /// The slot at `idx`, mutably (same invariant as [`Self::at`]).
    #[inline(always)]
    fn at_mut(&mut self, idx: u32) -> &mut Slot<In> {
        debug_assert!(
            (idx as usize) < self.slots.len(),
            "slot index {idx} out of range"
        );
        // SAFETY: idx < self.slots.len() by the table's invariant (see `at`).
        unsafe { self.slots.get_unchecked_mut(idx as usize) }
    }

    /// Live entries (the operator's queue occupancy).
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    #[inline]
    pub(crate) fn get(&self, idx: u32) -> &Slot<In> {
        self.at(idx)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut Slot<In> {
        self.at_mut(idx)
    }

    /// Takes a free slot and appends it to the order list; `None` when full.
    #[inline]
    pub(crate) fn allocate(&mut self, state: SlotState) -> Option<u32> {
        let idx = self.allocate_unlinked(state)?;
        self.push_back(ListId::Order, idx);
        Some(idx)
    }

    /// Takes a free slot without putting it on the order list (the caller links it with
    /// [`push_back`](Self::push_back) or hands it back with
    /// [`free_unlinked`](Self::free_unlinked)); `None` when full.
    #[inline(always)]
    pub(crate) fn allocate_unlinked(&mut self, state: SlotState) -> Option<u32> {
        let idx = self.free.pop()?;
        let slot = self.at_mut(idx);
        debug_assert_eq!(slot.state, SlotState::Free);
        slot.state = state;
        Some(idx)
    }

    /// Hands back a slot from [`allocate_unlinked`](Self::allocate_unlinked) that was never
    /// linked and never given an input.
    #[inline(always)]
    pub(crate) fn free_unlinked(&mut self, idx: u32) {
        let slot = self.at_mut(idx);
        debug_assert!(!slot.links[0].linked && !slot.links[1].linked);
        debug_assert!(slot.input.is_none());
        slot.state = SlotState::Free;
        self.free.push(idx);
    }

    /// Unlinks the slot from the order list, clears it and returns it to the free list.
    /// Returns the input it held.
    ///
    /// The slot must be off the pending list already: a record leaves it when it resolves
    /// (before it can be emitted), and a watermark is never on it.
    #[inline]
    pub(crate) fn release(&mut self, idx: u32) -> Option<In> {
        debug_assert!(
            !self.at(idx).links[ListId::Pending.index()].linked,
            "released a slot still on the pending list"
        );
        if self.lists[ListId::Order.index()].head == idx {
            self.unlink_head(ListId::Order, idx);
        } else {
            self.unlink(ListId::Order, idx);
        }
        let slot = self.at_mut(idx);
        debug_assert_ne!(slot.state, SlotState::Free);
        slot.state = SlotState::Free;
        // `key_head`, `queued` and `deadline` are written whenever a slot is (re)used before
        // anything reads them; only the key chain link must be reset here.
        slot.key_next = NIL;
        let input = slot.input.take();
        self.free.push(idx);
        input
    }

    /// Unlinks `idx`, which is the head of `list` (cheaper than [`Self::unlink`]).
    #[inline(always)]
    fn unlink_head(&mut self, list: ListId, idx: u32) {
        let l = list.index();
        debug_assert_eq!(self.lists[l].head, idx);
        let next = self.at(idx).links[l].next;
        self.lists[l].head = next;
        if next == NIL {
            self.lists[l].tail = NIL;
        } else {
            self.at_mut(next).links[l].prev = NIL;
        }
        self.at_mut(idx).links[l] = UNLINKED;
    }

    pub(crate) fn head(&self, list: ListId) -> Option<u32> {
        let h = self.lists[list.index()].head;
        (h != NIL).then_some(h)
    }

    pub(crate) fn next(&self, list: ListId, idx: u32) -> Option<u32> {
        let n = self.at(idx).links[list.index()].next;
        (n != NIL).then_some(n)
    }

    pub(crate) fn is_linked(&self, list: ListId, idx: u32) -> bool {
        self.at(idx).links[list.index()].linked
    }

    #[inline]
    pub(crate) fn push_back(&mut self, list: ListId, idx: u32) {
        let l = list.index();
        debug_assert!(!self.at(idx).links[l].linked);
        let tail = self.lists[l].tail;
        self.at_mut(idx).links[l] = Links {
            prev: tail,
            next: NIL,
            linked: true,
        };
        if tail == NIL {
            self.lists[l].head = idx;
        } else {
            self.at_mut(tail).links[l].next = idx;
        }
        self.lists[l].tail = idx;
    }

    #[inline]
    pub(crate) fn unlink(&mut self, list: ListId, idx: u32) {
        let l = list.index();
        let Links { prev, next, linked } = self.at(idx).links[l];
        debug_assert!(linked, "unlinking a slot that is not on the list");
        if prev == NIL {
            self.lists[l].head = next;
        } else {
            self.at_mut(prev).links[l].next = next;
        }
        if next == NIL {
            self.lists[l].tail = prev;
        } else {
            self.at_mut(next).links[l].prev = prev;
        }
        self.at_mut(idx).links[l] = UNLINKED;
    }

    /// Iterates a list from head to tail.
    pub(crate) fn iter(&self, list: ListId) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.lists[list.index()].head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let idx = cur;
            cur = self.at(idx).links[list.index()].next;
            Some(idx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_stops_at_capacity_and_release_recycles() {
        let mut t: SlotTable<u32> = SlotTable::new(3);
        let a = t.allocate(SlotState::InFlight).unwrap();
        let b = t.allocate(SlotState::InFlight).unwrap();
        let c = t.allocate(SlotState::InFlight).unwrap();
        assert!(t.is_full());
        assert_eq!(t.allocate(SlotState::InFlight), None);
        assert_eq!(t.iter(ListId::Order).collect::<Vec<_>>(), vec![a, b, c]);
        t.release(b);
        assert_eq!(t.iter(ListId::Order).collect::<Vec<_>>(), vec![a, c]);
        let d = t.allocate(SlotState::InFlight).unwrap();
        assert_eq!(d, b, "the freed slot is reused");
        assert_eq!(t.iter(ListId::Order).collect::<Vec<_>>(), vec![a, c, d]);
    }

    #[test]
    fn lists_unlink_head_middle_and_tail() {
        let mut t: SlotTable<u32> = SlotTable::new(4);
        let ids: Vec<u32> = (0..4)
            .map(|_| t.allocate(SlotState::Done).unwrap())
            .collect();
        for &i in &ids {
            t.push_back(ListId::Pending, i);
        }
        t.unlink(ListId::Pending, ids[1]);
        t.unlink(ListId::Pending, ids[0]);
        t.unlink(ListId::Pending, ids[3]);
        assert_eq!(t.iter(ListId::Pending).collect::<Vec<_>>(), vec![ids[2]]);
        assert_eq!(t.iter(ListId::Pending).count(), 1);
        t.unlink(ListId::Pending, ids[2]);
        assert_eq!(t.iter(ListId::Pending).count(), 0);
        assert_eq!(t.head(ListId::Pending), None);
        // Release unlinks from the order list: the head, the tail and one in the middle.
        t.release(ids[0]);
        t.release(ids[3]);
        assert_eq!(
            t.iter(ListId::Order).collect::<Vec<_>>(),
            vec![ids[1], ids[2]]
        );
        t.release(ids[2]);
        assert_eq!(t.iter(ListId::Order).collect::<Vec<_>>(), vec![ids[1]]);
        t.release(ids[1]);
        assert_eq!(t.head(ListId::Order), None);
        let e = t.allocate(SlotState::Done).unwrap();
        assert_eq!(t.iter(ListId::Order).collect::<Vec<_>>(), vec![e]);
    }
}
