//! Capturing what C code writes to file descriptors 1 and 2 while a closure runs.
//!
//! The runtime prints its reasons for a failed `rkllm_init` with `printf`-style calls, so the
//! only way to read them is at the file-descriptor level. What this does to the process:
//!
//! - For the duration of the call, fds 1 and 2 of the **whole process** are pipes (the
//!   descriptor table is process-wide). Whatever any thread writes to them meanwhile, and any
//!   child process started meanwhile (which inherits the pipe as its stdout or stderr), goes
//!   through the pipe.
//! - A forwarding thread per pipe copies every byte on to the original descriptor as it
//!   arrives, so nothing is lost or delayed beyond a thread hop, and keeps a copy of what
//!   arrived until the call returned.
//! - Afterwards fds 1 and 2 point at the original descriptors again (on every path, panics
//!   included). The forwarding thread keeps copying until the pipe's last writer is gone: a
//!   child started during the call may write to its inherited stdout long after, and is never
//!   killed by `SIGPIPE` for it. Without such a child the thread ends at once.
//! - The capture's own descriptors are close-on-exec and numbered 3 or above: children never
//!   inherit them, and they never take the place of a closed standard stream.
//! - Captures are serialised process-wide, and with the inits whose log is not captured (so
//!   their lines never land in a capture); a capture nested inside another on the same thread
//!   works (the inner one tees into the outer one). A closure that waits for another thread
//!   which itself starts a capture would deadlock; nothing in this crate does that.
//! - Only the runtime's own lines (its `I rkllm:`, `E RKNN:` … marks and unmarked failure
//!   phrases) are kept for the diagnosis and forwarded to the `log` facade (target
//!   `rkllm::runtime`), and only after the descriptors are restored: a logger writing to
//!   stderr during the capture would feed its own output back into the pipe. Lines other
//!   threads wrote meanwhile still reach the original descriptors, and nothing else.
//! - Under Miri, which cannot redirect descriptors (nor call foreign code, so the runtime is
//!   the mock), the descriptors are left alone and the mock hands its lines to the capture
//!   directly ([`tap_record`]); the diagnosis reads them as usual. A mock model whose lines
//!   go to the `log` facade or nowhere (`RuntimeLog`) hands them over the same way.

// Under Miri the descriptor machinery below is compiled but not used.
#![cfg_attr(miri, allow(dead_code, unused_imports))]

use std::cell::Cell;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::log::{clean_line, is_runtime_line, level_mark};
use crate::os::fd::{
    bytes_available, dup2, flush_c_stdio, pipe, read, wait_readable, write_all, Fd, Wake,
};

/// The `log` target captured runtime lines are forwarded to.
pub(crate) const LOG_TARGET: &str = "rkllm::runtime";

/// Serialises captures: the file descriptors are process-wide.
static CAPTURE_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// How many captures (or [`exclusive`] sections) this thread is inside; when non-zero it
    /// already holds [`CAPTURE_LOCK`].
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f`, capturing fds 1 and 2 when `enabled`, else calling it uncaptured (empty text).
/// The text holds the runtime's own lines only (see [`runtime_lines`]).
///
/// Uncaptured, `f` still holds the capture lock: what the runtime prints during an init
/// whose log is not captured then never lands in another thread's capture and misleads that
/// init's diagnosis. Inits are serialised either way.
pub(crate) fn run_captured<R>(enabled: bool, f: impl FnOnce() -> R) -> (R, String) {
    if enabled {
        let (result, text) = capture(f);
        (result, runtime_lines(&text))
    } else {
        (exclusive(f), String::new())
    }
}

/// The lines of `text` the runtime printed itself, each ending in a newline: lines of the
/// host program that arrived during the capture are dropped.
pub(crate) fn runtime_lines(text: &str) -> String {
    text.lines()
        .filter(|line| is_runtime_line(&clean_line(line)))
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// Under Miri: runs `f` while collecting the lines the mock runtime prints ([`tap_record`]),
/// which also still go to fds 1 and 2; returns its result and the text.
#[cfg(miri)]
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    let _lock = LockGuard::acquire();
    let level = tap::Level::open();
    let result = f();
    let text = level.close();
    forward_to_log(&text);
    (result, text)
}

/// Runs `f` while capturing what is written to fds 1 and 2; returns its result and the text
/// (whole lines, in arrival order across the two streams, whoever wrote them). Every byte is
/// also passed on to the original descriptors, during and after the capture; see the module
/// documentation for what this does to the process.
///
/// If the capture cannot be set up (no free descriptors, no thread), `f` runs uncaptured and
/// the text is empty. A panic in `f` propagates after the descriptors are restored.
#[cfg(not(miri))]
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    let _lock = LockGuard::acquire();
    flush_all();
    let redirect = match Redirect::start() {
        Ok(redirect) => redirect,
        Err(e) => {
            ::log::debug!(target: LOG_TARGET, "runtime output not captured: {e}");
            return (f(), String::new());
        }
    };
    // Lines a mock model hands over directly (not through the descriptors).
    let level = tap::Level::open();
    // On a panic in `f`, dropping `redirect` restores the descriptors during unwinding.
    let result = f();
    let mut text = redirect.finish();
    text.push_str(&level.close());
    forward_to_log(&text);
    (result, text)
}

/// Hands `bytes` (whole lines the mock runtime prints) to the captures in progress; false
/// when there is none. Under Miri, the only way the capture sees the runtime's lines; else
/// the way of a mock model whose lines do not go to the descriptors.
#[cfg(any(feature = "mock", test))]
pub(crate) fn tap_record(bytes: &[u8]) -> bool {
    tap::record(bytes)
}

/// Sends one line of the runtime to the `log` facade (target `rkllm::runtime`), as a capture
/// forwards the lines it read.
#[cfg(feature = "mock")]
pub(crate) fn log_runtime_line(line: &str) {
    forward_to_log(line);
}

/// The captures in progress, outermost first (a nested capture's lines reach the outer one
/// too, as with descriptors). Captures are serialised, so one stack serves the process; the
/// mock's lines come from any thread, as they would through fds 1 and 2.
mod tap {
    use std::sync::{Mutex, PoisonError};

    static OPEN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    #[cfg(any(feature = "mock", test))]
    pub(super) fn record(bytes: &[u8]) -> bool {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        for level in open.iter_mut() {
            level.extend_from_slice(bytes);
        }
        !open.is_empty()
    }

    /// One capture's level of the stack; closed on drop too (a panic in the closure).
    pub(super) struct Level {
        closed: bool,
    }

    impl Level {
        pub(super) fn open() -> Level {
            OPEN.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Vec::new());
            Level { closed: false }
        }

        pub(super) fn close(mut self) -> String {
            self.closed = true;
            let bytes = pop();
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
    }

    impl Drop for Level {
        fn drop(&mut self) {
            if !self.closed {
                pop();
            }
        }
    }

    fn pop() -> Vec<u8> {
        OPEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }
}

/// Runs `f` holding the capture lock, so that no capture on another thread runs meanwhile;
/// captures inside `f` on this thread still work.
pub(crate) fn exclusive<R>(f: impl FnOnce() -> R) -> R {
    let _lock = LockGuard::acquire();
    f()
}

/// Holds [`CAPTURE_LOCK`] unless this thread already does, and counts the nesting depth.
struct LockGuard {
    _guard: Option<MutexGuard<'static, ()>>,
}

impl LockGuard {
    fn acquire() -> LockGuard {
        let guard = if DEPTH.get() == 0 {
            // A panic while capturing poisons the lock, but the drop guard restored the
            // descriptors before it was released, so the state it protects is sound.
            Some(CAPTURE_LOCK.lock().unwrap_or_else(PoisonError::into_inner))
        } else {
            None
        };
        DEPTH.set(DEPTH.get() + 1);
        LockGuard { _guard: guard }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

/// Flushes Rust's and C's buffered standard streams, so that earlier output goes to the
/// original descriptors and output from inside the capture reaches the pipes.
fn flush_all() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    flush_c_stdio();
}

/// Sends each of the runtime's own lines to the `log` facade at the level of its mark.
fn forward_to_log(text: &str) {
    for line in text.lines() {
        let line = clean_line(line);
        if !line.is_empty() && is_runtime_line(&line) {
            ::log::log!(target: LOG_TARGET, log_level(&line), "{line}");
        }
    }
}

/// The `log` level of a runtime line: by its mark, `E` error, `W` warn, `I` info, else debug.
fn log_level(line: &str) -> ::log::Level {
    match level_mark(line) {
        Some('E') => ::log::Level::Error,
        Some('W') => ::log::Level::Warn,
        Some('I') => ::log::Level::Info,
        _ => ::log::Level::Debug,
    }
}

/// The captured text of both streams: complete lines, appended as they arrive.
type Sink = Arc<Mutex<Vec<u8>>>;

/// Fds 1 and 2 pointed at pipes, with their forwarding threads. Dropping it restores the
/// descriptors and ends the capture (the threads forward on until end-of-file).
struct Redirect {
    streams: Vec<Stream>,
    sink: Sink,
}

/// One redirected descriptor.
struct Stream {
    /// 1 or 2.
    target: RawFd,
    /// A duplicate of the original descriptor, restored onto `target` at the end.
    saved: Fd,
    /// Write end of the pipe that tells the forwarder the capture is over.
    stop: Option<Fd>,
    /// A read end of that pipe, kept until the stop byte is written: the forwarder may have
    /// closed its own (at end-of-file) by then, and a write to a pipe without readers would
    /// raise SIGPIPE, which kills a host that has not ignored it (a C program, a fuzzer).
    stop_reader: Option<Fd>,
    /// Signalled (or closed) once the forwarder has put into the sink everything the pipe
    /// held when the capture ended.
    captured: Option<mpsc::Receiver<()>>,
}

impl Redirect {
    /// Redirects fds 1 and 2. A descriptor that is not open (a daemon with stdout closed) is
    /// left alone; a failure part-way undoes what was done.
    fn start() -> std::io::Result<Redirect> {
        let sink: Sink = Arc::default();
        let mut redirect = Redirect {
            streams: Vec::with_capacity(2),
            sink,
        };
        for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // On an error `redirect` drops here and restores the streams already started.
            if let Some(stream) = Stream::start(target, &redirect.sink)? {
                redirect.streams.push(stream);
            }
        }
        Ok(redirect)
    }

    /// Flushes C's buffers into the pipes, restores the descriptors, waits until the
    /// forwarders have the text, and returns it.
    fn finish(mut self) -> String {
        self.restore();
        let bytes = std::mem::take(&mut *self.sink.lock().unwrap_or_else(PoisonError::into_inner));
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn restore(&mut self) {
        if self.streams.is_empty() {
            return;
        }
        flush_all();
        for stream in &mut self.streams {
            stream.restore();
        }
        for stream in &mut self.streams {
            stream.wait_captured();
        }
        self.streams.clear();
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        self.restore();
    }
}

impl Stream {
    fn start(target: RawFd, sink: &Sink) -> std::io::Result<Option<Stream>> {
        let saved = match Fd::dup(target) {
            Ok(saved) => saved,
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (data_r, data_w) = pipe()?;
        let (stop_r, stop_w) = pipe()?;
        let stop_reader = stop_r.dup_raw()?;
        let original = saved.dup_raw()?;
        let (captured_tx, captured_rx) = mpsc::channel();
        let sink = Arc::clone(sink);
        // Detached: it ends by itself at the pipe's end-of-file.
        std::thread::Builder::new()
            .name(format!("rkllm-capture-fd{target}"))
            .spawn(move || forward(data_r, stop_r, original, &sink, captured_tx))?;
        let mut stream = Stream {
            target,
            saved,
            stop: Some(stop_w),
            stop_reader: Some(stop_reader),
            captured: Some(captured_rx),
        };
        if let Err(e) = dup2(data_w.0, target) {
            stream.stop_forwarder();
            stream.wait_captured();
            return Err(e);
        }
        // `data_w` closes here: `target` is now the pipe's only write end in this process.
        drop(data_w);
        Ok(Some(stream))
    }

    /// Points `target` back at the original descriptor, then tells the forwarder.
    fn restore(&mut self) {
        if let Err(e) = dup2(self.saved.0, self.target) {
            // Nothing better to do than say so: the descriptor stays on the pipe, whose
            // forwarder keeps passing its bytes on.
            ::log::error!(target: LOG_TARGET, "could not restore fd {}: {e}", self.target);
        }
        self.stop_forwarder();
    }

    /// Wakes the forwarder through the stop pipe. A byte is written, not just the end
    /// closed, so that it wakes even if the stop pipe's write end was inherited by a child.
    fn stop_forwarder(&mut self) {
        if let Some(stop) = self.stop.take() {
            // If the write fails the forwarder still wakes when `stop` closes below. The
            // pipe has a reader (`stop_reader`) during the write, so it cannot raise SIGPIPE.
            let _ = write_all(&stop, b"x");
        }
        self.stop_reader.take();
    }

    /// Waits until the forwarder has put the capture's text into the sink. It does not wait
    /// for end-of-file, which a child process started meanwhile could delay forever by
    /// holding a write end.
    fn wait_captured(&mut self) {
        if let Some(captured) = self.captured.take() {
            // An error means the forwarder is gone (it does not panic: it only copies bytes);
            // the text is then incomplete, but nothing waits forever.
            let _ = captured.recv();
        }
    }
}

/// The original descriptor the forwarder copies to; a failed write (the reader of the
/// original stream went away) stops the copying, never the forwarding loop.
struct Original {
    fd: Fd,
    ok: bool,
}

impl Original {
    fn write(&mut self, bytes: &[u8]) {
        if self.ok {
            self.ok = write_all(&self.fd, bytes).is_ok();
        }
    }
}

/// The forwarding thread. While the capture lasts, copies the data pipe to `original` and
/// whole lines to `sink`. When the stop pipe wakes it, it takes into the sink exactly what
/// the pipe holds then (everything written before the descriptor was restored), signals
/// `captured`, and from then on only copies to `original`, until end-of-file: the read end
/// stays open as long as anyone (a child process started during the capture) can write.
fn forward(data: Fd, stop: Fd, original: Fd, sink: &Sink, captured: mpsc::Sender<()>) {
    let mut original = Original {
        fd: original,
        ok: true,
    };
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at_eof = false;
    // The capture.
    loop {
        match wait_readable(&data, &stop) {
            Ok(Wake::Data) => match read(&data, &mut buf) {
                Ok(0) => {
                    at_eof = true;
                    break;
                }
                Ok(n) => {
                    original.write(&buf[..n]);
                    keep_lines(sink, &mut pending, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            },
            Ok(Wake::Stop) => break,
            // Cannot wait on both pipes: stop capturing, but go on forwarding below.
            Err(_) => break,
        }
    }
    drop(stop);
    if !at_eof {
        let mut left = bytes_available(&data).unwrap_or(0);
        while left > 0 {
            let want = left.min(buf.len());
            match read(&data, &mut buf[..want]) {
                Ok(0) => {
                    at_eof = true;
                    break;
                }
                Ok(n) => {
                    original.write(&buf[..n]);
                    keep_lines(sink, &mut pending, &buf[..n]);
                    left -= n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        append(sink, &pending);
    }
    let _ = captured.send(());
    drop(captured);
    // After the capture: pass on whatever still arrives, until the last writer is gone.
    while !at_eof {
        match read(&data, &mut buf) {
            Ok(0) => at_eof = true,
            Ok(n) => original.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Not expected on a pipe; nothing more can be read.
            Err(_) => break,
        }
    }
}

/// Adds `chunk` to the line being assembled and moves every completed line into the sink.
fn keep_lines(sink: &Sink, pending: &mut Vec<u8>, chunk: &[u8]) {
    pending.extend_from_slice(chunk);
    if let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') {
        let rest = pending.split_off(last_nl + 1);
        append(sink, pending);
        *pending = rest;
    }
}

fn append(sink: &Sink, bytes: &[u8]) {
    sink.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use crate::os::fd::testing::{c_write, fd_flags, identity};

    /// Serialises the tests that point fds 1 and 2 at pipes of their own or compare where
    /// they point: one such test would otherwise see the other's pipes.
    fn observer_lock() -> MutexGuard<'static, ()> {
        static OBSERVER: Mutex<()> = Mutex::new(());
        OBSERVER.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with fds 1 and 2 pointed at pipes of the test's own, and returns what
    /// reached each. The capture lock is held while the pipes are put in place and taken out,
    /// so that no capture saves or restores the descriptors meanwhile; captures while `f`
    /// runs (on any thread) nest inside. With `tee` what reaches fd 1 is also passed on to
    /// the real descriptor, so that the harness's own output meanwhile survives; what reaches
    /// fd 2 (only the tests' own lines) is kept from the terminal.
    fn observe<R>(tee: bool, f: impl FnOnce() -> R) -> (R, Vec<u8>, Vec<u8>) {
        let _one_observer = observer_lock();
        let (saved, readers) = exclusive(|| {
            flush_all();
            let mut saved = Vec::new();
            let mut readers = Vec::new();
            for fd in [1, 2] {
                let real = Fd::dup(fd).unwrap();
                let copy = if tee && fd == 1 {
                    Some(real.dup_raw().unwrap())
                } else {
                    None
                };
                let (r, w) = pipe().unwrap();
                dup2(w.0, fd).unwrap();
                drop(w);
                readers.push(std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        match read(&r, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if let Some(copy) = &copy {
                                    let _ = write_all(copy, &buf[..n]);
                                }
                                seen.extend_from_slice(&buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => panic!("observer read: {e}"),
                        }
                    }
                    seen
                }));
                saved.push((fd, real));
            }
            (saved, readers)
        });
        let result = catch_unwind(AssertUnwindSafe(f));
        exclusive(|| {
            flush_all();
            for (fd, real) in &saved {
                dup2(real.0, *fd).unwrap();
            }
        });
        let mut seen: Vec<Vec<u8>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let err = seen.pop().unwrap();
        let out = seen.pop().unwrap();
        match result {
            Ok(r) => (r, out, err),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn captures_and_tees_both_streams() {
        let ((), out, err) = observe(true, || {
            let ((), text) = capture(|| {
                c_write(1, b"I rkllm: tee-test stdout line\n");
                c_write(2, b"E RKNN: tee-test stderr line\n");
                c_write(2, b"tee-test unterminated");
            });
            assert!(
                text.contains("I rkllm: tee-test stdout line\n"),
                "captured: {text:?}"
            );
            assert!(
                text.contains("E RKNN: tee-test stderr line\n"),
                "captured: {text:?}"
            );
            // A last line without a newline is still a whole line.
            assert!(
                text.contains("tee-test unterminated\n"),
                "captured: {text:?}"
            );
        });
        assert!(contains(&out, b"I rkllm: tee-test stdout line\n"));
        assert!(contains(&err, b"E RKNN: tee-test stderr line\n"));
        assert!(contains(&err, b"tee-test unterminated"));
        // Each stream reached its own original descriptor only.
        assert!(!contains(&out, b"tee-test stderr line"));
        assert!(!contains(&err, b"tee-test stdout line"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn large_write_does_not_deadlock() {
        let block: String = (0..20_000)
            .map(|i| format!("bulk {i:06} {}\n", "x".repeat(50)))
            .collect();
        assert!(block.len() > 1 << 20);
        let ((), out, _) = observe(false, || {
            // One write call larger than any pipe buffer, while nobody else reads the pipe
            // but the capture's reader.
            let ((), text) = capture(|| c_write(1, block.as_bytes()));
            // Other threads of the test binary (the harness reporting results) may write to
            // fd 1 meanwhile, between two chunks of this write: every byte must arrive in
            // order, with possibly something else in between.
            assert!(
                is_subsequence(text.as_bytes(), block.as_bytes()),
                "capture lost bytes"
            );
        });
        assert!(is_subsequence(&out, block.as_bytes()), "tee lost bytes");
    }

    /// Whether `needle` occurs in `haystack` in order, possibly with other bytes in between.
    fn is_subsequence(haystack: &[u8], needle: &[u8]) -> bool {
        let mut want = needle.iter().peekable();
        for b in haystack {
            if want.peek() == Some(&b) {
                want.next();
            }
        }
        want.peek().is_none()
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn descriptors_restored_after_normal_run_and_panic() {
        let _one_observer = observer_lock();
        exclusive(|| {
            let before = (identity(1), identity(2));
            let (during, _) = capture(|| (identity(1), identity(2)));
            assert_ne!(during.0, before.0, "fd 1 was not redirected");
            assert_ne!(during.1, before.1, "fd 2 was not redirected");
            assert_eq!((identity(1), identity(2)), before);

            let result = catch_unwind(|| capture(|| panic!("capture-test panic")));
            let payload = result.expect_err("the panic must propagate");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"capture-test panic"));
            assert_eq!((identity(1), identity(2)), before);
        });
        // The lock is usable again (poisoning is tolerated).
        let (n, _) = capture(|| 7);
        assert_eq!(n, 7);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn nested_captures_tee_into_the_outer_one() {
        let ((inner, outer), _, _) = observe(true, || {
            let (inner, outer) = capture(|| {
                c_write(2, b"nest-outer-a\n");
                let ((), inner) = capture(|| c_write(2, b"nest-inner\n"));
                c_write(2, b"nest-outer-b\n");
                inner
            });
            (inner, outer)
        });
        assert!(inner.contains("nest-inner\n"));
        assert!(!inner.contains("nest-outer"));
        for marker in ["nest-outer-a\n", "nest-inner\n", "nest-outer-b\n"] {
            assert!(outer.contains(marker), "{marker:?} missing from {outer:?}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn concurrent_captures_serialise() {
        let ((), _, err) = observe(true, || {
            let threads: Vec<_> = (0..3)
                .map(|t| {
                    std::thread::spawn(move || {
                        for round in 0..4 {
                            let marker = format!("conc-thread-{t}-round-{round}");
                            let ((), text) = capture(|| {
                                c_write(2, format!("{marker} start\n").as_bytes());
                                std::thread::yield_now();
                                c_write(2, format!("{marker} end\n").as_bytes());
                            });
                            assert!(text.contains(&format!("{marker} start\n")));
                            assert!(text.contains(&format!("{marker} end\n")));
                            let foreign = text
                                .lines()
                                .filter(|l| l.starts_with("conc-thread-"))
                                .count();
                            assert_eq!(foreign, 2, "another capture ran inside this one: {text:?}");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        });
        // Every capture passed its lines on.
        assert!(contains(&err, b"conc-thread-2-round-3 end\n"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn disabled_capture_calls_f_directly() {
        let (n, text) = run_captured(false, || 42);
        assert_eq!((n, text.as_str()), (42, ""));
        let (text, out, _) = observe(true, || {
            run_captured(true, || c_write(1, b"I rkllm: enabled-capture\n")).1
        });
        assert!(contains(&out, b"I rkllm: enabled-capture\n"));
        assert!(text.contains("I rkllm: enabled-capture\n"), "{text:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn another_threads_lines_reach_the_stream_but_not_the_runtime_text() {
        let (text, out, err) = observe(true, || {
            run_captured(true, || {
                c_write(1, b"I rkllm: own-line before\n");
                // The host's other thread prints while the runtime runs.
                std::thread::spawn(|| {
                    c_write(2, b"host-thread: serving request 7\n");
                    c_write(2, b"E myapp: host-thread error line\n");
                })
                .join()
                .unwrap();
                c_write(2, b"E RKNN: own-line after\n");
            })
            .1
        });
        // The two streams' lines arrive through two pipes: their order is not kept.
        for own in ["I rkllm: own-line before\n", "E RKNN: own-line after\n"] {
            assert!(text.contains(own), "{own:?} missing from {text:?}");
        }
        assert!(!text.contains("host-thread"), "{text:?}");
        // Every byte still reached the original descriptors.
        assert!(contains(&err, b"host-thread: serving request 7\n"));
        assert!(contains(&err, b"E myapp: host-thread error line\n"));
        assert!(contains(&out, b"I rkllm: own-line before\n"));
        assert!(contains(&err, b"E RKNN: own-line after\n"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn a_child_started_during_the_capture_outlives_it_and_is_heard() {
        use std::os::unix::process::ExitStatusExt;
        let (status, _, err) = observe(true, || {
            let (child, _) = capture(|| {
                // Inherits fd 2 (the capture's pipe) and writes only after the capture ended.
                std::process::Command::new("sh")
                    .args(["-c", "sleep 0.3; echo late-child-line >&2"])
                    .spawn()
                    .expect("spawn sh")
            });
            let mut child = child;
            child.wait().expect("wait for the child")
        });
        assert_eq!(
            status.signal(),
            None,
            "the child was killed by signal {:?} (13 is SIGPIPE)",
            status.signal()
        );
        assert!(status.success(), "{status}");
        assert!(
            contains(&err, b"late-child-line\n"),
            "the child's output was lost: {:?}",
            String::from_utf8_lossy(&err)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot redirect file descriptors")]
    fn own_descriptors_are_close_on_exec_and_above_the_standard_streams() {
        let flags = |fd: &Fd| fd_flags(fd.0);
        let (r, w) = pipe().unwrap();
        let saved = Fd::dup(1).unwrap();
        for fd in [&r, &w, &saved] {
            assert!(
                fd.0 >= 3,
                "descriptor {} is a standard stream's number",
                fd.0
            );
            assert_ne!(flags(fd) & libc::FD_CLOEXEC, 0, "fd {} is inherited", fd.0);
        }
    }

    /// Under Miri, the only way the mock's lines reach a capture; else the way of a mock
    /// model whose lines do not go to the descriptors.
    #[test]
    fn lines_handed_over_reach_the_capture() {
        let (n, text) = capture(|| 7);
        assert_eq!((n, text.as_str()), (7, ""));
        let ((inner, n), outer) = capture(|| {
            tap_record(b"host: not the runtime's\n");
            let (n, inner) = run_captured(true, || {
                tap_record(b"I rkllm: rkllm-runtime version: 1.1.1\n");
                8
            });
            (inner, n)
        });
        assert_eq!(n, 8);
        assert_eq!(inner, "I rkllm: rkllm-runtime version: 1.1.1\n");
        assert!(outer.contains("host: not the runtime's\n"), "{outer:?}");
        assert!(
            outer.contains("I rkllm: rkllm-runtime version"),
            "{outer:?}"
        );
        // Outside a capture (unless another test's is open) nobody takes the line.
        let _ = tap_record(b"I rkllm: after\n");
    }

    #[test]
    fn log_levels_follow_marks() {
        assert_eq!(log_level("E RKNN: failed"), ::log::Level::Error);
        assert_eq!(log_level("E rkllm: failed"), ::log::Level::Error);
        assert_eq!(log_level("W rkllm: Warning"), ::log::Level::Warn);
        assert_eq!(
            log_level("I rkllm: rkllm-runtime version: 1.1.1"),
            ::log::Level::Info
        );
        assert_eq!(log_level("rknn_init fail! ret=-1"), ::log::Level::Debug);
    }
}
