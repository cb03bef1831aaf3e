//! The unsafe glue of a run: the C callback (trampoline), the per-run state it reaches
//! through `userdata`, and the worker thread that calls `rkllm_run`.
//!
//! Ownership rules, which make this sound whatever the runtime's threading:
//! * The per-run state ([`RunShared`]) and the input buffers are owned by the worker thread
//!   for the whole `rkllm_run` call; `userdata` points at that state. The callback only
//!   borrows it and copies everything it needs out of the runtime's buffers before returning.
//!   Nothing is ever freed by a callback.
//! * The consumer gets the events through a bounded channel. When the consumer goes away, it
//!   disconnects a cancel channel, so a callback blocked on a full channel returns at once.
//! * A panic inside the callback is caught there (it never unwinds into C), stored in the
//!   per-run state and re-raised on the consumer's thread.
//! * The model's handle is destroyed only after the worker has been joined.

use std::any::Any;
use std::ffi::{c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rkllm_sys::{
    LLMCallState, RKLLMInferParam, RKLLMInput, RKLLMInput__bindgen_ty_1, RKLLMLoraParam,
    RKLLMPromptCacheParam, RKLLMResult, RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
    RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL, RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN,
    RKLLM_RUN_ERROR, RKLLM_RUN_FINISH, RKLLM_RUN_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_NORMAL,
    RKLLM_RUN_WAITING,
};

use crate::error::{c_string, Result};
use crate::input::Input;
use crate::model::{ModelInner, RawHandle};
use rkllm_sys::RkllmApi;

/// How many events may wait for the consumer before the runtime's callback blocks.
///
/// A token event is a few dozen bytes, so memory stays bounded (a slow consumer applies
/// back-pressure: generation pauses in the callback). 256 tokens of slack cover any hiccup
/// of a consumer that keeps up on average (an RK3588 decodes 5–30 tokens/s), so the runtime
/// thread practically never waits. It cannot deadlock: dropping the consumer disconnects
/// the cancel channel, which releases a blocked callback.
pub(crate) const CHANNEL_CAPACITY: usize = 256;

/// Hidden states of the last layer, copied out of the runtime's buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenStates {
    data: Vec<f32>,
    num_tokens: usize,
    embd_size: usize,
}

impl HiddenStates {
    /// All values, `num_tokens × embd_size`, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Takes the values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    /// Number of rows (tokens).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }
    /// Row length (the model's hidden size).
    pub fn embd_size(&self) -> usize {
        self.embd_size
    }
    /// One token's row.
    pub fn row(&self, token: usize) -> Option<&[f32]> {
        let start = token.checked_mul(self.embd_size)?;
        self.data.get(start..start.checked_add(self.embd_size)?)
    }
}

/// What the callback hands to the consumer.
#[derive(Debug)]
pub(crate) enum Event {
    Token {
        id: i32,
        bytes: Vec<u8>,
        /// Delivered in the WAITING state (an incomplete character).
        waiting: bool,
        at: Instant,
    },
    Hidden(HiddenStates),
    Finish,
    Error,
    /// The callback panicked; the payload is in `RunShared::panic`.
    Panicked,
    /// Sent by the worker after `rkllm_run` returned; always the last event.
    Returned(i32),
}

/// State shared by the worker, the callback (through `userdata`) and the consumer.
pub(crate) struct RunShared {
    tx: Sender<Event>,
    cancel: Receiver<()>,
    /// Latched at FINISH or ERROR: callbacks after that are ignored.
    terminal: AtomicBool,
    /// Set by the consumer once it stops the run: tokens are no longer sent, so the runtime
    /// thread never waits on the channel while the consumer is inside `rkllm_abort` (which
    /// may block until the run has stopped).
    pub(crate) draining: AtomicBool,
    /// FINISH and ERROR are recorded here too, so they are known even when their event was
    /// not sent.
    pub(crate) finish_seen: AtomicBool,
    pub(crate) error_seen: AtomicBool,
    /// What `rkllm_run` returned, once it has.
    pub(crate) return_code: Mutex<Option<i32>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl RunShared {
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
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The callback registered with `rkllm_init`, shared by every run of every model.
///
/// # Safety
///
/// Called by the runtime with `result` either null or valid for the duration of the call,
/// and `userdata` either null or the `RunShared` pointer passed to `rkllm_run`, whose
/// worker keeps it alive until `rkllm_run` returns.
pub(crate) unsafe extern "C" fn trampoline(
    result: *mut RKLLMResult,
    userdata: *mut c_void,
    state: LLMCallState,
) {
    if userdata.is_null() {
        return;
    }
    // SAFETY: non-null userdata is always the `RunShared` of the run in progress (we pass
    // nothing else to rkllm_run), kept alive by the worker until rkllm_run has returned.
    let shared = unsafe { &*(userdata as *const RunShared) };
    if shared.terminal.load(Ordering::Acquire) {
        return;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `result` is null or valid during this call (the function's contract).
        let result = unsafe { result.as_ref() };
        // SAFETY: as above; `on_result` copies everything out before returning.
        unsafe { on_result(shared, result, state) }
    }));
    if let Err(payload) = outcome {
        shared.terminal.store(true, Ordering::Release);
        *shared.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
        // The consumer re-raises it at once; dropping its stream then aborts the run.
        shared.send(Event::Panicked);
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

/// Everything `rkllm_run` reads, owned for the whole call.
struct RunJob {
    input: OwnedInput,
    hidden: bool,
    lora: Option<CString>,
    save_cache: Option<CString>,
}

enum OwnedInput {
    Prompt(CString),
    Tokens(Vec<i32>),
    Embed(Vec<f32>, usize),
    Multimodal(CString, Vec<f32>, usize),
}

impl RunJob {
    fn new(
        input: Input,
        hidden: bool,
        lora: Option<CString>,
        save_cache: Option<CString>,
    ) -> Result<RunJob> {
        input.validate()?;
        let input = match input {
            Input::Prompt(p) => OwnedInput::Prompt(c_string("prompt", p)?),
            Input::Tokens(ids) => OwnedInput::Tokens(ids),
            Input::Embeddings { data, n_tokens } => OwnedInput::Embed(data, n_tokens),
            Input::Multimodal {
                prompt,
                image_embed,
                n_image_tokens,
            } => OwnedInput::Multimodal(c_string("prompt", prompt)?, image_embed, n_image_tokens),
        };
        Ok(RunJob {
            input,
            hidden,
            lora,
            save_cache,
        })
    }

    /// Calls `rkllm_run` with C structs pointing into this job's buffers.
    ///
    /// # Safety
    ///
    /// `handle` must be a live handle of `api`'s runtime, not used by another run, and
    /// `shared` must outlive the call.
    unsafe fn run(&mut self, api: &RkllmApi, handle: RawHandle, shared: &RunShared) -> i32 {
        let mut c_input = RKLLMInput {
            input_type: RKLLM_INPUT_PROMPT,
            ..Default::default()
        };
        match &mut self.input {
            OwnedInput::Prompt(p) => c_input.__bindgen_anon_1.prompt_input = p.as_ptr(),
            OwnedInput::Tokens(ids) => {
                c_input.input_type = RKLLM_INPUT_TOKEN;
                c_input.__bindgen_anon_1 = RKLLMInput__bindgen_ty_1 {
                    token_input: rkllm_sys::RKLLMTokenInput {
                        input_ids: ids.as_mut_ptr(),
                        n_tokens: ids.len(),
                    },
                };
            }
            OwnedInput::Embed(data, n) => {
                c_input.input_type = RKLLM_INPUT_EMBED;
                c_input.__bindgen_anon_1 = RKLLMInput__bindgen_ty_1 {
                    embed_input: rkllm_sys::RKLLMEmbedInput {
                        embed: data.as_mut_ptr(),
                        n_tokens: *n,
                    },
                };
            }
            OwnedInput::Multimodal(p, data, n) => {
                c_input.input_type = RKLLM_INPUT_MULTIMODAL;
                c_input.__bindgen_anon_1 = RKLLMInput__bindgen_ty_1 {
                    multimodal_input: rkllm_sys::RKLLMMultiModelInput {
                        // The 1.1.x ABI declares this `char *`; the runtime only reads it.
                        prompt: p.as_ptr().cast_mut(),
                        image_embed: data.as_mut_ptr(),
                        n_image_tokens: *n,
                    },
                };
            }
        }
        let mut lora = self.lora.as_ref().map(|n| RKLLMLoraParam {
            lora_adapter_name: n.as_ptr(),
        });
        let mut cache = self.save_cache.as_ref().map(|p| RKLLMPromptCacheParam {
            save_prompt_cache: 1,
            prompt_cache_path: p.as_ptr(),
        });
        let mut infer = RKLLMInferParam {
            mode: if self.hidden {
                RKLLM_INFER_GET_LAST_HIDDEN_LAYER
            } else {
                RKLLM_INFER_GENERATE
            },
            lora_params: lora.as_mut().map_or(std::ptr::null_mut(), |l| l as *mut _),
            prompt_cache_params: cache.as_mut().map_or(std::ptr::null_mut(), |c| c as *mut _),
        };
        let userdata = shared as *const RunShared as *mut c_void;
        // SAFETY: every pointer in `c_input`, `lora`, `cache` and `infer` points into buffers
        // owned by `self` or locals of this frame, alive until rkllm_run returns (it blocks
        // until all callbacks are delivered). `userdata` outlives the call (caller's
        // contract), and `handle` is live and exclusively ours (caller's contract).
        unsafe { (api.run)(handle.0, &mut c_input, &mut infer, userdata) }
    }
}

/// A run in flight. Kept by the model (not the stream), so that a leaked stream's run is
/// still aborted and joined before the handle is destroyed.
pub(crate) struct ActiveRun {
    pub worker: JoinHandle<()>,
    /// Dropped to release a callback blocked on a full channel.
    pub cancel: Option<Sender<()>>,
}

impl ActiveRun {
    /// Releases the callback, then waits for `rkllm_run` to return.
    pub fn join(mut self) {
        self.cancel.take();
        // The worker catches every panic of its own; an Err here cannot carry one of ours.
        let _ = self.worker.join();
    }
}

/// Starts `rkllm_run` on a worker thread and records it as the model's active run.
///
/// The worker holds no reference to the model: the handle stays valid because the model
/// joins its active run before `rkllm_destroy` (`ModelInner::drop`).
pub(crate) fn start(
    inner: &ModelInner,
    input: Input,
    hidden: bool,
    lora: Option<CString>,
    save_cache: Option<CString>,
) -> Result<(Receiver<Event>, Arc<RunShared>)> {
    let mut job = RunJob::new(input, hidden, lora, save_cache)?;
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
    let (cancel_tx, cancel_rx) = crossbeam_channel::bounded::<()>(0);
    let shared = Arc::new(RunShared {
        tx,
        cancel: cancel_rx,
        terminal: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        finish_seen: AtomicBool::new(false),
        error_seen: AtomicBool::new(false),
        return_code: Mutex::new(None),
        panic: Mutex::new(None),
    });
    let worker_shared = Arc::clone(&shared);
    let api = *inner.api();
    let handle = inner.handle();
    let abort = Arc::clone(inner.abort_state());
    let call_lock = inner.call_lock_arc();
    abort.begin_run();
    let spawned = std::thread::Builder::new()
        .name("rkllm-run".into())
        .spawn(move || {
            let rc = if abort.requested() {
                // Aborted before the runtime was reached.
                0
            } else {
                // Other calls on the handle (LoRA, prompt cache) wait or report Busy meanwhile.
                let _guard = call_lock.lock().unwrap_or_else(|e| e.into_inner());
                // SAFETY: the handle is live: the model joins this worker before destroying it.
                // This is the model's only run (the session is borrowed mutably, and an earlier
                // run was joined before this one started), and `worker_shared` outlives the call.
                catch_unwind(AssertUnwindSafe(|| unsafe {
                    job.run(&api, handle, &worker_shared)
                }))
                .unwrap_or(-1)
            };
            abort.end_run();
            worker_shared.terminal.store(true, Ordering::Release);
            *worker_shared
                .return_code
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(rc);
            // Delivered unless the consumer is gone (then the cancel channel releases it).
            worker_shared.send(Event::Returned(rc));
        });
    let worker = match spawned {
        Ok(w) => w,
        Err(e) => {
            inner.abort_state().end_run();
            return Err(crate::Error::Io {
                path: "rkllm-run worker thread".into(),
                source: e,
            });
        }
    };
    *inner.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(ActiveRun {
        worker,
        cancel: Some(cancel_tx),
    });
    Ok((rx, shared))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    /// Makes the callback panic on every token (only this module's tests run callbacks).
    pub(super) static PANIC_IN_CALLBACK: AtomicBool = AtomicBool::new(false);

    #[cfg(feature = "mock")]
    #[test]
    fn a_panic_in_the_callback_never_reaches_c_and_is_reraised_on_the_consumer() {
        use std::sync::atomic::Ordering;

        use crate::mock::MockModel;
        use crate::{GenerateOptions, Model, Runtime};

        let path = MockModel::new().answer("abc def ghi").write_temp().unwrap();
        let model = Model::builder(path)
            .runtime(Runtime::mock())
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        PANIC_IN_CALLBACK.store(true, Ordering::SeqCst);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
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
        let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
        assert_eq!(done.text, "abc def ghi");
    }
}
