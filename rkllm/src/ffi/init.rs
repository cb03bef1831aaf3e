//! `rkllm_createDefaultParam` and `rkllm_init`.

use std::ffi::CString;

use rkllm_sys::{LLMHandle, RKLLMParam};

use super::callback::trampoline;
use crate::runtime::Runtime;

/// The strings `RKLLMParam` points at, owned for the duration of `rkllm_init`.
#[derive(Debug, Default)]
pub(crate) struct InitStrings {
    pub model_path: CString,
    pub img_start: Option<CString>,
    pub img_end: Option<CString>,
    pub img_content: Option<CString>,
}

/// The runtime's default parameters (`rkllm_createDefaultParam`).
pub(crate) fn default_param(runtime: &Runtime) -> RKLLMParam {
    // SAFETY: rkllm_createDefaultParam takes no arguments and returns the struct by value.
    unsafe { (runtime.api().create_default_param)() }
}

/// Calls `rkllm_init` with `param` (numbers only: every pointer field is set here from
/// `strings`, empty strings for unset image markers, never NULL) and this crate's
/// trampoline as the callback. Returns the code and the handle written.
pub(crate) fn init(
    runtime: &Runtime,
    mut param: RKLLMParam,
    strings: &InitStrings,
) -> (i32, LLMHandle) {
    let empty = c"";
    param.model_path = strings.model_path.as_ptr();
    param.img_start = strings.img_start.as_deref().unwrap_or(empty).as_ptr();
    param.img_end = strings.img_end.as_deref().unwrap_or(empty).as_ptr();
    param.img_content = strings.img_content.as_deref().unwrap_or(empty).as_ptr();
    let mut handle: LLMHandle = std::ptr::null_mut();
    // SAFETY: `handle` and `param` are valid for writes; every pointer in `param` was set
    // just above to a string that outlives the call (the runtime copies what it keeps); the
    // callback is this crate's trampoline, which accepts any userdata/result the runtime
    // passes.
    let rc = unsafe { (runtime.api().init)(&mut handle, &mut param, Some(trampoline)) };
    (rc, handle)
}
