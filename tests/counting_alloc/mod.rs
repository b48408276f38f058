//! A counting global allocator for the allocation tests: it forwards to the system
//! allocator and counts the allocations (`alloc`, `alloc_zeroed`, `realloc`) that its filter
//! says count. A test binary declares it with
//! `#[global_allocator] static GLOBAL: Counting = Counting::new(filter);`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations counted so far.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The allocator; `counted` decides, per call, whether it counts (e.g. only on some thread).
pub struct Counting {
    counted: fn() -> bool,
}

impl Counting {
    /// Counts the allocations for which `counted()` is true.
    pub const fn new(counted: fn() -> bool) -> Self {
        Counting { counted }
    }

    fn count(&self) {
        if (self.counted)() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
