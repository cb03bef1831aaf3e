//! Chat templates of any family (`rkllm::chat::HfChatTemplate`, feature `template`) on
//! arbitrary templates and conversations.
//!
//! The template is either raw bytes or assembled from Jinja fragments that real chat
//! templates use (loops, loop controls, Python string methods, `tojson`, `namespace`,
//! `raise_exception`, `strftime_now`), so that most inputs parse and run. Invariants:
//! - loading and rendering never panic; a template that does not parse is a `Syntax` error;
//! - rendering is deterministic (a fixed clock);
//! - `check_text_mode` refuses exactly the inputs whose strings hold a special-token text,
//!   and `render_text_mode` otherwise equals `render`.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rkllm::chat::{Clock, HfChatTemplate, TemplateError, TemplateInput};

const FRAGMENTS: &[&str] = &[
    "{{ bos_token }}",
    "{% for message in messages %}",
    "{% endfor %}",
    "{% if message['role'] == 'system' %}",
    "{% if add_generation_prompt %}",
    "{% elif loop.first %}",
    "{% else %}",
    "{% endif %}",
    "{{ message['content'] | trim }}",
    "{{ message.content.strip() }}",
    "{{ message.content.split() | join('|') }}",
    "{{ message.content.splitlines() }}",
    "{{ message['content'].startswith('<') }}",
    "{{ message | tojson }}",
    "{{ tools | tojson(indent=4) }}",
    "{{ messages[::-1] | tojson }}",
    "{% break %}",
    "{% continue %}",
    "{% set ns = namespace(found=false) %}",
    "{% set ns.found = true %}",
    "{{ ns.found }}",
    "{{ raise_exception('Conversation roles must alternate') }}",
    "{{ strftime_now('%d %b %Y') }}",
    "{{ '<|im_start|>' + message['role'] + '\\n' }}",
    "{{ message.get('name', none) }}",
    "{% for k, v in message.items() %}{{ k }}={{ v }};{% endfor %}",
    "{{ loop.index0 % 2 }}",
    "{{ date_string }}",
    "\n  ",
    "<|im_end|>\n",
    "{{ eos_token }}",
    "{%- if tools %}",
    "{{ (message.content | length) > 3 }}",
];

#[derive(Arbitrary, Debug)]
struct Case {
    raw_template: Option<String>,
    fragments: Vec<u8>,
    messages: Vec<(u8, String, Option<String>)>,
    tools: Option<Vec<String>>,
    add_generation_prompt: bool,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fuzz_target!(|case: Case| {
    let source = match &case.raw_template {
        Some(raw) => raw.clone(),
        None => case
            .fragments
            .iter()
            .map(|&i| FRAGMENTS[usize::from(i) % FRAGMENTS.len()])
            .collect(),
    };
    let specials = [("bos_token", "<s>"), ("eos_token", "<|im_end|>")];
    let template = match HfChatTemplate::from_template_str(&source, specials) {
        Ok(t) => t.with_clock(Clock::fixed(UNIX_EPOCH + Duration::from_secs(1_721_999_109))),
        Err(TemplateError::Syntax { .. }) => return,
        Err(other) => panic!("a template string fails only as a syntax error: {other:?}"),
    };
    let roles = ["system", "user", "assistant", "tool", "developer"];
    let messages: Vec<String> = case
        .messages
        .iter()
        .map(|(role, content, name)| {
            let mut m = format!(
                "{{\"role\": {}, \"content\": {}",
                json_str(roles[usize::from(*role) % roles.len()]),
                json_str(content)
            );
            if let Some(name) = name {
                m.push_str(&format!(", \"name\": {}", json_str(name)));
            }
            m.push('}');
            m
        })
        .collect();
    let mut input = TemplateInput::from_json(&format!("[{}]", messages.join(", ")))
        .unwrap()
        .add_generation_prompt(case.add_generation_prompt)
        .var("date_string", "26 Jul 2024");
    if let Some(tools) = &case.tools {
        input = input.tools(tools);
    }
    let first = template.render(&input);
    assert_eq!(first, template.render(&input), "rendering is deterministic");

    let holds_special = case.messages.iter().any(|(_, content, name)| {
        [content.as_str(), name.as_deref().unwrap_or("")]
            .iter()
            .any(|s| s.contains("<s>") || s.contains("<|im_end|>"))
    }) || case
        .tools
        .iter()
        .flatten()
        .any(|s| s.contains("<s>") || s.contains("<|im_end|>"));
    match template.check_text_mode(&input) {
        Err(TemplateError::SpecialTokenInText { .. }) => assert!(holds_special),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(()) => {
            assert!(!holds_special);
            assert_eq!(template.render_text_mode(&input), first);
        }
    }
});
