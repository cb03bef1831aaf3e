//! Conversations from role/content messages, as an OpenAI-style server receives them, and
//! budgets taken from the model's context.

mod common;

use rkllm::chat::{ChatError, ContextBudget, Conversation, Message, Role, SystemStyle};
use rkllm::mock::MockModel;
use rkllm::{ErrorKind, GenerateOptions};

/// Messages as a request body carries them: role words and contents.
fn parse(request: &[(&str, &str)]) -> Result<Vec<Message>, ChatError> {
    request
        .iter()
        .map(|(role, content)| Message::parse(role, *content))
        .collect()
}

fn from_request(style: SystemStyle, request: &[(&str, &str)]) -> Result<Conversation, ChatError> {
    Conversation::from_messages(style, parse(request)?)
}

#[test]
fn role_words_parse_with_developer_as_system_and_unknown_roles_named() {
    for (word, role) in [
        ("system", Role::System),
        ("developer", Role::System),
        ("user", Role::User),
        ("assistant", Role::Assistant),
        ("model", Role::Assistant),
    ] {
        assert_eq!(word.parse::<Role>(), Ok(role), "{word}");
    }
    for bad in ["tool", "function", "User", "", "system "] {
        let err = bad.parse::<Role>().unwrap_err();
        assert_eq!(err, ChatError::UnknownRole(bad.to_owned()));
        let text = err.to_string();
        assert!(text.contains(&format!("`{bad}`")), "{text}");
        assert!(text.contains("developer"), "{text}");
        assert_eq!(rkllm::Error::from(err).kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        parse(&[("user", "hi"), ("tool", "{}")]),
        Err(ChatError::UnknownRole("tool".into()))
    );
}

#[test]
fn system_and_developer_messages_merge_in_order_into_one_system_prompt() {
    let chat = from_request(
        SystemStyle::Merge,
        &[
            ("system", "You are terse."),
            ("user", "Hi."),
            ("developer", "Answer in French."),
            ("assistant", "Salut."),
            ("system", "Never use emoji."),
            ("user", "Bye."),
        ],
    )
    .unwrap();
    assert_eq!(
        chat.system(),
        Some("You are terse.\n\nAnswer in French.\n\nNever use emoji.")
    );
    let turns: Vec<_> = chat.messages()[1..]
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        turns,
        [
            (Role::User, "Hi."),
            (Role::Assistant, "Salut."),
            (Role::User, "Bye.")
        ]
    );
}

#[test]
fn consecutive_messages_of_one_role_merge_with_a_blank_line() {
    let mut chat = from_request(
        SystemStyle::Merge,
        &[
            ("user", "First question."),
            ("user", "  Second one.  "),
            ("assistant", "One answer."),
            ("assistant", "Another."),
            ("user", "Thanks."),
            ("system", "Be kind."), // moved to the system prompt: the users around it join
            ("user", "Really."),
        ],
    )
    .unwrap();
    assert_eq!(chat.messages().len(), 4); // system, user, assistant, user
    assert_eq!(
        chat.render(true).unwrap(),
        "<bos><start_of_turn>user\nBe kind.\n\nFirst question.\n\n  Second one.<end_of_turn>\n\
         <start_of_turn>model\nOne answer.\n\nAnother.<end_of_turn>\n\
         <start_of_turn>user\nThanks.\n\nReally.<end_of_turn>\n\
         <start_of_turn>model\n"
    );
}

#[test]
fn merged_conversations_render_like_hand_built_ones_in_every_style_that_allows_them() {
    let request = [
        ("system", "A"),
        ("developer", "B"),
        ("user", "u1"),
        ("user", "u2"),
        ("assistant", "a1"),
        ("user", "u3"),
    ];
    for style in [
        SystemStyle::Merge,
        SystemStyle::Turn,
        SystemStyle::SystemGemma2,
    ] {
        let mut built = from_request(style, &request).unwrap();
        let mut by_hand = Conversation::new(style);
        by_hand.set_system("A\n\nB");
        by_hand.push_user("u1\n\nu2").unwrap();
        by_hand.push_assistant("a1").unwrap();
        by_hand.push_user("u3").unwrap();
        assert_eq!(built.messages(), by_hand.messages(), "{style:?}");
        assert_eq!(
            built.render(true).unwrap(),
            by_hand.render(true).unwrap(),
            "{style:?}"
        );
    }
}

#[test]
fn the_template_checks_the_result_when_it_is_built() {
    // An assistant before any user: the index is the request's.
    assert_eq!(
        from_request(
            SystemStyle::Merge,
            &[("system", "s"), ("assistant", "hello"), ("user", "hi")]
        )
        .unwrap_err(),
        ChatError::RolesMustAlternate { index: 1 }
    );
    // Strict (the official template) has no system prompt; SystemGemma2 needs one.
    assert_eq!(
        from_request(SystemStyle::Strict, &[("developer", "s"), ("user", "hi")]).unwrap_err(),
        ChatError::SystemRoleNotSupported
    );
    assert!(from_request(SystemStyle::Strict, &[("user", "a"), ("user", "b")]).is_ok());
    assert_eq!(
        from_request(SystemStyle::SystemGemma2, &[("user", "hi")]).unwrap_err(),
        ChatError::MissingSystem
    );
    // No user message at all.
    for style in [SystemStyle::Merge, SystemStyle::Turn] {
        assert_eq!(
            from_request(style, &[("system", "s")]).unwrap_err(),
            ChatError::NoUserMessage
        );
        assert_eq!(from_request(style, &[]).unwrap_err(), ChatError::Empty);
    }
}

#[test]
fn a_reply_needs_the_users_message_last() {
    let mut chat = from_request(
        SystemStyle::Merge,
        &[("user", "Hi."), ("assistant", "Hello! How can I help?")],
    )
    .unwrap();
    assert!(!chat.awaits_reply());
    let err = chat.take_last_user().unwrap_err();
    assert_eq!(
        err,
        ChatError::LastMessageNotFromUser {
            role: Role::Assistant
        }
    );
    assert!(err.to_string().contains("from the assistant"), "{err}");
    assert_eq!(chat.messages().len(), 2, "unchanged by the refusal");

    chat.push_user("Tell me a joke.").unwrap();
    assert!(chat.awaits_reply());
    assert_eq!(chat.take_last_user().unwrap(), "Tell me a joke.");
    assert_eq!(chat.messages().len(), 2);

    let mut only_system = from_request(SystemStyle::SystemGemma2, &[("system", "s")]).unwrap();
    assert_eq!(
        only_system.take_last_user().unwrap_err(),
        ChatError::NoUserMessage
    );
}

#[test]
fn a_request_is_answered_through_a_session() {
    let model = common::load(&MockModel::new().answer("Four."));
    let mut session = model.session().unwrap();
    let mut chat = from_request(
        SystemStyle::Merge,
        &[
            ("system", "You are terse."),
            ("developer", "Use digits."),
            ("user", "Hi."),
            ("user", "What is 2 + 2?"),
        ],
    )
    .unwrap();
    let user = chat.take_last_user().unwrap();
    let reply = session
        .chat(&mut chat, user, &GenerateOptions::new())
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(reply.text, "Four.");
    let roles: Vec<_> = chat.messages().iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
    assert_eq!(chat.messages()[1].content, "Hi.\n\nWhat is 2 + 2?");
}

#[test]
fn a_budget_from_the_models_context_keeps_room_for_a_prompt() {
    for (context, new_tokens, limit) in [
        (4096, Some(512), 3584),
        (4096, Some(2048), 2048),
        (4096, Some(4096), 2048),
        (4096, Some(u32::MAX), 2048),
        (4096, None, 3072),
        (4096, Some(0), 4096),
        (1, Some(1), 1),
        (0, None, 0),
    ] {
        let budget = ContextBudget::for_context(context, new_tokens);
        assert_eq!(budget.max_context_len, context);
        assert_eq!(
            budget.prompt_limit(),
            limit,
            "{context} with {new_tokens:?} new tokens"
        );
        assert_eq!(
            budget.prompt_limit() + budget.reserved_new_tokens,
            context,
            "the reserve and the prompt share the context"
        );
    }
    // An explicit budget is taken as given, even when it leaves no room.
    assert_eq!(ContextBudget::new(100, 100).prompt_limit(), 0);
    assert_eq!(ContextBudget::new(100, 500).prompt_limit(), 0);
}

#[test]
fn a_conversation_without_a_budget_takes_the_default_and_keeps_its_own() {
    let model_default = ContextBudget::for_context(64, Some(16));
    let mut chat = from_request(SystemStyle::Merge, &[("user", &"x".repeat(100))]).unwrap();
    assert_eq!(chat.budget(), None);
    assert!(chat.fit().is_ok(), "without a budget nothing is refused");
    assert_eq!(chat.budget_or_insert(model_default), model_default);
    assert_eq!(chat.budget(), Some(model_default));
    // Now the over-long prompt is a clear error of kind TooLong, not a runtime failure.
    let err = chat.fit().unwrap_err();
    assert!(
        matches!(
            err,
            rkllm::Error::Chat(ChatError::MessageTooLong {
                needed: 109,
                available: 48
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::TooLong);

    let own = ContextBudget::new(1000, 100);
    chat.set_budget(Some(own));
    assert_eq!(chat.budget_or_insert(model_default), own);
    assert_eq!(chat.fit().unwrap().prompt_tokens, 109);
}

#[test]
fn token_counts_share_one_type() {
    // The builder, the budget, a fit and the run options all count tokens in u32.
    let context: u32 = 4096;
    let reply: u32 = 256;
    let _builder = rkllm::Model::builder("unused.rkllm")
        .max_context_len(context)
        .max_new_tokens(reply);
    let budget = ContextBudget::new(context, reply);
    let _options = GenerateOptions::new().max_tokens(reply);
    let mut chat = Conversation::new(SystemStyle::Merge).with_budget(budget);
    chat.push_user("hello").unwrap();
    let fit = chat.fit().unwrap();
    let left: u32 = budget.prompt_limit() - fit.prompt_tokens;
    assert_eq!(left, 4096 - 256 - (1 + 5 + 5 + 3));
}

#[test]
fn a_second_system_message_in_system_gemma2_carries_the_templates_text() {
    use rkllm::chat::Gemma2Template;
    let template = Gemma2Template::new(SystemStyle::SystemGemma2);
    for (messages, index) in [
        (
            vec![
                Message::system("a"),
                Message::system("b"),
                Message::user("c"),
            ],
            1,
        ),
        (
            vec![
                Message::system("a"),
                Message::user("b"),
                Message::assistant("c"),
                Message::system("d"),
                Message::user("e"),
            ],
            3,
        ),
    ] {
        let err = template.render(&messages, true).unwrap_err();
        assert_eq!(err, ChatError::SecondSystem { index });
        let text = err.to_string();
        assert!(
            text.starts_with("Conversation roles must alternate user/assistant/user/assistant/..."),
            "{text}"
        );
        assert!(text.contains(&format!("index {index}")), "{text}");
        assert!(text.contains("first message"), "the fix is named: {text}");
    }
    // The other styles keep their own rule for a misplaced system message.
    let messages = [
        Message::system("a"),
        Message::system("b"),
        Message::user("c"),
    ];
    assert_eq!(
        Gemma2Template::new(SystemStyle::Merge).render(&messages, true),
        Err(ChatError::MisplacedSystem { index: 1 })
    );
}
