//! The answers the probe can give: one typed value per question, with its evidence.
//!
//! An answer that is a runtime behaviour has the type the builder and the mock use for it
//! (from the crate's settings); only answers that carry more evidence, or that no setting
//! needs, are defined here.

use std::fmt;

/// One of the runtime's undocumented behaviours the probe answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Question {
    /// Which thread runs the callback during `rkllm_run`.
    CallbackThread,
    /// Whether FINISH follows `rkllm_abort`, and what `rkllm_run` returns then.
    AbortEnding,
    /// The sense of `rkllm_is_running`.
    IsRunningSense,
    /// What WAITING callbacks carry in `text`.
    WaitingText,
    /// What the FINISH callback carries in `text`.
    FinishText,
    /// Whether text (prompt) mode adds BOS by itself.
    Bos,
    /// Whether generation stops by itself at Gemma's `<end_of_turn>` (107).
    EndOfTurn,
    /// What a prompt longer than `max_context_len` does.
    ContextOverflow,
    /// Whether a second model can load in the same process.
    SecondModel,
    /// Whether a loaded prompt cache's prefix is reused (time to first token).
    PromptCache,
}

impl Question {
    /// Every question, in report order.
    pub const ALL: [Question; 10] = [
        Question::CallbackThread,
        Question::AbortEnding,
        Question::IsRunningSense,
        Question::WaitingText,
        Question::FinishText,
        Question::Bos,
        Question::EndOfTurn,
        Question::ContextOverflow,
        Question::SecondModel,
        Question::PromptCache,
    ];

    /// A short label, as in the report.
    pub fn label(self) -> &'static str {
        match self {
            Question::CallbackThread => "callback thread",
            Question::AbortEnding => "end of an aborted run",
            Question::IsRunningSense => "rkllm_is_running sense",
            Question::WaitingText => "WAITING text",
            Question::FinishText => "FINISH text",
            Question::Bos => "BOS in text mode",
            Question::EndOfTurn => "stop at <end_of_turn>",
            Question::ContextOverflow => "prompt over max_context_len",
            Question::SecondModel => "second model in-process",
            Question::PromptCache => "prompt cache reuse",
        }
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What an experiment concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<A> {
    /// The runtime's behaviour, established.
    Known(A),
    /// The experiment ran but cannot decide; the evidence says what was seen.
    Unclear,
    /// The experiment could not run to its end (the reason).
    Failed(String),
    /// Not asked ([`ProbeConfig::skip`](super::ProbeConfig::skip)).
    Skipped,
}

/// An answer and the observations behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<A> {
    /// The conclusion.
    pub verdict: Verdict<A>,
    /// What was observed, in words a bug report can quote.
    pub evidence: String,
}

impl<A> Finding<A> {
    /// A known answer.
    pub(crate) fn known(answer: A, evidence: impl Into<String>) -> Self {
        Finding {
            verdict: Verdict::Known(answer),
            evidence: evidence.into(),
        }
    }

    /// An undecided answer.
    pub(crate) fn unclear(evidence: impl Into<String>) -> Self {
        Finding {
            verdict: Verdict::Unclear,
            evidence: evidence.into(),
        }
    }

    /// A failed experiment.
    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Finding {
            verdict: Verdict::Failed(reason.clone()),
            evidence: reason,
        }
    }

    /// A question not asked.
    pub(crate) fn skipped() -> Self {
        Finding {
            verdict: Verdict::Skipped,
            evidence: "skipped".to_owned(),
        }
    }

    /// The answer, when known.
    pub fn answer(&self) -> Option<&A> {
        match &self.verdict {
            Verdict::Known(a) => Some(a),
            _ => None,
        }
    }
}

impl<A: fmt::Display> fmt::Display for Finding<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Known(a) => write!(f, "{a}")?,
            Verdict::Unclear => f.write_str("UNCLEAR")?,
            Verdict::Failed(_) => f.write_str("FAILED")?,
            Verdict::Skipped => return f.write_str("skipped"),
        }
        write!(f, " — {}", self.evidence)
    }
}

/// How the runtime ends a run that `rkllm_abort` interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortEnding {
    /// Whether a FINISH callback still arrived.
    pub finish_callback: bool,
    /// Whether an ERROR callback arrived.
    pub error_callback: bool,
    /// What `rkllm_run` returned.
    pub return_code: i32,
}

impl fmt::Display for AbortEnding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "FINISH {}, ERROR {}, rkllm_run returns {}",
            yes(self.finish_callback),
            yes(self.error_callback),
            self.return_code
        )
    }
}

/// Whether generation stops by itself at Gemma's `<end_of_turn>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndOfTurn {
    /// The run ends right after `<end_of_turn>`.
    StopsAfterEndOfTurn,
    /// More tokens follow `<end_of_turn>`.
    ContinuesPastEndOfTurn,
}

impl fmt::Display for EndOfTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndOfTurn::StopsAfterEndOfTurn => "stops right after <end_of_turn>",
            EndOfTurn::ContinuesPastEndOfTurn => "continues past <end_of_turn>",
        })
    }
}

/// The times to first token measured by the prompt-cache experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheTiming {
    /// Without the cache.
    pub uncached: std::time::Duration,
    /// With the prefix cache loaded.
    pub cached: std::time::Duration,
}

impl CacheTiming {
    /// `cached / uncached` (below 1 = the cache helped).
    pub fn ratio(&self) -> f64 {
        let u = self.uncached.as_secs_f64();
        if u > 0.0 {
            self.cached.as_secs_f64() / u
        } else {
            1.0
        }
    }
}

/// What a prompt cache costs on this board, measured by the prompt-cache experiment: the
/// saved file's size per prompt token, and the time its save and its load took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredCacheCost {
    /// Prompt tokens the saved cache covers (the prefix's prefill, from the runtime's table).
    pub prompt_tokens: usize,
    /// The saved file's size.
    pub file_bytes: u64,
    /// From the save run's last callback to `rkllm_run` returning: writing the file.
    pub save: std::time::Duration,
    /// The `rkllm_load_prompt_cache` call.
    pub load: std::time::Duration,
    /// Prefill time per prompt token, from the uncached run (time to first token over its
    /// prompt tokens).
    pub prefill_seconds_per_token: f64,
}

impl MeasuredCacheCost {
    /// Cache bytes per prompt token.
    pub fn bytes_per_token(&self) -> f64 {
        self.file_bytes as f64 / self.prompt_tokens.max(1) as f64
    }

    /// The disk's write speed where the cache went, bytes per second.
    pub fn write_bytes_per_second(&self) -> f64 {
        self.file_bytes as f64 / self.save.as_secs_f64().max(1e-9)
    }

    /// The disk's read speed where the cache went, bytes per second.
    pub fn read_bytes_per_second(&self) -> f64 {
        self.file_bytes as f64 / self.load.as_secs_f64().max(1e-9)
    }

    /// The cost model these figures make.
    pub(crate) fn reuse_cost(&self) -> crate::chat::prefix_store::ReuseCost {
        crate::chat::prefix_store::ReuseCost {
            prefill_seconds_per_token: self.prefill_seconds_per_token,
            cache_bytes_per_token: self.bytes_per_token(),
            read_bytes_per_second: self.read_bytes_per_second(),
            write_bytes_per_second: self.write_bytes_per_second(),
        }
    }

    /// Whether loading a cache costs less than prefilling what it covers on this disk.
    pub fn load_pays(&self) -> bool {
        self.reuse_cost().should_reuse(self.prompt_tokens.max(1))
    }

    /// Whether saving each chat turn for the next one to load pays (one reuse per save, the
    /// rolling cache's pattern).
    pub fn rolling_pays(&self) -> bool {
        self.reuse_cost()
            .should_save(self.prompt_tokens.max(1), 1.0)
    }

    /// What to set: the figures for `PromptCacheConfig`, and a disk budget for a few long
    /// conversations, or the advice to keep the cache off this disk.
    pub fn advice(&self) -> String {
        let per_token = self.bytes_per_token();
        let conversation = 2_000.0 * per_token;
        let figures = format!(
            "PromptCacheConfig::disk_bytes_per_second({:.0}).cache_bytes_per_token({:.0})",
            self.read_bytes_per_second()
                .min(self.write_bytes_per_second()),
            per_token
        );
        if !self.load_pays() {
            format!(
                "a cache costs more to read ({:.1} ms per token) than to prefill ({:.1} ms):                  keep the prompt cache off this disk, or move it to faster storage ({figures})",
                per_token / self.read_bytes_per_second() * 1e3,
                self.prefill_seconds_per_token * 1e3
            )
        } else {
            format!(
                "{figures}; budget_bytes({:.0}) holds four 2,000-token conversations ({:.0} MB \
                 each){}",
                4.0 * conversation,
                conversation / 1e6,
                if self.rolling_pays() {
                    ""
                } else {
                    "; saving every turn does not pay here, storing a shared system prefix does"
                }
            )
        }
    }
}
