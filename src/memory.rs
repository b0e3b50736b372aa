//! Handing memory freed by one phase of a conversion back to the system
//! before the next.
//!
//! glibc's allocator keeps freed memory for later use by the thread's own
//! arena: what the link walk's thread freed could not serve the plan, and
//! what the model's layers held was still counted while the header was
//! built. For a Keras 2 file of 100,000 layers that was 20-40 MB of peak
//! resident memory. Other allocators and systems return memory their own
//! way; there this does nothing.

/// Returns free pages of every arena to the system.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only gives back pages no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}
