//! The ten functions of the RKLLM 1.1.1 C ABI, implemented in Rust with the exact
//! signatures of [`RkllmApi`]'s fields.
//!
//! Each body runs inside `catch_unwind`: a bug in the mock fails the call (-1) instead of
//! unwinding into C. Every handle is looked up in the registry first, so a NULL, destroyed
//! or made-up handle fails with -1.

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libc::{c_char, c_int, c_void};
use rkllm_sys::{
    LLMHandle, LLMResultCallback, RKLLMExtendParam, RKLLMInferParam, RKLLMInput, RKLLMLoraAdapter,
    RKLLMParam, RkllmApi,
};

use super::engine;
use super::handle::{self, lock, Instance, Job, UserData};
use super::init;
use super::input::{self, path_from_bytes};
use super::log;
use super::prompt_cache;
use crate::settings::{CallbackThread, RunningSense};

/// The mock's function table.
pub(crate) fn api() -> RkllmApi {
    RkllmApi {
        create_default_param: rkllm_create_default_param,
        init: rkllm_init,
        load_lora: rkllm_load_lora,
        load_prompt_cache: rkllm_load_prompt_cache,
        release_prompt_cache: rkllm_release_prompt_cache,
        destroy: rkllm_destroy,
        run: rkllm_run,
        run_async: rkllm_run_async,
        abort: rkllm_abort,
        is_running: rkllm_is_running,
    }
}

/// Runs `f`, turning a panic into -1.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(-1)
}

/// The empty string the default parameters point `img_*` at (static, never freed).
static EMPTY: &CStr = c"";

/// `rkllm_createDefaultParam`: the 1.1 guide's sampling defaults, `max_context_len` 512,
/// `max_new_tokens` -1, `skip_special_token` true, `is_async` false, `img_*` empty strings,
/// `model_path` NULL, `extend_param` zeroed.
///
/// # Safety
///
/// None beyond the C ABI: it takes nothing and returns a value.
unsafe extern "C" fn rkllm_create_default_param() -> RKLLMParam {
    catch_unwind(|| RKLLMParam {
        model_path: std::ptr::null(),
        max_context_len: 512,
        max_new_tokens: -1,
        top_k: 40,
        top_p: 0.9,
        temperature: 0.8,
        repeat_penalty: 1.1,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        mirostat: 0,
        mirostat_tau: 5.0,
        mirostat_eta: 0.1,
        skip_special_token: true,
        is_async: false,
        img_start: EMPTY.as_ptr(),
        img_end: EMPTY.as_ptr(),
        img_content: EMPTY.as_ptr(),
        extend_param: RKLLMExtendParam {
            base_domain_id: 0,
            reserved: [0; 112],
        },
    })
    .unwrap_or_default()
}

/// `rkllm_init`.
///
/// # Safety
///
/// `handle`, when non-null, must be valid for writing an `LLMHandle`; `param`, when
/// non-null, must point to a valid `RKLLMParam` whose non-null `model_path` is
/// NUL-terminated; `callback`, when set, must be safe to call with a result, the userdata
/// of a run and a state, from any thread, during runs of the new handle.
unsafe extern "C" fn rkllm_init(
    handle: *mut LLMHandle,
    param: *mut RKLLMParam,
    callback: LLMResultCallback,
) -> c_int {
    // SAFETY: the caller's contract is the one `init::init` requires.
    guard(|| unsafe { init::init(handle, param, callback) })
}

/// The instance behind `handle`, or `None` (the caller returns -1).
fn instance(handle: LLMHandle) -> Option<Arc<Instance>> {
    handle::get(handle)
}

/// `rkllm_load_lora`: registers the adapter under its name; its file must exist.
///
/// # Safety
///
/// `lora`, when non-null, must point to a valid `RKLLMLoraAdapter` whose non-null strings
/// are NUL-terminated.
unsafe extern "C" fn rkllm_load_lora(handle: LLMHandle, lora: *mut RKLLMLoraAdapter) -> c_int {
    guard(|| {
        let Some(inst) = instance(handle) else {
            return -1;
        };
        let stream = log::Out::of(&inst.model.spec);
        if lora.is_null() {
            log::rkllm_error(stream, "rkllm_load_lora: lora_adapter is NULL");
            return -1;
        }
        // SAFETY: non-null, and a valid adapter by the caller's contract; copied at once.
        let lora = unsafe { lora.read() };
        if lora.lora_adapter_path.is_null() || lora.lora_adapter_name.is_null() {
            log::rkllm_error(
                stream,
                "rkllm_load_lora: lora_adapter_path or lora_adapter_name is NULL",
            );
            return -1;
        }
        // SAFETY: both non-null and NUL-terminated by the caller's contract.
        let (path, name) = unsafe {
            (
                CStr::from_ptr(lora.lora_adapter_path).to_bytes().to_vec(),
                CStr::from_ptr(lora.lora_adapter_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let path = path_from_bytes(path);
        if let Err(e) = std::fs::metadata(&path) {
            log::rkllm_error(
                stream,
                &format!("failed to open lora adapter file {}: {e}", path.display()),
            );
            return -1;
        }
        lock(&inst.state).loras.insert(name, (path, lora.scale));
        0
    })
}

/// `rkllm_load_prompt_cache`: loads a cache saved by this model (replacing any other).
///
/// # Safety
///
/// `path`, when non-null, must be NUL-terminated.
unsafe extern "C" fn rkllm_load_prompt_cache(handle: LLMHandle, path: *const c_char) -> c_int {
    guard(|| {
        let Some(inst) = instance(handle) else {
            return -1;
        };
        let stream = log::Out::of(&inst.model.spec);
        if path.is_null() {
            log::rkllm_error(stream, "rkllm_load_prompt_cache: prompt_cache_path is NULL");
            return -1;
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract.
        let path = path_from_bytes(unsafe { CStr::from_ptr(path) }.to_bytes().to_vec());
        let cost = inst.model.spec.spec_cache_cost();
        let per_token = cost.payload_bytes(1);
        match prompt_cache::load(&path, &inst.model.identity, per_token) {
            Ok(loaded) => {
                // Reading the whole file takes the disk's time; the mock only reads the header.
                let took = cost.io_time(loaded.bytes);
                std::thread::sleep(took);
                let mut st = lock(&inst.state);
                st.prompt_cache = Some(loaded.tokens);
                st.loaded_since_run.0 += loaded.bytes;
                st.loaded_since_run.1 += took;
                0
            }
            Err(msg) => {
                log::rkllm_error(stream, &msg);
                -1
            }
        }
    })
}

/// `rkllm_release_prompt_cache`: drops the loaded cache (0 even when none was loaded).
///
/// # Safety
///
/// None beyond the C ABI: `handle` is only looked up, never dereferenced.
unsafe extern "C" fn rkllm_release_prompt_cache(handle: LLMHandle) -> c_int {
    guard(|| {
        let Some(inst) = instance(handle) else {
            return -1;
        };
        lock(&inst.state).prompt_cache = None;
        0
    })
}

/// `rkllm_destroy`: aborts a task in flight and waits for it, joins the worker thread and
/// frees the model's NPU memory. The handle is invalid afterwards.
///
/// # Safety
///
/// None beyond the C ABI: `handle` is only looked up, never dereferenced.
unsafe extern "C" fn rkllm_destroy(handle: LLMHandle) -> c_int {
    guard(|| if handle::destroy(handle) { 0 } else { -1 })
}

/// Whether a run is blocking or asynchronous.
#[derive(PartialEq, Eq)]
enum Mode {
    Blocking,
    Async,
}

/// Shared body of `rkllm_run` and `rkllm_run_async`: copies the input, then runs it.
///
/// # Safety
///
/// As `rkllm_run`.
unsafe fn start(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
    mode: Mode,
) -> c_int {
    let Some(inst) = instance(handle) else {
        return -1;
    };
    let rt = inst.model.spec.runtime_behaviour();
    let stream = log::Out::of(&inst.model.spec);
    // SAFETY: the caller's contract: a valid input with buffers of the stated lengths.
    let input = match unsafe { input::read_input(input, inst.model.spec.spec_embed_dim()) } {
        Ok(i) => i,
        Err(msg) => {
            log::rkllm_error(stream, &msg);
            return -1;
        }
    };
    // SAFETY: the caller's contract: valid infer parameters.
    let infer = match unsafe { input::read_infer(infer) } {
        Ok(i) => i,
        Err(msg) => {
            log::rkllm_error(stream, &msg);
            return -1;
        }
    };
    if inst
        .running
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        log::rkllm_error(stream, "a task is already running on this handle");
        return -1;
    }
    // An abort belongs to the task it interrupted: one that raced with the end of the
    // previous task (seen running, stored after it finished) must not stop this one.
    inst.abort.store(false, Ordering::SeqCst);
    let userdata = UserData(userdata);
    let on_caller = match rt.callback_thread {
        CallbackThread::Caller => true,
        // The odd runs of a handle (counted from 1) on the caller's thread.
        CallbackThread::Mixed => lock(&inst.state).runs % 2 == 0,
        _ => false,
    };
    match (mode, on_caller) {
        (Mode::Blocking, true) => engine::execute(Job {
            instance: inst,
            input,
            infer,
            userdata,
            reply: None,
        }),
        (Mode::Blocking, _) => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let job = Job {
                instance: Arc::clone(&inst),
                input,
                infer,
                userdata,
                reply: Some(tx),
            };
            if !inst.submit(job) {
                inst.running.store(false, Ordering::SeqCst);
                return -1;
            }
            rx.recv().unwrap_or(-1)
        }
        (Mode::Async, _) => {
            let job = Job {
                instance: Arc::clone(&inst),
                input,
                infer,
                userdata,
                reply: None,
            };
            if inst.submit(job) {
                0
            } else {
                inst.running.store(false, Ordering::SeqCst);
                -1
            }
        }
    }
}

/// `rkllm_run`: blocks until every callback of the run has been delivered.
///
/// # Safety
///
/// `input` and `infer`, when non-null, must point to valid structs whose buffers hold the
/// lengths they state (see `input::read_input`); they need only live for the call.
/// `userdata` is passed to the callback untouched.
unsafe extern "C" fn rkllm_run(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is `start`'s.
    guard(|| unsafe { start(handle, input, infer, userdata, Mode::Blocking) })
}

/// `rkllm_run_async`: copies the input, returns 0 at once, and delivers the callbacks from
/// the handle's worker thread.
///
/// # Safety
///
/// As `rkllm_run`; in addition `userdata` must stay valid for the callbacks until the run is
/// over (`rkllm_is_running` reports idle).
unsafe extern "C" fn rkllm_run_async(
    handle: LLMHandle,
    input: *mut RKLLMInput,
    infer: *mut RKLLMInferParam,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is `start`'s.
    guard(|| unsafe { start(handle, input, infer, userdata, Mode::Async) })
}

/// `rkllm_abort`: the task in flight stops before its next token (or, with
/// `abort_interrupts_prefill`, during the prefill). 0 also when nothing runs.
///
/// # Safety
///
/// None beyond the C ABI: `handle` is only looked up, never dereferenced.
unsafe extern "C" fn rkllm_abort(handle: LLMHandle) -> c_int {
    guard(|| {
        let Some(inst) = instance(handle) else {
            return -1;
        };
        if inst.running.load(Ordering::SeqCst) {
            inst.abort.store(true, Ordering::SeqCst);
            if inst
                .model
                .spec
                .runtime_behaviour()
                .abort_blocks_until_stopped
            {
                // Wait for the task to stop, as a runtime with a blocking abort would; give
                // up (-1) rather than hang a test forever.
                let started = std::time::Instant::now();
                while inst.running.load(Ordering::SeqCst) {
                    if started.elapsed() > std::time::Duration::from_secs(20) {
                        return -1;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
        0
    })
}

/// `rkllm_is_running`: 0 while a task runs and 1 otherwise (or the opposite, per the model's
/// `is_running_sense`); -1 for an invalid handle.
///
/// # Safety
///
/// None beyond the C ABI: `handle` is only looked up, never dereferenced.
unsafe extern "C" fn rkllm_is_running(handle: LLMHandle) -> c_int {
    guard(|| {
        let Some(inst) = instance(handle) else {
            return -1;
        };
        let running = inst.running.load(Ordering::SeqCst);
        match inst.model.spec.runtime_behaviour().is_running_sense {
            RunningSense::NonZeroWhileRunning => c_int::from(running),
            _ => c_int::from(!running),
        }
    })
}
