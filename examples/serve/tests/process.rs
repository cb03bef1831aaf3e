//! The server as a process: its command line, many idle connections under a low open-files
//! limit, and a graceful shutdown on SIGTERM. Each test runs the `rkllm-serve` binary (the
//! same program as the `serve` example) on 127.0.0.1 with the built-in mock.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rkllm-serve");

/// A command that runs the server binary: through the target's cargo runner when one is set
/// (`CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 ..."` when the tests run as
/// aarch64 binaries under qemu: cargo applies it to test binaries, not to what they start).
fn server_command() -> Command {
    let runner = format!(
        "CARGO_TARGET_{}_UNKNOWN_LINUX_GNU_RUNNER",
        std::env::consts::ARCH.to_uppercase()
    );
    let runner = std::env::var(runner).unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(BIN);
            command
        }
        None => Command::new(BIN),
    }
}

/// A server child process; killed if a test fails before it exits.
struct Served {
    child: Child,
    base: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Lines the server wrote to stderr so far.
    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

/// Starts the server with `args` (and `--port 0`), set up by `setup`; waits for its
/// `listening on` line.
fn serve(args: &[&str], setup: impl FnOnce(&mut Command)) -> Served {
    let mut command = server_command();
    command
        .args(["--mock", "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    setup(&mut command);
    let mut child = command.spawn().expect("the server starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    // (The runtime's own log lines come first.)
    let base = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .expect("readable");
        if let Some(base) = line.strip_prefix("listening on ") {
            break base.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Served {
        child,
        base,
        stderr: rx,
    }
}

/// Waits for the child to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_lists_the_shared_flags_and_usage_errors_exit_2() {
    let help = server_command().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--model <PATH>",
        "--tokenizer <PATH>",
        "--lib <PATH>",
        "--mock",
        "--max-context <N>",
        "--max-new-tokens <N>",
        "--system <TEXT>",
        "--style <STYLE>",
        "--prompt-cache <DIR>",
        "--host <HOST>",
        "--port <PORT>",
        "--max-queue <N>",
        "--queue-timeout <SECS>",
        "--mock-reply <TEXT>",
        "--served-model-name <NAME>",
        "--max-connections <N>",
        "--header-timeout <SECS>",
        "--write-timeout <SECS>",
        "--max-body-bytes <BYTES>",
        "--shutdown-grace <SECS>",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
    let bad = server_command().arg("--no-such-flag").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--no-such-flag"));
    let bad = server_command()
        .args(["--max-new-tokens", "lots"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lots"));
    let bad = server_command()
        .args(["--mock-decode-seconds", "-1"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("-1"));
}

#[tokio::test]
async fn the_old_flag_names_still_work_as_aliases() {
    let server = serve(&["--max-tokens", "3", "--model-name", "old-name"], |_| {});
    let client = reqwest::Client::new();
    let models: Value = client
        .get(format!("{}/v1/models", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "old-name");
    let reply: Value = client
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&json!({ "model": "old-name", "messages": [{ "role": "user", "content": "one two three four five" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["usage"]["completion_tokens"], 3);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
}

/// Raises this test process's own open-files limit so that it can hold the idle
/// connections (the server gets a lower one).
fn raise_own_open_files(to: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one valid `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < to {
            assert!(
                limit.rlim_max >= to,
                "the hard open-files limit ({}) is below the {to} this test needs",
                limit.rlim_max
            );
            limit.rlim_cur = to;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_open_files_limit_do_not_keep_a_chat_out() {
    const IDLE: usize = 1100;
    raise_own_open_files(4096);
    // A cap above what the limit allows: the server lowers it to fit (1,024 - 64).
    let server = serve(
        &["--mock-reply", "Served.", "--max-connections", "2000"],
        |command| {
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 1024,
                        rlim_max: 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    let client = reqwest::Client::new();
    let response = tokio::time::timeout(
        Duration::from_secs(45),
        client
            .post(format!("{}/v1/chat/completions", server.base))
            .json(&json!({ "messages": [{ "role": "user", "content": "Hi" }] }))
            .send(),
    )
    .await
    .expect("the chat is served within 45 s despite the idle connections")
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Served.");
    eprintln!(
        "{IDLE} idle connections under a 1,024 open-files limit: the chat was served in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // The server fitted its cap to its limit and said so, and kept to it.
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("lowering the connection cap to 960")),
        "no warning about the connection cap"
    );
    let metrics = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rkllm_open_connections "))
        .expect("the open connections gauge")
        .parse()
        .unwrap();
    assert!(open <= 960.0 + 8.0, "{open} connections open");
    drop(idle);
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_three_streams_exits_0_ends_each_stream_and_leaves_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = serve(
        &[
            "--mock-reply",
            &"word ".repeat(400),
            "--mock-decode-seconds",
            "0.05",
            "--shutdown-grace",
            "2",
        ],
        |command| {
            command.env("TMPDIR", tmp.path());
        },
    );
    // The built-in mock's model file is in the per-test TMPDIR while it runs.
    assert!(!files_in(tmp.path()).is_empty());
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for i in 0..3 {
        let request = client
            .post(format!("{}/v1/chat/completions", server.base))
            .json(&json!({ "messages": [{ "role": "user", "content": format!("stream {i}") }], "stream": true }))
            .send();
        streams.push(tokio::spawn(async move {
            let response = request.await.unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }));
    }
    // Let the first stream get going (the others wait in the queue).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill sends a signal to the child process this test started (still running:
    // it is reaped only below).
    let sent_rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent_rc, 0);
    let status =
        tokio::task::block_in_place(|| wait_exit(&mut server.child, Duration::from_secs(30)));
    eprintln!(
        "exited with {status} {:.2} s after SIGTERM",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(0));
    let mut ended_by_error_event = 0;
    for stream in streams {
        let (status, body) = stream.await.unwrap();
        if status == 200 {
            let data: Vec<&str> = body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
            let before_done: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
            if before_done["error"]["code"] == "shutting_down" {
                ended_by_error_event += 1;
            } else {
                assert!(
                    before_done["choices"][0]["finish_reason"].is_string(),
                    "{body}"
                );
            }
        } else {
            // A request still queued is answered 503 with an OpenAI error.
            assert_eq!(status, 503, "{body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["code"], "shutting_down");
        }
    }
    // The running reply (20 s of decoding) could not finish in the 2 s grace period.
    assert_eq!(ended_by_error_event, 1);
    assert_eq!(
        files_in(tmp.path()),
        Vec::<String>::new(),
        "files left in TMPDIR"
    );
    // One log line per request.
    let log = server.stderr_lines();
    assert!(
        log.iter()
            .filter(|l| l.contains("path=/v1/chat/completions") && l.contains("status="))
            .count()
            >= 3,
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_reply_finish_within_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = serve(
        &[
            "--mock-reply",
            &"word ".repeat(40),
            "--mock-decode-seconds",
            "0.05",
            "--shutdown-grace",
            "20",
        ],
        |command| {
            command.env("TMPDIR", tmp.path());
        },
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&json!({ "messages": [{ "role": "user", "content": "go" }], "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::spawn(response.text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill sends a signal to the child process this test started (still running:
    // it is reaped only below).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status =
        tokio::task::block_in_place(|| wait_exit(&mut server.child, Duration::from_secs(30)));
    assert_eq!(status.code(), Some(0));
    let body = body.await.unwrap().unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let last: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{body}");
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "word ".repeat(40));
    assert_eq!(
        files_in(tmp.path()),
        Vec::<String>::new(),
        "files left in TMPDIR"
    );
}
