//! A record of every run, so tests and benchmarks can check what the runtime did (prompt
//! size, prompt-cache reuse, simulated prefill) without reaching for the raw handle.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The runs remembered per process; older ones are forgotten first.
const LOG_CAPACITY: usize = 4096;

static LOG: Mutex<VecDeque<RunStats>> = Mutex::new(VecDeque::new());

/// The kind of input a run was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputKind {
    /// `RKLLM_INPUT_PROMPT`.
    Prompt,
    /// `RKLLM_INPUT_TOKEN`.
    Token,
    /// `RKLLM_INPUT_EMBED`.
    Embed,
    /// `RKLLM_INPUT_MULTIMODAL`.
    Multimodal,
}

/// What one run of the mock runtime did. Recorded for every run that got past its input
/// checks, whether it succeeded or not.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunStats {
    /// The handle's value (`LLMHandle as usize`).
    pub handle: usize,
    /// The model file, as given to `rkllm_init` (made absolute when it could be).
    pub model_path: PathBuf,
    /// Which run of the handle this was, from 1.
    pub run_index: u64,
    /// The input kind.
    pub input: InputKind,
    /// Whether the run asked for the last hidden layer instead of generating.
    pub hidden_layer_mode: bool,
    /// The LoRA adapter selected, if any.
    pub lora: Option<String>,
    /// Prompt tokens the run had (BOS included when the runtime adds one; image tokens
    /// included for multimodal input), after any truncation.
    pub prompt_tokens: usize,
    /// The prompt's token ids as the run had them (BOS included when the runtime added one,
    /// after any truncation; embedding rows are left out), so a test can check exactly what
    /// a prompt became. `u32`, as token ids are everywhere in the safe API (the runtime's
    /// negative ids never reach a prompt).
    pub prompt_ids: Vec<u32>,
    /// The prompt's text: as given for text (and multimodal) input, the ids decoded with the
    /// model's tokenizer for token input (invalid UTF-8 replaced); `None` for embeddings.
    pub prompt_text: Option<String>,
    /// Of the prompt tokens, those reused from a loaded prompt cache.
    pub reused_tokens: usize,
    /// Tokens actually prefilled (`prompt_tokens - reused_tokens`, unless an abort cut the
    /// prefill short).
    pub prefilled_tokens: usize,
    /// Simulated prefill time: `prefilled_tokens × prefill_seconds_per_token`.
    pub prefill: Duration,
    /// Bytes of the prompt caches loaded on this handle since its previous run (the file
    /// sizes, header and KV payload, see [`MockModel::kv_geometry`](super::MockModel::kv_geometry)).
    pub cache_load_bytes: u64,
    /// Simulated time those loads took (`bytes / disk_bytes_per_second`), spent inside
    /// `rkllm_load_prompt_cache` before this run.
    pub cache_load: Duration,
    /// Bytes of the prompt cache this run saved (0 when it saved none).
    pub cache_save_bytes: u64,
    /// Simulated time the save took, spent after the run's last callback, before `rkllm_run`
    /// returns.
    pub cache_save: Duration,
    /// NORMAL and WAITING callbacks delivered.
    pub generated_tokens: usize,
    /// Whether a FINISH callback was delivered.
    pub finished: bool,
    /// Whether an ERROR callback was delivered.
    pub errored: bool,
    /// Whether the run was aborted.
    pub aborted: bool,
    /// What `rkllm_run` returned (for `rkllm_run_async`, what the run would have returned).
    pub return_code: i32,
}

/// Adds a finished run to the log.
pub(crate) fn record(stats: RunStats) {
    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() == LOG_CAPACITY {
        log.pop_front();
    }
    log.push_back(stats);
}

/// Every run remembered in this process, oldest first (at most the last 4096).
pub fn run_log() -> Vec<RunStats> {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Forgets every recorded run and frees the log's memory (it keeps the last 4096 runs), for
/// long-running tests that measure memory.
pub fn clear_run_log() {
    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    log.clear();
    log.shrink_to_fit();
}

/// The runs of the model file at `path`, oldest first. Tests running in parallel stay apart
/// by each writing its own model file (see [`MockModel::write_temp_file`](super::MockModel::write_temp_file)).
pub fn runs_of_model(path: impl AsRef<Path>) -> Vec<RunStats> {
    let want = normalise(path.as_ref());
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|s| s.model_path == want)
        .cloned()
        .collect()
}

/// The last finished run of `handle` (an `LLMHandle` of the mock runtime), if any. Only the
/// handle's address is used; it is never dereferenced.
pub fn last_run_stats(handle: rkllm_sys::LLMHandle) -> Option<RunStats> {
    let id = handle as usize;
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|s| s.handle == id)
        .cloned()
}

/// `path` made absolute and canonical when possible, so a model is found however its path
/// was spelled.
pub(crate) fn normalise(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}
