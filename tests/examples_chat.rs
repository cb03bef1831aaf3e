//! The chat example, scripted: a conversation piped to its stdin, on the mock runtime.

use std::process::Output;

mod examples_common;

/// Runs the chat example with `args`, `stdin` piped in, and returns its output.
fn run_chat(args: &[&str], stdin: &str) -> Output {
    let output = examples_common::run("chat", args, stdin);
    assert!(
        output.status.success(),
        "the chat example failed: {}",
        examples_common::show(&output)
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

/// Qwen2.5's `tokenizer.json` and `tokenizer_config.json` (scripts/fetch-template-tokenizers.sh,
/// or `TEMPLATE_MODELS_DIR`); a missing file fails the test with that hint.
fn qwen_dir() -> std::path::PathBuf {
    let dir = match std::env::var_os("TEMPLATE_MODELS_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/template-models"),
    }
    .join("qwen2_5");
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: run scripts/fetch-template-tokenizers.sh",
            dir.join(file).display()
        );
    }
    dir
}

/// The exact prompt sizes of the stats lines (no `~`: the tokenizer counts).
fn exact_prompt_tokens(output: &Output) -> Vec<usize> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("first token"))
        .map(|line| {
            line.trim_matches(['[', ']'])
                .split(", ")
                .find_map(|f| {
                    f.strip_prefix("prompt ")?
                        .strip_suffix(" tokens")?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("no exact prompt size in {line:?}"))
        })
        .collect()
}

#[cfg(all(feature = "template", feature = "tokenizer"))]
#[test]
fn a_qwen_chat_from_the_models_directory_uses_its_template_and_tokenizer() {
    use rkllm::chat::{HfChatTemplate, Message, TemplateInput, TemplateTokenizer};

    let dir = qwen_dir();
    let output = run_chat(
        &[
            "--mock",
            "--fast",
            "--template",
            dir.to_str().unwrap(),
            "--system",
            "You are terse.",
        ],
        "Hello\nHow are you?\n",
    );
    // The echoing mock found the user's message in the ChatML prompt, and answered through
    // Qwen's tokenizer.
    assert_eq!(replies(&output), ["Hello", "How are you?"]);
    // The prompts are the template's, counted by the tokenizer.
    let template = HfChatTemplate::from_config_file(dir.join("tokenizer_config.json")).unwrap();
    let tokenizer = TemplateTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let count = |messages: &[Message]| {
        tokenizer
            .encode(&template, &TemplateInput::new(messages))
            .unwrap()
            .token_ids
            .len()
    };
    let first = [Message::system("You are terse."), Message::user("Hello")];
    let second = [
        Message::system("You are terse."),
        Message::user("Hello"),
        Message::assistant("Hello"),
        Message::user("How are you?"),
    ];
    assert_eq!(
        exact_prompt_tokens(&output),
        [count(&first), count(&second)]
    );
}

#[cfg(all(feature = "template", feature = "tokenizer"))]
#[test]
fn a_reasoning_reply_shows_its_thinking_apart_from_the_answer() {
    let dir = qwen_dir();
    let config = dir.join("tokenizer_config.json");
    let output = run_chat(
        &[
            "--mock",
            "--fast",
            "--template",
            config.to_str().unwrap(),
            "--tokenizer",
            dir.join("tokenizer.json").to_str().unwrap(),
            "--mock-reply",
            "<think>\nAdd them.\n</think>\n\nIt is 4.",
        ],
        "What is 2+2?\n",
    );
    assert_eq!(replies(&output), ["It is 4."]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[thinking] Add them. [/thinking]"),
        "{stderr}"
    );
}
