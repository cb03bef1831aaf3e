//! `Conversation`: history, rendering, and the context budget.

mod chat_common;

use rkllm::chat::{ChatError, ContextBudget, Conversation, SystemStyle, TrimPolicy};

/// A Merge conversation whose estimated counts are easy to follow by hand:
/// BOS 1 + system "Be brief." (9 bytes + 1 joiner) + turns (5 + content bytes each) + 3.
fn sample(budget: ContextBudget) -> Conversation {
    let mut chat = Conversation::new(SystemStyle::Merge).with_budget(budget);
    chat.set_system("Be brief.");
    chat.push_user("hello").unwrap(); // 10
    chat.push_assistant("world!").unwrap(); // 11
    chat.push_user("again").unwrap(); // 10
    chat
}
const SAMPLE_TOKENS: u32 = 1 + 10 + 10 + 11 + 10 + 3;

#[test]
fn chat_conversation_push_enforces_alternation() {
    let mut chat = Conversation::default();
    assert_eq!(
        chat.push_assistant("first"),
        Err(ChatError::RolesMustAlternate { index: 0 })
    );
    chat.set_system("sys");
    assert!(chat.push_assistant("still no user").is_err());
    chat.push_user("a").unwrap();
    assert_eq!(
        chat.push_user("b"),
        Err(ChatError::RolesMustAlternate { index: 2 })
    );
    chat.push_assistant("c").unwrap();
    assert!(chat.push_assistant("d").is_err());
    assert_eq!(chat.messages().len(), 3);
    assert_eq!(chat.system(), Some("sys"));
}

#[test]
fn chat_conversation_estimate_boundary_one_under_and_one_over() {
    let reserve = 8;
    let mut fits = sample(ContextBudget::new(SAMPLE_TOKENS + reserve, reserve));
    let fit = fits.fit().unwrap();
    assert_eq!(
        (fit.dropped_messages, fit.prompt_tokens, fit.exact),
        (0, SAMPLE_TOKENS, false)
    );
    assert_eq!(fits.messages().len(), 4);

    let mut over = sample(ContextBudget::new(SAMPLE_TOKENS + reserve - 1, reserve));
    let fit = over.fit().unwrap();
    assert_eq!(
        (fit.dropped_messages, fit.prompt_tokens),
        (2, SAMPLE_TOKENS - 21)
    );
    assert_eq!(over.dropped_messages(), 2);
    assert_eq!(
        over.render(true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nagain<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn chat_conversation_newest_message_too_long_is_an_error_and_drops_nothing() {
    // Smallest possible prompt: 1 + 10 + 10 + 3 = 24.
    let mut chat = sample(ContextBudget::new(23, 0));
    let before = chat.prefix_epoch();
    let err = chat.fit().unwrap_err();
    assert!(
        matches!(
            err,
            rkllm::Error::Chat(ChatError::MessageTooLong {
                needed: 24,
                available: 23
            })
        ),
        "{err:?}"
    );
    assert_eq!(chat.messages().len(), 4);
    assert_eq!(chat.prefix_epoch(), before);
    // One more token and it fits, keeping the system prompt and the newest user message.
    chat.set_budget(Some(ContextBudget::new(24, 0)));
    assert_eq!(chat.fit().unwrap().prompt_tokens, 24);
    assert_eq!(chat.system(), Some("Be brief."));
    assert_eq!(chat.messages().last().unwrap().content, "again");
    // Reserving the whole context leaves nothing for the prompt.
    chat.set_budget(Some(ContextBudget::new(100, 100)));
    assert!(chat.fit().is_err());
}

#[test]
fn chat_conversation_drops_whole_exchanges_oldest_first() {
    let mut chat = Conversation::new(SystemStyle::Turn);
    for i in 0..5 {
        chat.push_user(format!("question {i}")).unwrap();
        chat.push_assistant(format!("answer {i}")).unwrap();
    }
    chat.push_user("last").unwrap();
    let full = chat.fit().unwrap().prompt_tokens;
    // Each exchange costs (5 + 10) + (5 + 8) = 28 in the estimate.
    chat.set_budget(Some(ContextBudget::new(full - 28 * 2, 0)));
    let fit = chat.fit().unwrap();
    assert_eq!(fit.dropped_messages, 4);
    assert_eq!(chat.messages()[0].content, "question 2");
    assert_eq!(chat.messages().len(), 7);
}

#[test]
fn chat_conversation_chunked_policy_drops_in_larger_steps() {
    let build = |policy| {
        let mut chat = Conversation::new(SystemStyle::Merge).with_trim_policy(policy);
        for i in 0..8 {
            chat.push_user(format!("q{i}")).unwrap();
            chat.push_assistant(format!("a{i}")).unwrap();
        }
        chat.push_user("now").unwrap();
        let full = chat.fit().unwrap().prompt_tokens;
        chat.set_budget(Some(ContextBudget::new(full - 1, 0)));
        chat
    };
    let mut minimal = build(TrimPolicy::MinimalExchanges);
    assert_eq!(minimal.fit().unwrap().dropped_messages, 2);
    let mut chunked = build(TrimPolicy::Chunked { drop_fraction: 0.5 });
    assert_eq!(chunked.fit().unwrap().dropped_messages, 8); // half of 8 exchanges
                                                            // Room was made: the next exchange fits without another drop (stable prefix).
    let epoch = chunked.prefix_epoch();
    chunked.push_assistant("ok").unwrap();
    chunked.push_user("more").unwrap();
    assert_eq!(chunked.fit().unwrap().dropped_messages, 0);
    assert_eq!(chunked.prefix_epoch(), epoch);
    // Out-of-range fractions are clamped, NaN means "just enough".
    let mut nan = build(TrimPolicy::Chunked {
        drop_fraction: f32::NAN,
    });
    assert_eq!(nan.fit().unwrap().dropped_messages, 2);
    let mut all = build(TrimPolicy::Chunked { drop_fraction: 7.0 });
    assert_eq!(all.fit().unwrap().dropped_messages, 16);
}

#[test]
fn chat_conversation_prefix_epoch_tracks_prefix_changes() {
    let mut chat = sample(ContextBudget::new(1000, 0));
    let e0 = chat.prefix_epoch();
    let p0 = chat.render(true).unwrap();
    chat.push_assistant("  sure  ").unwrap();
    chat.push_user("next").unwrap();
    let p1 = chat.render(true).unwrap();
    assert_eq!(chat.prefix_epoch(), e0, "adding messages keeps the prefix");
    assert!(
        p1.starts_with(&p0),
        "the previous prompt (with its generation prompt) is a prefix"
    );

    chat.set_system("Be brief.");
    assert_eq!(chat.prefix_epoch(), e0, "same system text: no change");
    chat.set_system("Be verbose.");
    let e1 = chat.prefix_epoch();
    assert_ne!(e1, e0);
    assert_eq!(chat.pop().unwrap().content, "next");
    let e2 = chat.prefix_epoch();
    assert_ne!(e2, e1);
    chat.set_budget(Some(ContextBudget::new(40, 0))); // 56 tokens; 35 after one drop
    assert!(chat.fit().unwrap().dropped_messages > 0);
    assert_ne!(chat.prefix_epoch(), e2);
    assert_eq!(chat.last_fit().unwrap().prefix_epoch, chat.prefix_epoch());
    chat.clear();
    assert!(chat.pop().is_none());
    assert_eq!(chat.messages().len(), 1);
}

#[test]
fn chat_conversation_style_rules_apply() {
    let mut strict = Conversation::new(SystemStyle::Strict);
    strict.set_system("pirate");
    strict.push_user("hi").unwrap();
    let err = strict.render(true).unwrap_err();
    assert!(
        err.to_string().contains("System role not supported"),
        "{err}"
    );
    strict.clear_system();
    assert!(strict.render(true).is_ok());

    let mut sg2 = Conversation::new(SystemStyle::SystemGemma2);
    sg2.push_user("hi").unwrap();
    assert!(matches!(
        sg2.render(true),
        Err(rkllm::Error::Chat(ChatError::MissingSystem))
    ));
    sg2.set_system("");
    assert_eq!(
        sg2.render(true).unwrap(),
        "<bos>\n<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    );

    let mut empty = Conversation::default();
    assert!(matches!(
        empty.render(true),
        Err(rkllm::Error::Chat(ChatError::Empty))
    ));
    empty.set_system("only a system prompt");
    assert!(matches!(
        empty.render(true),
        Err(rkllm::Error::Chat(ChatError::NoUserMessage))
    ));
}

#[cfg(feature = "tokenizer")]
mod with_tokenizer {
    use super::chat_common;
    use rkllm::chat::{ContextBudget, Conversation, Gemma2Template, SystemStyle};

    /// Contents chosen to stress how text runs join: newline runs, tabs, inner spaces,
    /// trailing newlines in the untrimmed SystemGemma2 preamble, U+001F, non-ASCII, control
    /// token text.
    const CONTENTS: [&str; 8] = [
        "Hello",
        "  line one\n\n  line two  \n\tline three\n",
        "\u{1f}Grüß dich! 你好，世界 🙂\u{1c}",
        "room 101 at 3:45pm",
        "print('<start_of_turn>model')",
        "\n\n\n",
        "a\n",
        "<table>ok</table>  ",
    ];

    fn build(style: SystemStyle, system: Option<&str>, turns: usize) -> Conversation {
        let tok = chat_common::gemma_tokenizer().expect("tokenizer");
        let mut chat = Conversation::new(style).with_tokenizer(tok);
        if let Some(s) = system {
            chat.set_system(s);
        }
        for i in 0..turns {
            let content = CONTENTS[i % CONTENTS.len()];
            if i % 2 == 0 {
                chat.push_user(content).unwrap();
            } else {
                chat.push_assistant(content).unwrap();
            }
        }
        chat
    }

    #[test]
    fn chat_conversation_counts_equal_token_mode_length() {
        if chat_common::gemma_tokenizer().is_none() {
            return;
        }
        let systems = [
            None,
            Some("Be brief."),
            Some("  Tu es un assistant.\n\n"),
            Some(" \n"),
        ];
        for style in [
            SystemStyle::Merge,
            SystemStyle::Turn,
            SystemStyle::SystemGemma2,
            SystemStyle::Strict,
        ] {
            for system in systems {
                let legal = match style {
                    SystemStyle::Strict => system.is_none(),
                    SystemStyle::SystemGemma2 => system.is_some(),
                    _ => true,
                };
                if !legal {
                    continue;
                }
                for turns in [1, 2, 5, 9] {
                    let mut chat = build(style, system, turns);
                    let counted = chat.fit().unwrap();
                    let ids = chat.encode(true).unwrap();
                    assert!(counted.exact);
                    assert_eq!(
                        counted.prompt_tokens as usize,
                        ids.len(),
                        "{style:?}, system {system:?}, {turns} turns"
                    );
                }
            }
        }
    }

    #[test]
    fn chat_conversation_tokenizer_boundary_one_under_and_one_over() {
        let Some(tok) = chat_common::gemma_tokenizer() else {
            return;
        };
        for (style, system) in [
            (SystemStyle::Merge, Some("Answer briefly.")),
            (SystemStyle::Turn, Some("Answer briefly.")),
            (SystemStyle::SystemGemma2, Some("Answer briefly.\n")),
            (SystemStyle::Strict, None),
        ] {
            let reserve = 100;
            let base = build(style, system, 5);
            let all = tok
                .encode(&Gemma2Template::new(style), base.messages(), true)
                .unwrap()
                .len() as u32;
            let mut fits = base
                .clone()
                .with_budget(ContextBudget::new(all + reserve, reserve));
            assert_eq!(fits.encode(true).unwrap().len() as u32, all, "{style:?}");
            assert_eq!(fits.last_fit().unwrap().dropped_messages, 0);

            let mut over = base.with_budget(ContextBudget::new(all + reserve - 1, reserve));
            let ids = over.encode(true).unwrap();
            let fit = over.last_fit().unwrap();
            assert_eq!(fit.dropped_messages, 2, "{style:?}");
            assert_eq!(fit.prompt_tokens as usize, ids.len());
            assert!((ids.len() as u32) < all);
            assert_eq!(over.system(), system);
        }
    }

    #[test]
    fn chat_conversation_token_prompt_extends_previous_prompt() {
        if chat_common::gemma_tokenizer().is_none() {
            return;
        }
        let mut chat = build(SystemStyle::Merge, Some("Be kind."), 3);
        let before = chat.encode(true).unwrap();
        chat.push_assistant(" Sure thing. ").unwrap();
        chat.push_user("thanks").unwrap();
        let after = chat.encode(true).unwrap();
        assert!(after.starts_with(&before));
    }

    #[test]
    fn chat_conversation_encode_needs_a_tokenizer() {
        let mut chat = Conversation::default();
        chat.push_user("hi").unwrap();
        assert!(matches!(
            chat.encode(true),
            Err(rkllm::Error::Tokenizer { .. })
        ));
    }
}
