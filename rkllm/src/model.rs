//! A loaded model: its runtime handle (owned by the seam) and what hangs off it.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::diagnosis::Diagnosis;
use crate::error::{c_string, path_c_string, Error, Result};
use crate::ffi::handle::Handle;
use crate::ffi::AbortHandle;
use crate::lora::LoraAdapter;
use crate::runtime::Runtime;
use crate::settings::{RunningSense, RuntimeSettings};
use crate::wait::{Gate, DEFAULT_MAX_WAITERS};

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// What a model and its session share.
pub(crate) struct ModelInner {
    pub(crate) handle: Arc<Handle>,
    id: u64,
    /// Held while a `Session` exists; callers wait for it in turn.
    pub(crate) session_gate: Arc<Gate>,
    loras: Mutex<HashSet<Arc<str>>>,
    path: PathBuf,
    diagnosis: Diagnosis,
    max_context_len: u32,
    /// Row length of embedding inputs, measured on first use.
    pub(crate) embedding_size: OnceLock<usize>,
    pub(crate) settings: RuntimeSettings,
}

impl ModelInner {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
    pub(crate) fn has_lora(&self, name: &str) -> bool {
        self.loras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// A model loaded into the runtime. Build one with [`Model::builder`].
///
/// `Model` is `Send + Sync` and cheap to share by reference: runs happen through its one
/// [`Session`](crate::Session) (the 1.1.x runtime runs one inference per handle at a time).
/// The handle is destroyed exactly once, when the model and its session are both gone,
/// after any run in flight has been aborted and has returned.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
/// let file = MockModel::new().answer("Hello!").write_temp_file()?;
/// let model = Model::builder(&*file)
///     .runtime(Runtime::mock())
///     .max_context_len(1024)
///     .build()?;
/// assert_eq!(model.max_context_len(), 1024);
/// let reply = model.session()?.complete("Hi", &GenerateOptions::new())?;
/// assert_eq!(reply.text, "Hello!");
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.inner.path)
            .field("runtime", self.inner.handle.runtime())
            .finish_non_exhaustive()
    }
}

impl Model {
    pub(crate) fn from_handle(
        handle: Handle,
        path: PathBuf,
        diagnosis: Diagnosis,
        max_context_len: u32,
        settings: RuntimeSettings,
    ) -> Model {
        Model {
            inner: Arc::new(ModelInner {
                handle: Arc::new(handle),
                id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
                session_gate: Arc::new(Gate::new(DEFAULT_MAX_WAITERS)),
                loras: Mutex::new(HashSet::new()),
                path,
                diagnosis,
                max_context_len,
                embedding_size: OnceLock::new(),
                settings,
            }),
        }
    }

    /// A handle that aborts this model's current run, whichever it is, from any thread.
    /// For a handle bound to one run, use
    /// [`TokenStream::abort_handle`](crate::TokenStream::abort_handle).
    pub fn abort_handle(&self) -> AbortHandle {
        self.inner.handle.abort_handle(None)
    }

    /// Loads a LoRA adapter (converted by the RKLLM toolkit) under `name`, with `scale`.
    ///
    /// Fails with [`Error::RunInProgress`] while a run is in flight (the runtime serialises
    /// calls on a handle), and with [`Error::Call`] when the runtime refuses the adapter.
    pub fn load_lora(&self, path: impl AsRef<Path>, name: &str, scale: f32) -> Result<LoraAdapter> {
        if !scale.is_finite() {
            return Err(Error::InvalidParameter {
                name: "lora scale",
                reason: format!("{scale} is not a finite number"),
            });
        }
        let c_path = path_c_string("lora_adapter_path", path.as_ref())?;
        let c_name = c_string("lora_adapter_name", name)?;
        self.inner.handle.load_lora(&c_path, &c_name, scale)?;
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

    /// The runtime's log around `rkllm_init`, read into a diagnosis (warnings included); what
    /// the runtime said about itself is there too ([`Diagnosis::runtime_version`],
    /// [`driver_version`](Diagnosis::driver_version), [`platform`](Diagnosis::platform)),
    /// when it printed its version line and the log was captured.
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
        self.inner.handle.runtime()
    }

    /// What `rkllm_is_running` returns, as is (callable during a run; the probe reports it).
    #[cfg(feature = "probe")]
    pub(crate) fn is_running_code(&self) -> i32 {
        self.inner.handle.is_running_code()
    }

    /// Whether the runtime reports a task running, by `rkllm_is_running`, read with the
    /// model's [`RunningSense`] (by default 0 means running, as the header documents; the
    /// probe example checks a board's runtime).
    pub fn runtime_reports_running(&self) -> bool {
        let rc = self.inner.handle.is_running_code();
        match self.inner.settings.running_sense {
            RunningSense::ZeroWhileRunning => rc == 0,
            RunningSense::NonZeroWhileRunning => rc != 0,
        }
    }
}
