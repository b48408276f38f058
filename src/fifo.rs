//! A fixed-capacity FIFO of `Copy` values: the operator's ready and landed queues.
//!
//! Cheaper than `VecDeque` on the hot path: the capacity is a power of two fixed at
//! construction, so push and pop are a masked index and an increment, with no growth path.
//! Callers guarantee never to push more than the capacity they asked for (every queue holds at
//! most one entry per slot); a push beyond it is a bug and panics.

pub(crate) struct Fifo<T: Copy> {
    buf: Box<[T]>,
    mask: usize,
    head: usize,
    tail: usize,
}

impl<T: Copy + Default> Fifo<T> {
    /// A FIFO for at least `capacity` values.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let size = capacity.max(1).next_power_of_two();
        Fifo {
            buf: vec![T::default(); size].into_boxed_slice(),
            mask: size - 1,
            head: 0,
            tail: 0,
        }
    }
}

impl<T: Copy> Fifo<T> {
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        assert!(
            self.tail.wrapping_sub(self.head) <= self.mask,
            "fifo overflow"
        );
        let i = self.tail & self.mask;
        // SAFETY: buf.len() == mask + 1 (a power of two), so i = x & mask < buf.len().
        unsafe { *self.buf.get_unchecked_mut(i) = value };
        self.tail = self.tail.wrapping_add(1);
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.head == self.tail {
            return None;
        }
        let i = self.head & self.mask;
        // SAFETY: buf.len() == mask + 1 (a power of two), so i = x & mask < buf.len().
        let v = unsafe { *self.buf.get_unchecked(i) };
        self.head = self.head.wrapping_add(1);
        Some(v)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around_in_order() {
        let mut f: Fifo<u32> = Fifo::with_capacity(3);
        for round in 0..10 {
            for i in 0..4 {
                f.push(round * 10 + i);
            }
            for i in 0..4 {
                assert_eq!(f.pop(), Some(round * 10 + i));
            }
            assert!(f.is_empty());
            assert_eq!(f.pop(), None);
        }
    }

    #[test]
    #[should_panic(expected = "fifo overflow")]
    fn overflow_is_a_bug() {
        let mut f: Fifo<u32> = Fifo::with_capacity(2);
        for i in 0..3 {
            f.push(i);
        }
    }
}
