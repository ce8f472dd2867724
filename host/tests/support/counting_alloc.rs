//! A counting global allocator, shared by the allocation tests of the
//! library (`host/tests/alloc.rs`) and the server
//! (`host/server/tests/alloc.rs`): it forwards to `System` and counts the
//! allocations of the threads that asked, each into its own counter.
//!
//! A test binary installs it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Forwards to `System`, counting the allocations of threads that asked.
pub struct Counting;

thread_local! {
    /// The counter of this thread's allocations, if it counts.
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
    /// The counter [`allocations`] uses on this thread.
    static OWN: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
}

fn bump() {
    // `try_with`: the allocator runs during thread teardown too.
    let _ = COUNTER.try_with(|c| {
        if let Some(n) = c.get() {
            n.fetch_add(1, Relaxed);
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// the counter is a const-initialised thread-local `Cell` (no allocation, no
// destructor) pointing at a leaked atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        bump();
        System.realloc(p, l, new)
    }
}

/// Count this thread's allocations into `counter` from now on (`None`:
/// stop counting).
pub fn count_into(counter: Option<&'static AtomicU64>) {
    COUNTER.with(|c| c.set(counter));
}

/// `f`'s result and the heap allocations it made on this thread.
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    // Read (and on first use, allocated) before counting starts.
    let own = OWN.with(|o| *o);
    own.store(0, Relaxed);
    count_into(Some(own));
    let out = f();
    count_into(None);
    (out, own.load(Relaxed))
}

/// The counter sees what it should: the bounds the tests pin are upper
/// bounds, which a counter that never counted would meet.
#[test]
fn the_counter_counts_this_threads_allocations_only() {
    let (b, n) = allocations(|| std::hint::black_box(Box::new(7u64)));
    assert_eq!((*b, n), (7, 1));
    // An allocation, then one growth.
    let (v, n) = allocations(|| {
        let mut v: Vec<u64> = Vec::with_capacity(1);
        v.extend([1, 2, 3]);
        v
    });
    assert_eq!((v.as_slice(), n), (&[1, 2, 3][..], 2));
    // Another thread allocating meanwhile is not counted here.
    let step = std::sync::Arc::new(std::sync::Barrier::new(2));
    let other = {
        let step = step.clone();
        std::thread::spawn(move || {
            step.wait();
            for i in 0..100u64 {
                std::hint::black_box(Box::new(i));
            }
            step.wait();
        })
    };
    let ((), n) = allocations(|| {
        step.wait();
        step.wait();
    });
    assert_eq!(n, 0);
    assert!(other.join().is_ok());
}
