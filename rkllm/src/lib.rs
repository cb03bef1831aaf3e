//! Safe, streaming Rust API for the Rockchip RKLLM runtime 1.1.x (`librkllmrt.so`) on the
//! RK3588 NPU.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod async_stream;
mod builder;
pub mod chat;
pub mod diagnosis;
mod error;
mod ffi;
mod hidden;
mod input;
mod lora;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod model;
pub mod probe;
mod runtime;
mod session;
mod settings;
mod stop;
mod stream;
mod utf8;
pub mod wait;

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "mock", feature = "tokenizer", feature = "async"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "async")]
pub use async_stream::{AsyncChatStream, AsyncTokenStream};
pub use builder::{Mirostat, ModelBuilder};
pub use error::{Error, Result};
pub use ffi::AbortHandle;
pub use hidden::HiddenStates;
pub use input::{GenerateOptions, Input, GEMMA_END_OF_TURN, GEMMA_EOS};
pub use lora::LoraAdapter;
pub use model::Model;
pub use runtime::Runtime;
pub use session::{PromptCache, Session, SessionWait};
pub use settings::{RunningSense, WaitingText, DEFAULT_STOP_TIMEOUT};
pub use stream::{
    Completion, FinishReason, OwnedTokenStream, Refused, RunEnd, Timings, Token, TokenStream,
};
pub use wait::{FairGuard, FairLock, FairMutex, WaitError, DEFAULT_MAX_WAITERS};
