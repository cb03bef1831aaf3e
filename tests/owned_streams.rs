//! Owned streams (a run and a chat turn that own their session), finish reasons a server
//! maps as-is, prompt token counts, empty tokens, and embeddings.

#[cfg(feature = "tokenizer")]
mod chat_common;
mod common;

use std::time::Duration;

use rkllm::chat::{ChatSession, ChatStream, Conversation, SystemStyle};
use rkllm::mock::MockModel;
use rkllm::{FinishReason, GenerateOptions, Input, Session, TokenStream};

/// Returns a run from a function: the borrowing stream could not (E0515).
fn start(session: Session, prompt: &str) -> TokenStream {
    session
        .into_generate(prompt, &GenerateOptions::new())
        .expect("the run starts")
}

#[test]
fn a_generation_is_returned_from_a_function_and_moved_to_a_thread() {
    let model = common::load(&MockModel::new().answer("Owned and moved"));
    let stream = start(model.session().unwrap(), "Hi");
    // The stream holds the session: nobody else gets it meanwhile.
    assert!(matches!(model.session(), Err(rkllm::Error::Busy)));
    let (text, reason, session) = std::thread::spawn(move || {
        let mut stream = stream;
        let (text, _) = common::collect_text(stream.by_ref());
        let reason = stream.finish_reason().cloned();
        (text, reason, stream.into_session())
    })
    .join()
    .unwrap();
    assert_eq!(text, "Owned and moved");
    assert_eq!(reason, Some(FinishReason::Finished));
    // The session came back and runs again.
    let (again, session) = session
        .into_generate("Again", &GenerateOptions::new())
        .unwrap()
        .complete_with_session();
    assert_eq!(again.unwrap().text, "Owned and moved");
    drop(session);
    assert!(model.session().is_ok());
}

#[test]
fn dropping_an_owned_stream_aborts_its_run_and_frees_the_session() {
    let model = common::load(
        &MockModel::new()
            .answer("one two three four five six seven eight nine ten eleven twelve")
            .decode_seconds_per_token(0.05),
    );
    let mut stream = start(model.session().unwrap(), "Count");
    let first = stream.next().unwrap().unwrap();
    assert!(!first.text.is_empty());
    drop(stream);
    // Dropped mid-run: the run was stopped and the session returned to the model.
    let session = model.session_wait(Duration::from_secs(5)).unwrap();
    let mut stream = session
        .into_generate("Count", &GenerateOptions::new())
        .unwrap();
    stream.next().unwrap().unwrap();
    stream.abort();
    assert!(stream.by_ref().all(|t| t.is_ok()));
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
    let _session = stream.into_session();
}

#[test]
fn into_session_stops_a_run_that_is_not_over() {
    let model = common::load(
        &MockModel::new()
            .answer("a b c d e f g h i j k l m n o p")
            .decode_seconds_per_token(0.05),
    );
    let mut stream = start(model.session().unwrap(), "x");
    stream.next().unwrap().unwrap();
    let mut session = stream.into_session();
    let done = session.complete("y", &GenerateOptions::new()).unwrap();
    assert_eq!(done.finish_reason, FinishReason::Finished);
}

#[test]
fn a_refused_run_gives_the_session_back() {
    let model = common::load(&MockModel::new());
    let refused = model
        .session()
        .unwrap()
        .into_generate("", &GenerateOptions::new())
        .unwrap_err();
    assert!(matches!(refused.error(), rkllm::Error::InvalidInput(_)));
    let mut session = refused.into_returned();
    assert!(session.complete("Hi", &GenerateOptions::new()).is_ok());
    // `?` turns it into the error.
    fn with_question_mark(session: Session) -> rkllm::Result<TokenStream> {
        Ok(session.into_generate("", &GenerateOptions::new())?)
    }
    assert!(matches!(
        with_question_mark(session),
        Err(rkllm::Error::InvalidInput(_))
    ));
}

#[test]
fn a_chat_turn_owns_its_session_and_conversation_and_records_the_reply() {
    let model = common::load(&MockModel::new().turns(["Hello!", "Fine, thanks."]));
    let dir = common::temp_path("owned-chat-cache");
    let mut chat = ChatSession::new(model.session().unwrap());
    chat.enable_prompt_cache(&dir).unwrap();
    let mut conversation = Conversation::new(SystemStyle::Merge);
    conversation.set_system("Be brief.");
    let stream = chat
        .into_chat(conversation, "Hi", &GenerateOptions::new())
        .unwrap();
    let (text, reason, (chat, conversation)) = std::thread::spawn(move || {
        let mut stream = stream;
        let (text, _) = common::collect_text(stream.by_ref());
        let reason = stream.finish_reason().cloned();
        (text, reason, stream.into_parts())
    })
    .join()
    .unwrap();
    assert_eq!(text, "Hello!");
    assert_eq!(reason, Some(FinishReason::EndOfTurn));
    let roles: Vec<_> = conversation
        .messages()
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(roles, ["Be brief.", "Hi", "Hello!"]);
    // The second turn runs through the rolling cache the first one left in the session.
    let (done, (chat, conversation)) = chat
        .into_chat(conversation, "How are you?", &GenerateOptions::new())
        .unwrap()
        .complete_with_parts();
    assert_eq!(done.unwrap().text, "Fine, thanks.");
    assert_eq!(conversation.messages().len(), 5);
    assert_eq!(
        chat.cache_stats().map(|s| (s.reused, s.rebuilt)),
        Some((1, 1))
    );
    drop(chat);
    std::fs::remove_dir(&dir).ok();
}

#[test]
fn a_dropped_chat_turn_keeps_what_was_generated_and_a_refused_one_changes_nothing() {
    let model = common::load(
        &MockModel::new()
            .answer("alpha beta gamma delta epsilon zeta eta theta")
            .decode_seconds_per_token(0.05),
    );
    let chat = ChatSession::new(model.session().unwrap());
    let conversation = Conversation::new(SystemStyle::Merge);
    let mut stream = ChatStream::new(chat, conversation, "Go", &GenerateOptions::new()).unwrap();
    let first = stream.next().unwrap().unwrap();
    let (chat, conversation) = stream.into_parts();
    let kept = &conversation.messages()[1].content;
    assert!(kept.starts_with(first.text.trim()), "kept {kept:?}");
    assert!(kept.len() < "alpha beta gamma delta epsilon zeta eta theta".len());
    let before = conversation.messages().len();
    let refused = chat
        .into_chat(conversation, "Again", &GenerateOptions::new().max_tokens(0))
        .unwrap_err();
    assert!(matches!(
        refused.error(),
        rkllm::Error::InvalidParameter { .. }
    ));
    let (_chat, conversation) = refused.into_returned();
    assert_eq!(conversation.messages().len(), before);
}

#[test]
fn finish_reasons_map_to_openai_names() {
    let model = common::load(&MockModel::new().answer("one two three, four"));
    let mut session = model.session().unwrap();
    let mut run = |opts: GenerateOptions| session.complete("q", &opts).unwrap().finish_reason;
    let end = run(GenerateOptions::gemma());
    assert_eq!(end, FinishReason::EndOfTurn);
    assert_eq!(end.openai(), "stop");
    let length = run(GenerateOptions::new().max_tokens(2));
    assert_eq!(length, FinishReason::MaxTokens);
    assert_eq!(length.openai(), "length");
    let stop = run(GenerateOptions::new().stop_string(","));
    assert_eq!(stop, FinishReason::StopString(",".into()));
    assert_eq!(stop.openai(), "stop");
    let finished = run(GenerateOptions::new());
    assert_eq!(finished, FinishReason::Finished);
    assert_eq!(finished.openai(), "stop");
    assert_eq!(FinishReason::Aborted.openai(), "abort");
    assert_eq!(FinishReason::Error.openai(), "error");
    // A stop id of the caller's own stays a StopToken.
    let first_id = session
        .complete("q", &GenerateOptions::new())
        .unwrap()
        .token_ids[1];
    let own = session
        .complete("q", &GenerateOptions::new().stop_token(first_id))
        .unwrap()
        .finish_reason;
    assert_eq!(own, FinishReason::StopToken(first_id));
}

#[test]
fn tokens_with_empty_text_are_not_yielded_but_their_ids_are_kept() {
    // The mock spells non-ASCII characters as byte tokens: the first bytes of each
    // character carry no complete text.
    let answer = "héllo wörld ✓";
    let model = common::load(&MockModel::new().answer(answer));
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    let tokens: Vec<_> = stream.by_ref().map(|t| t.unwrap()).collect();
    assert!(tokens.iter().all(|t| !t.text.is_empty()));
    let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(text, answer);
    let ids = stream.token_ids().to_vec();
    assert!(
        ids.len() > tokens.len(),
        "{} ids, {} tokens",
        ids.len(),
        tokens.len()
    );
    assert_eq!(stream.timings().generated_tokens, ids.len());
    drop(stream);
    let done = session.complete("q", &GenerateOptions::new()).unwrap();
    assert_eq!(done.token_ids, ids);
}

#[test]
fn prompt_token_counts_are_exact_for_tokens_and_marked_when_estimated() {
    let model = common::load(&MockModel::new().answer("ok"));
    let mut session = model.session().unwrap();
    let text = session
        .complete("Twelve bytes", &GenerateOptions::new())
        .unwrap();
    assert_eq!(text.timings.prompt_tokens, Some(3));
    assert!(text.timings.prompt_tokens_estimated);
    let ids = common::ids_of(rkllm::mock::BuiltinTokenizer.encode("Four tokens here"));
    let tokens = session
        .complete(Input::tokens(ids.clone()), &GenerateOptions::new())
        .unwrap();
    assert_eq!(tokens.timings.prompt_tokens, Some(ids.len()));
    assert!(!tokens.timings.prompt_tokens_estimated);
}

#[cfg(feature = "tokenizer")]
#[test]
fn a_chat_turn_with_a_tokenizer_counts_its_prompt_exactly() {
    let Some(tokenizer) = chat_common::gemma_tokenizer() else {
        return;
    };
    let mock = MockModel::new()
        .answer("Hi")
        .tokenizer_json(std::fs::canonicalize(chat_common::tokenizer_path()).unwrap());
    let model = common::load(&mock);
    let mut session = model.session().unwrap();
    let mut exact = Conversation::new(SystemStyle::Merge).with_tokenizer(tokenizer.clone());
    let done = session
        .chat(&mut exact, "Hello there", &GenerateOptions::new())
        .unwrap()
        .complete()
        .unwrap();
    exact.pop();
    let ids = exact.encode(true).unwrap();
    assert_eq!(done.timings.prompt_tokens, Some(ids.len()));
    assert!(!done.timings.prompt_tokens_estimated);
    let mut text_mode = Conversation::new(SystemStyle::Merge);
    let done = session
        .chat(&mut text_mode, "Hello there", &GenerateOptions::new())
        .unwrap()
        .complete()
        .unwrap();
    assert!(done.timings.prompt_tokens_estimated);
}

#[test]
fn embeddings_are_normalised_mean_pooled_hidden_states() {
    let model = common::load(&MockModel::new().embed_dim(16));
    let mut session = model.session().unwrap();
    let a = session.embed("The cat sat").unwrap();
    assert_eq!(a.len(), 16);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    // Pooling by hand from the hidden states gives the same vector.
    let states = session.hidden_states("The cat sat").unwrap();
    let mut mean = vec![0f64; 16];
    for t in 0..states.num_tokens() {
        for (m, x) in mean.iter_mut().zip(states.row(t).unwrap()) {
            *m += f64::from(*x);
        }
    }
    let len = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    for (x, m) in a.iter().zip(&mean) {
        assert!((f64::from(*x) - m / len).abs() < 1e-5);
    }
    let batch = session
        .embed_batch(["The cat sat", "A dog barked"])
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0], a);
    assert_ne!(batch[1], a);
}
