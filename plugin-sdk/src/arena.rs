//! The plugin's allocator: a bump arena in the plugin's own initial memory,
//! falling back to the standard allocator when it is full.
//!
//! The host gives every call a fresh instance, so nothing a call allocates
//! outlives it and freeing can wait for the instance to go. The standard
//! allocator starts each instance by growing linear memory, and every growth
//! costs the host two `mprotect` calls (grow now, shrink when the slot is
//! reused) with a TLB shoot-down each: about half the fixed cost of a call.
//! With the arena, a call that allocates less than [`ARENA_BYTES`] never
//! grows memory. The arena is zero-initialised (`.bss`), so it costs the
//! plugin file nothing and the host only the pages a call touches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes a call can allocate before the standard allocator takes over.
pub const ARENA_BYTES: usize = 1 << 20;

#[repr(C, align(16))]
struct Bytes([u8; ARENA_BYTES]);

/// The arena and how much of it is used.
pub struct Arena {
    bytes: UnsafeCell<Bytes>,
    used: UnsafeCell<usize>,
}

// SAFETY: wasm32-unknown-unknown plugins run on one thread (the host calls an
// instance from one thread at a time, and the target has no threads).
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Arena {
        Arena { bytes: UnsafeCell::new(Bytes([0; ARENA_BYTES])), used: UnsafeCell::new(0) }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + ARENA_BYTES).contains(&(ptr as usize))
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY (all blocks below): one thread, and no reference into `used` outlives a statement.
        let used = unsafe { &mut *self.used.get() };
        let start = (self.base() + *used).next_multiple_of(layout.align());
        let end = start.saturating_add(layout.size());
        if end <= self.base() + ARENA_BYTES {
            *used = end - self.base();
            return start as *mut u8;
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            // The latest allocation is given back (a Vec that grew and moved);
            // anything else waits for the instance to go.
            let used = unsafe { &mut *self.used.get() };
            if ptr as usize + layout.size() == self.base() + *used {
                *used = ptr as usize - self.base();
            }
            return;
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(ptr) {
            let used = unsafe { &mut *self.used.get() };
            // The latest allocation grows or shrinks in place when it fits.
            if ptr as usize + layout.size() == self.base() + *used
                && ptr as usize + new_size <= self.base() + ARENA_BYTES
            {
                *used = ptr as usize + new_size - self.base();
                return ptr;
            }
            if new_size <= layout.size() {
                return ptr;
            }
            // SAFETY: the caller guarantees `layout.align()` and a nonzero `new_size` fit a Layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
            }
            return new;
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_allocations_come_from_the_arena_and_large_ones_from_the_system() {
        // A static, as in a plugin: a megabyte is too much for a test thread's stack.
        static ARENA: Arena = Arena::new();
        let arena = &ARENA;
        unsafe {
            let a = arena.alloc(Layout::from_size_align(10, 8).unwrap());
            assert!(arena.contains(a) && a as usize % 8 == 0);
            // The latest allocation grows in place.
            let grown = arena.realloc(a, Layout::from_size_align(10, 8).unwrap(), 100);
            assert_eq!(grown, a);
            let b = arena.alloc(Layout::from_size_align(3, 1).unwrap());
            assert_eq!(b as usize, a as usize + 100);
            // Not the latest: moved, contents kept.
            *a = 42;
            let moved = arena.realloc(a, Layout::from_size_align(100, 8).unwrap(), 200);
            assert!(moved != a && *moved == 42 && arena.contains(moved));
            // Past the arena: the system allocator, freed to it.
            let big_layout = Layout::from_size_align(ARENA_BYTES, 8).unwrap();
            let big = arena.alloc(big_layout);
            assert!(!big.is_null() && !arena.contains(big));
            arena.dealloc(big, big_layout);
            // The latest allocation given back is reused.
            let layout = Layout::from_size_align(16, 16).unwrap();
            let c = arena.alloc(layout);
            arena.dealloc(c, layout);
            assert_eq!(arena.alloc(layout), c);
        }
    }
}
