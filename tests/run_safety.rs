//! The run machinery inside a host process: aborts that never hang and hit only their own
//! run, late callbacks, stops bounded in time, token ids checked, and results that say what
//! happened.

mod common;

use std::time::{Duration, Instant};

use rkllm::chat::{Conversation, SystemStyle};
use rkllm::mock::{Answer, MockModel};
use rkllm::{Error, FinishReason, GenerateOptions, Input, Model, Runtime};

/// Runs `f` on another thread and fails the test if it has not finished within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(limit)
        .expect("hang: the call did not return in time")
}

fn slow(text: &str) -> MockModel {
    MockModel::new()
        .answer(text)
        .decode_seconds_per_token(0.005)
}

#[test]
fn a_model_abort_from_the_consumers_own_thread_never_hangs() {
    // A blocking rkllm_abort, a full channel, and the abort called on the thread that should
    // be reading: the callback must be released before rkllm_abort is called. (The mock's
    // blocking abort gives up after 20 s, so a hang shows as a timeout here.)
    let answer = "word ".repeat(3000);
    let mock = MockModel::new()
        .answer(answer.trim_end())
        .with_runtime(|r| r.abort_blocks_until_stopped = true);
    let aborted = within(Duration::from_secs(10), move || {
        let model = common::load(&mock);
        let abort = model.abort_handle();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        // Let the runtime fill the 256-slot channel and block on it.
        std::thread::sleep(Duration::from_millis(300));
        let aborted = abort.abort();
        let rest = stream.by_ref().count();
        (aborted, rest, stream.finish_reason().cloned())
    });
    assert_eq!(aborted, (true, 0, Some(FinishReason::Aborted)));
}

#[test]
fn a_streams_abort_handle_stops_its_own_run_and_never_the_next() {
    let model = common::load(&slow("one two three four five six seven eight"));
    let mut session = model.session().unwrap();
    let first = session.generate("q", &GenerateOptions::new()).unwrap();
    let stale = first.abort_handle();
    let done = first.complete().unwrap();
    assert_eq!(done.finish_reason, FinishReason::Finished);

    let mut second = session.generate("q", &GenerateOptions::new()).unwrap();
    second.next().unwrap().unwrap();
    assert!(!stale.abort(), "a handle of a finished run does nothing");
    let own = second.abort_handle();
    let rest: Vec<_> = second.by_ref().collect::<Result<_, _>>().unwrap();
    assert!(!rest.is_empty());
    assert_eq!(second.finish_reason(), Some(&FinishReason::Finished));
    drop(second);

    let mut third = session.generate("q", &GenerateOptions::new()).unwrap();
    third.next().unwrap().unwrap();
    assert!(
        !own.abort(),
        "nor does the second run's handle touch the third"
    );
    let mine = third.abort_handle();
    assert!(std::thread::spawn(move || mine.abort()).join().unwrap());
    assert_eq!(third.by_ref().count(), 0);
    assert_eq!(third.finish_reason(), Some(&FinishReason::Aborted));
}

#[test]
fn a_callback_after_rkllm_run_returned_is_ignored() {
    // The mock sends one more NORMAL callback ("late") with the finished run's userdata 20 ms
    // after rkllm_run returned, while the next run is in flight.
    let mock = slow("alpha beta gamma delta epsilon zeta eta theta")
        .with_runtime(|r| r.late_callback_after_return = true);
    let model = common::load(&mock);
    let mut session = model.session().unwrap();
    for _ in 0..3 {
        let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
        assert_eq!(done.text, "alpha beta gamma delta epsilon zeta eta theta");
        assert!(!done.token_ids.contains(&100), "{:?}", done.token_ids);
    }
    // The last run's late callback arrives after it returned, with nothing left to feed.
    std::thread::sleep(Duration::from_millis(60));
}

#[test]
fn a_run_that_never_returns_is_left_behind_after_the_stop_timeout() {
    let mock = slow("one two three").with_runtime(|r| r.run_never_returns = true);
    let file = mock.write_temp_file().unwrap();
    let path = file.to_path_buf();
    let (first_err, later, live) = within(Duration::from_secs(20), move || {
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .stop_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        // Dropping the stream returns at once; the next call waits at most the stop
        // timeout from the drop, then gives the run up.
        drop(stream);
        let first_err = session.complete("q", &GenerateOptions::new()).unwrap_err();
        let later = model.load_lora(&path, "x", 1.0).unwrap_err();
        drop(session);
        drop(model);
        // Never destroyed: the runtime may still use the handle.
        (first_err, later, rkllm::mock::live_handles_of_model(&path))
    });
    assert!(
        matches!(first_err, Error::ModelUnusable { .. }),
        "{first_err:?}"
    );
    assert!(
        first_err.to_string().contains("did not return"),
        "{first_err}"
    );
    assert!(matches!(later, Error::ModelUnusable { .. }), "{later:?}");
    assert_eq!(live, 1);
    drop(file);
}

#[test]
fn token_ids_are_checked_against_a_known_vocabulary() {
    let file = MockModel::new().answer("ok").write_temp_file().unwrap();
    let model = Model::builder(&*file)
        .runtime(Runtime::mock())
        .vocab_size(rkllm::gemma::VOCAB_SIZE)
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    // Inside int32 but outside the vocabulary, the first id above int32, the largest u32.
    for ids in [
        vec![2, i32::MAX.unsigned_abs()],
        vec![256_000],
        vec![1 << 31],
        vec![u32::MAX],
    ] {
        let err = session
            .complete(Input::tokens(ids.clone()), &GenerateOptions::new())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{ids:?}: {err:?}");
    }
    let err = session
        .complete(Input::tokens(vec![2, 256_000]), &GenerateOptions::new())
        .unwrap_err();
    assert!(
        err.to_string().contains("256000 at position 1"),
        "names the id and where: {err}"
    );
    assert_eq!(
        rkllm::mock::runs_of_model(&*file).len(),
        0,
        "nothing reached the runtime"
    );
    // Unset, only negative ids are refused; a zero vocabulary is no vocabulary.
    let err = Model::builder(&*file)
        .runtime(Runtime::mock())
        .vocab_size(0)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "vocab_size",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn time_to_first_token_is_when_the_runtime_delivered_it_not_when_it_was_read() {
    let model = common::load(&slow("one two three"));
    let mut session = model.session().unwrap();
    let before = Instant::now();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    // A consumer that reads late.
    std::thread::sleep(Duration::from_millis(300));
    let first = stream.next().unwrap().unwrap();
    let ttft = stream.timings().time_to_first_token.unwrap();
    // The run started after `before`, so `before + ttft` is at most the delivery instant;
    // a time stamped at reading would lie 300 ms past it.
    assert!(
        before + ttft <= first.delivered_at,
        "ttft {ttft:?} is later than the delivery"
    );
    let done = stream.complete().unwrap();
    assert!(done.timings.total >= ttft);
}

#[test]
fn results_say_what_happened() {
    let model = common::load(&MockModel::new().answer("abc"));
    let mut session = model.session().unwrap();
    let err = session
        .complete("q", &GenerateOptions::new().max_tokens(0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "max_tokens",
                ..
            }
        ),
        "{err:?}"
    );
    let err = session.complete("", &GenerateOptions::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let one = session
        .complete("q", &GenerateOptions::new().max_tokens(1))
        .unwrap();
    assert_eq!(one.token_ids.len(), 1);
    assert_eq!(one.finish_reason, FinishReason::MaxTokens);
}

#[test]
fn invalid_utf8_is_reported_where_it_stood() {
    // Generated: `x`, a lone 0xE4 (a character that never completes), then `ab`.
    let model = common::load(&MockModel::new().answer_with(Answer::Bytes {
        bytes: b"x\xe4ab".to_vec(),
    }));
    let mut session = model.session().unwrap();
    // The stream's items as text, errors shown in place.
    let items = |options: &GenerateOptions, session: &mut rkllm::Session| -> Vec<String> {
        session
            .generate("q", options)
            .unwrap()
            .map(|item| match item {
                Ok(token) => token.text,
                Err(Error::InvalidUtf8 { bytes }) => format!("<invalid {bytes:02x?}>"),
                Err(e) => panic!("{e}"),
            })
            .filter(|t| !t.is_empty())
            .collect()
    };
    assert_eq!(
        items(&GenerateOptions::new(), &mut session),
        ["x", "<invalid [e4]>", "ab"]
    );
    // The same order with stop strings held back.
    assert_eq!(
        items(&GenerateOptions::new().stop_string("zz"), &mut session),
        ["x", "<invalid [e4]>", "ab"]
    );
}

#[test]
fn the_longest_stop_string_wins_through_a_real_run() {
    let model = common::load(&MockModel::new().answer("xABCy"));
    let mut session = model.session().unwrap();
    let done = session
        .complete(
            "q",
            &GenerateOptions::new().stop_string("AB").stop_string("ABC"),
        )
        .unwrap();
    assert_eq!(done.text, "x");
    assert_eq!(done.finish_reason, FinishReason::StopString("ABC".into()));
}

#[test]
fn a_chat_turn_that_ends_in_an_error_item_is_taken_back_out() {
    let model = common::load(&MockModel::new().answer_with(Answer::Bytes {
        bytes: b"ok \xe4 then".to_vec(),
    }));
    let mut session = model.session().unwrap();
    let mut chat = Conversation::new(SystemStyle::Merge);
    let err = session
        .chat(&mut chat, "hello", &GenerateOptions::new())
        .unwrap()
        .complete()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUtf8 { .. }), "{err:?}");
    assert!(
        chat.messages().is_empty(),
        "the failed turn is not kept: {:?}",
        chat.messages()
    );
}

#[test]
fn dropping_the_model_mid_run_destroys_the_handle_once_the_run_is_stopped() {
    let file = slow("one two three four five six seven eight nine ten")
        .write_temp_file()
        .unwrap();
    let path = file.to_path_buf();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    let session = model.session().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let mut session = session;
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        started_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // Dropping mid-run: the stream asks the run to stop and returns; the session, the
        // model's last owner now, waits for the run (as the model's drop does), then the
        // handle is destroyed.
        drop(stream);
        drop(session);
    });
    started_rx.recv().unwrap();
    // The model goes while its run is in flight on the other thread: the handle stays.
    drop(model);
    assert_eq!(rkllm::mock::live_handles_of_model(&path), 1);
    go_tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(
        rkllm::mock::live_handles_of_model(&path),
        0,
        "destroyed once"
    );
    let runs = rkllm::mock::runs_of_model(&path);
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].aborted,
        "the run was stopped, not finished: {:?}",
        runs[0]
    );
}

#[test]
fn a_hidden_state_run_that_delivers_none_says_so() {
    // The run is aborted during its prefill, so the runtime never delivers hidden states.
    let model = common::load(
        &MockModel::new()
            .embed_dim(8)
            .prefill_seconds_per_token(0.02),
    );
    let abort = model.abort_handle();
    let mut session = model.session().unwrap();
    let aborter = std::thread::spawn(move || {
        // Ask until the run is in flight.
        while !abort.abort() {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let err = session
        .hidden_states("a prompt of a dozen words or so, long enough to take a while")
        .unwrap_err();
    aborter.join().unwrap();
    assert!(matches!(err, Error::NoHiddenStates), "{err:?}");
    assert!(
        err.to_string().contains("without delivering hidden states"),
        "{err}"
    );
}

/// A model whose prefill `rkllm_abort` cannot cut short and whose `rkllm_abort` blocks until
/// the run has stopped: the case where a blocking drop stalled its caller for the whole
/// prefill.
fn uninterruptible_prefill() -> MockModel {
    MockModel::new()
        .answer("after the prefill")
        .prefill_seconds_per_token(0.1)
        .with_runtime(|r| {
            r.abort_interrupts_prefill = false;
            r.abort_blocks_until_stopped = true;
        })
}

/// Waits until the runtime is inside `rkllm_run` (the run's worker starts it a moment after
/// the stream is returned).
fn wait_until_running(model: &Model) {
    while !model.runtime_reports_running() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ten prompt tokens: a prefill of about a second.
fn ten_tokens() -> Input {
    Input::tokens(vec![2, 300, 301, 302, 303, 304, 305, 306, 307, 308])
}

#[test]
fn dropping_a_stream_mid_prefill_returns_before_the_run_ends_and_the_next_run_waits() {
    let file = uninterruptible_prefill().write_temp_file().unwrap();
    let path = file.to_path_buf();
    let (in_flight_after_drop, next, runs) = within(Duration::from_secs(60), move || {
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        let stream = session
            .generate(ten_tokens(), &GenerateOptions::new())
            .unwrap();
        wait_until_running(&model);
        drop(stream);
        // The drop returned while the runtime was still in the prefill: the mock records a
        // run only once rkllm_run returns, and reports it running meanwhile.
        let in_flight_after_drop = (
            rkllm::mock::runs_of_model(&path).len(),
            model.runtime_reports_running(),
        );
        // The next run waits for the dropped one, then runs in full.
        let next = session
            .complete(ten_tokens(), &GenerateOptions::new())
            .unwrap();
        (
            in_flight_after_drop,
            next,
            rkllm::mock::runs_of_model(&path),
        )
    });
    assert_eq!(in_flight_after_drop, (0, true));
    assert_eq!(next.text, "after the prefill");
    assert_eq!(next.finish_reason, FinishReason::Finished);
    assert_eq!(runs.len(), 2);
    // The dropped run was aborted after its whole prefill, before any token.
    assert!(runs[0].aborted, "{:?}", runs[0]);
    assert_eq!(runs[0].generated_tokens, 0, "{:?}", runs[0]);
    assert_eq!(
        runs[0].prefilled_tokens, runs[0].prompt_tokens,
        "{:?}",
        runs[0]
    );
    drop(file);
}

/// Wakes the thread that polls, and counts its wake-ups.
struct Unpark {
    thread: std::thread::Thread,
    wakes: std::sync::atomic::AtomicUsize,
}

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `future` once with a waker that counts its wake-ups; then, if it was pending,
/// `between()`, and polls on (parking in between) until it is ready. Returns what
/// `between` returned, the output and the wake-ups.
fn poll_twice<F: std::future::Future, T>(
    future: F,
    between: impl FnOnce() -> T,
) -> (Option<T>, F::Output, usize) {
    use std::task::{Context, Poll};
    let unpark = std::sync::Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: std::sync::atomic::AtomicUsize::new(0),
    });
    let waker = std::task::Waker::from(std::sync::Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let mut between = Some(between);
    let mut seen = None;
    let output = loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => break output,
            Poll::Pending => match between.take() {
                Some(f) => seen = Some(f()),
                None => std::thread::park(),
            },
        }
    };
    let wakes = unpark.wakes.load(std::sync::atomic::Ordering::SeqCst);
    (seen, output, wakes)
}

#[test]
fn waiting_for_a_dropped_run_asynchronously_never_blocks_the_polling_thread() {
    let file = uninterruptible_prefill().write_temp_file().unwrap();
    let path = file.to_path_buf();
    let (in_flight_after_poll, waited, wakes, after, next) =
        within(Duration::from_secs(60), move || {
            let model = Model::builder(&path)
                .runtime(Runtime::mock())
                .build()
                .unwrap();
            let mut session = model.session().unwrap();
            let stream = session
                .generate(ten_tokens(), &GenerateOptions::new())
                .unwrap();
            wait_until_running(&model);
            drop(stream);
            // The first poll returns while the dropped run is still in its prefill.
            let (in_flight_after_poll, waited, wakes) =
                poll_twice(session.wait_idle_async(), || {
                    (
                        rkllm::mock::runs_of_model(&path).len(),
                        model.runtime_reports_running(),
                    )
                });
            let after = (
                rkllm::mock::runs_of_model(&path).len(),
                model.runtime_reports_running(),
            );
            let next = session
                .complete(ten_tokens(), &GenerateOptions::new())
                .unwrap();
            (in_flight_after_poll, waited, wakes, after, next)
        });
    assert_eq!(
        in_flight_after_poll,
        Some((0, true)),
        "the first poll waited"
    );
    waited.unwrap();
    // Woken by the run's return (the stop deadline is two minutes away).
    assert!(wakes >= 1);
    assert_eq!(after, (1, false));
    assert_eq!(next.text, "after the prefill");
    drop(file);
}

#[test]
fn an_async_wait_for_a_run_that_never_returns_ends_at_the_stop_timeout() {
    let mock = slow("one two three").with_runtime(|r| r.run_never_returns = true);
    let file = mock.write_temp_file().unwrap();
    let path = file.to_path_buf();
    let (pending_first, waited, later) = within(Duration::from_secs(20), move || {
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .stop_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        drop(stream);
        let (pending_first, waited, _) = poll_twice(session.wait_idle_async(), || ());
        let later = session.complete("q", &GenerateOptions::new()).unwrap_err();
        (pending_first.is_some(), waited, later)
    });
    assert!(pending_first);
    let err = waited.unwrap_err();
    assert!(matches!(err, Error::ModelUnusable { .. }), "{err:?}");
    assert!(matches!(later, Error::ModelUnusable { .. }), "{later:?}");
    drop(file);
}

#[test]
fn a_dropped_chat_turn_mid_prefill_is_recorded_and_the_session_runs_again() {
    use rkllm::chat::{ChatSession, Conversation, SystemStyle};
    let file = uninterruptible_prefill().write_temp_file().unwrap();
    let path = file.to_path_buf();
    let (in_flight_after_drop, messages, next) = within(Duration::from_secs(60), move || {
        let model = Model::builder(&path)
            .runtime(Runtime::mock())
            .build()
            .unwrap();
        let mut chat = ChatSession::new(model.session().unwrap());
        let mut conversation = Conversation::new(SystemStyle::Merge);
        let stream = chat
            .chat(&mut conversation, "Hello", &GenerateOptions::new())
            .unwrap();
        wait_until_running(&model);
        drop(stream);
        let in_flight_after_drop = (
            rkllm::mock::runs_of_model(&path).len(),
            model.runtime_reports_running(),
        );
        // Nothing was read: the turn is kept with an empty reply, as an aborted one is.
        let messages: Vec<String> = conversation
            .messages()
            .iter()
            .map(|m| m.content.clone())
            .collect();
        let next = chat
            .chat(&mut conversation, "Again", &GenerateOptions::new())
            .unwrap()
            .complete()
            .unwrap();
        (in_flight_after_drop, messages, next)
    });
    assert_eq!(in_flight_after_drop, (0, true));
    assert_eq!(messages, ["Hello", ""]);
    assert_eq!(next.text, "after the prefill");
    assert_eq!(next.finish_reason, FinishReason::EndOfTurn);
    drop(file);
}
