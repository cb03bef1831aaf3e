//! The one seam between Rust and the runtime: a table of the ten 1.1.1 functions.

use core::ffi::{c_char, c_int, c_void};

use crate::bindings::{
    LLMHandle, LLMResultCallback, RKLLMInferParam, RKLLMInput, RKLLMLoraAdapter, RKLLMParam,
};

/// The ten functions of the RKLLM 1.1.1 C ABI, as plain function pointers.
///
/// Each field has exactly the signature of the C declaration (checked against the bindgen
/// declarations when the `link` feature is on, see `Library::linked`).
/// A table comes from a [`Library`](crate::Library); the runtime's documented semantics are
/// noted on each field.
#[derive(Clone, Copy, Debug)]
pub struct RkllmApi {
    /// `RKLLMParam rkllm_createDefaultParam(void)`: the default parameters (200-byte struct
    /// returned by value). Does not necessarily zero `extend_param.reserved`.
    pub create_default_param: unsafe extern "C" fn() -> RKLLMParam,
    /// `int rkllm_init(LLMHandle *handle, RKLLMParam *param, LLMResultCallback callback)`:
    /// 0 on success with `*handle` set, -1 on failure. The callback is bound for the handle's
    /// lifetime.
    pub init: unsafe extern "C" fn(*mut LLMHandle, *mut RKLLMParam, LLMResultCallback) -> c_int,
    /// `int rkllm_load_lora(LLMHandle, RKLLMLoraAdapter *)`: 0 ok, -1 fail.
    pub load_lora: unsafe extern "C" fn(LLMHandle, *mut RKLLMLoraAdapter) -> c_int,
    /// `int rkllm_load_prompt_cache(LLMHandle, const char *path)`: 0 ok, -1 fail.
    pub load_prompt_cache: unsafe extern "C" fn(LLMHandle, *const c_char) -> c_int,
    /// `int rkllm_release_prompt_cache(LLMHandle)`: 0 ok, -1 fail.
    pub release_prompt_cache: unsafe extern "C" fn(LLMHandle) -> c_int,
    /// `int rkllm_destroy(LLMHandle)`: 0 ok, -1 fail. Nothing may use the handle afterwards.
    pub destroy: unsafe extern "C" fn(LLMHandle) -> c_int,
    /// `int rkllm_run(LLMHandle, RKLLMInput *, RKLLMInferParam *, void *userdata)`: blocks
    /// until the run is over; every callback of the run is delivered before it returns, with
    /// `userdata` passed through.
    pub run: unsafe extern "C" fn(
        LLMHandle,
        *mut RKLLMInput,
        *mut RKLLMInferParam,
        *mut c_void,
    ) -> c_int,
    /// `int rkllm_run_async(...)`: same parameters as `run`; reported broken in 1.1.x (no
    /// callbacks). The `rkllm` crate does not use it.
    pub run_async: unsafe extern "C" fn(
        LLMHandle,
        *mut RKLLMInput,
        *mut RKLLMInferParam,
        *mut c_void,
    ) -> c_int,
    /// `int rkllm_abort(LLMHandle)`: interrupts a run blocked in `run` on another thread.
    pub abort: unsafe extern "C" fn(LLMHandle) -> c_int,
    /// `int rkllm_is_running(LLMHandle)`: **0 while a task is running**, non-zero otherwise.
    pub is_running: unsafe extern "C" fn(LLMHandle) -> c_int,
}
