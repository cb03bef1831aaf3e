//! The chat example, scripted: a conversation piped to its stdin, on the mock runtime.
//!
//! The example runs through `cargo run`, with the cargo that runs these tests (`$CARGO`), so
//! it is built when needed and found wherever the target directory is. When the tests run as
//! aarch64 binaries under qemu, the spawned cargo is the host's and builds and runs the
//! example for the host: this checks the example's behaviour, not the target's code, which
//! the other tests cover.

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

/// Runs the chat example with `args`, `stdin` piped in, and returns its output.
fn run_chat(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(cargo())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--example", "chat", "--"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{} run --example chat`: {e}. This test runs the example through \
                 cargo; run it with `cargo test`, which sets CARGO",
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
    let output = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("the chat example did not finish within {TIMEOUT:?}"))
        .expect("wait for the chat example");
    assert!(
        output.status.success(),
        "the chat example failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The replies on stdout: every line but the runtime's own log lines (`I rkllm: ...`).
fn replies(output: &Output) -> Vec<String> {
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 stdout")
        .lines()
        .filter(|l| !l.starts_with("I rkllm:") && !l.starts_with("W rkllm:"))
        .map(str::to_owned)
        .collect()
}

/// One stats line: `[3 tokens, first token 0.2 ms, ..., prompt ~14 tokens, 2 messages in
/// history]`.
#[derive(Debug)]
struct Stats {
    tokens: usize,
    prompt_tokens: usize,
    history: usize,
}

fn stats(output: &Output) -> Vec<Stats> {
    let stderr = String::from_utf8(output.stderr.clone()).expect("UTF-8 stderr");
    stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("first token"))
        .map(|line| {
            let fields: Vec<&str> = line.trim_matches(['[', ']']).split(", ").collect();
            let find = |prefix: &str, suffix: &str| -> usize {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
                    .unwrap_or_else(|| panic!("no `{prefix}N{suffix}` in {line:?}"))
            };
            Stats {
                tokens: find("", " tokens"),
                // Without a tokenizer the prompt size is an estimate, marked `~`.
                prompt_tokens: find("prompt ~", " tokens"),
                history: find("", " messages in history"),
            }
        })
        .collect()
}

#[test]
fn a_scripted_three_turn_chat_streams_replies_with_stats() {
    let output = run_chat(
        &[
            "--mock",
            "--system",
            "You are terse.",
            "--mock-reply",
            "Hi there!",
            "--mock-reply",
            "It is 4.",
            "--mock-reply",
            "Goodbye!",
        ],
        "Hello\nWhat is 2+2?\nThanks, bye\n",
    );
    assert_eq!(replies(&output), ["Hi there!", "It is 4.", "Goodbye!"]);
    let stats = stats(&output);
    assert_eq!(stats.len(), 3, "one stats line per reply: {stats:?}");
    assert!(stats.iter().all(|s| s.tokens > 0), "{stats:?}");
    assert_eq!(
        stats.iter().map(|s| s.history).collect::<Vec<_>>(),
        [2, 4, 6],
        "each exchange is kept"
    );
    assert!(
        stats
            .windows(2)
            .all(|w| w[1].prompt_tokens > w[0].prompt_tokens + 5),
        "each prompt carries the history: {stats:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("> ") && !stderr.contains("Chatting with"),
        "no prompt or banner when stdin is not a terminal:\n{stderr}"
    );
}

#[test]
fn the_echoing_mock_sees_history_reset_and_exit() {
    let output = run_chat(
        &["--mock"],
        "alpha\nbeta\n/reset\ngamma\n/exit\nnever answered\n",
    );
    assert_eq!(replies(&output), ["alpha", "beta", "gamma"]);
    let stats = stats(&output);
    let history: Vec<usize> = stats.iter().map(|s| s.history).collect();
    assert_eq!(history, [2, 4, 2], "/reset clears the history: {stats:?}");
    assert!(
        stats[1].prompt_tokens > stats[0].prompt_tokens,
        "the second prompt holds the first exchange: {stats:?}"
    );
    assert!(
        stats[2].prompt_tokens < stats[1].prompt_tokens,
        "after /reset the prompt is one turn again: {stats:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(history cleared)"), "{stderr}");
}

#[test]
fn the_prompt_cache_mode_reuses_the_previous_turn() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_chat(
        &["--mock", "--prompt-cache", dir.path().to_str().unwrap()],
        "one\ntwo\nthree\n",
    );
    assert_eq!(replies(&output), ["one", "two", "three"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cache: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split("prompt cache ").nth(1))
        .collect();
    assert_eq!(
        cache,
        ["rebuilt]", "reused]", "reused]"],
        "turn 1 prefills in full, later turns reuse:\n{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the example's session deletes its cache files on exit: {left:?}"
    );
}
