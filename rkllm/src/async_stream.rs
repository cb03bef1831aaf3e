//! The async face of the owned token streams (feature `async`): [`AsyncTokenStream`] and
//! [`AsyncChatStream`], `futures_core::Stream`s of the same items as the iterators, made by
//! [`OwnedTokenStream::into_async`] and [`OwnedChatStream::into_async`]. (They are separate
//! types so that `next()` is never ambiguous between `Iterator` and `StreamExt`.)
//!
//! No runtime is involved: polling takes the next event from the run's channel, and when
//! there is none, leaves the task's waker with the run, which the runtime's callback wakes
//! after every event it delivers (no extra thread or channel per token). The waker is
//! registered before looking at the channel a second time, so an event that arrives in
//! between is not missed.
//!
//! Errors and a panic in the runtime callback arrive as for the iterator (the panic is
//! re-raised in the task that polls). Dropping a stream aborts its run and waits for the
//! runtime to return, at most the model's stop timeout; on a board a runtime that is still
//! prefilling returns only at the end of the prefill, so a server that may drop a stream
//! mid-prefill drops it off the executor (`tokio::task::spawn_blocking`), or calls `abort`
//! and polls the stream to its end, which never blocks.
//!
//! ```
//! # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
//! use futures::StreamExt;
//! use rkllm::{mock::MockModel, GenerateOptions, Model, Runtime};
//! let file = MockModel::new().answer("Hello async").write_temp_file()?;
//! let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
//! let mut stream = model.session()?.into_generate("Hi", &GenerateOptions::new())?.into_async();
//! // Any executor: here the `futures` crate's; tokio, smol and others alike.
//! let text = futures::executor::block_on(async move {
//!     let mut text = String::new();
//!     while let Some(token) = stream.next().await {
//!         text.push_str(&token?.text);
//!     }
//!     Ok::<_, rkllm::Error>(text)
//! })?;
//! assert_eq!(text, "Hello async");
//! # Ok(()) }
//! # #[cfg(not(feature = "mock"))] fn main() {}
//! ```
//!
//! ## The server pattern
//!
//! One [`ChatSession`] in a [`FairMutex`](crate::wait::FairMutex) for the whole server (its
//! rolling prompt cache carries over from request to request); per request, wait in turn,
//! start an [`OwnedChatStream`] that holds the session's guard, and poll it as a `Stream`.
//! The repository's `examples/serve` is the full OpenAI-compatible server.
//!
//! ```
//! # #[cfg(feature = "mock")] mod doc {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use rkllm::chat::{ChatSession, Conversation, OwnedChatStream, SystemStyle};
//! use rkllm::{mock::MockModel, wait::FairMutex, GenerateOptions, Model, Runtime};
//!
//! /// One request: wait in turn for the server's one chat session, then stream the reply.
//! async fn reply(chat: FairMutex<ChatSession>, user: String) -> rkllm::Result<String> {
//!     // A full queue (Error::QueueFull, 429) or a timeout (Error::QueueTimedOut, 503).
//!     let session = chat.lock_async(Duration::from_secs(120)).await?;
//!     let conversation = Conversation::new(SystemStyle::Merge);
//!     let options = GenerateOptions::new().max_tokens(256);
//!     // Starting a turn prepares the prompt and its cache: blocking work.
//!     let mut stream = tokio::task::spawn_blocking(move || {
//!         OwnedChatStream::new(session, conversation, user, &options)
//!     })
//!     .await
//!     .expect("the task ran")?
//!     .into_async();
//!     let mut text = String::new();
//!     while let Some(token) = stream.next().await {
//!         text.push_str(&token?.text); // a server sends an SSE chunk here
//!     }
//!     Ok(text) // dropping the stream hands the session to the next request
//! }
//!
//! #[tokio::main]
//! pub async fn main() -> rkllm::Result<()> {
//!     let file = MockModel::new().echo().write_temp_file()?;
//!     let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
//!     let chat = FairMutex::new(ChatSession::new(model.into_session()?), 16);
//!     let (a, b) = tokio::join!(reply(chat.clone(), "Hi".into()), reply(chat, "Yo".into()));
//!     assert_eq!((a?, b?), ("Hi".to_string(), "Yo".to_string()));
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> { doc::main() }
//! # #[cfg(not(feature = "mock"))] fn main() {}
//! ```

use std::borrow::BorrowMut;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::chat::{ChatSession, OwnedChatStream};
use crate::error::Result;
use crate::owned::OwnedTokenStream;
use crate::session::Session;
use crate::stream::{FinishReason, Timings, Token};

/// An [`OwnedTokenStream`] as a `futures_core::Stream` (feature `async`); see the
/// [module docs](self).
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub struct AsyncTokenStream<S: BorrowMut<Session> = Session> {
    inner: OwnedTokenStream<S>,
}

impl<S: BorrowMut<Session>> OwnedTokenStream<S> {
    /// This run as a `futures_core::Stream` (feature `async`).
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub fn into_async(self) -> AsyncTokenStream<S> {
        AsyncTokenStream { inner: self }
    }
}

impl<S: BorrowMut<Session>> AsyncTokenStream<S> {
    /// Stops the run without waiting; the stream then ends with
    /// [`FinishReason::Aborted`].
    pub fn abort(&mut self) {
        self.inner.abort();
    }

    /// Why the run stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.inner.finish_reason()
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        self.inner.timings()
    }

    /// The owned stream, for everything else it offers.
    pub fn get_ref(&self) -> &OwnedTokenStream<S> {
        &self.inner
    }

    /// The owned stream (as a blocking iterator, or to give the session back).
    pub fn into_inner(self) -> OwnedTokenStream<S> {
        self.inner
    }

    /// Gives the session back, stopping the run first if it is not over (see
    /// [`OwnedTokenStream::into_session`]).
    pub fn into_session(self) -> S {
        self.inner.into_session()
    }
}

impl<S: BorrowMut<Session> + Unpin> Stream for AsyncTokenStream<S> {
    type Item = Result<Token>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.core_mut().poll_item(cx)
    }
}

/// An [`OwnedChatStream`] as a `futures_core::Stream` (feature `async`); see the
/// [module docs](self). The turn is recorded in the conversation when the stream ends.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub struct AsyncChatStream<S: BorrowMut<ChatSession> = ChatSession> {
    inner: OwnedChatStream<S>,
}

impl<S: BorrowMut<ChatSession>> OwnedChatStream<S> {
    /// This turn as a `futures_core::Stream` (feature `async`).
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub fn into_async(self) -> AsyncChatStream<S> {
        AsyncChatStream { inner: self }
    }
}

impl<S: BorrowMut<ChatSession>> AsyncChatStream<S> {
    /// Stops the reply without waiting; the stream then ends with
    /// [`FinishReason::Aborted`].
    pub fn abort(&mut self) {
        self.inner.abort();
    }

    /// Why the reply stopped, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.inner.finish_reason()
    }

    /// Timings so far (final once the stream has ended).
    pub fn timings(&self) -> Timings {
        self.inner.timings()
    }

    /// The owned stream, for everything else it offers.
    pub fn get_ref(&self) -> &OwnedChatStream<S> {
        &self.inner
    }

    /// The owned stream.
    pub fn into_inner(self) -> OwnedChatStream<S> {
        self.inner
    }

    /// Gives the chat session and the conversation back (see
    /// [`OwnedChatStream::into_parts`]).
    pub fn into_parts(self) -> (S, crate::chat::Conversation) {
        self.inner.into_parts()
    }
}

impl<S: BorrowMut<ChatSession> + Unpin> Stream for AsyncChatStream<S> {
    type Item = Result<Token>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}
