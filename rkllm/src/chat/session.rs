//! Chat on a session: a [`Conversation`] turn streamed from the model
//! ([`Session::chat`]), and [`ChatSession`], a session with the opt-in prompt cache
//! that keeps multi-turn chat fast on 1.1.1.
//!
//! The cache's state lives in the [`ChatSession`]: a server keeps one `ChatSession` for its
//! model (the runtime runs one inference at a time anyway), not one per request, or every
//! request starts with a cold cache.

use std::borrow::BorrowMut;
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use super::cache::{
    to_input, CacheEstimates, ChatCacheStats, PendingTurn, PromptCacheConfig, PromptCacheState,
};
use super::prefix_store::Prefix;
use super::reasoning::{ReasoningPiece, ReasoningSplitter};
use super::Conversation;
use crate::error::{Error, Result};
use crate::input::{GenerateOptions, Input};
use crate::session::{Session, TokenStream};
use crate::stream::{Completion, FinishReason, Refused, Token};

impl Session {
    /// Adds `user` to `conversation`, runs the model on the whole conversation (kept within
    /// its budget), and streams the reply. The reply is added to the conversation when the
    /// stream ends or is dropped.
    ///
    /// The prompt goes as token ids when the conversation has a tokenizer (recommended for
    /// Gemma: it settles who adds BOS and keeps message text from injecting control tokens),
    /// as text otherwise. Generation stops at the conversation's end tokens
    /// ([`Conversation::end_tokens`]: Gemma's `<end_of_turn>` and `<eos>`, or those of a
    /// model's own template) in addition to `options`' own conditions.
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
    ) -> Result<ChatStream<&'s mut Session, &'s mut Conversation>> {
        // Timings include preparing the prompt and the cache: both delay the first token.
        let started = std::time::Instant::now();
        conversation.push_user(user)?;
        let options = chat_options(options, conversation);
        let prepared = prompt_of(conversation).and_then(|p| to_input(&p));
        let core = prepared.and_then(|input| self.start_run(input, &options, false, started));
        match core {
            Ok(core) => Ok(ChatStream::started(
                TokenStream {
                    core,
                    session: self,
                },
                conversation,
                None,
                no_cache,
            )),
            Err(e) => {
                conversation.pop();
                Err(e)
            }
        }
    }
}

/// The options of a chat turn: the caller's own, and the template's end tokens.
fn chat_options(options: &GenerateOptions, conversation: &Conversation) -> GenerateOptions {
    options.clone().end_tokens(conversation.end_tokens())
}

/// A plain session has no prompt cache.
fn no_cache<S>(_: &mut S) -> Option<&mut PromptCacheState> {
    None
}

/// A chat session's prompt cache, if enabled.
fn chat_cache<S: BorrowMut<ChatSession>>(session: &mut S) -> Option<&mut PromptCacheState> {
    session.borrow_mut().cache.as_mut()
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

/// A [`Session`] with the prompt cache for multi-turn chat (see below).
///
/// The cache's state lives here: a server keeps one `ChatSession` for its model for its
/// whole life (in a [`FairMutex`](crate::wait::FairMutex), which its requests take in turn), not
/// one per request, or every request starts with a cold cache. It
/// dereferences to the session, so every run of the session is at
/// hand; [`chat`](ChatSession::chat) runs a turn through the cache once it is enabled.
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
///
/// # Why a prompt cache
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

    /// Turns on the prompt cache: a [`PromptCacheConfig`] (the cost-aware prefix store is
    /// [`PromptCacheConfig::new`]), or a directory for the single rolling cache
    /// ([`PromptCacheConfig::rolling`]). The directory is created if missing. See [`ChatSession`] for how it works and the trade-off with trimming.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for a directory in RAM
    /// (tmpfs or ramfs) without [`PromptCacheConfig::allow_tmpfs`];
    /// [`Error::Io`](crate::Error::Io) when the directory cannot be created or read.
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
    ) -> Result<ChatStream<&'s mut ChatSession, &'s mut Conversation>> {
        ChatStream::new(self, conversation, user, options).map_err(Error::from)
    }

    /// Like [`chat`](ChatSession::chat), but the stream owns the chat session and the
    /// conversation: it can be returned from a function or moved into a `'static` thread or
    /// task, and gives both back with [`ChatStream::into_parts`]. When the turn cannot
    /// start, both come back in the [`Refused`] value, the conversation unchanged.
    pub fn into_chat(
        self,
        conversation: Conversation,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> std::result::Result<ChatStream<ChatSession>, Refused<(ChatSession, Conversation)>> {
        ChatStream::new(self, conversation, user, options)
    }

    /// Adds `user` to the conversation and starts the turn; on failure the conversation is
    /// as it was.
    fn start_turn(
        &mut self,
        conversation: &mut Conversation,
        user: String,
        options: &GenerateOptions,
    ) -> Result<(crate::stream::RunCore, Option<PendingTurn>)> {
        // Timings include preparing the prompt and the cache: both delay the first token.
        let started = std::time::Instant::now();
        conversation.push_user(user)?;
        match self.prepare_chat(conversation, options) {
            Ok((input, options, pending)) => {
                match self.start_run(input, &options, false, started) {
                    Ok(core) => Ok((core, pending)),
                    Err(e) => {
                        if let (Some(cache), Some(turn)) = (self.cache.as_mut(), pending) {
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
        let mut options = chat_options(options, conversation);
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

/// The reply of one chat turn, streamed. Created by [`Session::chat`] and
/// [`ChatSession::chat`] (borrowing the session and the conversation), or by
/// [`ChatSession::into_chat`] and [`ChatStream::new`] (owning them: `'static` when `S` and
/// `C` are, so it can be returned from a function, sent to another thread or moved into an
/// async task). `S` is how the stream holds its session: `&mut Session`, `&mut ChatSession`,
/// a `ChatSession`, or any owner of one, such as the [`FairGuard`](crate::wait::FairGuard) a
/// server takes from its [`FairMutex`](crate::wait::FairMutex); `C` is how it holds the
/// [`Conversation`].
///
/// Yields the reply's tokens like a [`TokenStream`] (tokens with empty text are not yielded;
/// `token_ids` has every id), and dereferences to the [`TokenStream`] of its run for
/// everything else: [`abort`](TokenStream::abort), [`abort_handle`](TokenStream::abort_handle),
/// [`finish_reason`](TokenStream::finish_reason), [`timings`](TokenStream::timings),
/// [`token_ids`](TokenStream::token_ids), [`stop`](TokenStream::stop),
/// [`stop_async`](TokenStream::stop_async). The prompt's token count in its timings is exact
/// when the conversation has a tokenizer, an estimate otherwise. A normal end of the turn
/// (one of the template's end tokens, Gemma's `<end_of_turn>` or `<eos>`) is
/// [`FinishReason::EndOfTurn`].
///
/// When it ends or is dropped, the reply is added to the conversation (see [`Session::chat`]
/// for what is kept; a dropped reply is kept as far as it was read). Dropping it never
/// blocks, as for a [`TokenStream`]: the session's next call waits for the run.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::chat::{ChatSession, ChatStream, Conversation, SystemStyle};
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// fn turn(chat: ChatSession, conversation: Conversation) -> rkllm::Result<ChatStream> {
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
pub struct ChatStream<S = ChatSession, C: BorrowMut<Conversation> = Conversation> {
    /// The run, holding the session; present until `into_parts`.
    run: Option<TokenStream<S>>,
    /// Present until `into_parts`.
    conversation: Option<C>,
    /// What the prompt cache arranged for this turn.
    pending: Option<PendingTurn>,
    /// The reply as far as it was read.
    reply: String,
    /// The `<think>` splitter of a conversation with a model's own template, until the
    /// reply ends.
    splitter: Option<ReasoningSplitter>,
    /// Whether replies of this turn are split (the conversation has a model's template).
    splits: bool,
    /// The reply's reasoning and answer as far as the splitter decided them.
    reasoning: String,
    answer: String,
    /// How much of the reasoning and the answer [`next_split`](ChatStream::next_split) gave.
    split_given: (usize, usize),
    /// Set once the run's items are over (for `next_split`).
    items_over: bool,
    /// Set once the turn is recorded.
    finished: bool,
    /// Set when the turn failed on this side (an error item met by `complete`).
    failed: bool,
    /// The session's prompt cache, if it has one.
    cache_of: fn(&mut S) -> Option<&mut PromptCacheState>,
}

impl<S, C: BorrowMut<Conversation>> std::fmt::Debug for ChatStream<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("finish", &self.run.as_ref().and_then(|r| r.finish_reason()))
            .finish_non_exhaustive()
    }
}

impl<S: BorrowMut<ChatSession>, C: BorrowMut<Conversation>> ChatStream<S, C> {
    /// Adds `user` to `conversation` and starts the turn on `session` (see
    /// [`ChatSession::chat`]). When it cannot start, the session and the conversation
    /// (unchanged) come back in the [`Refused`] value.
    pub fn new(
        mut session: S,
        mut conversation: C,
        user: impl Into<String>,
        options: &GenerateOptions,
    ) -> std::result::Result<Self, Refused<(S, C)>> {
        let started =
            session
                .borrow_mut()
                .start_turn(conversation.borrow_mut(), user.into(), options);
        match started {
            Ok((core, pending)) => Ok(ChatStream::started(
                TokenStream { core, session },
                conversation,
                pending,
                chat_cache::<S>,
            )),
            Err(error) => Err(Refused::new(error, (session, conversation))),
        }
    }
}

impl<S, C: BorrowMut<Conversation>> ChatStream<S, C> {
    fn started(
        run: TokenStream<S>,
        conversation: C,
        pending: Option<PendingTurn>,
        cache_of: fn(&mut S) -> Option<&mut PromptCacheState>,
    ) -> Self {
        let splitter = conversation.borrow().reasoning_splitter();
        ChatStream {
            run: Some(run),
            conversation: Some(conversation),
            pending,
            reply: String::new(),
            splits: splitter.is_some(),
            splitter,
            reasoning: String::new(),
            answer: String::new(),
            split_given: (0, 0),
            items_over: false,
            finished: false,
            failed: false,
            cache_of,
        }
    }

    fn run_mut(&mut self) -> &mut TokenStream<S> {
        self.run.as_mut().expect("present until into_parts")
    }

    /// The reply so far, as far as it was read: the whole text the model wrote, a
    /// reasoning block included.
    pub fn reply(&self) -> &str {
        &self.reply
    }

    /// A reasoning model's chain of thought so far (its `<think>…</think>` block, without
    /// the tags), as far as it is decided: `None` until the reply has shown one, and always
    /// for a Gemma conversation. Only a conversation with a model's own template
    /// (`Conversation::for_template`, feature
    /// `template`) splits its replies; the split follows
    /// [`ReasoningSplitter::for_prompt`] on the rendered prompt. Text that may still be part
    /// of a tag is held back until the next token or the end decides it.
    ///
    /// The conversation records the answer as the assistant's `content` and the reasoning
    /// apart ([`Conversation::reasoning`](crate::chat::Conversation::reasoning)), and
    /// [`complete`](Self::complete) returns them as [`Completion::text`] and
    /// [`Completion::reasoning`].
    pub fn reasoning(&self) -> Option<&str> {
        let saw = self
            .splitter
            .as_ref()
            .is_some_and(ReasoningSplitter::saw_reasoning)
            || !self.reasoning.is_empty();
        saw.then_some(self.reasoning.as_str())
    }

    /// The answer so far: the reply without its reasoning block (see
    /// [`reasoning`](Self::reasoning)); the reply itself for a Gemma conversation.
    pub fn answer(&self) -> &str {
        if self.splits {
            &self.answer
        } else {
            &self.reply
        }
    }

    /// The stream's next step as reasoning and answer text: reads the next token and returns
    /// the text it decided, as [`ReasoningPiece`]s (the reasoning before the answer; empty
    /// when the token's text is held back while it may be part of a tag). After the last
    /// token, the text still held back comes as one more item; then `None`. A Gemma
    /// conversation's text is all [`ReasoningPiece::Content`].
    ///
    /// Use it instead of iterating the stream (which yields the model's raw tokens, tags
    /// included) to show thinking and answer apart; both read the same run, so don't mix
    /// them.
    pub fn next_split(&mut self) -> Option<Result<Vec<ReasoningPiece>>> {
        if !self.items_over {
            match self.next() {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(_)) => return Some(Ok(self.new_pieces())),
                None => self.items_over = true,
            }
        }
        let rest = self.new_pieces();
        (!rest.is_empty()).then_some(Ok(rest))
    }

    /// The reasoning and answer text decided since `next_split` last gave some.
    fn new_pieces(&mut self) -> Vec<ReasoningPiece> {
        let (given_reasoning, given_answer) = self.split_given;
        let mut pieces = Vec::new();
        let reasoning = self.reasoning.get(given_reasoning..).unwrap_or_default();
        if !reasoning.is_empty() {
            pieces.push(ReasoningPiece::Reasoning(reasoning.to_owned()));
        }
        let answer = self.answer().get(given_answer..).unwrap_or_default();
        if !answer.is_empty() {
            pieces.push(ReasoningPiece::Content(answer.to_owned()));
        }
        self.split_given = (self.reasoning.len(), self.answer().len());
        pieces
    }

    fn take_pieces(&mut self, pieces: Vec<ReasoningPiece>) {
        for piece in pieces {
            match piece {
                ReasoningPiece::Reasoning(s) => self.reasoning.push_str(&s),
                ReasoningPiece::Content(s) => self.answer.push_str(&s),
            }
        }
    }

    /// Ends the split: text held back is decided.
    fn end_split(&mut self) -> Option<String> {
        let mut splitter = self.splitter.take()?;
        let saw = splitter.saw_reasoning();
        let pieces = splitter.finish();
        self.take_pieces(pieces);
        (saw || !self.reasoning.is_empty()).then(|| self.reasoning.clone())
    }

    /// Runs to the end and collects the reply. On an error item the turn counts as failed:
    /// the run is stopped, the user message is taken back out of the conversation (as for
    /// a failed run), and the error is returned.
    pub fn complete(mut self) -> Result<Completion> {
        self.complete_turn()
    }

    /// Runs to the end (blocking) and collects the reply (see
    /// [`complete`](ChatStream::complete)); the session and the conversation come back
    /// with it.
    pub fn complete_with_parts(mut self) -> (Result<Completion>, (S, C)) {
        let completion = self.complete_turn();
        (completion, self.into_parts())
    }

    /// Gives the session and the conversation back, with the turn recorded. A run that is
    /// not over is let go as when the stream is dropped (without waiting).
    pub fn into_parts(mut self) -> (S, C) {
        self.finish();
        let run = self.run.take().expect("present until into_parts");
        let conversation = self.conversation.take().expect("present until into_parts");
        (run.into_session(), conversation)
    }

    fn complete_turn(&mut self) -> Result<Completion> {
        while let Some(item) = self.next() {
            if let Err(e) = item {
                self.failed = true;
                return Err(e);
            }
        }
        self.end_split();
        if self.splits {
            let reasoning = self.reasoning().map(str::to_owned);
            let answer = self.answer.clone();
            let mut completion = self.run_mut().core.completion(answer);
            completion.reasoning = reasoning;
            return Ok(completion);
        }
        let reply = self.reply.clone();
        Ok(self.run_mut().core.completion(reply))
    }

    fn record(&mut self, item: &Option<Result<Token>>) {
        match item {
            Some(Ok(token)) => {
                self.reply.push_str(&token.text);
                if let Some(splitter) = self.splitter.as_mut() {
                    let pieces = splitter.push(&token.text);
                    self.take_pieces(pieces);
                }
            }
            Some(Err(_)) => {}
            None => self.finish(),
        }
    }

    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Token>>> {
        let item = self.run_mut().core.poll_item(cx);
        if let Poll::Ready(item) = &item {
            self.record(item);
        }
        item
    }

    /// Records the turn in the conversation and the prompt cache, once. A run that is not
    /// over (the stream was dropped) is asked to stop without waiting, and its cache file is
    /// recorded by the session's next use of the cache.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let split = self.splits.then(|| (self.end_split(), self.answer.clone()));
        let (Some(run), Some(conversation)) = (self.run.as_mut(), self.conversation.as_mut())
        else {
            return;
        };
        let over = run.finish_reason().is_some();
        if !over {
            run.abort();
        }
        let failed = self.failed || matches!(run.finish_reason(), Some(FinishReason::Error));
        let conversation = conversation.borrow_mut();
        if failed {
            conversation.pop();
        } else {
            let pushed = match split {
                Some((reasoning, answer)) => {
                    conversation.push_assistant_with_reasoning(answer, reasoning)
                }
                None => conversation.push_assistant(self.reply.clone()),
            };
            if let Err(e) = pushed {
                log::warn!(target: "rkllm", "recording the chat reply: {e}");
            }
        }
        let timings = run.timings();
        if let (Some(turn), Some(cache)) = (self.pending.take(), (self.cache_of)(&mut run.session))
        {
            if over {
                cache.finish(turn, !failed, &timings);
            } else {
                cache.finish_later(turn, !failed, timings);
            }
        }
    }
}

impl<S, C: BorrowMut<Conversation>> Deref for ChatStream<S, C> {
    type Target = TokenStream<S>;
    fn deref(&self) -> &TokenStream<S> {
        self.run.as_ref().expect("present until into_parts")
    }
}

impl<S, C: BorrowMut<Conversation>> DerefMut for ChatStream<S, C> {
    fn deref_mut(&mut self) -> &mut TokenStream<S> {
        self.run_mut()
    }
}

impl<S, C: BorrowMut<Conversation>> Iterator for ChatStream<S, C> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.run_mut().core.next_blocking();
        self.record(&item);
        item
    }
}

impl<S, C: BorrowMut<Conversation>> Drop for ChatStream<S, C> {
    fn drop(&mut self) {
        self.finish();
    }
}
