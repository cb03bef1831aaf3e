//! Prompt-cache files: what a run with `save_prompt_cache = 1` writes and
//! `rkllm_load_prompt_cache` reads.
//!
//! The real file holds the prefill state; the mock's holds the prompt's token ids and the
//! model's identity, which is enough to reproduce the runtime's reuse rule: compare the new
//! prompt with the cached one from the beginning and skip the longest matching prefix.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The value of the `format` field of a mock prompt-cache file.
const FORMAT: &str = "rkllm-mock-prompt-cache";

/// Where the cache goes when `prompt_cache_path` is NULL, as the vendor guide says.
pub(crate) const DEFAULT_PATH: &str = "./prompt_cache.bin";

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: String,
    model: String,
    tokens: Vec<i32>,
}

/// Writes the cache of `tokens` for the model `identity`.
pub(crate) fn save(path: &Path, identity: &str, tokens: &[i32]) -> std::io::Result<()> {
    let file = CacheFile {
        format: FORMAT.to_owned(),
        model: identity.to_owned(),
        tokens: tokens.to_vec(),
    };
    let text = serde_json::to_string(&file).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Reads a cache written for the model `identity`; the error is the log line's text.
pub(crate) fn load(path: &Path, identity: &str) -> Result<Vec<i32>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("failed to open prompt cache file {}: {e}", path.display()))?;
    let file: CacheFile = serde_json::from_slice(&bytes)
        .ok()
        .filter(|f: &CacheFile| f.format == FORMAT)
        .ok_or_else(|| format!("invalid prompt cache file {}", path.display()))?;
    if file.model != identity {
        return Err(format!(
            "prompt cache {} was saved by another model ({}), not this one ({identity})",
            path.display(),
            file.model
        ));
    }
    Ok(file.tokens)
}

/// How many leading tokens of `prompt` the cache covers.
pub(crate) fn reusable_prefix(cache: &[i32], prompt: &[i32]) -> usize {
    cache.iter().zip(prompt).take_while(|(a, b)| a == b).count()
}
