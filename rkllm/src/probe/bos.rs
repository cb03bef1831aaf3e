//! Does text mode add BOS? Pairs of prompts, without and with a leading `<bos>`, compared
//! by the prefill token count the runtime prints at `RKLLM_LOG_LEVEL=1` against a known
//! count: a prompt made only of special-token text (one token each, whatever the
//! tokenizer), and a chat prompt counted exactly by the model's tokenizer when given.

use super::answers::Finding;
use super::harness::{Instance, RunRecord};
use super::tokens::TokenCounter;
use super::{gemma_prompt, ProbeConfig};
use crate::settings::AddsBos as Bos;

/// Four special tokens written as text: exactly four tokens for any Gemma tokenizer.
const SPECIALS: &str = "<start_of_turn><end_of_turn><start_of_turn><end_of_turn>";
const SPECIALS_COUNT: usize = 4;
const CHAT_USER: &str = "What is the capital of France?";
/// How many generated ids the evidence shows per run.
const SHOWN_IDS: usize = 5;

/// A prompt pair's prefill counts and its expected count without BOS.
struct Pair {
    what: &'static str,
    expected: usize,
    plain: RunRecord,
    with_bos: RunRecord,
}

impl Pair {
    fn run(
        model: &mut Instance,
        config: &ProbeConfig,
        what: &'static str,
        plain: &str,
        expected: usize,
    ) -> Pair {
        let with_bos = format!("<bos>{plain}");
        Pair {
            what,
            expected,
            plain: model.run(&config.plan(plain)),
            with_bos: model.run(&config.plan(&with_bos)),
        }
    }

    /// The answer the counts give, and a sentence about them.
    fn read(&self) -> (Option<Bos>, String) {
        let (Some(plain), Some(with_bos)) =
            (self.plain.prefill_tokens(), self.with_bos.prefill_tokens())
        else {
            return (None, format!("{}: no prefill count printed", self.what));
        };
        let e = self.expected;
        (
            classify(plain, with_bos, e),
            format!(
                "{} of {e} tokens prefilled {plain}, with <bos> {with_bos}",
                self.what
            ),
        )
    }

    fn first_ids(&self) -> String {
        let ids = |r: &RunRecord| {
            let mut v = r.token_ids();
            v.truncate(SHOWN_IDS);
            format!("{v:?}")
        };
        format!(
            "{}: first ids {} / with <bos> {}",
            self.what,
            ids(&self.plain),
            ids(&self.with_bos)
        )
    }
}

/// What prefill counts `plain` and `with_bos` say, for a prompt of `expected` tokens.
fn classify(plain: usize, with_bos: usize, expected: usize) -> Option<Bos> {
    let e = expected;
    match (plain, with_bos) {
        (p, b) if p == e && b == e + 1 => Some(Bos::Never),
        (p, b) if p == e + 1 && b == e + 2 => Some(Bos::Always),
        (p, b) if p == e + 1 && b == e + 1 => Some(Bos::UnlessPresent),
        _ => None,
    }
}

pub(crate) fn probe(
    model: &mut Instance,
    config: &ProbeConfig,
    counter: &TokenCounter,
) -> Finding<Bos> {
    let specials = Pair::run(
        model,
        config,
        "special-token prompt",
        SPECIALS,
        SPECIALS_COUNT,
    );
    // The chat prompt without its `<bos>`, counted exactly when a tokenizer is given.
    let chat_text = gemma_prompt(CHAT_USER).replacen("<bos>", "", 1);
    let chat = counter.count(&chat_text).map(|n| {
        Pair::run(
            model,
            config,
            "chat prompt (tokenizer count)",
            &chat_text,
            n,
        )
    });
    for pair in std::iter::once(&specials).chain(&chat) {
        for r in [&pair.plain, &pair.with_bos] {
            if let Some(reason) = r.unusable(config.run_timeout) {
                return Finding::failed(reason);
            }
        }
    }
    let readings: Vec<(Option<Bos>, String)> = std::iter::once(&specials)
        .chain(&chat)
        .map(Pair::read)
        .collect();
    let mut evidence: Vec<String> = readings.iter().map(|(_, s)| s.clone()).collect();
    evidence.extend(std::iter::once(&specials).chain(&chat).map(Pair::first_ids));
    if chat.is_none() {
        evidence.push("no tokenizer given for an exact chat-prompt count".into());
    }
    let evidence = evidence.join("; ");
    if specials.plain.prefill_tokens().is_none() {
        return Finding::unclear(format!(
            "the runtime printed no performance table (the probe leaves the environment \
             alone: run it with RKLLM_LOG_LEVEL=1 set before the program starts); {evidence}"
        ));
    }
    let answers: Vec<Bos> = readings.iter().filter_map(|(a, _)| *a).collect();
    match answers.split_first() {
        Some((first, rest)) if rest.iter().all(|a| a == first) => Finding::known(*first, evidence),
        Some(_) => Finding::unclear(format!("the prompts disagree: {evidence}")),
        None => Finding::unclear(evidence),
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, Bos};

    #[test]
    fn prefill_counts_read_as_answers() {
        assert_eq!(classify(4, 5, 4), Some(Bos::Never));
        assert_eq!(classify(5, 6, 4), Some(Bos::Always));
        assert_eq!(classify(5, 5, 4), Some(Bos::UnlessPresent));
        // A tokenizer that does not know the special-token text.
        assert_eq!(classify(40, 41, 4), None);
    }
}
