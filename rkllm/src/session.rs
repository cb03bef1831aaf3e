//! The session that runs a model: one run at a time, enforced by the borrow checker.

use std::borrow::BorrowMut;
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{c_string, path_c_string, Error, Result};
use crate::ffi::callback::RunObserver;
use crate::ffi::job::RunJob;
use crate::ffi::AbortHandle;
use crate::hidden::HiddenStates;
use crate::input::{GenerateOptions, Input};
use crate::model::{Model, ModelInner};
use crate::stream::{
    Completion, FinishReason, Refused, RunCore, RunEnd, StreamOptions, Timings, Token,
};
use crate::wait::{GateWait, WaitError};

/// Runs a [`Model`]. Get it with [`Model::session`].
///
/// A run borrows the session mutably, so two runs on one handle cannot exist at once:
///
/// ```compile_fail
/// # fn f(session: &mut rkllm::Session) -> rkllm::Result<()> {
/// let opts = rkllm::GenerateOptions::new();
/// let first = session.generate("Hello", &opts)?;
/// let second = session.generate("Hi", &opts)?; // error: second mutable borrow
/// drop(first);
/// # Ok(()) }
/// ```
///
/// `Session` is `Send` (it can move to a worker thread) but not `Sync`:
///
/// ```compile_fail
/// fn needs_sync<T: Sync>() {}
/// needs_sync::<rkllm::Session>();
/// ```
///
/// Dropping the session while a run is in flight (its stream leaked) asks the run to stop
/// and returns at once, as dropping a stream does; the session's next holder waits for the
/// run, and the model's handle is destroyed, once the run has returned, when the model and
/// the session are both gone.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Paris.").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let mut session = model.session()?;
/// let mut text = String::new();
/// for token in session.generate("The capital of France?", &GenerateOptions::new())? {
///     text.push_str(&token?.text);
/// }
/// assert_eq!(text, "Paris.");
/// // One session per model at a time.
/// assert!(matches!(model.session(), Err(rkllm::Error::Busy)));
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct Session {
    pub(crate) inner: Arc<ModelInner>,
    // Not Sync: one thread drives a session at a time.
    _not_sync: PhantomData<Cell<()>>,
}

impl Model {
    /// The session that runs this model. There is one at a time per model: this returns
    /// [`Error::Busy`] while another session exists or others are waiting for it (to wait
    /// in turn instead, use [`session_wait`](Model::session_wait) or
    /// [`session_async`](Model::session_async)).
    ///
    /// A server keeps one session for its whole life rather than one per request: the
    /// rolling prompt cache that keeps multi-turn chat fast lives in a
    /// [`ChatSession`](crate::chat::ChatSession) wrapped around it, and is lost with it.
    pub fn session(&self) -> Result<Session> {
        if !self.inner.session_gate.try_acquire() {
            return Err(Error::Busy);
        }
        Ok(Session::new(Arc::clone(&self.inner)))
    }

    /// Waits for the session, first come, first served, at most `timeout`.
    ///
    /// Fails with [`WaitError::QueueFull`] at once when
    /// [`max_session_waiters`](Model::set_max_session_waiters) callers are already waiting,
    /// and with [`WaitError::TimedOut`] when the session did not come free in time. The
    /// session is handed to the next waiter when it is dropped.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
    /// use std::time::Duration;
    /// use rkllm::{mock::MockModel, wait::WaitError, Model, Runtime};
    /// let file = MockModel::new().write_temp_file()?;
    /// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
    /// let session = model.session_wait(Duration::from_secs(1))?;
    /// let timed_out = model.session_wait(Duration::from_millis(10));
    /// assert!(matches!(timed_out, Err(WaitError::TimedOut { .. })));
    /// drop(session);
    /// assert!(model.session_wait(Duration::ZERO).is_ok());
    /// # Ok(()) }
    /// # #[cfg(not(feature = "mock"))] fn main() {}
    /// ```
    pub fn session_wait(&self, timeout: Duration) -> std::result::Result<Session, WaitError> {
        self.inner.session_gate.acquire(timeout)?;
        Ok(Session::new(Arc::clone(&self.inner)))
    }

    /// The async form of [`session_wait`](Model::session_wait): resolves to the session
    /// when it is this caller's turn, or to a [`WaitError`]. Executor-agnostic (the timeout
    /// needs no runtime); dropping the future leaves the queue. The caller joins the
    /// queue when the future is first polled. The future is `Send`, `Unpin` and `'static`,
    /// so it can be spawned, or kept in a struct boxed.
    pub fn session_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = std::result::Result<Session, WaitError>> + Send + Unpin + 'static
    {
        SessionWait {
            inner: Arc::clone(&self.inner),
            wait: self.inner.session_gate.wait(timeout),
        }
    }

    /// How many callers may wait for the session at once (default
    /// [`DEFAULT_MAX_WAITERS`](crate::wait::DEFAULT_MAX_WAITERS)); beyond it
    /// [`session_wait`](Model::session_wait) fails with [`WaitError::QueueFull`].
    pub fn set_max_session_waiters(&self, max: usize) {
        self.inner.session_gate.set_max_waiters(max);
    }

    /// How many callers are waiting for the session now.
    pub fn session_waiting(&self) -> usize {
        self.inner.session_gate.waiting()
    }

    /// Consumes the model into its session.
    pub fn into_session(self) -> Result<Session> {
        self.session()
    }
}

/// The future of [`Model::session_async`].
#[must_use = "a future does nothing unless polled"]
struct SessionWait {
    inner: Arc<ModelInner>,
    wait: GateWait,
}

impl std::fmt::Debug for SessionWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWait").finish_non_exhaustive()
    }
}

impl Future for SessionWait {
    type Output = std::result::Result<Session, WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.wait).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Session::new(Arc::clone(&this.inner)))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(inner: Arc<ModelInner>) -> Session {
        Session {
            inner,
            _not_sync: PhantomData,
        }
    }

    /// Starts a run and returns its token stream, which borrows the session.
    ///
    /// `rkllm_run` runs on a worker thread; the stream receives the tokens through a bounded
    /// channel. Invalid input is refused here, before the runtime sees it.
    pub fn generate(
        &mut self,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> Result<TokenStream<&mut Session>> {
        self.start(input.into(), options, false)
    }

    /// Like [`generate`](Session::generate), but the stream owns the session: it can be
    /// returned from a function or moved into a `'static` thread or task, and gives the
    /// session back with [`TokenStream::into_session`]. When the run cannot start, the
    /// session comes back in the [`Refused`] value (`?` turns it into its [`Error`]).
    pub fn into_generate(
        self,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> std::result::Result<TokenStream<Session>, Refused<Session>> {
        TokenStream::new(self, input, options)
    }

    /// Runs to the end and collects the result: text, token ids, finish reason, timings.
    pub fn complete(
        &mut self,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> Result<Completion> {
        self.generate(input, options)?.complete()
    }

    /// Runs in last-hidden-layer mode and returns the hidden states, copied out of the
    /// runtime's buffer.
    pub fn hidden_states(&mut self, input: impl Into<Input>) -> Result<HiddenStates> {
        self.start(input.into(), &GenerateOptions::default(), true)?
            .into_hidden()
    }

    /// Embeds a text (or token ids) as one vector, for retrieval (RAG): the last hidden
    /// layer of a hidden-layer run, mean-pooled over the input's tokens and L2-normalised,
    /// so the dot product of two embeddings is their cosine similarity (see [`crate::embed`]
    /// for the pooling, and to pool differently from [`hidden_states`](Session::hidden_states)).
    /// The vector's length
    /// is the model's hidden size. A decoder's last hidden layer is a usable but not a
    /// trained sentence embedding: compare texts embedded by the same model only.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
    /// use rkllm::{mock::MockModel, Model, Runtime};
    /// let file = MockModel::new().embed_dim(8).write_temp_file()?;
    /// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
    /// let mut session = model.session()?;
    /// let v = session.embed("Hello world")?;
    /// assert_eq!(v.len(), 8);
    /// let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    /// assert!((norm - 1.0).abs() < 1e-4);
    /// let batch = session.embed_batch(["Hello world", "Goodbye"])?;
    /// assert_eq!(batch[0], v);
    /// # Ok(()) }
    /// # #[cfg(not(feature = "mock"))] fn main() {}
    /// ```
    pub fn embed(&mut self, input: impl Into<Input>) -> Result<Vec<f32>> {
        let states = self.hidden_states(input)?;
        crate::embed::embedding(&states, crate::embed::Pooling::Mean)
    }

    /// Embeds several texts (see [`embed`](Session::embed)), one run each, in order.
    pub fn embed_batch<I>(&mut self, inputs: I) -> Result<Vec<Vec<f32>>>
    where
        I: IntoIterator,
        I::Item: Into<Input>,
    {
        inputs.into_iter().map(|input| self.embed(input)).collect()
    }

    /// The model's embedding size: the row length of embedding and image-embedding inputs.
    ///
    /// The 1.1.1 runtime reads `n_tokens × embedding size` floats from an embedding input
    /// but has no call that tells the size, so a wrong buffer would be read out of bounds.
    /// It is therefore measured once per model, as the row length of the last hidden layer
    /// for a one-token input (a decoder's hidden size is its embedding size), and every
    /// embedding input is checked against it.
    pub fn embedding_size(&mut self) -> Result<usize> {
        if let Some(&n) = self.inner.embedding_size.get() {
            return Ok(n);
        }
        let states = self.hidden_states(Input::tokens(vec![1]))?;
        let n = states.embd_size();
        if n == 0 {
            return Err(Error::InvalidInput(
                "the runtime reported an embedding size of 0; embedding input is unavailable"
                    .into(),
            ));
        }
        Ok(*self.inner.embedding_size.get_or_init(|| n))
    }

    fn check_embedding_rows(&mut self, input: &Input) -> Result<()> {
        let (what, len, rows) = match input {
            Input::Embeddings { data, n_tokens } => ("embedding input", data.len(), *n_tokens),
            Input::Multimodal {
                image_embed,
                n_image_tokens,
                ..
            } => ("image embedding", image_embed.len(), *n_image_tokens),
            _ => return Ok(()),
        };
        input.validate()?;
        let size = self.embedding_size()?;
        if len != rows * size {
            return Err(Error::InvalidInput(format!(
                "{what}: {len} floats for {rows} rows, but this model's rows are {size} floats \
                 ({} expected)",
                rows * size
            )));
        }
        Ok(())
    }

    fn start(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
    ) -> Result<TokenStream<&mut Session>> {
        let core = self.start_core(input, options, hidden)?;
        Ok(TokenStream {
            core,
            session: self,
        })
    }

    /// Starts a run whose state borrows nothing (the stream holds it and its session).
    pub(crate) fn start_core(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
    ) -> Result<RunCore> {
        self.check_embedding_rows(&input)?;
        self.start_run(input, options, hidden, Instant::now())
    }

    /// Loads a prompt cache saved by an earlier run
    /// ([`GenerateOptions::save_prompt_cache`]); later prompts that begin with the cached
    /// prompt reuse its prefill. The returned guard releases the cache when dropped and
    /// gives access to the session meanwhile.
    pub fn load_prompt_cache(&mut self, path: impl AsRef<Path>) -> Result<PromptCache<'_>> {
        let path = path.as_ref().to_path_buf();
        self.load_cache_raw(&path)?;
        Ok(PromptCache {
            session: self,
            path,
            released: false,
        })
    }

    pub(crate) fn load_cache_raw(&mut self, path: &Path) -> Result<()> {
        let c_path = path_c_string("prompt_cache_path", path)?;
        // A stream that was leaked (mem::forget) left its run behind: stop it first.
        self.inner.handle.stop_active()?;
        self.inner.handle.load_prompt_cache(&c_path)
    }

    pub(crate) fn release_cache_raw(&mut self) -> Result<()> {
        self.inner.handle.stop_active()?;
        self.inner.handle.release_prompt_cache()
    }

    /// Waits until no run is in flight: a run let go earlier (its stream was dropped, or
    /// given back with [`TokenStream::into_session`]) is waited for, at most the model's
    /// stop timeout from the drop. The session's next call does this itself; call it to
    /// choose where the wait happens.
    ///
    /// # Errors
    /// [`Error::ModelUnusable`] when the run did not return within the stop timeout.
    pub fn wait_idle(&mut self) -> Result<()> {
        self.inner.handle.stop_active()
    }

    /// The async form of [`wait_idle`](Self::wait_idle): resolves once no run is in flight,
    /// without blocking the thread that polls it (executor-agnostic). Dropping a stream
    /// never waits, but a session call after the drop waits for the dropped run (a prefill
    /// the runtime cannot cut short runs on); in async code, await this first so that wait
    /// never holds an executor thread.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
    /// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
    /// let file = MockModel::new().answer("Hello!").write_temp_file()?;
    /// let model = Model::builder(file.path()).runtime(Runtime::mock()).build()?;
    /// let mut session = model.session()?;
    /// futures::executor::block_on(async {
    ///     let stream = session.generate("Hi", &GenerateOptions::new())?;
    ///     drop(stream); // returns at once; the run is stopped off this thread
    ///     session.wait_idle_async().await?; // the executor thread stays free meanwhile
    ///     let next = session.complete("Hi again", &GenerateOptions::new())?;
    ///     assert_eq!(next.text, "Hello!");
    ///     Ok(())
    /// })
    /// # }
    /// # #[cfg(not(feature = "mock"))] fn main() {}
    /// ```
    ///
    /// # Errors
    /// [`Error::ModelUnusable`] when the run did not return within the stop timeout.
    pub fn wait_idle_async(&mut self) -> impl Future<Output = Result<()>> + '_ {
        let mut timer: Option<crate::wait::TimerEntry> = None;
        std::future::poll_fn(move |cx| match self.inner.handle.poll_idle(cx.waker()) {
            Ok(None) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
            Ok(Some(deadline)) => {
                // Woken when the run returns, or at the deadline to settle it.
                if !timer.as_ref().is_some_and(|t| t.update(cx.waker())) {
                    timer = Some(crate::wait::wake_at_unless_dropped(
                        deadline,
                        cx.waker().clone(),
                    ));
                }
                Poll::Pending
            }
        })
    }

    /// A handle that aborts this session's current run, whichever it is, from any thread.
    /// For a handle bound to one run, use [`TokenStream::abort_handle`].
    pub fn abort_handle(&self) -> AbortHandle {
        self.inner.handle.abort_handle(None)
    }

    /// The model this session runs (another reference to it).
    pub fn model(&self) -> Model {
        Model {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Session {
    /// Starts a run; timings count from `started`. The caller has checked embedding rows.
    pub(crate) fn start_run(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
        started: Instant,
    ) -> Result<RunCore> {
        self.start_run_observed(input, options, hidden, started, None)
    }

    /// Starts a run whose every callback, and the `rkllm_run` call around them, `observer`
    /// sees first (the on-board probe records them this way).
    #[cfg(feature = "probe")]
    pub(crate) fn start_stream_observed(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        observer: Arc<dyn RunObserver>,
    ) -> Result<TokenStream<&mut Session>> {
        self.check_embedding_rows(&input)?;
        let core =
            self.start_run_observed(input, options, false, Instant::now(), Some(observer))?;
        Ok(TokenStream {
            core,
            session: self,
        })
    }

    fn start_run_observed(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
        started: Instant,
        observer: Option<Arc<dyn RunObserver>>,
    ) -> Result<RunCore> {
        let inner = &self.inner;
        if options.max_tokens == Some(0) {
            return Err(Error::InvalidParameter {
                name: "max_tokens",
                reason: "0 would generate nothing; it must be at least 1".into(),
            });
        }
        input.validate()?;
        if let Some(vocab) = inner.settings.vocab_size {
            input.validate_vocab(vocab)?;
        }
        let lora = match &options.lora {
            Some(adapter) => {
                if adapter.model_id != inner.id() || !inner.has_lora(&adapter.name) {
                    return Err(Error::UnknownLora {
                        name: adapter.name.to_string(),
                    });
                }
                Some(c_string("lora_adapter_name", adapter.name.as_bytes())?)
            }
            None => None,
        };
        let save_cache = options
            .save_prompt_cache
            .as_deref()
            .map(|p| path_c_string("prompt_cache_path", p))
            .transpose()?;
        let (prompt_tokens, prompt_estimated) = prompt_token_count(&input);
        let job = RunJob::new(input, hidden, lora, save_cache)?;
        let run = inner.handle.start_run(job, observer)?;
        Ok(RunCore::new(
            &inner.handle,
            inner.settings,
            run,
            StreamOptions {
                stop_tokens: options.stop_tokens.clone(),
                stop_strings: options.stop_strings.clone(),
                max_tokens: options.max_tokens,
                prompt_tokens,
                prompt_estimated,
                end_tokens: options.end_tokens.clone(),
                started,
            },
        ))
    }
}

/// The prompt's token count, and whether it is an estimate (one token per four UTF-8 bytes
/// of text; see [`Timings::prompt_tokens_estimated`](crate::Timings::prompt_tokens_estimated)).
fn prompt_token_count(input: &Input) -> (Option<usize>, bool) {
    const BYTES_PER_TOKEN: usize = 4;
    match input.known_token_count() {
        Some(n) => (Some(n), false),
        None => match input {
            Input::Prompt(text) => (Some(text.len().div_ceil(BYTES_PER_TOKEN)), true),
            Input::Multimodal {
                prompt,
                n_image_tokens,
                ..
            } => (
                Some(prompt.len().div_ceil(BYTES_PER_TOKEN) + n_image_tokens),
                true,
            ),
            _ => (None, false),
        },
    }
}

/// The tokens of one run, as they are generated. `S` is how the stream holds its
/// [`Session`](crate::Session): borrowed (`&mut Session`, from
/// [`Session::generate`](crate::Session::generate)) or owned (a `Session` from
/// [`Session::into_generate`](crate::Session::into_generate), or any owner of one, such as a
/// [`FairGuard`](crate::wait::FairGuard), with [`TokenStream::new`]). An owned stream is
/// `'static` when `S` is: it can be returned from a function, sent to another thread or
/// moved into an async task, and [`into_session`](TokenStream::into_session) gives the
/// session back.
///
/// An `Iterator` of `Result<Token>`: errors ([`Error::Run`], [`Error::Call`],
/// [`Error::InvalidUtf8`]) arrive in order, where they happened in the text; after the last
/// item the run has returned. A panic in the runtime callback is re-raised here, on the
/// consumer's thread. With the `async` feature, `into_async` makes it a
/// `futures_core::Stream` with the same accessors; iterating (a blocking `next`) inside an
/// async task blocks an executor thread for the whole run.
///
/// # Stopping
///
/// Dropping the stream never blocks: token delivery stops, the runtime is asked to abort on
/// a thread of its own, and the drop returns at once. The session's next call (a run, a
/// prompt cache, a LoRA load) or the model's drop waits for the run to return, at most the
/// model's [stop timeout](crate::ModelBuilder::stop_timeout) from the drop; a run that does
/// not return in time makes the model unusable ([`Error::ModelUnusable`]). To wait for the
/// run yourself, call [`stop`](TokenStream::stop) (blocking) or
/// [`stop_async`](TokenStream::stop_async).
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, FinishReason, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Hello there, friend").write_temp_file()?;
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
///
/// An owned stream, moved to another thread:
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime, Session, TokenStream};
/// fn start(session: Session, prompt: &str) -> rkllm::Result<TokenStream> {
///     Ok(session.into_generate(prompt, &GenerateOptions::new())?)
/// }
/// let file = MockModel::new().answer("Hello from a thread").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let stream = start(model.session()?, "Hi")?;
/// let worker = std::thread::spawn(move || {
///     let mut stream = stream;
///     let text: String = stream.by_ref().map(|t| t.unwrap().text).collect();
///     (text, stream.into_session())
/// });
/// let (text, _session) = worker.join().unwrap();
/// assert_eq!(text, "Hello from a thread");
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct TokenStream<S = Session> {
    // Declared first: the run is let go before the session is dropped.
    pub(crate) core: RunCore,
    pub(crate) session: S,
}

impl<S> std::fmt::Debug for TokenStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("tokens", &self.core.timings().generated_tokens)
            .field("finish", &self.core.finish_reason())
            .finish_non_exhaustive()
    }
}

impl<S> TokenStream<S> {
    /// Why the run stopped, once it has (after the iterator returned `None`).
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.core.finish_reason()
    }

    /// How the runtime ended the run, once it has.
    pub fn run_end(&self) -> Option<RunEnd> {
        self.core.run_end()
    }

    /// Stops the run: no more tokens are delivered, and the stream ends with
    /// [`FinishReason::Aborted`]. Never waits (the runtime is asked to abort on a thread of
    /// its own), so an async consumer can abort, then poll the stream to its end.
    pub fn abort(&mut self) {
        self.core.abort();
    }

    /// A handle that stops this run, and only this run, from any thread. Once the run is
    /// over it does nothing.
    pub fn abort_handle(&self) -> AbortHandle {
        self.core.abort_handle()
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        self.core.timings()
    }

    /// Generated token ids so far, in order, including those of tokens that were not
    /// yielded because their text was empty (stop and end tokens are not included).
    pub fn token_ids(&self) -> &[u32] {
        self.core.token_ids()
    }

    /// Stops the run (if it is not over) and waits until the runtime has returned, at most
    /// the model's stop timeout; the stream then ends with [`FinishReason::Aborted`] (or how
    /// it had ended already).
    ///
    /// # Errors
    /// [`Error::ModelUnusable`] when the runtime did not return in time.
    pub fn stop(&mut self) -> Result<()> {
        self.core.stop()
    }

    /// The async form of [`stop`](TokenStream::stop): resolves once the runtime has returned
    /// (or the stop timeout has passed). Executor-agnostic; it never blocks the thread that
    /// polls it.
    pub fn stop_async(&mut self) -> impl std::future::Future<Output = Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.core.poll_stop(cx))
    }

    /// Runs to the end and collects the text, token ids, finish reason and timings.
    pub fn complete(mut self) -> Result<Completion> {
        self.core.complete()
    }

    /// Runs to the end (blocking) and collects the result; the session comes back with it.
    pub fn complete_with_session(mut self) -> (Result<Completion>, S) {
        let completion = self.core.complete();
        (completion, self.into_session())
    }

    /// Gives the session back. A run that is not over is let go as when the stream is
    /// dropped (without waiting); the session's next call waits for it.
    pub fn into_session(self) -> S {
        let TokenStream { core, session } = self;
        drop(core);
        session
    }

    /// Runs to the end and returns the hidden states the run delivered.
    pub(crate) fn into_hidden(mut self) -> Result<HiddenStates> {
        self.core.take_hidden()
    }

    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Token>>> {
        self.core.poll_item(cx)
    }
}

impl<S> Iterator for TokenStream<S> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        self.core.next_blocking()
    }
}

impl<S: BorrowMut<Session>> TokenStream<S> {
    /// Starts a run on `session`, which the stream holds (see [`Session::generate`]): any
    /// owner of a session, such as a [`FairGuard`](crate::wait::FairGuard). When the run cannot
    /// start, the session comes back in the [`Refused`] value.
    pub fn new(
        mut session: S,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> std::result::Result<Self, Refused<S>> {
        match session
            .borrow_mut()
            .start_core(input.into(), options, false)
        {
            Ok(core) => Ok(TokenStream { core, session }),
            Err(error) => Err(Refused::new(error, session)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Never blocks: a run still in flight (its stream leaked) is asked to stop; the next
        // holder of the session, or the model's drop, waits for it.
        self.inner.handle.stop_active_in_background();
        // The next waiter (first come, first served) gets the session.
        self.inner.session_gate.release();
    }
}
/// A loaded prompt cache; releases it (`rkllm_release_prompt_cache`) when dropped.
/// Dereferences to the [`Session`], so runs can use the cache meanwhile.
#[derive(Debug)]
pub struct PromptCache<'s> {
    session: &'s mut Session,
    path: PathBuf,
    released: bool,
}

impl PromptCache<'_> {
    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the cache now, reporting a failure that dropping would only log.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.session.release_cache_raw()
    }
}

impl Deref for PromptCache<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session
    }
}

impl DerefMut for PromptCache<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session
    }
}

impl Drop for PromptCache<'_> {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.session.release_cache_raw() {
                log::warn!(target: "rkllm", "releasing prompt cache {}: {e}", self.path.display());
            }
        }
    }
}
