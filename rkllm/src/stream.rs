//! The token stream of a run, and its collected form.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::error::{Error, Result};
use crate::ffi::callback::Event;
use crate::ffi::handle::{Handle, RunTicket};
use crate::ffi::AbortHandle;
use crate::hidden::HiddenStates;
use crate::settings::{RuntimeSettings, WaitingText};
use crate::stop::{StopMatcher, StopOutcome};
use crate::utf8::Utf8Assembler;

/// One generated token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Token {
    /// The token id.
    pub id: i32,
    /// Complete UTF-8 text that this token made available. Empty when the token carried only
    /// part of a character (completed by a later token), or special-token text the runtime
    /// hides. With stop strings, text that may begin one is held back, and tokens are
    /// delivered once their text is decided; concatenating every token's text gives the
    /// output exactly.
    pub text: String,
    /// When the runtime's callback delivered the token (for latency measurements).
    pub delivered_at: Instant,
}

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// The runtime ended the run (end of sequence, its `max_new_tokens`, or the context).
    Finished,
    /// [`GenerateOptions::max_tokens`](crate::GenerateOptions::max_tokens) was reached.
    MaxTokens,
    /// A stop token id was generated.
    StopToken(i32),
    /// A stop string was generated (and cut from the output).
    StopString(String),
    /// The run was aborted ([`AbortHandle`](crate::AbortHandle), or the stream was dropped).
    Aborted,
    /// The run failed; the stream yielded the error.
    Error,
}

/// Timings measured on this side (the 1.1.1 runtime reports none), from the instants the
/// runtime's callback delivered each token, not from when the consumer read it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// From the call that started the run to the first token: the prefill (for
    /// [`Session::chat`](crate::Session::chat), also preparing the prompt and its cache).
    pub time_to_first_token: Option<Duration>,
    /// From the first token to the last one.
    pub decode: Duration,
    /// From the start of the run until the runtime returned.
    pub total: Duration,
    /// Prompt tokens, when known on this side (token and embedding inputs).
    pub prompt_tokens: Option<usize>,
    /// Tokens generated.
    pub generated_tokens: usize,
}

impl Timings {
    /// Decode rate in tokens per second (the tokens after the first, over the decode time).
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let secs = self.decode.as_secs_f64();
        (self.generated_tokens > 1 && secs > 0.0).then(|| (self.generated_tokens - 1) as f64 / secs)
    }

    /// Prefill rate in tokens per second, when the prompt length is known.
    pub fn prefill_tokens_per_second(&self) -> Option<f64> {
        let secs = self.time_to_first_token?.as_secs_f64();
        let n = self.prompt_tokens?;
        (secs > 0.0).then(|| n as f64 / secs)
    }
}

/// A finished run, collected.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Completion {
    /// The generated text (stop strings cut).
    pub text: String,
    /// Generated token ids, in order (a stop token is not included).
    pub token_ids: Vec<i32>,
    /// Why the run stopped.
    pub finish_reason: FinishReason,
    /// Timings measured on this side.
    pub timings: Timings,
}

/// How the runtime ended the run, for diagnostics and the on-board probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunEnd {
    /// Whether a FINISH callback arrived.
    pub finish_callback: bool,
    /// Whether an ERROR callback arrived.
    pub error_callback: bool,
    /// What `rkllm_run` returned.
    pub return_code: i32,
}

/// An item held back while stop strings may still match, with the end offset of the text
/// before and including it.
struct Held {
    item: Result<Token>,
    end: usize,
}

/// The tokens of one run, as they are generated. Created by
/// [`Session::generate`](crate::Session::generate).
///
/// An `Iterator` of `Result<Token>`: errors ([`Error::Run`], [`Error::Call`],
/// [`Error::InvalidUtf8`]) arrive in order, where they happened in the text; after the last
/// item the run has returned. Dropping the stream early aborts the run and waits for the
/// runtime to return (at most the model's
/// [stop timeout](crate::ModelBuilder::stop_timeout)). A panic in the runtime callback is
/// re-raised here, on the consumer's thread.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, FinishReason, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Hello there, friend").write_temp()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let mut session = model.session()?;
/// let mut stream = session.generate("Hi", &GenerateOptions::new().stop_string(","))?;
/// let mut text = String::new();
/// for token in stream.by_ref() {
///     text.push_str(&token?.text);
/// }
/// assert_eq!(text, "Hello there");
/// assert_eq!(stream.finish_reason(), Some(&FinishReason::StopString(",".into())));
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct TokenStream<'s> {
    /// Weak, so a leaked stream (`mem::forget`) does not keep the handle from being
    /// destroyed; the session that the stream borrows keeps it alive meanwhile.
    handle: Weak<Handle>,
    settings: RuntimeSettings,
    run: RunTicket,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    stop_tokens: Vec<i32>,
    max_tokens: Option<usize>,
    queue: VecDeque<Result<Token>>,
    held: VecDeque<Held>,
    text_total: usize,
    text_safe: usize,
    stopping: Option<FinishReason>,
    finish: Option<FinishReason>,
    end: RunEnd,
    hidden: Option<HiddenStates>,
    tokens: usize,
    token_ids: Vec<i32>,
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    ended: Option<Instant>,
    prompt_tokens: Option<usize>,
    /// The stream borrows its session: one run per session at a time.
    _session: PhantomData<&'s mut ()>,
}

impl std::fmt::Debug for TokenStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("tokens", &self.tokens)
            .field("finish", &self.finish)
            .finish_non_exhaustive()
    }
}

/// What a stream is asked to do besides delivering tokens.
pub(crate) struct StreamOptions {
    pub stop_tokens: Vec<i32>,
    pub stop_strings: Vec<String>,
    pub max_tokens: Option<usize>,
    pub prompt_tokens: Option<usize>,
    pub started: Instant,
}

/// How often the consumer looks at the run while waiting for events that may not come (the
/// worker's last event is not sent once delivery was stopped and the channel was full).
const POLL: Duration = Duration::from_millis(100);

impl<'s> TokenStream<'s> {
    pub(crate) fn new(
        handle: &Arc<Handle>,
        settings: RuntimeSettings,
        run: RunTicket,
        options: StreamOptions,
    ) -> TokenStream<'s> {
        TokenStream {
            handle: Arc::downgrade(handle),
            settings,
            run,
            utf8: Utf8Assembler::default(),
            stop: StopMatcher::new(options.stop_strings),
            stop_tokens: options.stop_tokens,
            max_tokens: options.max_tokens,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            text_total: 0,
            text_safe: 0,
            stopping: None,
            finish: None,
            end: RunEnd::default(),
            hidden: None,
            tokens: 0,
            token_ids: Vec::new(),
            started: options.started,
            first: None,
            last: None,
            ended: None,
            prompt_tokens: options.prompt_tokens,
            _session: PhantomData,
        }
    }

    /// Why the run stopped, once it has (after the iterator returned `None`).
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    /// How the runtime ended the run, once it has.
    pub fn run_end(&self) -> Option<RunEnd> {
        self.finish.as_ref().map(|_| self.end)
    }

    /// Stops the run: no more tokens are delivered, and the stream ends with
    /// [`FinishReason::Aborted`].
    pub fn abort(&mut self) {
        if self.finish.is_none() {
            self.request_stop(FinishReason::Aborted);
        }
    }

    /// A handle that stops this run, and only this run, from any thread. Once the run is
    /// over it does nothing.
    pub fn abort_handle(&self) -> AbortHandle {
        let handle = self
            .handle
            .upgrade()
            .expect("the session keeps the handle alive");
        handle.abort_handle(Some(self.run.shared.id()))
    }

    /// Aborts this run (if it is still the current one).
    fn abort_run(&self) {
        if let Some(handle) = self.handle.upgrade() {
            handle.abort(Some(self.run.shared.id()));
        }
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        let end = self.ended.unwrap_or_else(Instant::now);
        Timings {
            time_to_first_token: self
                .first
                .map(|t| t.saturating_duration_since(self.started)),
            decode: match (self.first, self.last) {
                (Some(a), Some(b)) => b.saturating_duration_since(a),
                _ => Duration::ZERO,
            },
            total: end.saturating_duration_since(self.started),
            prompt_tokens: self.prompt_tokens,
            generated_tokens: self.tokens,
        }
    }

    /// Runs to the end and collects the text, token ids, finish reason and timings.
    pub fn complete(mut self) -> Result<Completion> {
        let mut text = String::new();
        for token in self.by_ref() {
            text.push_str(&token?.text);
        }
        Ok(Completion {
            text,
            token_ids: std::mem::take(&mut self.token_ids),
            finish_reason: self.finish.clone().unwrap_or(FinishReason::Finished),
            timings: self.timings(),
        })
    }

    /// Runs to the end and returns the hidden states the run delivered.
    pub(crate) fn into_hidden(mut self) -> Result<HiddenStates> {
        for item in self.by_ref() {
            item?;
        }
        self.hidden.take().ok_or(Error::NoHiddenStates)
    }

    fn request_stop(&mut self, reason: FinishReason) {
        if self.stopping.is_none() {
            self.stopping = Some(reason);
            // Delivery stops before rkllm_abort is called (inside `abort`).
            self.abort_run();
        }
    }

    /// Moves held items whose text is decided to the output queue.
    fn release(&mut self) {
        while let Some(front) = self.held.front() {
            if front.end > self.text_safe {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            self.queue.push_back(held.item);
        }
    }

    fn on_token(&mut self, id: i32, mut bytes: Vec<u8>, waiting: bool, at: Instant) {
        if self.stopping.is_some() {
            return;
        }
        if self.run.shared.abort_requested() {
            // Aborted from another thread (an AbortHandle).
            self.stopping = Some(FinishReason::Aborted);
            return;
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
        if self.stop_tokens.contains(&id) {
            self.request_stop(FinishReason::StopToken(id));
            return;
        }
        self.tokens += 1;
        self.token_ids.push(id);
        if waiting && self.settings.waiting_text == WaitingText::PartialBytesThenWhole {
            // This runtime repeats the whole character in the NORMAL that follows.
            bytes.clear();
        }
        let assembled = self.utf8.push(&bytes);
        let token = Token {
            id,
            text: assembled.text,
            delivered_at: at,
        };
        // Errors stand where their bytes stood: before the token when no text preceded them
        // in it, after it otherwise.
        let (before, after): (Vec<_>, Vec<_>) =
            assembled.invalid.into_iter().partition(|(at, _)| *at == 0);
        let invalid = |v: Vec<(usize, Vec<u8>)>| {
            v.into_iter()
                .map(|(_, bytes)| Err(Error::InvalidUtf8 { bytes }))
                .collect::<Vec<_>>()
        };
        if !self.stop.is_active() {
            self.queue.extend(invalid(before));
            self.queue.push_back(Ok(token));
            self.queue.extend(invalid(after));
        } else {
            let start = self.text_total;
            for item in invalid(before) {
                self.held.push_back(Held { item, end: start });
            }
            let outcome = self.stop.feed(&token.text);
            self.text_total += token.text.len();
            let end = self.text_total;
            self.held.push_back(Held {
                item: Ok(token),
                end,
            });
            for item in invalid(after) {
                self.held.push_back(Held { item, end });
            }
            self.on_stop_outcome(outcome);
        }
        if self.stopping.is_none() && self.max_tokens.is_some_and(|m| self.tokens >= m) {
            self.request_stop(FinishReason::MaxTokens);
        }
    }

    /// Applies what the stop matcher decided; returns the stop string if one matched.
    fn on_stop_outcome(&mut self, outcome: StopOutcome) -> Option<String> {
        match outcome {
            StopOutcome::Continue(safe) => {
                self.text_safe += safe.len();
                self.release();
                None
            }
            StopOutcome::Stopped { text, stop } => {
                self.text_safe += text.len();
                self.release();
                // The token holding the start of the stop string keeps its text before it;
                // everything after it is dropped.
                while let Some(held) = self.held.pop_front() {
                    if let Ok(mut token) = held.item {
                        let start = held.end - token.text.len();
                        token.text.truncate(self.text_safe.saturating_sub(start));
                        self.queue.push_back(Ok(token));
                        break;
                    }
                }
                self.held.clear();
                if self.stopping.is_none() {
                    self.request_stop(FinishReason::StopString(stop.clone()));
                }
                Some(stop)
            }
        }
    }

    fn on_returned(&mut self, code: i32, at: Instant) {
        self.ended = Some(at);
        self.end.return_code = code;
        // Recorded by the callback even when their events were not sent (while draining).
        self.end.finish_callback |= self.run.shared.finish_seen();
        self.end.error_callback |= self.run.shared.error_seen();
        if let Some(handle) = self.handle.upgrade() {
            handle.finish_run(self.run.shared.id());
        }
        if let Some(payload) = self.run.shared.take_panic() {
            self.finish = Some(FinishReason::Error);
            std::panic::resume_unwind(payload);
        }
        if self.stopping.is_none() && self.run.shared.abort_requested() {
            self.stopping = Some(FinishReason::Aborted);
        }
        let (mut finish, end_error) = if let Some(reason) = self.stopping.take() {
            (reason, None)
        } else if self.end.error_callback {
            let tokens = self.tokens;
            (FinishReason::Error, Some(Error::Run { tokens }))
        } else if code != 0 {
            let error = Error::Call {
                func: "rkllm_run",
                code,
            };
            (FinishReason::Error, Some(error))
        } else {
            (FinishReason::Finished, None)
        };
        if !matches!(finish, FinishReason::StopString(_)) {
            // Whatever was held back for stop-string matching is decided now: a stop string
            // complete in it still ends the output there.
            let outcome = self.stop.flush();
            if let Some(stop) = self.on_stop_outcome(outcome) {
                if matches!(finish, FinishReason::Finished | FinishReason::MaxTokens) {
                    finish = FinishReason::StopString(stop);
                }
            }
            self.text_safe = self.text_total;
            self.release();
            if let Some(bytes) = self.utf8.finish() {
                self.queue.push_back(Err(Error::InvalidUtf8 { bytes }));
            }
        }
        // The run's own error comes after everything it produced.
        self.queue.extend(end_error.map(Err));
        self.finish = Some(finish);
    }

    fn next_event(&mut self) -> Event {
        loop {
            match self.run.rx.recv_timeout(POLL) {
                Ok(event) => return event,
                Err(RecvTimeoutError::Timeout) => {
                    if self.stopping.is_some() {
                        // The runtime may not have seen the abort yet (it does not interrupt a
                        // prefill); ask again.
                        self.abort_run();
                    }
                    if let Some(code) = self.run.shared.return_code() {
                        if self.run.rx.is_empty() {
                            return Event::Returned {
                                code,
                                at: Instant::now(),
                            };
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Event::Returned {
                        code: self.run.shared.return_code().unwrap_or(-1),
                        at: Instant::now(),
                    }
                }
            }
        }
    }
}

impl Iterator for TokenStream<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            if self.finish.is_some() {
                return None;
            }
            match self.next_event() {
                Event::Token {
                    id,
                    bytes,
                    waiting,
                    at,
                } => self.on_token(id, bytes, waiting, at),
                Event::Hidden(h) => self.hidden = Some(h),
                Event::Finish => self.end.finish_callback = true,
                Event::Error => self.end.error_callback = true,
                Event::Returned { code, at } => self.on_returned(code, at),
                Event::Panicked => {
                    if let Some(payload) = self.run.shared.take_panic() {
                        std::panic::resume_unwind(payload);
                    }
                }
            }
        }
    }
}

impl Drop for TokenStream<'_> {
    fn drop(&mut self) {
        if self.finish.is_some() {
            return;
        }
        // Stop delivery, abort, and wait for rkllm_run to return, at most the stop timeout
        // (after which the model is marked unusable and its handle leaked, never freed
        // under the runtime).
        if let Some(handle) = self.handle.upgrade() {
            if let Err(e) = handle.stop_run(self.run.shared.id()) {
                log::error!(target: "rkllm", "stopping a dropped run: {e}");
            }
        }
        if self.run.shared.take_panic().is_some() {
            log::error!(target: "rkllm", "the runtime callback panicked during a dropped run");
        }
    }
}
