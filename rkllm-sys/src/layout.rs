//! Compile-time checks of the ABI layout against the published RKLLM 1.1.1 tables.
//!
//! The numbers are those measured with gcc for LP64 on x86_64 and aarch64 (identical on
//! both). They are `const` assertions, so `cargo check --target aarch64-unknown-linux-gnu`
//! evaluates them for the board. With the `bindgen` feature and `RKLLM_VENDOR_HEADER` set,
//! the same assertions check the vendor header.

use core::mem::{align_of, offset_of, size_of};

use crate::bindings::*;

macro_rules! assert_layout {
    ($t:ty, size $size:expr, align $align:expr $(, $field:ident @ $off:expr)* $(,)?) => {
        const _: () = {
            assert!(size_of::<$t>() == $size, concat!("size of ", stringify!($t)));
            assert!(align_of::<$t>() == $align, concat!("alignment of ", stringify!($t)));
            $(assert!(
                offset_of!($t, $field) == $off,
                concat!("offset of ", stringify!($t), ".", stringify!($field))
            );)*
        };
    };
}

assert_layout!(LLMCallState, size 4, align 4);
assert_layout!(RKLLMInputType, size 4, align 4);
assert_layout!(RKLLMInferMode, size 4, align 4);
assert_layout!(LLMHandle, size 8, align 8);
assert_layout!(LLMResultCallback, size 8, align 8);

assert_layout!(RKLLMExtendParam, size 116, align 4, base_domain_id @ 0, reserved @ 4);
assert_layout!(
    RKLLMParam, size 200, align 8,
    model_path @ 0, max_context_len @ 8, max_new_tokens @ 12, top_k @ 16, top_p @ 20,
    temperature @ 24, repeat_penalty @ 28, frequency_penalty @ 32, presence_penalty @ 36,
    mirostat @ 40, mirostat_tau @ 44, mirostat_eta @ 48, skip_special_token @ 52,
    is_async @ 53, img_start @ 56, img_end @ 64, img_content @ 72, extend_param @ 80,
);
assert_layout!(
    RKLLMLoraAdapter, size 24, align 8,
    lora_adapter_path @ 0, lora_adapter_name @ 8, scale @ 16,
);
assert_layout!(RKLLMEmbedInput, size 16, align 8, embed @ 0, n_tokens @ 8);
assert_layout!(RKLLMTokenInput, size 16, align 8, input_ids @ 0, n_tokens @ 8);
assert_layout!(
    RKLLMMultiModelInput, size 24, align 8,
    prompt @ 0, image_embed @ 8, n_image_tokens @ 16,
);
assert_layout!(RKLLMInput, size 32, align 8, input_type @ 0, __bindgen_anon_1 @ 8);
assert_layout!(
    RKLLMInput__bindgen_ty_1, size 24, align 8,
    prompt_input @ 0, embed_input @ 0, token_input @ 0, multimodal_input @ 0,
);
assert_layout!(RKLLMLoraParam, size 8, align 8, lora_adapter_name @ 0);
assert_layout!(
    RKLLMPromptCacheParam, size 16, align 8,
    save_prompt_cache @ 0, prompt_cache_path @ 8,
);
assert_layout!(
    RKLLMInferParam, size 24, align 8,
    mode @ 0, lora_params @ 8, prompt_cache_params @ 16,
);
assert_layout!(
    RKLLMResultLastHiddenLayer, size 16, align 8,
    hidden_states @ 0, embd_size @ 8, num_tokens @ 12,
);
assert_layout!(
    RKLLMResult, size 32, align 8,
    text @ 0, token_id @ 8, last_hidden_layer @ 16,
);

// The field types that differ between targets must be the C ones: `c_char` is `u8` on
// aarch64 and `i8` on x86_64, and the strings must be `c_char` pointers on both.
const _: fn(&RKLLMParam) -> *const core::ffi::c_char = |p| p.model_path;
const _: fn(&RKLLMMultiModelInput) -> *mut core::ffi::c_char = |p| p.prompt;
const _: fn(&RKLLMResult) -> *const core::ffi::c_char = |r| r.text;
const _: fn(&RKLLMParam) -> bool = |p| p.skip_special_token;

const _: () = {
    assert!(RKLLM_RUN_NORMAL == 0);
    assert!(RKLLM_RUN_WAITING == 1);
    assert!(RKLLM_RUN_FINISH == 2);
    assert!(RKLLM_RUN_ERROR == 3);
    assert!(RKLLM_RUN_GET_LAST_HIDDEN_LAYER == 4);
    assert!(RKLLM_INPUT_PROMPT == 0);
    assert!(RKLLM_INPUT_TOKEN == 1);
    assert!(RKLLM_INPUT_EMBED == 2);
    assert!(RKLLM_INPUT_MULTIMODAL == 3);
    assert!(RKLLM_INFER_GENERATE == 0);
    assert!(RKLLM_INFER_GET_LAST_HIDDEN_LAYER == 1);
};
