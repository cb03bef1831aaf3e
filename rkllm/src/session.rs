//! The session that runs a model: one run at a time, enforced by the borrow checker.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::builder::path_c_string;
use crate::error::{Error, Result};
use crate::input::{GenerateOptions, Input};
use crate::model::{lora_name_c, try_call_lock, AbortHandle, Model, ModelInner};
use crate::run::{self, HiddenStates};
use crate::stream::{Completion, TokenStream};

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
/// waits for the runtime to return; the model's handle is destroyed when the model and the
/// session are both gone.
pub struct Session {
    pub(crate) inner: Arc<ModelInner>,
    /// The rolling prompt cache of chat turns, when enabled.
    pub(crate) rolling: Option<crate::chat_session::RollingCache>,
    // Not Sync: one thread drives a session at a time.
    _not_sync: PhantomData<Cell<()>>,
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
            rolling: None,
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
        // A stream that was leaked (mem::forget) left its run behind: finish it first.
        self.inner.finish_active();
        self.check_embedding_rows(&input)?;
        start_stream(&self.inner, input, options, hidden, Instant::now())
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
        self.inner.finish_active();
        let _guard = try_call_lock(&self.inner)?;
        // SAFETY: the handle is live (the session keeps the model), no run is in flight (the
        // session is borrowed mutably and leaked runs were joined), calls are serialised by
        // the call lock, and the path outlives the call.
        let rc =
            unsafe { (self.inner.api().load_prompt_cache)(self.inner.handle().0, c_path.as_ptr()) };
        if rc != 0 {
            return Err(Error::Call {
                func: "rkllm_load_prompt_cache",
                code: rc,
            });
        }
        Ok(())
    }

    pub(crate) fn release_cache_raw(&mut self) -> Result<()> {
        self.inner.finish_active();
        let _guard = try_call_lock(&self.inner)?;
        // SAFETY: as in load_cache_raw.
        let rc = unsafe { (self.inner.api().release_prompt_cache)(self.inner.handle().0) };
        if rc != 0 {
            return Err(Error::Call {
                func: "rkllm_release_prompt_cache",
                code: rc,
            });
        }
        Ok(())
    }

    /// A handle that aborts this session's current run from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.model().abort_handle()
    }

    /// The model this session runs (another reference to it).
    pub fn model(&self) -> Model {
        Model {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Starts a run on `inner`, whose borrow the stream keeps; timings count from `started`.
/// The caller has checked embedding rows.
pub(crate) fn start_stream<'s>(
    inner: &'s Arc<ModelInner>,
    input: Input,
    options: &GenerateOptions,
    hidden: bool,
    started: Instant,
) -> Result<TokenStream<'s>> {
    inner.finish_active();
    let lora = match &options.lora {
        Some(adapter) => {
            if adapter.model_id != inner.id() || !inner.has_lora(&adapter.name) {
                return Err(Error::UnknownLora {
                    name: adapter.name.to_string(),
                });
            }
            Some(lora_name_c(adapter)?)
        }
        None => None,
    };
    let save_cache = options
        .save_prompt_cache
        .as_deref()
        .map(|p| path_c_string("prompt_cache_path", p))
        .transpose()?;
    let prompt_tokens = input.known_token_count();
    let (rx, shared) = run::start(inner, input, hidden, lora, save_cache)?;
    Ok(TokenStream::new(
        inner,
        rx,
        shared,
        options.stop_tokens.clone(),
        options.stop_strings.clone(),
        options.max_tokens,
        prompt_tokens,
        started,
    ))
}

impl Drop for Session {
    fn drop(&mut self) {
        self.inner.finish_active();
        if self.rolling.is_some() {
            if let Err(e) = self.disable_chat_prompt_cache() {
                log::warn!(target: "rkllm", "cleaning up the chat prompt cache: {e}");
            }
        }
        self.inner.release_session();
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
