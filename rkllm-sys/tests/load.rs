//! Loading the runtime: typed errors for a missing library, a missing symbol and a 1.2+
//! runtime, checked with tiny shared objects compiled here.
//!
//! The C compiler is `RKLLM_TEST_CC` when set (CI sets `aarch64-linux-gnu-gcc` when the
//! tests run as aarch64 binaries under qemu), else `cc`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rkllm_sys::{Library, LoadError, RKLLMParam};

const ALL_1_1: &str = r#"
#include "rkllm.h"
RKLLMParam rkllm_createDefaultParam(void) { RKLLMParam p = {0}; p.max_context_len = 512; p.top_k = 40; return p; }
int rkllm_init(LLMHandle *h, RKLLMParam *p, LLMResultCallback cb) { (void)p; (void)cb; *h = (LLMHandle)0x1; return 0; }
int rkllm_load_lora(LLMHandle h, RKLLMLoraAdapter *a) { (void)h; (void)a; return 0; }
int rkllm_load_prompt_cache(LLMHandle h, const char *p) { (void)h; (void)p; return 0; }
int rkllm_release_prompt_cache(LLMHandle h) { (void)h; return 0; }
int rkllm_destroy(LLMHandle h) { (void)h; return 0; }
int rkllm_run(LLMHandle h, RKLLMInput *i, RKLLMInferParam *p, void *u) { (void)h; (void)i; (void)p; (void)u; return 7; }
int rkllm_run_async(LLMHandle h, RKLLMInput *i, RKLLMInferParam *p, void *u) { (void)h; (void)i; (void)p; (void)u; return 0; }
int rkllm_abort(LLMHandle h) { (void)h; return 0; }
int rkllm_is_running(LLMHandle h) { (void)h; return 1; }
"#;

/// A shared object compiled for one test, in a directory of its own that is removed on drop
/// (a loaded library stays usable: the loader keeps its own reference to the file).
struct BuiltLib {
    dir: PathBuf,
    so: PathBuf,
}

impl std::ops::Deref for BuiltLib {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.so
    }
}

impl Drop for BuiltLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build_so(name: &str, source: &str) -> BuiltLib {
    let dir = std::env::temp_dir().join(format!("rkllm-sys-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let built = BuiltLib {
        so: dir.join(format!("lib{name}.so")),
        dir,
    };
    let c = built.dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let cc = std::env::var("RKLLM_TEST_CC").unwrap_or_else(|_| "cc".into());
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&built.so)
        .arg("-I")
        .arg(&include)
        .arg(&c)
        .status()
        .unwrap_or_else(|e| panic!("could not run the C compiler `{cc}` (set RKLLM_TEST_CC): {e}"));
    assert!(status.success(), "`{cc}` failed to build {name}");
    built
}

#[test]
fn a_missing_library_is_a_typed_error_naming_the_path() {
    let err = Library::open("/nonexistent/dir/librkllmrt.so").unwrap_err();
    match &err {
        LoadError::NotFound { tried } => {
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].0, "/nonexistent/dir/librkllmrt.so");
            assert!(!tried[0].1.is_empty());
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/dir/librkllmrt.so"), "{msg}");
    assert!(msg.contains("RKLLM_LIB_PATH"), "{msg}");
}

#[test]
fn a_1_1_library_loads_and_its_functions_are_called() {
    let so = build_so("fake11", ALL_1_1);
    let lib = Library::open(&*so).expect("a library with the ten 1.1 functions loads");
    assert_eq!(lib.origin(), so.display().to_string());
    // SAFETY: the fake library implements the functions with the declared signatures.
    let param: RKLLMParam = unsafe { (lib.api().create_default_param)() };
    assert_eq!((param.max_context_len, param.top_k), (512, 40));
    // SAFETY: as above; the fake ignores its arguments.
    let rc = unsafe {
        (lib.api().run)(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 7);
}

#[test]
fn a_library_exporting_a_1_2_symbol_is_refused() {
    for symbol in rkllm_sys::INCOMPATIBLE_SYMBOLS {
        let source = format!("{ALL_1_1}\nint {symbol}(void) {{ return 0; }}\n");
        let so = build_so(&format!("fake12_{symbol}"), &source);
        match Library::open(&*so) {
            Err(LoadError::IncompatibleVersion { symbol: s, library }) => {
                assert_eq!(s, symbol);
                assert_eq!(library, so.display().to_string());
            }
            other => panic!("expected IncompatibleVersion for {symbol}, got {other:?}"),
        }
    }
}

#[test]
fn a_library_missing_a_function_is_refused() {
    let source = ALL_1_1.replace("int rkllm_abort(LLMHandle h) { (void)h; return 0; }", "");
    let so = build_so("fakemissing", &source);
    match Library::open(&*so) {
        Err(LoadError::MissingSymbol { symbol, .. }) => assert_eq!(symbol, "rkllm_abort"),
        other => panic!("expected MissingSymbol, got {other:?}"),
    }
}

#[test]
fn find_prefers_the_explicit_path() {
    let err = Library::find(Some(Path::new("/nonexistent/explicit.so"))).unwrap_err();
    let LoadError::NotFound { tried } = err else {
        panic!("expected NotFound")
    };
    assert_eq!(
        tried.len(),
        1,
        "an explicit path is the only candidate: {tried:?}"
    );
}

#[test]
fn find_uses_the_environment_variable() {
    // The only test that reads RKLLM_LIB_PATH, so setting it here races with nothing.
    let so = build_so("fakeenv", ALL_1_1);
    std::env::set_var(rkllm_sys::LIB_PATH_ENV, &*so);
    let loaded = Library::find(None).map(|l| l.origin().to_owned());
    std::env::set_var(rkllm_sys::LIB_PATH_ENV, "/nonexistent/from-env.so");
    let missing = Library::find(None).unwrap_err();
    std::env::remove_var(rkllm_sys::LIB_PATH_ENV);
    assert_eq!(loaded.unwrap(), so.display().to_string());
    let LoadError::NotFound { tried } = missing else {
        panic!("expected NotFound")
    };
    assert_eq!(tried.len(), 1);
    assert!(tried[0].0.contains("RKLLM_LIB_PATH"), "{tried:?}");
}

/// Whether the file at `path` is mapped into this process.
fn is_mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let path = path.display().to_string();
    maps.lines().any(|line| line.ends_with(&path))
}

#[test]
fn the_library_stays_loaded_after_the_last_handle_drops() {
    let so = build_so("fakeresident", ALL_1_1);
    let lib = Library::open(&*so).expect("the fake library loads");
    let create_default_param = lib.api().create_default_param;
    assert!(is_mapped(&so), "the library is not mapped while loaded");
    drop(lib);
    // The runtime may own threads that still run its code: it must never be unmapped.
    assert!(
        is_mapped(&so),
        "the library was unmapped when its `Library` dropped"
    );
    // SAFETY: the function was taken from the library, which is still mapped, and takes no
    // arguments.
    let param = unsafe { create_default_param() };
    assert_eq!(param.max_context_len, 512);
}
