//! The probe's runs, on the crate's own run machinery: an instance is a [`Model`] built
//! through [`ModelBuilder`](crate::ModelBuilder), a run is a [`TokenStream`] whose every raw
//! callback (state, token, text pointer, thread) a [`Recorder`] sees first, through the
//! seam's observer hook. The probe has no trampoline, worker, abort loop or `userdata` of its
//! own, and never calls the runtime's functions itself.
//!
//! What keeps the board in a good state is the seam's: `rkllm_run` runs on the seam's worker;
//! a run past its time limit is stopped with [`TokenStream::stop`], which aborts again and
//! again for at most the instance's stop timeout ([`ABORT_GRACE`]); a run that does not return
//! even then leaves the model unusable and its handle leaked rather than destroyed under a
//! running task; a panic of the probe drops the stream, and the instance's next run or drop
//! waits for it the same way. The recorder never blocks a
//! callback for longer than the pause limit.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use rkllm_sys::{LLMCallState, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH};

use super::perf;
use crate::diagnosis::{capture, Diagnosis};
use crate::error::Error;
use crate::ffi::callback::{RawCallback, RunObserver};
use crate::ffi::AbortHandle;
use crate::input::{GenerateOptions, Input};
use crate::model::Model;
use crate::runtime::Runtime;
use crate::session::Session;

pub(crate) use crate::ffi::callback::{RawCallback as Callback, RawText as Text};

/// How long aborts are repeated for a run that overran its time limit before giving up on
/// it: the stop timeout of the probe's instances.
const ABORT_GRACE: Duration = Duration::from_secs(15);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records a run's callbacks, and can hold the callback at the n-th token (a pause) so the
/// probe can act while the run is certainly in progress. Delivery to the stream is off: the
/// recorder keeps everything itself.
struct Recorder {
    events: Mutex<Vec<Callback>>,
    hold_at: Option<usize>,
    pause_limit: Duration,
    gate: Mutex<Gate>,
    cv: Condvar,
    /// The thread that called `rkllm_run`, and when.
    call: Mutex<Option<(ThreadId, Instant)>>,
}

#[derive(Default)]
struct Gate {
    holding: bool,
    released: bool,
    expired: bool,
    /// What `rkllm_run` returned, and when.
    returned: Option<(i32, Instant)>,
}

/// Why [`Recorder::wait`] woke up.
enum Wake {
    Returned,
    Holding,
    Deadline,
}

impl Recorder {
    fn new(hold_at: Option<usize>, pause_limit: Duration) -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            hold_at,
            pause_limit,
            gate: Mutex::new(Gate::default()),
            cv: Condvar::new(),
            call: Mutex::new(None),
        }
    }

    /// Holds the callback until the probe releases it or the pause limit passes.
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

    /// Waits until the run returned, a callback is held (unless `held_seen`), or `deadline`.
    fn wait(&self, deadline: Instant, held_seen: bool) -> Wake {
        let gate = lock(&self.gate);
        let limit = deadline.saturating_duration_since(Instant::now());
        let (gate, _) = self
            .cv
            .wait_timeout_while(gate, limit, |g| {
                g.returned.is_none() && (held_seen || !g.holding)
            })
            .unwrap_or_else(PoisonError::into_inner);
        if gate.returned.is_some() {
            Wake::Returned
        } else if gate.holding && !held_seen {
            Wake::Holding
        } else {
            Wake::Deadline
        }
    }

    /// Lets a held callback go; returns whether its pause had already expired.
    fn release(&self) -> bool {
        let mut gate = lock(&self.gate);
        gate.released = true;
        self.cv.notify_all();
        gate.expired
    }

    fn returned(&self) -> Option<(i32, Instant)> {
        lock(&self.gate).returned
    }
}

impl RunObserver for Recorder {
    fn on_run_start(&self) {
        *lock(&self.call) = Some((std::thread::current().id(), Instant::now()));
    }

    fn on_callback(&self, callback: &RawCallback) {
        let tokens = {
            let mut events = lock(&self.events);
            events.push(callback.clone());
            events.iter().filter(|e| e.is_token()).count()
        };
        if callback.is_token() && self.hold_at == Some(tokens) {
            self.pause();
        }
    }

    fn on_returned(&self, code: i32) {
        lock(&self.gate).returned = Some((code, Instant::now()));
        self.cv.notify_all();
    }

    fn delivers(&self) -> bool {
        false
    }
}

/// How to build an instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitSpec {
    pub max_context_len: u32,
    pub max_new_tokens: u32,
}

/// The instance did not load.
#[derive(Debug, Clone)]
pub(crate) struct InitFailed {
    /// What `rkllm_init` returned (0 with a NULL handle, -1 when it was not reached).
    pub code: i32,
    /// The runtime's log around `rkllm_init`, read.
    pub diagnosis: Box<Diagnosis>,
    /// Why, when `rkllm_init` was not reached.
    pub reason: Option<String>,
}

/// One instance of the runtime: a model and its session.
pub(crate) struct Instance {
    // The session first: it stops a run left in flight before the model goes.
    session: Session,
    model: Model,
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

/// What the probe did at the pause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    pub is_running_during: i32,
    pub abort_rc: i32,
    pub at: Instant,
    pub abort_took: Duration,
    /// The pause ran out before the probe released it (a call blocked).
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

/// A `rkllm_*` call's outcome as the code it returned (-1 when it was not reached).
fn code_of(result: crate::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(Error::Call { code, .. }) => code,
        Err(_) => -1,
    }
}

impl Instance {
    /// Loads the model through the builder: greedy (so two runs of one prompt compare),
    /// special tokens hidden, the runtime's log captured. The preflight is left out: the
    /// probe loaded the model with it first.
    pub(crate) fn init(
        runtime: &Runtime,
        model: &Path,
        spec: InitSpec,
    ) -> Result<Instance, InitFailed> {
        let built = Model::builder(model)
            .runtime(runtime.clone())
            .max_context_len(spec.max_context_len)
            .max_new_tokens(spec.max_new_tokens)
            .top_k(1)
            .skip_special_token(true)
            .capture_runtime_log(true)
            .preflight(false)
            .stop_timeout(ABORT_GRACE)
            .build();
        let failed = |e: Error| match e {
            Error::Init(e) => InitFailed {
                code: e.code().unwrap_or(0),
                diagnosis: Box::new(e.diagnosis().clone()),
                reason: None,
            },
            other => InitFailed {
                code: -1,
                diagnosis: Box::new(Diagnosis::parse("")),
                reason: Some(other.to_string()),
            },
        };
        let model = built.map_err(failed)?;
        let session = model.session().map_err(failed)?;
        Ok(Instance { session, model })
    }

    /// The runtime this instance belongs to.
    pub(crate) fn runtime(&self) -> &Runtime {
        self.model.runtime()
    }

    /// `rkllm_is_running` as returned.
    pub(crate) fn is_running(&self) -> i32 {
        self.model.is_running_code()
    }

    /// `rkllm_load_prompt_cache`; only between runs.
    pub(crate) fn load_prompt_cache(&mut self, path: &Path) -> i32 {
        code_of(self.session.load_cache_raw(path))
    }

    /// `rkllm_release_prompt_cache`; only between runs.
    pub(crate) fn release_prompt_cache(&mut self) -> i32 {
        code_of(self.session.release_cache_raw())
    }

    /// Makes one run and returns what was observed. Blocks until `rkllm_run` returned, or
    /// the time limit and the abort grace period have passed.
    pub(crate) fn run(&mut self, plan: &RunPlan<'_>) -> RunRecord {
        let recorder = Arc::new(Recorder::new(plan.abort_at_token, plan.pause_limit));
        let mut options = GenerateOptions::new();
        if let Some(path) = plan.save_cache {
            options = options.save_prompt_cache(path);
        }
        let mut record = RunRecord::failed(String::new());
        record.error = None;
        let Instance { session, model } = self;
        let ((), log) = capture(|| {
            let observer: Arc<dyn RunObserver> = Arc::clone(&recorder) as _;
            let input = Input::prompt(plan.prompt);
            match session.start_stream_observed(input, &options, observer) {
                Ok(mut stream) => {
                    supervise(model, &stream.abort_handle(), &recorder, plan, &mut record);
                    // Returns at once when the run has returned; otherwise aborts again and
                    // again and waits at most the stop timeout (dropping would not wait).
                    if let Err(e) = stream.stop() {
                        log::error!(target: "rkllm", "stopping the probe's run: {e}");
                    }
                }
                Err(e) => record.error = Some(e.to_string()),
            }
        });
        record.log = log;
        record.events = lock(&recorder.events).clone();
        record.call = *lock(&recorder.call);
        if let Some((rc, at)) = recorder.returned() {
            record.return_code = Some(rc);
            record.returned_at = Some(at);
            record.is_running_after = Some(self.is_running());
        }
        record
    }
}

/// Waits for the run, acting at the pause and at the time limit.
fn supervise(
    model: &Model,
    abort: &AbortHandle,
    recorder: &Recorder,
    plan: &RunPlan<'_>,
    record: &mut RunRecord,
) {
    let deadline = Instant::now() + plan.timeout;
    loop {
        match recorder.wait(deadline, record.stop.is_some()) {
            Wake::Returned => break,
            Wake::Holding => {
                let is_running_during = model.is_running_code();
                let at = Instant::now();
                // The held callback belongs to the current run, so there is one to abort.
                let abort_rc = abort.abort_code().unwrap_or_default();
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
            Wake::Deadline => {
                record.timed_out = true;
                // The stream's stop aborts; a held callback must not wait for the pause limit.
                recorder.release();
                break;
            }
        }
    }
}
