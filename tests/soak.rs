//! 1,000 runs in a row: no growth in threads or memory. Alone in its binary so that other
//! tests' threads and allocations do not disturb the counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use rkllm::mock::MockModel;
use rkllm::GenerateOptions;

/// Counts the bytes live on the heap: exact, and meaningful under qemu too (where the
/// process's resident size includes the emulator's own code cache).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged and only updates a
// counter on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout, as GlobalAlloc requires.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Live heap bytes, without the mock's own run log (which keeps the last 4096 runs).
fn live_bytes() -> isize {
    rkllm::mock::clear_run_log();
    LIVE.load(Ordering::SeqCst)
}

#[test]
fn a_thousand_runs_leave_no_threads_or_memory_behind() {
    let model = common::load(&MockModel::new().answer("a short reply with ünïcode"));
    let mut session = model.session().unwrap();
    let opts = GenerateOptions::gemma();
    // Warm up lazily created state.
    for _ in 0..50 {
        session.complete("q", &opts).unwrap();
    }
    let (threads_before, live_before) = (threads(), live_bytes());
    for i in 0..1000 {
        let done = session.complete("q", &opts).unwrap();
        assert_eq!(done.text, "a short reply with ünïcode", "run {i}");
        if i % 3 == 0 {
            // Also abandon streams mid-way.
            let mut stream = session.generate("q", &opts).unwrap();
            stream.next().unwrap().unwrap();
        }
    }
    // A dropped stream's run is joined by the session's next call (drops never block), so the
    // last abandoned one is joined here.
    session.complete("q", &opts).unwrap();
    let (threads_after, live_after) = (threads(), live_bytes());
    assert_eq!(threads_after, threads_before, "no thread left behind");
    // A leak of even one small allocation per run would show as ≥ 16 KiB here.
    assert!(
        live_after - live_before < 16 * 1024,
        "live heap grew from {live_before} to {live_after} bytes over 1,000 runs"
    );
}
