//! Token mode end to end: a conversation encoded with the real Gemma 2 tokenizer, sent as
//! token ids to a mock runtime that tokenizes with the same `tokenizer.json`.
#![cfg(all(feature = "mock", feature = "tokenizer"))]

mod chat_common;

use rkllm::chat::{ContextBudget, Conversation, SystemStyle};
use rkllm::mock::{InputKind, MockModel};
use rkllm::{GenerateOptions, Model, Runtime};

#[test]
fn a_token_mode_chat_round_trips_through_the_runtime() {
    let Some(tokenizer) = chat_common::gemma_tokenizer() else {
        return;
    };
    let path = MockModel::new()
        .echo()
        .tokenizer_json(chat_common::tokenizer_path())
        .write_temp_file()
        .unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::SystemGemma2)
        .with_tokenizer(tokenizer)
        .with_budget(ContextBudget::new(4096, 256));
    assert!(chat.has_tokenizer());
    chat.set_system("You are terse.");
    let opts = GenerateOptions::new();
    for user in [
        "Bonjour, ça va? 世界 🙂",
        "And\ttabs,  double spaces\n\nand newlines",
    ] {
        let reply = session
            .chat(&mut chat, user, &opts)
            .unwrap()
            .complete()
            .unwrap();
        assert_eq!(reply.text, user);
    }
    let runs = rkllm::mock::runs_of_model(&path);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.input == InputKind::Token), "{runs:?}");
    // The runtime received exactly the conversation's encoding for the second turn.
    let mut before_reply = chat.clone();
    before_reply.pop();
    assert_eq!(
        runs[1].prompt_tokens,
        before_reply.encode(true).unwrap().len()
    );
}
