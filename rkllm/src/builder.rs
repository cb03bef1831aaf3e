//! Building a model: plain values, validated, laid over the runtime's defaults in `build()`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rkllm_sys::RKLLMParam;

use crate::diagnosis::{self, Diagnosis, InitError, Preflight, PreflightReport};
use crate::error::{c_string, path_c_string, Error, Result};
use crate::ffi::handle::Handle;
use crate::ffi::init::{self, InitStrings};
use crate::model::Model;
use crate::runtime::Runtime;
use crate::settings::{RunningSense, RuntimeSettings, WaitingText};

impl Model {
    /// Starts building a model from the `.rkllm` file at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> ModelBuilder {
        ModelBuilder::new(path)
    }
}

/// Mirostat sampling (`RKLLMParam.mirostat`, `mirostat_tau`, `mirostat_eta`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mirostat {
    /// Off (the runtime's default).
    Off,
    /// Mirostat 1.
    V1 {
        /// Target entropy (default 5.0).
        tau: f32,
        /// Learning rate (default 0.1).
        eta: f32,
    },
    /// Mirostat 2.0.
    V2 {
        /// Target entropy (default 5.0).
        tau: f32,
        /// Learning rate (default 0.1).
        eta: f32,
    },
}

/// Builds a [`Model`]. Holds plain values and touches the runtime only in [`build`].
///
/// Every field of the 1.1.1 `RKLLMParam` has a setter; a value left unset keeps the
/// runtime's default (`rkllm_createDefaultParam`). Values are validated in `build()`.
///
/// ```no_run
/// # fn main() -> rkllm::Result<()> {
/// use rkllm::{Model, Runtime};
/// let model = Model::builder("/models/gemma-2-2b-it-w8a8.rkllm")
///     .runtime(Runtime::load()?)
///     .max_context_len(4096)
///     .max_new_tokens(512)
///     .top_k(1)
///     .build()?;
/// # Ok(()) }
/// ```
///
/// [`build`]: ModelBuilder::build
#[derive(Clone, Debug)]
#[must_use]
pub struct ModelBuilder {
    path: PathBuf,
    runtime: Option<Runtime>,
    max_context_len: Option<u32>,
    max_new_tokens: Option<Option<u32>>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    temperature: Option<f32>,
    repeat_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    mirostat: Option<Mirostat>,
    skip_special_token: Option<bool>,
    img_start: Option<String>,
    img_end: Option<String>,
    img_content: Option<String>,
    base_domain_id: Option<i32>,
    capture_log: bool,
    preflight: bool,
    preflight_root: PathBuf,
    raise_fd_limit: bool,
    settings: RuntimeSettings,
}

impl ModelBuilder {
    /// A builder for the model file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ModelBuilder {
        ModelBuilder {
            path: path.into(),
            runtime: None,
            max_context_len: None,
            max_new_tokens: None,
            top_k: None,
            top_p: None,
            temperature: None,
            repeat_penalty: None,
            frequency_penalty: None,
            presence_penalty: None,
            mirostat: None,
            skip_special_token: None,
            img_start: None,
            img_end: None,
            img_content: None,
            base_domain_id: None,
            capture_log: true,
            preflight: true,
            preflight_root: PathBuf::from("/"),
            raise_fd_limit: false,
            settings: RuntimeSettings::default(),
        }
    }

    /// The runtime to load the model into. Default: [`Runtime::load`] at build time.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Maximum context length in tokens (prompt plus reply), at most what the model was
    /// converted for. Must be positive.
    pub fn max_context_len(mut self, n: u32) -> Self {
        self.max_context_len = Some(n);
        self
    }

    /// Maximum tokens the runtime generates per run. Must be positive.
    pub fn max_new_tokens(mut self, n: u32) -> Self {
        self.max_new_tokens = Some(Some(n));
        self
    }

    /// No limit on generated tokens besides the context (`max_new_tokens = -1`).
    pub fn unlimited_new_tokens(mut self) -> Self {
        self.max_new_tokens = Some(None);
        self
    }

    /// Top-k sampling (runtime default 40; 1 is greedy). Must be positive.
    pub fn top_k(mut self, k: u32) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Top-p sampling, in (0, 1] (runtime default 0.9).
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Temperature, finite and not negative (runtime default 0.8).
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Repetition penalty, positive (runtime default 1.1).
    pub fn repeat_penalty(mut self, p: f32) -> Self {
        self.repeat_penalty = Some(p);
        self
    }

    /// Frequency penalty, in [-2, 2] (runtime default 0).
    pub fn frequency_penalty(mut self, p: f32) -> Self {
        self.frequency_penalty = Some(p);
        self
    }

    /// Presence penalty, in [-2, 2] (runtime default 0).
    pub fn presence_penalty(mut self, p: f32) -> Self {
        self.presence_penalty = Some(p);
        self
    }

    /// Mirostat sampling (default off). `tau` and `eta` must be positive.
    pub fn mirostat(mut self, m: Mirostat) -> Self {
        self.mirostat = Some(m);
        self
    }

    /// Whether the runtime hides special tokens' text (runtime default: on). Their ids are
    /// delivered either way, so stop tokens work in both settings.
    pub fn skip_special_token(mut self, skip: bool) -> Self {
        self.skip_special_token = Some(skip);
        self
    }

    /// Marker before an image in multimodal prompts (`img_start`).
    pub fn img_start(mut self, s: impl Into<String>) -> Self {
        self.img_start = Some(s.into());
        self
    }

    /// Marker after an image in multimodal prompts (`img_end`).
    pub fn img_end(mut self, s: impl Into<String>) -> Self {
        self.img_end = Some(s.into());
        self
    }

    /// Image content placeholder token in multimodal prompts (`img_content`).
    pub fn img_content(mut self, s: impl Into<String>) -> Self {
        self.img_content = Some(s.into());
        self
    }

    /// NPU IOMMU domain for the weights (`extend_param.base_domain_id`, default 0). Use 1
    /// when another NPU model is already resident in this process.
    pub fn base_domain_id(mut self, id: i32) -> Self {
        self.base_domain_id = Some(id);
        self
    }

    /// What WAITING callbacks carry on this runtime (default [`WaitingText::PartialBytes`]);
    /// see the probe's report. Only [`WaitingText::PartialBytesThenWhole`] changes how tokens
    /// are joined: WAITING text is then ignored, as the next NORMAL callback repeats it.
    pub fn waiting_text(mut self, waiting: WaitingText) -> Self {
        self.settings.waiting_text = waiting;
        self
    }

    /// What `rkllm_is_running` returns while running on this runtime (default
    /// [`RunningSense::ZeroWhileRunning`]); see the probe's report.
    pub fn running_sense(mut self, sense: RunningSense) -> Self {
        self.settings.running_sense = sense;
        self
    }

    /// How long stopping a run may take (default
    /// [`DEFAULT_STOP_TIMEOUT`](crate::settings::DEFAULT_STOP_TIMEOUT), 120 s).
    ///
    /// Dropping a stream, a session or the model aborts the run in flight and waits for
    /// `rkllm_run` to return. The runtime does not cut a prefill short, so the wait can be
    /// as long as the prefill of the longest prompt (about 5 ms per token for Gemma 2 2B on
    /// an RK3588; a 27B model is several times slower). If the run has not returned by then,
    /// the crate logs an error, leaves the handle and the run's buffers to the runtime
    /// (leaked, never freed while the runtime may use them), and every later call on the
    /// model fails with [`Error::ModelUnusable`]. Must be positive.
    pub fn stop_timeout(mut self, limit: Duration) -> Self {
        self.settings.stop_timeout = limit;
        self
    }

    /// The model's vocabulary size. When set, token inputs are checked against it before
    /// they reach the runtime (which would read out of bounds on an id past its vocabulary).
    /// The 1.1.1 runtime has no call that reports it, so unset, only negative ids are
    /// refused. Gemma 2's is 256,000
    /// ([`gemma::VOCAB_SIZE`](crate::gemma::VOCAB_SIZE)). Must be positive.
    pub fn vocab_size(mut self, n: u32) -> Self {
        self.settings.vocab_size = Some(n);
        self
    }

    /// Whether to capture the runtime's stdout/stderr during `rkllm_init` to diagnose a
    /// failure (default on). The output is passed on to the original streams either way.
    ///
    /// What the capture does to the process: while `rkllm_init` runs, fds 1 and 2 of the
    /// whole process point at pipes (the descriptor table is process-wide), so output of the
    /// program's other threads, and of child processes started meanwhile, goes through them
    /// too. A forwarding thread per pipe passes every byte on to the original descriptor as it
    /// arrives, and keeps doing so after init for as long as such a child holds the pipe: no
    /// byte is lost and no child is killed by `SIGPIPE`. The capture's own descriptors are
    /// close-on-exec and never take the numbers 0 to 2. Only the runtime's own lines
    /// (`I rkllm: …`, `E RKNN: …`) enter the [`Diagnosis`] and the `log` records (target
    /// `rkllm::runtime`). Turn it off where even that brief redirection is unwelcome; a failed
    /// init is then explained by the preflight alone.
    pub fn capture_runtime_log(mut self, on: bool) -> Self {
        self.capture_log = on;
        self
    }

    /// Whether to run the cheap checks before init (model file, RAM, driver, platform,
    /// open-file limit; default on). They read files and change nothing, unless
    /// [`raise_fd_limit`](Self::raise_fd_limit) is on. See [`Preflight`].
    pub fn preflight(mut self, on: bool) -> Self {
        self.preflight = on;
        self
    }

    /// Root directory under which the preflight reads `/proc` and `/sys` (default `/`).
    pub fn preflight_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.preflight_root = root.into();
        self
    }

    /// Whether the preflight raises this process's soft open-files limit (`RLIMIT_NOFILE`)
    /// towards 102400, as the vendor servers do (default off: the limit is only read, and a
    /// low one is logged as a warning). The limit is process-wide; raising it past 1024
    /// breaks code of the host program that uses `select()`. See
    /// [`Preflight::raise_fd_limit`].
    pub fn raise_fd_limit(mut self, raise: bool) -> Self {
        self.raise_fd_limit = raise;
        self
    }

    fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, reason: String) -> Result<()> {
            Err(Error::InvalidParameter { name, reason })
        }
        fn finite(name: &'static str, v: f32) -> Result<()> {
            if v.is_finite() {
                Ok(())
            } else {
                bad(name, format!("{v} is not a finite number"))
            }
        }
        if let Some(n) = self.max_context_len {
            if n == 0 || i32::try_from(n).is_err() {
                return bad(
                    "max_context_len",
                    format!("{n} must be between 1 and {}", i32::MAX),
                );
            }
        }
        if let Some(Some(n)) = self.max_new_tokens {
            if n == 0 || i32::try_from(n).is_err() {
                return bad(
                    "max_new_tokens",
                    format!("{n} must be between 1 and {} (or unlimited)", i32::MAX),
                );
            }
        }
        if let Some(k) = self.top_k {
            if k == 0 || i32::try_from(k).is_err() {
                return bad("top_k", format!("{k} must be between 1 and {}", i32::MAX));
            }
        }
        if let Some(p) = self.top_p {
            finite("top_p", p)?;
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", format!("{p} must be in (0, 1]"));
            }
        }
        if let Some(t) = self.temperature {
            finite("temperature", t)?;
            if t < 0.0 {
                return bad("temperature", format!("{t} must not be negative"));
            }
        }
        if let Some(p) = self.repeat_penalty {
            finite("repeat_penalty", p)?;
            if p <= 0.0 {
                return bad("repeat_penalty", format!("{p} must be positive"));
            }
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if let Some(p) = v {
                finite(name, p)?;
                if !(-2.0..=2.0).contains(&p) {
                    return bad(name, format!("{p} must be in [-2, 2]"));
                }
            }
        }
        if let Some(Mirostat::V1 { tau, eta } | Mirostat::V2 { tau, eta }) = self.mirostat {
            finite("mirostat_tau", tau)?;
            finite("mirostat_eta", eta)?;
            if tau <= 0.0 {
                return bad("mirostat_tau", format!("{tau} must be positive"));
            }
            if eta <= 0.0 {
                return bad("mirostat_eta", format!("{eta} must be positive"));
            }
        }
        if let Some(id) = self.base_domain_id {
            if id < 0 {
                return bad("base_domain_id", format!("{id} must not be negative"));
            }
        }
        if self.settings.stop_timeout.is_zero() {
            return bad("stop_timeout", "0 s must be positive".into());
        }
        if self.settings.vocab_size == Some(0) {
            return bad("vocab_size", "0 must be positive".into());
        }
        Ok(())
    }

    /// Validates the values, runs the preflight, and loads the model with `rkllm_init`.
    ///
    /// On failure the error says what to do: [`Error::InvalidParameter`] or [`Error::Nul`]
    /// for bad values, [`Error::Io`] for an unreadable model file, [`Error::Load`] when the
    /// runtime library is missing or incompatible, and [`Error::Init`] with the runtime's log
    /// read into a [`Diagnosis`] when the runtime refuses the model.
    pub fn build(self) -> Result<Model> {
        self.validate()?;
        let strings = self.strings()?;
        let preflight = self.run_preflight()?;
        let runtime = match &self.runtime {
            Some(r) => r.clone(),
            None => Runtime::load()?,
        };
        let param = self.params(init::default_param(&runtime));
        let max_context_len = u32::try_from(param.max_context_len).unwrap_or(0);
        let (handle, diagnosis) = self.init_captured(runtime, param, &strings, preflight)?;
        Ok(Model::from_handle(
            handle,
            self.path,
            diagnosis,
            max_context_len,
            self.settings,
        ))
    }

    /// Step 1: the strings `RKLLMParam` points at, NUL-checked.
    fn strings(&self) -> Result<InitStrings> {
        let optional =
            |field, s: &Option<String>| s.as_deref().map(|s| c_string(field, s)).transpose();
        Ok(InitStrings {
            model_path: path_c_string("model_path", &self.path)?,
            img_start: optional("img_start", &self.img_start)?,
            img_end: optional("img_end", &self.img_end)?,
            img_content: optional("img_content", &self.img_content)?,
        })
    }

    /// Step 2: the cheap checks before init; a fatal finding fails the build.
    fn run_preflight(&self) -> Result<Option<PreflightReport>> {
        if !self.preflight {
            return Ok(None);
        }
        let preflight =
            Preflight::with_root(&self.preflight_root).raise_fd_limit(self.raise_fd_limit);
        let mut report = preflight.check(&self.path);
        if let Some(e) = report.fatal() {
            return Err(e);
        }
        // The open-files limit is the process's own, so only for the real root.
        if self.preflight_root == Path::new("/") {
            preflight.check_open_files_limit(&mut report);
        }
        for warning in report.warnings() {
            log::warn!(target: "rkllm", "preflight: {warning}");
        }
        Ok(Some(report))
    }

    /// Step 3: the builder's values laid over the runtime's defaults. What the 1.1.x runtime
    /// does not document is fixed here: no async mode, zeroed reserved bytes. (The string
    /// fields are set by the seam at init.)
    fn params(&self, mut param: RKLLMParam) -> RKLLMParam {
        // Every value was checked to fit an i32 by `validate`.
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        if let Some(n) = self.max_context_len {
            param.max_context_len = int(n);
        }
        if let Some(n) = self.max_new_tokens {
            param.max_new_tokens = n.map_or(-1, int);
        }
        if let Some(k) = self.top_k {
            param.top_k = int(k);
        }
        let floats = [
            (self.top_p, &mut param.top_p),
            (self.temperature, &mut param.temperature),
            (self.repeat_penalty, &mut param.repeat_penalty),
            (self.frequency_penalty, &mut param.frequency_penalty),
            (self.presence_penalty, &mut param.presence_penalty),
        ];
        for (value, field) in floats {
            if let Some(v) = value {
                *field = v;
            }
        }
        match self.mirostat {
            None => {}
            Some(Mirostat::Off) => param.mirostat = 0,
            Some(Mirostat::V1 { tau, eta }) => {
                (param.mirostat, param.mirostat_tau, param.mirostat_eta) = (1, tau, eta)
            }
            Some(Mirostat::V2 { tau, eta }) => {
                (param.mirostat, param.mirostat_tau, param.mirostat_eta) = (2, tau, eta)
            }
        }
        if let Some(s) = self.skip_special_token {
            param.skip_special_token = s;
        }
        param.is_async = false;
        if let Some(id) = self.base_domain_id {
            param.extend_param.base_domain_id = id;
        }
        param.extend_param.reserved = [0; 112];
        param
    }

    /// Step 4: `rkllm_init`, with the runtime's log captured and read into a diagnosis.
    fn init_captured(
        &self,
        runtime: Runtime,
        param: RKLLMParam,
        strings: &InitStrings,
        preflight: Option<PreflightReport>,
    ) -> Result<(Handle, Diagnosis)> {
        let ((rc, raw), log) =
            diagnosis::run_captured(self.capture_log, || init::init(&runtime, param, strings));
        let diagnosis = Diagnosis::parse(&log);
        if rc != 0 || raw.is_null() {
            let code = if rc != 0 { Some(rc) } else { None };
            let mut error = InitError::new(code, diagnosis, self.path.clone());
            if let Some(report) = preflight {
                error = error.with_preflight(report);
            }
            return Err(error.into());
        }
        let handle = Handle::new(runtime, raw, self.settings.stop_timeout);
        Ok((handle, diagnosis))
    }
}
