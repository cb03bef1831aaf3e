//! `rkllm_abort` from another thread and from a callback, in each FINISH/return
//! configuration, and during the prefill.

mod mock_support;

use std::time::Duration;

use mock_support::*;
use rkllm::mock::{last_run_stats, MockModel};
use rkllm_sys::{RKLLM_RUN_FINISH, RKLLM_RUN_NORMAL};

const LONG: &str = "one two three four five six seven eight nine ten eleven twelve thirteen \
                    fourteen fifteen sixteen seventeen eighteen nineteen twenty";

/// Runs a long answer and aborts it from another thread after 3 tokens. Returns the run's
/// code, its events, and how many callbacks had arrived when `rkllm_abort` returned.
fn abort_from_another_thread(model: MockModel) -> (i32, Vec<Event>, usize, Handle) {
    let h = open(model.answer(LONG).decode_seconds_per_token(0.01));
    let rec = Recorder::default();
    let (rc, at_abort) = std::thread::scope(|s| {
        let aborter = s.spawn(|| {
            wait_until(Duration::from_secs(60), || rec.len() >= 3);
            // SAFETY: a live mock handle.
            assert_eq!(unsafe { (api().abort)(h.ptr()) }, 0);
            rec.len()
        });
        let rc = run_prompt_with(&h, "go", &rec);
        (rc, aborter.join().unwrap())
    });
    (rc, rec.events(), at_abort, h)
}

fn tokens(events: &[Event]) -> usize {
    count(events, RKLLM_RUN_NORMAL)
}

#[test]
fn abort_stops_within_one_token_then_finishes_and_returns_0_by_default() {
    let (rc, events, at_abort, h) = abort_from_another_thread(MockModel::new());
    let full = rkllm::mock::BuiltinTokenizer.encode(LONG).len() + 1;
    assert_eq!(rc, 0);
    assert!(
        tokens(&events) <= at_abort + 1,
        "{} tokens after abort at {at_abort}",
        tokens(&events)
    );
    assert!(tokens(&events) < full);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 1);
    assert_eq!(events.last().unwrap().state, RKLLM_RUN_FINISH);
    let stats = last_run_stats(h.raw).unwrap();
    assert!(stats.aborted && stats.finished);
    // The handle works again afterwards, unaborted.
    let (rc, events) = run_prompt(&h, "again");
    assert_eq!(rc, 0);
    assert_eq!(tokens(&events), full);
}

#[test]
fn abort_without_finish_returning_minus_one() {
    let model = MockModel::new().with_runtime(|r| {
        r.finish_after_abort = false;
        r.run_return_after_abort = -1;
    });
    let (rc, events, at_abort, _h) = abort_from_another_thread(model);
    assert_eq!(rc, -1);
    assert!(tokens(&events) <= at_abort + 1);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 0);
}

#[test]
fn abort_with_finish_returning_minus_one() {
    let model = MockModel::new().with_runtime(|r| r.run_return_after_abort = -1);
    let (rc, events, at_abort, _h) = abort_from_another_thread(model);
    assert_eq!(rc, -1);
    assert!(tokens(&events) <= at_abort + 1);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 1);
}

#[test]
fn abort_without_finish_returning_0() {
    let model = MockModel::new().with_runtime(|r| r.finish_after_abort = false);
    let (rc, events, at_abort, _h) = abort_from_another_thread(model);
    assert_eq!(rc, 0);
    assert!(tokens(&events) <= at_abort + 1);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 0);
}

#[test]
fn abort_from_a_callback_stops_before_the_next_token() {
    let h = std::sync::Arc::new(open(MockModel::new().answer(LONG)));
    let h2 = std::sync::Arc::clone(&h);
    let rec = Recorder::with_hook(move |_, n| {
        if n == 2 {
            // SAFETY: a live mock handle.
            unsafe { (api().abort)(h2.raw) };
        }
    });
    assert_eq!(run_prompt_with(&h, "go", &rec), 0);
    let events = rec.events();
    assert_eq!(
        states(&events),
        vec![RKLLM_RUN_NORMAL, RKLLM_RUN_NORMAL, RKLLM_RUN_FINISH]
    );
}

/// A 60-token prompt at 10 ms/token, aborted about 50 ms into its prefill.
fn abort_during_prefill(model: MockModel) -> (i32, Vec<Event>, rkllm::mock::RunStats) {
    let h = open(model.prefill_seconds_per_token(0.01));
    let prompt = "a ".repeat(30);
    let rec = Recorder::default();
    let rc = std::thread::scope(|s| {
        s.spawn(|| {
            wait_until(Duration::from_secs(60), || {
                // SAFETY: a live mock handle.
                unsafe { (api().is_running)(h.ptr()) == 0 }
            });
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: a live mock handle.
            unsafe { (api().abort)(h.ptr()) };
        });
        run_prompt_with(&h, &prompt, &rec)
    });
    (rc, rec.events(), last_run_stats(h.raw).unwrap())
}

#[test]
fn an_abort_during_prefill_lets_the_prefill_complete_then_stops() {
    let (rc, events, stats) = abort_during_prefill(MockModel::new());
    assert_eq!(rc, 0);
    assert_eq!(stats.prompt_tokens, 60);
    assert_eq!(stats.prefilled_tokens, 60, "the prefill was cut short");
    assert_eq!(stats.generated_tokens, 0);
    assert!(stats.aborted);
    assert_eq!(states(&events), vec![RKLLM_RUN_FINISH]);
}

#[test]
fn an_abort_can_interrupt_the_prefill_when_configured() {
    let (rc, events, stats) =
        abort_during_prefill(MockModel::new().with_runtime(|r| r.abort_interrupts_prefill = true));
    assert_eq!(rc, 0);
    assert!(
        stats.prefilled_tokens < 60,
        "prefilled {}",
        stats.prefilled_tokens
    );
    assert_eq!(stats.generated_tokens, 0);
    assert_eq!(states(&events), vec![RKLLM_RUN_FINISH]);
}

#[test]
fn destroy_during_a_run_aborts_and_waits_for_it() {
    let h = open(MockModel::new().answer(LONG).decode_seconds_per_token(0.01));
    let raw_addr = h.addr();
    let rec = Recorder::default();
    let rc = std::thread::scope(|s| {
        s.spawn(|| {
            wait_until(Duration::from_secs(60), || rec.len() >= 2);
            // SAFETY: destroying a live mock handle while a run is in flight on it.
            let rc = unsafe { (api().destroy)(raw_addr as rkllm_sys::LLMHandle) };
            assert_eq!(rc, 0);
            // Destroy returned: the run's callbacks are over.
            let n = rec.len();
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(
                rec.len(),
                n,
                "a callback arrived after rkllm_destroy returned"
            );
        });
        run_prompt_with(&h, "go", &rec)
    });
    assert_eq!(rc, 0);
    assert!(tokens(&rec.events()) < 20);
    // SAFETY: the handle is destroyed; the mock must refuse it.
    assert_eq!(unsafe { (api().is_running)(h.raw) }, -1);
}
