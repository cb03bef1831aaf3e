//! Settings for what the 1.1.1 runtime leaves undocumented, and how long the crate waits for
//! it. A leaf module: the builder, the seam, the stream, the mock and the probe all use these
//! types.
//!
//! Each runtime behaviour has one type here, named for what the runtime does: the builder
//! takes it as a setting (tell the crate what this runtime does), the mock takes it as a knob
//! (behave like that), and the probe reports it as an answer (this runtime does that). The
//! serde forms (feature `mock`) are the mock model file's.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "mock")]
use serde::{Deserialize, Serialize};

/// What `result->text` carries in `RKLLM_RUN_WAITING` callbacks (a token that leaves a UTF-8
/// character incomplete).
///
/// Not documented for the 1.1.1 runtime; `examples/probe.rs` tells which on a board. As a
/// builder setting only [`PartialBytesThenWhole`](Self::PartialBytesThenWhole) changes
/// anything: the stream then ignores WAITING text, which the next NORMAL callback repeats.
/// Every other value joins the bytes of every token (NULL read as none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum WaitingText {
    /// The token's own bytes (a partial character); the completing NORMAL callback carries
    /// only its own bytes, so the concatenation of all texts is the output (default).
    #[default]
    PartialBytes,
    /// NULL; the completing NORMAL callback carries the whole character.
    Null,
    /// An empty string; the completing NORMAL callback carries the whole character.
    Empty,
    /// The partial bytes, and the completing NORMAL callback repeats them with the whole
    /// character: concatenating every text would duplicate bytes.
    PartialBytesThenWhole,
}

impl fmt::Display for WaitingText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitingText::Null => "NULL (the next NORMAL carries the whole character)",
            WaitingText::Empty => "empty string (the next NORMAL carries the whole character)",
            WaitingText::PartialBytes => "partial bytes (concatenation gives the text)",
            WaitingText::PartialBytesThenWhole => {
                "partial bytes, repeated by the next NORMAL (concatenation duplicates)"
            }
        })
    }
}

/// What `rkllm_is_running` returns while a task runs, on this runtime.
///
/// The 1.1.x header documents 0 while running (an inverted sense); `examples/probe.rs`
/// checks it on a board. Only [`Model::runtime_reports_running`](crate::Model::runtime_reports_running)
/// depends on it: the crate tracks its own runs without this call. (The mock returns 1 for
/// non-zero; its model files also accept the older name `one_while_running`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum RunningSense {
    /// 0 while a task runs, non-zero when idle (the header's documentation; default).
    #[default]
    ZeroWhileRunning,
    /// Non-zero while a task runs, 0 when idle (a boolean "is running").
    #[cfg_attr(feature = "mock", serde(alias = "one_while_running"))]
    NonZeroWhileRunning,
}

impl fmt::Display for RunningSense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunningSense::ZeroWhileRunning => "0 while running (inverted, as the header says)",
            RunningSense::NonZeroWhileRunning => "non-zero while running (boolean sense)",
        })
    }
}

/// Which thread runs the callback during `rkllm_run`.
///
/// The crate works with any (tokens cross a channel). The mock's default is a runtime thread,
/// the stricter case for a binding; its `Mixed` calls back on the caller's thread in the odd
/// runs of a handle and on its own thread in the even ones. Model files also accept the
/// older name `worker`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum CallbackThread {
    /// Another thread, owned by the runtime (default).
    #[default]
    #[cfg_attr(feature = "mock", serde(alias = "worker"))]
    RuntimeThread,
    /// The thread that called `rkllm_run`.
    Caller,
    /// Some callbacks on the caller's thread, some on others.
    Mixed,
}

impl fmt::Display for CallbackThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallbackThread::Caller => "the caller's thread",
            CallbackThread::RuntimeThread => "a runtime thread",
            CallbackThread::Mixed => "mixed threads",
        })
    }
}

/// What `result->text` carries in FINISH (and ERROR) callbacks. The crate ignores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum FinishText {
    /// NULL (default).
    #[default]
    Null,
    /// An empty string.
    Empty,
    /// Some text (as the probe saw it, lossily decoded).
    Text(String),
}

impl fmt::Display for FinishText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinishText::Null => f.write_str("NULL"),
            FinishText::Empty => f.write_str("empty string"),
            FinishText::Text(t) => write!(f, "text {t:?}"),
        }
    }
}

/// What a prompt longer than `max_context_len` does. Keep prompts within it
/// ([`chat::Conversation`](crate::chat::Conversation) budgets them).
///
/// Model files also accept the older names `error` and `truncate_keep_last`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ContextOverflow {
    /// `rkllm_run` prints an error line and returns an error code without any callback
    /// (default).
    #[default]
    #[cfg_attr(feature = "mock", serde(alias = "error"))]
    Refused,
    /// An ERROR callback ends the run.
    ErrorCallback,
    /// The run goes on (the prompt is cut or the window shifts) and generates. The mock
    /// keeps the prompt's last `max_context_len - 1` tokens.
    #[cfg_attr(feature = "mock", serde(alias = "truncate_keep_last"))]
    Truncated,
}

impl fmt::Display for ContextOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContextOverflow::Refused => "refused: rkllm_run returns an error, no callback",
            ContextOverflow::ErrorCallback => "ERROR callback ends the run",
            ContextOverflow::Truncated => "runs anyway (prompt cut or shifted)",
        })
    }
}

/// Whether a second model loads and runs in the same process while another is alive.
///
/// Model files also accept the older names `allowed` and `fails_out_of_memory`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum SecondModel {
    /// It loads and generates (default; in the mock, as far as its NPU memory pool allows).
    #[default]
    #[cfg_attr(feature = "mock", serde(alias = "allowed"))]
    Works,
    /// It loads, but its runs produce no token (in the mock, every run prints an error line
    /// and returns -1 while more than one handle is alive).
    LoadsButRunFails,
    /// `rkllm_init` fails (the mock's with the NPU out-of-memory lines, whatever its pool).
    #[cfg_attr(feature = "mock", serde(alias = "fails_out_of_memory"))]
    Refused,
}

impl fmt::Display for SecondModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecondModel::Works => "loads and generates",
            SecondModel::LoadsButRunFails => "loads, but does not generate",
            SecondModel::Refused => "refused: rkllm_init fails",
        })
    }
}

/// Whether the runtime adds a BOS token to text (prompt) input by itself; the setting that
/// follows is [`chat::Bos`](crate::chat::Bos).
///
/// In a mock model file: `"always"`, `"unless_present"` or `"never"`; `true` and `false`
/// (the older form) read as `always` and `never`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "mock", derive(Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum AddsBos {
    /// Always: a prompt that starts with `<bos>` gets two.
    Always,
    /// Only when the prompt does not start with `<bos>` already.
    UnlessPresent,
    /// Never: the caller writes `<bos>` (the mock's default).
    #[default]
    Never,
}

impl fmt::Display for AddsBos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddsBos::Always => "added by the runtime (always)",
            AddsBos::UnlessPresent => "added by the runtime unless the prompt has one",
            AddsBos::Never => "not added (the prompt must carry <bos>)",
        })
    }
}

#[cfg(feature = "mock")]
impl<'de> Deserialize<'de> for AddsBos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Named {
            Always,
            UnlessPresent,
            Never,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Flag(bool),
            Named(Named),
        }
        Ok(match Form::deserialize(d)? {
            Form::Flag(true) | Form::Named(Named::Always) => AddsBos::Always,
            Form::Named(Named::UnlessPresent) => AddsBos::UnlessPresent,
            Form::Flag(false) | Form::Named(Named::Never) => AddsBos::Never,
        })
    }
}

/// Whether a loaded prompt cache's matching prefix is reused (a shorter time to first
/// token). In a mock model file a boolean, `true` for `Reused`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "mock",
    derive(Serialize, Deserialize),
    serde(from = "bool", into = "bool")
)]
#[non_exhaustive]
pub enum PromptCacheReuse {
    /// The matching prefix is not prefilled again (default).
    #[default]
    Reused,
    /// No effect on the prefill.
    NotReused,
}

impl From<bool> for PromptCacheReuse {
    fn from(reused: bool) -> Self {
        if reused {
            PromptCacheReuse::Reused
        } else {
            PromptCacheReuse::NotReused
        }
    }
}

impl From<PromptCacheReuse> for bool {
    fn from(reuse: PromptCacheReuse) -> bool {
        reuse == PromptCacheReuse::Reused
    }
}

impl fmt::Display for PromptCacheReuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PromptCacheReuse::Reused => "the matching prefix is reused (faster first token)",
            PromptCacheReuse::NotReused => "no effect on the time to first token",
        })
    }
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

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;

    /// Mock model files written before the names were unified still read.
    #[test]
    fn older_mock_file_names_still_read() {
        fn parse<T: serde::de::DeserializeOwned>(json: &str) -> serde_json::Result<T> {
            serde_json::from_str(json)
        }
        assert_eq!(
            parse::<RunningSense>("\"one_while_running\"").unwrap(),
            RunningSense::NonZeroWhileRunning
        );
        assert_eq!(
            parse::<CallbackThread>("\"worker\"").unwrap(),
            CallbackThread::RuntimeThread
        );
        assert_eq!(
            parse::<ContextOverflow>("\"error\"").unwrap(),
            ContextOverflow::Refused
        );
        assert_eq!(
            parse::<ContextOverflow>("\"truncate_keep_last\"").unwrap(),
            ContextOverflow::Truncated
        );
        assert_eq!(
            parse::<SecondModel>("\"fails_out_of_memory\"").unwrap(),
            SecondModel::Refused
        );
        assert_eq!(
            parse::<SecondModel>("\"allowed\"").unwrap(),
            SecondModel::Works
        );
        assert_eq!(parse::<AddsBos>("true").unwrap(), AddsBos::Always);
        assert_eq!(parse::<AddsBos>("false").unwrap(), AddsBos::Never);
        assert_eq!(
            parse::<AddsBos>("\"unless_present\"").unwrap(),
            AddsBos::UnlessPresent
        );
        assert!(parse::<AddsBos>("\"sometimes\"").is_err());
        assert_eq!(
            parse::<PromptCacheReuse>("false").unwrap(),
            PromptCacheReuse::NotReused
        );
        // And the current names round-trip.
        let text = serde_json::to_string(&FinishText::Text("x".into())).unwrap();
        assert_eq!(
            parse::<FinishText>(&text).unwrap(),
            FinishText::Text("x".into())
        );
        assert_eq!(
            serde_json::to_string(&AddsBos::UnlessPresent).unwrap(),
            "\"unless_present\""
        );
    }
}
