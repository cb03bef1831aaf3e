//! The probe's report: the runtime's identity, one answer per question with its evidence,
//! and what each answer means for the crate's settings.

use std::fmt;
use std::path::{Path, PathBuf};

use super::answers::{AbortEnding, CacheTiming, EndOfTurn, Finding, MeasuredCacheCost, Question};
use super::ProbeConfig;
use crate::chat;
use crate::diagnosis::Diagnosis;
use crate::settings::{
    AddsBos, CallbackThread, ContextOverflow, FinishText, PromptCacheReuse, RunningSense,
    SecondModel, WaitingText,
};

/// Runs `$body` with `$f` bound to the finding of question `$q` (each has its own type).
macro_rules! each_finding {
    ($report:ident, $q:expr, $f:ident => $body:expr) => {
        match $q {
            Question::CallbackThread => {
                let $f = &mut $report.callback_thread;
                $body
            }
            Question::AbortEnding => {
                let $f = &mut $report.abort_ending;
                $body
            }
            Question::IsRunningSense => {
                let $f = &mut $report.is_running_sense;
                $body
            }
            Question::WaitingText => {
                let $f = &mut $report.waiting_text;
                $body
            }
            Question::FinishText => {
                let $f = &mut $report.finish_text;
                $body
            }
            Question::Bos => {
                let $f = &mut $report.bos;
                $body
            }
            Question::EndOfTurn => {
                let $f = &mut $report.end_of_turn;
                $body
            }
            Question::ContextOverflow => {
                let $f = &mut $report.context_overflow;
                $body
            }
            Question::SecondModel => {
                let $f = &mut $report.second_model;
                $body
            }
            Question::PromptCache => {
                let $f = &mut $report.prompt_cache;
                $body
            }
        }
    };
}

/// Everything the probe found. `Display` prints a report to paste into an issue; each
/// answer also has an accessor, and [`advice`](Self::advice) says which library setting
/// follows from it.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    origin: String,
    mock: bool,
    model: PathBuf,
    init: Diagnosis,
    pub(crate) notes: Vec<String>,
    pub(crate) callback_thread: Finding<CallbackThread>,
    pub(crate) abort_ending: Finding<AbortEnding>,
    pub(crate) is_running_sense: Finding<RunningSense>,
    pub(crate) waiting_text: Finding<WaitingText>,
    pub(crate) finish_text: Finding<FinishText>,
    pub(crate) bos: Finding<AddsBos>,
    pub(crate) end_of_turn: Finding<EndOfTurn>,
    pub(crate) context_overflow: Finding<ContextOverflow>,
    pub(crate) second_model: Finding<SecondModel>,
    pub(crate) prompt_cache: Finding<PromptCacheReuse>,
    pub(crate) cache_timing: Option<CacheTiming>,
    pub(crate) cache_cost: Option<MeasuredCacheCost>,
}

impl ProbeReport {
    pub(crate) fn new(config: &ProbeConfig, init: &Diagnosis) -> ProbeReport {
        let mut notes = Vec::new();
        if init.driver_too_old() {
            notes.push("the runtime warned that the rknpu driver is too old".to_owned());
        }
        ProbeReport {
            origin: config.runtime.origin().to_owned(),
            mock: config.runtime.is_mock(),
            model: config.model.clone(),
            init: init.clone(),
            notes,
            callback_thread: Finding::skipped(),
            abort_ending: Finding::skipped(),
            is_running_sense: Finding::skipped(),
            waiting_text: Finding::skipped(),
            finish_text: Finding::skipped(),
            bos: Finding::skipped(),
            end_of_turn: Finding::skipped(),
            context_overflow: Finding::skipped(),
            second_model: Finding::skipped(),
            prompt_cache: Finding::skipped(),
            cache_timing: None,
            cache_cost: None,
        }
    }

    /// Marks `q` as failed for `reason`.
    pub(crate) fn fail(&mut self, q: Question, reason: &str) {
        each_finding!(self, q, f => *f = Finding::failed(reason));
    }

    /// Marks `q` as not asked.
    pub(crate) fn skip(&mut self, q: Question) {
        each_finding!(self, q, f => *f = Finding::skipped());
        if q == Question::PromptCache {
            self.cache_timing = None;
            self.cache_cost = None;
        }
    }

    /// The runtime's log around init, read into a diagnosis: what the runtime said about
    /// itself (version, driver, platform) and its warnings.
    pub fn init_diagnosis(&self) -> &Diagnosis {
        &self.init
    }

    /// Where the runtime's functions came from (library path, or the mock).
    pub fn runtime_origin(&self) -> &str {
        &self.origin
    }

    /// The model file probed.
    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// Remarks that are no answer (a tokenizer not used, an old driver).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Which thread runs the callback.
    pub fn callback_thread(&self) -> &Finding<CallbackThread> {
        &self.callback_thread
    }

    /// How an aborted run ends.
    pub fn abort_ending(&self) -> &Finding<AbortEnding> {
        &self.abort_ending
    }

    /// The sense of `rkllm_is_running`.
    pub fn is_running_sense(&self) -> &Finding<RunningSense> {
        &self.is_running_sense
    }

    /// What WAITING callbacks carry.
    pub fn waiting_text(&self) -> &Finding<WaitingText> {
        &self.waiting_text
    }

    /// What the FINISH callback carries.
    pub fn finish_text(&self) -> &Finding<FinishText> {
        &self.finish_text
    }

    /// Whether text mode adds BOS.
    pub fn bos(&self) -> &Finding<AddsBos> {
        &self.bos
    }

    /// Whether generation stops at `<end_of_turn>`.
    pub fn end_of_turn(&self) -> &Finding<EndOfTurn> {
        &self.end_of_turn
    }

    /// What an over-long prompt does.
    pub fn context_overflow(&self) -> &Finding<ContextOverflow> {
        &self.context_overflow
    }

    /// Whether a second model loads in-process.
    pub fn second_model(&self) -> &Finding<SecondModel> {
        &self.second_model
    }

    /// Whether the prompt cache helps.
    pub fn prompt_cache(&self) -> &Finding<PromptCacheReuse> {
        &self.prompt_cache
    }

    /// What a prompt cache costs on this board (size per token, save and load time), when
    /// measured.
    pub fn prompt_cache_cost(&self) -> Option<MeasuredCacheCost> {
        self.cache_cost
    }

    /// The times to first token without and with the prompt cache, when measured.
    pub fn prompt_cache_timing(&self) -> Option<CacheTiming> {
        self.cache_timing
    }

    /// The [`chat::Bos`] setting for text-mode prompts on this runtime: `Omit` only when the
    /// runtime always adds BOS itself; `Include` (the default) otherwise, unclear included.
    pub fn recommended_bos(&self) -> chat::Bos {
        match self.bos.answer() {
            Some(AddsBos::Always) => chat::Bos::Omit,
            _ => chat::Bos::Include,
        }
    }

    /// Whether [`Model::runtime_reports_running`](crate::Model::runtime_reports_running),
    /// which assumes `rkllm_is_running` returns 0 while running, reads this runtime right.
    pub fn runtime_reports_running_is_correct(&self) -> Option<bool> {
        self.is_running_sense
            .answer()
            .map(|s| *s == RunningSense::ZeroWhileRunning)
    }

    /// What the answer to `q` means for the crate's settings, in one sentence.
    pub fn advice(&self, q: Question) -> String {
        match q {
            Question::CallbackThread => match self.callback_thread.answer() {
                Some(CallbackThread::Mixed) => "nothing to set, but mixed threads are unexpected: \
                    please report"
                    .into(),
                _ => "nothing to set: the crate hands tokens over a channel from whichever \
                    thread calls back"
                    .into(),
            },
            Question::AbortEnding => "nothing to set: a stream ends with FinishReason::Aborted \
                whatever callbacks and return code follow an abort"
                .into(),
            Question::IsRunningSense => match self.runtime_reports_running_is_correct() {
                Some(true) => "nothing to set: RunningSense::ZeroWhileRunning (the default) \
                    reads this runtime right"
                    .into(),
                Some(false) => "ModelBuilder::running_sense(RunningSense::NonZeroWhileRunning) \
                    (this runtime returns non-zero while running)"
                    .into(),
                None => "do not rely on Model::runtime_reports_running()".into(),
            },
            Question::WaitingText => match self.waiting_text.answer() {
                Some(WaitingText::PartialBytesThenWhole) => "ModelBuilder::waiting_text(\
                    WaitingText::PartialBytesThenWhole) (the NORMAL after a WAITING repeats the \
                    whole character)"
                    .into(),
                _ => "nothing to set: the default (WaitingText::PartialBytes) joins token bytes \
                    and emits only whole UTF-8 characters"
                    .into(),
            },
            Question::FinishText => match self.finish_text.answer() {
                Some(FinishText::Text(_)) => "the crate ignores FINISH text: report this if \
                    it belongs to the output"
                    .into(),
                _ => "nothing to set: the crate ignores FINISH text".into(),
            },
            Question::Bos => match self.bos.answer() {
                Some(AddsBos::Always) => "text mode: Gemma2Template::with_bos(Bos::Omit) \
                    (the runtime adds BOS; Bos::Include would send two); token mode unaffected"
                    .into(),
                Some(AddsBos::UnlessPresent) => "either chat::Bos setting works; keep \
                    Bos::Include (the default)"
                    .into(),
                Some(AddsBos::Never) => "keep chat::Bos::Include (the default): the prompt \
                    must carry <bos>"
                    .into(),
                None => "keep chat::Bos::Include (the default) until this is known".into(),
            },
            Question::EndOfTurn => match self.end_of_turn.answer() {
                Some(EndOfTurn::StopsAfterEndOfTurn) => "GenerateOptions::gemma() is optional \
                    here (the runtime stops by itself); keeping it costs nothing"
                    .into(),
                _ => "always run Gemma with GenerateOptions::gemma() (stop tokens 107 and 1): \
                    the runtime does not stop at <end_of_turn> by itself"
                    .into(),
            },
            Question::ContextOverflow => match self.context_overflow.answer() {
                Some(ContextOverflow::Truncated) => "keep prompts within max_context_len \
                    yourself (chat::Conversation's budget): the runtime silently cuts or \
                    shifts an over-long prompt"
                    .into(),
                Some(ContextOverflow::ErrorCallback) => "keep prompts within \
                    max_context_len (chat::Conversation); an over-long one ends with Error::Run"
                    .into(),
                Some(ContextOverflow::Refused) => "keep prompts within max_context_len \
                    (chat::Conversation); an over-long one fails with Error::Call (rkllm_run)"
                    .into(),
                None => "keep prompts within max_context_len (chat::Conversation)".into(),
            },
            Question::SecondModel => match self.second_model.answer() {
                Some(SecondModel::Works) => "several models can share a process (RAM \
                    permitting)"
                    .into(),
                _ => "one model per process: load another model in another process".into(),
            },
            Question::PromptCache => match (self.prompt_cache.answer(), self.cache_timing) {
                (Some(PromptCacheReuse::Reused), Some(t)) => format!(
                    "Session::load_prompt_cache pays off for a fixed prompt prefix (first \
                     token in {:.0}% of the time){}",
                    t.ratio() * 100.0,
                    self.cache_cost.map_or(String::new(), |c| format!(
                        "; cache cost here: {:.0} bytes per token, saved at {:.1} MB/s, loaded \
                         at {:.1} MB/s; {}",
                        c.bytes_per_token(),
                        c.write_bytes_per_second() / 1e6,
                        c.read_bytes_per_second() / 1e6,
                        c.advice()
                    ))
                ),
                (Some(PromptCacheReuse::NotReused), _) => {
                    "Session::load_prompt_cache gains nothing \
                    on this runtime"
                        .into()
                }
                _ => "no advice: the prompt-cache effect is not known".into(),
            },
        }
    }

    fn line(&self, q: Question) -> String {
        match q {
            Question::CallbackThread => self.callback_thread.to_string(),
            Question::AbortEnding => self.abort_ending.to_string(),
            Question::IsRunningSense => self.is_running_sense.to_string(),
            Question::WaitingText => self.waiting_text.to_string(),
            Question::FinishText => self.finish_text.to_string(),
            Question::Bos => self.bos.to_string(),
            Question::EndOfTurn => self.end_of_turn.to_string(),
            Question::ContextOverflow => self.context_overflow.to_string(),
            Question::SecondModel => self.second_model.to_string(),
            Question::PromptCache => self.prompt_cache.to_string(),
        }
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "RKLLM runtime probe (rkllm {})",
            env!("CARGO_PKG_VERSION")
        )?;
        match self.init.runtime_version() {
            Some(version) => writeln!(
                f,
                "runtime {version}, rknpu driver {}, platform {}",
                self.init.driver_version().unwrap_or("?"),
                self.init.platform().unwrap_or("?")
            )?,
            None => writeln!(f, "runtime version: not printed at init")?,
        }
        writeln!(
            f,
            "library: {}{}",
            self.origin,
            if self.mock {
                " (MOCK, not a board)"
            } else {
                ""
            }
        )?;
        writeln!(f, "model:   {}", self.model.display())?;
        writeln!(f, "\nAnswers")?;
        for q in Question::ALL {
            writeln!(f, "- {q}: {}", self.line(q))?;
        }
        writeln!(f, "\nWhat to set in the rkllm crate")?;
        for q in Question::ALL {
            writeln!(f, "- {q}: {}", self.advice(q))?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "\nNotes")?;
            for n in &self.notes {
                writeln!(f, "- {n}")?;
            }
        }
        Ok(())
    }
}
