//! The on-board verification kit: small experiments that find out how the closed 1.1.x
//! runtime behaves where it is undocumented, each answering one [`Question`] with evidence.
//!
//! The crate handles every possible answer defensively; the probe tells users (and us) the
//! real ones, and which library setting follows from them ([`ProbeReport::advice`]). Run it
//! on a board with the `probe` example and paste its report into an issue:
//!
//! ```no_run
//! # fn main() -> rkllm::Result<()> {
//! use rkllm::probe::{self, ProbeConfig};
//! let config = ProbeConfig::new(rkllm::Runtime::load()?, "/models/gemma-2-2b-it-w8a8.rkllm")
//!     .tokenizer("/models/tokenizer.json");
//! let report = probe::run(&config)?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! How it keeps the board in a good state: it creates its own runtime instances (one at a
//! time, except for the second-model question), each destroyed when the experiment ends,
//! panics included; every run has a time limit after which it is aborted; a run that does not
//! return even after aborts is reported and its handle left alone rather than destroyed
//! under a running task. Prompts are short and `max_new_tokens` small.
//!
//! The BOS question reads the performance table the runtime prints after each run at
//! `RKLLM_LOG_LEVEL=1`. The probe never changes the environment (another thread may read it
//! meanwhile): set the variable before the program starts, as in
//! `RKLLM_LOG_LEVEL=1 cargo run --example probe -- --model PATH`.
//!
//! It runs on the crate's own run machinery (the same worker, callback and bounded stops as
//! [`Session`](crate::Session)), watching every raw callback through an observer. Built only
//! with the cargo feature `probe`.
//!
//! The experiments, in order, on one instance (`max_context_len`, greedy):
//! a run held at its first token (callback thread, `rkllm_is_running` while running,
//! `rkllm_abort`, how the run ends), a run that writes rare characters (WAITING and FINISH
//! text), BOS prompt pairs compared by the prefill token count the runtime prints, a Gemma
//! prompt without stop tokens (`<end_of_turn>`), a prompt-cache save/load with times to first
//! token, a second instance of the same model; then an instance with a small context and a
//! prompt longer than it.

mod answers;
mod bos;
mod context;
mod control;
mod end_of_turn;
mod harness;
mod perf;
mod prompt_cache;
mod report;
mod second_model;
mod text;
mod tokens;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use answers::{
    AbortEnding, CacheTiming, EndOfTurn, Finding, MeasuredCacheCost, Question, Verdict,
};
pub use report::ProbeReport;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::runtime::Runtime;
use harness::{InitFailed, InitSpec, Instance, RunPlan};
use tokens::TokenCounter;

/// What to probe and how: the runtime, the model, and the limits of the experiments.
///
/// ```
/// # #[cfg(feature = "mock")] {
/// use std::time::Duration;
/// use rkllm::probe::{ProbeConfig, Question};
/// let config = ProbeConfig::new(rkllm::Runtime::mock(), "model.rkllm")
///     .run_timeout(Duration::from_secs(30))
///     .skip(Question::SecondModel);
/// assert!(!config.asks(Question::SecondModel));
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ProbeConfig {
    runtime: Runtime,
    model: PathBuf,
    tokenizer: Option<PathBuf>,
    max_context_len: u32,
    small_context_len: u32,
    max_new_tokens: u32,
    run_timeout: Duration,
    pause_limit: Duration,
    cache_prefix_words: usize,
    work_dir: PathBuf,
    skip: HashSet<Question>,
}

impl ProbeConfig {
    /// Probes the model file at `model` on `runtime`, with the defaults: context 512, small
    /// context 64, 32 new tokens per run, 120 s per run, a 100-word prompt-cache prefix,
    /// scratch files in the temporary directory.
    pub fn new(runtime: Runtime, model: impl Into<PathBuf>) -> ProbeConfig {
        ProbeConfig {
            runtime,
            model: model.into(),
            tokenizer: None,
            max_context_len: 512,
            small_context_len: 64,
            max_new_tokens: 32,
            run_timeout: Duration::from_secs(120),
            pause_limit: Duration::from_secs(2),
            cache_prefix_words: 100,
            work_dir: std::env::temp_dir(),
            skip: HashSet::new(),
        }
    }

    /// The model's Gemma 2 `tokenizer.json`: the BOS question then also compares the
    /// runtime's prefill count with the exact count of a chat prompt (feature `tokenizer`).
    pub fn tokenizer(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer = Some(path.into());
        self
    }

    /// `max_context_len` of the main instance (default 512).
    pub fn max_context_len(mut self, n: u32) -> Self {
        self.max_context_len = n;
        self
    }

    /// `max_context_len` of the instance the over-long prompt is sent to (default 64).
    pub fn small_context_len(mut self, n: u32) -> Self {
        self.small_context_len = n;
        self
    }

    /// `max_new_tokens` of the instances (default 32): bounds every run.
    pub fn max_new_tokens(mut self, n: u32) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Time limit of one run, after which it is aborted (default 120 s).
    pub fn run_timeout(mut self, limit: Duration) -> Self {
        self.run_timeout = limit;
        self
    }

    /// How long the probe may hold the runtime's callback while it calls `rkllm_is_running`
    /// and `rkllm_abort` (default 2 s). Should one of them wait for the callback, the pause
    /// ends after this and the report says so.
    pub fn pause_limit(mut self, limit: Duration) -> Self {
        self.pause_limit = limit;
        self
    }

    /// Words in the prompt-cache prefix (default 100): long enough that its prefill
    /// dominates the time to first token, short enough to fit `max_context_len`.
    pub fn cache_prefix_words(mut self, words: usize) -> Self {
        self.cache_prefix_words = words;
        self
    }

    /// Directory for the prompt-cache file (default: the temporary directory). The file is
    /// removed afterwards.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Leaves a question out (its answer is [`Verdict::Skipped`]); e.g. the second model on
    /// a board without RAM for two.
    pub fn skip(mut self, question: Question) -> Self {
        self.skip.insert(question);
        self
    }

    /// Whether `question` is asked.
    pub fn asks(&self, question: Question) -> bool {
        !self.skip.contains(&question)
    }

    /// The model file.
    pub fn model(&self) -> &Path {
        &self.model
    }

    fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| Error::InvalidParameter { name, reason };
        for (name, n) in [
            ("max_context_len", self.max_context_len),
            ("small_context_len", self.small_context_len),
            ("max_new_tokens", self.max_new_tokens),
        ] {
            if n == 0 || i32::try_from(n).is_err() {
                return Err(bad(name, format!("{n} must be between 1 and {}", i32::MAX)));
            }
        }
        if self.small_context_len >= self.max_context_len {
            return Err(bad(
                "small_context_len",
                format!(
                    "{} must be below max_context_len {}",
                    self.small_context_len, self.max_context_len
                ),
            ));
        }
        if self.run_timeout.is_zero() {
            return Err(bad("run_timeout", "must not be zero".into()));
        }
        Ok(())
    }

    /// A run of `prompt` under this configuration's limits.
    fn plan<'a>(&self, prompt: &'a str) -> RunPlan<'a> {
        RunPlan {
            prompt,
            save_cache: None,
            abort_at_token: None,
            timeout: self.run_timeout,
            pause_limit: self.pause_limit,
        }
    }

    fn main_spec(&self) -> InitSpec {
        InitSpec {
            max_context_len: self.max_context_len,
            max_new_tokens: self.max_new_tokens,
        }
    }
}

/// A Gemma 2 prompt of one user turn, ready for the model's answer.
pub(crate) fn gemma_prompt(user: &str) -> String {
    format!("<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
}

/// Runs every asked experiment and reports the answers.
///
/// # Errors
///
/// Only when the model cannot be loaded at all (the usual [`Error::Init`] with the runtime's
/// diagnosis, or an invalid configuration); a failure after that becomes a
/// [`Verdict::Failed`] answer and the other experiments still run.
pub fn run(config: &ProbeConfig) -> Result<ProbeReport> {
    config.validate()?;
    // Loading through the safe API first gives the usual diagnosis (preflight, runtime log)
    // when the model does not load, and the runtime's version line.
    let model = Model::builder(&config.model)
        .runtime(config.runtime.clone())
        .max_context_len(config.max_context_len)
        .max_new_tokens(config.max_new_tokens)
        .build()?;
    let mut report = ProbeReport::new(config, model.init_diagnosis());
    drop(model);

    let counter = TokenCounter::load(config.tokenizer.as_deref());
    report.notes.extend(counter.note().map(str::to_owned));

    match Instance::init(&config.runtime, &config.model, config.main_spec()) {
        Ok(mut main) => main_experiments(&mut main, config, &counter, &mut report),
        Err(failed) => {
            let reason = init_failed("the probe's instance", config.max_context_len, &failed);
            for q in Question::ALL {
                if q != Question::ContextOverflow {
                    report.fail(q, &reason);
                }
            }
        }
    }
    if config.asks(Question::ContextOverflow) {
        report.context_overflow = attempt("the over-long prompt", || context::probe(config))
            .unwrap_or_else(Finding::failed);
    }
    for q in Question::ALL {
        if !config.asks(q) {
            report.skip(q);
        }
    }
    Ok(report)
}

/// The experiments on the main instance. Each is isolated: a panic fails its questions only.
fn main_experiments(
    main: &mut Instance,
    config: &ProbeConfig,
    counter: &TokenCounter,
    report: &mut ProbeReport,
) {
    use Question as Q;
    let wants = |qs: &[Q]| qs.iter().any(|&q| config.asks(q));
    let mut records = Vec::new();

    if wants(&[Q::CallbackThread, Q::AbortEnding, Q::IsRunningSense]) {
        match attempt("the abort run", || control::run(main, config)) {
            Ok(c) => {
                report.abort_ending = control::abort_ending(&c, config);
                report.is_running_sense = control::is_running(&c);
                records.push(c.stopped);
                records.push(c.again);
            }
            Err(r) => {
                report.fail(Q::AbortEnding, &r);
                report.fail(Q::IsRunningSense, &r);
            }
        }
    }
    if wants(&[Q::WaitingText, Q::FinishText, Q::CallbackThread]) {
        match attempt("the text run", || text::run(main, config)) {
            Ok(r) => {
                report.waiting_text = text::waiting(&r, config.run_timeout);
                records.push(r);
            }
            Err(r) => report.fail(Q::WaitingText, &r),
        }
    }
    if wants(&[Q::Bos]) {
        report.bos = attempt("the BOS runs", || bos::probe(main, config, counter))
            .unwrap_or_else(Finding::failed);
    }
    if wants(&[Q::EndOfTurn, Q::FinishText, Q::CallbackThread]) {
        match attempt("the end-of-turn run", || end_of_turn::run(main, config)) {
            Ok(r) => {
                report.end_of_turn = end_of_turn::analyse(&r, config);
                records.push(r);
            }
            Err(r) => report.fail(Q::EndOfTurn, &r),
        }
    }
    let all: Vec<_> = records.iter().collect();
    report.callback_thread = control::callback_thread(&all);
    report.finish_text = text::finish(&all);

    if wants(&[Q::PromptCache]) {
        match attempt("the prompt-cache runs", || {
            prompt_cache::probe(main, config)
        }) {
            Ok((finding, timing, cost)) => {
                report.prompt_cache = finding;
                report.cache_timing = timing;
                report.cache_cost = cost;
            }
            Err(r) => report.fail(Q::PromptCache, &r),
        }
    }
    if wants(&[Q::SecondModel]) {
        report.second_model = attempt("the second model", || second_model::probe(main, config))
            .unwrap_or_else(Finding::failed);
    }
}

/// Runs one experiment, turning a panic of the probe into a reason.
fn attempt<T>(what: &str, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        format!("the probe panicked during {what}: {msg}")
    })
}

/// Why an instance did not load, with the runtime's own first error line.
fn init_failed(what: &str, max_context_len: u32, failed: &InitFailed) -> String {
    if let Some(reason) = &failed.reason {
        return format!("{what} (max_context_len {max_context_len}) did not load: {reason}");
    }
    let said = failed
        .diagnosis
        .first_error_line()
        .map(|l| format!("; the runtime said: {l}"))
        .unwrap_or_default();
    format!(
        "{what} (max_context_len {max_context_len}) did not load: rkllm_init returned {}{said}",
        failed.code
    )
}

/// A mock model with which the probe can answer every question (feature `mock`): its answer
/// has characters split across tokens (WAITING callbacks), its prefill costs 1 ms per token
/// (so a prompt cache shows in the time to first token), and it prints the performance table
/// as the real runtime does at `RKLLM_LOG_LEVEL=1` (its `log_level` knob, so the environment
/// is left alone). Change its runtime knobs with
/// [`MockModel::with_runtime`](crate::mock::MockModel::with_runtime).
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub fn mock_model() -> crate::mock::MockModel {
    crate::mock::MockModel::new()
        .name("probe-mock")
        .answer("Hello! Ünïcödé 🦀 works.")
        .prefill_seconds_per_token(0.001)
        .with_runtime(|r| r.log_level = Some(1))
}
