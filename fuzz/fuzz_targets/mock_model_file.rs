//! The mock model file parser (`rkllm::mock`) on arbitrary bytes, both through
//! `MockModel::from_json` and as the file the mock runtime's `rkllm_init` loads.
//!
//! Invariants checked, beyond "does not panic" (libfuzzer-sys aborts on any panic, even one
//! the mock's C entry points catch):
//! - a model that parses writes JSON that parses back to the same model;
//! - `is_mock_model_file` and `MockModel::read_from` agree with `from_json` on the same bytes;
//! - `rkllm_init` on a file of these bytes never hands out a handle for bytes that do not
//!   parse, and fails with -1 and a NULL handle for them; a handle it hands out is destroyed
//!   with 0.
#![no_main]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkllm::mock::{is_mock_model_file, raw_api, MockModel};
use rkllm_sys::LLMHandle;

/// An in-memory file (nothing is left on disk), reached by its `/proc/self/fd` path.
fn memfd() -> &'static (OwnedFd, String) {
    static FILE: OnceLock<(OwnedFd, String)> = OnceLock::new();
    FILE.get_or_init(|| {
        // SAFETY: the name is a NUL-terminated literal; memfd_create reads only that.
        let fd = unsafe { libc::memfd_create(c"rkllm-fuzz-model".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        (fd, path)
    })
}

fn write_model_file(data: &[u8]) -> &'static str {
    // The descriptor stays open in the static; the file is reached by its path.
    let (_, path) = memfd();
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open memfd");
    file.set_len(0).expect("truncate memfd");
    std::io::Write::write_all(&mut &file, data).expect("write memfd");
    path
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data);
    let parsed = text.map(MockModel::from_json);

    if let Ok(Ok(model)) = &parsed {
        let json = model.to_json();
        assert_eq!(
            MockModel::from_json(&json).as_ref(),
            Ok(model),
            "the written JSON does not read back: {json}"
        );
    }

    let path = write_model_file(data);
    let accepted = matches!(parsed, Ok(Ok(_)));
    assert_eq!(
        is_mock_model_file(path),
        accepted,
        "is_mock_model_file disagrees"
    );
    assert_eq!(
        MockModel::read_from(path).is_ok(),
        accepted,
        "MockModel::read_from disagrees with the runtime's parser"
    );

    let api = raw_api();
    // SAFETY: the mock's create_default_param takes nothing and returns a value.
    let mut param = unsafe { (api.create_default_param)() };
    let c_path = CString::new(path).expect("no NUL in a /proc path");
    param.model_path = c_path.as_ptr();
    param.max_context_len = 1;
    let mut handle: LLMHandle = std::ptr::null_mut();
    // SAFETY: `handle` and `param` are valid for the call, `model_path` is NUL-terminated and
    // outlives it; no callback is bound because the handle never runs.
    let rc = unsafe { (api.init)(&mut handle, &mut param, None) };
    if !accepted {
        assert_eq!(rc, -1, "init accepted bytes that do not parse");
        assert!(handle.is_null(), "init failed but handed out a handle");
    }
    if !handle.is_null() {
        assert_eq!(rc, 0);
        assert!(accepted);
        // SAFETY: a handle from a successful init, destroyed once and not used afterwards.
        assert_eq!(unsafe { (api.destroy)(handle) }, 0);
    }
});
