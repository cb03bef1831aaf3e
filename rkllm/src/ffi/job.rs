//! Everything `rkllm_run` reads, owned for the whole call, and the call itself.

use std::ffi::CString;

use rkllm_sys::{
    LLMHandle, RKLLMInferParam, RKLLMInput, RKLLMInput__bindgen_ty_1, RKLLMLoraParam,
    RKLLMPromptCacheParam, RkllmApi, RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
    RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL, RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN,
};

use super::callback::userdata_of;
use crate::error::{c_string, Error, Result};
use crate::input::Input;

/// The runtime's opaque handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawHandle(pub LLMHandle);

// SAFETY: the handle is an opaque token the runtime hands out; it is never dereferenced
// here. `Handle` (ffi::handle) serialises every call that uses it (the call lock) except `rkllm_abort`
// and `rkllm_is_running`, which the runtime provides for use from another thread while a
// run blocks.
unsafe impl Send for RawHandle {}
// SAFETY: as above: sharing the token between threads is harmless; use is serialised.
unsafe impl Sync for RawHandle {}

/// The buffers of one run, converted from an [`Input`] in safe code.
pub(crate) struct RunJob {
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
    /// Validates `input` and converts its strings; nothing reaches the runtime here.
    pub(crate) fn new(
        input: Input,
        hidden: bool,
        lora: Option<CString>,
        save_cache: Option<CString>,
    ) -> Result<RunJob> {
        input.validate()?;
        let input = match input {
            Input::Prompt(p) => OwnedInput::Prompt(c_string("prompt", p)?),
            // The runtime's ids are int32 (validate() refused larger ids already).
            Input::Tokens(ids) => OwnedInput::Tokens(
                ids.into_iter()
                    .map(|id| {
                        i32::try_from(id).map_err(|_| {
                            Error::InvalidInput(format!("token input: id {id} is above i32::MAX"))
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
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
    /// `handle` must be a live handle of `api`'s runtime, not used by another call meanwhile.
    pub(crate) unsafe fn run(&mut self, api: &RkllmApi, handle: RawHandle, run_id: u64) -> i32 {
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
        // SAFETY: every pointer in `c_input`, `lora`, `cache` and `infer` points into buffers
        // owned by `self` or locals of this frame, alive until rkllm_run returns (it blocks
        // until the run is over). `userdata` is a number, never dereferenced by anyone, and
        // `handle` is live and exclusively ours (the caller's contract).
        unsafe { (api.run)(handle.0, &mut c_input, &mut infer, userdata_of(run_id)) }
    }
}
