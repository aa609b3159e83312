//! The binary's global allocator: the system's (glibc's `malloc`), with a small per-thread cache
//! in front of it for the blocks glibc is slow to serve.
//!
//! glibc's `malloc` is fast for small blocks with its usual alignment (16 bytes), which its
//! per-thread cache (tcache) holds up to 1,032 bytes. Two kinds of block miss it, and Fulcrum
//! makes both all the time:
//! - Over-aligned blocks: tokio aligns its task cells and its sockets' registrations to 128
//!   bytes, so every connection allocates two and every HTTP/2 stream one (hyper spawns each as a
//!   task); glibc serves them on its slow path (`_int_memalign`: a larger block, split, the ends
//!   freed), about 800 instructions each.
//! - Blocks above 1,032 bytes, such as each request's boxed future (about 2 KiB), which take
//!   glibc's bins and their consolidation on every `malloc` and `free`.
//!
//! Here such a block, up to 4 KiB, comes from a free list of its size class in its thread's
//! cache when one is there, and waits there when freed, for the next of its class. Everything
//! else goes straight to the system allocator.
//!
//! The cache is bounded ([`MAX_CACHED`] bytes of each kind a thread, on every thread that frees
//! such blocks: tokio's blocking threads too, which rarely do), and a thread gives its blocks
//! back when it ends. An embedder picks its own allocator; this one is what the `fulcrum` binary
//! uses.
//!
//! It is meant for Linux with glibc, Fulcrum's platform: the thread-local cache must not
//! allocate through this allocator when first touched, and there std registers its destructor
//! with glibc's `__cxa_thread_atexit_impl`, which uses glibc's own `calloc`.

// A global allocator is unsafe by its contract; this one's unsafe code is what `GlobalAlloc`
// requires, and the free lists' reads and writes of blocks this allocator owns (README, "What
// pays").
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// The alignment glibc's `malloc` gives every block (x86_64 and aarch64).
const MALLOC_ALIGN: usize = 16;

/// The largest block glibc's per-thread cache holds (64-bit, its default `tcache_max`): with no
/// more alignment than [`MALLOC_ALIGN`], a block this size or smaller is left to it.
const TCACHE_MAX: usize = 1032;

/// The size granule of a cached block (a request for less is rounded up), and the alignment of
/// an over-aligned one.
const GRANULE: usize = 128;

/// Size classes: blocks of 128 bytes up to 4 KiB. Larger blocks are rarer, and go to the system
/// allocator every time.
const CLASSES: usize = 32;

/// Free lists: one per size class for blocks of glibc's usual alignment, and one per size class
/// for blocks aligned to [`GRANULE`]. Kept apart so that a miss of either takes glibc's fastest
/// path for its kind: `malloc` for the first, `memalign` only for the second.
const LISTS: usize = 2 * CLASSES;

/// The bytes a thread's cache may hold in blocks of glibc's alignment and in aligned blocks; a
/// block freed beyond that goes back to the system. Apart, so that neither kind crowds out the
/// other: HTTP/2's streams in flight free hundreds of each at once.
const MAX_CACHED: [usize; 2] = [1024 * 1024, 256 * 1024];

/// The global allocator of the `fulcrum` binary: [`System`], with a per-thread cache of freed
/// over-aligned and medium-sized blocks (module header).
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// One thread's cache: its free lists, linked through the blocks themselves.
struct Cache {
    heads: [Cell<*mut u8>; LISTS],
    /// The bytes held, per kind (`list / CLASSES`).
    bytes: [Cell<usize>; 2],
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            heads: [const { Cell::new(ptr::null_mut()) }; LISTS],
            bytes: [const { Cell::new(0) }; 2],
        }
    };
}

/// The free list a block of `layout` belongs to, when it is one this allocator caches.
fn list(layout: Layout) -> Option<usize> {
    if layout.align() > GRANULE || layout.size() > CLASSES * GRANULE {
        return None;
    }
    let aligned = layout.align() > MALLOC_ALIGN;
    if !aligned && layout.size() <= TCACHE_MAX {
        return None;
    }
    let class = layout.size().max(1).div_ceil(GRANULE) - 1;
    Some(if aligned { CLASSES + class } else { class })
}

/// The layout every block of `list` has, cached or not: its class's size, and its kind's
/// alignment. Either holds a pointer: the smallest block is 128 bytes, aligned to 16 at least.
fn block(list: usize) -> Layout {
    let align = if list >= CLASSES {
        GRANULE
    } else {
        MALLOC_ALIGN
    };
    Layout::from_size_align((list % CLASSES + 1) * GRANULE, align).expect("a class is a layout")
}

impl Cache {
    /// A block from free list `list`, if it holds one.
    fn pop(&self, list: usize) -> Option<*mut u8> {
        let head = self.heads[list].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: a block in the list is one this allocator owns, of `block(list)` (room and
        // alignment for a pointer), whose first word `push` wrote: the next block, or null.
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[list].set(next);
        let bytes = &self.bytes[list / CLASSES];
        bytes.set(bytes.get() - block(list).size());
        Some(head)
    }

    /// Keeps `freed`, a block of `list`, for a later `pop`; gives it back when the cache is full.
    fn push(&self, list: usize, freed: *mut u8) -> Result<(), *mut u8> {
        let size = block(list).size();
        let bytes = &self.bytes[list / CLASSES];
        if bytes.get() + size > MAX_CACHED[list / CLASSES] {
            return Err(freed);
        }
        // SAFETY: `freed` was allocated with `block(list)` (room and alignment for a pointer),
        // and its owner has freed it: this allocator owns its bytes again.
        unsafe { freed.cast::<*mut u8>().write(self.heads[list].get()) };
        self.heads[list].set(freed);
        bytes.set(bytes.get() + size);
        Ok(())
    }
}

/// A block of `list` from this thread's cache, if it holds one. A thread whose cache is gone (it
/// is ending) has none.
fn reuse(list: usize) -> Option<*mut u8> {
    CACHE.try_with(|cache| cache.pop(list)).ok().flatten()
}

/// Keeps `freed`, a block of `list`, in this thread's cache; gives it back when the cache is full
/// or gone.
fn keep(list: usize, freed: *mut u8) -> Result<(), *mut u8> {
    CACHE
        .try_with(|cache| cache.push(list, freed))
        .unwrap_or(Err(freed))
}

impl Drop for Cache {
    fn drop(&mut self) {
        for list in 0..LISTS {
            while let Some(kept) = self.pop(list) {
                // SAFETY: every block in `list` came from `System` with `block(list)`.
                unsafe { System.dealloc(kept, block(list)) };
            }
        }
    }
}

// SAFETY: every block is either the system allocator's own answer to the caller's layout, or a
// block of the caller's free list: at least as large as asked and at least as aligned, which
// `list` accepts only layouts within (an over-aligned one goes to a list of `GRANULE`-aligned
// blocks). A cached block is reachable from one thread's free list alone, and leaves it before
// it is handed out. The same layout always maps to the same list, so a block goes back to the
// system with the layout it came with.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(list) = list(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: `block(list)` has a non-zero size.
        reuse(list).unwrap_or_else(|| unsafe { System.alloc(block(list)) })
    }

    unsafe fn dealloc(&self, freed: *mut u8, layout: Layout) {
        let Some(list) = list(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(freed, layout) };
        };
        if let Err(freed) = keep(list, freed) {
            // SAFETY: a block of this layout came from `alloc` above, so from `System` with
            // `block(list)`.
            unsafe { System.dealloc(freed, block(list)) };
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(list) = list(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        };
        match reuse(list) {
            Some(reused) => {
                // SAFETY: a block of `block(list)` holds at least `layout.size()` bytes.
                unsafe { reused.write_bytes(0, layout.size()) };
                reused
            }
            // SAFETY: `block(list)` has a non-zero size.
            None => unsafe { System.alloc_zeroed(block(list)) },
        }
    }

    unsafe fn realloc(&self, old: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let (from, to) = (list(layout), list(new_layout));
        if from.is_none() && to.is_none() {
            // SAFETY: the caller's contract, passed on: neither layout is one this allocator
            // caches, so the block is the system's own.
            return unsafe { System.realloc(old, layout, new_size) };
        }
        if from == to {
            // The block is its list's, `block(from)`: it has room for the new size too, and
            // freed with the new layout it goes back to the same list.
            return old;
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
    fn medium_blocks_are_cached_apart_from_aligned_ones_and_small_ones_are_not() {
        let allocator = Allocator;
        let medium = Layout::from_size_align(2112, 8).unwrap();
        let small = Layout::from_size_align(1000, 8).unwrap();
        unsafe {
            let first = allocator.alloc(medium);
            assert_eq!(first as usize % 16, 0);
            allocator.dealloc(first, medium);
            // The aligned list of the same size class does not hold it.
            let aligned_one = allocator.alloc(aligned(2112));
            assert_ne!(aligned_one, first);
            assert_eq!(aligned_one as usize % 128, 0);
            let again = allocator.alloc(Layout::from_size_align(2100, 16).unwrap());
            assert_eq!(again, first);
            allocator.dealloc(again, Layout::from_size_align(2100, 16).unwrap());
            allocator.dealloc(aligned_one, aligned(2112));
            // glibc's own cache takes the small block: none of ours is handed out for it.
            let held = || CACHE.with(|cache| [cache.bytes[0].get(), cache.bytes[1].get()]);
            let before = held();
            let block = allocator.alloc(small);
            allocator.dealloc(block, small);
            assert_eq!(held(), before);
        }
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let allocator = Allocator;
        let layout = aligned(4096);
        let count = MAX_CACHED[1] / 4096 + 4;
        unsafe {
            let blocks: Vec<_> = (0..count).map(|_| allocator.alloc(layout)).collect();
            for &block in &blocks {
                assert_eq!(block as usize % 128, 0);
                allocator.dealloc(block, layout);
            }
            CACHE.with(|cache| assert!(cache.bytes[1].get() <= MAX_CACHED[1]));
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
    fn a_dropped_cache_gives_its_blocks_back_to_the_system() {
        // A thread's cache drops as this one does. glibc aborts the process on a block freed
        // twice or not its own, so a wrong block or layout here fails the test run.
        let cache = Cache {
            heads: [const { Cell::new(ptr::null_mut()) }; LISTS],
            bytes: [const { Cell::new(0) }; 2],
        };
        for list in [0, 8, CLASSES - 1, CLASSES, LISTS - 1] {
            for _ in 0..3 {
                let block = unsafe { System.alloc(block(list)) };
                assert!(cache.push(list, block).is_ok());
            }
        }
        drop(cache);
    }

    #[test]
    fn a_block_freed_on_another_thread_serves_that_thread() {
        let allocator = Allocator;
        let layout = aligned(640);
        let made = std::thread::spawn(move || unsafe { allocator.alloc(layout) as usize })
            .join()
            .unwrap() as *mut u8;
        unsafe {
            allocator.dealloc(made, layout);
            let again = allocator.alloc(layout);
            assert_eq!(again, made);
            allocator.dealloc(again, layout);
        }
    }

    #[test]
    fn a_block_resized_within_its_class_stays_and_across_classes_moves_with_its_bytes() {
        let allocator = Allocator;
        let medium = |size| Layout::from_size_align(size, 8).unwrap();
        unsafe {
            let block = allocator.alloc(medium(1100));
            block.write_bytes(9, 1100);
            // 1,025 to 1,152 bytes: one class, one block.
            let same = allocator.realloc(block, medium(1100), 1150);
            assert_eq!(same, block);
            let grown = allocator.realloc(same, medium(1150), 3000);
            assert_ne!(grown, block);
            assert!((0..1100).all(|i| *grown.add(i) == 9));
            let shrunk = allocator.realloc(grown, medium(3000), 1040);
            assert!((0..1040).all(|i| *shrunk.add(i) == 9));
            allocator.dealloc(shrunk, medium(1040));
        }
    }
}
