//! The memory allocator: mimalloc, installed by the binary.
//!
//! glibc's allocator spent a quarter of the manager's CPU on the put/get path (perf, see
//! BENCHMARKS.md); mimalloc handles the many short-lived message buffers far better, but keeps
//! freed memory for reuse. Start-up replay allocates and frees hundreds of MiB for a deep
//! journal, so the manager hands that back to the operating system once replay is done.

/// The allocator `main.rs` installs as the global one.
pub const ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns freed memory to the operating system.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread;
    // it only frees memory no live allocation uses. Harmless when mimalloc is not the global
    // allocator (its own heaps are then empty).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
