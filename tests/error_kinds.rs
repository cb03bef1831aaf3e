//! `Error::kind`: the caller's mistakes told apart from busy models and runtime or system
//! failures, as a server needs to pick an HTTP status.

mod common;

use rkllm::chat::{ChatError, ContextBudget, Conversation, SystemStyle};
use rkllm::mock::{MockModel, RunFailure};
use rkllm::{Error, ErrorKind, GenerateOptions, Input, Model, Runtime};

#[test]
fn the_suggested_statuses_and_whose_fault_it_is() {
    for (kind, status, caller) in [
        (ErrorKind::InvalidInput, 400, true),
        (ErrorKind::TooLong, 413, true),
        (ErrorKind::NotFound, 404, true),
        (ErrorKind::Busy, 429, false),
        (ErrorKind::TimedOut, 503, false),
        (ErrorKind::Unavailable, 503, false),
        (ErrorKind::Runtime, 500, false),
        (ErrorKind::System, 500, false),
    ] {
        assert_eq!(kind.http_status(), status, "{kind:?}");
        assert_eq!(kind.is_caller_error(), caller, "{kind:?}");
    }
}

#[test]
fn bad_input_is_the_callers_fault() {
    let model = common::load(&MockModel::new());
    let mut session = model.session().unwrap();
    let opts = GenerateOptions::new();
    for bad in [
        Input::prompt(""),
        Input::prompt("a\0b"),
        Input::tokens(Vec::<i32>::new()),
        Input::tokens(vec![3, -7]),
        Input::embeddings(vec![1.0; 5], 2),
    ] {
        let err = session.generate(bad.clone(), &opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        assert_eq!(err.kind().http_status(), 400);
    }
    let err = Model::builder("m.rkllm")
        .runtime(Runtime::mock())
        .top_p(f32::NAN)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    for chat_error in [
        ChatError::Empty,
        ChatError::RolesMustAlternate { index: 1 },
        ChatError::UnknownRole("tool".into()),
        ChatError::LastMessageNotFromUser {
            role: rkllm::chat::Role::Assistant,
        },
        ChatError::SecondSystem { index: 2 },
    ] {
        assert_eq!(Error::from(chat_error).kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn a_prompt_beyond_the_budget_is_too_long_not_a_runtime_failure() {
    let path = MockModel::new().write_temp_file().unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge).with_budget(ContextBudget::new(32, 8));
    let err = session
        .chat(&mut chat, "x".repeat(200), &GenerateOptions::new())
        .expect_err("the prompt does not fit");
    assert_eq!(err.kind(), ErrorKind::TooLong, "{err}");
    assert_eq!(err.kind().http_status(), 413);
    assert!(
        rkllm::mock::runs_of_model(&path).is_empty(),
        "refused before the runtime"
    );
    assert!(chat.messages().is_empty(), "the user message is taken back");

    let err = Error::PromptTooLong {
        tokens: 5000,
        limit: 4096,
    };
    assert_eq!(err.kind(), ErrorKind::TooLong);
    let text = err.to_string();
    assert!(
        text.contains("5000") && text.contains("4096") && text.contains("max_context_len"),
        "{text}"
    );
}

#[test]
fn missing_things_are_not_found() {
    let err = Model::builder("/nonexistent/dir/model.rkllm")
        .runtime(Runtime::mock())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // An adapter loaded into another model is unknown to this one.
    let adapter_file = common::temp_file("kinds-adapter.rkllm", b"lora");
    let other = common::load(&MockModel::new());
    let foreign = other.load_lora(&adapter_file, "pirate", 1.0).unwrap();
    let model = common::load(&MockModel::new());
    let mut session = model.session().unwrap();
    let err = session
        .generate("hi", &GenerateOptions::new().lora(&foreign))
        .expect_err("foreign adapter refused");
    assert!(matches!(err, Error::UnknownLora { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.kind().http_status(), 404);
}

#[test]
fn a_busy_model_is_busy() {
    let model = common::load(&MockModel::new());
    let _session = model.session().unwrap();
    let err = model.session().expect_err("one session at a time");
    assert!(matches!(err, Error::Busy), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(!err.kind().is_caller_error());
    assert_eq!(Error::RunInProgress.kind(), ErrorKind::Busy);
}

#[test]
fn runtime_failures_are_the_servers_fault() {
    let model = common::load(&MockModel::new().fail_runs(RunFailure::ReturnError));
    let mut session = model.session().unwrap();
    let err = session
        .complete("hi", &GenerateOptions::new())
        .expect_err("the run fails");
    assert_eq!(err.kind(), ErrorKind::Runtime, "{err}");
    assert_eq!(err.kind().http_status(), 500);

    let model = common::load(
        &MockModel::new()
            .answer("abc")
            .fail_runs(RunFailure::ErrorAfterTokens { tokens: 1 }),
    );
    let mut session = model.session().unwrap();
    let err = session
        .complete("hi", &GenerateOptions::new())
        .expect_err("the run fails");
    assert!(matches!(err, Error::Run { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Runtime);

    for err in [
        Error::NoHiddenStates,
        Error::NonFiniteHiddenState {
            token: 0,
            dimension: 3,
        },
        Error::InvalidUtf8 { bytes: vec![0xff] },
        Error::Call {
            func: "rkllm_run",
            code: -1,
        },
    ] {
        assert_eq!(err.kind(), ErrorKind::Runtime, "{err}");
    }
}

#[test]
fn system_failures_and_an_unusable_model() {
    let spawn = Error::ThreadSpawn {
        source: std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable",
        ),
    };
    assert_eq!(spawn.kind(), ErrorKind::System);
    // The OS error is the source, and only the source: a reporter that prints the chain
    // shows it once.
    assert_shown_once(&spawn, "Resource temporarily unavailable");
    assert!(
        spawn.to_string().contains("thread or memory limit"),
        "{spawn}"
    );
    let io = Error::Io {
        path: "/var/cache/rkllm".into(),
        source: std::io::Error::other("Permission denied (os error 13)"),
    };
    assert_eq!(io.kind(), ErrorKind::System);
    assert_shown_once(&io, "Permission denied");
    assert!(io.to_string().contains("/var/cache/rkllm"), "{io}");

    let unusable = Error::ModelUnusable {
        reason: "a run did not stop within 5 s of rkllm_abort".into(),
    };
    assert_eq!(unusable.kind(), ErrorKind::Unavailable);
    assert_eq!(unusable.kind().http_status(), 503);
    let text = unusable.to_string();
    assert!(
        text.contains("did not stop") && text.contains("load it again"),
        "{text}"
    );
}

/// `needle` appears exactly once in the error's chain as a reporter prints it (each error's
/// `Display`, then its sources'), and it comes from a source, not the top message.
fn assert_shown_once(err: &Error, needle: &str) {
    let mut chain = vec![err.to_string()];
    let mut at = std::error::Error::source(err);
    while let Some(e) = at {
        chain.push(e.to_string());
        at = e.source();
    }
    let shown = chain.join(": ");
    assert_eq!(shown.matches(needle).count(), 1, "{shown}");
    assert!(!chain[0].contains(needle), "{shown}");
}

#[test]
fn a_full_queue_and_a_queue_timeout_are_told_apart() {
    use rkllm::wait::WaitError;
    let full = Error::from(WaitError::QueueFull { limit: 64 });
    assert!(matches!(full, Error::QueueFull { limit: 64 }), "{full:?}");
    assert_eq!(full.kind(), ErrorKind::Busy);
    assert_eq!(full.kind().http_status(), 429);
    let waited = std::time::Duration::from_secs(120);
    let timed_out = Error::from(WaitError::TimedOut { waited });
    assert!(
        matches!(timed_out, Error::QueueTimedOut { waited: w } if w == waited),
        "{timed_out:?}"
    );
    assert_eq!(timed_out.kind(), ErrorKind::TimedOut);
    assert_eq!(timed_out.kind().http_status(), 503);
    assert!(!timed_out.kind().is_caller_error());
}
