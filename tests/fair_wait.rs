//! Waiting for the NPU in turn: first come, first served, with a timeout and a bounded queue.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rkllm::mock::MockModel;
use rkllm::wait::{FairMutex, WaitError};
use rkllm::GenerateOptions;

/// Waits (with a generous hang guard) until `n` callers are queued.
fn until(mut queued: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !queued() {
        assert!(Instant::now() < deadline, "waiters never queued");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_session_goes_to_waiters_in_arrival_order() {
    let model = Arc::new(common::load(&MockModel::new().answer("ok")));
    let held = model.session().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (m, order) = (Arc::clone(&model), Arc::clone(&order));
        waiters.push(thread::spawn(move || {
            let mut session = m.session_wait(Duration::from_secs(30)).unwrap();
            order.lock().unwrap().push(i);
            session.complete("q", &GenerateOptions::new()).unwrap();
        }));
        // Each waiter is in the queue before the next one arrives.
        until(|| model.session_waiting() == i + 1);
    }
    // A newcomer does not overtake the queue, even with the session about to be free.
    assert!(matches!(model.session(), Err(rkllm::Error::Busy)));
    drop(held);
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    assert!(model.session().is_ok());
}

#[test]
fn a_waiter_gives_up_after_its_timeout_and_leaves_the_queue() {
    let model = common::load(&MockModel::new());
    let held = model.session().unwrap();
    let started = Instant::now();
    let err = model.session_wait(Duration::from_millis(80)).unwrap_err();
    assert!(matches!(err, WaitError::TimedOut { waited } if waited >= Duration::from_millis(80)));
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert_eq!(model.session_waiting(), 0);
    // It converts to Error::QueueTimedOut (503, not the full queue's 429) for `?` users.
    let err = rkllm::Error::from(err);
    assert!(matches!(err, rkllm::Error::QueueTimedOut { .. }), "{err:?}");
    assert_eq!(err.kind().http_status(), 503);
    drop(held);
    assert!(
        model.session().is_ok(),
        "the timed-out waiter holds nothing"
    );
}

#[test]
fn beyond_the_queue_bound_a_caller_is_refused_at_once() {
    let model = Arc::new(common::load(&MockModel::new()));
    model.set_max_session_waiters(2);
    let held = model.session().unwrap();
    let mut waiters = Vec::new();
    for i in 0..2 {
        let m = Arc::clone(&model);
        waiters.push(thread::spawn(move || {
            m.session_wait(Duration::from_secs(30)).map(drop)
        }));
        until(|| model.session_waiting() == i + 1);
    }
    let started = Instant::now();
    let err = model.session_wait(Duration::from_secs(30)).unwrap_err();
    assert_eq!(err, WaitError::QueueFull { limit: 2 });
    // Refused without waiting out its 30 s (a generous bound, not a speed check).
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    for w in waiters {
        w.join().unwrap().unwrap();
    }
}

#[test]
fn a_fair_mutex_hands_its_value_over_in_order_with_the_same_rules() {
    let shared = FairMutex::new(Vec::new(), 8);
    let held = shared.lock(Duration::ZERO).unwrap();
    let mut waiters = Vec::new();
    for i in 0..5 {
        let s = shared.clone();
        waiters.push(thread::spawn(move || {
            s.lock(Duration::from_secs(30)).unwrap().push(i);
        }));
        until(|| shared.waiting() == i + 1);
    }
    assert!(shared.try_lock().is_none());
    assert!(matches!(
        shared.lock(Duration::from_millis(20)),
        Err(WaitError::TimedOut { .. })
    ));
    drop(held);
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(*shared.try_lock().unwrap(), [0, 1, 2, 3, 4]);
}
