//! Chat templates of any model family, rendered as Hugging Face transformers renders them
//! (feature `template`), and injection-safe token mode for any `tokenizer.json` (features
//! `template` and `tokenizer`).
//!
//! * [`HfChatTemplate`] loads the `chat_template` of a model's `tokenizer_config.json` (or a
//!   template string with its special tokens) and renders a [`TemplateInput`] byte for byte
//!   as `apply_chat_template(tokenize=False)` does.
//! * [`HfChatTemplate::render_text_mode`] refuses message text that holds a special token's
//!   text, for prompts the runtime tokenizes itself.
//! * `TemplateTokenizer` gives the prompt's ids as `apply_chat_template(tokenize=True)`
//!   does, except that special-token text inside a message is encoded as the plain text it
//!   is: message text can never open or close a turn.
//!
//! ```
//! use rkllm::chat::{HfChatTemplate, Message, TemplateInput};
//! let config = r#"{
//!   "bos_token": "<|begin_of_text|>",
//!   "eos_token": {"content": "<|eot_id|>", "special": true},
//!   "chat_template": "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
//! }"#;
//! let t = HfChatTemplate::from_config_json(config, "tokenizer_config.json").unwrap();
//! let prompt = t.render(&TemplateInput::new(&[Message::user(" Hi \u{1f}")])).unwrap();
//! assert_eq!(
//!     prompt,
//!     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
//!      <|start_header_id|>assistant<|end_header_id|>\n\n"
//! );
//! assert_eq!(t.end_of_turn_texts(), ["<|eot_id|>"]);
//! ```

pub(crate) mod error;
mod input;
mod python;
mod template;
#[cfg(feature = "tokenizer")]
mod tokens;

pub use error::TemplateError;
pub use input::TemplateInput;
pub use template::{Clock, HfChatTemplate};
#[cfg(feature = "tokenizer")]
pub use tokens::{RenderedPrompt, TemplateTokenizer};
