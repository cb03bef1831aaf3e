// The README is the front page (and its examples are doctests) when the features its
// examples use are on, as on docs.rs; otherwise a short page points to it.
#![cfg_attr(
    all(feature = "mock", feature = "tokenizer", feature = "async"),
    doc = include_str!("../../README.md")
)]
#![cfg_attr(
    not(all(feature = "mock", feature = "tokenizer", feature = "async")),
    doc = "Safe, streaming Rust API for the Rockchip RKLLM runtime 1.1.x (`librkllmrt.so`) \
           on the RK3588 NPU. Build the docs with features `mock`, `tokenizer` and `async` for the \
           full guide (the crate's README)."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod async_stream;
mod builder;
pub mod chat;
pub mod diagnosis;
pub mod embed;
mod error;
mod ffi;
pub mod gemma;
mod hidden;
mod input;
mod lora;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod model;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub mod probe;
mod runtime;
mod session;
mod settings;
mod stop;
mod stream;
mod utf8;
pub mod wait;

#[cfg(feature = "async")]
pub use async_stream::AsyncStream;
pub use builder::{Mirostat, ModelBuilder};
pub use embed::Pooling;
pub use error::{Error, ErrorKind, Result};
pub use ffi::AbortHandle;
pub use hidden::HiddenStates;
pub use input::{GenerateOptions, Input};
pub use lora::LoraAdapter;
pub use model::Model;
pub use runtime::Runtime;
pub use session::{PromptCache, Session, SessionWait, TokenStream};
pub use settings::{
    AddsBos, CallbackThread, ContextOverflow, FinishText, PromptCacheReuse, RunningSense,
    SecondModel, WaitingText, DEFAULT_STOP_TIMEOUT,
};
pub use stream::{Completion, FinishReason, Refused, RunEnd, Timings, Token};
pub use wait::{FairGuard, FairLock, FairMutex, WaitError, DEFAULT_MAX_WAITERS};
