//! The mock model file: its format, and [`MockModel`], the builder that writes it.
//!
//! A mock model is a small JSON file standing where a `.rkllm` model would. Its first field is
//! `"format": "rkllm-mock-model"`: any other file (a real model included) fails `rkllm_init`
//! with the runtime's "invalid rknn llm model magic". Every field after `format` and
//! `version` is optional; unknown fields are refused, so a typo fails init loudly instead of
//! being ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::cost::{CacheCost, KvGeometry};
use crate::error::{Error, Result};
use crate::settings::{
    AddsBos, CallbackThread, ContextOverflow, FinishText, PromptCacheReuse, RunningSense,
    SecondModel, WaitingText,
};

/// The value of the `format` field that marks a mock model file (the mock's "model magic").
pub const MOCK_MODEL_FORMAT: &str = "rkllm-mock-model";

/// The version of the mock model format this crate reads and writes.
pub const MOCK_MODEL_VERSION: u32 = 1;

/// What a model answers when nothing else is configured.
pub const DEFAULT_ANSWER: &str = "Hello! I am the RKLLM mock runtime.";

/// What the model answers.
///
/// Every answer is tokenized with the model's tokenizer and followed by its turn end:
/// `<end_of_turn>` (Gemma id 107) with the built-in tokenizer; with a `tokenizer.json`, the
/// family's (`<end_of_turn>`, `<|im_end|>`, `<|eot_id|>`, `<|end|>`, else `<eos>`, `</s>` or
/// `<|endoftext|>`). In file form: `{"kind": "script", "text": "…"}`,
/// `{"kind": "turns", "turns": ["…", "…"], "after_last": "repeat_last"}` or
/// `{"kind": "echo"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Answer {
    /// The same text on every run.
    Script {
        /// The answer.
        text: String,
    },
    /// The n-th answering run of a handle (counted from 1, per handle, hidden-state runs not
    /// counted) answers the n-th entry; after the last entry, see `after_last`.
    Turns {
        /// The answers in order; must not be empty.
        turns: Vec<String>,
        /// What runs after the last entry answer.
        #[serde(default)]
        after_last: AfterLastTurn,
    },
    /// These bytes on every run, which need not be UTF-8 (byte-fallback tokens carry what
    /// is not ASCII), e.g. to see how a binding handles broken UTF-8 from the runtime.
    Bytes {
        /// The answer's bytes.
        bytes: Vec<u8>,
    },
    /// The prompt's last user message: the text of the last user turn of a Gemma 2
    /// (`<start_of_turn>user\n…<end_of_turn>`), ChatML (`<|im_start|>user\n…<|im_end|>`) or
    /// Llama 3 (`<|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>`) prompt; otherwise
    /// the whole prompt. Token input
    /// is decoded first. Embedding input has no text and answers [`DEFAULT_ANSWER`].
    Echo,
}

impl Default for Answer {
    fn default() -> Self {
        Answer::Script {
            text: DEFAULT_ANSWER.to_owned(),
        }
    }
}

/// What scripted turns do once every entry has been answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AfterLastTurn {
    /// Keep answering the last entry (the default).
    #[default]
    RepeatLast,
    /// Start again from the first entry.
    Cycle,
}

/// How the model tokenizes. In file form `{"kind": "builtin"}` or
/// `{"kind": "json", "path": "tokenizer.json"}` (a relative path is relative to the mock
/// model file's directory).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub(crate) enum TokenizerSpec {
    /// The mock's own deterministic tokenizer, see [`BuiltinTokenizer`](super::BuiltinTokenizer).
    #[default]
    Builtin,
    /// A Hugging Face `tokenizer.json` of the SentencePiece kind (Gemma, Llama: `▁` for
    /// spaces, `<0xHH>` byte fallback). Needs the crate feature `tokenizer`; without it,
    /// init fails with a log line saying so.
    Json {
        /// The `tokenizer.json` file.
        path: PathBuf,
    },
}

/// Simulated speed. All zero by default, for tests.
///
/// The presets come from published figures only, each citing its source; a timing for any
/// other model (Gemma 2 9B or 27B have no published RK3588 figures) is an estimate and must
/// say so where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Seconds of prefill per prompt token not reused from a prompt cache.
    #[serde(default)]
    pub prefill_seconds_per_token: f64,
    /// Seconds per generated token (each token waits this long before its callback).
    #[serde(default)]
    pub decode_seconds_per_token: f64,
}

impl Timing {
    /// No simulated time at all.
    pub const INSTANT: Timing = Timing {
        prefill_seconds_per_token: 0.0,
        decode_seconds_per_token: 0.0,
    };

    /// Gemma2-2B w8a8 on RK3588, from the vendor's published benchmark table for RKLLM
    /// runtime 1.1 (rknn-llm README, RK3588, w8a8, prompt of 64 tokens): time to first token
    /// 342.29 ms, so 342.29 / 64 ≈ 5.35 ms of prefill per prompt token, and 9.67 tokens/s of
    /// decode. The mock also waits one decode step before the first token, so its time to
    /// first token for 64 tokens is about 446 ms: a little above the table, never below.
    pub const GEMMA2_2B_W8A8_RK3588: Timing = Timing {
        prefill_seconds_per_token: 0.342_29 / 64.0,
        decode_seconds_per_token: 1.0 / 9.67,
    };

    /// Llama3-8B w8a8 on RK3588, from the same table (rknn-llm runtime 1.1 benchmark,
    /// RK3588, w8a8, prompt of 64 tokens): time to first token 1,128 ms, so 17.6 ms of
    /// prefill per prompt token, and 3.79 tokens/s of decode.
    pub const LLAMA3_8B_W8A8_RK3588: Timing = Timing {
        prefill_seconds_per_token: 1.128 / 64.0,
        decode_seconds_per_token: 1.0 / 3.79,
    };

    /// Phi-3-3.8B w8a8 on RK3588, from the same table (rknn-llm runtime 1.1 benchmark,
    /// RK3588, w8a8, prompt of 64 tokens): time to first token 516 ms, so 8.06 ms of prefill
    /// per prompt token, and 7.44 tokens/s of decode.
    pub const PHI3_3_8B_W8A8_RK3588: Timing = Timing {
        prefill_seconds_per_token: 0.516 / 64.0,
        decode_seconds_per_token: 1.0 / 7.44,
    };
}

/// An `rkllm_init` failure to inject; each prints the real runtime's lines and returns -1
/// (except [`InitFailure::NullHandle`]). In file form `{"kind": "npu_out_of_memory",
/// "requested_bytes": 232128512}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum InitFailure {
    /// The NPU allocation fails: `failed to allocate handle, ret: -1, errno: 14, errstr: Bad
    /// address`, `failed to malloc npu memory, size: N, flags: 0x2`, `load model file error!`.
    NpuOutOfMemory {
        /// The `size:` printed.
        requested_bytes: u64,
    },
    /// `failed to convert handle(1020) to fd, ret: -1, errno: 24, errstr: Too many open
    /// files`, then `load model file error!`.
    TooManyOpenFiles,
    /// `invalid rknn llm model magic`, then `load model file error!`, as for a model from an
    /// incompatible toolkit.
    InvalidModelMagic,
    /// `can not create weight memory for domainN`.
    WeightMemoryForDomain {
        /// The IOMMU domain in the message.
        domain: u32,
    },
    /// `rkllm_init` returns 0 but leaves the handle NULL, and prints no error.
    NullHandle,
}

/// A run failure to inject. In file form `{"kind": "error_after_tokens", "tokens": 3}`,
/// `{"kind": "return_error"}` or `{"kind": "no_finish"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RunFailure {
    /// After this many NORMAL/WAITING callbacks, one ERROR callback (text NULL) and no
    /// FINISH; `rkllm_run` then returns [`RuntimeBehaviour::run_return_after_error`].
    ErrorAfterTokens {
        /// Tokens delivered before the error.
        tokens: usize,
    },
    /// `rkllm_run` prints an `E rkllm:` line and returns -1 without any callback.
    ReturnError,
    /// The run delivers its tokens and returns 0, but never sends FINISH.
    NoFinish,
}

/// Where a stream of log lines goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogStream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2 (the default for error lines).
    #[default]
    Stderr,
}

/// Where the mock runtime's log lines (`I rkllm: …`, `E RKNN: …`, the performance table) go.
///
/// The real runtime prints them to file descriptors 1 and 2, below Rust's `print!`
/// machinery, so a test harness cannot capture them; the default does the same. In your own
/// tests, [`Log`](Self::Log) or [`Off`](Self::Off) keeps them off the terminal. Lines printed
/// before the model file is read (the file is missing, unreadable or not a mock model) always
/// go to the descriptors, as the choice is in the file. Either way, a failed init still
/// explains itself: the crate's init capture reads the lines the mock hands it and passes
/// them to the `log` facade as it does the real runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RuntimeLog {
    /// Written to file descriptors 1 and 2 with `write(2)`, as the real runtime prints them
    /// (`I`/`W` lines and the performance table on 1, `E` lines on
    /// [`RuntimeBehaviour::error_log`]).
    #[default]
    Print,
    /// Sent to the [`log`](https://docs.rs/log) facade instead, one record per line, target
    /// `rkllm::runtime`, level by the line's mark (`E` error, `W` warn, `I` info); the
    /// descriptors are left alone.
    Log,
    /// Dropped; the descriptors are left alone.
    Off,
}

/// The runtime's behaviour where the real 1.1.1 runtime's is unknown or unconfirmed: each
/// knob is one open question, so a probe can be tested against every answer. The defaults are
/// the reference's most likely behaviour.
///
/// `I`/`W` lines and the performance table always go to standard output; `E` lines go to
/// [`error_log`](Self::error_log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeBehaviour {
    /// Which thread calls back during `rkllm_run`.
    pub callback_thread: CallbackThread,
    /// Whether a FINISH callback still arrives after `rkllm_abort` (default true).
    pub finish_after_abort: bool,
    /// What `rkllm_run` returns after an abort (default 0).
    pub run_return_after_abort: i32,
    /// What `rkllm_run` returns after an ERROR callback (default -1).
    pub run_return_after_error: i32,
    /// Whether an abort cuts the prefill short (default false: the prefill completes, then
    /// the run stops before the first token, as a user measured on the real runtime).
    pub abort_interrupts_prefill: bool,
    /// Whether `rkllm_abort` waits until the task has stopped before returning (unknown on
    /// the real runtime; a caller that keeps the runtime's callback waiting meanwhile would
    /// deadlock). Default false.
    pub abort_blocks_until_stopped: bool,
    /// Whether text input gets a BOS token (id 2) prepended by the runtime (default
    /// [`AddsBos::Never`]: the text is tokenized as given, the text `<bos>` becoming id 2).
    pub adds_bos: AddsBos,
    /// Whether generation stops by itself after `<end_of_turn>` (default true). When false
    /// the model keeps going (the answer again, and again) until `max_new_tokens` or the
    /// context is full.
    pub stops_at_end_of_turn: bool,
    /// What WAITING callbacks carry in `text`.
    pub waiting_text: WaitingText,
    /// What FINISH and ERROR callbacks carry in `text`.
    pub finish_text: FinishText,
    /// What a prompt longer than `max_context_len` does (after its ERROR callback,
    /// `rkllm_run` returns [`run_return_after_error`](Self::run_return_after_error)).
    pub context_overflow: ContextOverflow,
    /// The sense of `rkllm_is_running` (1 for non-zero).
    pub is_running_sense: RunningSense,
    /// Whether a second model loads while another is alive.
    pub second_model: SecondModel,
    /// Whether a loaded prompt cache's matching prefix is reused (default
    /// [`PromptCacheReuse::Reused`]; `true` in file form).
    pub prompt_cache_reuse: PromptCacheReuse,
    /// Where `E` lines go (default standard error).
    pub error_log: LogStream,
    /// The log level, overriding the `RKLLM_LOG_LEVEL` environment variable (read at init)
    /// when set; 1 or more prints the performance table after each run.
    pub log_level: Option<u32>,
    /// Whether `rkllm_run` never returns (default false): the run delivers its callbacks
    /// (honouring aborts) and then blocks its thread for good, as a wedged runtime would.
    /// The handle can then never be destroyed safely.
    pub run_never_returns: bool,
    /// Whether one more NORMAL callback (text `late`, token 100) arrives with the run's
    /// `userdata` shortly after `rkllm_run` returned (default false), as a runtime that
    /// breaks the "never after return" rule would send.
    pub late_callback_after_return: bool,
}

impl Default for RuntimeBehaviour {
    fn default() -> Self {
        RuntimeBehaviour {
            callback_thread: CallbackThread::RuntimeThread,
            finish_after_abort: true,
            run_return_after_abort: 0,
            run_return_after_error: -1,
            abort_interrupts_prefill: false,
            abort_blocks_until_stopped: false,
            adds_bos: AddsBos::Never,
            stops_at_end_of_turn: true,
            waiting_text: WaitingText::PartialBytes,
            finish_text: FinishText::Null,
            context_overflow: ContextOverflow::Refused,
            is_running_sense: RunningSense::ZeroWhileRunning,
            second_model: SecondModel::Works,
            prompt_cache_reuse: PromptCacheReuse::Reused,
            run_never_returns: false,
            late_callback_after_return: false,
            error_log: LogStream::Stderr,
            log_level: None,
        }
    }
}

fn default_name() -> String {
    "mock-model".to_owned()
}
fn default_embed_dim() -> usize {
    16
}
fn default_max_context_limit() -> i32 {
    4096
}
fn default_driver() -> String {
    "0.9.8".to_owned()
}

/// A mock model: what it answers, how it tokenizes, how fast it runs, how much NPU memory it
/// takes, which failures it injects and how the runtime behaves where the real one is
/// unconfirmed. Build one, write it to a file, and pass the file's path as `model_path` to
/// the mock runtime's `rkllm_init`.
///
/// ```
/// use rkllm::mock::{MockModel, RunFailure};
///
/// # fn main() -> rkllm::Result<()> {
/// let file = MockModel::new()
///     .answer("Hello there!")
///     .decode_seconds_per_token(0.0)
///     .fail_runs(RunFailure::ErrorAfterTokens { tokens: 2 })
///     .write_temp_file()?;
/// assert!(rkllm::mock::is_mock_model_file(&file));
/// # Ok(()) }
/// ```
///
/// The file form, every field but `format` and `version` optional:
///
/// ```json
/// {
///   "format": "rkllm-mock-model",
///   "version": 1,
///   "name": "mock-model",
///   "answer": { "kind": "turns", "turns": ["Hi!", "Bye!"], "after_last": "cycle" },
///   "lora_answers": { "pirate": "Arr!" },
///   "tokenizer": { "kind": "builtin" },
///   "timing": { "prefill_seconds_per_token": 0.00535, "decode_seconds_per_token": 0.1034 },
///   "prompt_cache": { "kv": { "layers": 26, "kv_heads": 4, "head_dim": 256 },
///                     "disk_bytes_per_second": 100000000.0 },
///   "npu_memory_bytes": 0,
///   "embed_dim": 16,
///   "max_context_limit": 4096,
///   "driver_version": "0.9.8",
///   "init_failure": null,
///   "run_failure": { "kind": "error_after_tokens", "tokens": 3 },
///   "run_failure_on_run": 2,
///   "runtime": { "callback_thread": "runtime_thread", "finish_after_abort": true },
///   "runtime_log": "print"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockModel {
    format: String,
    version: u32,
    #[serde(default = "default_name")]
    name: String,
    #[serde(default)]
    answer: Answer,
    #[serde(default)]
    lora_answers: BTreeMap<String, String>,
    #[serde(default)]
    tokenizer: TokenizerSpec,
    #[serde(default)]
    timing: Timing,
    #[serde(default)]
    prompt_cache: CacheCost,
    #[serde(default)]
    npu_memory_bytes: u64,
    #[serde(default = "default_embed_dim")]
    embed_dim: usize,
    #[serde(default = "default_max_context_limit")]
    max_context_limit: i32,
    #[serde(default = "default_driver")]
    driver_version: String,
    #[serde(default)]
    init_failure: Option<InitFailure>,
    #[serde(default)]
    run_failure: Option<RunFailure>,
    #[serde(default)]
    run_failure_on_run: Option<u64>,
    #[serde(default)]
    runtime: RuntimeBehaviour,
    #[serde(default)]
    runtime_log: RuntimeLog,
}

impl Default for MockModel {
    fn default() -> Self {
        MockModel::new()
    }
}

impl MockModel {
    /// A model that answers [`DEFAULT_ANSWER`] instantly with the built-in tokenizer, needs no
    /// NPU memory, has `embed_dim` 16, `max_context_limit` 4096, driver 0.9.8, no failures
    /// and the default [`RuntimeBehaviour`].
    pub fn new() -> MockModel {
        MockModel {
            format: MOCK_MODEL_FORMAT.to_owned(),
            version: MOCK_MODEL_VERSION,
            name: default_name(),
            answer: Answer::default(),
            lora_answers: BTreeMap::new(),
            tokenizer: TokenizerSpec::Builtin,
            timing: Timing::INSTANT,
            prompt_cache: CacheCost::default(),
            npu_memory_bytes: 0,
            embed_dim: default_embed_dim(),
            max_context_limit: default_max_context_limit(),
            driver_version: default_driver(),
            init_failure: None,
            run_failure: None,
            run_failure_on_run: None,
            runtime: RuntimeBehaviour::default(),
            runtime_log: RuntimeLog::Print,
        }
    }

    /// The model's name; prompt caches record it and only load into a model of the same name
    /// and tokenizer. Default `mock-model`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Answers `text` on every run.
    pub fn answer(mut self, text: impl Into<String>) -> Self {
        self.answer = Answer::Script { text: text.into() };
        self
    }

    /// Answers the n-th entry on the n-th answering run, then keeps repeating the last one.
    pub fn turns<I, S>(self, turns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.turns_then(turns, AfterLastTurn::RepeatLast)
    }

    /// Answers the n-th entry on the n-th answering run, then does `after_last`.
    pub fn turns_then<I, S>(mut self, turns: I, after_last: AfterLastTurn) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.answer = Answer::Turns {
            turns: turns.into_iter().map(Into::into).collect(),
            after_last,
        };
        self
    }

    /// Answers the prompt's last user message, see [`Answer::Echo`].
    pub fn echo(mut self) -> Self {
        self.answer = Answer::Echo;
        self
    }

    /// Sets the answer in its general form.
    pub fn answer_with(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }

    /// A run that selects the LoRA adapter `adapter` (loaded under that name) answers
    /// `text` instead of the model's answer. Adapters without an entry answer as the base
    /// model.
    pub fn lora_answer(mut self, adapter: impl Into<String>, text: impl Into<String>) -> Self {
        self.lora_answers.insert(adapter.into(), text.into());
        self
    }

    /// Tokenizes with a real `tokenizer.json` of the SentencePiece kind (Gemma, Llama: `▁`
    /// for spaces, `<0xHH>` byte fallback) instead of the built-in tokenizer. Needs the crate
    /// feature `tokenizer`; without it, init fails with a log line saying so. In file form
    /// `"tokenizer": {"kind": "json", "path": "tokenizer.json"}` (a relative path is relative
    /// to the mock model file's directory).
    pub fn tokenizer_json(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer = TokenizerSpec::Json { path: path.into() };
        self
    }

    /// Sets both simulated speeds, e.g. [`Timing::GEMMA2_2B_W8A8_RK3588`].
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Seconds of prefill per uncached prompt token.
    pub fn prefill_seconds_per_token(mut self, seconds: f64) -> Self {
        self.timing.prefill_seconds_per_token = seconds;
        self
    }

    /// Seconds per generated token.
    pub fn decode_seconds_per_token(mut self, seconds: f64) -> Self {
        self.timing.decode_seconds_per_token = seconds;
        self
    }

    /// The shape of the model's KV cache: a prompt cache of `n` tokens then has the real
    /// size, a header plus `n ×` [`KvGeometry::bytes_per_token`] bytes (a sparse file, see
    /// [`crate::mock`]). Default none: the file is just its header.
    pub fn kv_geometry(mut self, kv: KvGeometry) -> Self {
        self.prompt_cache.kv = Some(kv);
        self
    }

    /// The disk's throughput for prompt caches, in bytes per second (default 0: instant).
    /// Saving a cache of `b` bytes adds `b / throughput` after the run's last callback;
    /// loading one makes `rkllm_load_prompt_cache` take that long. [`RunStats`](super::RunStats)
    /// records both.
    pub fn disk_bytes_per_second(mut self, bytes_per_second: f64) -> Self {
        self.prompt_cache.disk_bytes_per_second = bytes_per_second;
        self
    }

    /// NPU memory the model takes from the process's pool at init (see
    /// [`set_npu_memory_capacity`](super::set_npu_memory_capacity)). Default 0, which never
    /// fails and leaves the pool untouched.
    pub fn npu_memory_bytes(mut self, bytes: u64) -> Self {
        self.npu_memory_bytes = bytes;
        self
    }

    /// The embedding dimension: EMBED input is `n_tokens × dim` floats, MULTIMODAL image
    /// input `n_image_tokens × dim`, hidden states `num_tokens × dim`. Default 16.
    pub fn embed_dim(mut self, dim: usize) -> Self {
        self.embed_dim = dim;
        self
    }

    /// The largest `max_context_len` init accepts (fixed at conversion on the real
    /// runtime). Default 4096.
    pub fn max_context_limit(mut self, tokens: i32) -> Self {
        self.max_context_limit = tokens;
        self
    }

    /// The rknpu driver version printed in the init line (default `0.9.8`); below `0.9.7`
    /// the runtime's "driver version is too low" warning comes first.
    pub fn driver_version(mut self, version: impl Into<String>) -> Self {
        self.driver_version = version.into();
        self
    }

    /// Where the runtime's log lines go (default [`RuntimeLog::Print`]: file descriptors 1
    /// and 2, as the real runtime prints them). For your own tests, [`RuntimeLog::Log`]
    /// sends them to the `log` facade and [`RuntimeLog::Off`] drops them.
    ///
    /// ```
    /// use rkllm::mock::{MockModel, RuntimeLog};
    ///
    /// let quiet = MockModel::new().runtime_log(RuntimeLog::Off);
    /// assert!(quiet.to_json().contains(r#""runtime_log": "off""#));
    /// ```
    pub fn runtime_log(mut self, log: RuntimeLog) -> Self {
        self.runtime_log = log;
        self
    }

    /// Makes every `rkllm_init` of this model fail like `failure`.
    pub fn fail_init(mut self, failure: InitFailure) -> Self {
        self.init_failure = Some(failure);
        self
    }

    /// Makes every run of this model fail like `failure`.
    pub fn fail_runs(mut self, failure: RunFailure) -> Self {
        self.run_failure = Some(failure);
        self.run_failure_on_run = None;
        self
    }

    /// Makes only the `run`-th run of each handle (counted from 1) fail like `failure`.
    pub fn fail_run(mut self, run: u64, failure: RunFailure) -> Self {
        self.run_failure = Some(failure);
        self.run_failure_on_run = Some(run);
        self
    }

    /// Replaces every probe knob at once.
    pub fn runtime(mut self, behaviour: RuntimeBehaviour) -> Self {
        self.runtime = behaviour;
        self
    }

    /// Changes probe knobs in place:
    /// `MockModel::new().with_runtime(|r| r.finish_after_abort = false)`.
    pub fn with_runtime(mut self, edit: impl FnOnce(&mut RuntimeBehaviour)) -> Self {
        edit(&mut self.runtime);
        self
    }

    /// The probe knobs as set.
    pub fn runtime_behaviour(&self) -> &RuntimeBehaviour {
        &self.runtime
    }

    /// The model as its file's JSON text.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a mock model file's text (what [`to_json`](Self::to_json) writes), checking the
    /// format marker and every value.
    pub fn from_json(text: &str) -> std::result::Result<MockModel, String> {
        match parse(text.as_bytes()) {
            Parsed::Model(m) => Ok(*m),
            Parsed::NotMock => Err(format!(
                "not a mock model (no \"format\": \"{MOCK_MODEL_FORMAT}\")"
            )),
            Parsed::Invalid(e) => Err(e),
        }
    }

    /// Reads a mock model file. It accepts exactly the files the mock runtime's `rkllm_init`
    /// accepts: UTF-8 JSON with the format marker and valid values.
    pub fn read_from(path: impl AsRef<Path>) -> Result<MockModel> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // The mock runtime's init refuses bytes that are not UTF-8, so this does too: a lossy
        // decode would accept a file the runtime then refuses.
        let text = std::str::from_utf8(&bytes).map_err(|e| Error::InvalidParameter {
            name: "mock model file",
            reason: format!(
                "{} is not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.valid_up_to()
            ),
        })?;
        MockModel::from_json(text).map_err(|reason| Error::InvalidParameter {
            name: "mock model file",
            reason,
        })
    }

    /// Checks every value and writes the model to `path`; returns the path.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        self.validate().map_err(|reason| Error::InvalidParameter {
            name: "mock model",
            reason,
        })?;
        let path = path.as_ref().to_owned();
        std::fs::write(&path, self.to_json()).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Writes the model to a new file under [`std::env::temp_dir`] (named
    /// `rkllm-mock-<pid>-<n>-<time>.rkllm`) and returns its path. The file is **not** removed:
    /// tests should prefer [`write_temp_file`](Self::write_temp_file), whose guard removes it.
    pub fn write_temp(&self) -> Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("rkllm-mock-{}-{n}-{nanos:09}.rkllm", std::process::id());
        self.write_to(std::env::temp_dir().join(name))
    }

    /// Writes the model to a new file under [`std::env::temp_dir`], as
    /// [`write_temp`](Self::write_temp) does, and returns a guard that removes the file when
    /// dropped. Keep the guard alive while the model is loaded (the mock reads the file in
    /// `rkllm_init`, and [`runs_of_model`](super::runs_of_model) finds runs by its path).
    ///
    /// ```
    /// use rkllm::mock::MockModel;
    /// use rkllm::{GenerateOptions, Model, Runtime};
    ///
    /// # fn main() -> rkllm::Result<()> {
    /// let file = MockModel::new().answer("Hi!").write_temp_file()?;
    /// let model = Model::builder(&file).runtime(Runtime::mock()).build()?;
    /// let reply = model.session()?.complete("<bos>Hello", &GenerateOptions::gemma())?;
    /// assert_eq!(reply.text, "Hi!");
    /// let path = file.to_path_buf();
    /// drop(file);
    /// assert!(!path.exists());
    /// # Ok(()) }
    /// ```
    pub fn write_temp_file(&self) -> Result<MockModelFile> {
        self.write_temp().map(|path| MockModelFile { path })
    }

    /// Checks that every value makes sense.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != MOCK_MODEL_FORMAT {
            return Err(format!("format must be {MOCK_MODEL_FORMAT:?}"));
        }
        if self.version != MOCK_MODEL_VERSION {
            return Err(format!(
                "version {} is not supported (this crate reads version {MOCK_MODEL_VERSION})",
                self.version
            ));
        }
        for (what, s) in [
            (
                "prefill_seconds_per_token",
                self.timing.prefill_seconds_per_token,
            ),
            (
                "decode_seconds_per_token",
                self.timing.decode_seconds_per_token,
            ),
        ] {
            if !(0.0..=3600.0).contains(&s) {
                return Err(format!(
                    "{what} must be between 0 and 3600 seconds, not {s}"
                ));
            }
        }
        self.prompt_cache.validate()?;
        if let Answer::Turns { turns, .. } = &self.answer {
            if turns.is_empty() {
                return Err("scripted turns must not be empty".to_owned());
            }
        }
        if self.max_context_limit <= 0 {
            return Err(format!(
                "max_context_limit must be positive, not {}",
                self.max_context_limit
            ));
        }
        if self.embed_dim > 1 << 20 {
            return Err(format!(
                "embed_dim {} is too large (at most 1048576)",
                self.embed_dim
            ));
        }
        if parse_version(&self.driver_version).is_none() {
            return Err(format!(
                "driver_version must look like 0.9.8, not {:?}",
                self.driver_version
            ));
        }
        if self.run_failure_on_run == Some(0) {
            return Err("run_failure_on_run counts from 1".to_owned());
        }
        Ok(())
    }

    // Accessors for the runtime.
    pub(crate) fn spec_name(&self) -> &str {
        &self.name
    }
    pub(crate) fn spec_answer(&self) -> &Answer {
        &self.answer
    }
    pub(crate) fn spec_lora_answers(&self) -> &BTreeMap<String, String> {
        &self.lora_answers
    }
    pub(crate) fn spec_tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }
    pub(crate) fn spec_timing(&self) -> Timing {
        self.timing
    }
    pub(crate) fn spec_cache_cost(&self) -> CacheCost {
        self.prompt_cache
    }
    pub(crate) fn spec_npu_memory_bytes(&self) -> u64 {
        self.npu_memory_bytes
    }
    pub(crate) fn spec_embed_dim(&self) -> usize {
        self.embed_dim
    }
    pub(crate) fn spec_max_context_limit(&self) -> i32 {
        self.max_context_limit
    }
    pub(crate) fn spec_runtime_log(&self) -> RuntimeLog {
        self.runtime_log
    }
    pub(crate) fn spec_driver_version(&self) -> &str {
        &self.driver_version
    }
    pub(crate) fn spec_init_failure(&self) -> Option<&InitFailure> {
        self.init_failure.as_ref()
    }
    /// The failure injected into the `run_index`-th run (from 1), if any.
    pub(crate) fn run_failure_for(&self, run_index: u64) -> Option<RunFailure> {
        match self.run_failure_on_run {
            Some(n) if n != run_index => None,
            _ => self.run_failure,
        }
    }
}

/// `major.minor.patch` as numbers.
/// A mock model file that is removed when the guard drops, from
/// [`MockModel::write_temp_file`]. It dereferences to the file's [`Path`], and converts into
/// a `PathBuf` by reference, so `Model::builder(&file)` works.
#[derive(Debug)]
#[must_use = "the file is removed when the guard drops"]
pub struct MockModelFile {
    path: PathBuf,
}

impl MockModelFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file (it is no longer removed) and returns its path.
    pub fn keep(self) -> PathBuf {
        // Not dropped (that would remove the file); the path is moved out, leaving an empty
        // one that owns no memory, so nothing leaks.
        let mut this = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut this.path)
    }
}

impl std::ops::Deref for MockModelFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for MockModelFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl From<&MockModelFile> for PathBuf {
    fn from(file: &MockModelFile) -> PathBuf {
        file.path.clone()
    }
}

impl Drop for MockModelFile {
    fn drop(&mut self) {
        // Already gone (a test removed it) is fine; nothing else can be done about an error.
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().unwrap_or(Some(0))?;
    let patch = it.next().unwrap_or(Some(0))?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// What a model file's bytes turned out to be.
pub(crate) enum Parsed {
    /// A valid mock model.
    Model(Box<MockModel>),
    /// Not a mock model file at all (the runtime's "invalid model magic").
    NotMock,
    /// A mock model file with a bad value.
    Invalid(String),
}

/// Reads a model file's bytes: the format marker first, then the whole model.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => return Parsed::NotMock,
    };
    if value.get("format").and_then(|f| f.as_str()) != Some(MOCK_MODEL_FORMAT) {
        return Parsed::NotMock;
    }
    let model: MockModel = match serde_json::from_value(value) {
        Ok(m) => m,
        Err(e) => return Parsed::Invalid(e.to_string()),
    };
    match model.validate() {
        Ok(()) => Parsed::Model(Box::new(model)),
        Err(e) => Parsed::Invalid(e),
    }
}

/// Whether the file at `path` is a mock model file (it starts with the mock's format marker
/// and parses). A preflight check can use this to tell mock models from real `.rkllm` files.
pub fn is_mock_model_file(path: impl AsRef<Path>) -> bool {
    std::fs::read(path)
        .map(|b| matches!(parse(&b), Parsed::Model(_)))
        .unwrap_or(false)
}
