//! The token stream of a run, and its collected form.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::builder::WaitingText;
use crate::error::{Error, Result};
use crate::model::ModelInner;
use crate::run::{Event, HiddenStates, RunShared};
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

/// Timings measured on this side (the 1.1.1 runtime reports none).
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

struct Held {
    token: Token,
    end: usize,
}

/// The tokens of one run, as they are generated. Created by
/// [`Session::generate`](crate::Session::generate).
///
/// An `Iterator` of `Result<Token>`: errors ([`Error::Run`], [`Error::Call`],
/// [`Error::InvalidUtf8`]) arrive in order; after the last item the run has returned.
/// Dropping the stream early aborts the run and waits for the runtime to return. A panic
/// in the runtime callback is re-raised here, on the consumer's thread.
pub struct TokenStream<'s> {
    inner: &'s ModelInner,
    rx: Receiver<Event>,
    shared: Arc<RunShared>,
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
}

impl std::fmt::Debug for TokenStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("tokens", &self.tokens)
            .field("finish", &self.finish)
            .finish_non_exhaustive()
    }
}

/// How often an unacknowledged stop is re-sent to the runtime while waiting for it.
const ABORT_RETRY: Duration = Duration::from_millis(100);

impl<'s> TokenStream<'s> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: &'s ModelInner,
        rx: Receiver<Event>,
        shared: Arc<RunShared>,
        stop_tokens: Vec<i32>,
        stop_strings: Vec<String>,
        max_tokens: Option<usize>,
        prompt_tokens: Option<usize>,
        started: Instant,
    ) -> TokenStream<'s> {
        TokenStream {
            inner,
            rx,
            shared,
            utf8: Utf8Assembler::default(),
            stop: StopMatcher::new(stop_strings),
            stop_tokens,
            max_tokens,
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
            started,
            first: None,
            last: None,
            ended: None,
            prompt_tokens,
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

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        let end = self.ended.unwrap_or_else(Instant::now);
        Timings {
            time_to_first_token: self.first.map(|t| t - self.started),
            decode: match (self.first, self.last) {
                (Some(a), Some(b)) => b - a,
                _ => Duration::ZERO,
            },
            total: end - self.started,
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
        self.hidden.take().ok_or(Error::Call {
            func: "rkllm_run (hidden states)",
            code: 0,
        })
    }

    fn request_stop(&mut self, reason: FinishReason) {
        if self.stopping.is_none() {
            self.stopping = Some(reason);
            self.stop_delivery();
            self.inner.abort_state().abort();
        }
    }

    /// From now on the runtime thread sends no tokens and never waits on the channel, so a
    /// `rkllm_abort` that blocks until the run stops cannot deadlock with it.
    fn stop_delivery(&self) {
        self.shared.draining.store(true, Ordering::Release);
        if let Some(active) = self
            .inner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            active.cancel.take();
        }
    }

    fn release(&mut self) {
        while let Some(front) = self.held.front() {
            if front.end > self.text_safe {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            self.queue.push_back(Ok(held.token));
        }
    }

    fn on_token(&mut self, id: i32, mut bytes: Vec<u8>, waiting: bool, at: Instant) {
        if self.stopping.is_some() {
            return;
        }
        if self.inner.abort_state().requested() {
            // Aborted from another thread (an AbortHandle).
            self.stopping = Some(FinishReason::Aborted);
            self.stop_delivery();
            return;
        }
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.stop_tokens.contains(&id) {
            self.request_stop(FinishReason::StopToken(id));
            return;
        }
        self.tokens += 1;
        self.token_ids.push(id);
        if waiting && self.inner.settings().waiting_text == WaitingText::Ignore {
            // This runtime repeats the whole character in the NORMAL that follows.
            bytes.clear();
        }
        let assembled = self.utf8.push(&bytes);
        let text = assembled.text;
        if !self.stop.is_active() {
            self.queue.push_back(Ok(Token {
                id,
                text,
                delivered_at: at,
            }));
        } else {
            self.text_total += text.len();
            let outcome = self.stop.feed(&text);
            self.held.push_back(Held {
                token: Token {
                    id,
                    text,
                    delivered_at: at,
                },
                end: self.text_total,
            });
            match outcome {
                StopOutcome::Continue(safe) => {
                    self.text_safe += safe.len();
                    self.release();
                }
                StopOutcome::Stopped { text, stop } => {
                    self.text_safe += text.len();
                    self.release();
                    // The token holding the start of the stop string keeps its text before it.
                    if let Some(mut held) = self.held.pop_front() {
                        let start = held.end - held.token.text.len();
                        held.token
                            .text
                            .truncate(self.text_safe.saturating_sub(start));
                        self.queue.push_back(Ok(held.token));
                    }
                    self.held.clear();
                    self.request_stop(FinishReason::StopString(stop));
                }
            }
        }
        for bytes in assembled.invalid {
            self.queue.push_back(Err(Error::InvalidUtf8 { bytes }));
        }
        if self.stopping.is_none() && self.max_tokens.is_some_and(|m| self.tokens >= m) {
            self.request_stop(FinishReason::MaxTokens);
        }
    }

    fn on_returned(&mut self, rc: i32) {
        self.ended = Some(Instant::now());
        self.end.return_code = rc;
        // Recorded by the callback even when their events were not sent (while draining).
        self.end.finish_callback |= self.shared.finish_seen.load(Ordering::Acquire);
        self.end.error_callback |= self.shared.error_seen.load(Ordering::Acquire);
        self.inner.join_active();
        if let Some(payload) = self.shared.take_panic() {
            self.finish = Some(FinishReason::Error);
            std::panic::resume_unwind(payload);
        }
        if self.stopping.is_none() && self.inner.abort_state().requested() {
            self.stopping = Some(FinishReason::Aborted);
        }
        let finish = if let Some(reason) = self.stopping.take() {
            reason
        } else if self.end.error_callback {
            self.queue.push_back(Err(Error::Run {
                tokens: self.tokens,
            }));
            FinishReason::Error
        } else if rc != 0 {
            self.queue.push_back(Err(Error::Call {
                func: "rkllm_run",
                code: rc,
            }));
            FinishReason::Error
        } else {
            FinishReason::Finished
        };
        if !matches!(finish, FinishReason::StopString(_)) {
            // Whatever was held back for stop-string matching is output after all.
            let rest = self.stop.flush();
            self.text_safe += rest.len();
            self.release();
            if let Some(bytes) = self.utf8.finish() {
                self.queue.push_back(Err(Error::InvalidUtf8 { bytes }));
            }
        }
        self.finish = Some(finish);
    }

    fn next_event(&mut self) -> Event {
        loop {
            match self.rx.recv_timeout(ABORT_RETRY) {
                Ok(event) => return event,
                Err(RecvTimeoutError::Timeout) => {
                    if self.stopping.is_some() {
                        // The runtime may not have seen the abort yet (it does not interrupt a
                        // prefill); ask again.
                        self.inner.abort_state().abort();
                    }
                    if self.inner.active_finished() && self.rx.is_empty() {
                        // The worker has ended without its Returned event reaching the
                        // channel (it is not sent once delivery was stopped and the channel
                        // was full): the return code is recorded on the side.
                        return Event::Returned(self.recorded_return_code());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Event::Returned(self.recorded_return_code())
                }
            }
        }
    }
}

impl TokenStream<'_> {
    fn recorded_return_code(&self) -> i32 {
        self.shared
            .return_code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(-1)
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
                Event::Returned(rc) => self.on_returned(rc),
                Event::Panicked => {
                    if let Some(payload) = self.shared.take_panic() {
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
        // Stop delivery (releasing a callback blocked on the channel), stop the run, and
        // wait for rkllm_run to return, asking again while the runtime has not reacted.
        self.stop_delivery();
        self.inner.abort_state().abort();
        let mut waited = Duration::ZERO;
        while !self.inner.active_finished() {
            // Drain so the runtime thread is never stuck on a full channel.
            while self.rx.try_recv().is_ok() {}
            std::thread::sleep(Duration::from_millis(1));
            waited += Duration::from_millis(1);
            if waited >= ABORT_RETRY {
                waited = Duration::ZERO;
                self.inner.abort_state().abort();
            }
        }
        self.inner.join_active();
        if self.shared.take_panic().is_some() {
            log::error!(target: "rkllm", "the runtime callback panicked during a dropped run");
        }
    }
}
