//! The runtime's log lines, written with `write(2)` straight to file descriptors 1 and 2.
//!
//! The real runtime is C++ and prints below Rust's `print!` machinery, so the test harness
//! cannot capture its lines; writing to the descriptors keeps the mock's lines where a
//! log-capturing wrapper (a `dup2` onto a pipe) finds them. Each line goes out in one
//! `write` call, so lines of concurrent threads do not interleave within a line.
//!
//! A model whose lines go elsewhere ([`RuntimeLog::Log`], [`RuntimeLog::Off`]) hands them to
//! the init capture in progress, if any, so the diagnosis still reads them; otherwise they go
//! to the `log` facade or nowhere.

use std::time::{SystemTime, UNIX_EPOCH};

use super::model_file::{LogStream, MockModel, RuntimeLog};

/// Where one model's lines go: the destination and the stream of its `E` lines.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Out {
    to: RuntimeLog,
    errors: LogStream,
}

impl Out {
    /// The lines of `model`.
    pub(crate) fn of(model: &MockModel) -> Out {
        Out {
            to: model.spec_runtime_log(),
            errors: model.runtime_behaviour().error_log,
        }
    }
}

/// Standard output.
const STDOUT: libc::c_int = 1;
/// Standard error.
const STDERR: libc::c_int = 2;

/// Sends `line` where `out` says: to `fd`, or to the `log` facade, or nowhere.
fn emit(out: Out, fd: libc::c_int, line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    match out.to {
        RuntimeLog::Print => write_line(fd, &buf),
        // A capture in progress (an init's) takes the line and passes it to the log itself.
        RuntimeLog::Log => {
            if !crate::diagnosis::tap_record(&buf) {
                crate::diagnosis::log_runtime_line(line);
            }
        }
        RuntimeLog::Off => {
            let _ = crate::diagnosis::tap_record(&buf);
        }
    }
}

/// Writes `buf` (a line and its newline) to `fd`, retrying short writes and `EINTR`.
fn write_line(fd: libc::c_int, buf: &[u8]) {
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        // SAFETY: `rest` is a live, initialised byte slice; write(2) reads at most
        // `rest.len()` bytes from its start and keeps no pointer after returning.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // A closed or full descriptor: the runtime's logging never fails a call.
            return;
        }
        off += n as usize;
    }
    // Miri cannot point the descriptors at a pipe, so the init capture takes the line here.
    #[cfg(miri)]
    let _ = crate::diagnosis::tap_record(buf);
}

fn fd_of(stream: LogStream) -> libc::c_int {
    match stream {
        LogStream::Stdout => STDOUT,
        LogStream::Stderr => STDERR,
    }
}

/// `hh:mm:ss.mmm` of the wall clock (UTC), as RKNN stamps its error lines.
pub(crate) fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// An `I rkllm: …` line, on standard output.
pub(crate) fn info(out: Out, msg: &str) {
    emit(out, STDOUT, &format!("I rkllm: {msg}"));
}

/// A `W rkllm: …` line, on standard output.
pub(crate) fn warn(out: Out, msg: &str) {
    emit(out, STDOUT, &format!("W rkllm: {msg}"));
}

/// An `E rkllm: …` line (the LLM layer's own errors), on the error stream.
pub(crate) fn rkllm_error(out: Out, msg: &str) {
    emit(out, fd_of(out.errors), &format!("E rkllm: {msg}"));
}

/// An `E RKNN: [hh:mm:ss.mmm] …` line (the NPU layer's errors), on the error stream.
pub(crate) fn rknn_error(out: Out, msg: &str) {
    emit(
        out,
        fd_of(out.errors),
        &format!("E RKNN: [{}] {msg}", timestamp()),
    );
}

/// One stage of the performance table.
pub(crate) struct Stage {
    pub(crate) name: &'static str,
    pub(crate) millis: f64,
    pub(crate) tokens: usize,
}

/// The per-run performance table printed when `RKLLM_LOG_LEVEL=1`, on standard output.
pub(crate) fn perf_table(out: Out, stages: &[Stage]) {
    let rule = "-".repeat(86);
    info(out, &rule);
    info(
        out,
        " Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second",
    );
    info(out, &rule);
    for s in stages {
        let (per_token, per_second) = if s.tokens == 0 {
            (0.0, 0.0)
        } else if s.millis <= 0.0 {
            (s.millis / s.tokens as f64, 0.0)
        } else {
            (
                s.millis / s.tokens as f64,
                s.tokens as f64 * 1000.0 / s.millis,
            )
        };
        info(
            out,
            &format!(
                " {:<13} {:<16.2} {:<9} {:<24.2} {:.2}",
                s.name, s.millis, s.tokens, per_token, per_second
            ),
        );
    }
    info(out, &rule);
}
