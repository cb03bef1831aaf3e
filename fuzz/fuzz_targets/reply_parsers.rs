//! The reply parsers of `rkllm::chat`: the reasoning splitter and the tool-call parser, fed
//! any text cut into pieces anywhere (at character boundaries).
//!
//! Invariants checked:
//! - neither panics;
//! - the reasoning splitter's pieces are never empty, one call never returns two pieces of
//!   one kind in a row, and the pieces add up to `split_reasoning` of the whole text,
//!   whatever the cuts;
//! - the tool-call parser's events, with consecutive content and arguments merged, are the
//!   same as for the whole text fed at once; calls start in order, every call that starts
//!   ends, its streamed arguments are exactly its final `arguments`, and the content is that
//!   of `parse_tool_calls`;
//! - the same holds for the pipeline a server runs: the splitter's content fed on to the
//!   tool-call parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllm::chat::reasoning::{split_reasoning, ReasoningPiece, ReasoningSplitter};
use rkllm::chat::tool_calls::{parse_tool_calls, ToolCallEvent, ToolCallFormat, ToolCallParser};

/// The fuzzer's bytes: a flags byte (bit 0: the reply starts inside the reasoning; bit 1:
/// Llama 3 JSON calls, else Hermes), a count `n`, `n` cut offsets (two bytes each, little
/// endian), then the reply's text (invalid UTF-8 replaced). A plain layout, so seeds are
/// easy to write by hand (`fuzz/seeds/reply_parsers/`).
#[derive(Debug)]
struct Input {
    text: String,
    cuts: Vec<u16>,
    starts_in_reasoning: bool,
    llama: bool,
}

impl Input {
    fn parse(data: &[u8]) -> Input {
        let flags = data.first().copied().unwrap_or(0);
        let n = usize::from(data.get(1).copied().unwrap_or(0));
        let rest = data.get(2..).unwrap_or_default();
        let (cut_bytes, text) = rest.split_at((2 * n).min(rest.len()));
        Input {
            text: String::from_utf8_lossy(text).into_owned(),
            cuts: cut_bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
            starts_in_reasoning: flags & 1 != 0,
            llama: flags & 2 != 0,
        }
    }
}

/// `text` cut at `cuts`, in order.
fn pieces<'a>(text: &'a str, cuts: &[u16]) -> Vec<&'a str> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut i = usize::from(c).min(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn check_reasoning_call(returned: &[ReasoningPiece]) {
    for piece in returned {
        assert!(!piece.text().is_empty(), "empty piece: {returned:?}");
    }
    for pair in returned.windows(2) {
        assert_ne!(
            pair[0].is_reasoning(),
            pair[1].is_reasoning(),
            "{returned:?}"
        );
    }
}

/// Streams the reasoning splitter; returns (reasoning, content).
fn reasoning(parts: &[&str], starts: bool) -> (Option<String>, String) {
    let mut splitter = ReasoningSplitter::with_tags("<think>", "</think>", starts);
    let mut reasoning: Option<String> = None;
    let mut content = String::new();
    let mut add = |returned: Vec<ReasoningPiece>| {
        check_reasoning_call(&returned);
        for piece in returned {
            match piece {
                ReasoningPiece::Reasoning(t) => reasoning.get_or_insert_default().push_str(&t),
                ReasoningPiece::Content(t) => content.push_str(&t),
                _ => unreachable!("a new kind of piece"),
            }
        }
    };
    for part in parts {
        add(splitter.push(part));
    }
    add(splitter.finish());
    (reasoning, content)
}

/// Streams the tool-call parser; returns the merged events and checks them against the calls.
fn tool_events(format: ToolCallFormat, parts: &[&str]) -> (Vec<ToolCallEvent>, String) {
    let mut parser = ToolCallParser::new(format).with_id_prefix("call_");
    let mut events: Vec<ToolCallEvent> = Vec::new();
    let raw = parts
        .iter()
        .flat_map(|part| parser.push(part))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(parser.finish());
    for event in raw {
        match (events.last_mut(), event) {
            (_, ToolCallEvent::Content(t)) if t.is_empty() => panic!("empty content"),
            (_, ToolCallEvent::Arguments { delta, .. }) if delta.is_empty() => {
                panic!("empty arguments")
            }
            (Some(ToolCallEvent::Content(last)), ToolCallEvent::Content(t)) => last.push_str(&t),
            (
                Some(ToolCallEvent::Arguments {
                    index: a,
                    delta: last,
                }),
                ToolCallEvent::Arguments { index: b, delta },
            ) if *a == b => last.push_str(&delta),
            (_, event) => events.push(event),
        }
    }
    let mut content = String::new();
    let mut assembled: Vec<(String, String)> = Vec::new();
    let mut open: Option<usize> = None;
    for event in &events {
        match event {
            ToolCallEvent::Content(t) => content.push_str(t),
            ToolCallEvent::Started { index, name, .. } => {
                assert_eq!(open, None, "a call started inside another");
                assert_eq!(*index, assembled.len(), "calls start in order");
                assembled.push((name.clone(), String::new()));
                open = Some(*index);
            }
            ToolCallEvent::Arguments { index, delta } => {
                assert_eq!(open, Some(*index), "arguments of a call not open");
                assembled[*index].1.push_str(delta);
            }
            ToolCallEvent::Ended { index } => {
                assert_eq!(open.take(), Some(*index), "ended a call not open");
            }
            _ => unreachable!("a new kind of event"),
        }
    }
    assert_eq!(open, None, "a call left open after finish");
    let calls: Vec<(String, String)> = parser
        .calls()
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect();
    assert_eq!(assembled, calls, "events and calls disagree");
    (events, content)
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let text = input.text.as_str();
    let parts = pieces(text, &input.cuts);

    let whole = split_reasoning(text, input.starts_in_reasoning);
    let streamed = reasoning(&parts, input.starts_in_reasoning);
    assert_eq!(
        streamed,
        (whole.reasoning, whole.content.clone()),
        "reasoning of {parts:?}"
    );

    let format = if input.llama {
        ToolCallFormat::Llama3Json
    } else {
        ToolCallFormat::Hermes
    };
    let (events, content) = tool_events(format, &[text]);
    assert_eq!(
        tool_events(format, &parts),
        (events, content.clone()),
        "{parts:?}"
    );
    let parsed = parse_tool_calls(format, text);
    assert_eq!(parsed.content, content);

    // The server's pipeline: the answer's text goes on to the tool-call parser piece by piece.
    let mut splitter =
        ReasoningSplitter::with_tags("<think>", "</think>", input.starts_in_reasoning);
    let mut answer_pieces: Vec<String> = Vec::new();
    for part in &parts {
        for piece in splitter.push(part) {
            if let ReasoningPiece::Content(t) = piece {
                answer_pieces.push(t);
            }
        }
    }
    for piece in splitter.finish() {
        if let ReasoningPiece::Content(t) = piece {
            answer_pieces.push(t);
        }
    }
    let answer_parts: Vec<&str> = answer_pieces.iter().map(String::as_str).collect();
    assert_eq!(
        tool_events(format, &answer_parts),
        tool_events(format, &[whole.content.as_str()]),
        "pipeline on {parts:?}"
    );
});
