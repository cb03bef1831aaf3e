//! A run that writes rare characters, which tokenizers split into byte tokens: what WAITING
//! callbacks carry, and what FINISH carries.

use std::time::Duration;

use rkllm_sys::{RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING};

use super::answers::Finding;
use super::harness::{Instance, RunRecord, Text};
use super::{gemma_prompt, ProbeConfig};
use crate::settings::{FinishText, WaitingText};

/// Characters Gemma's vocabulary lacks (byte fallback), so the model writes them in pieces.
const USER: &str = "Repeat exactly this line and nothing else: 𓀀 𓁐 𒀀 ꙮ 𝔊 🦀";

pub(crate) fn run(model: &mut Instance, config: &ProbeConfig) -> RunRecord {
    model.run(&config.plan(&gemma_prompt(USER)))
}

/// Whether `bytes` is valid UTF-8 but for an unfinished character at the end (a run may stop
/// in the middle of one).
fn valid_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

pub(crate) fn waiting(r: &RunRecord, timeout: Duration) -> Finding<WaitingText> {
    if let Some(reason) = r.unusable(timeout) {
        return Finding::failed(reason);
    }
    let waits: Vec<&Text> = r
        .events
        .iter()
        .filter(|e| e.state == RKLLM_RUN_WAITING)
        .map(|e| &e.text)
        .collect();
    let joined: Vec<u8> = r.tokens().flat_map(|e| e.text.bytes().to_vec()).collect();
    if waits.is_empty() {
        return Finding::unclear(format!(
            "no WAITING callback in {} token(s) (the model wrote no character in pieces); \
             output {:?}",
            r.tokens().count(),
            String::from_utf8_lossy(&joined)
        ));
    }
    let nulls = waits.iter().filter(|t| matches!(t, Text::Null)).count();
    let empties = waits
        .iter()
        .filter(|t| matches!(t, Text::Bytes(b) if b.is_empty()))
        .count();
    let with_bytes = waits.len() - nulls - empties;
    let sample = waits
        .iter()
        .find(|t| !t.bytes().is_empty())
        .map(|t| format!(" (e.g. {:02x?})", t.bytes()))
        .unwrap_or_default();
    let normals_only: Vec<u8> = r
        .events
        .iter()
        .filter(|e| e.state == RKLLM_RUN_NORMAL)
        .flat_map(|e| e.text.bytes().to_vec())
        .collect();
    let joins = valid_prefix(&joined);
    let evidence = format!(
        "{} WAITING callback(s) in {} token(s): {nulls} NULL, {empties} empty, {with_bytes} \
         with bytes{sample}; all texts joined are valid UTF-8: {}; output {:?}",
        waits.len(),
        r.tokens().count(),
        if joins { "yes" } else { "no" },
        String::from_utf8_lossy(&joined)
    );
    let answer = if nulls == waits.len() {
        WaitingText::Null
    } else if empties == waits.len() {
        WaitingText::Empty
    } else if with_bytes == waits.len() {
        if joins {
            WaitingText::PartialBytes
        } else if valid_prefix(&normals_only) {
            WaitingText::PartialBytesThenWhole
        } else {
            return Finding::unclear(evidence);
        }
    } else {
        return Finding::unclear(format!("mixed kinds: {evidence}"));
    };
    if !joins && answer != WaitingText::PartialBytesThenWhole {
        // NULL or empty WAITING, yet the NORMAL texts alone do not make whole characters:
        // bytes are lost somewhere.
        return Finding::unclear(format!("bytes are lost: {evidence}"));
    }
    Finding::known(answer, evidence)
}

pub(crate) fn finish(records: &[&RunRecord]) -> Finding<FinishText> {
    let finishes: Vec<(i32, &Text)> = records
        .iter()
        .flat_map(|r| r.events.iter())
        .filter(|e| e.state == RKLLM_RUN_FINISH)
        .map(|e| (e.token_id, &e.text))
        .collect();
    let Some(&(token_id, first)) = finishes.first() else {
        return Finding::unclear(format!("no FINISH callback in {} run(s)", records.len()));
    };
    let same = finishes.iter().all(|(_, t)| *t == first);
    let evidence = format!(
        "{} FINISH callback(s), {}; token_id {token_id}",
        finishes.len(),
        if same { "all alike" } else { "NOT all alike" }
    );
    let answer = match first {
        Text::NoResult => return Finding::unclear(format!("result pointer NULL; {evidence}")),
        Text::Null => FinishText::Null,
        Text::Bytes(b) if b.is_empty() => FinishText::Empty,
        Text::Bytes(b) => FinishText::Text(String::from_utf8_lossy(b).into_owned()),
    };
    if same {
        Finding::known(answer, evidence)
    } else {
        Finding::unclear(evidence)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rkllm_sys::{LLMCallState, RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING};

    use super::{finish, waiting};
    use crate::probe::answers::Verdict;
    use crate::probe::harness::{Callback, RunRecord, Text};
    use crate::settings::{FinishText, WaitingText};

    fn event(state: LLMCallState, text: Text) -> Callback {
        Callback {
            state,
            token_id: 7,
            text,
            thread: std::thread::current().id(),
            at: Instant::now(),
            after_return: false,
        }
    }

    fn bytes(b: &[u8]) -> Text {
        Text::Bytes(b.to_vec())
    }

    /// "é" (c3 a9) split over two tokens, then FINISH, with the given texts.
    fn split(wait: Text, complete: Text) -> RunRecord {
        RunRecord::returned(
            vec![
                event(RKLLM_RUN_NORMAL, bytes(b"a")),
                event(RKLLM_RUN_WAITING, wait),
                event(RKLLM_RUN_NORMAL, complete),
                event(RKLLM_RUN_FINISH, Text::Null),
            ],
            0,
        )
    }

    #[test]
    fn waiting_texts_are_told_apart() {
        let cases = [
            (
                bytes(b"\xc3"),
                bytes(b"\xa9"),
                Some(WaitingText::PartialBytes),
            ),
            (
                bytes(b"\xc3"),
                bytes("é".as_bytes()),
                Some(WaitingText::PartialBytesThenWhole),
            ),
            (Text::Null, bytes("é".as_bytes()), Some(WaitingText::Null)),
            (bytes(b""), bytes("é".as_bytes()), Some(WaitingText::Empty)),
            // NULL while waiting and only the last byte after: a byte is lost.
            (Text::Null, bytes(b"\xa9"), None),
        ];
        for (wait, complete, want) in cases {
            let found = waiting(
                &split(wait.clone(), complete.clone()),
                Duration::from_secs(1),
            );
            assert_eq!(
                found.answer(),
                want.as_ref(),
                "{wait:?} {complete:?}: {found:?}"
            );
        }
    }

    #[test]
    fn finish_text_must_agree_across_runs() {
        let a = split(Text::Null, bytes("é".as_bytes()));
        let mut b = a.clone();
        b.events.last_mut().unwrap().text = bytes(b"");
        assert_eq!(finish(&[&a]).answer(), Some(&FinishText::Null));
        assert_eq!(finish(&[&b]).answer(), Some(&FinishText::Empty));
        assert_eq!(finish(&[&a, &b]).verdict, Verdict::Unclear);
    }
}
