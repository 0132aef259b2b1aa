//! The binary's global allocator: mimalloc, called the way its C interface is fastest.
//!
//! The `mimalloc` crate sends every allocation to `mi_malloc_aligned(size, align)`. In mimalloc
//! 3 that call only has a fast path for blocks of at most 1 KiB whose free block happens to be
//! aligned; every other one (any allocation over 1 KiB, and a small one whose page has no free
//! block at hand) takes the generic aligned path, which over-allocates by `align - 1` bytes and
//! marks the page as holding interior pointers. A GraphQL request makes about twenty such
//! allocations (hyper's buffers, boxed futures, documents): callgrind counted 3.8 % of an
//! uncached `me` request's instructions in that path (docs/benchmarks.md).
//!
//! Plain `mi_malloc` already returns what C's `malloc` must: every block of 16 bytes or more is
//! aligned to 16 (`MI_MAX_ALIGN_SIZE`: block sizes are multiples of 16 above 8 bytes, and a
//! page's first block is 16-aligned), and every block to 8. So a layout whose alignment is at
//! most 16 and at most its size goes to the plain calls; only the others (over-aligned types,
//! such as tokio's 128-byte aligned task cells) ask for their alignment. This is the dispatch
//! the `mimalloc` crate itself used before it moved every call to the aligned functions.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as ffi;

/// The alignment every `mi_malloc` block of at least this many bytes has (`MI_MAX_ALIGN_SIZE`).
const NATURAL_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator] static A: MiMalloc = MiMalloc;`).
pub struct MiMalloc;

/// Whether plain `mi_malloc(size)` is aligned enough for `align`: blocks of 8 bytes or more are
/// 8-aligned and of 16 or more 16-aligned, so an alignment of at most 16 that does not exceed
/// the size is always met.
#[inline]
const fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

// SAFETY: every method returns memory from mimalloc (or null), aligned to the layout's
// alignment: the plain calls only where `natural` holds (see above), the aligned calls
// otherwise; `dealloc` and `realloc` are only given pointers these methods returned, and
// mimalloc frees and reallocates a block whichever call made it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: mimalloc's allocation functions accept any size and power-of-two alignment.
        unsafe {
            if natural(size, align) {
                ffi::mi_malloc(size).cast()
            } else {
                ffi::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe {
            if natural(size, align) {
                ffi::mi_zalloc(size).cast()
            } else {
                ffi::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator; the new block is aligned as `alloc` would
        // align a block of `new_size` (mimalloc copies the contents and frees the old block).
        unsafe {
            if natural(new_size, align) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around every boundary that matters: the 8- and 16-byte blocks, mimalloc's small
    /// (1 KiB) and medium limits, and a large block.
    const SIZES: &[usize] = &[
        1,
        2,
        3,
        7,
        8,
        9,
        12,
        15,
        16,
        17,
        24,
        31,
        32,
        33,
        40,
        48,
        56,
        64,
        72,
        80,
        96,
        100,
        112,
        128,
        148,
        160,
        255,
        256,
        280,
        1000,
        1023,
        1024,
        1025,
        1768,
        2056,
        2584,
        4096,
        4136,
        8192,
        65_536,
        70_000,
        1 << 20,
        (1 << 22) + 24,
    ];
    const ALIGNS: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 128, 4096];

    fn layouts() -> impl Iterator<Item = Layout> {
        SIZES.iter().flat_map(|&size| {
            ALIGNS
                .iter()
                .filter_map(move |&align| Layout::from_size_align(size, align).ok())
        })
    }

    #[test]
    fn every_block_has_its_layouts_alignment_and_size() {
        let a = MiMalloc;
        for layout in layouts() {
            // Many at once, so later blocks come from pages that already have others.
            let blocks: [*mut u8; 8] = core::array::from_fn(|i| {
                // SAFETY: the layouts have a non-zero size.
                let p = unsafe {
                    if i % 2 == 0 {
                        a.alloc(layout)
                    } else {
                        a.alloc_zeroed(layout)
                    }
                };
                assert!(!p.is_null(), "{layout:?}");
                assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
                // SAFETY: `p` is a live block of `layout.size()` bytes.
                let bytes = unsafe { core::slice::from_raw_parts_mut(p, layout.size()) };
                if i % 2 == 1 {
                    assert!(bytes.iter().all(|b| *b == 0), "{layout:?}");
                }
                // Its whole size is the caller's (the blocks do not overlap: checked below).
                bytes.fill(i as u8);
                p
            });
            for (i, p) in blocks.into_iter().enumerate() {
                // SAFETY: `p` is still live, with `layout.size()` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
                assert!(bytes.iter().all(|b| *b == i as u8), "{layout:?}");
                // SAFETY: `p` came from `a` with `layout`.
                unsafe { a.dealloc(p, layout) };
            }
        }
    }

    #[test]
    fn a_reallocated_block_keeps_its_contents_and_alignment() {
        let a = MiMalloc;
        for layout in layouts().filter(|l| l.size() <= 65_536) {
            for new_size in [1, layout.size() / 2 + 1, layout.size() * 3 + 5] {
                // SAFETY: the layout has a non-zero size.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                for i in 0..layout.size() {
                    // SAFETY: within the block.
                    unsafe { p.add(i).write(i as u8) };
                }
                // SAFETY: `p` came from `a` with `layout`; `new_size` is non-zero.
                let q = unsafe { a.realloc(p, layout, new_size) };
                assert!(!q.is_null());
                assert_eq!(q as usize % layout.align(), 0, "{layout:?} -> {new_size}");
                for i in 0..new_size.min(layout.size()) {
                    // SAFETY: within both blocks.
                    let kept = unsafe { q.add(i).read() };
                    assert_eq!(kept, i as u8, "{layout:?} -> {new_size}");
                }
                // SAFETY: `q` is the live block `realloc` returned for `new_size` bytes.
                unsafe {
                    a.dealloc(
                        q,
                        Layout::from_size_align_unchecked(new_size, layout.align()),
                    );
                }
            }
        }
    }
}
