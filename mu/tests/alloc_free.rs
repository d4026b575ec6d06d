//! The steady-state replication fast path allocates nothing per entry:
//! propose -> writes posted -> completions -> commit -> delivery, measured
//! with a counting global allocator around a 3-replica group on the sim
//! fabric.

use mu::sim::FastPath;
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts calls while the test switches counting on.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn steady_state_allocations(size: u32) -> (u64, u64) {
    let mut g = FastPath::new(size);
    // Warm up: every queue and buffer reaches its working size.
    for _ in 0..3_000 {
        g.replicate_one();
    }
    let before = g.delivered();
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..2_000 {
        g.replicate_one();
    }
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCATIONS.load(Ordering::SeqCst), g.delivered() - before)
}

#[test]
fn fast_path_allocates_nothing_per_entry() {
    for size in [64u32, 4096] {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        let (allocations, delivered) = steady_state_allocations(size);
        // Every replica applied the measured entries (followers trail the
        // leader by the entry whose commit the next one carries)...
        assert!(delivered >= 3 * 2_000 - 2, "{delivered} deliveries");
        // ...without a single allocation.
        assert_eq!(
            allocations, 0,
            "{allocations} allocations for {size}-byte entries"
        );
    }
}
