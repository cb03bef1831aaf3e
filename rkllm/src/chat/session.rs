//! Chat on a session: a [`Conversation`] turn streamed from the model
//! ([`Session::chat`]), and [`ChatSession`], a session with the opt-in prompt cache
//! (`chat::cache`) that keeps multi-turn chat fast on 1.1.1.
//!
//! The cache's state lives in the [`ChatSession`]: a server keeps one `ChatSession` for its
//! model (the runtime runs one inference at a time anyway), not one per request, or every
//! request starts with a cold cache.

use std::ops::{Deref, DerefMut};

use super::cache::{
    to_input, CacheEstimates, ChatCacheStats, PendingTurn, PromptCacheConfig, PromptCacheState,
};
use super::prefix_store::Prefix;
use super::Conversation;
use crate::error::Result;
use crate::input::{GenerateOptions, Input, GEMMA_END_OF_TURN, GEMMA_EOS};
use crate::session::Session;
use crate::stream::{Completion, FinishReason, Timings, Token, TokenStream};

impl Session {
    /// Adds `user` to `conversation`, runs the model on the whole conversation (kept within
    /// its budget), and streams the reply. The reply is added to the conversation when the
    /// stream ends or is dropped.
    ///
    /// The prompt goes as token ids when the conversation has a tokenizer (recommended for
    /// Gemma: it settles who adds BOS and keeps message text from injecting control tokens),
    /// as text otherwise. Generation stops at Gemma's `<end_of_turn>` and `<eos>` in
    /// addition to `options`' own conditions.
    ///
    /// What the conversation keeps: a reply that ended normally, by a stop condition or by
    /// an abort is added as the assistant's turn (an aborted reply is kept as far as it got,
    /// so the history matches what the user saw). When the run fails, the user message is
    /// taken back out, so the turn can be retried.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
    /// use rkllm::chat::{Conversation, SystemStyle};
    /// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
    /// let path = MockModel::new().answer("Arr, hello!").write_temp_file()?;
    /// let model = Model::builder(&path).runtime(Runtime::mock()).build()?;
    /// let mut session = model.session()?;
    /// let mut chat = Conversation::new(SystemStyle::Merge);
    /// chat.set_system("You are a pirate.");
    /// let reply = session.chat(&mut chat, "Hello", &GenerateOptions::new())?.complete()?;
    /// assert_eq!(reply.text, "Arr, hello!");
    /// assert_eq!(chat.messages().len(), 3); // system, user, assistant
    /// # Ok(()) }
    /// # #[cfg(not(feature = "mock"))] fn main() {}
    /// ```
    pub fn chat<'s>(
        &'s mut self,
        conversation: &'s mut Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> Result<ChatStream<'s>> {
        // Timings include preparing the prompt and the cache: both delay the first token.
        let started = std::time::Instant::now();
        conversation.push_user(user)?;
        let prepared = prompt_of(conversation).and_then(|p| to_input(&p));
        let started_stream = prepared
            .and_then(|input| self.start_stream(input, &chat_options(options), false, started));
        match started_stream {
            Ok(stream) => Ok(ChatStream {
                stream,
                conversation,
                cache: None,
                pending: None,
                reply: String::new(),
                finished: false,
                failed: false,
            }),
            Err(e) => {
                conversation.pop();
                Err(e)
            }
        }
    }
}

/// The options of a chat turn: the caller's, plus Gemma's end-of-turn and end-of-sequence.
fn chat_options(options: &GenerateOptions) -> GenerateOptions {
    options
        .clone()
        .stop_token(GEMMA_END_OF_TURN)
        .stop_token(GEMMA_EOS)
}

impl Deref for ChatSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until into_session")
    }
}

impl DerefMut for ChatSession {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until into_session")
    }
}

impl Drop for ChatSession {
    fn drop(&mut self) {
        if self.session.is_none() {
            return;
        }
        if let Err(e) = self.disable_prompt_cache() {
            log::warn!(target: "rkllm", "cleaning up the chat prompt cache: {e}");
        }
    }
}

/// A [`Session`] with the prompt cache for multi-turn chat. It dereferences to the
/// session, so every run of the session is at hand; [`chat`](ChatSession::chat) runs a turn
/// through the cache once it is enabled.
///
/// The cache's state lives here: a server keeps one `ChatSession` for its model (the
/// runtime runs one inference at a time anyway), not one per request, or every request
/// starts with a cold cache.
///
/// ## Why a prompt cache
///
/// The 1.1.1 runtime keeps nothing between runs, so every chat turn prefills the whole
/// conversation again and the time to first token grows with the history. Its one lever is
/// the prompt cache: a run can save its prompt's prefill to a file, and a loaded cache makes
/// a later run skip the longest prefix it shares with the cached prompt. Each chat turn's
/// prompt begins with the previous turn's prompt (history only grows at the end), so:
///
/// 1. turn N runs with `save_prompt_cache` = a fresh file: the prefill of prompt N;
/// 2. before turn N+1, the longest stored prompt that turn N+1 begins with is loaded (the
///    loaded one released when it differs);
/// 3. when nothing stored begins the new prompt (history trimmed, system prompt or template
///    changed, messages popped or edited), the turn prefills in full, saving a new one.
///
/// [`PromptCacheConfig::new`] keeps several files, within a disk budget, least recently used
/// evicted first: interleaved conversations each find their own latest turn, and a prefix
/// stored with [`store_system_prefix`](ChatSession::store_system_prefix) serves every new
/// conversation with that system prompt, across restarts (keyed by the model file, the
/// runtime version and the template; files that changed are refused). It weighs each load
/// and save against the prefill it saves, at the speeds it measures (see
/// [`PromptCacheConfig`] and [`cache_estimates`](ChatSession::cache_estimates)), so on a slow
/// disk it stops using the cache rather than make turns slower. [`PromptCacheConfig::rolling`]
/// keeps one file, the last turn's, and always uses it.
///
/// Correctness never depends on the cache: the prompt sent is always the whole
/// conversation, so a runtime that reuses nothing gives the same output, only slower.
///
/// Trimming and the cache pull in opposite directions: each trim changes the prefix and
/// costs one full prefill. [`TrimPolicy::Chunked`](crate::chat::TrimPolicy::Chunked)
/// drops a larger share of the history at once, so trims (and full prefills) happen
/// rarely; with the cache on, prefer it to the default one-exchange-at-a-time trimming.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::chat::{ChatSession, Conversation, PromptCacheConfig, SystemStyle};
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Hi!").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let mut chat = ChatSession::new(model.session()?);
/// let dir = std::env::temp_dir().join(format!("rkllm-doc-cache-{}", std::process::id()));
/// // The temporary directory may be a tmpfs: allowed here, for a small example.
/// chat.enable_prompt_cache(PromptCacheConfig::rolling(&dir).allow_tmpfs(true))?;
/// let mut conversation = Conversation::new(SystemStyle::Merge);
/// for user in ["Hello", "How are you?"] {
///     chat.chat(&mut conversation, user, &GenerateOptions::new())?.complete()?;
/// }
/// assert_eq!(chat.cache_stats().map(|s| s.reused), Some(1));
/// drop(chat); // releases the cache and deletes its files
/// std::fs::remove_dir(&dir).ok();
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
#[derive(Debug)]
pub struct ChatSession {
    /// Always present; taken only by `into_session`, which consumes the value.
    session: Option<Session>,
    cache: Option<PromptCacheState>,
}

impl ChatSession {
    /// Chat on `session`, with the prompt cache off until
    /// [`enable_prompt_cache`](ChatSession::enable_prompt_cache).
    pub fn new(session: Session) -> ChatSession {
        ChatSession {
            session: Some(session),
            cache: None,
        }
    }

    /// Turns on the prompt cache: a directory (the cost-aware prefix store,
    /// [`PromptCacheConfig::new`]) or a [`PromptCacheConfig`]. The directory is created if
    /// missing. See [`ChatSession`] for how it works and the trade-off with trimming.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for a directory in RAM
    /// (tmpfs or ramfs) without [`PromptCacheConfig::allow_tmpfs`];
    /// [`Error::Io`](crate::Error::Io) when the directory or the model file cannot be read.
    pub fn enable_prompt_cache(&mut self, config: impl Into<PromptCacheConfig>) -> Result<()> {
        if self.cache.is_some() {
            self.disable_prompt_cache()?;
        }
        let state = PromptCacheState::open(self, config.into())?;
        self.cache = Some(state);
        Ok(())
    }

    /// Turns the prompt cache off: releases it from the runtime, and deletes its files unless
    /// the configuration keeps them.
    pub fn disable_prompt_cache(&mut self) -> Result<()> {
        let Some(cache) = self.cache.take() else {
            return Ok(());
        };
        cache.close(self)
    }

    /// What the prompt cache did so far (`None` when it is off).
    pub fn cache_stats(&self) -> Option<ChatCacheStats> {
        self.cache.as_ref().map(PromptCacheState::stats)
    }

    /// The figures the cost-aware cache decides with, as measured so far (`None` when the
    /// cache is off).
    pub fn cache_estimates(&self) -> Option<CacheEstimates> {
        self.cache.as_ref().map(PromptCacheState::current_estimates)
    }

    /// Stores the prefix every conversation with `conversation`'s system prompt and template
    /// begins with (one run of it, one token generated), unless it is stored already; returns
    /// its length (tokens, or bytes of text). Later conversations load it for their first
    /// turn, in this process and the next ones.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when the cache is off;
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) when the prefix is empty or the
    /// runtime saved nothing; the run's error when it fails.
    pub fn store_system_prefix(&mut self, conversation: &Conversation) -> Result<usize> {
        let prefix = shared_prefix(conversation)?;
        let ChatSession { session, cache } = self;
        let session = session.as_mut().expect("present until into_session");
        let Some(cache) = cache.as_mut() else {
            return Err(crate::Error::InvalidParameter {
                name: "prompt cache",
                reason: "off: enable it before storing a prefix".into(),
            });
        };
        cache.store_prefix(session, conversation, prefix)
    }

    /// Gives the session back, with the cache turned off (released; files deleted unless the
    /// configuration keeps them).
    pub fn into_session(mut self) -> Session {
        if let Err(e) = self.disable_prompt_cache() {
            log::warn!(target: "rkllm", "cleaning up the chat prompt cache: {e}");
        }
        self.session.take().expect("present until into_session")
    }

    /// Like [`Session::chat`], through the prompt cache when it is enabled.
    pub fn chat<'s>(
        &'s mut self,
        conversation: &'s mut Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> Result<ChatStream<'s>> {
        // Timings include preparing the prompt and the cache: both delay the first token.
        let started = std::time::Instant::now();
        conversation.push_user(user)?;
        match self.prepare_chat(conversation, options) {
            Ok((input, options, pending)) => {
                let ChatSession { session, cache } = self;
                let session = session.as_mut().expect("present until into_session");
                match session.start_stream(input, &options, false, started) {
                    Ok(stream) => Ok(ChatStream {
                        stream,
                        conversation,
                        cache: cache.as_mut(),
                        pending,
                        reply: String::new(),
                        finished: false,
                        failed: false,
                    }),
                    Err(e) => {
                        if let (Some(cache), Some(turn)) = (cache.as_mut(), pending) {
                            cache.abandon(turn);
                        }
                        conversation.pop();
                        Err(e)
                    }
                }
            }
            Err(e) => {
                conversation.pop();
                Err(e)
            }
        }
    }

    /// Renders the prompt, arranges the prompt cache, and returns the run's input, options
    /// and what the cache arranged for the run.
    fn prepare_chat(
        &mut self,
        conversation: &mut Conversation,
        options: &GenerateOptions,
    ) -> Result<(Input, GenerateOptions, Option<PendingTurn>)> {
        let prompt = prompt_of(conversation)?;
        let input = to_input(&prompt)?;
        let mut options = chat_options(options);
        let ChatSession { session, cache } = self;
        let session = session.as_mut().expect("present until into_session");
        let Some(cache) = cache.as_mut() else {
            return Ok((input, options, None));
        };
        let turn = cache.prepare(session, conversation, prompt)?;
        if let Some(path) = turn.save_path() {
            options = options.save_prompt_cache(path);
        }
        Ok((input, options, Some(turn)))
    }
}

/// The prompt every conversation with this system prompt and template begins with: the
/// longest common prefix of two prompts that differ only in their first user message.
fn shared_prefix(conversation: &Conversation) -> Result<Prefix> {
    let mut first = conversation.clone();
    first.clear();
    let mut second = first.clone();
    first.push_user("A")?;
    second.push_user("Z")?;
    Ok(match (prompt_of(&mut first)?, prompt_of(&mut second)?) {
        (Prefix::Tokens(a), Prefix::Tokens(b)) => {
            let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            Prefix::Tokens(a[..n].to_vec())
        }
        (Prefix::Text(a), Prefix::Text(b)) => {
            let n = a
                .char_indices()
                .zip(b.chars())
                .take_while(|((_, x), y)| x == y)
                .last()
                .map_or(0, |((i, c), _)| i + c.len_utf8());
            Prefix::Text(a[..n].to_owned())
        }
        (a, _) => a,
    })
}

fn prompt_of(conversation: &mut Conversation) -> Result<Prefix> {
    #[cfg(feature = "tokenizer")]
    if conversation.has_tokenizer() {
        return Ok(Prefix::Tokens(conversation.encode(true)?));
    }
    Ok(Prefix::Text(conversation.render(true)?))
}

/// The reply of one chat turn, streamed. Created by [`Session::chat`].
///
/// Yields the reply's tokens like a [`TokenStream`]; when it ends or is dropped, the reply is
/// added to the conversation (see [`Session::chat`] for what is kept).
pub struct ChatStream<'s> {
    stream: TokenStream<'s>,
    conversation: &'s mut Conversation,
    cache: Option<&'s mut PromptCacheState>,
    pending: Option<PendingTurn>,
    reply: String,
    finished: bool,
    /// Set when the turn failed on this side (an error item met by `complete`).
    failed: bool,
}

impl std::fmt::Debug for ChatStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl ChatStream<'_> {
    /// Stops the reply; it ends with [`FinishReason::Aborted`] and is kept as far as it got.
    pub fn abort(&mut self) {
        self.stream.abort();
    }

    /// Why the reply stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.stream.finish_reason()
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        self.stream.timings()
    }

    /// Runs to the end and collects the reply. On an error item the turn counts as failed:
    /// the run is stopped, the user message is taken back out of the conversation (as for
    /// a failed run), and the error is returned.
    pub fn complete(mut self) -> Result<Completion> {
        let (mut text, mut ids) = (String::new(), Vec::new());
        while let Some(token) = self.next() {
            let token = match token {
                Ok(token) => token,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            };
            text.push_str(&token.text);
            ids.push(token.id);
        }
        Ok(Completion {
            text,
            token_ids: ids,
            finish_reason: self
                .finish_reason()
                .cloned()
                .unwrap_or(FinishReason::Finished),
            timings: self.timings(),
        })
    }

    /// Records the turn in the conversation and the prompt cache, once.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let failed = self.failed
            || matches!(
                self.stream.finish_reason(),
                Some(FinishReason::Error) | None
            );
        if failed {
            self.conversation.pop();
        } else if let Err(e) = self
            .conversation
            .push_assistant(std::mem::take(&mut self.reply))
        {
            log::warn!(target: "rkllm", "recording the chat reply: {e}");
        }
        if let (Some(cache), Some(turn)) = (self.cache.as_deref_mut(), self.pending.take()) {
            cache.finish(turn, !failed, &self.stream.timings());
        }
    }
}

impl Iterator for ChatStream<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.stream.next() {
            Some(Ok(token)) => {
                self.reply.push_str(&token.text);
                Some(Ok(token))
            }
            Some(Err(e)) => Some(Err(e)),
            None => {
                self.finish();
                None
            }
        }
    }
}

impl Drop for ChatStream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Stop the run and let it end, so the turn is recorded with what was generated.
            self.stream.abort();
            for _ in self.stream.by_ref() {}
            self.finish();
        }
    }
}
