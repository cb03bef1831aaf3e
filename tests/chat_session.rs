//! Chat turns on a session, and the rolling prompt cache, against the mock runtime.

mod common;

use std::path::Path;

use rkllm::chat::{
    ChatSession, ContextBudget, Conversation, PromptCacheConfig, Role, SystemStyle, TrimPolicy,
};
use rkllm::mock::{MockModel, RunFailure};
use rkllm::{FinishReason, GenerateOptions, Model, Runtime};

fn load(mock: &MockModel) -> (Model, rkllm::mock::MockModelFile) {
    let path = mock.write_temp_file().unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    (model, path)
}

/// Today's single rolling cache (the temporary directory may be a tmpfs: allowed for tests).
fn rolling(dir: &Path) -> PromptCacheConfig {
    PromptCacheConfig::rolling(dir).allow_tmpfs(true)
}

/// The cache files in `dir` (the store's index aside).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".cache"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_multi_turn_chat_streams_and_keeps_history() {
    let (model, _) = load(&MockModel::new().turns(["Ahoy!", "Aye, 4.", "Fair winds!"]));
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge);
    chat.set_system("You are a pirate.");
    let opts = GenerateOptions::new();
    for (user, expected) in [
        ("Hello", "Ahoy!"),
        ("What is 2+2?", "Aye, 4."),
        ("Bye", "Fair winds!"),
    ] {
        let mut stream = session.chat(&mut chat, user, &opts).unwrap();
        let mut streamed = String::new();
        for token in stream.by_ref() {
            streamed.push_str(&token.unwrap().text);
        }
        assert_eq!(streamed, expected);
        assert_eq!(stream.finish_reason(), Some(&FinishReason::EndOfTurn));
    }
    let roles: Vec<Role> = chat.messages().iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(
        roles,
        [System, User, Assistant, User, Assistant, User, Assistant]
    );
    assert_eq!(chat.messages()[4].content, "Aye, 4.");
}

#[test]
fn the_whole_conversation_is_sent_each_turn() {
    let (model, _) = load(&MockModel::new().echo());
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge);
    let opts = GenerateOptions::new();
    assert_eq!(
        session
            .chat(&mut chat, "first", &opts)
            .unwrap()
            .complete()
            .unwrap()
            .text,
        "first"
    );
    assert_eq!(
        session
            .chat(&mut chat, "second", &opts)
            .unwrap()
            .complete()
            .unwrap()
            .text,
        "second"
    );
    let prompt = chat.render(false).unwrap();
    assert_eq!(
        prompt,
        "<bos><start_of_turn>user\nfirst<end_of_turn>\n<start_of_turn>model\nfirst<end_of_turn>\n\
         <start_of_turn>user\nsecond<end_of_turn>\n<start_of_turn>model\nsecond<end_of_turn>\n"
    );
}

#[test]
fn a_failed_turn_is_taken_back_and_an_aborted_one_kept() {
    let (model, _) = load(
        &MockModel::new()
            .answer("partial answer that goes on")
            .fail_run(2, RunFailure::ReturnError)
            .decode_seconds_per_token(0.002),
    );
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge);
    let opts = GenerateOptions::new();
    session
        .chat(&mut chat, "one", &opts)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(chat.messages().len(), 2);
    let err = session
        .chat(&mut chat, "two", &opts)
        .unwrap()
        .complete()
        .unwrap_err();
    assert!(
        matches!(
            err,
            rkllm::Error::Call {
                func: "rkllm_run",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        chat.messages().len(),
        2,
        "the failed user turn was taken back"
    );
    {
        let mut stream = session.chat(&mut chat, "three", &opts).unwrap();
        let first = stream.next().unwrap().unwrap();
        assert!(!first.text.is_empty());
    } // dropped mid-reply: aborted and kept as far as it got
    assert_eq!(chat.messages().len(), 4);
    let kept = &chat.messages()[3].content;
    assert!(
        !kept.is_empty() && "partial answer that goes on".starts_with(kept.as_str()),
        "{kept:?}"
    );
}

/// Runs `turns` user messages with the cache on or off; returns the replies' token ids.
fn run_chat(
    cache_dir: Option<&Path>,
    turns: usize,
    budget: Option<ContextBudget>,
) -> (Vec<Vec<u32>>, rkllm::mock::MockModelFile) {
    let (model, path) = load(&MockModel::new().echo());
    let mut session = ChatSession::new(model.session().unwrap());
    if let Some(dir) = cache_dir {
        session.enable_prompt_cache(rolling(dir)).unwrap();
    }
    let mut chat = Conversation::new(SystemStyle::Merge);
    if let Some(b) = budget {
        chat = chat
            .with_budget(b)
            .with_trim_policy(TrimPolicy::Chunked { drop_fraction: 0.5 });
    }
    chat.set_system("Be brief.");
    let mut replies = Vec::new();
    for i in 0..turns {
        let done = session
            .chat(
                &mut chat,
                format!("message number {i}"),
                &GenerateOptions::new(),
            )
            .unwrap()
            .complete()
            .unwrap();
        // Merge style puts the system text into the first user turn, which echo repeats.
        let expected = if i == 0 {
            "Be brief.\n\nmessage number 0".to_owned()
        } else {
            format!("message number {i}")
        };
        assert_eq!(done.text, expected);
        replies.push(done.token_ids);
    }
    (replies, path)
}

#[test]
fn the_cache_gives_identical_streams_and_reuses_the_prefix() {
    let dir = common::temp_path("rolling-identical");
    let (plain, plain_path) = run_chat(None, 6, None);
    let (cached, cached_path) = run_chat(Some(&dir), 6, None);
    assert_eq!(
        plain, cached,
        "same token streams with and without the cache"
    );
    let plain_runs = rkllm::mock::runs_of_model(&plain_path);
    let cached_runs = rkllm::mock::runs_of_model(&cached_path);
    assert!(plain_runs.iter().all(|r| r.reused_tokens == 0));
    assert_eq!(
        cached_runs[0].reused_tokens, 0,
        "the first turn has nothing to reuse"
    );
    for (turn, (c, p)) in cached_runs.iter().zip(&plain_runs).enumerate().skip(1) {
        assert_eq!(c.prompt_tokens, p.prompt_tokens, "turn {turn}: same prompt");
        assert!(
            c.reused_tokens > 0,
            "turn {turn} reused the previous prompt: {c:?}"
        );
        assert!(
            c.prefilled_tokens * 2 < c.prompt_tokens || turn < 2,
            "turn {turn}: {c:?}"
        );
    }
    assert!(
        files_in(&dir).is_empty(),
        "no stray cache files: {:?}",
        files_in(&dir)
    );
}

#[test]
fn the_cache_is_rebuilt_after_a_trim() {
    let dir = common::temp_path("rolling-trim");
    // About 60 prompt bytes per exchange with the byte estimate: a trim within 12 turns.
    let budget = ContextBudget::new(400, 16);
    let (_, path) = run_chat(Some(&dir), 12, Some(budget));
    let runs = rkllm::mock::runs_of_model(&path);
    let rebuilt: Vec<usize> = runs
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, r)| r.reused_tokens == 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !rebuilt.is_empty(),
        "a trim happened and forced a full prefill: {runs:?}"
    );
    // After each rebuild, the next turn reuses again.
    for &i in &rebuilt {
        if let Some(next) = runs.get(i + 1) {
            assert!(
                next.reused_tokens > 0,
                "turn {} reuses the rebuilt cache",
                i + 1
            );
        }
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn the_cache_is_rebuilt_after_a_system_prompt_change_and_cleaned_up() {
    let dir = common::temp_path("rolling-system");
    let (model, path) = load(&MockModel::new().echo());
    let mut session = ChatSession::new(model.session().unwrap());
    session.enable_prompt_cache(rolling(&dir)).unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge);
    chat.set_system("Be brief.");
    let opts = GenerateOptions::new();
    for text in ["a", "b"] {
        session
            .chat(&mut chat, text, &opts)
            .unwrap()
            .complete()
            .unwrap();
    }
    assert_eq!(files_in(&dir).len(), 1, "one cache file: the last turn's");
    chat.set_system("Be verbose.");
    session
        .chat(&mut chat, "c", &opts)
        .unwrap()
        .complete()
        .unwrap();
    session
        .chat(&mut chat, "d", &opts)
        .unwrap()
        .complete()
        .unwrap();
    let runs = rkllm::mock::runs_of_model(&path);
    let reused: Vec<bool> = runs.iter().map(|r| r.reused_tokens > 0).collect();
    assert_eq!(reused, [false, true, false, true]);
    let stats = session.cache_stats().unwrap();
    assert_eq!((stats.reused, stats.rebuilt), (2, 2));
    assert_eq!(files_in(&dir).len(), 1);
    drop(session);
    assert!(
        files_in(&dir).is_empty(),
        "dropping the session deletes the cache files"
    );
}
