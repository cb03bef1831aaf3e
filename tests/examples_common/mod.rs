//! Runs the examples as a user would, and reads what they print.
//!
//! An example runs through `cargo run`, with the cargo that runs these tests (`$CARGO`), so
//! it is built when needed and found wherever the target directory is. When the tests run as
//! aarch64 binaries under qemu, the spawned cargo is the host's and builds and runs the
//! example for the host: this checks the example's behaviour, not the target's code, which
//! the other tests cover.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Generous: the first call may compile the example.
const TIMEOUT: Duration = Duration::from_secs(600);

fn cargo() -> PathBuf {
    // Cargo sets CARGO for the test process; the build-time value is the fallback.
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO")))
}

/// Runs the example `name` with `args` and `stdin` piped in; returns how it ended, whatever
/// that was.
pub fn run(name: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(cargo())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--example", name, "--"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{} run --example {name}`: {e}. This test runs the example \
                 through cargo; run it with `cargo test`, which sets CARGO",
                cargo().display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap(); // dropping stdin closes it: the example sees the end of input
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("the {name} example did not finish within {TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("wait for the {name} example: {e}"))
}

/// The output, for assertion messages.
pub fn show(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    )
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
