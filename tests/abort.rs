//! Aborting runs: from another thread, by dropping the stream, by dropping the model, and
//! under every way the runtime may end an aborted run.

mod common;

use std::time::Duration;

use rkllm::mock::MockModel;
use rkllm::{FinishReason, GenerateOptions};

const LONG: &str =
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen \
                    fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two";

fn slow(mock: MockModel) -> MockModel {
    mock.answer(LONG).decode_seconds_per_token(0.005)
}

#[test]
fn abort_from_another_thread_mid_stream() {
    let model = common::load(&slow(MockModel::new()));
    let abort = model.abort_handle();
    assert!(!abort.abort(), "nothing to abort before a run");
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert!(!first.text.is_empty());
    let t = std::thread::spawn(move || abort.abort());
    assert!(t.join().unwrap(), "a run was in flight");
    let rest: Vec<_> = stream.by_ref().collect::<Result<_, _>>().unwrap();
    assert!(
        rest.is_empty(),
        "no token is delivered once the abort returned ({} more)",
        rest.len()
    );
    assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
    drop(stream);
    // The next run starts fresh.
    let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(done.text, LONG);
}

#[test]
fn every_abort_ending_of_the_runtime_gives_aborted() {
    for finish_after_abort in [true, false] {
        for rc in [0, -1] {
            let mock = slow(MockModel::new()).with_runtime(|r| {
                r.finish_after_abort = finish_after_abort;
                r.run_return_after_abort = rc;
            });
            let model = common::load(&mock);
            let mut session = model.session().unwrap();
            let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
            stream.next().unwrap().unwrap();
            stream.abort();
            let rest: Vec<_> = stream.by_ref().collect();
            assert!(
                rest.iter().all(|r| r.is_ok()),
                "no error after an abort: {rest:?}"
            );
            assert_eq!(
                stream.finish_reason(),
                Some(&FinishReason::Aborted),
                "{finish_after_abort} {rc}"
            );
            let end = stream.run_end().unwrap();
            assert_eq!(end.return_code, rc);
            assert_eq!(end.finish_callback, finish_after_abort);
            drop(stream);
            assert_eq!(
                session
                    .complete("q", &GenerateOptions::gemma())
                    .unwrap()
                    .text,
                LONG
            );
        }
    }
}

#[test]
fn dropping_the_stream_mid_run_aborts_and_waits() {
    let path = slow(MockModel::new()).write_temp_file().unwrap();
    let model = rkllm::Model::builder(&path)
        .runtime(rkllm::Runtime::mock())
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    {
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
    }
    // The run was stopped, not played out, and the runtime is idle once the drop returned.
    let runs = rkllm::mock::runs_of_model(&path);
    let total = LONG.split(' ').count();
    assert!(runs[0].aborted, "{:?}", runs[0]);
    assert!(runs[0].generated_tokens < total, "{:?}", runs[0]);
    assert!(!model.runtime_reports_running());
    assert_eq!(
        session
            .complete("q", &GenerateOptions::gemma())
            .unwrap()
            .text,
        LONG
    );
}

#[test]
fn dropping_everything_with_a_leaked_stream_joins_then_destroys() {
    let mock = slow(MockModel::new());
    let path = mock.write_temp_file().unwrap();
    let model = rkllm::Model::builder(&path)
        .runtime(rkllm::Runtime::mock())
        .build()
        .unwrap();
    let abort = model.abort_handle();
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    stream.next().unwrap().unwrap();
    std::mem::forget(stream);
    assert_eq!(rkllm::mock::live_handles_of_model(&path), 1);
    drop(session);
    drop(model);
    assert_eq!(
        rkllm::mock::live_handles_of_model(&path),
        0,
        "destroyed exactly once"
    );
    // An abort handle outliving the model does nothing and touches nothing.
    assert!(!abort.abort());
}

#[test]
fn a_leaked_stream_is_finished_by_the_next_run() {
    let model = common::load(&slow(MockModel::new()));
    let mut session = model.session().unwrap();
    let stream = session.generate("q", &GenerateOptions::new()).unwrap();
    std::mem::forget(stream);
    let done = session.complete("q", &GenerateOptions::gemma()).unwrap();
    assert_eq!(done.text, LONG);
}

#[test]
fn one_session_per_model() {
    let model = common::load(&MockModel::new());
    let session = model.session().unwrap();
    assert!(matches!(model.session(), Err(rkllm::Error::Busy)));
    drop(session);
    assert!(model.session().is_ok());
}

#[test]
fn is_running_is_reported_the_right_way_round() {
    let model = common::load(&slow(MockModel::new()));
    assert!(!model.runtime_reports_running());
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    stream.next().unwrap().unwrap();
    assert!(model.runtime_reports_running());
    drop(stream);
    assert!(!model.runtime_reports_running());
}

#[test]
fn running_sense_follows_the_setting() {
    use rkllm::settings::RunningSense;
    use rkllm::{Model, Runtime};
    let path = slow(MockModel::new())
        .with_runtime(|r| r.is_running_sense = RunningSense::NonZeroWhileRunning)
        .write_temp_file()
        .unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .running_sense(RunningSense::NonZeroWhileRunning)
        .build()
        .unwrap();
    assert!(!model.runtime_reports_running());
    let mut session = model.session().unwrap();
    let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
    stream.next().unwrap().unwrap();
    assert!(model.runtime_reports_running());
    drop(stream);
    assert!(!model.runtime_reports_running());
}

#[test]
fn thread_safety_is_what_the_types_promise() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<rkllm::Session>();
    send_sync::<rkllm::Model>();
    send_sync::<rkllm::AbortHandle>();
    send_sync::<rkllm::Runtime>();
    // A session moves to another thread and runs there.
    let model = common::load(&MockModel::new().answer("from another thread"));
    let mut session = model.session().unwrap();
    let text = std::thread::spawn(move || {
        session
            .complete("q", &GenerateOptions::gemma())
            .unwrap()
            .text
    })
    .join()
    .unwrap();
    assert_eq!(text, "from another thread");
}

/// Runs `f` on another thread and fails the test if it has not finished within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(limit)
        .expect("deadlock: the stop did not complete")
}

#[test]
fn a_blocking_rkllm_abort_cannot_deadlock_with_a_full_channel() {
    // If rkllm_abort waited for the run to stop while the runtime's callback waited for room
    // in the channel, stopping would hang. A 3,000-token answer at zero latency fills the
    // 256-slot channel while the consumer sleeps.
    let answer = "word ".repeat(3000);
    let mock = MockModel::new()
        .answer(answer.trim_end())
        .with_runtime(|r| r.abort_blocks_until_stopped = true);
    let path = mock.write_temp_file().unwrap();
    let load = {
        let path = path.to_path_buf();
        move || {
            rkllm::Model::builder(&path)
                .runtime(rkllm::Runtime::mock())
                .build()
                .unwrap()
        }
    };
    let fill = Duration::from_millis(200);

    // Stop conditions: max_tokens and an explicit abort on the stream.
    let (l1, l2) = (load.clone(), load.clone());
    let reason = within(Duration::from_secs(15), move || {
        let model = l1();
        let mut session = model.session().unwrap();
        let mut stream = session
            .generate("q", &GenerateOptions::new().max_tokens(2))
            .unwrap();
        stream.next().unwrap().unwrap();
        std::thread::sleep(fill);
        let rest: Vec<_> = stream.by_ref().collect();
        assert_eq!(rest.len(), 1);
        stream.finish_reason().cloned()
    });
    assert_eq!(reason, Some(FinishReason::MaxTokens));
    let reason = within(Duration::from_secs(15), move || {
        let model = l2();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        std::thread::sleep(fill);
        stream.abort();
        assert!(stream.by_ref().count() < 300);
        stream.finish_reason().cloned()
    });
    assert_eq!(reason, Some(FinishReason::Aborted));

    // An AbortHandle on another thread while the consumer is not reading.
    let l3 = load.clone();
    within(Duration::from_secs(15), move || {
        let model = l3();
        let abort = model.abort_handle();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        std::thread::sleep(fill);
        let aborter = std::thread::spawn(move || abort.abort());
        std::thread::sleep(Duration::from_millis(50));
        let _ = stream.by_ref().count();
        assert!(aborter.join().unwrap());
        assert_eq!(stream.finish_reason(), Some(&FinishReason::Aborted));
    });

    // Dropping the stream, and leaking it then dropping the model.
    let l4 = load.clone();
    within(Duration::from_secs(15), move || {
        let model = l4();
        let mut session = model.session().unwrap();
        let mut stream = session.generate("q", &GenerateOptions::new()).unwrap();
        stream.next().unwrap().unwrap();
        std::thread::sleep(fill);
        drop(stream);
        let stream = session.generate("q", &GenerateOptions::new()).unwrap();
        std::thread::sleep(fill);
        std::mem::forget(stream);
        drop(session);
        drop(model);
    });
    assert_eq!(rkllm::mock::live_handles_of_model(&path), 0);
}
