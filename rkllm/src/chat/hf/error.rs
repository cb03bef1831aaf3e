//! Why a Hugging Face chat template could not be loaded, rendered or encoded.

/// Why a chat template from a model's `tokenizer_config.json` could not be loaded, rendered
/// or encoded.
///
/// Inside the crate's [`Error`](crate::Error) it arrives as
/// [`ChatError::Template`](crate::chat::ChatError::Template).
///
/// ```
/// use rkllm::chat::{HfChatTemplate, TemplateError, TemplateInput, Message};
/// let t = HfChatTemplate::from_template_str(
///     "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
///     [("bos_token", "<s>")],
/// ).unwrap();
/// let err = t.render(&TemplateInput::new(&[Message::system("hi")])).unwrap_err();
/// assert_eq!(err, TemplateError::Raised { message: "System role not supported".into() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template called `raise_exception(message)`: it refuses this conversation (a
    /// system message it does not support, roles out of order, ...). The message is the
    /// template's own, as transformers would raise it.
    #[error("the chat template refused the conversation: {message}")]
    Raised {
        /// The text the template passed to `raise_exception`.
        message: String,
    },

    /// The template source has a syntax error.
    #[error(
        "chat template `{name}` from {origin} cannot be parsed at line {line}, column \
         {column}: {message}"
    )]
    Syntax {
        /// Where the template came from (a file path, or `template string`).
        origin: String,
        /// Which template of a named list (`default`, `tool_use`, ...).
        name: String,
        /// The line (1-based) of the error within the template source, 0 if unknown.
        line: usize,
        /// The column (1-based, in characters) of the error, 0 if unknown.
        column: usize,
        /// The parser's description.
        message: String,
    },

    /// Rendering failed for another reason (an undefined attribute, a type error, ...).
    #[error("chat template `{name}` failed at line {line}: {message}")]
    Render {
        /// Which template of a named list (`default`, `tool_use`, ...).
        name: String,
        /// The line (1-based) the template was executing, 0 if unknown.
        line: usize,
        /// The engine's description.
        message: String,
    },

    /// The configuration file could not be read or is not usable.
    #[error("{origin}: {message}")]
    Config {
        /// The file (or `configuration`).
        origin: String,
        /// What is wrong, and what to do.
        message: String,
    },

    /// Input data (messages, tools, a variable) given as JSON could not be parsed.
    #[error("invalid {what} JSON: {message}")]
    InvalidJson {
        /// Which input (`messages`, `tools`, ...).
        what: String,
        /// The parser's description.
        message: String,
    },

    /// In text mode, a message (or tool definition or document) holds the text of one of the
    /// template's special tokens, which the runtime's tokenizer would read as that control
    /// token (a prompt injection). Token mode encodes such text as plain text instead.
    #[error(
        "{location} contains the special token text `{token}`, which the runtime would read as \
         a control token in a text-mode prompt; remove it, or send the prompt in token mode \
         (TemplateTokenizer), which encodes it as plain text"
    )]
    SpecialTokenInText {
        /// The special token's text.
        token: String,
        /// Where it was found (`message 2 (user)`, `tools`, ...).
        location: String,
    },

    /// The tokenizer failed, or does not fit the template.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
