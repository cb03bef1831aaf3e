//! Waiting in turn for the NPU: a first-come-first-served queue with a timeout and a bound on
//! the number of waiters, in a blocking and an async form.
//!
//! The 1.1.x runtime runs one inference per model at a time, so a server's requests have to
//! queue somewhere. [`Model::session_wait`](crate::Model::session_wait) and
//! [`Model::session_async`](crate::Model::session_async) queue for the model's one
//! [`Session`](crate::Session); [`FairMutex`] queues for any value, typically a long-lived
//! [`ChatSession`](crate::chat::ChatSession), whose rolling prompt cache is then kept across
//! requests. Either way:
//! * the turn goes to the caller that has waited longest (it is handed over on release, so a
//!   newcomer never overtakes a waiter);
//! * a caller waits at most its timeout, then gets [`WaitError::TimedOut`];
//! * when the queue already holds its maximum, a caller gets [`WaitError::QueueFull`] at
//!   once, so a server can answer 429 with `Retry-After` rather than pile up work (a timeout
//!   answers 503; the two convert into distinct [`Error`] variants and kinds);
//! * the async forms need no runtime: their timeouts are served by one helper thread that
//!   only exists while a timeout is pending. Dropping an async wait leaves the queue.

use std::borrow::{Borrow, BorrowMut};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How many callers may wait at once unless set otherwise.
pub const DEFAULT_MAX_WAITERS: usize = 64;

/// Why a wait for the turn ended without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The turn did not come within the timeout (a server answers 503 with `Retry-After`).
    #[error("waited {waited:?} and the model did not come free; try again later")]
    TimedOut {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The queue already held its maximum number of waiters (a server answers 429 with
    /// `Retry-After`).
    #[error("{limit} requests are already waiting for the model; try again later")]
    QueueFull {
        /// The maximum number of waiters.
        limit: usize,
    },
}

/// A full queue is [`Error::QueueFull`] (kind `Busy`, 429); a timeout is
/// [`Error::QueueTimedOut`] (kind `TimedOut`, 503).
impl From<WaitError> for Error {
    fn from(e: WaitError) -> Error {
        match e {
            WaitError::TimedOut { waited } => Error::QueueTimedOut { waited },
            WaitError::QueueFull { limit } => Error::QueueFull { limit },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One caller in the queue.
#[derive(Debug, Default)]
struct Waiter {
    /// Set (under the gate's lock) when the turn is handed to this waiter.
    granted: AtomicBool,
    /// The async waiter's waker, set and taken under the gate's lock.
    waker: Mutex<Option<Waker>>,
}

#[derive(Debug)]
struct GateState {
    held: bool,
    waiters: VecDeque<Arc<Waiter>>,
    max_waiters: usize,
}

/// A turn that one caller holds at a time, handed over in arrival order.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn new(max_waiters: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                held: false,
                waiters: VecDeque::new(),
                max_waiters,
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn set_max_waiters(&self, max: usize) {
        lock(&self.state).max_waiters = max;
    }

    pub(crate) fn waiting(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// Takes the turn if it is free and nobody waits for it.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut state = lock(&self.state);
        if state.held || !state.waiters.is_empty() {
            return false;
        }
        state.held = true;
        true
    }

    /// Takes the turn if free (`None`), or joins the queue.
    fn enqueue(&self) -> Result<Option<Arc<Waiter>>, WaitError> {
        let mut state = lock(&self.state);
        if !state.held && state.waiters.is_empty() {
            state.held = true;
            return Ok(None);
        }
        if state.waiters.len() >= state.max_waiters {
            return Err(WaitError::QueueFull {
                limit: state.max_waiters,
            });
        }
        let waiter = Arc::new(Waiter::default());
        state.waiters.push_back(Arc::clone(&waiter));
        Ok(Some(waiter))
    }

    /// Waits for the turn, at most `timeout`.
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<(), WaitError> {
        let started = Instant::now();
        let Some(waiter) = self.enqueue()? else {
            return Ok(());
        };
        let deadline = started.checked_add(timeout);
        let mut state = lock(&self.state);
        loop {
            if waiter.granted.load(Ordering::Acquire) {
                return Ok(());
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => {
                    state.waiters.retain(|w| !Arc::ptr_eq(w, &waiter));
                    return Err(WaitError::TimedOut {
                        waited: now - started,
                    });
                }
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            state = self
                .cv
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Gives the turn to the longest waiter, or frees it.
    pub(crate) fn release(&self) {
        let mut state = lock(&self.state);
        Self::hand_over(&mut state);
        drop(state);
        self.cv.notify_all();
    }

    fn hand_over(state: &mut GateState) {
        match state.waiters.pop_front() {
            Some(next) => {
                next.granted.store(true, Ordering::Release);
                if let Some(waker) = lock(&next.waker).take() {
                    waker.wake();
                }
            }
            None => state.held = false,
        }
    }

    /// A waiter gives up: it leaves the queue, or passes on a turn it was handed.
    fn cancel(&self, waiter: &Arc<Waiter>) {
        let mut state = lock(&self.state);
        if waiter.granted.load(Ordering::Acquire) {
            Self::hand_over(&mut state);
            drop(state);
            self.cv.notify_all();
        } else {
            state.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        }
    }

    /// The async wait for the turn.
    pub(crate) fn wait(self: &Arc<Self>, timeout: Duration) -> GateWait {
        self.wait_with(timeout, &TIMER)
    }

    /// [`wait`](Self::wait) with its timeout served by `timer`.
    fn wait_with(self: &Arc<Self>, timeout: Duration, timer: &'static Timer) -> GateWait {
        let started = Instant::now();
        GateWait {
            gate: Arc::clone(self),
            started,
            deadline: started.checked_add(timeout),
            state: WaitState::Start,
            timer,
            wake_up: None,
        }
    }
}

#[derive(Debug)]
enum WaitState {
    Start,
    Queued(Arc<Waiter>),
    Done,
}

/// The async wait for a [`Gate`]'s turn; leaves the queue when dropped.
///
/// While it waits it holds one entry in the timer for its deadline, whatever the number of
/// polls; the entry goes when the wait ends (granted, timed out or refused) or is dropped.
#[derive(Debug)]
pub(crate) struct GateWait {
    gate: Arc<Gate>,
    started: Instant,
    deadline: Option<Instant>,
    state: WaitState,
    timer: &'static Timer,
    /// The timer entry for the deadline, while queued.
    wake_up: Option<TimerEntry>,
}

impl Future for GateWait {
    type Output = Result<(), WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let WaitState::Start = this.state {
            match this.gate.enqueue() {
                Ok(None) => {
                    this.state = WaitState::Done;
                    return Poll::Ready(Ok(()));
                }
                Ok(Some(waiter)) => this.state = WaitState::Queued(waiter),
                Err(e) => {
                    this.state = WaitState::Done;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let WaitState::Queued(waiter) = &this.state else {
            panic!("GateWait polled after it completed");
        };
        let mut state = lock(&this.gate.state);
        if waiter.granted.load(Ordering::Acquire) {
            drop(state);
            this.state = WaitState::Done;
            this.wake_up = None;
            return Poll::Ready(Ok(()));
        }
        let now = Instant::now();
        if this.deadline.is_some_and(|d| now >= d) {
            state.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
            drop(state);
            this.state = WaitState::Done;
            this.wake_up = None;
            return Poll::Ready(Err(WaitError::TimedOut {
                waited: now - this.started,
            }));
        }
        // Registered under the gate's lock, where the turn is handed over: no lost wake-up.
        *lock(&waiter.waker) = Some(cx.waker().clone());
        drop(state);
        if let Some(deadline) = this.deadline {
            // One entry per wait: a re-poll updates its waker rather than adding another.
            let pending = this.wake_up.as_ref().is_some_and(|e| e.update(cx.waker()));
            if !pending {
                this.wake_up = Some(this.timer.add(deadline, cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for GateWait {
    fn drop(&mut self) {
        if let WaitState::Queued(waiter) = &self.state {
            self.gate.cancel(waiter);
        }
        // The timer entry (if any) goes with `wake_up`.
    }
}

struct Slot<T> {
    gate: Arc<Gate>,
    value: Mutex<Option<T>>,
}

/// A value that callers take in turn, first come, first served, with a timeout and a bound
/// on the number of waiters; see the [module docs](self). Cheap to clone (clones share the
/// value and the queue).
///
/// A server keeps its one [`ChatSession`](crate::chat::ChatSession) in a `FairMutex`, so the
/// rolling prompt cache carries over from request to request, and each request takes the
/// session with [`lock_async`](FairMutex::lock_async). The guard is `'static`, so it can move
/// into the owned stream of the request's run
/// ([`ChatStream`](crate::chat::ChatStream)); the next request gets its turn when
/// that stream is dropped.
///
/// ```
/// use std::time::Duration;
/// use rkllm::wait::{FairMutex, WaitError};
/// let shared = FairMutex::new(0u32, 1);
/// let mut first = shared.lock(Duration::ZERO).unwrap();
/// *first += 1;
/// let other = shared.clone();
/// let waiter = std::thread::spawn(move || *other.lock(Duration::from_secs(5)).unwrap());
/// while shared.waiting() == 0 {
///     std::thread::yield_now();
/// }
/// // One waiter is the limit here: a third caller is refused at once.
/// assert!(matches!(shared.lock(Duration::from_secs(5)), Err(WaitError::QueueFull { limit: 1 })));
/// drop(first);
/// assert_eq!(waiter.join().unwrap(), 1);
/// ```
pub struct FairMutex<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Clone for FairMutex<T> {
    fn clone(&self) -> Self {
        FairMutex {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<T> fmt::Debug for FairMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FairMutex")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl<T> FairMutex<T> {
    /// Shares `value`, with at most `max_waiters` callers waiting for it at once.
    pub fn new(value: T, max_waiters: usize) -> FairMutex<T> {
        FairMutex {
            slot: Arc::new(Slot {
                gate: Arc::new(Gate::new(max_waiters)),
                value: Mutex::new(Some(value)),
            }),
        }
    }

    /// How many callers are waiting now.
    pub fn waiting(&self) -> usize {
        self.slot.gate.waiting()
    }

    fn guard(&self) -> FairGuard<T> {
        let value = lock(&self.slot.value).take();
        FairGuard {
            value: Some(value.expect("the value is in its slot while the turn is free")),
            slot: Arc::clone(&self.slot),
        }
    }

    /// Takes the value if it is free and nobody waits for it.
    pub fn try_lock(&self) -> Option<FairGuard<T>> {
        self.slot.gate.try_acquire().then(|| self.guard())
    }

    /// Waits for the value in turn, at most `timeout`, blocking this thread.
    pub fn lock(&self, timeout: Duration) -> Result<FairGuard<T>, WaitError> {
        self.slot.gate.acquire(timeout)?;
        Ok(self.guard())
    }

    /// Waits for the value in turn, at most `timeout`, without blocking: executor-agnostic,
    /// and dropping the future leaves the queue. The caller joins the queue when the future is
    /// first polled. The future is `Unpin`, `'static` when `T` is, and `Send` when `T` is
    /// `Send`.
    pub fn lock_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<FairGuard<T>, WaitError>> + Unpin {
        FairLock {
            mutex: self.clone(),
            wait: self.slot.gate.wait(timeout),
        }
    }
}

/// The future of [`FairMutex::lock_async`].
#[must_use = "a future does nothing unless polled"]
struct FairLock<T> {
    mutex: FairMutex<T>,
    wait: GateWait,
}

impl<T> fmt::Debug for FairLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FairLock").finish_non_exhaustive()
    }
}

impl<T> Future for FairLock<T> {
    type Output = Result<FairGuard<T>, WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.wait).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(this.mutex.guard())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The value of a [`FairMutex`], held by one caller; the next waiter gets it when this is
/// dropped. `'static` when `T` is, so it can move into a task or an owned stream.
pub struct FairGuard<T> {
    value: Option<T>,
    slot: Arc<Slot<T>>,
}

impl<T: fmt::Debug> fmt::Debug for FairGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FairGuard").field(&**self).finish()
    }
}

impl<T> Deref for FairGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("present until dropped")
    }
}

impl<T> DerefMut for FairGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("present until dropped")
    }
}

impl<T> Borrow<T> for FairGuard<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T> BorrowMut<T> for FairGuard<T> {
    fn borrow_mut(&mut self) -> &mut T {
        self
    }
}

impl<T> Drop for FairGuard<T> {
    fn drop(&mut self) {
        *lock(&self.slot.value) = self.value.take();
        self.slot.gate.release();
    }
}

/// Wakes `waker` at `at` (or soon after), from the timer's helper thread. The entry stays
/// until it is due; for short, repeated wake-ups. A wake-up nobody needs any more is harmless.
pub(crate) fn wake_at(at: Instant, waker: Waker) {
    TIMER.add(at, waker).forget();
}

/// Wakes `waker` at `at` (or soon after), until the returned entry is dropped.
pub(crate) fn wake_at_unless_dropped(at: Instant, waker: Waker) -> TimerEntry {
    TIMER.add(at, waker)
}

/// The process's timer for async timeouts.
static TIMER: Timer = Timer::new();

/// Wakes registered wakers at their instants, from one helper thread that runs only while
/// entries are pending: it exits when the last one is due or removed, and is started again
/// by the next entry.
#[derive(Debug)]
pub(crate) struct Timer {
    state: Mutex<TimerState>,
    cv: Condvar,
}

#[derive(Debug)]
struct TimerState {
    wakers: BTreeMap<(Instant, u64), Waker>,
    next: u64,
    /// Whether the helper thread runs (set before it starts, cleared by it as it exits).
    running: bool,
}

impl Timer {
    pub(crate) const fn new() -> Timer {
        Timer {
            state: Mutex::new(TimerState {
                wakers: BTreeMap::new(),
                next: 0,
                running: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Registers `waker` to be woken at `at`; the entry is removed when it is due or when
    /// the returned handle is dropped, whichever comes first.
    pub(crate) fn add(&'static self, at: Instant, waker: Waker) -> TimerEntry {
        let mut state = lock(&self.state);
        let key = (at, state.next);
        state.next += 1;
        state.wakers.insert(key, waker);
        let entry = TimerEntry {
            timer: self,
            key: Some(key),
        };
        if state.running {
            drop(state);
            self.cv.notify_all();
            return entry;
        }
        state.running = true;
        drop(state);
        let spawned = std::thread::Builder::new()
            .name("rkllm-wait-timer".into())
            .spawn(move || self.serve());
        if spawned.is_err() {
            // No thread for timeouts: wake everything now, so the waiters poll again (and
            // look at their deadlines) rather than sleep forever.
            let mut state = lock(&self.state);
            state.running = false;
            let due = std::mem::take(&mut state.wakers);
            drop(state);
            due.into_values().for_each(Waker::wake);
        }
        entry
    }

    /// The helper thread: wakes what is due, sleeps until the next entry, exits when none is
    /// left.
    fn serve(&self) {
        loop {
            let mut state = lock(&self.state);
            let due = loop {
                let now = Instant::now();
                let later = state.wakers.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut state.wakers, later);
                if !due.is_empty() {
                    break due;
                }
                let Some(&(first, _)) = state.wakers.keys().next() else {
                    state.running = false;
                    return;
                };
                state = self
                    .cv
                    .wait_timeout(state, first - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            };
            drop(state);
            due.into_values().for_each(Waker::wake);
        }
    }

    /// How many entries are pending.
    #[cfg(test)]
    fn entries(&self) -> usize {
        lock(&self.state).wakers.len()
    }

    /// Whether the helper thread runs.
    #[cfg(test)]
    fn running(&self) -> bool {
        lock(&self.state).running
    }
}

/// A pending wake-up of a [`Timer`]; dropping it removes the entry (if it is not due yet).
pub(crate) struct TimerEntry {
    timer: &'static Timer,
    /// `None` once forgotten.
    key: Option<(Instant, u64)>,
}

impl TimerEntry {
    /// The instant the entry wakes at.
    fn at(&self) -> Option<Instant> {
        self.key.map(|(at, _)| at)
    }

    /// Makes the entry wake `waker` instead, unless it already would. Returns false when the
    /// entry is no longer pending (it was due, or the timer had no thread).
    pub(crate) fn update(&self, waker: &Waker) -> bool {
        let Some(key) = self.key else {
            return false;
        };
        let mut state = lock(&self.timer.state);
        match state.wakers.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    /// Leaves the entry in place until it is due.
    fn forget(mut self) {
        self.key = None;
    }
}

impl Drop for TimerEntry {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut state = lock(&self.timer.state);
        if state.wakers.remove(&key).is_some() && state.wakers.is_empty() {
            // Nothing left to wait for: let the helper thread see it and exit now rather than
            // at the removed entry's instant.
            drop(state);
            self.timer.cv.notify_all();
        }
    }
}

impl fmt::Debug for TimerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerEntry")
            .field("at", &self.at())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }

    fn poll(wait: &mut GateWait, waker: &Waker) -> Poll<Result<(), WaitError>> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    /// Waits (a hang guard, not a speed check) until the timer's thread has exited.
    fn until_stopped(timer: &Timer) {
        let limit = Instant::now() + Duration::from_secs(30);
        while timer.running() {
            assert!(Instant::now() < limit, "the timer thread did not exit");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_wait_holds_one_timer_entry_however_often_it_is_polled_and_frees_it_when_granted() {
        // A timer of the test's own, so other tests' waits do not show in its figures.
        static TIMER: Timer = Timer::new();
        let timer = &TIMER;
        let gate = Arc::new(Gate::new(8));
        assert!(gate.try_acquire());
        let mut wait = gate.wait_with(Duration::from_secs(600), timer);
        let (_, first) = counting_waker();
        let (_, second) = counting_waker();
        for waker in [&first, &first, &second, &first, &second] {
            assert!(poll(&mut wait, waker).is_pending());
            assert_eq!(timer.entries(), 1);
        }
        assert!(timer.running());
        gate.release();
        assert_eq!(poll(&mut wait, &first), Poll::Ready(Ok(())));
        assert_eq!(timer.entries(), 0, "the granted wait's entry is removed");
        // The thread slept towards a deadline 600 s away; with nothing left it exits now.
        until_stopped(timer);
        drop(wait);
        gate.release();
        assert!(gate.try_acquire(), "the turn was passed back");
    }

    #[test]
    fn dropped_waits_free_their_entries_and_the_thread_stops_and_restarts_on_demand() {
        // A timer of the test's own, so other tests' waits do not show in its figures.
        static TIMER: Timer = Timer::new();
        let timer = &TIMER;
        let gate = Arc::new(Gate::new(10_000));
        assert!(gate.try_acquire());
        let (_, waker) = counting_waker();
        // Fewer under Miri, where each cancellation's queue scan is slow.
        const N: usize = if cfg!(miri) { 100 } else { 1_000 };
        let mut waits: Vec<GateWait> = (0..N)
            .map(|_| gate.wait_with(Duration::from_secs(600), timer))
            .collect();
        for _ in 0..3 {
            for wait in &mut waits {
                assert!(poll(wait, &waker).is_pending());
            }
        }
        assert_eq!(timer.entries(), N);
        assert_eq!(gate.waiting(), N);
        // The requests end early (their clients went away).
        waits.truncate(10);
        assert_eq!(timer.entries(), 10);
        waits.clear();
        assert_eq!(timer.entries(), 0);
        assert_eq!(gate.waiting(), 0);
        until_stopped(timer);

        // The next wait starts the thread again, and its timeout still fires.
        let (count, waker) = counting_waker();
        let mut wait = gate.wait_with(Duration::from_millis(20), timer);
        assert!(poll(&mut wait, &waker).is_pending());
        assert!(timer.running());
        let limit = Instant::now() + Duration::from_secs(30);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < limit, "the timeout never woke the wait");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(
            poll(&mut wait, &waker),
            Poll::Ready(Err(WaitError::TimedOut { .. }))
        ));
        assert_eq!(timer.entries(), 0);
        until_stopped(timer);
        assert_eq!(gate.waiting(), 0);
    }

    #[test]
    fn a_refused_or_immediate_wait_adds_no_timer_entry() {
        // A timer of the test's own, so other tests' waits do not show in its figures.
        static TIMER: Timer = Timer::new();
        let timer = &TIMER;
        let gate = Arc::new(Gate::new(0));
        let (_, waker) = counting_waker();
        let mut free = gate.wait_with(Duration::from_secs(600), timer);
        assert_eq!(poll(&mut free, &waker), Poll::Ready(Ok(())));
        let mut full = gate.wait_with(Duration::from_secs(600), timer);
        assert_eq!(
            poll(&mut full, &waker),
            Poll::Ready(Err(WaitError::QueueFull { limit: 0 }))
        );
        assert_eq!(timer.entries(), 0);
        assert!(!timer.running());
    }
}
