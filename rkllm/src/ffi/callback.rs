//! The C callback (trampoline), the per-run state it feeds, and the registry that connects
//! the two.
//!
//! `userdata` is never a pointer: it is the run's id, looked up in a process-wide registry
//! of weak references. A callback for a run that is gone, or that arrives after `rkllm_run`
//! returned, finds nothing to deliver to and is ignored, whatever the closed runtime does.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::Waker;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rkllm_sys::{
    LLMCallState, RKLLMResult, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH, RKLLM_RUN_GET_LAST_HIDDEN_LAYER,
    RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
};

use crate::hidden::HiddenStates;

/// How many events may wait for the consumer before the runtime's callback blocks.
///
/// A token event is a few dozen bytes, so memory stays bounded (a slow consumer applies
/// back-pressure: generation pauses in the callback). 256 tokens of slack cover any hiccup
/// of a consumer that keeps up on average (an RK3588 decodes 5–30 tokens/s), so the runtime
/// thread practically never waits. It cannot deadlock: every stop releases a blocked
/// callback before it asks the runtime to abort.
pub(crate) const CHANNEL_CAPACITY: usize = 256;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the callback hands to the consumer.
#[derive(Debug)]
pub(crate) enum Event {
    Token {
        id: i32,
        bytes: Vec<u8>,
        /// Delivered in the WAITING state (an incomplete character).
        waiting: bool,
        /// When the callback delivered it.
        at: Instant,
    },
    Hidden(HiddenStates),
    Finish,
    Error,
    /// The callback panicked; the payload is in the run's state.
    Panicked,
    /// Sent by the worker after `rkllm_run` returned; the last event of a run.
    Returned {
        code: i32,
        at: Instant,
    },
}

/// What a callback's `result->text` held, for observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawText {
    /// `result` itself was NULL.
    NoResult,
    /// `text` was NULL.
    Null,
    /// The bytes up to the NUL (empty for an empty string).
    Bytes(Vec<u8>),
}

#[cfg_attr(not(feature = "probe"), allow(dead_code))]
impl RawText {
    /// The bytes, NULL read as none (what the trampoline delivers).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            RawText::Bytes(b) => b,
            _ => &[],
        }
    }
}

/// One callback as the runtime made it, for observers.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "probe"), allow(dead_code))] // Read by observers (the probe).
pub(crate) struct RawCallback {
    pub state: LLMCallState,
    pub token_id: i32,
    pub text: RawText,
    pub thread: ThreadId,
    pub at: Instant,
    /// Whether `rkllm_run` had already returned (a callback the runtime should not send).
    pub after_return: bool,
}

#[cfg_attr(not(feature = "probe"), allow(dead_code))]
impl RawCallback {
    /// A NORMAL or WAITING callback: a generated token.
    pub(crate) fn is_token(&self) -> bool {
        self.state == RKLLM_RUN_NORMAL || self.state == RKLLM_RUN_WAITING
    }
}

/// Sees every callback of a run before it is delivered (the on-board probe records them),
/// and the `rkllm_run` call around them.
///
/// `on_callback` runs on the runtime's callback thread, inside the callback: it may block
/// briefly (the run then waits). A panic in any method is caught and ignored.
#[cfg_attr(not(feature = "probe"), allow(dead_code))]
pub(crate) trait RunObserver: Send + Sync {
    /// On the thread about to call `rkllm_run`, just before the call.
    fn on_run_start(&self) {}
    /// One callback of the run.
    fn on_callback(&self, callback: &RawCallback);
    /// `rkllm_run` returned `code` (on the thread that called it).
    fn on_returned(&self, _code: i32) {}
    /// Whether the run's stream receives its tokens (default). An observer that records
    /// everything itself turns this off, so a stream nobody reads never fills up; the run
    /// then ends its stream with no tokens.
    fn delivers(&self) -> bool {
        true
    }
}

/// State shared by the worker, the callback and the consumer of one run.
pub(crate) struct RunShared {
    id: u64,
    tx: Sender<Event>,
    /// Disconnected (its sender dropped) to release a callback blocked on a full channel.
    cancel: Receiver<()>,
    cancel_tx: Mutex<Option<Sender<()>>>,
    /// Latched at FINISH, ERROR or a panic: later callbacks deliver nothing.
    terminal: AtomicBool,
    /// Set once the run is being stopped: tokens are no longer sent, so the runtime thread
    /// never waits on the channel while someone is inside `rkllm_abort` (which may block
    /// until the run has stopped).
    draining: AtomicBool,
    /// An abort of this run was requested (by its stream or an abort handle).
    abort_requested: AtomicBool,
    /// FINISH and ERROR are recorded here too, so they are known even when their event was
    /// not sent.
    finish_seen: AtomicBool,
    error_seen: AtomicBool,
    /// What `rkllm_run` returned, once it has; signalled through `returned_cv`.
    returned: Mutex<Option<i32>>,
    returned_cv: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The async consumer's waker, woken after every event.
    waker: Mutex<Option<Waker>>,
    observer: Option<Arc<dyn RunObserver>>,
}

impl RunShared {
    /// A new run's state, registered so the trampoline can find it by id.
    pub(crate) fn register(
        observer: Option<Arc<dyn RunObserver>>,
    ) -> (Arc<RunShared>, Receiver<Event>) {
        static NEXT_RUN_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_RUN_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (cancel_tx, cancel) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(RunShared {
            id,
            tx,
            cancel,
            cancel_tx: Mutex::new(Some(cancel_tx)),
            terminal: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            abort_requested: AtomicBool::new(false),
            finish_seen: AtomicBool::new(false),
            error_seen: AtomicBool::new(false),
            returned: Mutex::new(None),
            returned_cv: Condvar::new(),
            panic: Mutex::new(None),
            waker: Mutex::new(None),
            observer,
        });
        if shared.observer.as_ref().is_some_and(|o| !o.delivers()) {
            shared.stop_delivery();
        }
        lock(registry()).insert(id, Arc::downgrade(&shared));
        (shared, rx)
    }

    /// Tells the observer that `rkllm_run` is about to be called, on the calling thread.
    pub(crate) fn run_starting(&self) {
        if let Some(observer) = &self.observer {
            let _ = catch_unwind(AssertUnwindSafe(|| observer.on_run_start()));
        }
    }

    /// The run's id, passed to the runtime as `userdata`.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn send(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(event)) => {
                crossbeam_channel::select! {
                    send(self.tx, event) -> _ => {},
                    recv(self.cancel) -> _ => {},
                }
            }
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    /// Registers a waker, woken at the next event: the async consumer's, or once its stream
    /// is gone, that of a wait for the run to return.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Stops token delivery and releases a callback blocked on the channel. From now on the
    /// runtime thread never waits for the consumer.
    pub(crate) fn stop_delivery(&self) {
        self.draining.store(true, Ordering::Release);
        lock(&self.cancel_tx).take();
        self.wake();
    }

    /// Marks the run as aborted and stops delivery (the caller then calls `rkllm_abort`).
    pub(crate) fn request_abort(&self) {
        self.abort_requested.store(true, Ordering::SeqCst);
        self.stop_delivery();
    }

    pub(crate) fn abort_requested(&self) -> bool {
        self.abort_requested.load(Ordering::SeqCst)
    }

    pub(crate) fn finish_seen(&self) -> bool {
        self.finish_seen.load(Ordering::Acquire)
    }

    pub(crate) fn error_seen(&self) -> bool {
        self.error_seen.load(Ordering::Acquire)
    }

    /// Called by the worker once `rkllm_run` has returned.
    pub(crate) fn set_returned(&self, code: i32) {
        self.terminal.store(true, Ordering::Release);
        *lock(&self.returned) = Some(code);
        if let Some(observer) = &self.observer {
            let _ = catch_unwind(AssertUnwindSafe(|| observer.on_returned(code)));
        }
        self.returned_cv.notify_all();
        self.send(Event::Returned {
            code,
            at: Instant::now(),
        });
    }

    /// What `rkllm_run` returned, if it has.
    pub(crate) fn return_code(&self) -> Option<i32> {
        *lock(&self.returned)
    }

    /// Waits until `rkllm_run` has returned, at most `limit`. Returns whether it has.
    pub(crate) fn wait_returned(&self, limit: Duration) -> bool {
        let guard = lock(&self.returned);
        let (guard, _) = self
            .returned_cv
            .wait_timeout_while(guard, limit, |rc| rc.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.is_some()
    }

    /// What the trampoline does when the callback panics, for tests of the consumers.
    #[cfg(all(test, feature = "mock"))]
    pub(crate) fn inject_panic(&self, payload: Box<dyn Any + Send>) {
        self.terminal.store(true, Ordering::Release);
        *lock(&self.panic) = Some(payload);
        self.send(Event::Panicked);
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        lock(&self.panic).take()
    }
}

impl Drop for RunShared {
    fn drop(&mut self) {
        lock(registry()).remove(&self.id);
    }
}

fn registry() -> &'static Mutex<HashMap<u64, Weak<RunShared>>> {
    static RUNS: OnceLock<Mutex<HashMap<u64, Weak<RunShared>>>> = OnceLock::new();
    RUNS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The run a callback's `userdata` names, if it still exists.
fn lookup(userdata: *mut c_void) -> Option<Arc<RunShared>> {
    let id = userdata.addr() as u64;
    if id == 0 {
        return None;
    }
    let weak = lock(registry()).get(&id).cloned()?;
    weak.upgrade()
}

/// The `userdata` passed to `rkllm_run` for a run: its id, never an address.
pub(crate) fn userdata_of(id: u64) -> *mut c_void {
    std::ptr::without_provenance_mut(id as usize)
}

/// The callback registered with `rkllm_init`, shared by every run of every model.
///
/// # Safety
///
/// Called by the runtime with `result` either null or valid for the duration of the call.
/// `userdata` may be anything: it is only used as a number.
pub(crate) unsafe extern "C" fn trampoline(
    result: *mut RKLLMResult,
    userdata: *mut c_void,
    state: LLMCallState,
) {
    // Nothing below unwinds into C: every panic is caught, stored and re-raised on the
    // consumer's thread.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(shared) = lookup(userdata) else {
            return;
        };
        // SAFETY: `result` is null or valid during this call (the function's contract).
        let result = unsafe { result.as_ref() };
        let returned = shared.return_code().is_some();
        if let Some(observer) = &shared.observer {
            // SAFETY: as above; the text is copied before the observer sees it.
            let raw = unsafe { raw_callback(result, state, returned) };
            // An observer's panic is its own business; the run goes on.
            let _ = catch_unwind(AssertUnwindSafe(|| observer.on_callback(&raw)));
        }
        if returned || shared.terminal.load(Ordering::Acquire) {
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: as above; `on_result` copies everything out before returning.
            unsafe { on_result(&shared, result, state) }
        }));
        if let Err(payload) = outcome {
            shared.terminal.store(true, Ordering::Release);
            *lock(&shared.panic) = Some(payload);
            // The consumer re-raises it at once; its stream then stops the run.
            shared.send(Event::Panicked);
        }
    }));
}

/// # Safety
///
/// `result`, when present, must be the runtime's result for this callback, valid during it.
unsafe fn raw_callback(
    result: Option<&RKLLMResult>,
    state: LLMCallState,
    after_return: bool,
) -> RawCallback {
    let (token_id, text) = match result {
        None => (i32::MIN, RawText::NoResult),
        Some(r) if r.text.is_null() => (r.token_id, RawText::Null),
        Some(r) => {
            // SAFETY: non-null `text` is NUL-terminated and valid during the callback; it is
            // copied here.
            let bytes = unsafe { CStr::from_ptr(r.text) }.to_bytes().to_vec();
            (r.token_id, RawText::Bytes(bytes))
        }
    };
    RawCallback {
        state,
        token_id,
        text,
        thread: std::thread::current().id(),
        at: Instant::now(),
        after_return,
    }
}

/// # Safety
///
/// `result`, when present, must be the runtime's result for this callback: `text` null or
/// NUL-terminated, `hidden_states` null or holding `num_tokens × embd_size` floats.
unsafe fn on_result(shared: &RunShared, result: Option<&RKLLMResult>, state: LLMCallState) {
    match state {
        RKLLM_RUN_NORMAL | RKLLM_RUN_WAITING => {
            #[cfg(test)]
            if tests::PANIC_IN_CALLBACK.load(Ordering::SeqCst) {
                panic!("injected callback panic");
            }
            let Some(r) = result else { return };
            if shared.draining.load(Ordering::Acquire) {
                return;
            }
            let bytes = if r.text.is_null() {
                Vec::new()
            } else {
                // SAFETY: non-null `text` is a NUL-terminated string valid during the callback.
                unsafe { CStr::from_ptr(r.text) }.to_bytes().to_vec()
            };
            shared.send(Event::Token {
                id: r.token_id,
                bytes,
                waiting: state == RKLLM_RUN_WAITING,
                at: Instant::now(),
            });
        }
        RKLLM_RUN_FINISH => {
            shared.finish_seen.store(true, Ordering::Release);
            shared.terminal.store(true, Ordering::Release);
            if !shared.draining.load(Ordering::Acquire) {
                shared.send(Event::Finish);
            }
        }
        RKLLM_RUN_ERROR => {
            shared.error_seen.store(true, Ordering::Release);
            shared.terminal.store(true, Ordering::Release);
            if !shared.draining.load(Ordering::Acquire) {
                shared.send(Event::Error);
            }
        }
        RKLLM_RUN_GET_LAST_HIDDEN_LAYER => {
            let Some(r) = result else { return };
            if shared.draining.load(Ordering::Acquire) {
                return;
            }
            let h = &r.last_hidden_layer;
            let (Ok(rows), Ok(cols)) =
                (usize::try_from(h.num_tokens), usize::try_from(h.embd_size))
            else {
                return;
            };
            let Some(len) = rows.checked_mul(cols) else {
                return;
            };
            let data = if h.hidden_states.is_null() || len == 0 {
                Vec::new()
            } else {
                // SAFETY: the runtime's buffer holds num_tokens × embd_size floats and is valid
                // until the next callback; it is copied here, inside this one.
                unsafe { std::slice::from_raw_parts(h.hidden_states, len) }.to_vec()
            };
            let states = HiddenStates {
                num_tokens: if data.is_empty() { 0 } else { rows },
                embd_size: cols,
                data,
            };
            shared.send(Event::Hidden(states));
        }
        // Unknown states (none exist in 1.1.x) are ignored rather than misread.
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Makes the callback panic on every token (only this crate's unit tests set it).
    pub(crate) static PANIC_IN_CALLBACK: AtomicBool = AtomicBool::new(false);

    /// Held by every unit test that runs a model, so the global panic switch above never
    /// reaches another test's run. (Only tests with the mock run models.)
    #[cfg_attr(not(feature = "mock"), allow(dead_code))]
    pub(crate) static MODEL_RUNS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_callback_for_an_unknown_or_finished_run_is_ignored() {
        let (shared, rx) = RunShared::register(None);
        let id = shared.id();
        let mut result = RKLLMResult::default();
        let text = c"hi";
        result.text = text.as_ptr();
        result.token_id = 7;
        // SAFETY: `result` is valid for the call; the userdata is only read as a number.
        unsafe { trampoline(&mut result, userdata_of(id), RKLLM_RUN_NORMAL) };
        assert!(matches!(rx.try_recv(), Ok(Event::Token { id: 7, .. })));
        // After rkllm_run returned, a late callback delivers nothing.
        shared.set_returned(0);
        assert!(matches!(rx.try_recv(), Ok(Event::Returned { code: 0, .. })));
        // SAFETY: as above.
        unsafe { trampoline(&mut result, userdata_of(id), RKLLM_RUN_NORMAL) };
        assert!(rx.try_recv().is_err());
        // Once the run's state is gone, its id finds nothing (no dangling pointer to follow).
        drop(shared);
        // SAFETY: as above.
        unsafe { trampoline(&mut result, userdata_of(id), RKLLM_RUN_NORMAL) };
        // SAFETY: null result and made-up userdata are accepted.
        unsafe {
            trampoline(
                std::ptr::null_mut(),
                std::ptr::without_provenance_mut(0xdead_beef),
                0,
            )
        };
        assert!(lookup(userdata_of(id)).is_none());
    }

    #[cfg(feature = "mock")]
    #[test]
    fn a_panic_in_the_callback_never_reaches_c_and_is_reraised_on_the_consumer() {
        use crate::mock::MockModel;
        use crate::{GenerateOptions, Model, Runtime};

        let file = MockModel::new()
            .answer("abc def ghi")
            .write_temp_file()
            .unwrap();
        let model = Model::builder(&*file)
            .runtime(Runtime::mock())
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        let _runs = lock(&MODEL_RUNS);
        PANIC_IN_CALLBACK.store(true, Ordering::SeqCst);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            session.complete("q", &GenerateOptions::new())
        }));
        PANIC_IN_CALLBACK.store(false, Ordering::SeqCst);
        // The runtime thread survived (the mock would have aborted the process otherwise),
        // and the payload arrived on this thread.
        let payload = caught.expect_err("the callback's panic is re-raised here");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"injected callback panic")
        );
        let done = session.complete("q", &GenerateOptions::new()).unwrap();
        assert_eq!(done.text, "abc def ghi");
    }
}
