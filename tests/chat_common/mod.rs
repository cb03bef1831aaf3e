//! Shared helpers of the chat tests: where the real Gemma 2 tokenizer is.
#![allow(dead_code)] // each test binary uses a different subset

#[cfg(feature = "tokenizer")]
use std::io::Write;
use std::path::PathBuf;
#[cfg(feature = "tokenizer")]
use std::sync::{Arc, OnceLock};

#[cfg(feature = "tokenizer")]
use rkllm::chat::GemmaTokenizer;

/// Env var naming a Gemma 2 `tokenizer.json` to use instead of the default path.
pub const TOKENIZER_ENV: &str = "GEMMA2_TOKENIZER";
/// Env var that, set to `1`, lets the tokenizer tests pass without the file.
pub const SKIP_ENV: &str = "RKLLM_SKIP_TOKENIZER_TESTS";

/// The tokenizer file: `$GEMMA2_TOKENIZER`, else `testdata/gemma2-tokenizer/tokenizer.json`
/// (installed by `scripts/fetch-gemma-tokenizer.sh`).
pub fn tokenizer_path() -> PathBuf {
    match std::env::var_os(TOKENIZER_ENV) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/gemma2-tokenizer/tokenizer.json"),
    }
}

/// The real Gemma 2 tokenizer, loaded once per test binary.
///
/// When the file is missing this panics with how to get it, so the tests that need it fail
/// rather than pass silently; `RKLLM_SKIP_TOKENIZER_TESTS=1` turns that into `None` and a
/// loud notice.
#[cfg(feature = "tokenizer")]
pub fn gemma_tokenizer() -> Option<Arc<GemmaTokenizer>> {
    static TOKENIZER: OnceLock<Option<Arc<GemmaTokenizer>>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let path = tokenizer_path();
            if !path.exists() {
                if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
                    // Straight to stderr: the test harness would swallow eprintln! of a
                    // passing test, and this notice must be seen.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n!!!!! {SKIP_ENV}=1: SKIPPING the Gemma 2 tokenizer checks ({} is \
                         missing); token mode is NOT tested in this run !!!!!\n",
                        path.display()
                    );
                    return None;
                }
                panic!(
                    "the Gemma 2 tokenizer is missing at {}: run scripts/fetch-gemma-tokenizer.sh \
                     (or point {TOKENIZER_ENV} at a Gemma 2 tokenizer.json; set {SKIP_ENV}=1 to \
                     skip these checks explicitly)",
                    path.display()
                );
            }
            match GemmaTokenizer::from_file(&path) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => panic!("cannot load the Gemma 2 tokenizer {}: {e}", path.display()),
            }
        })
        .clone()
}
