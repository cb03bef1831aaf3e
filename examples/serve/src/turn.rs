//! A running reply, and all of this server's contact with the library's stream types (a
//! chat turn, or a raw run for `/v1/completions`), so that a change of those types touches
//! this module only.

use std::borrow::{Borrow, BorrowMut};
use std::future::Future;
use std::pin::Pin;

use rkllm::chat::{ChatSession, ChatStream, Conversation};
use rkllm::wait::FairGuard;
use rkllm::{AsyncStream, GenerateOptions, Input, Session, Timings, Token, TokenStream};

use crate::log::RequestStats;
use crate::openai::{error_of, ApiError};
use crate::AppState;

/// The server's one chat session, lent to a raw run (a run without the chat template).
pub struct RawSession(FairGuard<ChatSession>);

impl Borrow<Session> for RawSession {
    fn borrow(&self) -> &Session {
        &self.0
    }
}

impl BorrowMut<Session> for RawSession {
    fn borrow_mut(&mut self) -> &mut Session {
        &mut self.0
    }
}

enum Turn {
    Chat(Box<AsyncStream<ChatStream<FairGuard<ChatSession>>>>),
    Raw(Box<AsyncStream<TokenStream<RawSession>>>),
}

/// How a reply ended.
pub enum Outcome {
    /// It ran to its end (`finish` is OpenAI's `finish_reason`).
    Finished {
        finish: &'static str,
        timings: Timings,
    },
    /// It failed, or the server's shutdown grace period ended it.
    Failed(ApiError),
    /// The client went away (the run is aborted when the turn is dropped).
    Gone,
}

/// Owns a running reply. Dropping it before the reply ended (the client went away) aborts
/// the run and returns at once (the library's drops never block; the next request's run
/// waits for the runtime), so it is dropped in async code directly.
pub struct Running(Option<Turn>);

impl Running {
    /// Starts a chat turn: `user` after `conversation`, on the session.
    pub async fn chat(
        session: FairGuard<ChatSession>,
        conversation: Conversation,
        user: String,
        options: GenerateOptions,
    ) -> Result<Running, ApiError> {
        // Starting the turn prepares the prompt and the prompt cache: blocking work.
        let started = tokio::task::spawn_blocking(move || {
            ChatStream::new(session, conversation, user, &options)
        })
        .await
        .map_err(|e| ApiError::server(format!("starting the run: {e}")))?;
        let turn = started.map_err(|refused| error_of(refused.error()))?;
        Ok(Running(Some(Turn::Chat(Box::new(turn.into_async())))))
    }

    /// Starts a raw run of `input` (no template) on the session.
    pub async fn raw(
        session: FairGuard<ChatSession>,
        input: Input,
        options: GenerateOptions,
    ) -> Result<Running, ApiError> {
        let started = tokio::task::spawn_blocking(move || {
            TokenStream::new(RawSession(session), input, &options)
        })
        .await
        .map_err(|e| ApiError::server(format!("starting the run: {e}")))?;
        let run = started.map_err(|refused| error_of(refused.error()))?;
        Ok(Running(Some(Turn::Raw(Box::new(run.into_async())))))
    }

    fn turn(&mut self) -> &mut Turn {
        self.0.as_mut().expect("present until dropped")
    }

    async fn next(&mut self) -> Option<rkllm::Result<Token>> {
        use futures_core::Stream;
        std::future::poll_fn(|cx| match self.turn() {
            Turn::Chat(t) => Pin::new(&mut **t).poll_next(cx),
            Turn::Raw(t) => Pin::new(&mut **t).poll_next(cx),
        })
        .await
    }

    fn abort(&mut self) {
        match self.turn() {
            Turn::Chat(t) => t.abort(),
            Turn::Raw(t) => t.abort(),
        }
    }

    fn finish(&mut self) -> &'static str {
        match self.turn() {
            Turn::Chat(t) => t.finish_reason().map_or("stop", |f| f.openai()),
            Turn::Raw(t) => t.finish_reason().map_or("stop", |f| f.openai()),
        }
    }

    fn timings(&mut self) -> Timings {
        match self.turn() {
            Turn::Chat(t) => t.timings(),
            Turn::Raw(t) => t.timings(),
        }
    }

    /// Runs the reply to its end, giving each token's text to `on_text`. Ends early when
    /// `gone` resolves (the client went away) or when the server's shutdown grace period
    /// is over (the run is aborted).
    pub async fn run(
        &mut self,
        state: &AppState,
        stats: &RequestStats,
        gone: impl Future<Output = ()>,
        mut on_text: impl FnMut(String),
    ) -> Outcome {
        tokio::pin!(gone);
        let grace = state.grace_expired();
        tokio::pin!(grace);
        let mut first = true;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = &mut gone => break Outcome::Gone,
                _ = &mut grace => {
                    self.abort();
                    break Outcome::Failed(ApiError::shutting_down());
                }
                token = self.next() => match token {
                    Some(Ok(token)) => {
                        if first {
                            stats.first_token();
                            first = false;
                        }
                        on_text(token.text);
                    }
                    Some(Err(e)) => break Outcome::Failed(error_of(&e)),
                    None => break Outcome::Finished {
                        finish: self.finish(),
                        timings: self.timings(),
                    },
                },
            }
        };
        let timings = self.timings();
        stats.tokens(timings.prompt_tokens, timings.generated_tokens);
        state.metrics.record_run(&timings);
        outcome
    }
}
