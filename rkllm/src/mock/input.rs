//! Reading the caller's `RKLLMInput` and `RKLLMInferParam` into owned values.
//!
//! Everything is copied before `rkllm_run`/`rkllm_run_async` hands the run to the worker, so
//! the caller's buffers only have to live for the call, and every length is checked on the
//! way.

use std::ffi::CStr;
use std::path::PathBuf;

use rkllm_sys::{
    RKLLMInferParam, RKLLMInput, RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
    RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL, RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN,
};

use super::prompt_cache;
use super::stats::InputKind;

/// A run's input, owned.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Prompt text (any bytes but NUL).
    Prompt(Vec<u8>),
    /// Token ids.
    Tokens(Vec<i32>),
    /// `n_tokens × embed_dim` floats.
    Embed { data: Vec<f32>, n_tokens: usize },
    /// Prompt text plus `n_image_tokens × embed_dim` floats of image embedding.
    Multimodal {
        prompt: Vec<u8>,
        image: Vec<f32>,
        n_image_tokens: usize,
    },
}

impl Input {
    pub(crate) fn kind(&self) -> InputKind {
        match self {
            Input::Prompt(_) => InputKind::Prompt,
            Input::Tokens(_) => InputKind::Token,
            Input::Embed { .. } => InputKind::Embed,
            Input::Multimodal { .. } => InputKind::Multimodal,
        }
    }
}

/// A run's inference parameters, owned.
#[derive(Debug, Clone)]
pub(crate) struct Infer {
    /// Whether the run returns the last hidden layer instead of generating.
    pub(crate) hidden_layer: bool,
    /// The LoRA adapter selected.
    pub(crate) lora: Option<String>,
    /// Where to save the prompt cache, when asked to.
    pub(crate) save_cache: Option<PathBuf>,
}

/// Copies `len` elements from `ptr`, refusing NULL, zero and absurd lengths.
///
/// # Safety
///
/// When `ptr` is non-null and `len` is accepted, `ptr` must point to `len` readable,
/// initialised `T`s.
unsafe fn copy_slice<T: Copy>(ptr: *const T, len: usize, what: &str) -> Result<Vec<T>, String> {
    if ptr.is_null() {
        return Err(format!("{what} is NULL"));
    }
    if len == 0 {
        return Err(format!("{what} is empty"));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(format!("{what} has an impossible length {len}"));
    }
    // SAFETY: non-null and within isize::MAX bytes (checked above); the caller guarantees
    // `len` readable elements behind `ptr`. They are copied out at once.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec())
}

/// Copies a NUL-terminated string.
///
/// # Safety
///
/// A non-null `ptr` must point to a NUL-terminated string.
unsafe fn copy_c_str(ptr: *const libc::c_char, what: &str) -> Result<Vec<u8>, String> {
    if ptr.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec())
}

/// Reads an `RKLLMInput`. The error is the log line's text.
///
/// # Safety
///
/// A non-null `input` must point to an `RKLLMInput` whose union member for its `input_type`
/// is initialised, with every buffer valid for the lengths it states (embeddings:
/// `n_tokens × embed_dim` floats; multimodal image: `n_image_tokens × embed_dim` floats).
pub(crate) unsafe fn read_input(
    input: *const RKLLMInput,
    embed_dim: usize,
) -> Result<Input, String> {
    if input.is_null() {
        return Err("rkllm_input is NULL".to_owned());
    }
    // SAFETY: non-null and, by the caller's contract, a valid RKLLMInput.
    let input = unsafe { &*input };
    match input.input_type {
        RKLLM_INPUT_PROMPT => {
            // SAFETY: the caller's input_type says `prompt_input` is the live member.
            let p = unsafe { input.__bindgen_anon_1.prompt_input };
            // SAFETY: a non-null prompt is NUL-terminated by the C contract.
            let text = unsafe { copy_c_str(p, "prompt_input") }?;
            if text.is_empty() {
                return Err("prompt_input is empty".to_owned());
            }
            Ok(Input::Prompt(text))
        }
        RKLLM_INPUT_TOKEN => {
            // SAFETY: the caller's input_type says `token_input` is the live member.
            let t = unsafe { input.__bindgen_anon_1.token_input };
            // SAFETY: the caller guarantees `n_tokens` ids behind `input_ids`.
            let ids = unsafe { copy_slice(t.input_ids.cast_const(), t.n_tokens, "token_input") }?;
            Ok(Input::Tokens(ids))
        }
        RKLLM_INPUT_EMBED => {
            // SAFETY: the caller's input_type says `embed_input` is the live member.
            let e = unsafe { input.__bindgen_anon_1.embed_input };
            let len = embed_len(e.n_tokens, embed_dim, "embed_input")?;
            // SAFETY: the caller guarantees `n_tokens × embed_dim` floats behind `embed`.
            let data = unsafe { copy_slice(e.embed.cast_const(), len, "embed_input") }?;
            Ok(Input::Embed {
                data,
                n_tokens: e.n_tokens,
            })
        }
        RKLLM_INPUT_MULTIMODAL => {
            // SAFETY: the caller's input_type says `multimodal_input` is the live member.
            let m = unsafe { input.__bindgen_anon_1.multimodal_input };
            // SAFETY: a non-null prompt is NUL-terminated by the C contract.
            let prompt = unsafe { copy_c_str(m.prompt.cast_const(), "multimodal_input.prompt") }?;
            let len = embed_len(m.n_image_tokens, embed_dim, "multimodal_input.image_embed")?;
            // SAFETY: the caller guarantees `n_image_tokens × embed_dim` floats.
            let image = unsafe {
                copy_slice(
                    m.image_embed.cast_const(),
                    len,
                    "multimodal_input.image_embed",
                )
            }?;
            Ok(Input::Multimodal {
                prompt,
                image,
                n_image_tokens: m.n_image_tokens,
            })
        }
        other => Err(format!("unknown input_type {other}")),
    }
}

/// `n_tokens × embed_dim`, checked.
fn embed_len(n_tokens: usize, embed_dim: usize, what: &str) -> Result<usize, String> {
    if n_tokens == 0 {
        return Err(format!("{what} has n_tokens 0"));
    }
    if embed_dim == 0 {
        return Err(format!(
            "{what}: this model takes no embeddings (embed_dim 0)"
        ));
    }
    n_tokens
        .checked_mul(embed_dim)
        .ok_or_else(|| format!("{what}: n_tokens {n_tokens} × embed_dim {embed_dim} overflows"))
}

/// Reads an `RKLLMInferParam`. The error is the log line's text.
///
/// # Safety
///
/// A non-null `infer` must point to a valid `RKLLMInferParam`, whose non-null
/// `lora_params` and `prompt_cache_params` point to valid structs with NUL-terminated (or
/// NULL) strings.
pub(crate) unsafe fn read_infer(infer: *const RKLLMInferParam) -> Result<Infer, String> {
    if infer.is_null() {
        return Err("rkllm_infer_params is NULL".to_owned());
    }
    // SAFETY: non-null and, by the caller's contract, valid.
    let infer = unsafe { &*infer };
    let hidden_layer = match infer.mode {
        RKLLM_INFER_GENERATE => false,
        RKLLM_INFER_GET_LAST_HIDDEN_LAYER => true,
        other => return Err(format!("unknown infer mode {other}")),
    };
    let lora = if infer.lora_params.is_null() {
        None
    } else {
        // SAFETY: non-null, and valid by the caller's contract.
        let name = unsafe { (*infer.lora_params).lora_adapter_name };
        // SAFETY: a non-null name is NUL-terminated by the C contract.
        let name = unsafe { copy_c_str(name, "lora_params.lora_adapter_name") }?;
        Some(String::from_utf8_lossy(&name).into_owned())
    };
    let save_cache = if infer.prompt_cache_params.is_null() {
        None
    } else {
        // SAFETY: non-null, and valid by the caller's contract.
        let p = unsafe { &*infer.prompt_cache_params };
        if p.save_prompt_cache == 0 {
            None
        } else if p.prompt_cache_path.is_null() {
            Some(PathBuf::from(prompt_cache::DEFAULT_PATH))
        } else {
            // SAFETY: a non-null path is NUL-terminated by the C contract.
            let path = unsafe { copy_c_str(p.prompt_cache_path, "prompt_cache_path") }?;
            Some(path_from_bytes(path))
        }
    };
    Ok(Infer {
        hidden_layer,
        lora,
        save_cache,
    })
}

/// A path from a C string's bytes.
pub(crate) fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}
