//! The safe API against the real runtime on an RK3588 board. Every test is ignored by
//! default, so CI never counts it as passing; on a board:
//!
//! ```text
//! RKLLM_LOG_LEVEL=1 RKLLM_TEST_MODEL=/models/gemma-2-2b-it-w8a8.rkllm \
//! [RKLLM_TEST_TOKENIZER=/models/tokenizer.json] [RKLLM_TEST_LORA=/models/lora.rkllm] \
//! [RKLLM_LIB_PATH=/usr/lib/librkllmrt.so] \
//!     cargo test --test board -- --ignored --nocapture
//! ```
//!
//! Run with `--ignored` but without `RKLLM_TEST_MODEL`, every test fails and says what to
//! set (never a silent pass). The LoRA test needs `RKLLM_TEST_LORA` likewise; leave it out
//! with `--skip lora`. Tests take a process-wide lock, so one model is loaded at a time
//! (the 1.1.x runtime holds one model per process reliably). `RKLLM_LOG_LEVEL=1` lets the
//! probe's BOS question read the runtime's performance table (the probe never sets it).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rkllm::chat::{Gemma2Template, Message};
use rkllm::{FinishReason, GenerateOptions, Input, Model, Runtime};

const MODEL_ENV: &str = "RKLLM_TEST_MODEL";
#[cfg(any(feature = "tokenizer", feature = "probe"))]
const TOKENIZER_ENV: &str = "RKLLM_TEST_TOKENIZER";
const LORA_ENV: &str = "RKLLM_TEST_LORA";
/// Generated tokens are capped so that each test stays short.
const MAX_NEW_TOKENS: u32 = 96;
/// Longer than any healthy run on a board: a run that exceeds it is a failure.
const PATIENCE: Duration = Duration::from_secs(120);

static ONE_MODEL: Mutex<()> = Mutex::new(());

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The model under test, or a failure that says how to run these tests.
fn model_path() -> PathBuf {
    env_path(MODEL_ENV).unwrap_or_else(|| {
        panic!(
            "{MODEL_ENV} is unset: the board tests need a real .rkllm model (Gemma 2, w8a8) on \
             an RK3588 board with librkllmrt.so 1.1.x. Run: {MODEL_ENV}=/path/model.rkllm \
             [RKLLM_LIB_PATH=/path/librkllmrt.so] cargo test --test board -- --ignored"
        )
    })
}

fn runtime() -> Runtime {
    let runtime = Runtime::load().unwrap_or_else(|e| panic!("loading librkllmrt.so: {e}"));
    assert!(!runtime.is_mock());
    runtime
}

/// A loaded model, holding the process-wide lock until it is destroyed.
struct Board {
    // Dropped before the lock: the handle is destroyed while the lock is held.
    model: Model,
    _lock: MutexGuard<'static, ()>,
}

fn board() -> Board {
    let lock = ONE_MODEL.lock().unwrap_or_else(PoisonError::into_inner);
    let model = Model::builder(model_path())
        .runtime(runtime())
        .max_context_len(1024)
        .max_new_tokens(MAX_NEW_TOKENS)
        .top_k(1)
        .build()
        .unwrap_or_else(|e| panic!("the model does not load:\n{e}"));
    Board { model, _lock: lock }
}

fn gemma(user: &str) -> String {
    Gemma2Template::default()
        .render(&[Message::user(user)], true)
        .expect("a valid conversation")
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn loads_and_reports_the_runtime() {
    let board = board();
    let init = board.model.init_diagnosis();
    let version = init
        .runtime_version()
        .expect("the runtime printed its version line at init");
    assert!(
        version.starts_with("1.1."),
        "runtime {version} is not 1.1.x"
    );
    let platform = init.platform().unwrap_or_default();
    assert!(
        ["RK3588", "RK3576"].contains(&platform),
        "platform {platform:?}"
    );
    eprintln!(
        "runtime: {version}, rknpu driver {:?}, platform {platform}; library {}",
        init.driver_version(),
        board.model.runtime().origin()
    );
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn streams_a_gemma_reply() {
    let board = board();
    let mut session = board.model.session().unwrap();
    let started = Instant::now();
    let mut stream = session
        .generate(
            gemma("Name three primary colours, comma-separated."),
            &GenerateOptions::gemma(),
        )
        .unwrap();
    let mut text = String::new();
    let mut first = None;
    for token in stream.by_ref() {
        let token = token.expect("no error mid-stream");
        first.get_or_insert(token.delivered_at);
        text.push_str(&token.text);
    }
    let reason = stream.finish_reason().cloned();
    let timings = stream.timings();
    drop(stream);
    eprintln!("reply {text:?}, {reason:?}, {timings:?}");
    assert!(!text.trim().is_empty(), "an empty reply");
    assert!(
        !text.contains("<end_of_turn>") && !text.contains("<start_of_turn>"),
        "control text leaked: {text:?}"
    );
    assert!(
        matches!(
            reason,
            Some(FinishReason::EndOfTurn) | Some(FinishReason::Finished)
        ),
        "a short answer ends at <end_of_turn> or by itself, not {reason:?}"
    );
    assert!(first.is_some() && timings.time_to_first_token.is_some());
    assert!(started.elapsed() < PATIENCE);
}

#[cfg(feature = "tokenizer")]
#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn token_mode_reply_when_a_tokenizer_is_given() {
    let board = board();
    let Some(path) = env_path(TOKENIZER_ENV) else {
        panic!(
            "{TOKENIZER_ENV} is unset: set it to the model's tokenizer.json, or --skip token_mode"
        );
    };
    let tokenizer = rkllm::chat::GemmaTokenizer::from_file(&path).unwrap();
    let ids: Vec<u32> = tokenizer
        .encode(
            &Gemma2Template::default(),
            &[Message::user("Say hello in French.")],
            true,
        )
        .unwrap();
    let mut session = board.model.session().unwrap();
    let done = session
        .complete(Input::tokens(ids), &GenerateOptions::gemma())
        .unwrap();
    eprintln!("token mode: {:?} {:?}", done.text, done.finish_reason);
    assert!(!done.text.trim().is_empty());
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn abort_from_another_thread_mid_stream() {
    let board = board();
    let abort = board.model.abort_handle();
    let mut session = board.model.session().unwrap();
    let mut stream = session
        .generate(
            gemma("Count from one to two hundred in words."),
            &GenerateOptions::new(),
        )
        .unwrap();
    stream.next().expect("a first token").expect("no error");
    let aborted_at = Instant::now();
    assert!(std::thread::spawn(move || abort.abort()).join().unwrap());
    let rest: Vec<_> = stream.by_ref().collect();
    let latency = aborted_at.elapsed();
    eprintln!(
        "{} token(s) after the abort, run over after {latency:?}, {:?}",
        rest.len(),
        stream.run_end()
    );
    assert!(rest.iter().all(Result::is_ok), "{rest:?}");
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
    assert!(latency < PATIENCE);
    drop(stream);
    // The handle is usable at once.
    let again = session
        .complete(gemma("Say yes."), &GenerateOptions::gemma())
        .unwrap();
    assert!(!again.text.trim().is_empty());
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn dropping_a_stream_mid_run_stops_it() {
    let board = board();
    let mut session = board.model.session().unwrap();
    let mut stream = session
        .generate(
            gemma("Write a long story about a lighthouse keeper."),
            &GenerateOptions::new(),
        )
        .unwrap();
    for _ in 0..2 {
        stream.next().expect("a token").expect("no error");
    }
    let dropped_at = Instant::now();
    drop(stream);
    let waited = dropped_at.elapsed();
    eprintln!("drop returned after {waited:?}");
    assert!(waited < PATIENCE);
    assert!(!board.model.abort_handle().abort(), "no run is left over");
    let again = session
        .complete(gemma("Say yes."), &GenerateOptions::gemma())
        .unwrap();
    assert!(!again.text.trim().is_empty());
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn output_is_valid_utf8() {
    let board = board();
    let mut session = board.model.session().unwrap();
    let mut stream = session
        .generate(
            gemma("Write 'good morning' in Chinese, Japanese, Greek and Russian, one per line."),
            &GenerateOptions::gemma(),
        )
        .unwrap();
    let mut text = String::new();
    for token in stream.by_ref() {
        // A token's text is a `String`: invalid bytes would arrive as Error::InvalidUtf8.
        text.push_str(&token.expect("only valid UTF-8").text);
    }
    eprintln!("{text}");
    assert!(!text.is_ascii(), "expected non-ASCII text: {text:?}");
    assert!(
        !text.contains('\u{FFFD}'),
        "replacement characters: {text:?}"
    );
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn prompt_cache_save_and_load() {
    let board = board();
    let mut session = board.model.session().unwrap();
    let cache = std::env::temp_dir().join(format!("rkllm-board-{}.cache", std::process::id()));
    let prefix = "<bos><start_of_turn>user\nYou are a terse assistant. Answer in one word.\n";
    let first = session
        .complete(
            prefix,
            &GenerateOptions::gemma()
                .max_tokens(4)
                .save_prompt_cache(&cache),
        )
        .unwrap();
    eprintln!("prefix run: {:?}", first.timings);
    let size = std::fs::metadata(&cache).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 0,
        "the runtime wrote no cache to {}",
        cache.display()
    );
    let full = format!("{prefix}What colour is snow?<end_of_turn>\n<start_of_turn>model\n");
    {
        let mut loaded = session.load_prompt_cache(&cache).unwrap();
        let done = loaded
            .complete(full.as_str(), &GenerateOptions::gemma())
            .unwrap();
        eprintln!("with cache: {:?} {:?}", done.text, done.timings);
        assert!(!done.text.trim().is_empty());
        loaded.release().unwrap();
    }
    std::fs::remove_file(&cache).ok();
}

#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... cargo test --test board -- --ignored"]
fn hidden_states_shape() {
    let board = board();
    let mut session = board.model.session().unwrap();
    let states = session
        .hidden_states(Input::prompt("<bos>The sky is"))
        .unwrap();
    eprintln!(
        "{} rows × {} (Gemma 2 2B: 2304)",
        states.num_tokens(),
        states.embd_size()
    );
    assert!(states.num_tokens() > 0 && states.embd_size() > 0);
    assert_eq!(
        states.data().len(),
        states.num_tokens() * states.embd_size()
    );
    assert!(states.data().iter().all(|v| v.is_finite()));
    assert_eq!(session.embedding_size().unwrap(), states.embd_size());
}

#[test]
#[ignore = "board + LoRA only: RKLLM_TEST_MODEL=... RKLLM_TEST_LORA=... cargo test --test board -- --ignored"]
fn lora_adapter_loads_and_runs() {
    let board = board();
    let Some(path) = env_path(LORA_ENV) else {
        panic!(
            "{LORA_ENV} is unset: set it to a LoRA adapter converted for {MODEL_ENV}, or leave \
             this test out with --skip lora"
        );
    };
    let adapter = board.model.load_lora(&path, "probe", 1.0).unwrap();
    let mut session = board.model.session().unwrap();
    let done = session
        .complete(
            gemma("Say hello."),
            &GenerateOptions::gemma().lora(&adapter),
        )
        .unwrap();
    eprintln!("with LoRA: {:?}", done.text);
    assert!(!done.text.trim().is_empty());
}

#[cfg(feature = "probe")]
#[test]
#[ignore = "board only: RKLLM_TEST_MODEL=... RKLLM_LOG_LEVEL=1 cargo test --test board -- --ignored"]
fn the_probe_answers_every_question() {
    let _lock = ONE_MODEL.lock().unwrap_or_else(PoisonError::into_inner);
    let model = model_path();
    let mut config = rkllm::probe::ProbeConfig::new(runtime(), model);
    if let Some(t) = env_path(TOKENIZER_ENV) {
        config = config.tokenizer(t);
    }
    let report = rkllm::probe::run(&config).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    for q in rkllm::probe::Question::ALL {
        let line = report
            .to_string()
            .lines()
            .find(|l| l.starts_with(&format!("- {q}: ")))
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(!line.contains("FAILED"), "{line}");
    }
}
