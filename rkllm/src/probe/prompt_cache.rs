//! Does a loaded prompt cache shorten the prefill? A longer prompt is run without a cache;
//! its prefix is run with `save_prompt_cache`; the longer prompt is run again with the cache
//! loaded. Both runs of the longer prompt stop at their first token, and their times to first
//! token are compared.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::answers::{CacheTiming, Finding, MeasuredCacheCost};
use super::harness::{Instance, RunRecord};
use super::ProbeConfig;
use crate::settings::PromptCacheReuse;

const WORDS: [&str; 12] = [
    "north", "garden", "silver", "lantern", "meadow", "copper", "window", "thunder", "pebble",
    "orchard", "velvet", "compass",
];
/// At most this ratio of times to first token is "clearly faster".
const HELPED: f64 = 0.5;
/// At least this ratio is "no effect".
const NO_EFFECT: f64 = 0.8;

/// The cache file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(dir: &Path) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(dir.join(format!(
            "rkllm-probe-{}-{n}.prompt-cache",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn prefix(words: usize) -> String {
    let list: Vec<&str> = WORDS.iter().copied().cycle().take(words).collect();
    format!(
        "<bos><start_of_turn>user\nRemember this list of words: {}.\n",
        list.join(" ")
    )
}

/// A run of `prompt` stopped at its first token.
fn first_token(model: &mut Instance, config: &ProbeConfig, prompt: &str) -> RunRecord {
    let mut plan = config.plan(prompt);
    plan.abort_at_token = Some(1);
    model.run(&plan)
}

pub(crate) fn probe(
    model: &mut Instance,
    config: &ProbeConfig,
) -> (
    Finding<PromptCacheReuse>,
    Option<CacheTiming>,
    Option<MeasuredCacheCost>,
) {
    let file = TempFile::new(&config.work_dir);
    let prefix = prefix(config.cache_prefix_words);
    let full = format!("{prefix}Which word came first?<end_of_turn>\n<start_of_turn>model\n");

    // The baseline first, so that a runtime which keeps a cache it just saved cannot make it
    // look fast (the instance has run before: no warm-up in it either).
    let uncached = first_token(model, config, &full);
    let mut save = config.plan(&prefix);
    save.save_cache = Some(&file.0);
    // Run to its end: when the runtime writes the file is undocumented.
    let saved = model.run(&save);
    if let Some(reason) = saved.unusable(config.run_timeout) {
        return (Finding::failed(reason), None, None);
    }
    let size = std::fs::metadata(&file.0).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        return (
            Finding::failed(format!(
                "the runtime wrote no prompt cache to {} (rkllm_run returned {})",
                file.0.display(),
                saved.return_code.unwrap_or_default()
            )),
            None,
            None,
        );
    }
    // Writing the file: from the save run's last callback until rkllm_run returned.
    let save_time = saved
        .events
        .last()
        .zip(saved.returned_at)
        .map(|(last, returned)| returned.saturating_duration_since(last.at));
    let load_started = std::time::Instant::now();
    let load_rc = model.load_prompt_cache(&file.0);
    let load_time = load_started.elapsed();
    if load_rc != 0 {
        return (
            Finding::failed(format!("rkllm_load_prompt_cache returned {load_rc}")),
            None,
            None,
        );
    }
    let cached = first_token(model, config, &full);
    let release_rc = model.release_prompt_cache();
    for r in [&uncached, &cached] {
        if let Some(reason) = r.unusable(config.run_timeout) {
            return (Finding::failed(reason), None, None);
        }
    }
    let (Some(u), Some(c)) = (uncached.time_to_first_token(), cached.time_to_first_token()) else {
        let (which, r) = if uncached.tokens().next().is_none() {
            ("without", &uncached)
        } else {
            ("with", &cached)
        };
        let said = r
            .first_error_line()
            .map(|l| format!("; the runtime said: {l}"))
            .unwrap_or_default();
        return (
            Finding::failed(format!(
                "the full prompt {which} the cache produced no token (rkllm_run returned \
                 {}){said}",
                r.return_code.unwrap_or_default()
            )),
            None,
            None,
        );
    };
    let timing = CacheTiming {
        uncached: u,
        cached: c,
    };
    let ratio = timing.ratio();
    let counts = match (uncached.prefill_tokens(), cached.prefill_tokens()) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let reused = counts.is_some_and(|(a, b)| b < a);
    let evidence = format!(
        "cache of a {}-word prefix ({size} bytes); time to first token {:.1} ms without, \
         {:.1} ms with the cache (ratio {ratio:.2}); prefill tokens {}; \
         rkllm_release_prompt_cache returned {release_rc}",
        config.cache_prefix_words,
        u.as_secs_f64() * 1000.0,
        c.as_secs_f64() * 1000.0,
        counts.map_or("not printed".to_owned(), |(a, b)| format!(
            "{a} without, {b} with"
        )),
    );
    let finding = if ratio <= HELPED || (ratio < NO_EFFECT && reused) {
        Finding::known(PromptCacheReuse::Reused, evidence)
    } else if ratio >= NO_EFFECT && !reused {
        Finding::known(PromptCacheReuse::NotReused, evidence)
    } else {
        Finding::unclear(evidence)
    };
    let cost = match (saved.prefill_tokens(), uncached.prefill_tokens(), save_time) {
        (Some(tokens), Some(full), Some(save)) if tokens > 0 && full > 0 => {
            Some(MeasuredCacheCost {
                prompt_tokens: tokens,
                file_bytes: size,
                save,
                load: load_time,
                prefill_seconds_per_token: u.as_secs_f64() / full as f64,
            })
        }
        _ => None,
    };
    (finding, Some(timing), cost)
}
