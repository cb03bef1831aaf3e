//! Settings for what the 1.1.1 runtime leaves undocumented, and how long the crate waits for
//! it. A leaf module: the builder, the seam, the stream, the mock and the probe all use these
//! types.

use std::time::Duration;

/// What the text of a `RKLLM_RUN_WAITING` callback is, on this runtime.
///
/// Whether the 1.1.1 runtime hands over the partial bytes of a split character in WAITING
/// and then only the rest in NORMAL (`Join`), or repeats the whole character in the NORMAL
/// that follows (`Ignore`), is not documented; `examples/probe.rs` tells which on a board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitingText {
    /// WAITING carries part of a character; join it with what follows (default; also right
    /// when WAITING carries no text).
    #[default]
    Join,
    /// Ignore WAITING text: the next NORMAL callback carries the whole character again.
    Ignore,
}

/// What `rkllm_is_running` returns while a task runs, on this runtime.
///
/// The 1.1.x header documents 0 while running (an inverted sense); `examples/probe.rs`
/// checks it on a board. Only [`Model::runtime_reports_running`](crate::Model::runtime_reports_running)
/// depends on it: the crate tracks its own runs without this call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunningSense {
    /// 0 while a task runs (the header's documentation; default).
    #[default]
    ZeroWhileRunning,
    /// Non-zero while a task runs.
    NonZeroWhileRunning,
}

/// How long stopping a run may take by default: see
/// [`ModelBuilder::stop_timeout`](crate::ModelBuilder::stop_timeout).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings about the runtime's behaviour, kept by the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeSettings {
    pub waiting_text: WaitingText,
    pub running_sense: RunningSense,
    /// How long a stop (drop of a stream, session or model) waits for `rkllm_run` to return.
    pub stop_timeout: Duration,
    /// The vocabulary size, when known: token inputs are checked against it.
    pub vocab_size: Option<u32>,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            waiting_text: WaitingText::default(),
            running_sense: RunningSense::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            vocab_size: None,
        }
    }
}
