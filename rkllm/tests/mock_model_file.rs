//! The mock model file and its builder; a real `tokenizer.json` (feature `tokenizer`).

mod mock_support;

use rkllm::mock::{
    is_mock_model_file, AfterLastTurn, Answer, InitFailure, MockModel, RunFailure, Timing,
    MOCK_MODEL_FORMAT,
};
use rkllm::settings::{CallbackThread, ContextOverflow};

#[test]
fn the_file_starts_with_the_format_marker_and_round_trips() {
    let model = MockModel::new()
        .name("m")
        .turns_then(["a", "b"], AfterLastTurn::Cycle)
        .lora_answer("x", "y")
        .timing(Timing::GEMMA2_2B_W8A8_RK3588)
        .npu_memory_bytes(42)
        .embed_dim(2304)
        .max_context_limit(4096)
        .driver_version("0.9.6")
        .fail_init(InitFailure::WeightMemoryForDomain { domain: 2 })
        .fail_run(3, RunFailure::ErrorAfterTokens { tokens: 1 })
        .with_runtime(|r| {
            r.callback_thread = CallbackThread::Caller;
            r.context_overflow = ContextOverflow::Truncated;
        });
    let json = model.to_json();
    let start: String = json
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(30)
        .collect();
    assert!(
        start.starts_with(&format!("{{\"format\":\"{MOCK_MODEL_FORMAT}\"")),
        "{json}"
    );
    assert_eq!(MockModel::from_json(&json).unwrap(), model);
    let path = model.write_temp_file().unwrap();
    assert!(is_mock_model_file(&path));
    assert_eq!(MockModel::read_from(&path).unwrap(), model);
}

#[test]
fn the_temp_file_guard_removes_the_file_unless_kept() {
    let model = MockModel::new().answer("guarded");
    let file = model.write_temp_file().unwrap();
    let path = file.to_path_buf();
    assert_eq!(file.path(), path);
    assert_eq!(MockModel::read_from(&file).unwrap(), model);
    drop(file);
    assert!(!path.exists(), "{} is left behind", path.display());

    let kept = model.write_temp_file().unwrap().keep();
    assert!(kept.exists(), "a kept file was removed");
    std::fs::remove_file(kept).unwrap();
}

#[test]
fn files_with_the_older_knob_names_still_read() {
    let m = MockModel::from_json(
        r#"{"format": "rkllm-mock-model", "version": 1,
            "runtime": {"callback_thread": "worker", "context_overflow": "truncate_keep_last",
                        "is_running_sense": "one_while_running", "adds_bos": true,
                        "second_model": "fails_out_of_memory", "prompt_cache_reuse": false}}"#,
    )
    .unwrap();
    let r = m.runtime_behaviour();
    assert_eq!(r.callback_thread, CallbackThread::RuntimeThread);
    assert_eq!(r.context_overflow, ContextOverflow::Truncated);
    assert_eq!(
        r.is_running_sense,
        rkllm::settings::RunningSense::NonZeroWhileRunning
    );
    assert_eq!(r.adds_bos, rkllm::settings::AddsBos::Always);
    assert_eq!(r.second_model, rkllm::settings::SecondModel::Refused);
    assert_eq!(
        r.prompt_cache_reuse,
        rkllm::settings::PromptCacheReuse::NotReused
    );
    // Written back, the knobs take their current names, and read the same.
    let json = m.to_json();
    assert!(
        json.contains("\"runtime_thread\"") && json.contains("\"always\""),
        "{json}"
    );
    assert_eq!(MockModel::from_json(&json).unwrap(), m);
}

#[test]
fn a_minimal_hand_written_file_gets_the_defaults() {
    let m = MockModel::from_json(r#"{"format": "rkllm-mock-model", "version": 1}"#).unwrap();
    assert_eq!(m, MockModel::new());
    let m = MockModel::from_json(
        r#"{"format": "rkllm-mock-model", "version": 1,
            "answer": {"kind": "turns", "turns": ["Hi!", "Bye!"], "after_last": "cycle"},
            "runtime": {"finish_after_abort": false, "waiting_text": "null"}}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        MockModel::new()
            .turns_then(["Hi!", "Bye!"], AfterLastTurn::Cycle)
            .with_runtime(|r| {
                r.finish_after_abort = false;
                r.waiting_text = rkllm::settings::WaitingText::Null;
            })
    );
    assert!(MockModel::from_json(r#"{"format": "x", "version": 1}"#).is_err());
    assert!(
        MockModel::from_json(r#"{"format": "rkllm-mock-model", "version": 2}"#)
            .unwrap_err()
            .contains("version 2")
    );
    assert!(
        MockModel::from_json(r#"{"format": "rkllm-mock-model", "version": 1, "typo": 1}"#)
            .unwrap_err()
            .contains("typo")
    );
}

#[test]
fn the_documented_example_parses() {
    let m = MockModel::from_json(
        r#"{
          "format": "rkllm-mock-model",
          "version": 1,
          "name": "mock-model",
          "answer": { "kind": "turns", "turns": ["Hi!", "Bye!"], "after_last": "cycle" },
          "lora_answers": { "pirate": "Arr!" },
          "tokenizer": { "kind": "builtin" },
          "timing": { "prefill_seconds_per_token": 0.012, "decode_seconds_per_token": 0.1034 },
          "npu_memory_bytes": 0,
          "embed_dim": 16,
          "max_context_limit": 4096,
          "driver_version": "0.9.8",
          "init_failure": null,
          "run_failure": { "kind": "error_after_tokens", "tokens": 3 },
          "run_failure_on_run": 2,
          "runtime": { "callback_thread": "worker", "finish_after_abort": true }
        }"#,
    )
    .unwrap();
    let expected = MockModel::new()
        .turns_then(["Hi!", "Bye!"], AfterLastTurn::Cycle)
        .lora_answer("pirate", "Arr!")
        .prefill_seconds_per_token(0.012)
        .decode_seconds_per_token(0.1034)
        .fail_run(2, RunFailure::ErrorAfterTokens { tokens: 3 });
    assert_eq!(m, expected);
}

#[test]
fn invalid_values_are_refused_before_writing() {
    let dir = std::env::temp_dir();
    for bad in [
        MockModel::new().decode_seconds_per_token(-1.0),
        MockModel::new().prefill_seconds_per_token(f64::NAN),
        MockModel::new().answer_with(Answer::Turns {
            turns: vec![],
            after_last: AfterLastTurn::Cycle,
        }),
        MockModel::new().max_context_limit(0),
        MockModel::new().driver_version("new"),
        MockModel::new().fail_run(0, RunFailure::NoFinish),
    ] {
        let target = dir.join(format!("rkllm-mock-invalid-{}.rkllm", std::process::id()));
        match bad.write_to(&target) {
            Err(rkllm::Error::InvalidParameter { name, .. }) => assert_eq!(name, "mock model"),
            other => panic!("{bad:?} gave {other:?}"),
        }
        assert!(!target.exists());
    }
}

#[test]
fn write_errors_name_the_path() {
    let target = std::path::Path::new("/nonexistent-dir/for/sure/model.rkllm");
    match MockModel::new().write_to(target) {
        Err(rkllm::Error::Io { path, .. }) => assert_eq!(path, target),
        other => panic!("{other:?}"),
    }
    assert!(!is_mock_model_file(target));
    assert!(!is_mock_model_file(file!()));
}

#[cfg(feature = "tokenizer")]
mod json_tokenizer {
    use super::mock_support::*;
    use rkllm::mock::{last_run_stats, MockModel};
    use rkllm_sys::{RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING};
    use serde_json::json;

    /// A tiny SentencePiece-style BPE: Gemma's special tokens, byte fallback, `▁`, a few
    /// letters and the merge "h i".
    fn write_tokenizer(dir: &std::path::Path) -> std::path::PathBuf {
        let specials = [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<start_of_turn>",
            "<end_of_turn>",
        ];
        let mut vocab = serde_json::Map::new();
        for (i, s) in specials.iter().enumerate() {
            vocab.insert(s.to_string(), json!(i));
        }
        for b in 0..=255u32 {
            vocab.insert(format!("<0x{b:02X}>"), json!(6 + b));
        }
        for (id, piece) in (262..).zip(["\u{2581}", "h", "i", "o", "k", "hi"]) {
            vocab.insert(piece.to_string(), json!(id));
        }
        let added: Vec<_> = specials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                                 "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "vocab": vocab, "merges": ["h i"]}
        });
        let path = dir.join(format!("rkllm-mock-tokenizer-{}.json", std::process::id()));
        std::fs::write(&path, tokenizer.to_string()).unwrap();
        path
    }

    #[test]
    fn a_json_tokenizer_drives_prompts_and_answers() {
        let dir = std::env::temp_dir();
        let tok = write_tokenizer(&dir);
        // Relative to the model file's directory.
        let h = open(
            MockModel::new()
                .answer("hi é")
                .tokenizer_json(tok.file_name().unwrap()),
        );
        let (rc, events) = run_prompt(&h, "<start_of_turn>hi ok");
        assert_eq!(rc, 0);
        // <start_of_turn>, "hi", "▁", "o", "k".
        assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, 5);
        let got: Vec<_> = events.iter().map(|e| (e.state, e.token_id)).collect();
        assert_eq!(
            got,
            vec![
                (RKLLM_RUN_NORMAL, 267),       // "hi"
                (RKLLM_RUN_NORMAL, 262),       // "▁"
                (RKLLM_RUN_WAITING, 6 + 0xC3), // <0xC3>
                (RKLLM_RUN_NORMAL, 6 + 0xA9),  // <0xA9>
                (RKLLM_RUN_NORMAL, 5),         // <end_of_turn>
                (RKLLM_RUN_FINISH, -1),
            ]
        );
        assert_eq!(String::from_utf8(text_of(&events)).unwrap(), "hi é");
        std::fs::remove_file(tok).ok();
    }
}

#[test]
fn a_file_that_is_not_utf8_is_refused_as_the_runtime_refuses_it() {
    // The fuzz finding `mock_model_file/read-from-accepts-invalid-utf8`: a model whose answer
    // holds a byte that is not UTF-8 was read lossily by `read_from`, while `rkllm_init` and
    // `is_mock_model_file` refused it.
    let json = MockModel::new().answer("Hello, w\u{f6}rld").to_json();
    let mut bytes = json.into_bytes();
    let at = bytes
        .windows(2)
        .position(|w| w == "ö".as_bytes())
        .expect("the answer is in the file");
    bytes[at] = 0x82; // a continuation byte where the ö began: two bytes that start nothing
    let path = std::env::temp_dir().join(format!("rkllm-not-utf8-{}.rkllm", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let refused = is_mock_model_file(&path);
    let read = MockModel::read_from(&path);
    std::fs::remove_file(&path).unwrap();

    assert!(!refused);
    let err = read.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("not UTF-8"), "{message}");
    assert!(message.contains(&format!("offset {at}")), "{message}");
}
