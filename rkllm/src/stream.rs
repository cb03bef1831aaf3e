//! What a run delivers (its tokens, how it ended, its timings) and the state that turns the
//! runtime's callbacks into them ([`RunCore`]); the stream type itself is
//! [`TokenStream`](crate::TokenStream), in `session`.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

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
    pub id: u32,
    /// Complete UTF-8 text that this token made available, never empty: a token whose text
    /// is empty (part of a character completed by a later token, or special-token text the
    /// runtime hides) is not yielded at all; its id is still counted in
    /// [`Timings::generated_tokens`] and listed in [`Completion::token_ids`] and
    /// [`TokenStream::token_ids`](crate::TokenStream::token_ids). With stop strings, text that may begin one is held back,
    /// and tokens are delivered once their text is decided; concatenating every token's text
    /// gives the output exactly.
    pub text: String,
    /// When the runtime's callback delivered the token (for latency measurements).
    pub delivered_at: Instant,
}

/// Why a run stopped.
///
/// How a server maps it (see [`FinishReason::openai`]): [`Finished`](Self::Finished),
/// [`EndOfTurn`](Self::EndOfTurn), [`StopToken`](Self::StopToken) and
/// [`StopString`](Self::StopString) are a clean `stop`; [`MaxTokens`](Self::MaxTokens) is
/// `length`; [`Aborted`](Self::Aborted) and [`Error`](Self::Error) stay distinct.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// The runtime ended the run (end of sequence, its `max_new_tokens`, or the context).
    Finished,
    /// The model ended its turn: one of the run's end tokens
    /// ([`GenerateOptions::end_token`](crate::GenerateOptions::end_token)) was generated. A
    /// chat turn ([`Session::chat`](crate::Session::chat)) ends at its template's end tokens
    /// by itself. The end token is not part of the output.
    EndOfTurn,
    /// [`GenerateOptions::max_tokens`](crate::GenerateOptions::max_tokens) was reached.
    MaxTokens,
    /// A stop token id chosen with
    /// [`GenerateOptions::stop_token`](crate::GenerateOptions::stop_token) was generated
    /// (an end token gives [`EndOfTurn`](Self::EndOfTurn) instead).
    StopToken(u32),
    /// A stop string was generated (and cut from the output).
    StopString(String),
    /// The run was aborted ([`AbortHandle`](crate::AbortHandle), or the stream was dropped).
    Aborted,
    /// The run failed; the stream yielded the error.
    Error,
}

impl FinishReason {
    /// The OpenAI `finish_reason` this maps to: `"stop"` for a clean end (end of turn or
    /// sequence, a stop token or string), `"length"` for the token budget, and `"abort"` /
    /// `"error"` for the two ends that are not a finished reply (an OpenAI-compatible server
    /// usually sends no reply for those).
    pub fn openai(&self) -> &'static str {
        match self {
            FinishReason::Finished
            | FinishReason::EndOfTurn
            | FinishReason::StopToken(_)
            | FinishReason::StopString(_) => "stop",
            FinishReason::MaxTokens => "length",
            FinishReason::Aborted => "abort",
            FinishReason::Error => "error",
        }
    }
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
    /// Prompt tokens: exact for token and embedding inputs (and for a chat turn whose
    /// conversation has a tokenizer), an estimate for text prompts (see
    /// [`prompt_tokens_estimated`](Self::prompt_tokens_estimated)); `None` when not even an
    /// estimate is possible.
    pub prompt_tokens: Option<usize>,
    /// Whether [`prompt_tokens`](Self::prompt_tokens) is an estimate: a text prompt's
    /// length is not known on this side without a tokenizer, so it is estimated at one token
    /// per four UTF-8 bytes (about right for English with common tokenizers; special
    /// tokens of a chat prompt count as their text).
    pub prompt_tokens_estimated: bool,
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
    pub token_ids: Vec<u32>,
    /// Why the run stopped.
    pub finish_reason: FinishReason,
    /// Timings measured on this side.
    pub timings: Timings,
    /// A reasoning model's chain of thought (its `<think>…</think>` block), when a chat turn
    /// with a model's own template produced one: then `text` is the answer after it. `None`
    /// for every other run (whose `text` is the whole output).
    pub reasoning: Option<String>,
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

/// A run that could not start, with what it was given back, so nothing is lost (a
/// [`ChatSession`](crate::chat::ChatSession)'s prompt cache, a conversation). Converts into
/// its [`Error`] with `?`. Boxed, so a `Result` carrying it stays small.
#[derive(Debug)]
pub struct Refused<T> {
    inner: Box<(Error, T)>,
}

impl<T> Refused<T> {
    pub(crate) fn new(error: Error, returned: T) -> Refused<T> {
        Refused {
            inner: Box::new((error, returned)),
        }
    }

    /// Why the run did not start.
    pub fn error(&self) -> &Error {
        &self.inner.0
    }

    /// What the run was given, unchanged.
    pub fn into_returned(self) -> T {
        self.inner.1
    }

    /// Both.
    pub fn into_parts(self) -> (Error, T) {
        *self.inner
    }
}

impl<T> std::fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

impl<T: std::fmt::Debug> std::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl<T> From<Refused<T>> for Error {
    fn from(refused: Refused<T>) -> Error {
        refused.into_parts().0
    }
}

/// The state of one run as its consumer sees it, without a lifetime: the token processing
/// shared by [`TokenStream`] and the chat stream, blocking and async alike.
pub(crate) struct RunCore {
    /// Weak, so a leaked stream (`mem::forget`) does not keep the handle from being
    /// destroyed; the session that the stream borrows keeps it alive meanwhile.
    handle: Weak<Handle>,
    settings: RuntimeSettings,
    run: RunTicket,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    stop_tokens: Vec<u32>,
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
    token_ids: Vec<u32>,
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    ended: Option<Instant>,
    prompt_tokens: Option<usize>,
    prompt_estimated: bool,
    /// Ids that end a turn ([`FinishReason::EndOfTurn`]).
    end_tokens: Vec<u32>,
}

/// What a stream is asked to do besides delivering tokens.
pub(crate) struct StreamOptions {
    pub stop_tokens: Vec<u32>,
    pub stop_strings: Vec<String>,
    pub max_tokens: Option<usize>,
    pub prompt_tokens: Option<usize>,
    pub prompt_estimated: bool,
    pub end_tokens: Vec<u32>,
    pub started: Instant,
}

/// How often the consumer looks at the run while waiting for events that may not come (the
/// worker's last event is not sent once delivery was stopped and the channel was full).
const POLL: Duration = Duration::from_millis(100);

impl RunCore {
    pub(crate) fn new(
        handle: &Arc<Handle>,
        settings: RuntimeSettings,
        run: RunTicket,
        options: StreamOptions,
    ) -> RunCore {
        RunCore {
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
            prompt_estimated: options.prompt_estimated,
            end_tokens: options.end_tokens,
        }
    }

    /// Generated token ids so far, in order (stop and end tokens not included).
    pub(crate) fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    pub(crate) fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    pub(crate) fn run_end(&self) -> Option<RunEnd> {
        self.finish.as_ref().map(|_| self.end)
    }

    pub(crate) fn abort(&mut self) {
        if self.finish.is_none() {
            self.request_stop(FinishReason::Aborted);
        }
    }

    pub(crate) fn abort_handle(&self) -> AbortHandle {
        let handle = self
            .handle
            .upgrade()
            .expect("the session keeps the handle alive");
        handle.abort_handle(Some(self.run.shared.id()))
    }

    /// Asks the runtime to stop this run (if it is still the current one), without waiting:
    /// delivery stops at once, and `rkllm_abort` (which may block until the run has
    /// stopped) is called on a thread of its own.
    fn abort_run(&self) {
        if let Some(handle) = self.handle.upgrade() {
            handle.stop_in_background(self.run.shared.id());
        }
    }

    /// Stops the run and waits for the runtime to return, at most the stop timeout; the
    /// stream's items up to the end are then processed.
    pub(crate) fn stop(&mut self) -> Result<()> {
        if self.finish.is_some() {
            return Ok(());
        }
        self.abort();
        if let Some(handle) = self.handle.upgrade() {
            if let Err(e) = handle.stop_run(self.run.shared.id()) {
                self.finish = Some(FinishReason::Error);
                return Err(e);
            }
        }
        // The run has returned: what is left in the channel is read without waiting for it.
        while self.next_blocking().is_some() {}
        Ok(())
    }

    /// The async form of [`stop`](Self::stop): `Ready` once the run has returned, or with
    /// [`Error::ModelUnusable`] once the stop timeout has passed.
    pub(crate) fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.finish.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.abort();
        loop {
            match self.poll_item(cx) {
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        let Some(handle) = self.handle.upgrade() else {
            // The handle is gone: its drop stopped the run.
            return Poll::Ready(Ok(()));
        };
        let id = self.run.shared.id();
        match handle.stop_deadline(id) {
            Some(deadline) if Instant::now() < deadline => {
                crate::wait::wake_at(deadline, cx.waker().clone());
                Poll::Pending
            }
            // The deadline has passed (or the stop could not be bounded): settle it now.
            _ => match handle.stop_run(id) {
                Ok(()) => {
                    while self.next_blocking().is_some() {}
                    Poll::Ready(Ok(()))
                }
                Err(e) => {
                    self.finish = Some(FinishReason::Error);
                    Poll::Ready(Err(e))
                }
            },
        }
    }

    pub(crate) fn timings(&self) -> Timings {
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
            prompt_tokens_estimated: self.prompt_estimated && self.prompt_tokens.is_some(),
            generated_tokens: self.tokens,
        }
    }

    /// Runs to the end and collects the text, token ids, finish reason and timings.
    pub(crate) fn complete(&mut self) -> Result<Completion> {
        let mut text = String::new();
        while let Some(token) = self.next_blocking() {
            text.push_str(&token?.text);
        }
        Ok(self.completion(text))
    }

    /// The collected form of a finished run whose text was `text`.
    pub(crate) fn completion(&mut self, text: String) -> Completion {
        Completion {
            text,
            token_ids: std::mem::take(&mut self.token_ids),
            finish_reason: self.finish.clone().unwrap_or(FinishReason::Finished),
            timings: self.timings(),
            reasoning: None,
        }
    }

    /// Runs to the end and returns the hidden states the run delivered.
    pub(crate) fn take_hidden(&mut self) -> Result<HiddenStates> {
        while let Some(item) = self.next_blocking() {
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
        // Ids cross the seam as the runtime's int32; a negative one is no token of any
        // vocabulary.
        let Ok(id) = u32::try_from(id) else {
            self.queue.push_back(Err(Error::Call {
                func: "the runtime's token callback (token_id)",
                code: id,
            }));
            return;
        };
        if self.run.shared.abort_requested() {
            // Aborted from another thread (an AbortHandle).
            self.stopping = Some(FinishReason::Aborted);
            return;
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
        if self.end_tokens.contains(&id) {
            self.request_stop(FinishReason::EndOfTurn);
            return;
        }
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
                    // The stopper thread asks the runtime again to stop, if it must.
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

impl RunCore {
    /// The next item to hand out: `Some(Some(item))`, `Some(None)` once the run is over, or
    /// `None` when an event is needed first. Tokens with empty text are skipped here.
    fn ready(&mut self) -> Option<Option<Result<Token>>> {
        while let Some(item) = self.queue.pop_front() {
            match item {
                Ok(token) if token.text.is_empty() => continue,
                item => return Some(Some(item)),
            }
        }
        self.finish.is_some().then_some(None)
    }

    fn on_event(&mut self, event: Event) {
        match event {
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

    /// The next item, blocking this thread until it is there (the iterator's `next`).
    pub(crate) fn next_blocking(&mut self) -> Option<Result<Token>> {
        loop {
            if let Some(item) = self.ready() {
                return item;
            }
            let event = self.next_event();
            self.on_event(event);
        }
    }

    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    /// An event if one is there, without blocking.
    fn try_event(&mut self) -> Option<Event> {
        match self.run.rx.try_recv() {
            Ok(event) => Some(event),
            Err(TryRecvError::Empty) => {
                let code = self.run.shared.return_code()?;
                // The worker's last event may not have been sent (delivery stopped while the
                // channel was full); the run is over once the channel is drained.
                self.run.rx.is_empty().then(|| Event::Returned {
                    code,
                    at: Instant::now(),
                })
            }
            Err(TryRecvError::Disconnected) => Some(Event::Returned {
                code: self.run.shared.return_code().unwrap_or(-1),
                at: Instant::now(),
            }),
        }
    }

    /// The next item for an async consumer: never blocks; registers the task's waker with
    /// the run when nothing is there (and looks again afterwards, so a token that arrived
    /// in between is not missed).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Token>>> {
        loop {
            if let Some(item) = self.ready() {
                return Poll::Ready(item);
            }
            if let Some(event) = self.try_event() {
                self.on_event(event);
                continue;
            }
            // The worker wakes it when rkllm_run returns, even once delivery has stopped; the
            // stopper thread asks the runtime again to stop, if it must.
            self.run.shared.set_waker(cx.waker());
            if let Some(event) = self.try_event() {
                self.on_event(event);
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for RunCore {
    fn drop(&mut self) {
        if self.finish.is_some() {
            return;
        }
        // Never blocks: delivery stops and the runtime is asked to abort on a thread of its
        // own. The handle's next call (or its drop) waits for rkllm_run to return, at most
        // the stop timeout from now (after which the model is marked unusable and its
        // handle leaked, never freed under the runtime).
        self.abort_run();
        if self.run.shared.take_panic().is_some() {
            log::error!(target: "rkllm", "the runtime callback panicked during a dropped run");
        }
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use crate::mock::MockModel;
    use crate::{GenerateOptions, Model, Runtime};

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn slow_model() -> Model {
        let file = MockModel::new()
            .answer("a b c d e f g h i j k l m n o p")
            .decode_seconds_per_token(0.02)
            .write_temp_file()
            .unwrap();
        Model::builder(&*file)
            .runtime(Runtime::mock())
            .build()
            .unwrap()
    }

    /// A panic in the runtime callback is re-raised where the stream is consumed, by the
    /// blocking iterator and by the async poll alike, and the run is stopped after it.
    #[test]
    fn a_callback_panic_is_re_raised_by_the_iterator_and_by_poll() {
        let _runs = crate::ffi::callback::lock(&crate::ffi::callback::tests::MODEL_RUNS);
        let model = slow_model();
        let mut session = model.session().unwrap();
        for async_poll in [false, true] {
            let mut core = session
                .start_core("q".into(), &GenerateOptions::new(), false)
                .unwrap();
            core.run
                .shared
                .inject_panic(Box::new("injected callback panic"));
            let waker = Waker::from(Arc::new(Noop));
            let caught = catch_unwind(AssertUnwindSafe(|| loop {
                let item = if async_poll {
                    match core.poll_item(&mut Context::from_waker(&waker)) {
                        Poll::Ready(item) => item,
                        Poll::Pending => continue,
                    }
                } else {
                    core.next_blocking()
                };
                if item.is_none() {
                    break;
                }
            }));
            let payload = caught.expect_err("the panic is re-raised");
            assert_eq!(
                payload.downcast_ref::<&str>(),
                Some(&"injected callback panic"),
                "async: {async_poll}"
            );
            // Dropping the stream stops the run; the session runs again.
            drop(core);
        }
        let done = session.complete("q", &GenerateOptions::new()).unwrap();
        assert_eq!(done.text, "a b c d e f g h i j k l m n o p");
    }
}
