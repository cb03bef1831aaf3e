//! Does the runtime stop by itself at Gemma's `<end_of_turn>`? A Gemma prompt whose answer
//! is one word, run without stop tokens, bounded by `max_new_tokens`.

use super::answers::{EndOfTurn, Finding};
use super::harness::{Instance, RunRecord};
use super::{gemma_prompt, ProbeConfig};
use crate::gemma;

/// The ids as the runtime's callback gives them (`int32`).
const GEMMA_END_OF_TURN: i32 = gemma::END_OF_TURN as i32;
const GEMMA_EOS: i32 = gemma::EOS as i32;

const USER: &str = "Answer with one word: what colour is a clear daytime sky?";
/// How many ids after `<end_of_turn>` the evidence shows.
const SHOWN_IDS: usize = 8;

pub(crate) fn run(model: &mut Instance, config: &ProbeConfig) -> RunRecord {
    model.run(&config.plan(&gemma_prompt(USER)))
}

pub(crate) fn analyse(r: &RunRecord, config: &ProbeConfig) -> Finding<EndOfTurn> {
    if let Some(reason) = r.unusable(config.run_timeout) {
        return Finding::failed(reason);
    }
    let ids = r.token_ids();
    let Some(at) = ids.iter().position(|&id| id == GEMMA_END_OF_TURN) else {
        let limit = if r.timed_out {
            format!(
                "the run was aborted at the time limit of {:?}",
                config.run_timeout
            )
        } else {
            format!("max_new_tokens {}", config.max_new_tokens)
        };
        return Finding::unclear(format!(
            "<end_of_turn> ({GEMMA_END_OF_TURN}) was not generated in {} token(s) ({limit}); \
             ids {:?}",
            ids.len(),
            &ids[..ids.len().min(2 * SHOWN_IDS)]
        ));
    };
    let text = r
        .tokens()
        .nth(at)
        .map(|e| {
            if e.text.bytes().is_empty() {
                "its text hidden".to_owned()
            } else {
                format!("its text {:?}", String::from_utf8_lossy(e.text.bytes()))
            }
        })
        .unwrap_or_default();
    let after = &ids[at + 1..];
    let ended = format!(
        "FINISH {}, rkllm_run returned {}{}",
        if r.finished() { "yes" } else { "no" },
        r.return_code.unwrap_or_default(),
        if r.timed_out {
            ", after the time limit"
        } else {
            ""
        }
    );
    let head = format!(
        "<end_of_turn> was token {} of {} ({text})",
        at + 1,
        ids.len()
    );
    if after.is_empty() {
        return Finding::known(
            EndOfTurn::StopsAfterEndOfTurn,
            format!("{head}; nothing followed; {ended}"),
        );
    }
    let eos = if after.first() == Some(&GEMMA_EOS) {
        " (<eos> first)"
    } else {
        ""
    };
    Finding::known(
        EndOfTurn::ContinuesPastEndOfTurn,
        format!(
            "{head}; {} token(s) followed{eos}: {:?}; {ended}",
            after.len(),
            &after[..after.len().min(SHOWN_IDS)]
        ),
    )
}
