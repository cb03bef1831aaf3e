//! The Gemma 2 chat template (`rkllm::chat`) on arbitrary messages, and a `Conversation`
//! driven by arbitrary operations.
//!
//! Template invariants, for every style:
//! - `render` succeeds exactly when `validate` does, with the same error;
//! - `Bos::Omit` renders the `Bos::Include` text without its leading `<bos>`;
//! - the generation prompt appends exactly `<start_of_turn>model\n`;
//! - every turn's trimmed content appears in the output, in message order;
//! - when no content holds `<`, the output has one `<start_of_turn>` and one `<end_of_turn>`
//!   per rendered turn (so content cannot open or close a turn).
//!
//! Conversation invariants:
//! - `push_user` / `push_assistant` fail exactly when alternation would break, and then change
//!   nothing; the history always renders with a valid shape;
//! - a successful `fit` keeps the system prompt and the newest user message, drops whole
//!   exchanges from the front, respects the budget, and a second `fit` drops nothing;
//! - while `prefix_epoch` is unchanged, each rendered prompt extends the previous one.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rkllm::chat::{
    Bos, ChatError, ContextBudget, Conversation, Gemma2Template, Message, Role,
    SystemStyle, TrimPolicy,
};

/// Python's `str.strip()`: Unicode `White_Space` plus U+001C..U+001F, as the Gemma templates
/// trim (the crate's own implementation is private).
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

const GENERATION_PROMPT: &str = "<start_of_turn>model\n";

#[derive(Arbitrary, Debug)]
struct Case {
    style: u8,
    omit_bos: bool,
    messages: Vec<(u8, String)>,
    ops: Vec<Op>,
    budget: Option<(u16, u16)>,
    chunked: Option<f32>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    SetSystem(String),
    ClearSystem,
    PushUser(String),
    PushAssistant(String),
    Pop,
    Clear,
    Style(u8),
    Render(bool),
}

fn style(n: u8) -> SystemStyle {
    [
        SystemStyle::Merge,
        SystemStyle::SystemGemma2,
        SystemStyle::Turn,
        SystemStyle::Strict,
    ][usize::from(n % 4)]
}

fn role(n: u8) -> Role {
    [Role::System, Role::User, Role::Assistant][usize::from(n % 3)]
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Checks the template alone on one message list.
fn check_template(template: Gemma2Template, messages: &[Message]) {
    let rendered = template.render(messages, false);
    assert_eq!(
        rendered.as_ref().err(),
        template.validate(messages).err().as_ref(),
        "render and validate disagree"
    );
    let Ok(text) = rendered else { return };

    let with_prompt = template
        .render(messages, true)
        .expect("renders with the prompt");
    assert_eq!(with_prompt, format!("{text}{GENERATION_PROMPT}"));

    let included = template
        .with_bos(Bos::Include)
        .render(messages, false)
        .expect("renders with <bos>");
    let omitted = template
        .with_bos(Bos::Omit)
        .render(messages, false)
        .expect("renders without <bos>");
    assert_eq!(included, format!("<bos>{omitted}"));

    // Each turn's trimmed content, in order (the leading system message is placed by style).
    let leading_system = messages.first().is_some_and(|m| m.role == Role::System);
    let mut at = 0;
    for (i, m) in messages.iter().enumerate() {
        let content = if i == 0 && leading_system && template.style() == SystemStyle::SystemGemma2 {
            m.content.as_str()
        } else {
            python_strip(&m.content)
        };
        match text[at..].find(content) {
            Some(found) => at += found + content.len(),
            None => panic!("message {i} ({content:?}) is missing or out of order in {text:?}"),
        }
    }

    if messages.iter().all(|m| !m.content.contains('<')) {
        let system_text = leading_system.then(|| python_strip(&messages[0].content));
        let turns = match template.style() {
            SystemStyle::Strict => messages.len(),
            SystemStyle::Merge | SystemStyle::SystemGemma2 => {
                messages.len() - usize::from(leading_system)
            }
            SystemStyle::Turn => {
                messages.len() - usize::from(system_text.is_some_and(str::is_empty))
            }
        };
        assert_eq!(count(&text, "<start_of_turn>"), turns, "{text:?}");
        assert_eq!(count(&text, "<end_of_turn>"), turns, "{text:?}");
        let bos = usize::from(template.bos() == Bos::Include);
        assert_eq!(count(&text, "<bos>"), bos, "{text:?}");
    }
}

/// The shape every conversation keeps: an optional leading system message, then turns
/// alternating from a user.
fn check_shape(messages: &[Message]) {
    let turns = match messages.first() {
        Some(m) if m.role == Role::System => &messages[1..],
        _ => messages,
    };
    for (i, m) in turns.iter().enumerate() {
        let want = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        assert_eq!(m.role, want, "turn {i} in {messages:?}");
    }
}

fn check_conversation(case: &Case) {
    let mut chat = Conversation::new(style(case.style));
    if let Some((max, reserved)) = case.budget {
        chat = chat.with_budget(ContextBudget::new(u32::from(max), u32::from(reserved)));
    }
    if let Some(drop_fraction) = case.chunked {
        chat = chat.with_trim_policy(TrimPolicy::Chunked { drop_fraction });
    }
    // (epoch, message count, generation prompt, text) of the last successful render.
    let mut last: Option<(u64, usize, bool, String)> = None;
    for op in &case.ops {
        let before: Vec<Message> = chat.messages().to_vec();
        let last_role = before.last().map(|m| m.role);
        match op {
            Op::SetSystem(s) => {
                chat.set_system(s.clone());
                assert_eq!(chat.system(), Some(s.as_str()));
            }
            Op::ClearSystem => {
                chat.clear_system();
                assert_eq!(chat.system(), None);
            }
            Op::PushUser(s) => {
                let ok = chat.push_user(s.clone()).is_ok();
                assert_eq!(ok, last_role != Some(Role::User));
                if !ok {
                    assert_eq!(chat.messages(), &before[..]);
                }
            }
            Op::PushAssistant(s) => {
                let ok = chat.push_assistant(s.clone()).is_ok();
                assert_eq!(ok, last_role == Some(Role::User));
                if !ok {
                    assert_eq!(chat.messages(), &before[..]);
                }
            }
            Op::Pop => {
                let popped = chat.pop();
                assert_eq!(
                    popped.is_some(),
                    matches!(last_role, Some(Role::User | Role::Assistant))
                );
            }
            Op::Clear => chat.clear(),
            Op::Style(n) => chat.set_template(Gemma2Template::new(style(*n))),
            Op::Render(prompt) => {
                let epoch = chat.prefix_epoch();
                let system = chat.system().map(str::to_owned);
                let newest_user = before.iter().rposition(|m| m.role == Role::User);
                let newest_user = newest_user.map(|i| before[i].clone());
                match chat.render(*prompt) {
                    Ok(text) => {
                        let fit = chat.last_fit().expect("render records its fit");
                        let after = chat.messages().to_vec();
                        assert_eq!(fit.dropped_messages % 2, 0);
                        assert_eq!(after.len() + fit.dropped_messages, before.len());
                        assert_eq!(chat.system(), system.as_deref(), "system prompt dropped");
                        let first = usize::from(system.is_some());
                        assert_eq!(
                            &after[first..],
                            &before[first + fit.dropped_messages..],
                            "dropped messages are not the oldest exchanges"
                        );
                        if let Some(user) = newest_user {
                            assert!(after.contains(&user), "newest user message dropped");
                        }
                        if let Some(budget) = chat.budget() {
                            assert!(fit.prompt_tokens <= budget.prompt_limit());
                        }
                        assert_eq!(fit.prefix_epoch, chat.prefix_epoch());
                        assert_eq!(
                            fit.dropped_messages == 0,
                            chat.prefix_epoch() == epoch,
                            "prefix epoch must change exactly when history is dropped"
                        );
                        let again = chat.fit().expect("a fitted conversation fits");
                        assert_eq!(again.dropped_messages, 0);
                        assert_eq!(again.prompt_tokens, fit.prompt_tokens);

                        if let Some((e, n, p, prev)) = &last {
                            // A prompt with the generation prompt asks for the reply to its
                            // last user turn: the reply extends it, the same history without
                            // the generation prompt does not, and it is not a prompt to extend
                            // when it does not end with a user turn.
                            let prompt_extended =
                                !*p || (after.len() > *n && after[*n - 1].role == Role::User);
                            if *e == chat.prefix_epoch() && prompt_extended {
                                assert!(
                                    text.starts_with(prev.as_str()),
                                    "epoch {e} unchanged but {prev:?} is not a prefix of {text:?}"
                                );
                            }
                        }
                        last = Some((chat.prefix_epoch(), after.len(), *prompt, text));
                    }
                    Err(rkllm::Error::Chat(ChatError::MessageTooLong { .. })) => {
                        assert_eq!(chat.messages(), &before[..], "a failed fit dropped history");
                    }
                    Err(rkllm::Error::Chat(_)) => {}
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
        }
        check_shape(chat.messages());
    }
}

fuzz_target!(|case: Case| {
    let messages: Vec<Message> = case
        .messages
        .iter()
        .take(16)
        .map(|(r, content)| Message::new(role(*r), content.clone()))
        .collect();
    let bos = if case.omit_bos {
        Bos::Omit
    } else {
        Bos::Include
    };
    check_template(
        Gemma2Template::new(style(case.style)).with_bos(bos),
        &messages,
    );
    check_conversation(&case);
});
