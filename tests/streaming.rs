//! Streaming through the public API on the mock runtime.

mod common;

use rkllm::mock::{MockModel, RunFailure};
use rkllm::{Error, FinishReason, GenerateOptions, Input};

#[test]
fn streams_the_answer_token_by_token() {
    let model = common::load(&MockModel::new().answer("Hello there, friend!"));
    let mut session = model.session().unwrap();
    let mut stream = session
        .generate("<bos>hi", &GenerateOptions::new())
        .unwrap();
    let mut text = String::new();
    let mut count = 0;
    for token in stream.by_ref() {
        let token = token.unwrap();
        text.push_str(&token.text);
        count += 1;
    }
    assert_eq!(text, "Hello there, friend!");
    assert!(count > 3, "several tokens, got {count}");
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Finished));
    let end = stream.run_end().unwrap();
    assert!(end.finish_callback);
    assert_eq!(end.return_code, 0);
}

#[test]
fn gemma_options_stop_at_end_of_turn_and_hide_it() {
    let model = common::load(&MockModel::new().answer("Short answer."));
    let mut session = model.session().unwrap();
    let done = session
        .complete("<bos>q", &GenerateOptions::gemma())
        .unwrap();
    assert_eq!(done.text, "Short answer.");
    assert_eq!(done.finish_reason, FinishReason::EndOfTurn);
    assert!(!done.token_ids.contains(&rkllm::gemma::END_OF_TURN));
    assert_eq!(done.timings.generated_tokens, done.token_ids.len());
    assert!(done.timings.time_to_first_token.is_some());
}

#[test]
fn split_utf8_is_reassembled_exactly() {
    let answer = "héllo 世界 🙂, ça va? Ünïcödé ✓";
    let model = common::load(&MockModel::new().answer(answer));
    let mut session = model.session().unwrap();
    let mut text = String::new();
    let mut yielded = 0;
    let mut stream = session.generate("q", &GenerateOptions::gemma()).unwrap();
    for token in stream.by_ref() {
        let token = token.unwrap();
        assert!(!token.text.is_empty(), "a token without text was yielded");
        yielded += 1;
        text.push_str(&token.text);
    }
    assert_eq!(text, answer);
    // The mock sends multibyte characters as byte-fallback tokens, WAITING until complete:
    // those without text are not yielded, but their ids are kept.
    assert!(
        stream.token_ids().len() > yielded,
        "partial characters should have come as tokens without text"
    );
}

#[test]
fn max_tokens_stops_the_run() {
    let model =
        common::load(&MockModel::new().answer("one two three four five six seven eight nine ten"));
    let mut session = model.session().unwrap();
    let done = session
        .complete("q", &GenerateOptions::new().max_tokens(3))
        .unwrap();
    assert_eq!(done.token_ids.len(), 3);
    assert_eq!(done.finish_reason, FinishReason::MaxTokens);
    // The session is usable again at once.
    let again = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(
        again.text,
        "one two three four five six seven eight nine ten"
    );
}

#[test]
fn stop_strings_match_across_tokens_and_are_cut() {
    let model = common::load(&MockModel::new().answer("The answer is 42.\nUser: next question"));
    let mut session = model.session().unwrap();
    let opts = GenerateOptions::gemma().stop_string("\nUser:");
    let mut stream = session.generate("q", &opts).unwrap();
    let (text, ids) = common::collect_text(stream.by_ref());
    assert_eq!(text, "The answer is 42.");
    assert_eq!(
        stream.finish_reason(),
        Some(&FinishReason::StopString("\nUser:".into()))
    );
    assert!(!ids.is_empty());
}

#[test]
fn stop_string_prefix_that_does_not_match_is_released() {
    let model = common::load(&MockModel::new().answer("a b User c"));
    let mut session = model.session().unwrap();
    let done = session
        .complete("q", &GenerateOptions::gemma().stop_string("User:"))
        .unwrap();
    assert_eq!(done.text, "a b User c");
    assert_eq!(done.finish_reason, FinishReason::EndOfTurn);
}

#[test]
fn an_error_mid_stream_is_yielded_after_the_tokens_before_it() {
    let model = common::load(
        &MockModel::new()
            .answer("alpha beta gamma delta epsilon")
            .fail_runs(RunFailure::ErrorAfterTokens { tokens: 3 }),
    );
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    let mut tokens = 0;
    let mut error = None;
    for item in stream.by_ref() {
        match item {
            Ok(_) => tokens += 1,
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(tokens, 3);
    assert!(matches!(error, Some(Error::Run { tokens: 3 })), "{error:?}");
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Error));
    drop(stream);
    // complete() reports it as an error.
    assert!(matches!(
        session.complete("q", &GenerateOptions::new()),
        Err(Error::Run { .. })
    ));
}

#[test]
fn a_failing_run_call_is_an_error() {
    let model = common::load(&MockModel::new().fail_runs(RunFailure::ReturnError));
    let mut session = model.session().unwrap();
    let err = session.complete("q", &GenerateOptions::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Call {
                func: "rkllm_run",
                code: -1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_run_that_returns_without_finish_still_ends_cleanly() {
    let model = common::load(
        &MockModel::new()
            .answer("no finish here")
            .fail_runs(RunFailure::NoFinish),
    );
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    let (text, _) = common::collect_text(stream.by_ref());
    assert_eq!(text, "no finish here");
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Finished));
    assert!(!stream.run_end().unwrap().finish_callback);
}

#[test]
fn a_panicking_consumer_aborts_the_run_and_leaves_the_session_usable() {
    // About 100 tokens at 10 ms each: the run is far from over when the consumer panics.
    let answer = "tick tock ".repeat(50);
    let answer = answer.trim_end();
    let model = common::load(
        &MockModel::new()
            .answer(answer)
            .decode_seconds_per_token(0.01),
    );
    let mut session = model.session().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for (i, token) in session
            .generate("q", &GenerateOptions::new())
            .unwrap()
            .enumerate()
        {
            token.unwrap();
            if i == 1 {
                // Unwinds as a panic does, without the panic hook: printing a backtrace
                // (with RUST_BACKTRACE set) could take longer than the whole run.
                std::panic::resume_unwind(Box::new("consumer bug"));
            }
        }
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"consumer bug"));
    // Dropping the stream never blocks: the session's next run waits for the aborted one.
    let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(done.text, answer);
    assert!(!model.runtime_reports_running());
    let runs = rkllm::mock::runs_of_model(model.path());
    assert_eq!(runs.len(), 2);
    let (dropped, next) = (&runs[0], &runs[1]);
    assert!(dropped.aborted, "{dropped:?}");
    assert!(next.finished && !next.aborted, "{next:?}");
    assert!(
        dropped.generated_tokens < next.generated_tokens,
        "the dropped run stopped early: {} of {} tokens",
        dropped.generated_tokens,
        next.generated_tokens
    );
}

#[test]
fn token_input_is_decoded_by_the_runtime() {
    let model = common::load(&MockModel::new().echo());
    let mut session = model.session().unwrap();
    // Built-in mock tokenizer: encode then feed as ids; echo answers the prompt.
    let ids = common::ids_of(
        rkllm::mock::BuiltinTokenizer
            .encode("<bos><start_of_turn>user\nping pong<end_of_turn>\n<start_of_turn>model\n"),
    );
    let done = session
        .complete(Input::tokens(ids.clone()), &GenerateOptions::gemma())
        .unwrap();
    assert_eq!(done.text, "ping pong");
    assert_eq!(done.timings.prompt_tokens, Some(ids.len()));
}

#[test]
fn waiting_text_handling_matches_the_runtime() {
    use rkllm::settings::WaitingText;
    use rkllm::{Model, Runtime};
    let answer = "héllo 世界 🙂";
    // A runtime that repeats the whole character after WAITING: joining would duplicate
    // bytes; telling the builder so (WaitingText::PartialBytesThenWhole) gives the exact text.
    let path = MockModel::new()
        .answer(answer)
        .with_runtime(|r| r.waiting_text = WaitingText::PartialBytesThenWhole)
        .write_temp_file()
        .unwrap();
    let build = |handling| {
        Model::builder(&path)
            .runtime(Runtime::mock())
            .waiting_text(handling)
            .build()
            .unwrap()
    };
    let joined = build(WaitingText::PartialBytes)
        .session()
        .unwrap()
        .complete("q", &GenerateOptions::gemma());
    assert_ne!(
        joined.map(|c| c.text).ok().as_deref(),
        Some(answer),
        "joining repeats bytes here"
    );
    let model = build(WaitingText::PartialBytesThenWhole);
    let done = model
        .session()
        .unwrap()
        .complete("q", &GenerateOptions::gemma())
        .unwrap();
    assert_eq!(done.text, answer);
    // Runtimes whose WAITING carries no text work with the default setting.
    for knob in [WaitingText::Null, WaitingText::Empty] {
        let model = common::load(
            &MockModel::new()
                .answer(answer)
                .with_runtime(|r| r.waiting_text = knob),
        );
        let done = model
            .session()
            .unwrap()
            .complete("q", &GenerateOptions::gemma())
            .unwrap();
        assert_eq!(done.text, answer, "{knob:?}");
    }
}

#[test]
fn callbacks_on_the_calling_thread_work_the_same() {
    use rkllm::settings::CallbackThread;
    let answer = "same stream, ünïcode too";
    let model = common::load(
        &MockModel::new()
            .answer(answer)
            .with_runtime(|r| r.callback_thread = CallbackThread::Caller),
    );
    let mut session = model.session().unwrap();
    let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(done.text, answer);
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    stream.next().unwrap().unwrap();
    stream.abort();
    assert!(stream.by_ref().all(|t| t.is_ok()));
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
}
