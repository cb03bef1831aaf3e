//! Owned token streams: a run that holds its session, so it can be returned from a function
//! or moved into a `'static` thread or task.

use std::borrow::BorrowMut;

use crate::error::Result;
use crate::ffi::AbortHandle;
use crate::input::{GenerateOptions, Input};
use crate::session::Session;
use crate::stream::{Completion, FinishReason, Refused, RunCore, RunEnd, Timings, Token};

impl Session {
    /// Like [`generate`](Session::generate), but the stream owns the session: it can be
    /// returned from a function or moved into a `'static` thread or task, and gives the
    /// session back with [`OwnedTokenStream::into_session`]. When the run cannot start, the
    /// session comes back in the [`Refused`] value (`?` turns it into its
    /// [`Error`](crate::Error)).
    pub fn into_generate(
        self,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> std::result::Result<OwnedTokenStream<Session>, Refused<Session>> {
        OwnedTokenStream::new(self, input, options)
    }
}

/// A run that owns its session: `'static` when `S` is, so it can be returned from a
/// function, sent to another thread or moved into an async task. Created by
/// [`Session::into_generate`] (or [`OwnedTokenStream::new`] for any owner of a session, such
/// as a [`FairGuard`](crate::wait::FairGuard)).
///
/// It yields the same items as [`TokenStream`](crate::TokenStream) as an `Iterator`; with the `async` feature,
/// `into_async` turns it into a `futures_core::Stream` (an `AsyncTokenStream`). [`into_session`](OwnedTokenStream::into_session) gives the
/// session back, stopping the run first if it is not over; dropping the stream aborts the run
/// and waits for the runtime to return (at most the model's stop timeout), then drops the
/// session.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, GenerateOptions, Model, OwnedTokenStream, Runtime, Session};
/// fn start(session: Session, prompt: &str) -> rkllm::Result<OwnedTokenStream> {
///     Ok(session.into_generate(prompt, &GenerateOptions::new())?)
/// }
/// let file = MockModel::new().answer("Hello from a thread").write_temp_file()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let stream = start(model.session()?, "Hi")?;
/// let worker = std::thread::spawn(move || {
///     let mut stream = stream;
///     let text: String = stream.by_ref().map(|t| t.unwrap().text).collect();
///     (text, stream.into_session())
/// });
/// let (text, _session) = worker.join().unwrap();
/// assert_eq!(text, "Hello from a thread");
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
pub struct OwnedTokenStream<S: BorrowMut<Session> = Session> {
    // Declared first: dropped (the run stopped) before the session.
    core: RunCore,
    session: S,
}

impl<S: BorrowMut<Session>> std::fmt::Debug for OwnedTokenStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedTokenStream")
            .field("tokens", &self.core.timings().generated_tokens)
            .field("finish", &self.core.finish_reason())
            .finish_non_exhaustive()
    }
}

impl<S: BorrowMut<Session>> OwnedTokenStream<S> {
    /// Starts a run on `session` (see [`Session::generate`]). When the run cannot start, the
    /// session comes back in the [`Refused`] value.
    pub fn new(
        mut session: S,
        input: impl Into<Input>,
        options: &GenerateOptions,
    ) -> std::result::Result<Self, Refused<S>> {
        match session
            .borrow_mut()
            .start_core(input.into(), options, false)
        {
            Ok(core) => Ok(OwnedTokenStream { core, session }),
            Err(error) => Err(Refused::new(error, session)),
        }
    }

    /// Gives the session back. A run that is not over is stopped first (as when the stream
    /// is dropped), within the model's stop timeout.
    pub fn into_session(self) -> S {
        let OwnedTokenStream { core, session } = self;
        drop(core);
        session
    }

    /// Why the run stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.core.finish_reason()
    }

    /// How the runtime ended the run, once it has.
    pub fn run_end(&self) -> Option<RunEnd> {
        self.core.run_end()
    }

    /// Stops the run: no more tokens are delivered, and the stream ends with
    /// [`FinishReason::Aborted`]. Unlike dropping the stream, this never waits: an async
    /// consumer can abort, then poll the stream to its end without blocking its executor.
    pub fn abort(&mut self) {
        self.core.abort();
    }

    /// A handle that stops this run, and only this run, from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.core.abort_handle()
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        self.core.timings()
    }

    /// Generated token ids so far, in order (see [`TokenStream::token_ids`](crate::TokenStream::token_ids)).
    pub fn token_ids(&self) -> &[i32] {
        self.core.token_ids()
    }

    /// Runs to the end (blocking) and collects the result; the session comes back with it.
    pub fn complete(mut self) -> (Result<Completion>, S) {
        let completion = self.core.complete();
        (completion, self.into_session())
    }

    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
}

impl<S: BorrowMut<Session>> Iterator for OwnedTokenStream<S> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Self::Item> {
        self.core.next_blocking()
    }
}
