//! The session that runs a model: one run at a time, enforced by the borrow checker.

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
use crate::input::{GenerateOptions, Input, GEMMA_END_OF_TURN, GEMMA_EOS};
use crate::model::{Model, ModelInner};
use crate::stream::{Completion, RunCore, StreamOptions, TokenStream};
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
/// Dropping the session while a run is in flight (its stream leaked) aborts the run and
/// waits for the runtime to return (at most the model's stop timeout); the model's handle is
/// destroyed when the model and the session are both gone.
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
    /// needs no runtime); dropping the future leaves the queue.
    pub fn session_async(&self, timeout: Duration) -> SessionWait {
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
pub struct SessionWait {
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

    /// Starts a run and returns its token stream.
    ///
    /// `rkllm_run` runs on a worker thread; the stream receives the tokens through a bounded
    /// channel. Invalid input is refused here, before the runtime sees it.
    pub fn generate(
        &mut self,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> Result<TokenStream<'_>> {
        self.start(input.into(), options, false)
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
    ) -> Result<TokenStream<'_>> {
        Ok(TokenStream::new(self.start_core(input, options, hidden)?))
    }

    /// Starts a run whose state borrows nothing (the owned streams hold it).
    pub(crate) fn start_core(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
    ) -> Result<RunCore> {
        self.check_embedding_rows(&input)?;
        self.start_run(input, options, hidden, Instant::now(), Vec::new())
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
    /// Starts a run; timings count from `started`, and `end_tokens` end the run as
    /// [`FinishReason::EndOfTurn`](crate::FinishReason::EndOfTurn). The caller has checked
    /// embedding rows.
    pub(crate) fn start_run(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
        started: Instant,
        end_tokens: Vec<i32>,
    ) -> Result<RunCore> {
        self.start_run_observed(input, options, hidden, started, end_tokens, None)
    }

    /// Starts a run whose every callback, and the `rkllm_run` call around them, `observer`
    /// sees first (the on-board probe records them this way).
    #[cfg(feature = "probe")]
    pub(crate) fn start_stream_observed(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        observer: Arc<dyn RunObserver>,
    ) -> Result<TokenStream<'_>> {
        self.check_embedding_rows(&input)?;
        let core = self.start_run_observed(
            input,
            options,
            false,
            Instant::now(),
            Vec::new(),
            Some(observer),
        )?;
        Ok(TokenStream::new(core))
    }

    fn start_run_observed(
        &mut self,
        input: Input,
        options: &GenerateOptions,
        hidden: bool,
        started: Instant,
        end_tokens: Vec<i32>,
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
        // Gemma's end ids end the turn cleanly, however they were asked for.
        let (ends, stop_tokens): (Vec<i32>, Vec<i32>) = options
            .stop_tokens
            .iter()
            .partition(|id| [GEMMA_END_OF_TURN, GEMMA_EOS].contains(id));
        let mut end_tokens = end_tokens;
        end_tokens.extend(ends);
        let job = RunJob::new(input, hidden, lora, save_cache)?;
        let run = inner.handle.start_run(job, observer)?;
        Ok(RunCore::new(
            &inner.handle,
            inner.settings,
            run,
            StreamOptions {
                stop_tokens,
                stop_strings: options.stop_strings.clone(),
                max_tokens: options.max_tokens,
                prompt_tokens,
                prompt_estimated,
                end_tokens,
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

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.inner.handle.stop_active() {
            log::error!(target: "rkllm", "stopping the session's run: {e}");
        }
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
