//! The async face of the streams (feature `async`): [`AsyncStream`], a `futures_core::Stream`
//! of the same items as the iterator it wraps, made by
//! [`TokenStream::into_async`](crate::TokenStream::into_async) and
//! [`ChatStream::into_async`](crate::chat::ChatStream::into_async). It dereferences to the
//! stream it wraps, so every accessor (`abort`, `abort_handle`, `token_ids`, `timings`,
//! `finish_reason`, `run_end`, `stop_async`, ...) is the same one. (A separate type, so that
//! `next()` is never ambiguous between `Iterator` and `StreamExt`.)
//!
//! No runtime is involved: polling takes the next event from the run's channel, and when
//! there is none, leaves the task's waker with the run, which the runtime's callback wakes
//! after every event it delivers (no extra thread or channel per token). The waker is
//! registered before looking at the channel a second time, so an event that arrives in
//! between is not missed.
//!
//! Errors and a panic in the runtime callback arrive as for the iterator (the panic is
//! re-raised in the task that polls). Dropping a stream never blocks, so async code drops it
//! where it likes: the runtime is asked to abort on a thread of its own, and the session's
//! next call waits for the run (at most the model's stop timeout). To wait for the run in
//! async code, `stream.stop_async().await`, or after the drop
//! [`Session::wait_idle_async`](crate::Session::wait_idle_async) before the next call.
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
//! One [`ChatSession`](crate::chat::ChatSession) in a [`FairMutex`](crate::wait::FairMutex) for the whole server (its
//! rolling prompt cache carries over from request to request); per request, wait in turn,
//! start a [`ChatStream`] that holds the session's guard, and poll
//! it as a `Stream`.
//! The repository's `examples/serve` is the full OpenAI-compatible server.
//!
//! ```
//! # #[cfg(feature = "mock")] mod doc {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use rkllm::chat::{ChatSession, ChatStream, Conversation, SystemStyle};
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
//!         ChatStream::new(session, conversation, user, &options)
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
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::chat::{ChatStream, Conversation};
use crate::error::Result;
use crate::session::TokenStream;
use crate::stream::Token;

/// A [`TokenStream`] or a [`ChatStream`] as a `futures_core::Stream` (feature `async`); see
/// the [module docs](self). Dereferences to the stream it wraps, for its accessors.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub struct AsyncStream<T> {
    inner: T,
}

impl<T> AsyncStream<T> {
    /// The stream it wraps (a blocking iterator again, or to give the session back).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> Deref for AsyncStream<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for AsyncStream<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<S> TokenStream<S> {
    /// This run as a `futures_core::Stream` (feature `async`).
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub fn into_async(self) -> AsyncStream<Self> {
        AsyncStream { inner: self }
    }
}

impl<S, C: BorrowMut<Conversation>> ChatStream<S, C> {
    /// This turn as a `futures_core::Stream` (feature `async`). The turn is recorded in the
    /// conversation when the stream ends.
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub fn into_async(self) -> AsyncStream<Self> {
        AsyncStream { inner: self }
    }
}

impl<S: Unpin> Stream for AsyncStream<TokenStream<S>> {
    type Item = Result<Token>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}

impl<S: Unpin, C: BorrowMut<Conversation> + Unpin> Stream for AsyncStream<ChatStream<S, C>> {
    type Item = Result<Token>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}
