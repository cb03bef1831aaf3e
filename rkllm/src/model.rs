//! A loaded model: the runtime handle, destroyed exactly once, and what hangs off it.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rkllm_sys::{LLMHandle, RKLLMLoraAdapter, RkllmApi};

use crate::builder::{ModelBuilder, RunningSense, RuntimeSettings};
use crate::diagnosis::{Diagnosis, RuntimeInfo};
use crate::error::{c_string, Error, Result};
use crate::run::ActiveRun;
use crate::runtime::Runtime;
use crate::session::Session;

/// The runtime's opaque handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawHandle(pub LLMHandle);

// SAFETY: the handle is an opaque token the runtime hands out; it is never dereferenced
// here. This crate serialises every call that uses it (runs hold the run slot, other calls
// the call lock) except `rkllm_abort` and `rkllm_is_running`, which the runtime provides for
// use from another thread while a run blocks.
unsafe impl Send for RawHandle {}
// SAFETY: as above: sharing the token between threads is harmless; use is serialised.
unsafe impl Sync for RawHandle {}

/// Shared between the model and its abort handles: the handle for `rkllm_abort`, cleared
/// before `rkllm_destroy` so an abort handle can never reach a destroyed handle.
pub(crate) struct AbortState {
    api: RkllmApi,
    inner: Mutex<AbortInner>,
    /// Set when an abort of the current run was requested. Atomic so the consumer can read
    /// it without the lock, which an abort may hold for as long as `rkllm_abort` blocks.
    requested: AtomicBool,
}

struct AbortInner {
    handle: Option<RawHandle>,
    running: bool,
}

impl AbortState {
    fn lock(&self) -> MutexGuard<'_, AbortInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin_run(&self) {
        let mut s = self.lock();
        s.running = true;
        self.requested.store(false, Ordering::SeqCst);
    }

    pub(crate) fn end_run(&self) {
        self.lock().running = false;
    }

    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Calls `rkllm_abort` if a run is in flight. Returns whether one was.
    pub(crate) fn abort(&self) -> bool {
        let s = self.lock();
        if !s.running {
            return false;
        }
        self.requested.store(true, Ordering::SeqCst);
        if let Some(h) = s.handle {
            // SAFETY: the handle is live: it is taken out of this state (under this lock)
            // before rkllm_destroy, and the lock is held across the call. rkllm_abort is
            // meant to be called from another thread while rkllm_run blocks.
            unsafe { (self.api.abort)(h.0) };
        }
        true
    }

    fn clear(&self) {
        self.lock().handle = None;
    }
}

/// Stops the current run of a model from any thread.
///
/// Cloneable, `Send + Sync`, and safe to keep after the model is gone (it then does
/// nothing), like rusqlite's `InterruptHandle`. The run ends with
/// [`FinishReason::Aborted`](crate::FinishReason::Aborted).
#[derive(Clone)]
pub struct AbortHandle {
    state: Arc<AbortState>,
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle").finish_non_exhaustive()
    }
}

impl AbortHandle {
    /// Asks the runtime to stop the run in progress. Returns `false` when no run was in
    /// progress (nothing is sent to the runtime then). The stream stops delivering tokens at
    /// once; the runtime may take a moment to return (it does not cut a prefill short).
    pub fn abort(&self) -> bool {
        self.state.abort()
    }
}

/// A LoRA adapter loaded into a model, selected per run with
/// [`GenerateOptions::lora`](crate::GenerateOptions::lora).
///
/// Only a value returned by [`Model::load_lora`] exists, so a misspelt name cannot silently
/// run the base model, and an adapter of another model is refused at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraAdapter {
    pub(crate) name: Arc<str>,
    pub(crate) model_id: u64,
}

impl LoraAdapter {
    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ModelInner {
    runtime: Runtime,
    handle: RawHandle,
    id: u64,
    abort: Arc<AbortState>,
    /// Serialises calls that use the handle other than runs, abort and is_running.
    call_lock: Arc<Mutex<()>>,
    /// Whether a `Session` exists.
    session_taken: AtomicBool,
    /// The run in flight, if its stream was leaked instead of dropped.
    pub(crate) active: Mutex<Option<ActiveRun>>,
    loras: Mutex<HashSet<Arc<str>>>,
    path: PathBuf,
    diagnosis: Diagnosis,
    max_context_len: u32,
    /// Row length of embedding inputs, measured on first use.
    pub(crate) embedding_size: OnceLock<usize>,
    settings: RuntimeSettings,
}

impl ModelInner {
    pub(crate) fn api(&self) -> &RkllmApi {
        self.runtime.api()
    }
    pub(crate) fn settings(&self) -> RuntimeSettings {
        self.settings
    }
    pub(crate) fn handle(&self) -> RawHandle {
        self.handle
    }
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
    pub(crate) fn abort_state(&self) -> &Arc<AbortState> {
        &self.abort
    }
    pub(crate) fn call_lock(&self) -> MutexGuard<'_, ()> {
        self.call_lock.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn call_lock_arc(&self) -> Arc<Mutex<()>> {
        Arc::clone(&self.call_lock)
    }
    /// Whether the active run's worker has ended (or there is none).
    pub(crate) fn active_finished(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|a| a.worker.is_finished())
    }
    /// Joins the active run, which must have been stopped or have ended.
    pub(crate) fn join_active(&self) {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(active) = active {
            active.join();
        }
    }
    pub(crate) fn release_session(&self) {
        self.session_taken.store(false, Ordering::Release);
    }
    pub(crate) fn has_lora(&self, name: &str) -> bool {
        self.loras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Aborts and joins a run whose stream was leaked.
    pub(crate) fn finish_active(&self) {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut active) = active {
            // Release a callback blocked on the (unread) channel before aborting, in case
            // rkllm_abort waits for the run to stop.
            active.cancel.take();
            self.abort.abort();
            active.join();
        }
    }
}

impl Drop for ModelInner {
    fn drop(&mut self) {
        // Order matters: stop and join any run, make abort handles inert, then destroy.
        self.finish_active();
        self.abort.clear();
        let _guard = self.call_lock();
        // SAFETY: the handle came from a successful rkllm_init of this runtime; no run is in
        // flight (joined above), no abort handle can reach it any more, and this is the only
        // place that destroys it, once.
        let rc = unsafe { (self.runtime.api().destroy)(self.handle.0) };
        if rc != 0 {
            log::warn!(target: "rkllm", "rkllm_destroy returned {rc}");
        }
    }
}

/// A model loaded into the runtime. Build one with [`Model::builder`].
///
/// `Model` is `Send + Sync` and cheap to share by reference: runs happen through its one
/// [`Session`] (the 1.1.x runtime runs one inference per handle at a time). The handle is
/// destroyed exactly once, when the model and its session are both gone, after any run in
/// flight has been aborted and has returned.
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.inner.path)
            .field("runtime", &self.inner.runtime)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Starts building a model from the `.rkllm` file at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> ModelBuilder {
        ModelBuilder::new(path)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_handle(
        runtime: Runtime,
        handle: LLMHandle,
        path: PathBuf,
        diagnosis: Diagnosis,
        max_context_len: u32,
        settings: RuntimeSettings,
    ) -> Model {
        let abort = Arc::new(AbortState {
            api: *runtime.api(),
            inner: Mutex::new(AbortInner {
                handle: Some(RawHandle(handle)),
                running: false,
            }),
            requested: AtomicBool::new(false),
        });
        Model {
            inner: Arc::new(ModelInner {
                runtime,
                handle: RawHandle(handle),
                id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
                abort,
                call_lock: Arc::new(Mutex::new(())),
                session_taken: AtomicBool::new(false),
                active: Mutex::new(None),
                loras: Mutex::new(HashSet::new()),
                path,
                diagnosis,
                max_context_len,
                embedding_size: OnceLock::new(),
                settings,
            }),
        }
    }

    /// The session that runs this model. There is one at a time per model: this returns
    /// [`Error::Busy`] while another session exists (a server can answer "busy" then).
    pub fn session(&self) -> Result<Session> {
        if self.inner.session_taken.swap(true, Ordering::AcqRel) {
            return Err(Error::Busy);
        }
        Ok(Session::new(Arc::clone(&self.inner)))
    }

    /// Consumes the model into its session.
    pub fn into_session(self) -> Result<Session> {
        self.session()
    }

    /// A handle that aborts this model's current run from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            state: Arc::clone(&self.inner.abort),
        }
    }

    /// Loads a LoRA adapter (converted by the RKLLM toolkit) under `name`, with `scale`.
    ///
    /// Fails with [`Error::Busy`] while a run is in flight (the runtime serialises calls on a
    /// handle), and with [`Error::Call`] when the runtime refuses the adapter.
    pub fn load_lora(&self, path: impl AsRef<Path>, name: &str, scale: f32) -> Result<LoraAdapter> {
        if !scale.is_finite() {
            return Err(Error::InvalidParameter {
                name: "lora scale",
                reason: format!("{scale} is not a finite number"),
            });
        }
        let c_path = crate::builder::path_c_string("lora_adapter_path", path.as_ref())?;
        let c_name = c_string("lora_adapter_name", name)?;
        let _guard = self.try_call_lock()?;
        let mut adapter = RKLLMLoraAdapter {
            lora_adapter_path: c_path.as_ptr(),
            lora_adapter_name: c_name.as_ptr(),
            scale,
        };
        // SAFETY: the handle is live (self keeps it), the call lock serialises it with every
        // other call but abort, and the strings outlive the call (the runtime copies them).
        let rc = unsafe { (self.inner.api().load_lora)(self.inner.handle.0, &mut adapter) };
        if rc != 0 {
            return Err(Error::Call {
                func: "rkllm_load_lora",
                code: rc,
            });
        }
        let name: Arc<str> = Arc::from(name);
        self.inner
            .loras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::clone(&name));
        Ok(LoraAdapter {
            name,
            model_id: self.inner.id,
        })
    }

    fn try_call_lock(&self) -> Result<MutexGuard<'_, ()>> {
        try_call_lock(&self.inner)
    }

    /// What the runtime said about itself at init (version, driver, platform), when it
    /// printed its version line and the log was captured.
    pub fn runtime_info(&self) -> Option<RuntimeInfo> {
        self.inner.diagnosis.runtime_info()
    }

    /// The runtime's log around `rkllm_init`, read into a diagnosis (warnings included).
    pub fn init_diagnosis(&self) -> &Diagnosis {
        &self.inner.diagnosis
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The context length the model was built with.
    pub fn max_context_len(&self) -> u32 {
        self.inner.max_context_len
    }

    /// The runtime this model runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Whether the runtime reports a task running, by `rkllm_is_running`, read with the
    /// model's [`RunningSense`] (by default 0 means running, as the header documents; the
    /// probe example checks a board's runtime).
    pub fn runtime_reports_running(&self) -> bool {
        // SAFETY: the handle is live while self exists; rkllm_is_running is meant to be
        // callable while a run blocks on another thread.
        let rc = unsafe { (self.inner.api().is_running)(self.inner.handle.0) };
        match self.inner.settings.running_sense {
            RunningSense::ZeroWhileRunning => rc == 0,
            RunningSense::NonZeroWhileRunning => rc != 0,
        }
    }
}

pub(crate) fn try_call_lock(inner: &ModelInner) -> Result<MutexGuard<'_, ()>> {
    match inner.call_lock.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(Error::Busy),
    }
}

/// Keep the handle-string conversion in one place.
pub(crate) fn lora_name_c(adapter: &LoraAdapter) -> Result<CString> {
    c_string("lora_adapter_name", adapter.name.as_bytes())
}
