//! Gemma 2 chat prompts: the prompt format, token mode, and a budgeted conversation.
//!
//! RKLLM 1.1.x applies no chat template; the caller sends the whole formatted prompt, as
//! text or as token ids. This module produces both:
//!
//! * [`Gemma2Template`] renders messages in one of four [`SystemStyle`]s, byte-identical to
//!   the Hugging Face templates where the style names one (content trimmed with Python
//!   `str.strip()` semantics).
//! * `GemmaTokenizer` (feature `tokenizer`) encodes the same prompt to ids with message
//!   content protected from control-token injection.
//! * [`Conversation`] keeps the history and fits it into `max_context_len`;
//!   [`Conversation::from_messages`] builds one from role/content messages (an OpenAI-style
//!   request), merging system and developer messages and consecutive turns of one role.
//!   With feature `template`, `Conversation::for_template` does the same for any family's
//!   Hugging Face chat template (Qwen2.5, Llama 3.2, ...), in text or token mode.
//!
//! ```
//! use rkllm::chat::{Gemma2Template, Message, SystemStyle};
//! let prompt = Gemma2Template::new(SystemStyle::Merge)
//!     .render(&[Message::user("Hello")], true)
//!     .unwrap();
//! assert_eq!(prompt, "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
//! ```

mod budget;
mod cache;
mod conversation;
mod detect;
mod error;
#[cfg(feature = "template")]
mod hf;
#[cfg(feature = "tokenizer")]
mod lean_tokenizer;
mod message;
pub(crate) mod prefix_store;
pub mod reasoning;
mod role;
mod session;
mod strip;
mod template;
#[cfg(feature = "tokenizer")]
pub(crate) mod tokenizer;
pub mod tool_calls;

pub use cache::{
    CacheEstimates, ChatCacheStats, PromptCacheConfig, DEFAULT_BUDGET_BYTES,
    DEFAULT_DISK_BYTES_PER_SECOND, DEFAULT_PREFILL_SECONDS_PER_TOKEN,
};
pub use conversation::{ContextBudget, Conversation, Fit, TrimPolicy};
pub use error::ChatError;
#[cfg(feature = "template")]
#[cfg_attr(docsrs, doc(cfg(feature = "template")))]
pub use hf::{Clock, HfChatTemplate, TemplateError, TemplateInput};
#[cfg(all(feature = "template", feature = "tokenizer"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "template", feature = "tokenizer"))))]
pub use hf::{RenderedPrompt, TemplateTokenizer};
#[cfg(all(feature = "tokenizer", feature = "mock"))]
pub(crate) use lean_tokenizer::LoadError;
pub use message::Message;
pub use role::Role;
pub use session::{ChatSession, ChatStream};
pub use template::{Bos, ChatTemplate, Gemma2Template, SpecialToken, SystemStyle, STOP_TOKEN_IDS};
#[cfg(feature = "tokenizer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokenizer")))]
pub use tokenizer::GemmaTokenizer;
