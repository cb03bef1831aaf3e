//! The runtime handle and its one owner.
//!
//! The invariant: the handle is used only when idle, calls on it are serialised, and it is
//! destroyed once, after the run in flight (if any) has returned. Everything that touches
//! the handle goes through [`Handle`], which enforces it:
//! * a run holds the call lock for the whole `rkllm_run`; other calls take it too, so they
//!   never overlap a run (they report [`Error::RunInProgress`] instead);
//! * `rkllm_abort` goes through [`AbortCore`], whose lock is held across the call and is
//!   taken by `Drop` before the handle is destroyed, so an abort never reaches a destroyed
//!   handle;
//! * every stop is bounded by the model's stop timeout: a run that does not return in time
//!   makes the model unusable and its handle and run state are leaked, never freed under
//!   the runtime's feet.

use std::ffi::CStr;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rkllm_sys::{LLMHandle, RKLLMLoraAdapter, RkllmApi};

use super::callback::{lock, Event, RunObserver, RunShared};
use super::job::{RawHandle, RunJob};
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// How often an unacknowledged stop is sent to the runtime again while waiting for it (it
/// does not cut a prefill short).
const ABORT_RETRY: Duration = Duration::from_millis(100);

/// The abort side of a handle, shared with [`AbortHandle`]s.
pub(crate) struct AbortCore {
    api: RkllmApi,
    slot: Mutex<AbortSlot>,
}

struct AbortSlot {
    /// Cleared before `rkllm_destroy`.
    handle: Option<RawHandle>,
    /// The run in flight.
    current: Option<Arc<RunShared>>,
}

impl AbortCore {
    /// Aborts the current run if it is `run` (any run when `None`). Token delivery stops
    /// before `rkllm_abort` is called, so a runtime whose abort waits for the run to stop
    /// never waits on a consumer. Returns whether a run was aborted.
    fn abort(&self, run: Option<u64>) -> bool {
        self.abort_code(run).is_some()
    }

    /// As [`abort`](Self::abort), returning what `rkllm_abort` returned (`Some(0)` when the
    /// handle is already gone), or `None` when there was nothing to abort.
    fn abort_code(&self, run: Option<u64>) -> Option<i32> {
        let slot = lock(&self.slot);
        let current = slot.current.as_ref()?;
        if run.is_some_and(|id| id != current.id()) {
            return None;
        }
        current.request_abort();
        let rc = match slot.handle {
            // SAFETY: the handle is live: it is taken out of this slot (under this lock)
            // before rkllm_destroy, and the lock is held across the call. rkllm_abort is
            // meant to be called from another thread while rkllm_run blocks.
            Some(h) => unsafe { (self.api.abort)(h.0) },
            None => 0,
        };
        Some(rc)
    }

    fn begin_run(&self, shared: &Arc<RunShared>) {
        lock(&self.slot).current = Some(Arc::clone(shared));
    }

    fn end_run(&self, id: u64) {
        let mut slot = lock(&self.slot);
        if slot.current.as_ref().is_some_and(|c| c.id() == id) {
            slot.current = None;
        }
    }
}

/// Stops a run from any thread.
///
/// Taken from a stream ([`TokenStream::abort_handle`](crate::TokenStream::abort_handle)) it
/// stops that run only: once the run is over it does nothing, so a handle kept by a finished
/// request can never stop the next one. Taken from the model
/// ([`Model::abort_handle`](crate::Model::abort_handle)) it stops whatever run is in
/// flight. Cloneable, `Send + Sync`, and safe to keep after the model is gone (it then does
/// nothing), like rusqlite's `InterruptHandle`.
///
/// Aborting stops token delivery at once (the stream ends with
/// [`FinishReason::Aborted`](crate::FinishReason::Aborted)); it never waits for the
/// consumer, so it can be called from the consumer's own thread.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, FinishReason, GenerateOptions, Model, Runtime};
/// let file = MockModel::new()
///     .answer("one two three four five six seven eight nine ten eleven twelve")
///     .decode_seconds_per_token(0.05) // a run that takes a while
///     .write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let mut session = model.session()?;
/// let mut stream = session.generate("Count", &GenerateOptions::new())?;
/// let first = stream.next().unwrap()?;
/// let stop = stream.abort_handle();
/// let stopped = std::thread::spawn(move || stop.abort()).join().unwrap();
/// assert!(stopped, "the run was in flight");
/// assert_eq!(stream.by_ref().count(), 0, "nothing after the abort");
/// assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
/// # let _ = first;
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
#[derive(Clone)]
pub struct AbortHandle {
    core: Arc<AbortCore>,
    run: Option<u64>,
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl AbortHandle {
    /// Asks the runtime to stop the run. Returns `false` when there was nothing to stop
    /// (no run in flight, or this handle's run is over); nothing is sent to the runtime then.
    /// The runtime may take a moment to return (it does not cut a prefill short).
    pub fn abort(&self) -> bool {
        self.core.abort(self.run)
    }

    /// As [`abort`](Self::abort), returning what `rkllm_abort` returned, or `None` when
    /// there was nothing to stop (the probe reports the code).
    #[cfg_attr(not(feature = "probe"), allow(dead_code))]
    pub(crate) fn abort_code(&self) -> Option<i32> {
        self.core.abort_code(self.run)
    }
}

/// A run in flight: its state, the worker blocked in `rkllm_run`, and, once its consumer
/// asked it to stop, the thread that sends the runtime the abort.
struct ActiveRun {
    shared: Arc<RunShared>,
    worker: JoinHandle<()>,
    /// Started by [`Handle::stop_in_background`]; ends when the run has returned or at
    /// `deadline`.
    stopper: Option<JoinHandle<()>>,
    /// When a stop was first asked for, plus the stop timeout: the bound of every wait for
    /// this run from then on.
    deadline: Option<Instant>,
}

impl ActiveRun {
    /// Joins the worker and the stopper; the run has returned, so both end at once.
    fn join(self) {
        // Both threads catch every panic of their own; an Err here cannot carry one of ours.
        let _ = self.worker.join();
        if let Some(stopper) = self.stopper {
            let _ = stopper.join();
        }
    }
}

/// What the consumer of a run holds.
pub(crate) struct RunTicket {
    pub rx: Receiver<Event>,
    pub shared: Arc<RunShared>,
}

/// The one owner of a runtime handle. See the module docs for the invariant it keeps.
pub(crate) struct Handle {
    runtime: Runtime,
    raw: RawHandle,
    abort: Arc<AbortCore>,
    /// Serialises every call on the handle but abort and is_running; a run holds it for the
    /// whole `rkllm_run`.
    call_lock: Arc<Mutex<()>>,
    active: Mutex<Option<ActiveRun>>,
    /// Set when a run did not stop within the stop timeout.
    unusable: OnceLock<String>,
    stop_timeout: Duration,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("raw", &self.raw).finish()
    }
}

impl Handle {
    /// Takes ownership of a handle `runtime`'s `rkllm_init` returned.
    pub(crate) fn new(runtime: Runtime, raw: LLMHandle, stop_timeout: Duration) -> Handle {
        let raw = RawHandle(raw);
        Handle {
            abort: Arc::new(AbortCore {
                api: *runtime.api(),
                slot: Mutex::new(AbortSlot {
                    handle: Some(raw),
                    current: None,
                }),
            }),
            runtime,
            raw,
            call_lock: Arc::new(Mutex::new(())),
            active: Mutex::new(None),
            unusable: OnceLock::new(),
            stop_timeout,
        }
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn check_usable(&self) -> Result<()> {
        match self.unusable.get() {
            Some(reason) => Err(Error::ModelUnusable {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// An abort handle for run `run`, or for whatever run is current (`None`).
    pub(crate) fn abort_handle(&self, run: Option<u64>) -> AbortHandle {
        AbortHandle {
            core: Arc::clone(&self.abort),
            run,
        }
    }

    /// Starts `rkllm_run` on a worker thread. A run left behind by a leaked stream is
    /// stopped first (within the stop timeout).
    pub(crate) fn start_run(
        &self,
        mut job: RunJob,
        observer: Option<Arc<dyn RunObserver>>,
    ) -> Result<RunTicket> {
        self.stop_active()?;
        self.check_usable()?;
        let (shared, rx) = RunShared::register(observer);
        let worker_shared = Arc::clone(&shared);
        let api = *self.runtime.api();
        let raw = self.raw;
        let abort = Arc::clone(&self.abort);
        let call_lock = Arc::clone(&self.call_lock);
        let id = shared.id();
        abort.begin_run(&shared);
        #[cfg(test)]
        if tests::FAIL_SPAWN.load(std::sync::atomic::Ordering::SeqCst) {
            self.abort.end_run(id);
            return Err(Error::ThreadSpawn {
                source: std::io::Error::other("injected thread spawn failure"),
            });
        }
        let spawned = std::thread::Builder::new()
            .name("rkllm-run".into())
            .spawn(move || {
                let rc = if worker_shared.abort_requested() {
                    // Aborted before the runtime was reached.
                    0
                } else {
                    let _guard = lock(&call_lock);
                    worker_shared.run_starting();
                    // SAFETY: the handle is live: `Handle` stops and joins this worker before
                    // destroying it, and never destroys it if the worker did not end. The call
                    // lock makes this the handle's only call but abort and is_running.
                    catch_unwind(AssertUnwindSafe(|| unsafe { job.run(&api, raw, id) }))
                        .unwrap_or(-1)
                };
                abort.end_run(id);
                // The job's buffers are freed when this thread ends, after rkllm_run returned.
                worker_shared.set_returned(rc);
            });
        match spawned {
            Ok(worker) => {
                *lock(&self.active) = Some(ActiveRun {
                    shared: Arc::clone(&shared),
                    worker,
                    stopper: None,
                    deadline: None,
                });
                Ok(RunTicket { rx, shared })
            }
            Err(source) => {
                self.abort.end_run(id);
                Err(Error::ThreadSpawn { source })
            }
        }
    }

    /// Joins run `id` once its worker has reported `rkllm_run`'s return.
    pub(crate) fn finish_run(&self, id: u64) {
        let active = {
            let mut slot = lock(&self.active);
            match &*slot {
                Some(a) if a.shared.id() == id => slot.take(),
                _ => None,
            }
        };
        if let Some(active) = active {
            active.join();
        }
    }

    /// Asks run `id` (if it is still active) to stop without waiting for it: token delivery
    /// stops at once, and `rkllm_abort`, which may block until the run has stopped, is
    /// called on a thread of its own, again every [`ABORT_RETRY`] until `rkllm_run` returns
    /// or the stop timeout has passed. The run stays the handle's active run: the next call
    /// on the handle (or its drop) waits for it, bounded by the same deadline.
    pub(crate) fn stop_in_background(&self, id: u64) {
        let mut slot = lock(&self.active);
        let Some(active) = slot.as_mut().filter(|a| a.shared.id() == id) else {
            return;
        };
        active.shared.request_abort();
        if active.shared.return_code().is_some() {
            // Over already: its threads end at once.
            if let Some(active) = slot.take() {
                drop(slot);
                active.join();
            }
            return;
        }
        if active.stopper.is_some() {
            return;
        }
        let deadline = Instant::now() + self.stop_timeout;
        active.deadline = Some(deadline);
        let abort = Arc::clone(&self.abort);
        let shared = Arc::clone(&active.shared);
        let spawned = std::thread::Builder::new()
            .name("rkllm-stop".into())
            .spawn(move || loop {
                // Once the run has ended this sends nothing (the run is no longer current).
                abort.abort(Some(id));
                if shared.wait_returned(ABORT_RETRY) || Instant::now() >= deadline {
                    return;
                }
            });
        match spawned {
            Ok(stopper) => active.stopper = Some(stopper),
            // The next call on the handle aborts the run itself (Handle::stop).
            Err(e) => log::warn!(target: "rkllm", "starting the thread that stops a run: {e}"),
        }
    }

    /// When the wait for run `id` ends at the latest, once a stop was asked for.
    pub(crate) fn stop_deadline(&self, id: u64) -> Option<Instant> {
        lock(&self.active)
            .as_ref()
            .filter(|a| a.shared.id() == id)
            .and_then(|a| a.deadline)
    }

    /// Stops run `id` (if it is still active) and waits for `rkllm_run` to return, at most
    /// the stop timeout.
    pub(crate) fn stop_run(&self, id: u64) -> Result<()> {
        let active = {
            let mut slot = lock(&self.active);
            match &*slot {
                Some(a) if a.shared.id() == id => slot.take(),
                _ => None,
            }
        };
        match active {
            Some(active) => self.stop(active),
            None => Ok(()),
        }
    }

    /// Whether the next call on the handle can start without waiting: `Ok(None)` when it
    /// can (a run that has returned is joined now, at once); `Ok(Some(deadline))` while a
    /// run let go earlier is still in `rkllm_run`: `waker` is woken when it returns, and
    /// from `deadline` on the next call settles it. A run that was never asked to stop (its
    /// stream was leaked) is asked now, as the next call would ask it.
    ///
    /// # Errors
    /// [`Error::ModelUnusable`] when a run did not return within the stop timeout.
    pub(crate) fn poll_idle(&self, waker: &Waker) -> Result<Option<Instant>> {
        self.check_usable()?;
        let Some(id) = lock(&self.active).as_ref().map(|a| a.shared.id()) else {
            return Ok(None);
        };
        self.stop_in_background(id);
        let slot = lock(&self.active);
        let Some(active) = slot.as_ref().filter(|a| a.shared.id() == id) else {
            // It had returned and was joined.
            return Ok(None);
        };
        active.shared.set_waker(waker);
        // Looked at after the waker is in place, so a return in between is not missed.
        if active.shared.return_code().is_some() {
            drop(slot);
            self.finish_run(id);
            return Ok(None);
        }
        match active.deadline {
            Some(deadline) if Instant::now() < deadline => Ok(Some(deadline)),
            // Past the deadline: settled as the next call would settle it, without waiting.
            _ => {
                drop(slot);
                self.stop_active().map(|()| None)
            }
        }
    }

    /// Asks whatever run is active to stop, without waiting (see
    /// [`stop_in_background`](Self::stop_in_background)).
    pub(crate) fn stop_active_in_background(&self) {
        let id = lock(&self.active).as_ref().map(|a| a.shared.id());
        if let Some(id) = id {
            self.stop_in_background(id);
        }
    }

    /// Stops whatever run is active (one whose stream was leaked), within the stop timeout.
    pub(crate) fn stop_active(&self) -> Result<()> {
        let active = lock(&self.active).take();
        match active {
            Some(active) => self.stop(active),
            None => Ok(()),
        }
    }

    fn stop(&self, active: ActiveRun) -> Result<()> {
        let id = active.shared.id();
        if active.shared.return_code().is_none() {
            active.shared.stop_delivery();
            self.abort.abort(Some(id));
        }
        // A stop asked for earlier (a dropped stream) is bounded from then.
        let deadline = active
            .deadline
            .unwrap_or_else(|| Instant::now() + self.stop_timeout);
        loop {
            let now = Instant::now();
            if active
                .shared
                .wait_returned(ABORT_RETRY.min(deadline.saturating_duration_since(now)))
            {
                active.join();
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            // The runtime may not have seen the abort yet (it does not cut a prefill short).
            self.abort.abort(Some(id));
        }
        let reason = format!(
            "rkllm_run did not return within {:?} of being aborted; the model's handle and \
             its run were left in place (the runtime may still use them) and the model cannot \
             be used again",
            self.stop_timeout
        );
        log::error!(target: "rkllm", "{reason}");
        let _ = self.unusable.set(reason);
        // Detach the worker: it owns the run's buffers until rkllm_run returns, if ever. The
        // stopper ends by itself (its deadline has passed).
        drop(active);
        Err(Error::ModelUnusable {
            reason: self.unusable.get().cloned().unwrap_or_default(),
        })
    }

    /// Takes the call lock for a call on the idle handle.
    fn idle(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.check_usable()?;
        // A run that is being stopped (its stream was dropped) is waited for, bounded.
        let stopping = lock(&self.active)
            .as_ref()
            .is_some_and(|a| a.deadline.is_some());
        if stopping {
            self.stop_active()?;
        }
        let busy = lock(&self.active)
            .as_ref()
            .is_some_and(|a| a.shared.return_code().is_none());
        if busy {
            return Err(Error::RunInProgress);
        }
        match self.call_lock.try_lock() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(Error::RunInProgress),
        }
    }

    /// `rkllm_load_lora` on the idle handle.
    pub(crate) fn load_lora(&self, path: &CStr, name: &CStr, scale: f32) -> Result<()> {
        let _guard = self.idle()?;
        let mut adapter = RKLLMLoraAdapter {
            lora_adapter_path: path.as_ptr(),
            lora_adapter_name: name.as_ptr(),
            scale,
        };
        // SAFETY: the handle is live (self owns it), the call lock serialises this call with
        // every other but abort, and the strings outlive the call.
        let rc = unsafe { (self.runtime.api().load_lora)(self.raw.0, &mut adapter) };
        check("rkllm_load_lora", rc)
    }

    /// `rkllm_load_prompt_cache` on the idle handle.
    pub(crate) fn load_prompt_cache(&self, path: &CStr) -> Result<()> {
        let _guard = self.idle()?;
        // SAFETY: as in load_lora; the path outlives the call.
        let rc = unsafe { (self.runtime.api().load_prompt_cache)(self.raw.0, path.as_ptr()) };
        check("rkllm_load_prompt_cache", rc)
    }

    /// `rkllm_release_prompt_cache` on the idle handle.
    pub(crate) fn release_prompt_cache(&self) -> Result<()> {
        let _guard = self.idle()?;
        // SAFETY: as in load_lora.
        let rc = unsafe { (self.runtime.api().release_prompt_cache)(self.raw.0) };
        check("rkllm_release_prompt_cache", rc)
    }

    /// What `rkllm_is_running` returns (callable while a run blocks on another thread).
    pub(crate) fn is_running_code(&self) -> i32 {
        // SAFETY: the handle is live while self exists (and never destroyed while a run may
        // use it); rkllm_is_running is meant to be callable while a run blocks.
        unsafe { (self.runtime.api().is_running)(self.raw.0) }
    }
}

fn check(func: &'static str, code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Call { func, code })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Order matters: stop and join any run, make abort handles inert, then destroy.
        let stopped = self.stop_active();
        lock(&self.abort.slot).handle = None;
        if stopped.is_err() || self.unusable.get().is_some() {
            // The runtime may still be inside rkllm_run with this handle: leak it, and keep
            // the library loaded, rather than destroy what it uses.
            log::error!(
                target: "rkllm",
                "not destroying the model's handle: a run on it never returned"
            );
            std::mem::forget(self.runtime.clone());
            return;
        }
        let _guard = lock(&self.call_lock);
        // SAFETY: the handle came from a successful rkllm_init of this runtime; no run is in
        // flight (joined above), no abort handle can reach it any more, and this is the only
        // place that destroys it, once.
        let rc = unsafe { (self.runtime.api().destroy)(self.raw.0) };
        if rc != 0 {
            log::warn!(target: "rkllm", "rkllm_destroy returned {rc}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicBool;

    /// Makes the next run's worker fail to spawn (only this crate's unit tests set it).
    pub(crate) static FAIL_SPAWN: AtomicBool = AtomicBool::new(false);

    #[cfg(feature = "mock")]
    #[test]
    fn a_thread_spawn_failure_is_reported_as_such_and_leaves_the_model_usable() {
        use std::sync::atomic::Ordering;

        use crate::mock::MockModel;
        use crate::{Error, GenerateOptions, Model, Runtime};

        let file = MockModel::new().answer("fine").write_temp_file().unwrap();
        let model = Model::builder(&*file)
            .runtime(Runtime::mock())
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        let _runs = crate::ffi::callback::lock(&crate::ffi::callback::tests::MODEL_RUNS);
        FAIL_SPAWN.store(true, Ordering::SeqCst);
        let err = session.complete("q", &GenerateOptions::new()).unwrap_err();
        FAIL_SPAWN.store(false, Ordering::SeqCst);
        assert!(matches!(err, Error::ThreadSpawn { .. }), "{err:?}");
        assert!(err.to_string().contains("thread"), "{err}");
        let done = session.complete("q", &GenerateOptions::new()).unwrap();
        assert_eq!(done.text, "fine");
    }
}
