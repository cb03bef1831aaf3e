//! Chat on a session: a [`Conversation`] turn streamed from the model
//! ([`Session::chat`]), and [`ChatSession`], a session with the opt-in rolling prompt cache
//! that keeps multi-turn chat fast on 1.1.1.
//!
//! The cache's state lives in the [`ChatSession`]: a server keeps one `ChatSession` for its
//! model (the runtime runs one inference at a time anyway), not one per request, or every
//! request starts with a cold cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::borrow::BorrowMut;
use std::ops::{Deref, DerefMut};

use super::Conversation;
use crate::error::{Error, Result};
use crate::ffi::AbortHandle;
use crate::input::{GenerateOptions, Input, GEMMA_END_OF_TURN, GEMMA_EOS};
use crate::session::Session;
use crate::stream::{Completion, FinishReason, Refused, RunCore, Timings, Token};

/// A rendered prompt, as text or as token ids, compared by prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "tokenizer"), allow(dead_code))]
enum PromptKey {
    Text(String),
    Tokens(Vec<u32>),
}

impl PromptKey {
    fn starts_with(&self, prefix: &PromptKey) -> bool {
        match (self, prefix) {
            (PromptKey::Text(a), PromptKey::Text(b)) => a.starts_with(b.as_str()),
            (PromptKey::Tokens(a), PromptKey::Tokens(b)) => a.starts_with(b),
            _ => false,
        }
    }

    fn to_input(&self) -> Result<Input> {
        Ok(match self {
            PromptKey::Text(s) => Input::Prompt(s.clone()),
            PromptKey::Tokens(ids) => Input::Tokens(
                ids.iter()
                    .map(|&id| {
                        i32::try_from(id).map_err(|_| {
                            Error::InvalidInput(format!(
                                "token id {id} does not fit the runtime's int32"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// What the rolling prompt cache did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatCacheStats {
    /// Turns that ran with the previous turn's cache loaded.
    pub reused: u64,
    /// Turns that prefilled in full (first turn, or the prefix changed).
    pub rebuilt: u64,
}

/// A saved prompt cache and the prompt it holds.
#[derive(Debug)]
struct CacheEntry {
    file: PathBuf,
    prompt: PromptKey,
}

/// The rolling cache's state, owned by the chat session.
#[derive(Debug)]
pub(crate) struct RollingCache {
    dir: PathBuf,
    /// The cache of the last completed turn.
    current: Option<CacheEntry>,
    /// The cache file loaded into the runtime (may be `current`'s, or an older one).
    loaded: Option<PathBuf>,
    stats: ChatCacheStats,
}

static NEXT_CACHE_FILE: AtomicU64 = AtomicU64::new(0);

impl RollingCache {
    fn new_file(&self, model_id: u64) -> PathBuf {
        let n = NEXT_CACHE_FILE.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!(
            "rkllm-chat-{}-m{model_id}-{n}.cache",
            std::process::id()
        ))
    }
}

fn remove_quietly(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(target: "rkllm", "removing prompt cache {}: {e}", path.display()),
    }
}

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
        let prepared = prompt_of(conversation).and_then(|p| p.to_input());
        let core = prepared.and_then(|input| {
            self.start_run(input, &chat_options(options), false, started, end_tokens())
        });
        match core {
            Ok(core) => Ok(ChatStream {
                turn: ChatTurn::new(core, None),
                conversation,
                rolling: None,
            }),
            Err(e) => {
                conversation.pop();
                Err(e)
            }
        }
    }
}

/// The options of a chat turn (the caller's own; Gemma's end tokens are [`end_tokens`]).
fn chat_options(options: &GenerateOptions) -> GenerateOptions {
    options.clone()
}

/// The ids that end a chat turn as [`FinishReason::EndOfTurn`]: Gemma's `<end_of_turn>` and
/// `<eos>`.
fn end_tokens() -> Vec<i32> {
    vec![GEMMA_END_OF_TURN, GEMMA_EOS]
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

/// A [`Session`] with the rolling prompt cache for multi-turn chat (see below).
///
/// The cache's state lives here: a server keeps one `ChatSession` for its model for its
/// whole life (in a [`FairMutex`](crate::FairMutex), which its requests take in turn), not
/// one per request, or every request starts with a cold cache. It
/// dereferences to the session, so every run of the session is at
/// hand; [`chat`](ChatSession::chat) runs a turn through the cache once it is enabled.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::chat::{ChatSession, Conversation, SystemStyle};
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Hi!").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let mut chat = ChatSession::new(model.session()?);
/// let dir = std::env::temp_dir().join(format!("rkllm-doc-cache-{}", std::process::id()));
/// chat.enable_prompt_cache(&dir)?;
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
///
/// # Why a rolling prompt cache
///
/// The 1.1.1 runtime keeps nothing between runs, so every chat turn prefills the whole
/// conversation again and the time to first token grows with the history. Its one lever is
/// the prompt cache: a run can save its prompt's prefill to a file, and a loaded cache makes
/// a later run skip the longest prefix it shares with the cached prompt. Each chat turn's
/// prompt begins with the previous turn's prompt (history only grows at the end), so:
///
/// 1. turn N runs with `save_prompt_cache` = a fresh file: the prefill of prompt N;
/// 2. before turn N+1, that file is loaded (the previous one released and deleted);
/// 3. whenever the new prompt does not begin with the cached one (history trimmed, system
///    prompt or template changed, messages popped or edited, another conversation), the
///    cache is released and deleted and the turn prefills in full, saving a new one.
///
/// Correctness never depends on the cache: the prompt sent is always the whole
/// conversation, so a runtime that reuses nothing gives the same output, only slower.
/// Files live in a directory the caller chooses, are named per process and model, and are
/// deleted when replaced, when the mode is disabled and when the session is dropped.
///
/// Trimming and the cache pull in opposite directions: each trim changes the prefix and
/// costs one full prefill. [`TrimPolicy::Chunked`](crate::chat::TrimPolicy::Chunked)
/// drops a larger share of the history at once, so trims (and full prefills) happen
/// rarely; with the cache on, prefer it to the default one-exchange-at-a-time trimming.
#[derive(Debug)]
pub struct ChatSession {
    /// Always present; taken only by `into_session`, which consumes the value.
    session: Option<Session>,
    rolling: Option<RollingCache>,
}

impl ChatSession {
    /// Chat on `session`, with the prompt cache off until
    /// [`enable_prompt_cache`](ChatSession::enable_prompt_cache).
    pub fn new(session: Session) -> ChatSession {
        ChatSession {
            session: Some(session),
            rolling: None,
        }
    }

    /// Turns on the rolling prompt cache, with cache files in `dir` (created if missing).
    /// See [`ChatSession`] for how it works and the trade-off with trimming.
    pub fn enable_prompt_cache(&mut self, dir: impl Into<PathBuf>) -> Result<()> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        if self.rolling.is_some() {
            self.disable_prompt_cache()?;
        }
        self.rolling = Some(RollingCache {
            dir,
            current: None,
            loaded: None,
            stats: ChatCacheStats::default(),
        });
        Ok(())
    }

    /// Turns the rolling prompt cache off: releases it from the runtime and deletes its files.
    pub fn disable_prompt_cache(&mut self) -> Result<()> {
        let Some(mut rolling) = self.rolling.take() else {
            return Ok(());
        };
        let released = if rolling.loaded.take().is_some() {
            self.release_cache_raw()
        } else {
            Ok(())
        };
        if let Some(entry) = rolling.current.take() {
            remove_quietly(&entry.file);
        }
        released
    }

    /// What the rolling prompt cache did so far (`None` when it is off).
    pub fn cache_stats(&self) -> Option<ChatCacheStats> {
        self.rolling.as_ref().map(|r| r.stats)
    }

    /// Gives the session back, with the cache turned off (released, files deleted).
    pub fn into_session(mut self) -> Session {
        if let Err(e) = self.disable_prompt_cache() {
            log::warn!(target: "rkllm", "cleaning up the chat prompt cache: {e}");
        }
        self.session.take().expect("present until into_session")
    }

    /// Like [`Session::chat`], through the rolling prompt cache when it is enabled.
    pub fn chat<'s>(
        &'s mut self,
        conversation: &'s mut Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> Result<ChatStream<'s>> {
        let turn = self.start_turn(conversation, user.into(), options)?;
        Ok(ChatStream {
            turn,
            conversation,
            rolling: self.rolling.as_mut(),
        })
    }

    /// Like [`chat`](ChatSession::chat), but the stream owns the chat session and the
    /// conversation: it can be returned from a function or moved into a `'static` thread or
    /// task, and gives both back with [`OwnedChatStream::into_parts`]. When the turn cannot
    /// start, both come back in the [`Refused`] value, the conversation unchanged.
    pub fn into_chat(
        self,
        conversation: Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> std::result::Result<OwnedChatStream<ChatSession>, Refused<(ChatSession, Conversation)>>
    {
        OwnedChatStream::new(self, conversation, user, options)
    }

    /// Adds `user` to the conversation and starts the turn; on failure the conversation is
    /// as it was.
    fn start_turn(
        &mut self,
        conversation: &mut Conversation,
        user: String,
        options: &GenerateOptions,
    ) -> Result<ChatTurn> {
        // Timings include preparing the prompt and the cache: both delay the first token.
        let started = std::time::Instant::now();
        conversation.push_user(user)?;
        match self.prepare_chat(conversation, options) {
            Ok((input, options, pending)) => {
                match self.start_run(input, &options, false, started, end_tokens()) {
                    Ok(core) => Ok(ChatTurn::new(core, pending)),
                    Err(e) => {
                        if let Some(entry) = pending {
                            remove_quietly(&entry.file);
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

    /// Renders the prompt, arranges the rolling cache, and returns the run's input, options
    /// and the cache entry the run will save.
    fn prepare_chat(
        &mut self,
        conversation: &mut Conversation,
        options: &GenerateOptions,
    ) -> Result<(Input, GenerateOptions, Option<CacheEntry>)> {
        let prompt = prompt_of(conversation)?;
        let input = prompt.to_input()?;
        let mut options = chat_options(options);
        let Some(rolling) = self.rolling.as_mut() else {
            return Ok((input, options, None));
        };
        let reuse = rolling
            .current
            .as_ref()
            .filter(|e| prompt.starts_with(&e.prompt))
            .map(|e| e.file.clone());
        let stale = match &reuse {
            Some(file) => rolling.loaded.as_ref().is_some_and(|l| l != file),
            None => rolling.loaded.is_some(),
        };
        if stale {
            rolling.loaded = None;
            self.release_cache_raw()?;
        }
        let rolling = self.rolling.as_mut().expect("checked above");
        match reuse {
            Some(file) => {
                rolling.stats.reused += 1;
                if rolling.loaded.is_none() {
                    self.load_cache_raw(&file)?;
                    self.rolling.as_mut().expect("checked above").loaded = Some(file);
                }
            }
            None => {
                rolling.stats.rebuilt += 1;
                if let Some(old) = rolling.current.take() {
                    remove_quietly(&old.file);
                }
            }
        }
        let model_id = self.inner.id();
        let rolling = self.rolling.as_mut().expect("checked above");
        let file = rolling.new_file(model_id);
        options = options.save_prompt_cache(&file);
        Ok((input, options, Some(CacheEntry { file, prompt })))
    }
}

fn prompt_of(conversation: &mut Conversation) -> Result<PromptKey> {
    #[cfg(feature = "tokenizer")]
    if conversation.has_tokenizer() {
        return Ok(PromptKey::Tokens(conversation.encode(true)?));
    }
    Ok(PromptKey::Text(conversation.render(true)?))
}

/// A chat turn's run and what it records, without lifetimes: shared by [`ChatStream`] and
/// [`OwnedChatStream`].
struct ChatTurn {
    core: RunCore,
    pending: Option<CacheEntry>,
    reply: String,
    finished: bool,
    /// Set when the turn failed on this side (an error item met by `complete`).
    failed: bool,
}

impl ChatTurn {
    fn new(core: RunCore, pending: Option<CacheEntry>) -> ChatTurn {
        ChatTurn {
            core,
            pending,
            reply: String::new(),
            finished: false,
            failed: false,
        }
    }

    fn record(&mut self, item: &Option<Result<Token>>) {
        if let Some(Ok(token)) = item {
            self.reply.push_str(&token.text);
        }
    }

    fn next_blocking(&mut self) -> Option<Result<Token>> {
        let item = self.core.next_blocking();
        self.record(&item);
        item
    }

    #[cfg(feature = "async")]
    fn poll_item(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Token>>> {
        let item = self.core.poll_item(cx);
        if let std::task::Poll::Ready(item) = &item {
            self.record(item);
        }
        item
    }

    /// Runs to the end (blocking) and collects the reply; an error item fails the turn.
    fn complete(&mut self) -> Result<Completion> {
        while let Some(token) = self.next_blocking() {
            if let Err(e) = token {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(self.core.completion(self.reply.clone()))
    }

    /// Stops the run if it is not over and lets it end, so what was generated is recorded.
    fn stop(&mut self) {
        if self.core.finish_reason().is_none() {
            self.core.abort();
            while self.next_blocking().is_some() {}
        }
    }

    /// Records the turn in the conversation and the rolling cache, once. The run is over.
    fn finish(&mut self, conversation: &mut Conversation, rolling: Option<&mut RollingCache>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let failed =
            self.failed || matches!(self.core.finish_reason(), Some(FinishReason::Error) | None);
        if failed {
            conversation.pop();
        } else if let Err(e) = conversation.push_assistant(std::mem::take(&mut self.reply)) {
            log::warn!(target: "rkllm", "recording the chat reply: {e}");
        }
        let Some(entry) = self.pending.take() else {
            return;
        };
        match rolling {
            Some(rolling) if !failed && entry.file.exists() => {
                // The previous cache may still be loaded; it is released before the next
                // turn loads this one. Unlinking a loaded cache's file is harmless.
                if let Some(old) = rolling.current.replace(entry) {
                    remove_quietly(&old.file);
                }
            }
            _ => remove_quietly(&entry.file),
        }
    }
}

/// The reply of one chat turn, streamed. Created by [`Session::chat`] and
/// [`ChatSession::chat`].
///
/// Yields the reply's tokens like a [`TokenStream`](crate::TokenStream) (tokens with empty
/// text are not yielded; [`token_ids`](ChatStream::token_ids) has every id); when it ends or
/// is dropped, the reply is added to the conversation (see [`Session::chat`] for what is
/// kept). A normal end of the turn (Gemma's `<end_of_turn>` or `<eos>`) is
/// [`FinishReason::EndOfTurn`]. For a turn that owns its session and conversation, see
/// [`OwnedChatStream`].
pub struct ChatStream<'s> {
    turn: ChatTurn,
    conversation: &'s mut Conversation,
    rolling: Option<&'s mut RollingCache>,
}

impl std::fmt::Debug for ChatStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("finish", &self.turn.core.finish_reason())
            .finish_non_exhaustive()
    }
}

impl ChatStream<'_> {
    /// Stops the reply; it ends with [`FinishReason::Aborted`] and is kept as far as it got.
    pub fn abort(&mut self) {
        self.turn.core.abort();
    }

    /// A handle that stops this reply, and only this one, from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.turn.core.abort_handle()
    }

    /// Why the reply stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.turn.core.finish_reason()
    }

    /// Timings so far (final once the stream has ended). The prompt's token count is exact
    /// when the conversation has a tokenizer, an estimate otherwise
    /// ([`Timings::prompt_tokens_estimated`]).
    pub fn timings(&self) -> Timings {
        self.turn.core.timings()
    }

    /// The reply's token ids so far, every one (see
    /// [`TokenStream::token_ids`](crate::TokenStream::token_ids)).
    pub fn token_ids(&self) -> &[i32] {
        self.turn.core.token_ids()
    }

    /// Runs to the end and collects the reply. On an error item the turn counts as failed:
    /// the run is stopped, the user message is taken back out of the conversation (as for
    /// a failed run), and the error is returned.
    pub fn complete(mut self) -> Result<Completion> {
        self.turn.complete()
    }
}

impl Iterator for ChatStream<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.turn.next_blocking();
        if item.is_none() {
            self.turn
                .finish(self.conversation, self.rolling.as_deref_mut());
        }
        item
    }
}

impl Drop for ChatStream<'_> {
    fn drop(&mut self) {
        if !self.turn.finished {
            self.turn.stop();
            self.turn
                .finish(self.conversation, self.rolling.as_deref_mut());
        }
    }
}

/// A chat turn that owns its [`ChatSession`] and its [`Conversation`]: `'static` when `S`
/// is, so it can be returned from a function, sent to another thread or moved into an async
/// task. Created by [`ChatSession::into_chat`], or [`OwnedChatStream::new`] for any owner of
/// a chat session, such as the [`FairGuard`](crate::FairGuard) a server takes from its
/// [`FairMutex`](crate::FairMutex).
///
/// It yields what a [`ChatStream`] yields as an `Iterator` (with the `async` feature,
/// `into_async` makes it a `futures_core::Stream`, an `AsyncChatStream`), and records the turn in the conversation the same way.
/// [`into_parts`](OwnedChatStream::into_parts) gives the session and the conversation back
/// (stopping the run first if it is not over). Dropping the stream aborts the run, waits for
/// the runtime to return (at most the model's stop timeout), then drops both.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::chat::{ChatSession, Conversation, OwnedChatStream, SystemStyle};
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// fn turn(chat: ChatSession, conversation: Conversation) -> rkllm::Result<OwnedChatStream> {
///     Ok(chat.into_chat(conversation, "Hello", &GenerateOptions::new())?)
/// }
/// let file = MockModel::new().answer("Hi there!").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let stream = turn(ChatSession::new(model.session()?), Conversation::new(SystemStyle::Merge))?;
/// let (text, (_chat, conversation)) = std::thread::spawn(move || {
///     let mut stream = stream;
///     let text: String = stream.by_ref().map(|t| t.unwrap().text).collect();
///     (text, stream.into_parts())
/// })
/// .join()
/// .unwrap();
/// assert_eq!(text, "Hi there!");
/// assert_eq!(conversation.messages().len(), 2); // user, assistant
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct OwnedChatStream<S: BorrowMut<ChatSession> = ChatSession> {
    // Declared first: its run is stopped before the session is dropped.
    turn: ChatTurn,
    /// Present until `into_parts`.
    session: Option<S>,
    conversation: Option<Conversation>,
}

impl<S: BorrowMut<ChatSession>> std::fmt::Debug for OwnedChatStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedChatStream")
            .field("finish", &self.turn.core.finish_reason())
            .finish_non_exhaustive()
    }
}

impl<S: BorrowMut<ChatSession>> OwnedChatStream<S> {
    /// Adds `user` to `conversation` and starts the turn on `session` (see
    /// [`ChatSession::chat`]). When it cannot start, the session and the conversation
    /// (unchanged) come back in the [`Refused`] value.
    pub fn new(
        mut session: S,
        mut conversation: Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> std::result::Result<Self, Refused<(S, Conversation)>> {
        match session
            .borrow_mut()
            .start_turn(&mut conversation, user.into(), options)
        {
            Ok(turn) => Ok(OwnedChatStream {
                turn,
                session: Some(session),
                conversation: Some(conversation),
            }),
            Err(error) => Err(Refused::new(error, (session, conversation))),
        }
    }

    /// Stops the reply; it ends with [`FinishReason::Aborted`] and is kept as far as it got.
    /// Never waits, so an async consumer can abort, then poll the stream to its end.
    pub fn abort(&mut self) {
        self.turn.core.abort();
    }

    /// A handle that stops this reply, and only this one, from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.turn.core.abort_handle()
    }

    /// Why the reply stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.turn.core.finish_reason()
    }

    /// Timings so far (see [`ChatStream::timings`]).
    pub fn timings(&self) -> Timings {
        self.turn.core.timings()
    }

    /// The reply's token ids so far, every one.
    pub fn token_ids(&self) -> &[i32] {
        self.turn.core.token_ids()
    }

    /// The reply so far.
    pub fn reply(&self) -> &str {
        &self.turn.reply
    }

    /// Runs to the end (blocking) and collects the reply (see [`ChatStream::complete`]);
    /// the session and the conversation come back with it.
    pub fn complete(mut self) -> (Result<Completion>, (S, Conversation)) {
        let completion = self.turn.complete();
        (completion, self.into_parts())
    }

    /// Gives the chat session and the conversation back, with the turn recorded. A run that
    /// is not over is stopped first, within the model's stop timeout.
    pub fn into_parts(mut self) -> (S, Conversation) {
        self.finish();
        (
            self.session.take().expect("present until into_parts"),
            self.conversation.take().expect("present until into_parts"),
        )
    }

    fn finish(&mut self) {
        if self.turn.finished {
            return;
        }
        self.turn.stop();
        let (Some(session), Some(conversation)) = (&mut self.session, &mut self.conversation)
        else {
            return;
        };
        self.turn
            .finish(conversation, session.borrow_mut().rolling.as_mut());
    }

    #[cfg(feature = "async")]
    pub(crate) fn poll_item(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Token>>> {
        let item = self.turn.poll_item(cx);
        if let std::task::Poll::Ready(None) = item {
            self.finish();
        }
        item
    }
}

impl<S: BorrowMut<ChatSession>> Iterator for OwnedChatStream<S> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.turn.next_blocking();
        if item.is_none() {
            self.finish();
        }
        item
    }
}

impl<S: BorrowMut<ChatSession>> Drop for OwnedChatStream<S> {
    fn drop(&mut self) {
        self.finish();
    }
}
