//! The bench's global allocator counts every allocation, so scenarios can report memory held
//! and allocations made as exact numbers instead of resident-set guesses.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static COUNTING: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes currently allocated by the whole process.
pub(crate) fn live_bytes() -> i64 {
    // A reallocation is already counted in these two (as growth or shrinkage).
    let stats = COUNTING.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// Allocations (not counting reallocations) the whole process has made so far.
#[allow(dead_code)] // used by the client-overhead scenario
pub(crate) fn allocations() -> usize {
    COUNTING.stats().allocations
}

/// Bytes the whole process has asked the allocator for so far (reallocations' growth included).
pub(crate) fn allocated_bytes() -> usize {
    let stats = COUNTING.stats();
    stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize
}
