//! The binary's global allocator: the system's (glibc's `malloc`), with a small per-thread cache
//! in front of it for over-aligned blocks.
//!
//! tokio aligns its task cells and its sockets' registrations to 128 bytes, so every connection
//! allocates two such blocks and every HTTP/2 stream one (hyper spawns each as a task). glibc
//! serves an aligned request on its slow path (`_int_memalign`: a larger block, split, the ends
//! freed), about 800 instructions each, where an ordinary small `malloc` takes a few dozen. Here
//! a freed over-aligned block waits in its thread's cache, in a free list of its size class, for
//! the next request of that class. Everything else goes straight to the system allocator.
//!
//! The cache is bounded ([`MAX_CACHED`] bytes a thread), and a thread gives its blocks back when
//! it ends. An embedder picks its own allocator; this one is what the `fulcrum` binary uses.

// A global allocator is unsafe by its contract; this one's unsafe code is what `GlobalAlloc`
// requires, and the free lists' reads and writes of blocks this allocator owns (README, "What
// pays").
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// The alignment glibc's `malloc` gives every block (x86_64 and aarch64): layouts asking for no
/// more take its fast path, and are not cached.
const MALLOC_ALIGN: usize = 16;

/// The size granule and the alignment of a cached block: a request for less is rounded up.
const GRANULE: usize = 128;

/// Size classes: blocks of 128 bytes up to 4 KiB. Larger aligned blocks are rare, and go to the
/// system allocator every time.
const CLASSES: usize = 32;

/// The bytes a thread's cache may hold; a block freed beyond that goes back to the system.
pub const MAX_CACHED: usize = 256 * 1024;

/// The global allocator of the `fulcrum` binary: [`System`], with a per-thread cache of freed
/// over-aligned blocks (module header).
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// One thread's cache: a free list per size class, linked through the blocks themselves.
struct Cache {
    heads: [Cell<*mut u8>; CLASSES],
    bytes: Cell<usize>,
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            bytes: Cell::new(0),
        }
    };
}

/// The size class of `layout`, when it is one this allocator caches.
fn class(layout: Layout) -> Option<usize> {
    let cached = layout.align() > MALLOC_ALIGN
        && layout.align() <= GRANULE
        && layout.size() <= CLASSES * GRANULE;
    cached.then(|| layout.size().max(1).div_ceil(GRANULE) - 1)
}

/// The layout every block of `class` has, cached or not.
fn block(class: usize) -> Layout {
    Layout::from_size_align((class + 1) * GRANULE, GRANULE).expect("a size class is a layout")
}

impl Cache {
    /// A block of `class` from the free list, if it holds one.
    fn pop(&self, class: usize) -> Option<*mut u8> {
        let head = self.heads[class].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: a block in the list is one this allocator owns, at least `GRANULE` bytes and
        // aligned to it, whose first word `push` wrote: the next block, or null.
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[class].set(next);
        self.bytes.set(self.bytes.get() - block(class).size());
        Some(head)
    }

    /// Keeps `block` of `class` for a later `pop`; gives it back when the cache is full.
    fn push(&self, class: usize, freed: *mut u8) -> Result<(), *mut u8> {
        let size = block(class).size();
        if self.bytes.get() + size > MAX_CACHED {
            return Err(freed);
        }
        // SAFETY: `freed` was allocated with `block(class)`, at least `GRANULE` bytes aligned to
        // it, and its owner has freed it: this allocator owns its bytes again.
        unsafe { freed.cast::<*mut u8>().write(self.heads[class].get()) };
        self.heads[class].set(freed);
        self.bytes.set(self.bytes.get() + size);
        Ok(())
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            while let Some(kept) = self.pop(class) {
                // SAFETY: every block in the lists came from `System` with `block(class)`.
                unsafe { System.dealloc(kept, block(class)) };
            }
        }
    }
}

// SAFETY: every block is either the system allocator's own answer to the caller's layout, or a
// block of the caller's size class: at least as large as asked and aligned to `GRANULE`, which
// `class` only accepts layouts within. A cached block is reachable from one thread's free list
// alone, and leaves it before it is handed out.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        // A thread whose cache is gone (it is ending) asks the system.
        let cached = CACHE.try_with(|cache| cache.pop(class)).ok().flatten();
        // SAFETY: `block(class)` has a non-zero size.
        cached.unwrap_or_else(|| unsafe { System.alloc(block(class)) })
    }

    unsafe fn dealloc(&self, freed: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(freed, layout) };
        };
        let kept = CACHE
            .try_with(|cache| cache.push(class, freed))
            .unwrap_or(Err(freed));
        if let Err(freed) = kept {
            // SAFETY: a block of this layout came from `alloc` above, so from `System` with
            // `block(class)`.
            unsafe { System.dealloc(freed, block(class)) };
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's contract, passed on.
        let block = unsafe { self.alloc(layout) };
        if !block.is_null() {
            // SAFETY: `alloc` gave at least `layout.size()` bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn realloc(&self, old: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        if class(layout).is_none() && class(new_layout).is_none() {
            // SAFETY: the caller's contract, passed on: neither layout is one this allocator
            // caches, so the block is the system's own.
            return unsafe { System.realloc(old, layout, new_size) };
        }
        // SAFETY: the caller's contract: `new_layout` is valid, `old` holds `layout.size()`
        // bytes, and the new block at least the smaller of the two.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(old, new, layout.size().min(new_size));
                self.dealloc(old, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(size: usize) -> Layout {
        Layout::from_size_align(size, 128).unwrap()
    }

    #[test]
    fn a_freed_aligned_block_is_handed_out_again_for_its_class() {
        let allocator = Allocator;
        unsafe {
            let first = allocator.alloc(aligned(2000));
            assert_eq!(first as usize % 128, 0);
            first.write_bytes(7, 2000);
            allocator.dealloc(first, aligned(2000));
            // 1,921 to 2,048 bytes share the class.
            let again = allocator.alloc(aligned(2048));
            assert_eq!(again, first);
            allocator.dealloc(again, aligned(2048));
        }
    }

    #[test]
    fn other_classes_and_ordinary_layouts_do_not_take_a_cached_block() {
        let allocator = Allocator;
        unsafe {
            let cached = allocator.alloc(aligned(256));
            allocator.dealloc(cached, aligned(256));
            let larger = allocator.alloc(aligned(384));
            assert_ne!(larger, cached);
            let ordinary = allocator.alloc(Layout::from_size_align(256, 8).unwrap());
            assert_ne!(ordinary, cached);
            allocator.dealloc(ordinary, Layout::from_size_align(256, 8).unwrap());
            allocator.dealloc(larger, aligned(384));
            // Still cached, and still its class's.
            let again = allocator.alloc(aligned(200));
            assert_eq!(again, cached);
            allocator.dealloc(again, aligned(200));
        }
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let allocator = Allocator;
        let layout = aligned(4096);
        let count = MAX_CACHED / 4096 + 4;
        unsafe {
            let blocks: Vec<_> = (0..count).map(|_| allocator.alloc(layout)).collect();
            for &block in &blocks {
                assert_eq!(block as usize % 128, 0);
                allocator.dealloc(block, layout);
            }
            CACHE.with(|cache| assert!(cache.bytes.get() <= MAX_CACHED));
            // Everything cached comes back out, distinct, and the rest from the system.
            let again: Vec<_> = (0..count).map(|_| allocator.alloc(layout)).collect();
            let mut unique = again.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), count);
            for block in again {
                allocator.dealloc(block, layout);
            }
        }
    }

    #[test]
    fn zeroed_and_grown_blocks_keep_their_bytes() {
        let allocator = Allocator;
        unsafe {
            // A dirty block in the cache first: `alloc_zeroed` must still zero it.
            let dirty = allocator.alloc(aligned(512));
            dirty.write_bytes(0xff, 512);
            allocator.dealloc(dirty, aligned(512));
            let zeroed = allocator.alloc_zeroed(aligned(500));
            assert!((0..500).all(|i| *zeroed.add(i) == 0));
            zeroed.write_bytes(3, 500);
            let grown = allocator.realloc(zeroed, aligned(500), 3000);
            assert_eq!(grown as usize % 128, 0);
            assert!((0..500).all(|i| *grown.add(i) == 3));
            let plain = Layout::from_size_align(64, 8).unwrap();
            let small = allocator.alloc(plain);
            small.write_bytes(5, 64);
            let bigger = allocator.realloc(small, plain, 100_000);
            assert!((0..64).all(|i| *bigger.add(i) == 5));
            allocator.dealloc(bigger, Layout::from_size_align(100_000, 8).unwrap());
            allocator.dealloc(grown, aligned(3000));
        }
    }

    #[test]
    fn an_ending_thread_gives_its_blocks_back() {
        // Run under the test binary's allocator (glibc's): what matters is that the thread's
        // cache drops without touching freed memory, which a sanitizer or Miri would catch.
        std::thread::spawn(|| {
            let allocator = Allocator;
            unsafe {
                let block = allocator.alloc(aligned(1024));
                allocator.dealloc(block, aligned(1024));
            }
            CACHE.with(|cache| assert_eq!(cache.bytes.get(), 1024));
        })
        .join()
        .unwrap();
    }
}
