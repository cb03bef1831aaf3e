//! A daemon-like host with its standard input closed: loading models never puts one of the
//! crate's own descriptors (a saved copy of stdout or stderr) in the place of fd 0, where
//! the host, or a child it starts, would take it for its input.
//!
//! Closing fd 0 is process-wide, so this file holds a single test.
#![cfg(feature = "mock")]

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use rkllm::mock::MockModel;
use rkllm::{Model, Runtime};

/// (device, inode) of what `fd` points at, if it is open.
fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes for the duration of the call.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0).then_some((st.st_dev as u64, st.st_ino as u64))
}

#[test]
fn the_crates_descriptors_never_take_the_place_of_a_closed_stdin() {
    let streams = [identity(1), identity(2)];
    // SAFETY: closes this process's stdin, which nothing in this test binary reads.
    unsafe { libc::close(0) };
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut seen = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Another file (the mock reading its model file) may take fd 0 for a moment;
                // a copy of stdout or stderr must not.
                if let Some(id) = identity(0) {
                    if streams.contains(&Some(id)) {
                        seen += 1;
                    }
                }
            }
            seen
        }
    });
    let file = MockModel::new().write_temp_file().unwrap();
    for _ in 0..200 {
        let model = Model::builder(&file)
            .runtime(Runtime::mock())
            .build()
            .expect("the mock model loads");
        drop(model);
    }
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert_eq!(
        seen, 0,
        "fd 0 was a copy of stdout or stderr {seen} times while models loaded"
    );
}
