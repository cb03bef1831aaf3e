//! Safe, streaming Rust API for the Rockchip **RKLLM runtime 1.1.x** (`librkllmrt.so`), which
//! runs large language models on the NPU of RK3588 boards.
//!
//! Gemma 2 comes first: [`chat`] formats Gemma 2 chat prompts byte-exactly (four ways of
//! placing a system prompt), sends them as exact token ids (feature `tokenizer`), keeps the
//! history within the context, and makes multi-turn chat fast with the runtime's prompt cache.
//! Underneath, a [`Model`] hands out one [`Session`] at a time; a run is a [`TokenStream`] of
//! complete UTF-8 [`Token`]s that can be stopped from any thread ([`AbortHandle`]), and a
//! failed load is an [`Error::Init`] that explains the runtime's own log. The raw C ABI is
//! the `rkllm-sys` crate; the library is loaded at run time ([`Runtime::load`]).
//!
//! Runtimes 1.1.0 to 1.1.4 are supported (the crate is written and tested against 1.1.1);
//! a 1.2+ library, whose ABI differs, is refused with a clear error.
//!
//! # Off the board: the mock runtime
//!
//! With the `mock` feature, `Runtime::mock()` is an in-process runtime that implements the
//! same C ABI and behaves like the real one, failures included; a `rkllm::mock::MockModel`
//! file says what it answers, how fast, and what fails:
//!
//! ```
//! # #[cfg(feature = "mock")]
//! fn main() -> rkllm::Result<()> {
//!     use rkllm::mock::MockModel;
//!     use rkllm::{GenerateOptions, Model, Runtime};
//!
//!     let file = MockModel::new().answer("Hello from the mock!").write_temp_file()?;
//!     let model = Model::builder(&file).runtime(Runtime::mock()).build()?;
//!     let mut session = model.session()?;
//!     let mut reply = String::new();
//!     for token in session.generate("<bos>Hi", &GenerateOptions::gemma())? {
//!         reply.push_str(&token?.text); // tokens arrive as the runtime produces them
//!     }
//!     assert_eq!(reply, "Hello from the mock!");
//!     Ok(())
//! }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```
//!
//! On a board, `Runtime::load()` instead of `Runtime::mock()` and a real `.rkllm` model file.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `mock` | no | the mock runtime (`Runtime::mock()`, `rkllm::mock`) |
//! | `tokenizer` | no | Gemma token mode and exact token counts (the `tokenizers` crate with its pure-Rust regex engine; no network) |
//! | `template` | no | chat templates of any model family from its `tokenizer_config.json`, rendered as transformers does (`minijinja`); with `tokenizer`, injection-safe token mode for any `tokenizer.json` |
//! | `async` | no | `AsyncStream`: `TokenStream` and `ChatStream` as `futures_core::Stream`s (`into_async()`; no async runtime pulled in) |
//! | `probe` | no | `rkllm::probe`: experiments that find out how a board's runtime behaves where it is undocumented |
//! | `link` | no | link `librkllmrt.so` at build time instead of loading it at run time |
//!
//! # Where to read on
//!
//! - [`ModelBuilder`] for every runtime parameter, [`Session`] for runs, inputs, LoRA,
//!   hidden states and the prompt cache, [`TokenStream`] for streaming and stopping.
//! - [`chat`] for Gemma 2 prompts, `Conversation` budgets and `ChatSession`'s prompt cache.
//! - [`diagnosis`] for what the init errors mean; `rkllm::mock` for the mock runtime in your
//!   own tests (where its log lines go, the failures it can inject); `rkllm::probe` for
//!   verifying a board.
//! - The package's `README.md` (the repository's README): the API's guarantees, serving,
//!   setting up a board, troubleshooting, cross-compiling and performance figures.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
// `unsafe` only where a module allows it: the seam (`ffi`), the mock and `os`.
#![deny(unsafe_code)]

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod async_stream;
mod builder;
pub mod chat;
pub mod diagnosis;
pub mod embed;
mod error;
#[allow(unsafe_code)]
mod ffi;
pub mod gemma;
mod hidden;
mod input;
mod lora;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
#[allow(unsafe_code)]
pub mod mock;
mod model;
#[allow(unsafe_code)]
mod os;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub mod probe;
mod runtime;
mod session;
pub mod settings;
mod stop;
mod stream;
mod utf8;
pub mod wait;

#[cfg(feature = "async")]
pub use async_stream::AsyncStream;
pub use builder::{Mirostat, ModelBuilder};
pub use error::{Error, ErrorKind, Result};
pub use ffi::AbortHandle;
pub use hidden::HiddenStates;
pub use input::{GenerateOptions, Input};
pub use lora::LoraAdapter;
pub use model::Model;
pub use runtime::Runtime;
pub use session::{PromptCache, Session, TokenStream};
pub use stream::{Completion, FinishReason, Refused, RunEnd, Timings, Token};

/// The examples of the package's `README.md` (the repository's README), run as doctests when
/// the features they use are on.
#[cfg(all(
    doctest,
    feature = "mock",
    feature = "tokenizer",
    feature = "async",
    feature = "template"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
