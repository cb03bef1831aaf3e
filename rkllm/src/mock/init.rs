//! `rkllm_init`: reading the model file, the version line, the injected and the real
//! failures, the memory pool, and the new handle.

use std::ffi::CStr;

use rkllm_sys::{LLMHandle, LLMResultCallback, RKLLMParam};

use super::handle::{self, Instance, LoadedModel, Settings};
use super::input::path_from_bytes;
use super::log;
use super::memory;
use super::model_file::{self, InitFailure, MockModel, Parsed, TokenizerSpec};
use super::stats::normalise;
use super::tokenizer::{BuiltinTokenizer, Tokenize};
use crate::settings::SecondModel;

/// The runtime version the mock stands in for.
pub const RUNTIME_VERSION: &str = "1.1.1";
/// The platform the mock reports.
pub const PLATFORM: &str = "RK3588";
/// The oldest driver the runtime does not warn about.
const MIN_DRIVER: (u32, u32, u32) = (0, 9, 7);
/// The driver version printed when the model file could not be read.
const DEFAULT_DRIVER: &str = "0.9.8";
/// The allocation size printed for an out-of-memory failure of a model that states none.
const DEFAULT_OOM_SIZE: u64 = 232_128_512;

/// The version line (and the old-driver warning before it), printed on every init.
fn version_lines(out: log::Out, driver: &str) {
    if model_file::parse_version(driver).is_some_and(|v| v < MIN_DRIVER) {
        log::warn(
            out,
            "Warning: Your rknpu driver version is too low, please upgrade to 0.9.7.",
        );
    }
    let line = format!(
        "rkllm-runtime version: {RUNTIME_VERSION}, rknpu driver version: {driver}, platform: {PLATFORM}"
    );
    log::info(out, &line);
}

fn load_error(stream: log::Out) {
    log::rknn_error(stream, "load model file error!");
}

/// The NPU out-of-memory lines for an allocation of `size` bytes.
fn npu_oom(stream: log::Out, size: u64) {
    log::rknn_error(
        stream,
        "failed to allocate handle, ret: -1, errno: 14, errstr: Bad address",
    );
    log::rknn_error(
        stream,
        &format!("failed to malloc npu memory, size: {size}, flags: 0x2"),
    );
    load_error(stream);
}

/// `rkllm_init`'s body.
///
/// # Safety
///
/// `handle_out`, when non-null, must be valid for writing an `LLMHandle`; `param`, when
/// non-null, must point to a valid `RKLLMParam` whose non-null `model_path` is
/// NUL-terminated.
pub(crate) unsafe fn init(
    handle_out: *mut LLMHandle,
    param: *mut RKLLMParam,
    callback: LLMResultCallback,
) -> i32 {
    // Until the model file is read, the lines go where the real runtime prints them.
    let stream = log::Out::default();
    if !handle_out.is_null() {
        // SAFETY: non-null, and valid for writes by the caller's contract. A failed init
        // leaves the handle NULL, as old runtimes do.
        unsafe { handle_out.write(std::ptr::null_mut()) };
    }
    if param.is_null() {
        version_lines(stream, DEFAULT_DRIVER);
        log::rkllm_error(stream, "rkllm_init: param is NULL");
        return -1;
    }
    // SAFETY: non-null, and a valid RKLLMParam by the caller's contract; copied at once.
    let param = unsafe { param.read() };
    if param.model_path.is_null() {
        version_lines(stream, DEFAULT_DRIVER);
        log::rknn_error(stream, "failed to open model file: (null)");
        load_error(stream);
        return -1;
    }
    // SAFETY: non-null, and NUL-terminated by the caller's contract.
    let path = path_from_bytes(
        unsafe { CStr::from_ptr(param.model_path) }
            .to_bytes()
            .to_vec(),
    );
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            version_lines(stream, DEFAULT_DRIVER);
            log::rknn_error(
                stream,
                &format!("failed to open model file {}: {e}", path.display()),
            );
            load_error(stream);
            return -1;
        }
    };
    let spec = match model_file::parse(&bytes) {
        Parsed::Model(m) => *m,
        Parsed::NotMock => {
            version_lines(stream, DEFAULT_DRIVER);
            log::rknn_error(stream, "invalid rknn llm model magic");
            load_error(stream);
            return -1;
        }
        Parsed::Invalid(e) => {
            version_lines(stream, DEFAULT_DRIVER);
            log::rkllm_error(
                stream,
                &format!("invalid mock model file {}: {e}", path.display()),
            );
            load_error(stream);
            return -1;
        }
    };
    let stream = log::Out::of(&spec);
    version_lines(stream, spec.spec_driver_version());
    if handle_out.is_null() {
        log::rkllm_error(stream, "rkllm_init: handle is NULL");
        return -1;
    }
    if let Some(failure) = spec.spec_init_failure() {
        match failure {
            InitFailure::NpuOutOfMemory { requested_bytes } => npu_oom(stream, *requested_bytes),
            InitFailure::TooManyOpenFiles => {
                log::rknn_error(
                    stream,
                    "failed to convert handle(1020) to fd, ret: -1, errno: 24, errstr: Too many open files",
                );
                load_error(stream);
            }
            InitFailure::InvalidModelMagic => {
                log::rknn_error(stream, "invalid rknn llm model magic");
                load_error(stream);
            }
            InitFailure::WeightMemoryForDomain { domain } => {
                log::rknn_error(
                    stream,
                    &format!("can not create weight memory for domain{domain}"),
                );
            }
            // Returns "success" with the handle left NULL (written above).
            InitFailure::NullHandle => return 0,
        }
        return -1;
    }
    let limit = spec.spec_max_context_limit();
    if param.max_context_len <= 0 || param.max_context_len > limit {
        log::rkllm_error(
            stream,
            &format!(
                "max_context_len {} is invalid: it must be between 1 and the model's max_context_limit {limit}",
                param.max_context_len
            ),
        );
        return -1;
    }
    let tokenizer = match load_tokenizer(&spec, &path) {
        Ok(t) => t,
        Err(msg) => {
            log::rkllm_error(stream, &msg);
            load_error(stream);
            return -1;
        }
    };
    let oom_size = match spec.spec_npu_memory_bytes() {
        0 => DEFAULT_OOM_SIZE,
        n => n,
    };
    if spec.runtime_behaviour().second_model == SecondModel::Refused && handle::live_count() > 0 {
        npu_oom(stream, oom_size);
        return -1;
    }
    let (reservation, warning) = memory::reserve(spec.spec_npu_memory_bytes());
    if let Some(w) = warning {
        log::warn(stream, &w);
    }
    let reservation = match reservation {
        Ok(r) => r,
        Err(e) => {
            npu_oom(stream, e.requested);
            return -1;
        }
    };
    let log_level = spec.runtime_behaviour().log_level.unwrap_or_else(|| {
        std::env::var("RKLLM_LOG_LEVEL")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    let settings = Settings {
        max_context_len: param.max_context_len as usize,
        max_new_tokens: usize::try_from(param.max_new_tokens).ok(),
        skip_special_token: param.skip_special_token,
        log_level,
    };
    let identity = format!("{}/{}", spec.spec_name(), tokenizer.describe());
    let model = LoadedModel {
        path: normalise(&path),
        spec,
        tokenizer,
        identity,
    };
    match Instance::start(
        model,
        settings,
        callback,
        reservation,
        super::engine::execute,
    ) {
        Ok(handle) => {
            // SAFETY: checked non-null above; valid for writes by the caller's contract.
            unsafe { handle_out.write(handle) };
            0
        }
        Err(e) => {
            log::rkllm_error(stream, &format!("failed to start the runtime thread: {e}"));
            -1
        }
    }
}

/// The model's tokenizer; the error is the log line's text.
fn load_tokenizer(
    spec: &MockModel,
    model_path: &std::path::Path,
) -> Result<Box<dyn Tokenize>, String> {
    match spec.spec_tokenizer() {
        TokenizerSpec::Builtin => Ok(Box::new(BuiltinTokenizer)),
        TokenizerSpec::Json { path } => {
            let path = match model_path.parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.clone(),
            };
            json_tokenizer(&path)
        }
    }
}

#[cfg(feature = "tokenizer")]
fn json_tokenizer(path: &std::path::Path) -> Result<Box<dyn Tokenize>, String> {
    super::tokenizer::JsonTokenizer::load(path).map(|t| Box::new(t) as Box<dyn Tokenize>)
}

#[cfg(not(feature = "tokenizer"))]
fn json_tokenizer(path: &std::path::Path) -> Result<Box<dyn Tokenize>, String> {
    Err(format!(
        "this mock model tokenizes with {}, which needs the rkllm crate feature `tokenizer`",
        path.display()
    ))
}
