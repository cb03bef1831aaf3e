//! Golden Gemma 2 prompt vectors: every case rendered with the style its `template` names,
//! compared byte for byte (or error for error), and with the real tokenizer, id for id.
//!
//! Reads `testdata/gemma-vectors/*.json`, or every `*.json` in `$GEMMA_VECTORS_DIR`.

mod chat_common;
mod fixtures;

use std::io::Write;
use std::path::Path;

use rkllm::chat::{Gemma2Template, Message, Role, SystemStyle};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: Vec<RawMessage>,
    add_generation_prompt: bool,
    expected: Option<String>,
    expected_error: Option<ExpectedError>,
    #[cfg_attr(not(feature = "tokenizer"), allow(dead_code))]
    expected_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct ExpectedError {
    message: Option<String>,
}

/// The vector's template id to the crate's style.
fn style_of(template: &str) -> Option<SystemStyle> {
    match template {
        "gemma2_official" => Some(SystemStyle::Strict),
        "systemgemma2_preamble" => Some(SystemStyle::SystemGemma2),
        "gemma2_merged" => Some(SystemStyle::Merge),
        "gemma2_system_turn" => Some(SystemStyle::Turn),
        _ => None,
    }
}

/// Control-token texts: content containing one of them tokenizes differently in token mode.
#[cfg(feature = "tokenizer")]
const SPECIAL_TEXTS: [&str; 6] = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
];

fn load_cases(dir: &Path) -> Vec<(String, Case)> {
    fixtures::load::<Case>(dir)
        .into_iter()
        .map(|(file, case)| {
            let stem = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (format!("{stem}/{}", case.name), case)
        })
        .collect()
}

fn to_messages(raw: &[RawMessage]) -> Result<Vec<Message>, rkllm::chat::ChatError> {
    raw.iter()
        .map(|m| Ok(Message::new(m.role.parse::<Role>()?, m.content.clone())))
        .collect()
}

#[test]
fn gemma_vectors() {
    let dir = fixtures::dir("GEMMA_VECTORS_DIR", "gemma-vectors");
    let cases = load_cases(&dir);
    assert!(
        !cases.is_empty(),
        "no vector cases found in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for (id, case) in &cases {
        let template = template_of(id, case);
        let rendered = to_messages(&case.messages)
            .and_then(|m| template.render(&m, case.add_generation_prompt));
        match (&case.expected, &case.expected_error, &rendered) {
            (Some(expected), None, Ok(got)) if got == expected => {}
            (Some(expected), None, got) => {
                failures.push(format!("{id}: expected {expected:?}, got {got:?}"))
            }
            (None, Some(err), Err(got)) => {
                if let Some(text) = &err.message {
                    if !got.to_string().contains(text.as_str()) {
                        failures.push(format!("{id}: error `{got}` does not contain `{text}`"));
                    }
                }
            }
            (None, Some(_), Ok(got)) => {
                failures.push(format!("{id}: expected an error, rendered {got:?}"))
            }
            _ => panic!("{id}: a case needs exactly one of expected / expected_error"),
        }
    }

    #[cfg(feature = "tokenizer")]
    let token_checks = check_token_ids(&cases, &mut failures);
    #[cfg(not(feature = "tokenizer"))]
    let token_checks = 0;

    assert!(
        failures.is_empty(),
        "{} failing vector(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Straight to stderr so the count shows in a normal (captured) test run too.
    let _ = writeln!(
        std::io::stderr(),
        "gemma vectors: {} cases checked ({token_checks} with token ids)",
        cases.len()
    );
}

fn template_of(id: &str, case: &Case) -> Gemma2Template {
    match style_of(&case.template) {
        Some(style) => Gemma2Template::new(style),
        None => panic!("{id}: unknown template id `{}`", case.template),
    }
}

/// Compares `expected_token_ids` with the text-mode encoding of `expected` and with token
/// mode; returns how many cases had ids to compare.
#[cfg(feature = "tokenizer")]
fn check_token_ids(cases: &[(String, Case)], failures: &mut Vec<String>) -> usize {
    let Some(tok) = chat_common::gemma_tokenizer() else {
        return 0;
    };
    let mut checked = 0;
    for (id, case) in cases {
        let (Some(expected), Some(ids)) = (&case.expected, &case.expected_token_ids) else {
            continue;
        };
        checked += 1;
        // Text mode: the rendered string as the runtime's tokenizer sees it.
        match tok.encode_prompt_text(expected) {
            Ok(got) if &got == ids => {}
            got => failures.push(format!("{id}: text-mode ids {got:?}, expected {ids:?}")),
        }
        // Token mode: equal unless content holds control-token text, which token mode keeps
        // as text (tested on its own in chat_tokenizer.rs).
        let injected = case
            .messages
            .iter()
            .any(|m| SPECIAL_TEXTS.iter().any(|s| m.content.contains(s)));
        let messages = to_messages(&case.messages).expect("valid roles");
        match tok.encode(
            &template_of(id, case),
            &messages,
            case.add_generation_prompt,
        ) {
            Ok(got) if !injected && &got != ids => {
                failures.push(format!("{id}: token-mode ids {got:?}, expected {ids:?}"))
            }
            Ok(got) if injected && &got == ids => failures.push(format!(
                "{id}: control-token text in content was parsed in token mode"
            )),
            Ok(_) => {}
            Err(e) => failures.push(format!("{id}: token mode failed: {e}")),
        }
    }
    checked
}
