//! The token stream's UTF-8 assembly and stop-string logic, through the public API on the
//! mock runtime.
//!
//! The mock model echoes its prompt, so the fuzzer chooses the answer's bytes; the mock's
//! tokenizer cuts them into tokens (ASCII runs of up to four characters, one token per
//! non-ASCII byte), so the fuzzer also chooses where the token boundaries fall.
//!
//! Invariants checked:
//! - without stop strings, the stream's items in order (each token's text, each
//!   `Error::InvalidUtf8`'s bytes) concatenate to exactly the answer's bytes, no other error
//!   arrives, the token ids are the answer's tokens, and the run finishes normally;
//! - with stop strings (on a valid UTF-8 answer), the output is the answer cut before the
//!   earliest stop string, and the reported stop string is the longest one that matches
//!   there, whatever the token boundaries; without a match the whole answer comes out.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use rkllm::mock::{BuiltinTokenizer, MockModel, BYTE_TOKEN_BASE, END_OF_TURN_ID};
use rkllm::{Error, FinishReason, GenerateOptions, Input, Model, Runtime, Session};

/// One echoing mock model for the whole fuzzing process (its file is removed once loaded).
fn session() -> &'static Mutex<Session> {
    static SESSION: OnceLock<Mutex<Session>> = OnceLock::new();
    SESSION.get_or_init(|| {
        let path = MockModel::new()
            .echo()
            .write_temp()
            .expect("write mock model");
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .max_context_len(4096)
            .unlimited_new_tokens()
            // Neither concerns the stream; both change process state (descriptors, limits).
            .preflight(false)
            .capture_runtime_log(false)
            .build()
            .expect("mock model loads");
        std::fs::remove_file(&path).expect("remove mock model file");
        Mutex::new(model.into_session().expect("session"))
    })
}

/// The answer's bytes as a prompt of byte-fallback tokens: always inside the vocabulary, and
/// decoded by the mock to exactly these bytes.
fn prompt(answer: &[u8]) -> Input {
    Input::tokens(
        answer
            .iter()
            .map(|&b| BYTE_TOKEN_BASE.unsigned_abs() + u32::from(b))
            .collect::<Vec<_>>(),
    )
}

/// Where the first stop string starts in `text`, and the longest stop string starting there.
fn first_stop<'a>(text: &str, stops: &'a [String]) -> Option<(usize, &'a str)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str())))
        .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())))
}

// The input is the answer's bytes, then optionally the stop strings, each after a NUL byte
// (`a.\0a\0a.` is the answer `a.` with the stop strings `a` and `a.`). NUL is the separator
// because it cannot be part of a token's text: the C ABI passes token text as a C string.
fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    // At most 512 bytes: as lossy text at most 1536 prompt tokens and as many answer tokens,
    // within the 4096-token context. `<` could spell a Gemma control token, which the mock's
    // tokenizer and echo treat specially, so the answer would differ from the prompt.
    let answer: Vec<u8> = parts
        .next()
        .unwrap_or_default()
        .iter()
        .take(512)
        .map(|&b| if b == b'<' { b'[' } else { b })
        .collect();
    if answer.is_empty() {
        return;
    }
    let stops: Vec<String> = parts
        .filter(|s| !s.is_empty())
        .take(4)
        .map(|s| String::from_utf8_lossy(&s[..s.len().min(16)]).into_owned())
        .collect();

    let mut session = session().lock().unwrap_or_else(|e| e.into_inner());
    if stops.is_empty() {
        let mut stream = session
            .generate(prompt(&answer), &GenerateOptions::new())
            .expect("run starts");
        let mut bytes = Vec::new();
        for item in stream.by_ref() {
            match item {
                Ok(token) => {
                    assert!(!token.text.is_empty(), "a token with empty text was yielded");
                    bytes.extend_from_slice(token.text.as_bytes());
                }
                Err(Error::InvalidUtf8 { bytes: bad }) => {
                    assert!(!bad.is_empty(), "an empty InvalidUtf8 error");
                    bytes.extend_from_slice(&bad);
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(
            bytes, answer,
            "token text and invalid bytes, in stream order, are not the answer"
        );
        // Every generated id is kept, also those of tokens not yielded for empty text.
        let ids = stream.token_ids().to_vec();
        // The mock's ids are the C runtime's int32; the stream's are the crate's u32.
        let mut expected_ids: Vec<u32> = BuiltinTokenizer
            .encode_bytes(&answer)
            .into_iter()
            .map(i32::unsigned_abs)
            .collect();
        expected_ids.push(END_OF_TURN_ID.unsigned_abs());
        assert_eq!(ids, expected_ids, "tokens lost, repeated or reordered");
        assert_eq!(stream.finish_reason(), Some(&FinishReason::Finished));
    } else {
        let text = String::from_utf8_lossy(&answer).into_owned();
        let mut options = GenerateOptions::new();
        for s in &stops {
            options = options.stop_string(s.clone());
        }
        let mut stream = session
            .generate(prompt(text.as_bytes()), &options)
            .expect("run starts");
        let mut out = String::new();
        for item in stream.by_ref() {
            out.push_str(&item.expect("valid UTF-8 gives no error").text);
        }
        match first_stop(&text, &stops) {
            Some((at, stop)) => {
                assert_eq!(
                    out,
                    text[..at],
                    "output not cut before the first stop string"
                );
                assert_eq!(
                    stream.finish_reason(),
                    Some(&FinishReason::StopString(stop.to_owned())),
                    "stops {stops:?} on {text:?}: the longest stop string at the first match wins"
                );
            }
            None => {
                assert_eq!(out, text);
                assert_eq!(stream.finish_reason(), Some(&FinishReason::Finished));
            }
        }
    }
});
