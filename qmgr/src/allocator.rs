//! The memory allocator: mimalloc, installed by the binary.
//!
//! glibc's allocator spent a quarter of the manager's CPU on the put/get path (perf, see
//! BENCHMARKS.md); mimalloc handles the many short-lived message buffers far better, but keeps
//! freed memory for reuse. Start-up replay allocates and frees hundreds of MiB for a deep
//! journal, so the manager hands that back to the operating system once replay is done.
//!
//! [`Allocator`] calls mimalloc itself rather than through the `mimalloc` crate, which passes
//! every request to `mi_malloc_aligned`. mimalloc v3 serves that from its plain fast path only
//! when a free block happens to be aligned and the request is at most 1 KiB; a message body is
//! larger, so every one took the generic aligned path, and a 16-aligned request whose bin is
//! not a power of two was over-allocated. Like Rust's own `System` allocator over `malloc`,
//! requests whose alignment the plain calls already guarantee go to them.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every plain mimalloc block of at least that size has: blocks larger than a
/// word come in multiples of two words (`MI_ALIGN2W`) and a page's first block is 16-aligned
/// (`MI_PAGE_MIN_START_BLOCK_ALIGN`), so a request of `size >= align` with `align <= 16` is
/// met, as `MI_MAX_ALIGN_SIZE` promises.
const PLAIN_ALIGN_MAX: usize = 16;

/// mimalloc as the global allocator (see the module's comment).
pub struct Allocator;

/// Whether the plain calls meet `align` for a block of `size` bytes.
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN_MAX && align <= size
}

// SAFETY: every call forwards to mimalloc, whose blocks are valid for `size` bytes and aligned
// as asked: to the `_aligned` calls when the plain ones might not meet the alignment, and the
// plain ones only when `plain` says they do (see `PLAIN_ALIGN_MAX`). `mi_free` takes blocks of
// either kind.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as the `GlobalAlloc` contract hands it over.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; a moved block is a plain or an
        // aligned one by the same rule as in `alloc`, for the new size.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Returns freed memory to the operating system.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread;
    // it only frees memory no live allocation uses. Harmless when mimalloc is not the global
    // allocator (its own heaps are then empty).
    unsafe { mi::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every size class up to a few pages, at every alignment up to a page: a block is aligned,
    /// zeroed when asked, and keeps its bytes when it grows and shrinks.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let allocator = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=64).chain((65..=20_000).step_by(37)) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is used within its size and freed once,
                // with the layout it has at that moment.
                unsafe {
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size}, align {align}");
                    assert!(
                        std::slice::from_raw_parts(zeroed, size)
                            .iter()
                            .all(|&b| b == 0)
                    );
                    allocator.dealloc(zeroed, layout);

                    let mut block = allocator.alloc(layout);
                    let mut len = size;
                    block.write_bytes(0xa5, len);
                    for new_len in [size * 3, size / 2 + 1] {
                        assert_eq!(block as usize % align, 0, "size {len}, align {align}");
                        let current = Layout::from_size_align(len, align).unwrap();
                        block = allocator.realloc(block, current, new_len);
                        let kept = len.min(new_len);
                        assert!(
                            std::slice::from_raw_parts(block, kept)
                                .iter()
                                .all(|&b| b == 0xa5)
                        );
                        block.write_bytes(0xa5, new_len);
                        len = new_len;
                    }
                    assert_eq!(block as usize % align, 0, "size {len}, align {align}");
                    allocator.dealloc(block, Layout::from_size_align(len, align).unwrap());
                }
            }
        }
    }
}
