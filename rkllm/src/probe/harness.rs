//! The probe's own instance of the runtime, driven through the raw function table with the
//! probe's callback, which records every callback (state, token, text pointer, thread).
//!
//! Rules that keep the board in a good state whatever happens:
//! * `rkllm_run` runs on a worker thread that owns every buffer the call reads; the probe
//!   waits for it with a time limit, then aborts (again and again) and waits a grace period.
//! * A handle is destroyed exactly once, when its [`RawModel`] drops, and only once no run
//!   is in flight. A run that never returns even after aborts leaves the handle alive
//!   (destroying it under a running task would be worse) and the model refuses further runs.
//! * A panic of the probe while a run is in flight aborts and waits for the run before the
//!   handle is destroyed (the [`InFlight`] guard).
//! * The callback never unwinds into C and never blocks for longer than the pause limit.

use std::ffi::{c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rkllm_sys::{
    LLMCallState, LLMHandle, RKLLMInferParam, RKLLMInput, RKLLMPromptCacheParam, RKLLMResult,
    RkllmApi, RKLLM_INFER_GENERATE, RKLLM_INPUT_PROMPT, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH,
    RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
};

use super::perf;
use crate::diagnosis::capture;
use crate::error::path_c_string;
use crate::runtime::Runtime;

/// How long aborts are repeated for a run that overran its time limit before giving up on it.
const ABORT_GRACE: Duration = Duration::from_secs(15);
/// How often the supervisor looks at the run.
const POLL: Duration = Duration::from_millis(1);
/// The environment variable the runtime reads its log level from at init.
const LOG_LEVEL_ENV: &str = "RKLLM_LOG_LEVEL";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a callback's `result->text` held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    /// `result` itself was NULL.
    NoResult,
    /// `text` was NULL.
    Null,
    /// The bytes up to the NUL (empty for an empty string).
    Bytes(Vec<u8>),
}

impl Text {
    /// The bytes, NULL read as none (what the crate's trampoline does).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Text::Bytes(b) => b,
            _ => &[],
        }
    }
}

/// One callback, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Callback {
    pub state: LLMCallState,
    pub token_id: i32,
    pub text: Text,
    pub thread: ThreadId,
    pub at: Instant,
    /// Whether `rkllm_run` had already returned (a callback the runtime should not send).
    pub after_return: bool,
}

impl Callback {
    /// A NORMAL or WAITING callback: a generated token.
    pub(crate) fn is_token(&self) -> bool {
        self.state == RKLLM_RUN_NORMAL || self.state == RKLLM_RUN_WAITING
    }
}

/// Where the callback records, reached through `userdata`. It can hold the callback at the
/// n-th token (a pause) so the supervisor can act while the run is certainly in progress.
struct Recorder {
    events: Mutex<Vec<Callback>>,
    hold_at: Option<usize>,
    pause_limit: Duration,
    gate: Mutex<Gate>,
    cv: Condvar,
    returned: AtomicBool,
    call: Mutex<Option<(ThreadId, Instant)>>,
}

#[derive(Default)]
struct Gate {
    holding: bool,
    released: bool,
    expired: bool,
}

impl Recorder {
    fn new(hold_at: Option<usize>, pause_limit: Duration) -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            hold_at,
            pause_limit,
            gate: Mutex::new(Gate::default()),
            cv: Condvar::new(),
            returned: AtomicBool::new(false),
            call: Mutex::new(None),
        }
    }

    fn record(&self, state: LLMCallState, token_id: i32, text: Text) {
        let tokens = {
            let mut events = lock(&self.events);
            events.push(Callback {
                state,
                token_id,
                text,
                thread: std::thread::current().id(),
                at: Instant::now(),
                after_return: self.returned.load(Ordering::Acquire),
            });
            events.iter().filter(|e| e.is_token()).count()
        };
        let is_token = state == RKLLM_RUN_NORMAL || state == RKLLM_RUN_WAITING;
        if is_token && self.hold_at == Some(tokens) {
            self.pause();
        }
    }

    /// Holds the callback until the supervisor releases it or the pause limit passes.
    fn pause(&self) {
        let mut gate = lock(&self.gate);
        if gate.released {
            return;
        }
        gate.holding = true;
        self.cv.notify_all();
        let (mut gate, wait) = self
            .cv
            .wait_timeout_while(gate, self.pause_limit, |g| !g.released)
            .unwrap_or_else(PoisonError::into_inner);
        gate.holding = false;
        gate.expired = wait.timed_out();
    }

    fn is_holding(&self) -> bool {
        lock(&self.gate).holding
    }

    /// Lets a held callback go; returns whether its pause had already expired.
    fn release(&self) -> bool {
        let mut gate = lock(&self.gate);
        gate.released = true;
        self.cv.notify_all();
        gate.expired
    }
}

/// The callback bound at the probe's `rkllm_init`.
///
/// # Safety
///
/// Called by the runtime with `result` null or valid for the call, and `userdata` null or
/// the `Recorder` passed to `rkllm_run`, which the worker and the [`RawModel`] keep alive.
unsafe extern "C" fn probe_callback(
    result: *mut RKLLMResult,
    userdata: *mut c_void,
    state: LLMCallState,
) {
    if userdata.is_null() {
        return;
    }
    // SAFETY: non-null userdata is always a `Recorder` of this model (the only userdata the
    // probe passes), kept alive by the run's worker and by the model until it is destroyed.
    let recorder = unsafe { &*(userdata as *const Recorder) };
    // Nothing here should panic; if something does, the callback is lost, never unwound.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `result` is null or valid for the duration of this call.
        let (token_id, text) = match unsafe { result.as_ref() } {
            None => (i32::MIN, Text::NoResult),
            Some(r) if r.text.is_null() => (r.token_id, Text::Null),
            Some(r) => {
                // SAFETY: non-null `text` is NUL-terminated and valid during the callback;
                // it is copied here.
                let bytes = unsafe { CStr::from_ptr(r.text) }.to_bytes().to_vec();
                (r.token_id, Text::Bytes(bytes))
            }
        };
        recorder.record(state, token_id, text);
    }));
}

/// How to build an instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitSpec {
    pub max_context_len: u32,
    pub max_new_tokens: u32,
    /// Init with `RKLLM_LOG_LEVEL=1`, so every run prints its performance table.
    pub perf_log: bool,
}

/// `rkllm_init` failed.
#[derive(Debug, Clone)]
pub(crate) struct InitFailed {
    pub code: i32,
    pub log: String,
}

/// The handle, for the worker thread.
#[derive(Clone, Copy)]
struct SendHandle(LLMHandle);
// SAFETY: the handle is an opaque token; the worker uses it for one rkllm_run while the
// supervisor only calls rkllm_abort and rkllm_is_running, which the runtime provides for use
// from another thread during a run. It is destroyed only after the worker returned.
unsafe impl Send for SendHandle {}

/// One instance of the runtime with the probe's callback.
pub(crate) struct RawModel {
    runtime: Runtime,
    api: RkllmApi,
    handle: LLMHandle,
    /// A run never returned: the handle must be neither used nor destroyed.
    stuck: AtomicBool,
    /// Every recorder handed to the runtime, kept until after `rkllm_destroy` in case the
    /// runtime calls back late.
    recorders: Mutex<Vec<Arc<Recorder>>>,
}

impl Drop for RawModel {
    fn drop(&mut self) {
        if self.stuck.load(Ordering::Acquire) {
            log::error!(
                target: "rkllm::probe",
                "a run never returned after rkllm_abort; its handle is left alive"
            );
            // The recorders must outlive the runtime's use of them: leak them.
            std::mem::forget(std::mem::take(&mut *lock(&self.recorders)));
            return;
        }
        // SAFETY: the handle came from a successful rkllm_init of this runtime, no run is in
        // flight (every run returned, else `stuck` is set) and this is its only destroy.
        let rc = unsafe { (self.api.destroy)(self.handle) };
        if rc != 0 {
            log::warn!(target: "rkllm::probe", "rkllm_destroy returned {rc}");
        }
    }
}

/// Serialises changes of `RKLLM_LOG_LEVEL` by probes running at the same time.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` with `RKLLM_LOG_LEVEL` at least 1 when `on`, then restores the variable.
fn with_perf_log<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Option<std::ffi::OsString>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            match self.0.take() {
                Some(Some(v)) => std::env::set_var(LOG_LEVEL_ENV, v),
                Some(None) => std::env::remove_var(LOG_LEVEL_ENV),
                None => {}
            }
        }
    }
    if !on {
        return f();
    }
    let _env = lock(&ENV_LOCK);
    let old = std::env::var_os(LOG_LEVEL_ENV);
    let level = old
        .as_deref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // A user's higher level is kept. The variable is read by the runtime's rkllm_init on this
    // thread; nothing else in this crate reads it concurrently (probes take ENV_LOCK).
    let _restore = if level >= 1 {
        Restore(None)
    } else {
        std::env::set_var(LOG_LEVEL_ENV, "1");
        Restore(Some(old))
    };
    f()
}

/// One run to make.
#[derive(Debug, Clone)]
pub(crate) struct RunPlan<'a> {
    pub prompt: &'a str,
    pub save_cache: Option<&'a Path>,
    /// Pause the callback at this token, read `rkllm_is_running`, call `rkllm_abort`, go on.
    pub abort_at_token: Option<usize>,
    pub timeout: Duration,
    pub pause_limit: Duration,
}

/// What the supervisor did at the pause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    pub is_running_during: i32,
    pub abort_rc: i32,
    pub at: Instant,
    pub abort_took: Duration,
    /// The pause ran out before the supervisor released it (a call blocked).
    pub pause_expired: bool,
}

/// Everything observed of one run.
#[derive(Debug, Clone)]
pub(crate) struct RunRecord {
    pub events: Vec<Callback>,
    /// The thread that called `rkllm_run`, and when.
    pub call: Option<(ThreadId, Instant)>,
    /// `None`: the run never returned (or never started, see `error`).
    pub return_code: Option<i32>,
    pub returned_at: Option<Instant>,
    pub stop: Option<Stop>,
    pub timed_out: bool,
    pub is_running_after: Option<i32>,
    /// What the runtime printed during the run.
    pub log: String,
    /// Why the run could not be made.
    pub error: Option<String>,
}

impl RunRecord {
    fn failed(reason: String) -> RunRecord {
        RunRecord {
            events: Vec::new(),
            call: None,
            return_code: None,
            returned_at: None,
            stop: None,
            timed_out: false,
            is_running_after: None,
            log: String::new(),
            error: Some(reason),
        }
    }

    /// A run that returned `rc` after `events`, for tests of the analyses.
    #[cfg(test)]
    pub(crate) fn returned(events: Vec<Callback>, rc: i32) -> RunRecord {
        let mut r = RunRecord::failed(String::new());
        r.error = None;
        r.return_code = Some(rc);
        r.events = events;
        r
    }

    /// The NORMAL and WAITING callbacks.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = &Callback> {
        self.events.iter().filter(|e| e.is_token())
    }

    pub(crate) fn token_ids(&self) -> Vec<i32> {
        self.tokens().map(|e| e.token_id).collect()
    }

    pub(crate) fn count(&self, state: LLMCallState) -> usize {
        self.events.iter().filter(|e| e.state == state).count()
    }

    pub(crate) fn finished(&self) -> bool {
        self.count(RKLLM_RUN_FINISH) > 0
    }

    pub(crate) fn errored(&self) -> bool {
        self.count(RKLLM_RUN_ERROR) > 0
    }

    /// From the `rkllm_run` call to the first token.
    pub(crate) fn time_to_first_token(&self) -> Option<Duration> {
        let (_, called) = self.call?;
        Some(self.tokens().next()?.at.saturating_duration_since(called))
    }

    /// The prefill token count of the performance table, if printed.
    pub(crate) fn prefill_tokens(&self) -> Option<usize> {
        perf::stage(&self.log, "Prefill").map(|s| s.tokens)
    }

    /// The first line the runtime marked as an error.
    pub(crate) fn first_error_line(&self) -> Option<&str> {
        self.log
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("E ") || l.contains(" E "))
    }

    /// Why this run tells nothing, if it does not: not made, or never returned.
    pub(crate) fn unusable(&self, timeout: Duration) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        if self.return_code.is_none() {
            return Some(format!(
                "rkllm_run did not return within {}s even after rkllm_abort; the handle was \
                 left alive",
                timeout.as_secs() + ABORT_GRACE.as_secs()
            ));
        }
        None
    }
}

/// Everything `rkllm_run` reads, owned by the worker for the whole call.
struct Job {
    api: RkllmApi,
    handle: SendHandle,
    prompt: CString,
    cache: Option<CString>,
    recorder: Arc<Recorder>,
}

impl Job {
    fn call(self) -> i32 {
        *lock(&self.recorder.call) = Some((std::thread::current().id(), Instant::now()));
        let mut input = RKLLMInput {
            input_type: RKLLM_INPUT_PROMPT,
            ..Default::default()
        };
        input.__bindgen_anon_1.prompt_input = self.prompt.as_ptr();
        let mut cache = self.cache.as_ref().map(|p| RKLLMPromptCacheParam {
            save_prompt_cache: 1,
            prompt_cache_path: p.as_ptr(),
        });
        let mut infer = RKLLMInferParam {
            mode: RKLLM_INFER_GENERATE,
            lora_params: std::ptr::null_mut(),
            prompt_cache_params: cache.as_mut().map_or(std::ptr::null_mut(), |c| c as *mut _),
        };
        let userdata = Arc::as_ptr(&self.recorder) as *mut c_void;
        // SAFETY: `input`, `cache`, `infer` and the strings they point to are owned by this
        // frame or `self` and outlive the blocking call; `userdata` is the recorder, kept alive
        // by `self` (and by the model); the handle is live (the model destroys it only after
        // this call returned) and runs nothing else (the probe makes one run at a time).
        let rc = unsafe { (self.api.run)(self.handle.0, &mut input, &mut infer, userdata) };
        self.recorder.returned.store(true, Ordering::Release);
        rc
    }
}

impl RawModel {
    /// `rkllm_init` with the probe's callback, capturing what the runtime prints.
    pub(crate) fn init(
        runtime: &Runtime,
        model: &Path,
        spec: InitSpec,
    ) -> Result<RawModel, InitFailed> {
        let path = path_c_string("model_path", model).map_err(|e| InitFailed {
            code: -1,
            log: e.to_string(),
        })?;
        let api = *runtime.api();
        let (e1, e2, e3) = (CString::default(), CString::default(), CString::default());
        // SAFETY: rkllm_createDefaultParam takes no arguments and returns the struct by value.
        let mut param = unsafe { (api.create_default_param)() };
        param.model_path = path.as_ptr();
        param.max_context_len = i32::try_from(spec.max_context_len).unwrap_or(i32::MAX);
        param.max_new_tokens = i32::try_from(spec.max_new_tokens).unwrap_or(i32::MAX);
        // Greedy, so two runs of one prompt compare.
        param.top_k = 1;
        param.skip_special_token = true;
        param.is_async = false;
        param.img_start = e1.as_ptr();
        param.img_end = e2.as_ptr();
        param.img_content = e3.as_ptr();
        param.extend_param.reserved = [0; 112];
        let mut handle: LLMHandle = std::ptr::null_mut();
        let (rc, log) = with_perf_log(spec.perf_log, || {
            capture(|| {
                // SAFETY: `handle` and `param` are valid for writes, the strings in `param`
                // outlive the call, and the callback accepts any result/userdata.
                unsafe { (api.init)(&mut handle, &mut param, Some(probe_callback)) }
            })
        });
        if rc != 0 || handle.is_null() {
            return Err(InitFailed { code: rc, log });
        }
        Ok(RawModel {
            runtime: runtime.clone(),
            api,
            handle,
            stuck: AtomicBool::new(false),
            recorders: Mutex::new(Vec::new()),
        })
    }

    /// The runtime this instance belongs to.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// `rkllm_is_running` as returned.
    pub(crate) fn is_running(&self) -> i32 {
        // SAFETY: the handle is live while self exists; the call is meant to be usable at any
        // time, during a run included.
        unsafe { (self.api.is_running)(self.handle) }
    }

    fn abort(&self) -> i32 {
        // SAFETY: the handle is live; rkllm_abort is meant to be called from another thread
        // while rkllm_run blocks.
        unsafe { (self.api.abort)(self.handle) }
    }

    /// `rkllm_load_prompt_cache`; only between runs.
    pub(crate) fn load_prompt_cache(&self, path: &Path) -> i32 {
        let Ok(c_path) = path_c_string("prompt_cache_path", path) else {
            return -1;
        };
        if self.stuck.load(Ordering::Acquire) {
            return -1;
        }
        // SAFETY: the handle is live and no run is in flight (runs return before `run` does);
        // the path outlives the call.
        unsafe { (self.api.load_prompt_cache)(self.handle, c_path.as_ptr()) }
    }

    /// `rkllm_release_prompt_cache`; only between runs.
    pub(crate) fn release_prompt_cache(&self) -> i32 {
        if self.stuck.load(Ordering::Acquire) {
            return -1;
        }
        // SAFETY: the handle is live and no run is in flight.
        unsafe { (self.api.release_prompt_cache)(self.handle) }
    }

    /// Makes one run and returns what was observed. Blocks until `rkllm_run` returned, or
    /// the time limit and the abort grace period have passed.
    pub(crate) fn run(&self, plan: &RunPlan<'_>) -> RunRecord {
        if self.stuck.load(Ordering::Acquire) {
            return RunRecord::failed("an earlier run of this instance never returned".into());
        }
        let prompt = match CString::new(plan.prompt) {
            Ok(p) => p,
            Err(e) => return RunRecord::failed(format!("prompt: {e}")),
        };
        let cache = match plan.save_cache.map(|p| path_c_string("prompt cache", p)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return RunRecord::failed(e.to_string()),
        };
        let recorder = Arc::new(Recorder::new(plan.abort_at_token, plan.pause_limit));
        lock(&self.recorders).push(Arc::clone(&recorder));
        let job = Job {
            api: self.api,
            handle: SendHandle(self.handle),
            prompt,
            cache,
            recorder: Arc::clone(&recorder),
        };
        let mut record = RunRecord::failed(String::new());
        record.error = None;
        let ((), log) = capture(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let spawned = std::thread::Builder::new()
                .name("rkllm-probe-run".into())
                .spawn(move || {
                    let _ = tx.send(job.call());
                });
            match spawned {
                Ok(_) => self.supervise(&recorder, &rx, plan, &mut record),
                Err(e) => record.error = Some(format!("no thread for rkllm_run: {e}")),
            }
        });
        record.log = log;
        record.events = lock(&recorder.events).clone();
        record.call = *lock(&recorder.call);
        if record.return_code.is_some() {
            record.is_running_after = Some(self.is_running());
        }
        record
    }

    /// Waits for the run, acting at the pause and at the time limit.
    fn supervise(
        &self,
        recorder: &Recorder,
        rx: &Receiver<i32>,
        plan: &RunPlan<'_>,
        record: &mut RunRecord,
    ) {
        let deadline = Instant::now() + plan.timeout;
        let mut guard = InFlight {
            model: self,
            recorder,
            rx,
            done: false,
        };
        loop {
            match rx.recv_timeout(POLL) {
                Ok(rc) => {
                    record.return_code = Some(rc);
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    record.error = Some("the rkllm_run thread ended without a result".into());
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if record.stop.is_none() && recorder.is_holding() {
                let is_running_during = self.is_running();
                let at = Instant::now();
                let abort_rc = self.abort();
                let abort_took = at.elapsed();
                let pause_expired = recorder.release();
                record.stop = Some(Stop {
                    is_running_during,
                    abort_rc,
                    at,
                    abort_took,
                    pause_expired,
                });
            }
            if Instant::now() >= deadline {
                record.timed_out = true;
                record.return_code = guard.abort_and_wait();
                break;
            }
        }
        record.returned_at = record.return_code.map(|_| Instant::now());
        guard.done = true;
    }
}

/// A run in flight: if the supervisor unwinds, the run is aborted and waited for, so the
/// handle is never destroyed under it.
struct InFlight<'a> {
    model: &'a RawModel,
    recorder: &'a Recorder,
    rx: &'a Receiver<i32>,
    done: bool,
}

impl InFlight<'_> {
    /// Aborts until the run returns, for at most [`ABORT_GRACE`]; marks the model stuck if
    /// it never does.
    fn abort_and_wait(&mut self) -> Option<i32> {
        self.done = true;
        self.recorder.release();
        let until = Instant::now() + ABORT_GRACE;
        while Instant::now() < until {
            self.model.abort();
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(rc) => return Some(rc),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.model.stuck.store(true, Ordering::Release);
        None
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.abort_and_wait();
        }
    }
}
