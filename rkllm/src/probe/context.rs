//! A prompt longer than `max_context_len`, on an instance built with a small context.

use super::answers::Finding;
use super::harness::{InitSpec, Instance};
use super::{gemma_prompt, init_failed, ProbeConfig};
use crate::settings::ContextOverflow;

const WORDS: [&str; 8] = [
    "apple", "river", "stone", "cloud", "maple", "candle", "harbor", "violet",
];
/// Tokens the small instance may generate: the question is the prompt, not the answer.
const NEW_TOKENS: u32 = 8;

/// A Gemma prompt of at least `words` tokens (every word is at least one token).
fn long_prompt(words: usize) -> String {
    let list: Vec<&str> = WORDS.iter().copied().cycle().take(words).collect();
    gemma_prompt(&format!("Which word comes first? {}", list.join(" ")))
}

pub(crate) fn probe(config: &ProbeConfig) -> Finding<ContextOverflow> {
    let ctx = config.small_context_len;
    let spec = InitSpec {
        max_context_len: ctx,
        max_new_tokens: NEW_TOKENS,
    };
    let mut model = match Instance::init(&config.runtime, &config.model, spec) {
        Ok(m) => m,
        Err(f) => return Finding::failed(init_failed("the small-context instance", ctx, &f)),
    };
    let words = 2 * ctx as usize + 16;
    let r = model.run(&config.plan(&long_prompt(words)));
    drop(model);
    if let Some(reason) = r.unusable(config.run_timeout) {
        return Finding::failed(reason);
    }
    let rc = r.return_code.unwrap_or_default();
    let tokens = r.tokens().count();
    let prefill = r
        .prefill_tokens()
        .map_or("not printed".to_owned(), |n| n.to_string());
    let said = r
        .first_error_line()
        .map(|l| format!("; the runtime said: {l}"))
        .unwrap_or_default();
    let evidence = format!(
        "a prompt of over {words} tokens with max_context_len {ctx}: rkllm_run returned {rc}, \
         {tokens} token(s), FINISH {}, ERROR {}, prefill count {prefill}{said}",
        if r.finished() { "yes" } else { "no" },
        if r.errored() { "yes" } else { "no" },
    );
    if r.errored() {
        Finding::known(ContextOverflow::ErrorCallback, evidence)
    } else if tokens > 0 {
        Finding::known(ContextOverflow::Truncated, evidence)
    } else if rc != 0 && r.events.is_empty() {
        Finding::known(ContextOverflow::Refused, evidence)
    } else {
        Finding::unclear(evidence)
    }
}
