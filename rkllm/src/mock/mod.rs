//! The mock runtime: a faithful in-process stand-in for RKLLM runtime 1.1.1 (feature `mock`).
//!
//! It implements the runtime's C ABI itself, in Rust, and plugs into the same function table
//! as `librkllmrt.so` ([`raw_api`], [`Runtime::mock`](crate::Runtime::mock)), so the safe
//! crate's unsafe glue (callback trampoline, `userdata`, lifetimes) runs exactly as on the
//! board. It is driven by **mock model files**, small JSON files written by [`MockModel`]
//! that stand where a `.rkllm` model would and say what the model answers, how it tokenizes,
//! how fast it runs, how much NPU memory it takes, which failures to inject, and how the
//! runtime behaves where the real one is unconfirmed ([`RuntimeBehaviour`]).
//!
//! ```
//! use rkllm::mock::MockModel;
//!
//! # fn main() -> rkllm::Result<()> {
//! // Removed when `model` drops.
//! let model = MockModel::new().answer("Hello there!").write_temp_file()?;
//! let runtime = rkllm::Runtime::mock();
//! assert!(runtime.is_mock());
//! // ... load `model` with `runtime` as you would a real .rkllm file.
//! # Ok(()) }
//! ```
//!
//! # How it behaves
//!
//! * **Init** prints `I rkllm: rkllm-runtime version: 1.1.1, rknpu driver version: <driver>,
//!   platform: RK3588` (preceded by the runtime's "driver version is too low" warning below
//!   0.9.7), then checks: NULL handle pointer or param, an unreadable model file, a file that
//!   is not a mock model ("invalid rknn llm model magic"), an injected [`InitFailure`],
//!   `max_context_len` outside `1..=max_context_limit`, the tokenizer, and the NPU memory
//!   pool ([`set_npu_memory_capacity`]). Each failure prints the real runtime's kind of lines
//!   and returns -1 with the handle NULL. `I`/`W` lines and the performance table go to file
//!   descriptor 1, `E` lines to descriptor 2 (or 1, see [`RuntimeBehaviour::error_log`]),
//!   written with `write(2)` as C code would; for quiet tests of your own, a model can send
//!   them to the `log` facade or nowhere instead ([`MockModel::runtime_log`]).
//! * **Handles** are registry ids, never pointers: any call on a NULL, destroyed or made-up
//!   handle returns -1.
//! * **Runs** (`rkllm_run`) block until every callback has been delivered, from a worker
//!   thread the handle owns (or the caller's thread, see [`CallbackThread`](crate::settings::CallbackThread)). Each token is
//!   one NORMAL callback with its text (valid only during the callback) and id; a token that
//!   leaves a UTF-8 character incomplete (non-ASCII text is byte-fallback tokens, one byte
//!   each) is a WAITING callback; then one FINISH. The answer ends with `<end_of_turn>` (107;
//!   with a `tokenizer.json`, the family's turn end such as `<|im_end|>` or `<|eot_id|>`),
//!   whose text `skip_special_token` hides (the id still arrives). Generation also stops at
//!   `max_new_tokens` (negative = unlimited; 0 = no token) and when prompt plus answer fill
//!   `max_context_len`. A prompt of exactly `max_context_len` tokens generates nothing; a
//!   longer one is a [`ContextOverflow`](crate::settings::ContextOverflow). FINISH and ERROR carry token id -1.
//! * **Inputs**: prompt text (tokenized as given), token ids (decoded with the same tokenizer;
//!   an id outside the vocabulary fails the run), embeddings (`n_tokens × embed_dim` floats;
//!   the answer falls back to the script, [`DEFAULT_ANSWER`] for an echo model), multimodal
//!   (prompt plus `n_image_tokens × embed_dim` floats; the image's rows come first). NULL
//!   pointers, zero lengths and an unknown type or mode return -1 with an `E rkllm:` line.
//! * **Hidden layer** (`mode = RKLLM_INFER_GET_LAST_HIDDEN_LAYER`): one callback with state 4
//!   and `num_tokens × embd_size` floats (`num_tokens` = prompt rows, `embd_size` = the
//!   model's `embed_dim`), then FINISH. A token row's value at dimension `d` is
//!   [`hidden_value`]`(id, d, dim)` = `(id mod 1000) + d / dim` in `f32`; an embedding row
//!   is the input embedding itself. The buffer is overwritten with NaN and freed right after
//!   the callback.
//! * **Abort** (`rkllm_abort`, from another thread or from a callback) stops generation
//!   before the next token. A prefill completes first unless
//!   [`RuntimeBehaviour::abort_interrupts_prefill`]. Whether FINISH follows and what
//!   `rkllm_run` returns are knobs.
//! * **Prompt cache**: a run with `save_prompt_cache = 1` writes the prompt's token ids and
//!   the model's identity (its name, tokenizer and KV size per token) to the path
//!   (`./prompt_cache.bin` when NULL). `rkllm_load_prompt_cache` loads one (a cache of
//!   another model, or a damaged or foreign file, fails with -1); later prompts skip the
//!   longest prefix they share with it: prefill time = uncached tokens ×
//!   `prefill_seconds_per_token`. With [`MockModel::kv_geometry`] the file has the real size
//!   of the KV state (`tokens ×` [`KvGeometry::bytes_per_token`] after the header), written
//!   as a sparse file: the size is real, the disk blocks are not. With
//!   [`MockModel::disk_bytes_per_second`], saving takes `size / throughput` after the run's
//!   last callback and loading takes as long inside `rkllm_load_prompt_cache`. See
//!   [`RunStats`] to check the reuse, the bytes and the I/O time.
//! * **LoRA**: `rkllm_load_lora` needs an existing file and registers the name per handle; a
//!   run naming an unknown adapter returns -1 with an `E rkllm:` line; a known one answers
//!   its [`MockModel::lora_answer`] if it has one.
//! * **`rkllm_run_async`** copies the input, returns 0 at once and calls back from the
//!   worker thread.
//! * **`rkllm_is_running`** is 0 while a task runs and 1 otherwise ([`RunningSense`](crate::settings::RunningSense));
//!   -1 for an invalid handle. A second run on a busy handle returns -1.
//! * **`RKLLM_LOG_LEVEL=1`** (read at init, or [`RuntimeBehaviour::log_level`]) prints a
//!   Prefill/Generate performance table after each run; the Prefill token count is the
//!   prompt tokens actually prefilled (BOS included when the runtime adds one, cached tokens
//!   excluded).
//! * `RKLLMParam.is_async` is ignored, as are the sampling parameters.

mod abi;
mod cost;
mod engine;
mod handle;
mod init;
mod input;
mod log;
mod memory;
mod model_file;
mod prompt_cache;
mod stats;
mod tokenizer;

pub use cost::KvGeometry;
pub use engine::{hidden_value, NO_TOKEN};
pub use handle::live_handles_of_model;
pub use init::{PLATFORM, RUNTIME_VERSION};
pub use memory::{
    npu_memory_capacity, npu_memory_in_use, set_npu_memory_capacity, DEFAULT_NPU_MEMORY,
    NPU_MEMORY_ENV,
};
pub use model_file::{
    is_mock_model_file, AfterLastTurn, Answer, InitFailure, LogStream, MockModel, MockModelFile,
    RunFailure, RuntimeBehaviour, RuntimeLog, Timing, DEFAULT_ANSWER, MOCK_MODEL_FORMAT,
    MOCK_MODEL_VERSION,
};
pub use stats::{clear_run_log, last_run_stats, run_log, runs_of_model, InputKind, RunStats};
pub use tokenizer::{BuiltinTokenizer, BOS_ID, BYTE_TOKEN_BASE, END_OF_TURN_ID, PIECE_BASE};

/// The origin the mock's [`rkllm_sys::Library`] reports (see
/// [`Runtime::origin`](crate::Runtime::origin)).
pub const ORIGIN: &str = "mock runtime (rkllm 1.1.1 stand-in)";

/// The mock runtime as a [`rkllm_sys::Library`], what [`Runtime::mock`](crate::Runtime::mock)
/// uses.
pub(crate) fn library() -> rkllm_sys::Library {
    // SAFETY: every function of the table implements the 1.1.1 ABI as documented: it reads
    // and writes only through the pointers it is given, within their layouts, calls the
    // callback only during a run of its handle, and, being plain Rust functions of this
    // crate, stays callable forever.
    unsafe { rkllm_sys::Library::from_api(raw_api(), ORIGIN) }
}

/// The raw C-level table of the mock's ten functions, for tests of C-level behaviour and for
/// users who want to drive the mock through the 1.1.1 ABI themselves. The functions keep the
/// C contract of the real runtime (pointers valid for what they state); they never unwind
/// and fail with -1 on a NULL, destroyed or unknown handle.
pub fn raw_api() -> rkllm_sys::RkllmApi {
    abi::api()
}
